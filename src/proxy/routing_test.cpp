// Unit tests of the routing decisions (routing.hpp) on hand-built route tables: no sockets, a
// simulated clock, counts and orders only.
#include "proxy/routing.hpp"

#include <cstdlib>
#include <map>
#include <new>
#include <thread>

#include <gtest/gtest.h>

#include "proxy/internal.hpp"

// Counts allocations on the current thread while enabled: pick() and report() must not allocate.
namespace {
thread_local bool g_count_allocations = false;
thread_local std::size_t g_allocations = 0;
}  // namespace
void* operator new(std::size_t n) {
  if (g_count_allocations) ++g_allocations;
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace cutover::proxy::detail {
namespace {

using namespace std::chrono_literals;

struct GroupSpec {
  std::string name;
  std::vector<std::string> targets;
  int weight = kWeightTotal;
  Algorithm algorithm = Algorithm::RoundRobin;
  PassiveEjection ejection{};
};

// Builds route tables the way proxy.cpp does (health kept per target id across tables, listeners by
// build_listeners) and feeds them to a Router.
class RoutingTest : public ::testing::Test {
 protected:
  static RouteSnapshot snapshot(uint64_t version, const std::vector<GroupSpec>& groups,
                                std::string sticky_cookie = "") {
    RouteSnapshot s;
    s.version = version;
    Listener l{"web/production", "127.0.0.1:8000", {}, std::move(sticky_cookie)};
    for (const auto& g : groups) {
      TargetGroup tg;
      tg.name = g.name;
      tg.algorithm = g.algorithm;
      tg.passive_ejection = g.ejection;
      for (size_t i = 0; i < g.targets.size(); ++i)
        tg.targets.push_back(Target{g.targets[i], "127.0.0.1:" + std::to_string(30000 + i)});
      s.target_groups.push_back(tg);
      l.routes.push_back(Route{g.name, g.weight});
    }
    s.listeners.push_back(l);
    return s;
  }

  std::shared_ptr<const RouteTable> build(const RouteSnapshot& s) {
    auto valid = validate(s);
    EXPECT_TRUE(valid.ok()) << valid.error().message;
    auto table = std::make_shared<RouteTable>();
    table->version = s.version;
    for (const auto& g : s.target_groups) {
      GroupEntry ge;
      ge.name = g.name;
      ge.algorithm = g.algorithm;
      ge.ejection = g.passive_ejection;
      for (const auto& t : g.targets) {
        auto& h = health_[t.id];
        if (!h) {
          h = std::make_shared<TargetHealth>();
          h->id = t.id;
          h->address = t.address;
          h->state.store(HealthState::Healthy);
        }
        ge.targets.push_back(TargetEntry{t.id, {}, h, std::make_shared<TargetStats>()});
      }
      table->groups.push_back(std::move(ge));
    }
    build_listeners(*table, s);
    return table;
  }

  void apply(const RouteSnapshot& s) {
    table_ = build(s);
    router_.reset(table_);
  }

  Pick pick(std::string_view cookie = "", const TargetEntry* exclude = nullptr) {
    return router_.pick(*table_, 0, cookie, exclude);
  }
  std::string group_of(const Pick& p) const {
    return p.group < 0 ? "none" : table_->groups[static_cast<size_t>(p.group)].name;
  }
  std::map<std::string, int> count_groups(int n) {
    std::map<std::string, int> seen;
    for (int i = 0; i < n; ++i) seen[group_of(pick())]++;
    return seen;
  }
  TargetHealth& health(const std::string& id) { return *health_.at(id); }
  const TargetEntry& target(const std::string& id) const {
    for (const auto& g : table_->groups)
      for (const auto& t : g.targets)
        if (t.id == id) return t;
    ADD_FAILURE() << "no target " << id;
    return table_->groups.at(0).targets.at(0);
  }
  int group_index(const std::string& name) const {
    for (size_t g = 0; g < table_->groups.size(); ++g)
      if (table_->groups[g].name == name) return static_cast<int>(g);
    return -1;
  }
  void report(const std::string& id, Outcome outcome, int times = 1) {
    for (const auto& g : table_->groups)
      for (const auto& t : g.targets)
        if (t.id == id)
          for (int i = 0; i < times; ++i) router_.report(*table_, group_index(g.name), t, outcome);
  }
  // The value of the cookie a Set-Cookie header sets.
  static std::string cookie_value(std::string_view set_cookie) {
    auto eq = set_cookie.find('=');
    auto semi = set_cookie.find(';');
    return std::string(set_cookie.substr(eq + 1, semi - eq - 1));
  }

  core::SimulatedClock clock_;
  Router router_{clock_};
  std::map<std::string, std::shared_ptr<TargetHealth>> health_;
  std::shared_ptr<const RouteTable> table_;
};

// ---- weighted choice between target groups ----

TEST_F(RoutingTest, TenNinetyIsExactOverOneHundredThousandPicks) {
  apply(snapshot(1, {{"blue", {"b1"}, 1000}, {"green", {"g1"}, 9000}}));
  int blue = 0;
  int longest_gap = 0;
  int gap = 0;
  for (int i = 0; i < 100000; ++i) {
    bool is_blue = group_of(pick()) == "blue";
    blue += is_blue;
    gap = is_blue ? 0 : gap + 1;
    longest_gap = std::max(longest_gap, gap);
  }
  EXPECT_NEAR(blue, 10000, 100) << "10% ± 0.1% of 100,000";
  EXPECT_EQ(blue, 10000) << "smooth WRR is exact over whole cycles";
  EXPECT_EQ(longest_gap, 9) << "smooth: one blue pick in every ten";
}

TEST_F(RoutingTest, OneBasisPointGetsTenOfOneHundredThousand) {
  apply(snapshot(1, {{"blue", {"b1"}, 9999}, {"green", {"g1"}, 1}}));
  auto seen = count_groups(100000);
  EXPECT_NEAR(seen["green"], 10, 3);
  EXPECT_EQ(seen["green"], 10);
  EXPECT_EQ(seen["blue"], 99990);
}

TEST_F(RoutingTest, ThreeGroupsShareExactly) {
  apply(snapshot(1, {{"a", {"a1"}, 3333}, {"b", {"b1"}, 3333}, {"c", {"c1"}, 3334}}));
  auto seen = count_groups(100000);
  EXPECT_EQ(seen["a"], 33330);
  EXPECT_EQ(seen["b"], 33330);
  EXPECT_EQ(seen["c"], 33340);
}

TEST_F(RoutingTest, AWeightChangeMidStreamTakesEffectOnTheNextPick) {
  apply(snapshot(1, {{"blue", {"b1"}, 9000}, {"green", {"g1"}, 1000}}));
  auto before = count_groups(55555);  // stop mid-cycle on purpose
  EXPECT_NEAR(before["green"], 5555, 1);
  apply(snapshot(2, {{"blue", {"b1"}, 5000}, {"green", {"g1"}, 5000}}));
  auto after = count_groups(10000);
  EXPECT_NEAR(after["green"], 5000, 1) << "the carried-over state is bounded";
  apply(snapshot(3, {{"blue", {"b1"}, 0}, {"green", {"g1"}, 10000}}));
  auto all = count_groups(1000);
  EXPECT_EQ(all["green"], 1000);
  EXPECT_EQ(all.count("blue"), 0u);
}

TEST_F(RoutingTest, TableSwapsWithTheSameRoutedGroupsKeepTheCycle) {
  // A 0.01% canary must get its share even if tables change more often than every 10000 picks
  // (targets added, health settings changed): the cycle does not restart.
  std::map<std::string, int> seen;
  for (int round = 0; round < 20; ++round) {
    std::vector<std::string> blue_targets = {"b1"};
    if (round % 2) blue_targets.push_back("b2");
    apply(snapshot(static_cast<uint64_t>(round + 1),
                   {{"blue", blue_targets, 9999}, {"green", {"g1"}, 1}}));
    for (auto& [g, n] : count_groups(5000)) seen[g] += n;
  }
  EXPECT_EQ(seen["green"], 10);
  EXPECT_EQ(seen["blue"], 99990);
}

TEST_F(RoutingTest, ZeroWeightListenerRoutesNowhere) {
  apply(snapshot(1, {{"blue", {"b1"}, 0}}));
  auto p = pick();
  EXPECT_EQ(p.target, nullptr);
  EXPECT_EQ(p.group, -1);
  EXPECT_EQ(router_.pick(*table_, 7, "", nullptr).group, -1) << "unknown listener index";
}

TEST_F(RoutingTest, APickOnAnOlderTableLeavesTheCurrentStateAlone) {
  apply(snapshot(1, {{"blue", {"b1", "b2"}, 5000}, {"green", {"g1", "g2"}, 5000}}));
  auto old_table = table_;
  apply(snapshot(2, {{"blue", {"b1", "b2"}, 3000}, {"green", {"g1", "g2"}, 7000}}));
  // Reference run on a second router that never sees the old table.
  Router reference(clock_);
  reference.reset(table_);
  for (int i = 0; i < 1000; ++i) {
    if (i % 3 == 0) {
      auto stale = router_.pick(*old_table, 0, "", nullptr);
      EXPECT_NE(stale.target, nullptr);
      EXPECT_NE(router_.pick_in_group(*old_table, stale.group, stale.target), nullptr);
    }
    auto a = router_.pick(*table_, 0, "", nullptr);
    auto b = reference.pick(*table_, 0, "", nullptr);
    ASSERT_EQ(a.target, b.target) << "pick " << i;
  }
  // The older table's picks still follow its weights roughly (a low-discrepancy sequence).
  std::map<int, int> stale_groups;
  for (int i = 0; i < 10000; ++i) stale_groups[router_.pick(*old_table, 0, "", nullptr).group]++;
  EXPECT_NEAR(stale_groups[0], 5000, 50);
}

// ---- choice inside a group ----

TEST_F(RoutingTest, RoundRobinSkipsTargetsThatAreNotHealthy) {
  apply(snapshot(1, {{"blue", {"t1", "t2", "t3", "t4"}}}));
  std::string order;
  for (int i = 0; i < 8; ++i) order += pick().target->id.substr(1) + " ";
  EXPECT_EQ(order, "1 2 3 4 1 2 3 4 ");
  health("t2").state.store(HealthState::Initial);
  health("t3").state.store(HealthState::Unhealthy);
  health("t4").state.store(HealthState::Draining);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(pick().target->id, "t1");
  health("t1").state.store(HealthState::Unhealthy);
  auto none = pick();
  EXPECT_EQ(none.target, nullptr) << "no healthy target: 503";
  EXPECT_EQ(group_of(none), "blue") << "the group is named in the 503";
  health("t3").state.store(HealthState::Healthy);
  EXPECT_EQ(pick().target->id, "t3");
}

TEST_F(RoutingTest, AnEmptyChosenGroupSpillsOverToAnotherRoutedGroup) {
  apply(snapshot(1, {{"blue", {"b1"}, 5000}, {"green", {"g1"}, 5000}, {"idle", {"i1"}, 0}}));
  health("g1").state.store(HealthState::Unhealthy);
  std::map<std::string, int> served;
  for (int i = 0; i < 100; ++i) {
    auto p = pick();
    ASSERT_NE(p.target, nullptr) << "pick " << i;
    served[group_of(p)]++;
  }
  EXPECT_EQ(served["blue"], 100) << "green's share goes to blue, never to an unrouted group";
  // Green is healthy again: the split is back, exactly.
  health("g1").state.store(HealthState::Healthy);
  served.clear();
  for (int i = 0; i < 100; ++i) served[group_of(pick())]++;
  EXPECT_EQ(served["blue"], 50);
  EXPECT_EQ(served["green"], 50);
  // No routed group has a target: 503, naming the group the split chose.
  health("g1").state.store(HealthState::Unhealthy);
  health("b1").state.store(HealthState::Unhealthy);
  for (int i = 0; i < 10; ++i) {
    auto p = pick();
    EXPECT_EQ(p.target, nullptr);
    EXPECT_TRUE(group_of(p) == "blue" || group_of(p) == "green") << group_of(p);
  }
}

TEST_F(RoutingTest, ExcludeSkipsTheFailedTarget) {
  apply(snapshot(1, {{"blue", {"t1", "t2", "t3"}}}));
  const auto& t1 = target("t1");
  for (int i = 0; i < 6; ++i) EXPECT_NE(pick("", &t1).target, &t1);
  int blue = group_index("blue");
  auto first = pick();
  auto* retry = router_.pick_in_group(*table_, blue, first.target);
  ASSERT_NE(retry, nullptr);
  EXPECT_NE(retry, first.target);
  health("t2").state.store(HealthState::Unhealthy);
  health("t3").state.store(HealthState::Unhealthy);
  EXPECT_EQ(router_.pick_in_group(*table_, blue, &t1), nullptr) << "nothing else to retry on";
  EXPECT_EQ(router_.pick_in_group(*table_, 99, nullptr), nullptr);
}

TEST_F(RoutingTest, LeastOutstandingRequestsPrefersTheLeastBusyTarget) {
  apply(snapshot(
      1, {{"blue", {"t1", "t2", "t3"}, kWeightTotal, Algorithm::LeastOutstandingRequests}}));
  health("t1").in_flight.store(3);
  health("t2").in_flight.store(1);
  health("t3").in_flight.store(2);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(pick().target->id, "t2");
  health("t2").in_flight.store(5);
  EXPECT_EQ(pick().target->id, "t3");
  // Ties go in round-robin order.
  for (auto id : {"t1", "t2", "t3"}) health(id).in_flight.store(0);
  std::string order;
  for (int i = 0; i < 6; ++i) order += pick().target->id + " ";
  EXPECT_EQ(order, "t1 t2 t3 t1 t2 t3 ");
  // The least busy target is skipped if it may not take traffic.
  health("t1").in_flight.store(4);
  health("t2").in_flight.store(4);
  health("t3").state.store(HealthState::Unhealthy);
  health("t2").in_flight.store(3);
  EXPECT_EQ(pick().target->id, "t2");
  EXPECT_EQ(pick("", &target("t2")).target->id, "t1");
}

TEST_F(RoutingTest, PicksAndReportsDoNotAllocate) {
  apply(snapshot(
      1,
      {{"blue", {"b1", "b2"}, 1000, Algorithm::LeastOutstandingRequests, kDefaultPassiveEjection},
       {"green", {"g1", "g2"}, 9000}},
      "cutover_cohort"));
  std::string cookie = "a=1; cutover_cohort=" + table_->listeners[0].cohort[0];
  g_allocations = 0;
  g_count_allocations = true;
  for (int i = 0; i < 1000; ++i) {
    auto p = pick(i % 2 ? std::string_view(cookie) : std::string_view());
    router_.report(*table_, p.group, *p.target, i % 3 ? Outcome::Success : Outcome::Status5xx);
  }
  g_count_allocations = false;
  EXPECT_EQ(g_allocations, 0u);
}

// ---- sticky cohorts ----

TEST(Cookies, FindCookieParsesTheCookieHeader) {
  struct Case {
    const char* header;
    std::optional<std::string_view> expected;
  };
  const Case cases[] = {
      {"cutover_cohort=blue.1", "blue.1"},
      {"a=1; cutover_cohort=blue.1; b=2", "blue.1"},
      {"a=1;cutover_cohort=blue.1", "blue.1"},
      {"  cutover_cohort = blue.1  ;", "blue.1"},
      {"a=1;\tcutover_cohort=blue.1\t", "blue.1"},
      {"cutover_cohort=\"blue.1\"", "blue.1"},
      {"x_cutover_cohort=red; cutover_cohort2=red; cutover_cohortx=red; cutover_cohort=blue",
       "blue"},
      {"Cutover_Cohort=red", std::nullopt},  // names are case-sensitive
      {"cutover_cohort=blue; cutover_cohort=green", "blue"},
      {"cutover_cohort", std::nullopt},
      {"a=1; ; b", std::nullopt},
      {"", std::nullopt},
      {"cutover_cohort=", ""},
      {"cutover_cohort=a=b", "a=b"},
      {"cutover_cohort=\"", "\""},
  };
  for (const auto& c : cases)
    EXPECT_EQ(find_cookie(c.header, "cutover_cohort"), c.expected) << c.header;
}

TEST(Cookies, CookieFieldFindsTheFirstCookieHeaderInAnyCase) {
  struct H {
    std::string_view name;
    std::string_view value;
  };
  std::vector<H> headers = {{"Host", "x"}, {"Cookies", "no"}, {"cOOKIE", "a=1"}, {"Cookie", "b=2"}};
  EXPECT_EQ(cookie_field(headers), "a=1");
  EXPECT_EQ(cookie_field(std::vector<H>{{"Host", "x"}, {"Set-Cookie", "a=1"}}), "");
  EXPECT_EQ(cookie_field(std::vector<H>{{"cookie", ""}}), "");
}

TEST(Cookies, SetCookieHeader) {
  EXPECT_EQ(format_set_cookie("cutover_cohort", "web-green.0a1b2c3d"),
            "cutover_cohort=web-green.0a1b2c3d; Path=/; HttpOnly; SameSite=Lax");
}

TEST_F(RoutingTest, StickyCohortPinsAClientAndKeepsTheSplitOfNewClientsExact) {
  apply(
      snapshot(1, {{"blue", {"b1", "b2"}, 9000}, {"green", {"g1", "g2"}, 1000}}, "cutover_cohort"));
  auto first = pick();
  ASSERT_NE(first.target, nullptr);
  ASSERT_FALSE(first.set_cookie.empty()) << "a new client gets its cohort";
  EXPECT_EQ(first.set_cookie, "cutover_cohort=blue." + cohort_epoch(*table_, {9000, 1000}) +
                                  "; Path=/; HttpOnly; SameSite=Lax");
  EXPECT_EQ(first.set_cookie_line, "Set-Cookie: " + std::string(first.set_cookie) + "\r\n");
  // Find a green client.
  Pick green;
  for (int i = 0; i < 10 && group_of(green) != "green"; ++i) green = pick();
  ASSERT_EQ(group_of(green), "green");
  std::string cookie = "session=abc; cutover_cohort=" + cookie_value(green.set_cookie) + "; x=y";

  // Pinned requests interleaved with new clients: pinned ones all go to green (round robin
  // inside it) without a new cookie, and new clients still split 90/10 exactly.
  std::map<std::string, int> pinned_targets;
  std::map<std::string, int> new_clients;
  for (int i = 0; i < 10000; ++i) {
    auto p = pick(cookie);
    ASSERT_EQ(group_of(p), "green");
    EXPECT_TRUE(p.set_cookie.empty());
    EXPECT_TRUE(p.set_cookie_line.empty());
    pinned_targets[p.target->id]++;
    auto n = pick();
    EXPECT_FALSE(n.set_cookie.empty());
    new_clients[group_of(n)]++;
  }
  EXPECT_EQ(pinned_targets["g1"], pinned_targets["g2"]);
  EXPECT_NEAR(new_clients["green"], 1000, 1);
  EXPECT_NEAR(new_clients["blue"], 9000, 1);
}

TEST_F(RoutingTest, StickyPinLastsForOneDeployment) {
  const std::string kCookie = "cutover_cohort";
  // Deployment 1: green (the new version) gets 10%, then 50%: pins hold through weight changes.
  apply(snapshot(1, {{"blue", {"b1"}, 9000}, {"green", {"g1"}, 1000}}, kCookie));
  Pick green;
  for (int i = 0; i < 10 && group_of(green) != "green"; ++i) green = pick();
  std::string green_pin = kCookie + "=" + cookie_value(green.set_cookie);
  std::string blue_pin = kCookie + "=" + cookie_value(pick().set_cookie);
  ASSERT_NE(blue_pin.find("=blue."), std::string::npos);
  apply(snapshot(2, {{"blue", {"b1"}, 5000}, {"green", {"g1"}, 5000}}, kCookie));
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(group_of(pick(green_pin)), "green");
    EXPECT_EQ(group_of(pick(blue_pin)), "blue");
  }
  // Green's targets fail: its pinned clients move to blue (also when the weighted choice said
  // green: the request spills over) and join blue's cohort.
  health("g1").state.store(HealthState::Unhealthy);
  for (int i = 0; i < 10; ++i) {
    auto p = pick(green_pin);
    ASSERT_NE(p.target, nullptr);
    ASSERT_EQ(group_of(p), "blue");
    EXPECT_EQ(p.set_cookie.substr(0, kCookie.size() + 6), kCookie + "=blue.");
  }
  health("g1").state.store(HealthState::Healthy);

  // Deployment 1 finishes: blue's weight drops to 0. Blue's pins are dropped; with one routed group
  // there is no choice, hence no cookie.
  apply(snapshot(3, {{"blue", {"b1"}, 0}, {"green", {"g1"}, 10000}}, kCookie));
  for (int i = 0; i < 5; ++i) {
    auto p = pick(blue_pin);
    EXPECT_EQ(group_of(p), "green");
    EXPECT_TRUE(p.set_cookie.empty());
  }

  // Deployment 2: blue runs the next version on new tasks and gets 10%. A client still carrying
  // its green pin from deployment 1 is a new client of deployment 2: the weighted choice decides
  // and it gets a new cookie (the epoch changed), so the canary's split is not skewed by old pins.
  apply(snapshot(4, {{"blue", {"b7"}, 1000}, {"green", {"g1"}, 9000}}, kCookie));
  std::map<std::string, int> returning;
  for (int i = 0; i < 1000; ++i) {
    auto p = pick(green_pin);
    EXPECT_FALSE(p.set_cookie.empty());
    EXPECT_NE(cookie_value(p.set_cookie), green_pin.substr(kCookie.size() + 1));
    returning[group_of(p)]++;
  }
  EXPECT_EQ(returning["blue"], 100);

  // Rollback of deployment 2 (blue to 0) drops every pin as well.
  std::string new_blue_pin;
  for (int i = 0; i < 20 && new_blue_pin.empty(); ++i)
    if (auto p = pick(); group_of(p) == "blue")
      new_blue_pin = kCookie + "=" + cookie_value(p.set_cookie);
  ASSERT_FALSE(new_blue_pin.empty());
  EXPECT_EQ(group_of(pick(new_blue_pin)), "blue");
  apply(snapshot(5, {{"blue", {"b7"}, 0}, {"green", {"g1"}, 10000}}, kCookie));
  EXPECT_EQ(group_of(pick(new_blue_pin)), "green");
}

TEST_F(RoutingTest, CohortEpochDependsOnRoutedGroupsAndTargetsOnly) {
  apply(snapshot(1, {{"blue", {"b1", "b2"}, 9000}, {"green", {"g1"}, 1000}}, "c"));
  auto epoch = table_->listeners[0].cohort[0].substr(5);
  EXPECT_EQ(epoch.size(), 8u);
  EXPECT_EQ(table_->listeners[0].cohort[0], "blue." + epoch);
  EXPECT_EQ(table_->listeners[0].cohort[1], "green." + epoch);
  apply(snapshot(2, {{"green", {"g1"}, 2000}, {"blue", {"b2", "b1"}, 8000}}, "c"));
  EXPECT_EQ(table_->listeners[0].cohort[1], "blue." + epoch) << "order and weights do not matter";
  apply(snapshot(3, {{"green", {"g1", "g2"}, 2000}, {"blue", {"b2", "b1"}, 8000}}, "c"));
  EXPECT_NE(table_->listeners[0].cohort[1], "blue." + epoch) << "a new target starts a new epoch";
}

TEST_F(RoutingTest, StickyIsOffUnlessTheListenerEnablesIt) {
  apply(snapshot(1, {{"blue", {"b1"}, 5000}, {"green", {"g1"}, 5000}}));
  std::map<std::string, int> seen;
  for (int i = 0; i < 100; ++i) {
    auto p = pick("cutover_cohort=green");
    EXPECT_TRUE(p.set_cookie.empty());
    seen[group_of(p)]++;
  }
  EXPECT_EQ(seen["blue"], 50);
  // A forged or mangled cookie on a sticky listener is just a new client.
  apply(snapshot(2, {{"blue", {"b1"}, 5000}, {"green", {"g1"}, 5000}}, "cutover_cohort"));
  seen.clear();
  for (int i = 0; i < 100; ++i) {
    auto p = pick("cutover_cohort=green; other=green." + table_->listeners[0].cohort[1]);
    EXPECT_FALSE(p.set_cookie.empty());
    seen[group_of(p)]++;
  }
  EXPECT_EQ(seen["blue"], 50);
}

// ---- passive ejection ----

TEST_F(RoutingTest, ConsecutiveFiveHundredsEjectATargetUntilItsDeadline) {
  PassiveEjection policy{3, 0, 10000, 50};
  apply(snapshot(1, {{"blue", {"t1", "t2", "t3"}, kWeightTotal, Algorithm::RoundRobin, policy}}));
  report("t1", Outcome::Status5xx, 2);
  report("t1", Outcome::Success);
  report("t1", Outcome::Status5xx, 2);
  EXPECT_EQ(health("t1").consecutive_5xx.load(), 2);
  EXPECT_FALSE(is_ejected(health("t1"), clock_.now())) << "a success resets the count";
  report("t1", Outcome::Status5xx);
  EXPECT_TRUE(is_ejected(health("t1"), clock_.now()));
  EXPECT_EQ(health("t1").ejections.load(), 1u);
  EXPECT_EQ(health("t1").consecutive_5xx.load(), 0);
  auto until = ejected_until(health("t1"), clock_.now());
  ASSERT_TRUE(until.has_value());
  EXPECT_EQ(*until - clock_.now(), 10000ms);
  for (int i = 0; i < 10; ++i) EXPECT_NE(pick().target->id, "t1");
  // Failures of requests that were in flight when it was ejected do not count.
  report("t1", Outcome::Status5xx, 5);
  EXPECT_EQ(health("t1").ejections.load(), 1u);
  EXPECT_EQ(health("t1").consecutive_5xx.load(), 0);

  clock_.advance(9999ms);
  for (int i = 0; i < 10; ++i) EXPECT_NE(pick().target->id, "t1");
  clock_.advance(1ms);
  EXPECT_FALSE(is_ejected(health("t1"), clock_.now()));
  std::map<std::string, int> seen;
  for (int i = 0; i < 30; ++i) seen[pick().target->id]++;
  EXPECT_EQ(seen["t1"], 10) << "back in rotation";
}

TEST_F(RoutingTest, ConsecutiveConnectFailuresEjectSeparately) {
  PassiveEjection policy{0, 2, 500, 100};
  apply(snapshot(1, {{"blue", {"t1", "t2"}, kWeightTotal, Algorithm::RoundRobin, policy}}));
  report("t1", Outcome::Status5xx, 10);
  EXPECT_FALSE(is_ejected(health("t1"), clock_.now())) << "consecutive_5xx 0 = off";
  report("t1", Outcome::ConnectFailure);
  report("t1", Outcome::Status5xx);  // it answered: connects work again
  report("t1", Outcome::ConnectFailure);
  EXPECT_FALSE(is_ejected(health("t1"), clock_.now()));
  report("t1", Outcome::ConnectFailure);
  EXPECT_TRUE(is_ejected(health("t1"), clock_.now()));
  EXPECT_EQ(ejected_until(health("t1"), clock_.now()).value() - clock_.now(), 500ms);
}

TEST_F(RoutingTest, PassiveEjectionOffByDefault) {
  apply(snapshot(1, {{"blue", {"t1", "t2"}}}));
  report("t1", Outcome::Status5xx, 100);
  report("t1", Outcome::ConnectFailure, 100);
  EXPECT_FALSE(is_ejected(health("t1"), clock_.now()));
}

TEST_F(RoutingTest, NeverEjectsTheLastTargetThatMayTakeTraffic) {
  PassiveEjection policy{1, 1, 10000, 100};
  apply(snapshot(1, {{"solo", {"s1"}, 5000, Algorithm::RoundRobin, policy},
                     {"pair", {"p1", "p2"}, 5000, Algorithm::RoundRobin, policy}}));
  report("s1", Outcome::ConnectFailure, 5);
  EXPECT_FALSE(is_ejected(health("s1"), clock_.now())) << "a group of one keeps its target";
  report("p1", Outcome::Status5xx);
  EXPECT_TRUE(is_ejected(health("p1"), clock_.now()));
  report("p2", Outcome::Status5xx, 5);
  EXPECT_FALSE(is_ejected(health("p2"), clock_.now())) << "p2 is the last one";
  // An unhealthy target does not count as one that may take traffic.
  clock_.advance(10000ms);
  health("p2").state.store(HealthState::Unhealthy);
  report("p1", Outcome::Status5xx);
  EXPECT_FALSE(is_ejected(health("p1"), clock_.now()));
}

TEST_F(RoutingTest, MaxEjectionPercentCapsEjections) {
  PassiveEjection policy{1, 0, 10000, 50};
  apply(snapshot(
      1, {{"blue", {"t1", "t2", "t3", "t4"}, kWeightTotal, Algorithm::RoundRobin, policy}}));
  for (auto id : {"t1", "t2", "t3", "t4"}) report(id, Outcome::Status5xx);
  int ejected = 0;
  for (auto id : {"t1", "t2", "t3", "t4"}) ejected += is_ejected(health(id), clock_.now());
  EXPECT_EQ(ejected, 2) << "50% of 4";
  EXPECT_TRUE(is_ejected(health("t1"), clock_.now()));
  EXPECT_TRUE(is_ejected(health("t2"), clock_.now()));
  // When t1's ejection ends, t3 (still failing) may take its place.
  clock_.advance(10000ms);
  report("t3", Outcome::Status5xx);
  EXPECT_TRUE(is_ejected(health("t3"), clock_.now()));
}

TEST_F(RoutingTest, EveryHealthyTargetEjectedMeansIgnoreEjection) {
  // Two workers ejecting at the same moment can get here; a Healthy target beats a 503.
  PassiveEjection policy{1, 0, 10000, 100};
  apply(snapshot(1, {{"blue", {"t1", "t2"}, kWeightTotal, Algorithm::RoundRobin, policy}}));
  auto until = (clock_.now() + 10000ms).time_since_epoch().count();
  health("t1").ejected_until.store(until);
  health("t2").ejected_until.store(until);
  std::map<std::string, int> seen;
  for (int i = 0; i < 10; ++i) seen[pick().target->id]++;
  EXPECT_EQ(seen["t1"], 5);
  EXPECT_EQ(seen["t2"], 5);
  health("t2").state.store(HealthState::Unhealthy);
  EXPECT_EQ(pick().target->id, "t1") << "never an unhealthy one";
  EXPECT_EQ(pick("", &target("t1")).target, nullptr);
}

TEST_F(RoutingTest, EjectionIsPerTargetAndSharedAcrossTables) {
  PassiveEjection policy{2, 0, 10000, 50};
  apply(snapshot(1, {{"blue", {"t1", "t2"}, kWeightTotal, Algorithm::RoundRobin, policy}}));
  report("t1", Outcome::Status5xx, 2);
  ASSERT_TRUE(is_ejected(health("t1"), clock_.now()));
  // The next snapshot keeps the target (same id): it stays ejected, the shared state says so.
  apply(snapshot(2, {{"blue", {"t1", "t2", "t3"}, kWeightTotal, Algorithm::RoundRobin, policy}}));
  for (int i = 0; i < 10; ++i) EXPECT_NE(pick().target->id, "t1");
}

TEST_F(RoutingTest, ConcurrentWorkersEjectATargetExactlyOnce) {
  // Workers share TargetHealth; each has its own Router. Many failures reported at once from four
  // threads eject the target once (one log line), and the group keeps a target.
  PassiveEjection policy{3, 0, 60000, 100};
  apply(snapshot(1, {{"blue", {"t1", "t2"}, kWeightTotal, Algorithm::RoundRobin, policy}}));
  std::vector<std::thread> workers;
  for (int w = 0; w < 4; ++w)
    workers.emplace_back([this] {
      Router router(clock_);
      router.reset(table_);
      int blue = group_index("blue");
      for (int i = 0; i < 2000; ++i) {
        router.report(*table_, blue, target("t1"), Outcome::Status5xx);
        router.report(*table_, blue, target("t2"), Outcome::Status5xx);
        auto p = router.pick(*table_, 0, "", nullptr);
        ASSERT_NE(p.target, nullptr);
      }
    });
  for (auto& t : workers) t.join();
  EXPECT_EQ(health("t1").ejections.load() + health("t2").ejections.load(), 1u);
  EXPECT_NE(is_ejected(health("t1"), clock_.now()), is_ejected(health("t2"), clock_.now()));
}

}  // namespace
}  // namespace cutover::proxy::detail
