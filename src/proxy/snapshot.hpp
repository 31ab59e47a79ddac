// RouteSnapshot: the whole routing state of the proxy at one version, as the controller sends it
// to `PUT /snapshot` and as the proxy persists it in its state file. A snapshot is a value:
// listeners (address + weighted routes to target groups) and target groups (targets, health
// check, drain timeout). The proxy applies a snapshot atomically: every request sees one version.
//
// JSON format (exactly what parse_snapshot() accepts and to_json() produces):
//   {"version": 7,
//    "listeners": [{"name": "hello/production", "address": "127.0.0.1:8000",
//                   "routes": [{"target_group": "hello-blue", "weight": 10000}],
//                   "sticky": {"cookie": "cutover_cohort"},
//                   "tls": {"cert": "/etc/cutover/tls/fullchain.pem",
//                           "key": "/etc/cutover/tls/key.pem"}},
//                  {"name": "hello/redirect", "address": "0.0.0.0:80", "routes": [],
//                   "redirect_https_port": 443}],
//    "target_groups": [{"name": "hello-blue",
//                       "targets": [{"id": "task-1a2b", "address": "127.0.0.1:30001"}],
//                       "algorithm": "round_robin",
//                       "health": {"path": "/health", "interval_ms": 1000, "timeout_ms": 1000,
//                                  "healthy_threshold": 2, "unhealthy_threshold": 3,
//                                  "matcher": "200-299"},
//                       "passive_ejection": {"consecutive_5xx": 5,
//                                            "consecutive_connect_failures": 3,
//                                            "ejection_ms": 10000, "max_ejection_percent": 50},
//                       "drain_timeout_ms": 30000}]}
// Weights are integers in 0.01% units (0..10000); per listener they sum to 10000, or are all 0
// (the listener then answers 503). "health" and "drain_timeout_ms" may be omitted (defaults
// below); "matcher" is "200", "200-299" or a comma list of both forms ("200,302-304").
// "algorithm" (inside one target group): "round_robin" (default) or "least_outstanding_requests".
// "sticky" (per listener, omitted = off): pins a client to the target group it was first sent to,
// for as long as the listener's split lasts (see routing.hpp); the cookie name is an HTTP token
// and, on a sticky listener, routed target group names must be valid cookie values.
// "tls" (per listener, omitted = plain HTTP): the proxy terminates TLS 1.2/1.3 with that
// certificate chain and key (PEM files the proxy can read; loaded when the snapshot is applied, so
// a bad file rejects the snapshot and the old one keeps serving); requests go on to targets as
// plain HTTP with X-Forwarded-Proto: https.
// "redirect_https_port" (per listener): the listener answers every request with 308 Permanent
// Redirect to the same host and target on https and that port; its routes are not used.
// "passive_ejection" (omitted = off): takes a target out of rotation for ejection_ms after that
// many consecutive 5xx answers or failed connects; inside the object an omitted field takes the
// value shown above (kDefaultPassiveEjection) and a threshold of 0 turns that check off.
//
// Thread-safety: value types and pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"

namespace cutover::proxy {

inline constexpr int kWeightTotal = 10000;  // 100.00%

struct Route {
  std::string target_group;
  int weight = 0;  // 0..kWeightTotal
  bool operator==(const Route&) const = default;
};

struct Listener {
  std::string name;     // "hello/production"; unique in a snapshot
  std::string address;  // "127.0.0.1:8000" or "[::1]:8000"; unique in a snapshot
  std::vector<Route> routes;
  std::string sticky_cookie;  // "sticky": {"cookie": ...}; empty = no sticky cohorts
  // "tls": {"cert": PEM chain file, "key": PEM key file}: TLS termination; empty = plain HTTP.
  std::string tls_cert;
  std::string tls_key;
  // "redirect_https_port": every request gets 308 to https://<host>:<port><target> instead of
  // being routed (the HTTP -> HTTPS redirect listener); 0 = off.
  int redirect_https_port = 0;
  bool operator==(const Listener&) const = default;
};

struct Target {
  std::string id;       // task id; unique within its target group
  std::string address;  // "127.0.0.1:30001"
  bool operator==(const Target&) const = default;
};

struct HealthCheck {
  std::string path = "/health";
  int interval_ms = 1000;
  int timeout_ms = 1000;
  int healthy_threshold = 2;
  int unhealthy_threshold = 3;
  std::string matcher = "200-299";
  bool operator==(const HealthCheck&) const = default;
};

// How a target group spreads requests over its targets that may take traffic.
enum class Algorithm {
  RoundRobin,                // in target order, skipping targets that may not take traffic
  LeastOutstandingRequests,  // fewest in-flight requests (over all workers); ties in RR order
};
const char* to_string(Algorithm a);

// Passive ejection (Envoy's outlier detection, reduced to consecutive failures): a target that
// fails this many requests in a row is taken out of rotation for ejection_ms, at most
// max_ejection_percent of a group at once and never the last target of a group that may take
// traffic. Thresholds of 0 turn the check off; both 0 = no passive ejection.
struct PassiveEjection {
  int consecutive_5xx = 0;               // 5xx answers (and 502/504 the proxy answers for it)
  int consecutive_connect_failures = 0;  // failed or timed-out connects
  int ejection_ms = 10000;
  int max_ejection_percent = 50;
  bool enabled() const { return consecutive_5xx > 0 || consecutive_connect_failures > 0; }
  bool operator==(const PassiveEjection&) const = default;
};
// What a "passive_ejection" object means for the fields it omits.
inline constexpr PassiveEjection kDefaultPassiveEjection{5, 3, 10000, 50};

struct TargetGroup {
  std::string name;  // unique in a snapshot
  std::vector<Target> targets;
  Algorithm algorithm = Algorithm::RoundRobin;
  HealthCheck health;
  PassiveEjection passive_ejection;  // off unless the snapshot has the object
  int drain_timeout_ms = 30000;
  bool operator==(const TargetGroup&) const = default;
};

struct RouteSnapshot {
  std::uint64_t version = 0;  // 0 = nothing applied yet
  std::vector<Listener> listeners;
  std::vector<TargetGroup> target_groups;
  bool operator==(const RouteSnapshot&) const = default;

  const TargetGroup* find_group(std::string_view name) const;
};

// Parses and validates. Errors name the JSON path: "listeners[0].routes[1].weight: must be
// 0..10000, got 12000".
core::Result<RouteSnapshot> parse_snapshot(std::string_view json);
// Checks the rules above (unique names, known target groups, weights, addresses, thresholds).
core::Result<void> validate(const RouteSnapshot& snapshot);
std::string to_json(const RouteSnapshot& snapshot);

// "127.0.0.1:8000" / "[::1]:8000" / "localhost:80" -> host and port. Port must be 0..65535.
struct HostPort {
  std::string host;
  std::uint16_t port = 0;
};
core::Result<HostPort> parse_host_port(std::string_view address);

// RFC 6265 §4.1.1: a cookie name is an HTTP token; a cookie value is made of cookie-octets.
bool is_cookie_name(std::string_view name);
bool is_cookie_value(std::string_view value);

// A status matcher ("200-299", "200,302") checked against a status code.
class StatusMatcher {
 public:
  static core::Result<StatusMatcher> parse(std::string_view text);
  bool matches(int status) const;

 private:
  std::vector<std::pair<int, int>> ranges_;
};

}  // namespace cutover::proxy
