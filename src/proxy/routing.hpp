// Routing decisions of the proxy (DESIGN.md §4): which target group and which target serve one
// request, sticky cohorts, and passive ejection. Pure logic over a RouteTable (internal.hpp) and
// the TargetHealth atomics it points to: no sockets and no Asio here, so that every rule is
// unit-tested with hand-built tables (routing_test.cpp) and the request path only calls three
// functions.
//
// Group choice (per listener): nginx's smooth weighted round robin over the route weights
// (0.01% units, 10000 in all). It is deterministic and exact: over every 10000 picks each group
// gets exactly its weight, spread evenly (1/9999 gives the small group 1 pick in 10000, 10/90
// gives 1000/9000). The state survives a new table as long as the listener routes the same set of
// groups (a weight change or an added target does not restart the cycle, which at 0.01% would
// starve the small group); it restarts from zero otherwise.
// If the chosen group has no target that may take traffic (every target unhealthy: a version that
// broke), the request goes to another group the listener routes to that has one (a sticky client
// joins that group's cohort); only when no routed group has a target is the answer 503 (naming the
// chosen group).
// Envoy's weighted clusters answer 503 there instead; cutover's promise is that a cutover fails
// no request, and the controller still sees the empty group (the targets' health) and rolls the
// deployment back within a second, restoring the split.
//
// Target choice (per group, GroupEntry::algorithm): round robin in target order, or least
// outstanding requests (TargetHealth::in_flight, counted over all workers; ties go in round-robin
// order). Only targets whose health state is Healthy (DESIGN.md §3.1) and that are not ejected may
// take traffic; `exclude` skips one more (the retry of an idempotent request on another target).
// If every Healthy target of the group is ejected (two workers ejecting at once can get there),
// ejection is ignored for that pick ("panic mode"): a Healthy target is better than a 503.
//
// Sticky cohorts (per listener, ListenerEntry::sticky_cookie; off when empty): while a listener
// splits traffic between two or more target groups, a client that was sent to a group by the
// weighted choice gets a cookie naming that group, and its later requests go to the same group
// without consuming a weighted pick (so the split of new clients stays exact). The cookie value is
// "<group>.<epoch>", where the epoch is a hash of the routed groups and their target ids: it
// changes when a deployment starts, rolls back or finishes (a group's weight goes to or from 0, a
// new task set replaces the targets), so a pin lasts for the length of one deployment and a
// returning client never carries a pin into the next one. A cookie that names a group no longer
// routed, a stale epoch, or a group without a target that may take traffic is ignored: the weighted
// choice decides and the response sets a new cookie. A listener with one routed group sets no
// cookie (there is no choice, and responses without Set-Cookie stay cacheable).
// Known limit: replacing a target mid-deployment (a crashed task) changes the epoch and unpins
// everyone once; an epoch supplied by the controller (its deployment id) would remove that.
//
// Passive ejection (per group, GroupEntry::ejection; see PassiveEjection in snapshot.hpp): workers
// report the outcome of each proxied request; after `consecutive_5xx` 5xx answers or
// `consecutive_connect_failures` failed connects in a row the target is ejected until
// now + ejection_ms, unless that would eject more than max_ejection_percent of the group's targets
// or leave the group without a target that may take traffic (never the last one); the counters
// restart at 0, and failures of requests already in flight at the ejection do not count. Counters
// and the ejection deadline live in TargetHealth, shared by all workers: relaxed atomics, and a
// compare-exchange on the deadline so that exactly one worker ejects a target and logs it (one
// warning per ejection, at most one per target per ejection_ms: no flood), followed by a re-check
// so that two workers ejecting at once cannot empty a group together. An ejected target comes
// back when its deadline passes, or when its active health check turns it Healthy again.
//
// Thread-safety: a Router belongs to one worker thread: no locks, no allocation in pick(),
// pick_in_group() or report() (report() logs once per ejection). The free functions keep no
// state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.hpp"
#include "proxy/snapshot.hpp"

namespace cutover::proxy::detail {

struct RouteTable;   // internal.hpp
struct TargetEntry;  // internal.hpp
struct TargetHealth;

// What became of one proxied request, as far as passive ejection cares.
enum class Outcome {
  Success,         // a response with a status below 500 (the target works)
  Status5xx,       // a 5xx response, or a 502/504 the proxy answered for the target (response
                   // timeout, connection closed, invalid response)
  ConnectFailure,  // connect refused, unreachable or timed out
};

struct Pick {
  const TargetEntry* target = nullptr;  // null: nothing may take the request -> 503
  int group = -1;                       // index in RouteTable::groups; -1: listener routes nowhere
  // Non-empty: the response gets the header "Set-Cookie: <set_cookie>"; set_cookie_line is that
  // whole line with its CRLF, ready for http1::write_response_head's `extra`. Both point into the
  // RouteTable, which the request keeps alive.
  std::string_view set_cookie;
  std::string_view set_cookie_line;
};

class Router {
 public:
  explicit Router(const core::Clock& clock) : clock_(&clock) {}

  // Adopts the worker's new table. Keeps the weighted-choice state of every listener (by name) that
  // routes the same set of groups (by name), and the round-robin position of every group.
  void reset(std::shared_ptr<const RouteTable> table);

  // Chooses the group and target of a new request on `listener` (an index in table.listeners).
  // cookie_header: the request's Cookie field ("" when absent). A table other than the one last
  // given to reset() (a request that began before a swap) is served without touching the state of
  // the current one.
  Pick pick(const RouteTable& table, std::size_t listener, std::string_view cookie_header,
            const TargetEntry* exclude = nullptr);
  // Another target of the same group: the retry of an idempotent request whose connect failed
  // (exclude = the failed target). Stays in the group, so the cohort and the split are unchanged.
  const TargetEntry* pick_in_group(const RouteTable& table, int group,
                                   const TargetEntry* exclude = nullptr);
  // Counts the outcome of a request proxied to `target` of table.groups[group], and ejects the
  // target when its group's passive ejection says so.
  void report(const RouteTable& table, int group, const TargetEntry& target, Outcome outcome);

 private:
  int weighted_choice(const RouteTable& table, std::size_t listener);

  const core::Clock* clock_;
  std::shared_ptr<const RouteTable> table_;
  std::size_t stride_ = 0;       // groups in table_
  std::vector<int> current_;     // smooth WRR state: listener * stride_ + group
  std::vector<std::size_t> rr_;  // next round-robin position per group
  std::size_t stale_pick_ = 0;   // picks on older tables: a low-discrepancy sequence instead
  std::size_t stale_rr_ = 0;
};

// True while the target is passively ejected at `now`.
bool is_ejected(const TargetHealth& health, core::TimePoint now);
// When its ejection ends, if it is ejected at `now`.
std::optional<core::TimePoint> ejected_until(const TargetHealth& health, core::TimePoint now);

// Fills table.listeners and table.listener_by_address from the snapshot; table.groups must already
// hold the snapshot's target groups (by name). Precomputes the sticky cookie values and Set-Cookie
// headers, so that a pick allocates nothing.
void build_listeners(RouteTable& table, const RouteSnapshot& snapshot);

// The value of cookie `name` in a Cookie request header ("a=1; b=\"2\""): pairs separated by ';',
// optional whitespace around them, case-sensitive names, surrounding double quotes removed. The
// first pair with that exact name wins; nullopt when there is none.
std::optional<std::string_view> find_cookie(std::string_view cookie_header, std::string_view name);
// "cutover_cohort=web-green.1a2b3c4d; Path=/; HttpOnly; SameSite=Lax"
std::string format_set_cookie(std::string_view name, std::string_view value);

// The value of the first Cookie field among `headers` (any range of {name, value} string_view
// pairs, such as http1::Head::headers); "" when there is none. A user agent sends one Cookie
// field (RFC 6265 §5.4); a second one from a non-conforming client is not looked at.
template <class Headers>
std::string_view cookie_field(const Headers& headers) {
  for (const auto& h : headers) {
    std::string_view name = h.name;
    if (name.size() != 6) continue;
    bool match = true;
    for (size_t i = 0; i < 6 && match; ++i)
      match = (name[i] | 0x20) == "cookie"[i];  // ASCII case-insensitive; '-' etc. never match
    if (match) return h.value;
  }
  return {};
}
// The cohort epoch of one listener: 8 hex digits of a hash of its routed groups (weight > 0) and
// their target ids, independent of order.
std::string cohort_epoch(const RouteTable& table, const std::vector<int>& weights);

}  // namespace cutover::proxy::detail
