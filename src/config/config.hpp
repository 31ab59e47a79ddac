// config: parses and validates `cutover.yaml` (DESIGN.md §2) into immutable value types.
//
// Everything a user can get wrong is reported at once: parse_config() collects every error it finds
// and returns them in one core::Error, one per line, sorted by position, each as
// `file:line:column: what was expected` (1-based line and column). docs/configuration.md is the
// reference of every key, its type, default and allowed values.
//
// Defaults are filled in by the parser, so consumers never need to know them; the only exception is
// Stage::timeout, which stays empty when the file has none (use Stage::effective_timeout()).
//
// Thread-safety: parse_config/load_config/expand_variables/json_schema are pure functions, safe to
// call from any thread. A parsed Config is immutable and shared as shared_ptr<const Config>.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.hpp"
#include "core/result.hpp"

namespace cutover::config {

using namespace std::chrono_literals;

// Environment variables (name -> value) and secrets (env var name -> secret-store name).
using EnvMap = std::map<std::string, std::string>;
using SecretMap = std::map<std::string, std::string>;

// ---------------------------------------------------------------------------------- pipeline ---

enum class StageKind { Run, Scan, Approval };
enum class ScanKind { Secrets, Config };
enum class ScanMode { Block, Report };

inline constexpr core::Duration kDefaultStageTimeout = 1h;
inline constexpr core::Duration kDefaultApprovalTimeout = 24h;

// Buildspec-style phases, run in this order with /bin/sh -e. `run:` is shorthand for build.
struct Phases {
  std::vector<std::string> install;
  std::vector<std::string> pre_build;
  std::vector<std::string> build;
  std::vector<std::string> post_build;
};

struct Stage {
  std::string name;
  StageKind kind = StageKind::Run;
  // StageKind::Run
  Phases phases;
  EnvMap env;
  SecretMap secrets;
  std::vector<std::string> cache;         // paths relative to the checkout
  std::vector<std::string> artifacts;     // paths relative to the checkout; non-empty = releasable
  std::optional<core::Duration> timeout;  // Run and Scan; absent = kDefaultStageTimeout
  // StageKind::Run: `gate: { sarif: PATH, fail_on: error, mode: block }` — a SARIF 2.1.0 log the
  // stage's commands wrote (semgrep, trivy, ...) decides the stage like a scan gate does.
  struct SarifGate {
    std::string sarif;              // relative to the checkout
    std::string fail_on = "error";  // error | warning | note | none
    ScanMode mode = ScanMode::Block;
  };
  std::optional<SarifGate> gate;
  // StageKind::Scan
  ScanKind scan = ScanKind::Secrets;
  ScanMode mode = ScanMode::Block;
  // StageKind::Approval: waiting longer than this counts as rejected.
  core::Duration approval_timeout = kDefaultApprovalTimeout;

  core::Duration effective_timeout() const { return timeout.value_or(kDefaultStageTimeout); }
};

struct Pipeline {
  std::string branch = "main";  // pipeline.trigger.branch
  std::vector<Stage> stages;    // in file order; never empty
};

// ---------------------------------------------------------------------------------- services ---

// Process is the default; Podman runs `image` with podman (extension: the runtime issue).
enum class Driver { Process, Podman };

enum class HealthKind { None, Command, Http, Tcp };

// Liveness, run by the runtime (ECS container health check). Defaults are ECS's.
struct Health {
  HealthKind kind = HealthKind::None;
  std::vector<std::string> command;  // HealthKind::Command; exit 0 = healthy
  std::string path;                  // HealthKind::Http, e.g. "/health"; 2xx/3xx = healthy
  core::Duration interval = 30s;
  core::Duration timeout = 5s;
  int retries = 3;
  core::Duration start_period = 0s;
};

// Resource limits of a task's processes (setrlimit before exec, inherited by its children; podman:
// --ulimit). Each absent limit is inherited from the controller. Soft = hard.
struct Limits {
  std::optional<uint64_t> open_files;      // RLIMIT_NOFILE
  std::optional<uint64_t> processes;       // RLIMIT_NPROC (counted per user, not per task)
  std::optional<uint64_t> memory;          // bytes of address space, RLIMIT_AS
  std::optional<uint64_t> file_size;       // bytes, RLIMIT_FSIZE
  std::optional<core::Duration> cpu_time;  // CPU time, RLIMIT_CPU (whole seconds)
  bool operator==(const Limits&) const = default;
};

struct Container {
  std::string name;
  std::vector<std::string> command;  // process driver: required; podman: optional override
  std::string image;                 // podman driver: required; process driver: not allowed
  std::optional<uint16_t> port;      // container port (podman); processes get PORT allocated
  EnvMap env;
  SecretMap secrets;
  Health health;
  std::string stop_signal = "SIGTERM";  // normalized name
  int stop_signal_number = 15;
  core::Duration stop_timeout = 30s;
  Limits limits;
};

struct Task {
  std::vector<Container> containers;  // never empty; names unique
  int count = 1;
};

// A listening address.
struct Endpoint {
  std::string address;  // as written: "0.0.0.0:8000", "[::1]:8001"
  std::string host;     // without brackets: "0.0.0.0", "::1"
  uint16_t port = 0;
};

// TLS termination by the proxy: PEM files on the host that runs it, absolute paths. The parser
// checks their form only; ParseOptions::check_files also checks that they can be read.
struct Tls {
  std::string cert;  // certificate chain, leaf first ("fullchain.pem")
  std::string key;   // private key
};

// `production: ADDR:PORT` or `production: {address: ADDR:PORT, tls: {...}, redirect_http: ...}`.
struct Listener {
  std::string address;  // as written: "0.0.0.0:8000", "[::1]:8001"
  std::string host;     // without brackets: "0.0.0.0", "::1"
  uint16_t port = 0;
  std::optional<Tls> tls;  // absent = plain HTTP
  // A plain-HTTP listener that answers every request with a 308 redirect to https on `port`.
  // Only with tls.
  std::optional<Endpoint> redirect_http;

  Endpoint endpoint() const { return {address, host, port}; }
};

struct Listeners {
  Listener production;
  std::optional<Listener> test;
};

// An inclusive range of HTTP status codes; "200-299,302" gives two.
struct StatusRange {
  int low = 200;
  int high = 299;
};

// Passive ejection, done by the proxy on live traffic (Envoy outlier detection, reduced to
// consecutive failures): a target that fails this many requests in a row leaves the rotation for
// `ejection`. A threshold of 0 turns that check off; at least one of the two is above 0.
struct PassiveHealth {
  int consecutive_5xx = 5;
  int consecutive_connect_failures = 3;
  core::Duration ejection = 10s;
  int max_ejection_percent = 50;  // of a target group at once; the last target is never ejected
};

// Readiness, checked by the proxy (ALB target group health check).
struct TargetHealth {
  std::string path = "/health";
  core::Duration interval = 5s;
  core::Duration timeout = 2s;  // default: 2s, or the interval if shorter; always <= interval
  int healthy_threshold = 3;
  int unhealthy_threshold = 2;
  std::vector<StatusRange> matcher{StatusRange{200, 299}};
  std::optional<PassiveHealth> passive;  // absent = no passive ejection
};

// How the proxy spreads requests over the targets of one target group.
enum class LoadBalancing { RoundRobin, LeastOutstandingRequests };

enum class Strategy { BlueGreen, Rolling };
enum class TrafficType { AllAtOnce, Canary, Linear, Steps };

struct TrafficStep {
  int weight = 100;  // percent of production traffic on the new version, 1-100
  core::Duration pause = 0s;
  bool operator==(const TrafficStep&) const = default;
};

struct Traffic {
  TrafficType type = TrafficType::AllAtOnce;
  int percent = 10;                // Canary, Linear
  core::Duration interval = 1min;  // Canary, Linear
  std::vector<TrafficStep> steps;  // Steps: weights strictly increasing
  std::string preset;              // the AWS preset name when the file used one, else empty
};

// The weights a deployment goes through, ending with {100, 0s}: all_at_once = [100];
// canary 10%/5m = [10 (5m), 100]; linear 10%/1m = [10 (1m), 20 (1m), ..., 90 (1m), 100];
// steps = the steps, plus 100 if the last weight is below 100.
std::vector<TrafficStep> traffic_schedule(const Traffic& traffic);

struct Hooks {
  std::vector<std::string> before_install;
  std::vector<std::string> after_install;
  std::vector<std::string> after_allow_test_traffic;
  std::vector<std::string> before_allow_traffic;
  std::vector<std::string> after_allow_traffic;
};

enum class Metric {
  HttpRequests,
  Http2xx,
  Http4xx,
  Http5xx,
  ErrorRate,   // percent (0-100) of requests answered 5xx or failed upstream
  LatencyP50,  // milliseconds
  LatencyP90,
  LatencyP99,
  UpstreamErrors,
};
enum class AlarmTarget { Green, Production };
enum class Statistic { Sum, Avg, Max };
enum class Comparison { Greater, GreaterOrEqual, Less, LessOrEqual };

struct Alarm {
  std::string name;
  Metric metric = Metric::Http5xx;
  AlarmTarget target = AlarmTarget::Green;
  Statistic statistic = Statistic::Sum;  // default: sum for counts, avg for rates and latencies
  core::Duration period = 1min;
  int evaluation_periods = 1;
  int datapoints_to_alarm = 1;  // default: evaluation_periods
  Comparison comparison = Comparison::Greater;
  double threshold = 0;  // latency metrics: milliseconds
  int min_requests = 0;
};

enum class RollbackTrigger { Failure, Alarm };

struct Deployment {
  Strategy strategy = Strategy::BlueGreen;
  Traffic traffic;
  Hooks hooks;
  core::Duration hook_timeout = 5min;
  std::vector<Alarm> alarms;
  std::set<RollbackTrigger> auto_rollback{RollbackTrigger::Failure, RollbackTrigger::Alarm};
  core::Duration termination_wait = 1h;
  core::Duration drain_timeout = 30s;
  int min_healthy_percent = 100;      // rolling
  int max_percent = 200;              // rolling
  int circuit_breaker_threshold = 3;  // rolling: failed tasks before rollback
  // A traffic step whose alarms lack data (min_requests) waits this long for an OK verdict, then
  // continues (true) or counts as an alarm (false: roll back or fail).
  core::Duration insufficient_data_timeout = 5min;
  bool insufficient_data_continue = false;
  // Sticky cohorts on the production listener while traffic is split: the cookie that pins a
  // client to the version it was first sent to. Empty = off; `sticky: true` = kDefaultStickyCookie.
  std::string sticky_cookie;
};

inline constexpr std::string_view kDefaultStickyCookie = "cutover_cohort";

struct Service {
  std::string name;
  std::string artifact;  // a stage with artifacts; required for the process driver
  Driver driver = Driver::Process;
  Task task;
  Listeners listeners;
  LoadBalancing load_balancing = LoadBalancing::RoundRobin;
  TargetHealth target_health;
  Deployment deployment;
};

// ----------------------------------------------------------------------------- notifications ---

// Outbound webhooks on execution and deployment state changes (docs/configuration.md).
enum class NotificationFormat { Json, Slack };

// The events a notification can subscribe to, as written in `events:`.
inline constexpr std::string_view kNotificationEvents[] = {
    "execution.started",  "execution.succeeded",
    "execution.failed",   "execution.waiting_for_approval",
    "deployment.started", "deployment.succeeded",
    "deployment.failed",  "deployment.rolled_back"};

struct Notification {
  std::string url;         // http:// or https://; empty when url_secret names it
  std::string url_secret;  // secret-store name holding the URL (Slack's URL is a credential)
  NotificationFormat format = NotificationFormat::Json;
  std::vector<std::string> events;  // subset of kNotificationEvents; empty = all of them
  std::string secret;               // secret-store name of the HMAC key; empty = unsigned
};

struct Config {
  int version = 1;
  Pipeline pipeline;
  std::vector<Service> services;            // in file order
  std::vector<Notification> notifications;  // in file order

  const Service* find_service(std::string_view name) const;
  const Stage* find_stage(std::string_view name) const;
};

// ------------------------------------------------------------------------------ entry points ---

struct ParseOptions {
  // Also check that the files the config names (TLS certificates and keys) can be read by this
  // process, reporting each one that cannot at its position. Off by default, so that parsing stays
  // a pure function of the text (the controller re-parses stored configs on restart, and CI
  // machines validate files whose certificates live only on the production host).
  bool check_files = false;
};

// Parses and validates. file_name is only used in messages ("cutover.yaml:14:7: ...").
core::Result<std::shared_ptr<const Config>> parse_config(std::string_view yaml_text,
                                                         std::string_view file_name,
                                                         const ParseOptions& options = {});
// Reads path and parses it; messages name the path as given.
core::Result<std::shared_ptr<const Config>> load_config(const std::filesystem::path& path,
                                                        const ParseOptions& options = {});

// Replaces ${NAME} with vars[NAME]; unknown names are left as they are; "$${" is a literal "${".
std::string expand_variables(std::string_view text, const std::map<std::string, std::string>& vars);

// The variables of DESIGN.md §6 available in each context.
const std::vector<std::string>& stage_variables();  // COMMIT_SHA COMMIT_SHORT BRANCH ...
const std::vector<std::string>& task_variables();   // PORT SERVICE REVISION TASK_ID COLOR ...
const std::vector<std::string>& hook_variables();   // TEST_URL PRODUCTION_URL DEPLOYMENT_ID ...

// A JSON Schema (draft 2020-12) of cutover.yaml for editors, pretty-printed.
std::string json_schema();

// Names used in messages and by the CLI/API ("blue_green", "linear", "http_5xx", ...).
std::string_view to_string(StageKind v);
std::string_view to_string(Strategy v);
std::string_view to_string(TrafficType v);
std::string_view to_string(Metric v);
std::string_view to_string(Comparison v);
std::string_view to_string(Driver v);
std::string_view to_string(LoadBalancing v);

}  // namespace cutover::config
