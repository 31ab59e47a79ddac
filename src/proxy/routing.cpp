#include "proxy/routing.hpp"

#include <algorithm>
#include <cassert>
#include <climits>
#include <unordered_map>

#include <fmt/format.h>

#include "core/log.hpp"
#include "proxy/internal.hpp"

namespace cutover::proxy::detail {
namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;

int64_t ticks(core::TimePoint t) { return t.time_since_epoch().count(); }

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// The clock is read at most once per pick, and only when a target has an ejection deadline.
class LazyNow {
 public:
  explicit LazyNow(const core::Clock& clock) : clock_(clock) {}
  int64_t get() {
    if (now_ == kUnset) now_ = ticks(clock_.now());
    return now_;
  }

 private:
  static constexpr int64_t kUnset = INT64_MIN;
  const core::Clock& clock_;
  int64_t now_ = kUnset;
};

// Whether the target is ejected now. A deadline found in the past is cleared (compare-exchange, so
// that a newer ejection by another worker is never undone).
bool ejected_now(TargetHealth& h, LazyNow& now) {
  int64_t until = h.ejected_until.load(kRelaxed);
  if (until == 0) return false;
  if (until > now.get()) return true;
  h.ejected_until.compare_exchange_strong(until, 0, kRelaxed);
  return false;
}

bool healthy(const TargetHealth& h) { return h.state.load(kRelaxed) == HealthState::Healthy; }

// 64-bit FNV-1a: a stable hash (std::hash may differ between builds; epochs must not, since they
// live in clients' cookies across proxy restarts and upgrades).
struct Fnv1a {
  uint64_t h = 1469598103934665603ULL;
  void add(std::string_view s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 1099511628211ULL;
    }
    h ^= 0xff;  // separator: ("ab","c") and ("a","bc") differ
    h *= 1099511628211ULL;
  }
};

}  // namespace

// ---- cookies ----

std::optional<std::string_view> find_cookie(std::string_view header, std::string_view name) {
  while (!header.empty()) {
    auto semi = header.find(';');
    std::string_view pair = header.substr(0, semi);
    header = semi == std::string_view::npos ? std::string_view() : header.substr(semi + 1);
    auto eq = pair.find('=');
    if (eq == std::string_view::npos) continue;
    if (trim(pair.substr(0, eq)) != name) continue;
    std::string_view value = trim(pair.substr(eq + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"')
      value = value.substr(1, value.size() - 2);
    return value;
  }
  return std::nullopt;
}

std::string format_set_cookie(std::string_view name, std::string_view value) {
  return fmt::format("{}={}; Path=/; HttpOnly; SameSite=Lax", name, value);
}

std::string cohort_epoch(const RouteTable& table, const std::vector<int>& weights) {
  std::vector<std::pair<std::string_view, std::vector<std::string_view>>> groups;
  for (size_t g = 0; g < weights.size() && g < table.groups.size(); ++g) {
    if (weights[g] <= 0) continue;
    std::vector<std::string_view> ids;
    for (const auto& t : table.groups[g].targets) ids.emplace_back(t.id);
    std::sort(ids.begin(), ids.end());
    groups.emplace_back(table.groups[g].name, std::move(ids));
  }
  std::sort(groups.begin(), groups.end());
  Fnv1a hash;
  for (const auto& [name, ids] : groups) {
    hash.add(name);
    for (auto id : ids) hash.add(id);
    hash.add("");  // end of group
  }
  return fmt::format("{:08x}", static_cast<uint32_t>(hash.h ^ (hash.h >> 32)));
}

void build_listeners(RouteTable& table, const RouteSnapshot& snapshot) {
  std::unordered_map<std::string_view, size_t> group_index;
  for (size_t i = 0; i < table.groups.size(); ++i) group_index[table.groups[i].name] = i;
  table.listeners.clear();
  table.listener_by_address.clear();
  for (const auto& l : snapshot.listeners) {
    ListenerEntry le;
    le.name = l.name;
    le.weights.assign(table.groups.size(), 0);
    for (const auto& r : l.routes) {
      auto it = group_index.find(r.target_group);
      assert(it != group_index.end() && "validate() guarantees routed groups exist");
      if (it == group_index.end()) continue;
      le.weights[it->second] = r.weight;
      le.total_weight += r.weight;
      if (r.weight > 0) ++le.routed_groups;
    }
    le.sticky_cookie = l.sticky_cookie;
    le.cohort.assign(table.groups.size(), std::string());
    le.set_cookie.assign(table.groups.size(), std::string());
    le.set_cookie_line.assign(table.groups.size(), std::string());
    if (!le.sticky_cookie.empty()) {
      std::string epoch = cohort_epoch(table, le.weights);
      for (size_t g = 0; g < table.groups.size(); ++g) {
        if (le.weights[g] <= 0) continue;
        le.cohort[g] = fmt::format("{}.{}", table.groups[g].name, epoch);
        le.set_cookie[g] = format_set_cookie(le.sticky_cookie, le.cohort[g]);
        le.set_cookie_line[g] = "Set-Cookie: " + le.set_cookie[g] + "\r\n";
      }
    }
    table.listener_by_address[l.address] = table.listeners.size();
    table.listeners.push_back(std::move(le));
  }
}

// ---- ejection state ----

bool is_ejected(const TargetHealth& health, core::TimePoint now) {
  return health.ejected_until.load(kRelaxed) > ticks(now);
}

std::optional<core::TimePoint> ejected_until(const TargetHealth& health, core::TimePoint now) {
  int64_t until = health.ejected_until.load(kRelaxed);
  if (until <= ticks(now)) return std::nullopt;
  return core::TimePoint(core::TimePoint::duration(until));
}

// ---- Router ----

void Router::reset(std::shared_ptr<const RouteTable> table) {
  assert(table && "Router::reset needs a table");
  const RouteTable* prev = table_.get();
  const size_t groups = table->groups.size();
  std::vector<int> current(table->listeners.size() * groups, 0);
  std::vector<size_t> rr(groups, 0);
  if (prev) {
    std::unordered_map<std::string_view, size_t> prev_group;
    for (size_t g = 0; g < prev->groups.size(); ++g) prev_group[prev->groups[g].name] = g;
    for (size_t g = 0; g < groups; ++g)
      if (auto it = prev_group.find(table->groups[g].name); it != prev_group.end())
        rr[g] = rr_[it->second];
    std::unordered_map<std::string_view, size_t> prev_listener;
    for (size_t i = 0; i < prev->listeners.size(); ++i) prev_listener[prev->listeners[i].name] = i;
    for (size_t li = 0; li < table->listeners.size(); ++li) {
      const auto& l = table->listeners[li];
      auto it = prev_listener.find(l.name);
      if (it == prev_listener.end()) continue;
      const auto& pl = prev->listeners[it->second];
      // Same routed set (by group name)? Then the state carries over: its values sum to 0 over
      // the routed groups, the invariant smooth WRR needs, whatever the new weights are.
      bool same = pl.routed_groups == l.routed_groups;
      for (size_t g = 0; same && g < groups; ++g) {
        if (l.weights[g] <= 0) continue;
        auto pg = prev_group.find(table->groups[g].name);
        same = pg != prev_group.end() && pl.weights[pg->second] > 0;
      }
      if (!same) continue;
      for (size_t g = 0; g < groups; ++g)
        if (l.weights[g] > 0)
          current[li * groups + g] =
              current_[it->second * stride_ + prev_group[table->groups[g].name]];
    }
  }
  current_ = std::move(current);
  rr_ = std::move(rr);
  stride_ = groups;
  table_ = std::move(table);
}

// nginx's smooth weighted round robin: every routed group gains its weight, the largest total
// wins and pays the sum of weights back.
int Router::weighted_choice(const RouteTable& table, size_t listener) {
  const auto& l = table.listeners[listener];
  if (&table != table_.get()) {
    // An older table: a golden-ratio sequence over the weight line, deterministic and close to
    // the weights, touching no state of the current table. 6181 is coprime with 10000.
    size_t x = (stale_pick_ += 6181) % static_cast<size_t>(l.total_weight);
    for (size_t g = 0; g < l.weights.size(); ++g) {
      if (x < static_cast<size_t>(l.weights[g])) return static_cast<int>(g);
      x -= static_cast<size_t>(l.weights[g]);
    }
    return -1;  // unreachable: x < total_weight
  }
  int* current = current_.data() + listener * stride_;
  int best = -1;
  for (size_t g = 0; g < l.weights.size(); ++g) {
    if (l.weights[g] <= 0) continue;
    current[g] += l.weights[g];
    if (best < 0 || current[g] > current[best]) best = static_cast<int>(g);
  }
  if (best >= 0) current[best] -= l.total_weight;
  return best;
}

Pick Router::pick(const RouteTable& table, size_t listener, std::string_view cookie_header,
                  const TargetEntry* exclude) {
  Pick p;
  if (listener >= table.listeners.size()) return p;
  const auto& l = table.listeners[listener];
  if (l.total_weight <= 0) return p;
  const bool sticky = !l.sticky_cookie.empty() && l.routed_groups >= 2;
  if (sticky && !cookie_header.empty()) {
    if (auto value = find_cookie(cookie_header, l.sticky_cookie)) {
      for (size_t g = 0; g < l.cohort.size(); ++g) {
        if (l.weights[g] <= 0 || l.cohort[g] != *value) continue;
        if (const auto* t = pick_in_group(table, static_cast<int>(g), exclude)) {
          p.target = t;
          p.group = static_cast<int>(g);
          return p;  // pinned: no weighted pick, no new cookie
        }
        break;  // its group has no target that may take traffic: choose again
      }
    }
  }
  p.group = weighted_choice(table, listener);
  if (p.group < 0) return p;
  p.target = pick_in_group(table, p.group, exclude);
  if (!p.target) {
    // The chosen group has no target that may take traffic (a version that broke under traffic,
    // until the controller rolls it back): another group this listener routes to serves the
    // request rather than a 503, and a sticky client joins that group's cohort. The 503 names the
    // chosen group only when no routed group has a target.
    const int chosen = p.group;
    for (size_t g = 0; g < table.groups.size() && g < l.weights.size(); ++g) {
      if (static_cast<int>(g) == chosen || l.weights[g] <= 0) continue;
      if (const auto* t = pick_in_group(table, static_cast<int>(g), exclude)) {
        p.group = static_cast<int>(g);
        p.target = t;
        break;
      }
    }
  }
  if (sticky && p.target) {
    p.set_cookie = l.set_cookie[static_cast<size_t>(p.group)];
    p.set_cookie_line = l.set_cookie_line[static_cast<size_t>(p.group)];
  }
  return p;
}

const TargetEntry* Router::pick_in_group(const RouteTable& table, int group,
                                         const TargetEntry* exclude) {
  if (group < 0 || static_cast<size_t>(group) >= table.groups.size()) return nullptr;
  const auto& g = table.groups[static_cast<size_t>(group)];
  const size_t n = g.targets.size();
  if (n == 0) return nullptr;
  // A request that began on an older table does not move the current table's positions.
  size_t& next = &table == table_.get() ? rr_[static_cast<size_t>(group)] : stale_rr_;
  const size_t start = next % n;
  LazyNow now(*clock_);
  const bool least = g.algorithm == Algorithm::LeastOutstandingRequests;
  // Pass 0: Healthy and not ejected. Pass 1 (panic), only if pass 0 skipped an ejected target and
  // found nothing: Healthy.
  bool skipped_ejected = false;
  for (int pass = 0; pass < 2; ++pass) {
    if (pass == 1 && !skipped_ejected) break;
    size_t best = n;
    int64_t best_in_flight = 0;
    for (size_t k = 0; k < n; ++k) {
      size_t i = start + k < n ? start + k : start + k - n;
      const auto& t = g.targets[i];
      if (&t == exclude || !healthy(*t.health)) continue;
      if (pass == 0 && ejected_now(*t.health, now)) {
        skipped_ejected = true;
        continue;
      }
      if (!least) {
        best = i;
        break;
      }
      int64_t in_flight = t.health->in_flight.load(kRelaxed);
      if (best == n || in_flight < best_in_flight) {
        best = i;
        best_in_flight = in_flight;
      }
    }
    if (best < n) {
      next = best + 1;
      return &g.targets[best];
    }
  }
  return nullptr;
}

void Router::report(const RouteTable& table, int group, const TargetEntry& target,
                    Outcome outcome) {
  auto& h = *target.health;
  if (outcome == Outcome::Success) {
    // Reads first: a steady stream of successes does not write the shared cache line.
    if (h.consecutive_5xx.load(kRelaxed) != 0) h.consecutive_5xx.store(0, kRelaxed);
    if (h.consecutive_connect_failures.load(kRelaxed) != 0)
      h.consecutive_connect_failures.store(0, kRelaxed);
    return;
  }
  if (group < 0 || static_cast<size_t>(group) >= table.groups.size()) return;
  const auto& g = table.groups[static_cast<size_t>(group)];
  const auto& policy = g.ejection;
  if (!policy.enabled()) return;
  // Failures of requests that were in flight when the target was ejected do not count.
  LazyNow now(*clock_);
  int64_t until = h.ejected_until.load(kRelaxed);
  if (until != 0 && until > now.get()) return;
  int count = 0;
  int threshold = 0;
  const char* what = "";
  if (outcome == Outcome::Status5xx) {
    // The target answered: its connects work.
    if (h.consecutive_connect_failures.load(kRelaxed) != 0)
      h.consecutive_connect_failures.store(0, kRelaxed);
    count = h.consecutive_5xx.fetch_add(1, kRelaxed) + 1;
    threshold = policy.consecutive_5xx;
    what = "5xx responses";
  } else {
    count = h.consecutive_connect_failures.fetch_add(1, kRelaxed) + 1;
    threshold = policy.consecutive_connect_failures;
    what = "failed connects";
  }
  if (threshold <= 0 || count < threshold) return;
  // Never the last target that may take traffic, never more than max_ejection_percent.
  auto allowed = [&](std::memory_order order) {
    size_t ejected = 0;
    size_t others_eligible = 0;
    const int64_t t_now = now.get();
    for (const auto& t : g.targets) {
      if (t.health == target.health) continue;
      bool out = t.health->ejected_until.load(order) > t_now;
      if (out) ++ejected;
      if (!out && healthy(*t.health)) ++others_eligible;
    }
    return others_eligible > 0 &&
           (ejected + 1) * 100 <=
               static_cast<size_t>(policy.max_ejection_percent) * g.targets.size();
  };
  if (!allowed(kRelaxed)) return;
  int64_t next_until = now.get() + std::chrono::duration_cast<core::TimePoint::duration>(
                                       std::chrono::milliseconds(policy.ejection_ms))
                                       .count();
  // Two workers may eject two targets of one group at the same moment, each having seen the other
  // still in rotation. Sequentially consistent exchange and re-check: at least one of them sees the
  // other's ejection and takes its own back (both may; the next failure tries again).
  if (!h.ejected_until.compare_exchange_strong(until, next_until, std::memory_order_seq_cst))
    return;  // another worker ejected it, or cleared an expired deadline: nothing to do
  if (!allowed(std::memory_order_seq_cst)) {
    h.ejected_until.compare_exchange_strong(next_until, 0, std::memory_order_seq_cst);
    return;
  }
  h.consecutive_5xx.store(0, kRelaxed);
  h.consecutive_connect_failures.store(0, kRelaxed);
  h.ejections.fetch_add(1, kRelaxed);
  core::logger()->warn("[proxy] target {} ({}) of target group {} ejected for {} ms after {} {}",
                       target.id, h.address, g.name, policy.ejection_ms, count, what);
}

}  // namespace cutover::proxy::detail
