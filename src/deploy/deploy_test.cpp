#include "deploy/deploy.hpp"

#include <gtest/gtest.h>

#include <map>
#include <queue>
#include <random>

using namespace cutover::deploy;
using cutover::core::TimePoint;
using namespace std::chrono_literals;

namespace {

Deployment fresh(bool has_blue) {
  Deployment d;
  d.id = "dep-1";
  d.service = "web";
  d.release_id = "rel-2";
  if (has_blue) d.previous_release_id = "rel-1";
  d.green = Color::Green;
  d.install_timeout = 60s;
  d.hook_timeout = 30s;
  d.apply_timeout = 5s;
  d.stop_timeout = 10s;
  d.termination_wait = 5min;
  d.insufficient_data_timeout = 2min;
  return d;
}

std::vector<CommandKind> kinds(const Decision& dec) {
  std::vector<CommandKind> out;
  for (const auto& c : dec.commands) out.push_back(c.kind);
  return out;
}

const TimePoint t0 = TimePoint{} + 1000s;

Event ev(EventKind k) { return Event{.kind = k}; }
Event hook_ok(Hook h) { return Event{.kind = EventKind::HookSucceeded, .hook = h}; }
Event hook_failed(Hook h) {
  return Event{.kind = EventKind::HookFailed, .detail = "exit 1", .hook = h};
}
Event applied(int w) { return Event{.kind = EventKind::WeightsApplied, .weight = w}; }
Event test_on(Color c) { return Event{.kind = EventKind::TestTrafficApplied, .color = c}; }
Event stopped(Color c) { return Event{.kind = EventKind::TaskSetStopped, .color = c}; }
Event verdict(AlarmState a) {
  return Event{.kind = EventKind::AlarmVerdict, .detail = "http_5xx", .alarm = a};
}

// Drives a deployment from Pending to AllowTraffic (weights requested for the first step).
Decision to_allow_traffic(Deployment d, TimePoint now = t0) {
  auto s = decide(d, ev(EventKind::Start), now);
  s = decide(s.next, ev(EventKind::TaskSetStarted), now);
  s = decide(s.next, ev(EventKind::TargetsHealthy), now);
  s = decide(s.next, test_on(Color::Green), now);
  EXPECT_EQ(s.next.phase, Phase::AllowTraffic);
  return s;
}

}  // namespace

TEST(Decide, HappyPathWithEveryHookACanaryAndAlarms) {
  auto d = fresh(true);
  d.hooks.fill(true);
  d.has_alarms = true;
  d.schedule = {{1000, 5min}, {kWeightTotal, 0s}};
  auto s = decide(d, ev(EventKind::Start), t0);
  EXPECT_EQ(s.next.phase, Phase::BeforeInstall);
  EXPECT_EQ(kinds(s), (std::vector{CommandKind::RunHook, CommandKind::ArmTimer}));
  EXPECT_EQ(s.commands[0].hook, Hook::BeforeInstall);
  EXPECT_EQ(s.commands[1].at, t0 + 30s);

  s = decide(s.next, hook_ok(Hook::BeforeInstall), t0 + 1s);
  EXPECT_EQ(s.next.phase, Phase::Install);
  EXPECT_EQ(kinds(s), (std::vector{CommandKind::StartTaskSet, CommandKind::ArmTimer}));
  EXPECT_EQ(s.commands[0].color, Color::Green);

  s = decide(s.next, ev(EventKind::TaskSetStarted), t0 + 2s);
  EXPECT_EQ(kinds(s), (std::vector{CommandKind::WatchHealth}));
  s = decide(s.next, ev(EventKind::TargetsHealthy), t0 + 3s);
  EXPECT_EQ(s.next.phase, Phase::AfterInstall);
  s = decide(s.next, hook_ok(Hook::AfterInstall), t0 + 4s);
  EXPECT_EQ(s.next.phase, Phase::AllowTestTraffic);
  EXPECT_EQ(kinds(s), (std::vector{CommandKind::RouteTestTo, CommandKind::ArmTimer}));
  s = decide(s.next, test_on(Color::Green), t0 + 5s);
  EXPECT_EQ(s.next.phase, Phase::AfterAllowTestTraffic);
  s = decide(s.next, hook_ok(Hook::AfterAllowTestTraffic), t0 + 6s);
  EXPECT_EQ(s.next.phase, Phase::BeforeAllowTraffic);
  s = decide(s.next, hook_ok(Hook::BeforeAllowTraffic), t0 + 7s);
  EXPECT_EQ(s.next.phase, Phase::AllowTraffic);
  EXPECT_EQ(kinds(s), (std::vector{CommandKind::WatchAlarms, CommandKind::SetWeights,
                                   CommandKind::ArmTimer}));
  EXPECT_EQ(s.commands[1].weight, 1000);

  s = decide(s.next, applied(1000), t0 + 8s);
  EXPECT_EQ(s.next.wait, Wait::Pausing);
  EXPECT_EQ(*s.next.deadline, t0 + 8s + 5min);
  s = decide(s.next, verdict(AlarmState::Ok), t0 + 60s);
  EXPECT_TRUE(s.commands.empty());
  s = decide(s.next, ev(EventKind::Timer), t0 + 8s + 5min);
  EXPECT_EQ(kinds(s), (std::vector{CommandKind::SetWeights, CommandKind::ArmTimer}));
  EXPECT_EQ(s.commands[0].weight, kWeightTotal);
  s = decide(s.next, applied(kWeightTotal), t0 + 9s + 5min);
  EXPECT_EQ(s.next.phase, Phase::AfterAllowTraffic);
  s = decide(s.next, hook_ok(Hook::AfterAllowTraffic), t0 + 10s + 5min);
  EXPECT_EQ(s.next.phase, Phase::TerminationWait);
  EXPECT_EQ(s.next.wait, Wait::Warm);
  EXPECT_EQ(*s.next.deadline, t0 + 10min + 10s);  // + termination_wait
  s = decide(s.next, ev(EventKind::Timer), t0 + 10min + 10s);
  EXPECT_EQ(kinds(s), (std::vector{CommandKind::StopTaskSet, CommandKind::ArmTimer}));
  EXPECT_EQ(s.commands[0].color, Color::Blue);
  s = decide(s.next, stopped(Color::Blue), t0 + 16min);
  EXPECT_EQ(s.next.phase, Phase::Succeeded);
  EXPECT_EQ(kinds(s), (std::vector{CommandKind::Finish}));
  EXPECT_FALSE(s.next.deadline);
}

TEST(Decide, EmptyHookPhasesArePassedThrough) {
  auto s = decide(fresh(true), ev(EventKind::Start), t0);
  EXPECT_EQ(s.next.phase, Phase::Install);
  s = decide(s.next, ev(EventKind::TaskSetStarted), t0);
  s = decide(s.next, ev(EventKind::TargetsHealthy), t0);
  EXPECT_EQ(s.next.phase, Phase::AllowTestTraffic);
  s = decide(s.next, test_on(Color::Green), t0);
  EXPECT_EQ(s.next.phase, Phase::AllowTraffic);
  EXPECT_EQ(kinds(s), (std::vector{CommandKind::SetWeights, CommandKind::ArmTimer}));
  s = decide(s.next, applied(kWeightTotal), t0);
  EXPECT_EQ(s.next.phase, Phase::TerminationWait);
}

TEST(Decide, FirstDeploySucceedsWithoutTerminationWait) {
  auto s = to_allow_traffic(fresh(false));
  s = decide(s.next, applied(kWeightTotal), t0);
  EXPECT_EQ(s.next.phase, Phase::Succeeded);
  EXPECT_EQ(kinds(s), (std::vector{CommandKind::Finish}));
}

// Every hook phase: a failure or a timeout fails the deployment; another hook's result does not.
TEST(Decide, HookFailuresAndTimeoutsInEveryHookPhase) {
  struct Case {
    Hook hook;
    Phase phase;
    bool traffic_on_green;  // the test listener already moved
  };
  for (const auto& c :
       std::vector<Case>{{Hook::BeforeInstall, Phase::BeforeInstall, false},
                         {Hook::AfterInstall, Phase::AfterInstall, false},
                         {Hook::AfterAllowTestTraffic, Phase::AfterAllowTestTraffic, true},
                         {Hook::BeforeAllowTraffic, Phase::BeforeAllowTraffic, true},
                         {Hook::AfterAllowTraffic, Phase::AfterAllowTraffic, true}}) {
    auto d = fresh(true);
    d.hooks[static_cast<size_t>(c.hook)] = true;
    auto s = decide(d, ev(EventKind::Start), t0);
    for (int i = 0; i < 8 && s.next.phase != c.phase; ++i) {
      switch (s.next.phase) {
        case Phase::Install:
          s = decide(
              s.next,
              ev(s.next.green_started ? EventKind::TargetsHealthy : EventKind::TaskSetStarted), t0);
          break;
        case Phase::AllowTestTraffic:
          s = decide(s.next, test_on(Color::Green), t0);
          break;
        case Phase::AllowTraffic:
          s = decide(s.next, applied(kWeightTotal), t0);
          break;
        default:
          FAIL() << "unexpected phase " << to_string(s.next.phase);
      }
    }
    ASSERT_EQ(s.next.phase, c.phase) << to_string(c.hook);
    const auto at_hook = s;

    // A result of another hook point is stale: ignored.
    Hook other_hook = c.hook == Hook::BeforeInstall ? Hook::AfterInstall : Hook::BeforeInstall;
    auto stale = decide(at_hook.next, hook_failed(other_hook), t0 + 1s);
    EXPECT_EQ(stale.next.phase, c.phase);
    EXPECT_TRUE(stale.commands.empty());

    for (bool timeout : {false, true}) {
      auto f = timeout ? decide(at_hook.next, ev(EventKind::Timer), t0 + 31s)
                       : decide(at_hook.next, hook_failed(c.hook), t0 + 1s);
      EXPECT_NE(f.next.reason.find(std::string(to_string(c.hook))), std::string::npos)
          << f.next.reason;
      if (c.hook == Hook::BeforeInstall) {  // nothing started: ends at once
        EXPECT_EQ(f.next.phase, Phase::Failed);
        EXPECT_EQ(kinds(f), (std::vector{CommandKind::Finish}));
      } else if (!c.traffic_on_green) {  // green started but never had traffic: stop it
        EXPECT_EQ(f.next.phase, Phase::RollingBack);
        EXPECT_EQ(f.commands[0].kind, CommandKind::StopTaskSet);
        EXPECT_EQ(f.commands[0].color, Color::Green);
        EXPECT_EQ(decide(f.next, stopped(Color::Green), t0 + 2s).next.phase, Phase::Failed);
      } else {  // traffic reached green: roll back, production first
        EXPECT_EQ(f.next.phase, Phase::RollingBack);
        ASSERT_GE(f.commands.size(), 2u);
        EXPECT_EQ(f.commands[0].kind, CommandKind::SetWeights);
        EXPECT_EQ(f.commands[0].weight, 0);
        EXPECT_EQ(f.commands[1].kind, CommandKind::RouteTestTo);
        EXPECT_EQ(f.commands[1].color, Color::Blue);
      }
    }
  }
}

TEST(Decide, InstallFailures) {
  auto s = decide(fresh(true), ev(EventKind::Start), t0);
  auto f = decide(s.next, Event{.kind = EventKind::TaskSetFailed, .detail = "no such file"}, t0);
  EXPECT_EQ(f.next.phase, Phase::RollingBack);
  EXPECT_EQ(kinds(f), (std::vector{CommandKind::StopTaskSet, CommandKind::ArmTimer}));
  EXPECT_EQ(f.next.reason, "green task set failed to start: no such file");
  f = decide(f.next, stopped(Color::Green), t0 + 1s);
  EXPECT_EQ(f.next.phase, Phase::Failed);

  // Never healthy: the install timeout fails it; production never left blue.
  s = decide(s.next, ev(EventKind::TaskSetStarted), t0 + 1s);
  auto early = decide(s.next, ev(EventKind::Timer), t0 + 59s);
  EXPECT_EQ(early.next.phase, Phase::Install);  // an early timer changes nothing
  f = decide(s.next, ev(EventKind::Timer), t0 + 60s);
  EXPECT_EQ(f.next.phase, Phase::RollingBack);
  EXPECT_NE(f.next.reason.find("health checks"), std::string::npos);
  for (const auto& c : f.commands) EXPECT_NE(c.kind, CommandKind::SetWeights);
  // The stop is not confirmed either: the deadline still ends it.
  f = decide(f.next, ev(EventKind::Timer), t0 + 70s);
  EXPECT_EQ(f.next.phase, Phase::Failed);
  EXPECT_NE(f.next.reason.find("did not confirm its stop"), std::string::npos);
}

TEST(Decide, AlarmRollsBackInOneSnapshotThenStopsGreen) {
  auto d = fresh(true);
  d.has_alarms = true;
  d.schedule = {{1000, 5min}, {kWeightTotal, 0s}};
  auto s = to_allow_traffic(d);
  s = decide(s.next, applied(1000), t0 + 1s);
  s = decide(s.next, verdict(AlarmState::Alarm), t0 + 30s);
  EXPECT_EQ(s.next.phase, Phase::RollingBack);
  ASSERT_EQ(kinds(s), (std::vector{CommandKind::SetWeights, CommandKind::RouteTestTo,
                                   CommandKind::ArmTimer}));
  EXPECT_EQ(s.commands[0].weight, 0);
  EXPECT_EQ(s.next.reason, "alarm: http_5xx");
  // Green is stopped only after both the weights and the test route are confirmed.
  auto half = decide(s.next, applied(0), t0 + 31s);
  EXPECT_TRUE(half.commands.empty());
  auto done = decide(half.next, test_on(Color::Blue), t0 + 31s);
  EXPECT_EQ(kinds(done), (std::vector{CommandKind::StopTaskSet, CommandKind::ArmTimer}));
  EXPECT_EQ(done.commands[0].color, Color::Green);
  done = decide(done.next, stopped(Color::Green), t0 + 32s);
  EXPECT_EQ(done.next.phase, Phase::RolledBack);
  // The same acknowledgements in the other order.
  half = decide(s.next, test_on(Color::Blue), t0 + 31s);
  EXPECT_TRUE(half.commands.empty());
  EXPECT_EQ(decide(half.next, applied(0), t0 + 31s).commands[0].kind, CommandKind::StopTaskSet);
}

TEST(Decide, AlarmWithoutAutoRollbackFailsAndLeavesTraffic) {
  auto d = fresh(true);
  d.has_alarms = true;
  d.rollback_on_alarm = false;
  d.schedule = {{5000, 1min}, {kWeightTotal, 0s}};
  auto s = to_allow_traffic(d);
  s = decide(s.next, applied(5000), t0 + 1s);
  s = decide(s.next, verdict(AlarmState::Alarm), t0 + 2s);
  EXPECT_EQ(s.next.phase, Phase::Failed);
  EXPECT_EQ(kinds(s), (std::vector{CommandKind::Finish}));
  EXPECT_NE(s.next.reason.find("auto_rollback does not include alarm"), std::string::npos);
}

TEST(Decide, AlarmsBeforeProductionTrafficOnlyRecordTheVerdict) {
  auto d = fresh(true);
  d.has_alarms = true;
  auto s = decide(d, ev(EventKind::Start), t0);
  s = decide(s.next, verdict(AlarmState::Alarm), t0);
  EXPECT_EQ(s.next.phase, Phase::Install);
  EXPECT_EQ(s.next.alarms, AlarmState::Alarm);
  EXPECT_TRUE(s.commands.empty());
}

TEST(Decide, InsufficientDataWaitsThenContinuesOrRollsBack) {
  for (bool go_on : {false, true}) {
    auto d = fresh(true);
    d.has_alarms = true;
    d.insufficient_data_continue = go_on;
    d.schedule = {{1000, 1min}, {kWeightTotal, 0s}};
    auto s = to_allow_traffic(d);
    s = decide(s.next, applied(1000), t0);
    s = decide(s.next, ev(EventKind::Timer), t0 + 1min);
    EXPECT_EQ(s.next.wait, Wait::WaitingForData);  // no verdict yet = insufficient data
    EXPECT_EQ(*s.next.deadline, t0 + 3min);
    // OK arriving in time moves on.
    auto ok = decide(s.next, verdict(AlarmState::Ok), t0 + 2min);
    EXPECT_EQ(ok.commands[0].kind, CommandKind::SetWeights);
    EXPECT_EQ(ok.commands[0].weight, kWeightTotal);
    // The deadline decides otherwise.
    auto late = decide(s.next, ev(EventKind::Timer), t0 + 3min);
    if (go_on) {
      EXPECT_EQ(late.next.phase, Phase::AllowTraffic);
      EXPECT_EQ(late.commands[0].weight, kWeightTotal);
    } else {
      EXPECT_EQ(late.next.phase, Phase::RollingBack);
      EXPECT_EQ(late.commands[0].weight, 0);
    }
  }
}

TEST(Decide, OperatorCommands) {
  auto d = fresh(true);
  d.schedule = {{1000, 10min}, {2000, 10min}, {kWeightTotal, 0s}};
  auto s = to_allow_traffic(d);
  s = decide(s.next, applied(1000), t0);
  // promote: the remaining steps are skipped.
  auto p = decide(s.next, ev(EventKind::Promote), t0 + 1s);
  EXPECT_EQ(kinds(p), (std::vector{CommandKind::SetWeights, CommandKind::ArmTimer}));
  EXPECT_EQ(p.commands[0].weight, kWeightTotal);
  EXPECT_TRUE(decide(p.next, ev(EventKind::Promote), t0 + 2s).commands.empty());
  p = decide(p.next, applied(kWeightTotal), t0 + 2s);
  EXPECT_EQ(p.next.phase, Phase::TerminationWait);
  // promote in TerminationWait: blue is stopped now.
  auto stop_now = decide(p.next, ev(EventKind::Promote), t0 + 3s);
  EXPECT_EQ(stop_now.commands[0].kind, CommandKind::StopTaskSet);
  EXPECT_EQ(stop_now.commands[0].color, Color::Blue);
  // rollback during TerminationWait is one snapshot back to blue.
  auto rb = decide(p.next, Event{.kind = EventKind::Rollback, .detail = "alice"}, t0 + 3s);
  EXPECT_EQ(rb.next.phase, Phase::RollingBack);
  EXPECT_EQ(rb.commands[0].kind, CommandKind::SetWeights);
  EXPECT_EQ(rb.commands[0].weight, 0);
  EXPECT_EQ(rb.next.reason, "rolled back by operator alice");
  // ... but not once blue is being stopped.
  EXPECT_TRUE(decide(stop_now.next, ev(EventKind::Rollback), t0 + 4s).commands.empty());
  // abort ends Stopped.
  auto ab = decide(s.next, ev(EventKind::Abort), t0 + 1s);
  ab = decide(ab.next, applied(0), t0 + 2s);
  ab = decide(ab.next, test_on(Color::Blue), t0 + 2s);
  ab = decide(ab.next, stopped(Color::Green), t0 + 3s);
  EXPECT_EQ(ab.next.phase, Phase::Stopped);
  // abort before anything started.
  EXPECT_EQ(decide(fresh(true), ev(EventKind::Abort), t0).next.phase, Phase::Stopped);
}

TEST(Decide, GreenLosingHealthAfterTrafficRollsBack) {
  auto s = to_allow_traffic(fresh(true));
  s = decide(s.next, applied(kWeightTotal), t0);
  s = decide(s.next, ev(EventKind::TargetsUnhealthy), t0 + 1s);
  EXPECT_EQ(s.next.phase, Phase::RollingBack);
  EXPECT_EQ(s.commands[0].weight, 0);
}

TEST(Decide, FailureAfterTrafficWithoutBlueLeavesGreenServing) {
  auto s = to_allow_traffic(fresh(false));
  s = decide(s.next, Event{.kind = EventKind::WeightsFailed, .detail = "bad"}, t0);
  EXPECT_EQ(s.next.phase, Phase::Failed);
  EXPECT_EQ(kinds(s), (std::vector{CommandKind::Finish}));
  EXPECT_NE(s.next.reason.find("no previous release"), std::string::npos);
}

TEST(Decide, RollbackSnapshotRefusedLeavesGreenRunning) {
  auto s = to_allow_traffic(fresh(true));
  s = decide(s.next, applied(kWeightTotal), t0);
  s = decide(s.next, ev(EventKind::Rollback), t0);
  s = decide(s.next, Event{.kind = EventKind::WeightsFailed, .detail = "proxy down"}, t0);
  EXPECT_EQ(s.next.phase, Phase::Failed);
  EXPECT_EQ(kinds(s), (std::vector{CommandKind::Finish}));
  EXPECT_NE(s.next.reason.find("green left running"), std::string::npos);
}

TEST(Decide, TerminalStatesIgnoreEverything) {
  auto s = to_allow_traffic(fresh(false));
  s = decide(s.next, applied(kWeightTotal), t0);
  ASSERT_EQ(s.next.phase, Phase::Succeeded);
  for (int k = 0; k <= static_cast<int>(EventKind::Promote); ++k) {
    auto again = decide(s.next, Event{.kind = static_cast<EventKind>(k)}, t0 + 1h);
    EXPECT_EQ(again.next.phase, Phase::Succeeded);
    EXPECT_TRUE(again.commands.empty());
  }
}

TEST(Decide, PhaseNamesRoundTrip) {
  for (int p = 0; p <= static_cast<int>(Phase::Stopped); ++p) {
    auto name = to_string(static_cast<Phase>(p));
    auto back = parse_phase(name);
    ASSERT_TRUE(back.ok()) << name;
    EXPECT_EQ(static_cast<int>(*back), p);
  }
  EXPECT_FALSE(parse_phase("Sideways").ok());
}

// ---------------------------------------------------------------------------------------------
// Randomized simulation: 10,000 deployments in simulated time against a model of the runtime,
// the proxy and the hooks, with faults at every step (lost and refused replies, failed and hung
// hooks, health flaps, alarms, operator commands, controller restarts that replay the last
// decision's commands). The invariants of DESIGN.md §3 are checked after every event.
namespace {

struct World {
  bool has_blue = false;
  bool blue_running = false;
  bool green_running = false;
  int weight = 0;  // green's production weight in the proxy
  bool test_on_green = false;
};

struct Pending {
  TimePoint at;
  uint64_t seq;
  Event event;
  bool operator>(const Pending& o) const { return at != o.at ? at > o.at : seq > o.seq; }
};

struct Sim {
  std::mt19937_64 rng;
  World w;
  Deployment d;
  TimePoint now = t0;
  uint64_t seq = 0;
  std::priority_queue<Pending, std::vector<Pending>, std::greater<>> q;
  std::vector<Command> last_commands;
  bool alarms_watched = false;
  int failures = 0;

  explicit Sim(uint64_t seed) : rng(seed) {}

  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; }
  cutover::core::Duration delay() { return std::chrono::milliseconds(rng() % 3000); }
  void later(Event e, cutover::core::Duration after) { q.push({now + after, seq++, e}); }

  void check(const Decision& dec) {
    const Deployment& n = dec.next;
    SCOPED_TRACE(std::string("phase ") + std::string(to_string(n.phase)) + " wait " +
                 std::string(to_string(n.wait)));
    // 4: every in-progress state has a deadline.
    if (!is_terminal(n.phase) && n.phase != Phase::Pending) {
      ASSERT_TRUE(n.deadline.has_value());
    }
    if (is_terminal(n.phase)) {
      ASSERT_FALSE(n.deadline.has_value());
    }
    for (size_t i = 0; i < dec.commands.size(); ++i) {
      const Command& c = dec.commands[i];
      if (c.kind == CommandKind::SetWeights && c.weight > 0) {
        ASSERT_TRUE(n.green_healthy) << "1: weight to green before it passed its health checks";
      }
      if (c.kind == CommandKind::StopTaskSet && c.color == Color::Blue) {
        ASSERT_EQ(w.weight, kWeightTotal) << "blue stopped while it still had production weight";
      }
      if (c.kind == CommandKind::StopTaskSet && c.color == Color::Green) {
        ASSERT_EQ(w.weight, 0) << "green stopped while it still had production weight";
      }
    }
    // 3: entering RollingBack with traffic on green and blue alive: SetWeights(0) comes first.
    if (n.phase == Phase::RollingBack && d.phase != Phase::RollingBack && w.weight > 0 &&
        w.has_blue) {
      ASSERT_FALSE(dec.commands.empty());
      ASSERT_EQ(dec.commands[0].kind, CommandKind::SetWeights);
      ASSERT_EQ(dec.commands[0].weight, 0);
    }
  }

  // The controller executes a command against the model world; replies arrive later or never.
  void execute(const Command& c) {
    switch (c.kind) {
      case CommandKind::StartTaskSet:
        if (chance(0.05)) {
          later({.kind = EventKind::TaskSetFailed, .detail = "spawn", .color = c.color}, delay());
        } else {
          w.green_running = true;
          if (!chance(0.03)) later({.kind = EventKind::TaskSetStarted, .color = c.color}, delay());
        }
        break;
      case CommandKind::WatchHealth:
        if (chance(0.92)) later(ev(EventKind::TargetsHealthy), delay());
        break;
      case CommandKind::RouteTestTo:
        if (chance(0.03)) {
          later({.kind = EventKind::WeightsFailed, .detail = "refused"}, delay());
        } else if (!chance(0.03)) {
          w.test_on_green = c.color == Color::Green;
          later(test_on(c.color), delay());
        }
        break;
      case CommandKind::SetWeights:
        if (chance(0.03)) {
          later({.kind = EventKind::WeightsFailed, .detail = "refused"}, delay());
        } else {
          w.weight = c.weight;  // applied; the reply may still be lost
          if (!chance(0.03)) later(applied(c.weight), delay());
        }
        break;
      case CommandKind::WatchAlarms:
        alarms_watched = true;
        break;
      case CommandKind::RunHook: {
        const double r = std::uniform_real_distribution<double>(0, 1)(rng);
        if (r < 0.85) {
          later(hook_ok(c.hook), delay());
        } else if (r < 0.95) {
          later(hook_failed(c.hook), delay());
        }  // else: hangs; the hook timeout must end it
        break;
      }
      case CommandKind::StopTaskSet:
        if (c.color == Color::Green) {
          w.green_running = false;
        } else {
          w.blue_running = false;
        }
        if (!chance(0.03)) later(stopped(c.color), delay());
        break;
      case CommandKind::ArmTimer:
        q.push({c.at, seq++, ev(EventKind::Timer)});
        break;
      case CommandKind::Finish:
        break;
    }
  }

  void inject_faults() {
    if (chance(0.02)) later(ev(EventKind::TargetsUnhealthy), delay());
    if (alarms_watched && chance(0.3)) {
      const int r = static_cast<int>(rng() % 10);
      AlarmState a = AlarmState::Ok;
      if (r == 0) {
        a = AlarmState::Alarm;
      } else if (r < 4) {
        a = AlarmState::InsufficientData;
      }
      later(verdict(a), delay());
    }
    if (chance(0.01)) later(ev(EventKind::Rollback), delay());
    if (chance(0.005)) later(ev(EventKind::Abort), delay());
    if (chance(0.02)) later(ev(EventKind::Promote), delay());
    if (chance(0.03)) later(stopped(chance(0.5) ? Color::Blue : Color::Green), delay());  // stale
    if (chance(0.03)) later(applied(static_cast<int>(rng() % 3) * 5000), delay());        // stale
  }

  void run() {
    d = fresh(chance(0.8));
    d.green = Color::Green;
    w.has_blue = d.previous_release_id.has_value();
    w.blue_running = w.has_blue;
    for (size_t i = 0; i < kHookCount; ++i) d.hooks[i] = chance(0.4);
    d.has_alarms = chance(0.6);
    d.rollback_on_failure = chance(0.8);
    d.rollback_on_alarm = chance(0.8);
    d.insufficient_data_continue = chance(0.5);
    switch (rng() % 3) {
      case 0:
        d.schedule = {{kWeightTotal, 0s}};
        break;
      case 1:
        d.schedule = {{1000, 5min}, {kWeightTotal, 0s}};
        break;
      default:
        d.schedule.clear();
        for (int p = 1; p <= 9; ++p) d.schedule.push_back({p * 1000, 1min});
        d.schedule.push_back({kWeightTotal, 0s});
    }
    later(ev(EventKind::Start), 0s);
    int events = 0;
    while (!is_terminal(d.phase)) {
      ASSERT_LT(++events, 5000) << "4: the deployment did not end (phase " << to_string(d.phase)
                                << ")";
      if (q.empty()) {
        FAIL() << "no event can arrive any more in phase " << to_string(d.phase) << " wait "
               << to_string(d.wait);
      }
      Pending p = q.top();
      q.pop();
      now = std::max(now, p.at);
      if (chance(0.01)) {
        // Controller restart: the outbox replays the last decision's commands (idempotent).
        for (const auto& c : last_commands) execute(c);
      }
      Decision dec = decide(d, p.event, now);
      check(dec);
      if (::testing::Test::HasFatalFailure()) return;
      if (dec.commands.empty() && dec.next.phase == d.phase) {
        d = dec.next;
        continue;
      }
      d = dec.next;
      last_commands = dec.commands;
      for (const auto& c : dec.commands) execute(c);
      inject_faults();
    }
    // End states.
    switch (d.phase) {
      case Phase::Succeeded:
        EXPECT_EQ(w.weight, kWeightTotal);
        EXPECT_TRUE(w.green_running);
        break;
      case Phase::RolledBack:
      case Phase::Stopped:
        EXPECT_EQ(w.weight, 0);
        EXPECT_FALSE(w.green_running);
        if (w.has_blue) {
          EXPECT_TRUE(w.blue_running) << "rolled back to a stopped blue";
        }
        break;
      case Phase::Failed:
        ++failures;
        EXPECT_FALSE(d.reason.empty());
        if (w.has_blue) {
          EXPECT_TRUE(w.blue_running || w.weight == kWeightTotal);
        }
        // Green is stopped unless the reason says it was left running.
        if (w.green_running) {
          EXPECT_NE(d.reason.find("left"), std::string::npos) << d.reason;
        }
        break;
      default:
        FAIL() << "not terminal";
    }
  }
};

}  // namespace

TEST(DecideSimulation, TenThousandDeploymentsWithFaultsKeepTheInvariants) {
  std::map<Phase, int> endings;
  for (uint64_t seed = 1; seed <= 10'000; ++seed) {
    Sim sim(seed);
    sim.run();
    if (::testing::Test::HasFailure()) {
      FAIL() << "seed " << seed;
    }
    ++endings[sim.d.phase];
  }
  // Every ending is reached, so the faults really exercise the machine.
  for (Phase p : {Phase::Succeeded, Phase::Failed, Phase::RolledBack, Phase::Stopped}) {
    EXPECT_GT(endings[p], 50) << to_string(p);
  }
  for (const auto& [p, n] : endings) std::printf("%s: %d\n", std::string(to_string(p)).c_str(), n);
}
