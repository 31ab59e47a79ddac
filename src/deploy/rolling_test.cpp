#include "deploy/rolling.hpp"

#include <gtest/gtest.h>

#include <map>
#include <queue>
#include <random>

using namespace cutover::deploy;
using cutover::core::TimePoint;
using namespace std::chrono_literals;

namespace {

const TimePoint t0 = TimePoint{} + 1000s;

RollingDeployment fresh(int n, int min_healthy_pct, int max_pct, bool has_blue = true) {
  RollingDeployment d;
  d.id = "dep-1";
  d.service = "web";
  d.release_id = "rel-2";
  d.desired = n;
  d.min_healthy_percent = min_healthy_pct;
  d.max_percent = max_pct;
  d.circuit_breaker_threshold = 3;
  d.task_timeout = 60s;
  d.apply_timeout = 5s;
  d.stop_timeout = 10s;
  if (has_blue) {
    d.previous_release_id = "rel-1";
    d.blue.assign(n, TaskSlot{.state = TaskState::Healthy, .deadline = std::nullopt});
  }
  return d;
}

RollingEvent ev(RollingEventKind k) { return RollingEvent{.kind = k}; }
RollingEvent task_ev(RollingEventKind k, Color c, size_t i) {
  return RollingEvent{.kind = k, .detail = "exit 1", .color = c, .task = i};
}
RollingEvent healthy_ev(Color c, size_t i) { return task_ev(RollingEventKind::TaskHealthy, c, i); }
RollingEvent failed_ev(Color c, size_t i) { return task_ev(RollingEventKind::TaskFailed, c, i); }
RollingEvent stopped_ev(Color c, size_t i) { return task_ev(RollingEventKind::TaskStopped, c, i); }
RollingEvent applied(int w, uint64_t snapshot) {
  return RollingEvent{.kind = RollingEventKind::WeightsApplied, .weight = w, .snapshot = snapshot};
}

// The commands of one kind (and color) in a decision, as task indices or weights.
std::vector<size_t> tasks_of(const RollingDecision& dec, RollingCommandKind k, Color c) {
  std::vector<size_t> out;
  for (const auto& cmd : dec.commands) {
    if (cmd.kind == k && cmd.color == c) out.push_back(cmd.task);
  }
  return out;
}
std::vector<int> weights_of(const RollingDecision& dec) {
  std::vector<int> out;
  for (const auto& cmd : dec.commands) {
    if (cmd.kind == RollingCommandKind::SetWeights) out.push_back(cmd.weight);
  }
  return out;
}
bool has(const RollingDecision& dec, RollingCommandKind k) {
  for (const auto& c : dec.commands) {
    if (c.kind == k) return true;
  }
  return false;
}

}  // namespace

TEST(Rolling, Bounds) {
  EXPECT_EQ(max_running(fresh(4, 100, 200)), 8);
  EXPECT_EQ(min_healthy(fresh(4, 100, 200)), 4);
  EXPECT_EQ(max_running(fresh(3, 50, 150)), 4);  // 4.5 rounded down, as ECS
  EXPECT_EQ(min_healthy(fresh(3, 50, 150)), 2);  // 1.5 rounded up, as ECS
  EXPECT_EQ(target_weight(1, 3), 2500);
  EXPECT_EQ(target_weight(2, 1), 6666);
  EXPECT_EQ(target_weight(3, 0), kWeightTotal);
  EXPECT_EQ(target_weight(0, 3), 0);
}

// min_healthy 100 / max 200: all of green first, then blue, weight following the healthy counts.
TEST(Rolling, MinHealthy100Max200StartsGreenThenStopsBlue) {
  auto s = decide_rolling(fresh(4, 100, 200), ev(RollingEventKind::Start), t0);
  EXPECT_EQ(s.next.phase, RollingPhase::Updating);
  EXPECT_EQ(tasks_of(s, RollingCommandKind::StartTask, Color::Green),
            (std::vector<size_t>{0, 1, 2, 3}));
  EXPECT_TRUE(tasks_of(s, RollingCommandKind::StopTask, Color::Blue).empty());
  EXPECT_EQ(*s.next.deadline, t0 + 60s);
  EXPECT_EQ(running(s.next), 8);

  // One green healthy: 5 healthy, one blue may go; the proxy weighs 1 green : 3 blue first.
  s = decide_rolling(s.next, healthy_ev(Color::Green, 0), t0 + 1s);
  EXPECT_EQ(weights_of(s), (std::vector{2500}));
  EXPECT_TRUE(tasks_of(s, RollingCommandKind::StopTask, Color::Blue).empty());
  EXPECT_EQ(s.next.blue[0].state, TaskState::Draining);
  // A second health report while the snapshot is in flight: no second SetWeights yet.
  s = decide_rolling(s.next, healthy_ev(Color::Green, 1), t0 + 2s);
  EXPECT_TRUE(weights_of(s).empty());
  EXPECT_EQ(s.next.blue[1].state, TaskState::Draining);
  s = decide_rolling(s.next, applied(2500, s.next.snapshot), t0 + 3s);
  EXPECT_EQ(weights_of(s), (std::vector{5000}));  // 2 green : 2 blue
  s = decide_rolling(s.next, applied(5000, s.next.snapshot), t0 + 4s);
  EXPECT_EQ(tasks_of(s, RollingCommandKind::StopTask, Color::Blue), (std::vector<size_t>{0, 1}));
  EXPECT_TRUE(tasks_of(s, RollingCommandKind::StartTask, Color::Green).empty());  // 4 active

  s = decide_rolling(s.next, healthy_ev(Color::Green, 2), t0 + 5s);
  s = decide_rolling(s.next, healthy_ev(Color::Green, 3), t0 + 5s);
  EXPECT_EQ(s.next.blue[2].state, TaskState::Draining);
  EXPECT_EQ(s.next.blue[3].state, TaskState::Draining);
  s = decide_rolling(s.next, applied(7500, s.next.snapshot),
                     t0 + 6s);  // the one requested at green 2
  EXPECT_EQ(weights_of(s), (std::vector{kWeightTotal}));
  s = decide_rolling(s.next, applied(kWeightTotal, s.next.snapshot), t0 + 7s);
  EXPECT_EQ(tasks_of(s, RollingCommandKind::StopTask, Color::Blue), (std::vector<size_t>{2, 3}));
  for (size_t i = 0; i < 3; ++i) {
    s = decide_rolling(s.next, stopped_ev(Color::Blue, i), t0 + 8s);
    EXPECT_EQ(s.next.phase, RollingPhase::Updating);
  }
  s = decide_rolling(s.next, stopped_ev(Color::Blue, 3), t0 + 9s);
  EXPECT_EQ(s.next.phase, RollingPhase::Succeeded);
  EXPECT_TRUE(has(s, RollingCommandKind::Finish));
  EXPECT_FALSE(s.next.deadline);
}

// min_healthy 50 / max 100: half of blue goes first, then green replaces it batch by batch.
TEST(Rolling, MinHealthy50Max100StopsHalfOfBlueFirst) {
  auto s = decide_rolling(fresh(4, 50, 100), ev(RollingEventKind::Start), t0);
  EXPECT_EQ(tasks_of(s, RollingCommandKind::StopTask, Color::Blue), (std::vector<size_t>{0, 1}));
  EXPECT_TRUE(tasks_of(s, RollingCommandKind::StartTask, Color::Green).empty());  // 4 running
  EXPECT_TRUE(weights_of(s).empty());  // no green healthy: weight stays 0 (all blue)
  s = decide_rolling(s.next, stopped_ev(Color::Blue, 0), t0 + 1s);
  EXPECT_EQ(tasks_of(s, RollingCommandKind::StartTask, Color::Green), (std::vector<size_t>{0}));
  s = decide_rolling(s.next, stopped_ev(Color::Blue, 1), t0 + 1s);
  EXPECT_EQ(tasks_of(s, RollingCommandKind::StartTask, Color::Green), (std::vector<size_t>{1}));
  s = decide_rolling(s.next, healthy_ev(Color::Green, 0), t0 + 2s);
  EXPECT_EQ(weights_of(s), (std::vector{5000}));  // blue 2 chosen and excluded: 1 green : 1 blue
  EXPECT_EQ(s.next.blue[2].state, TaskState::Draining);  // 3 healthy, 2 needed
  EXPECT_TRUE(tasks_of(s, RollingCommandKind::StopTask, Color::Blue).empty());  // still weighed
  s = decide_rolling(s.next, applied(5000, s.next.snapshot), t0 + 3s);
  EXPECT_EQ(tasks_of(s, RollingCommandKind::StopTask, Color::Blue), (std::vector<size_t>{2}));
  EXPECT_EQ(running(s.next), 4);
  EXPECT_LE(running(s.next), max_running(s.next));
}

TEST(Rolling, CircuitBreakerBeforeTrafficRestoresBlueAndFails) {
  auto s = decide_rolling(fresh(2, 50, 100), ev(RollingEventKind::Start), t0);
  EXPECT_EQ(tasks_of(s, RollingCommandKind::StopTask, Color::Blue), (std::vector<size_t>{0}));
  s = decide_rolling(s.next, stopped_ev(Color::Blue, 0), t0);
  EXPECT_EQ(tasks_of(s, RollingCommandKind::StartTask, Color::Green), (std::vector<size_t>{0}));
  s = decide_rolling(s.next, failed_ev(Color::Green, 0), t0 + 1s);
  EXPECT_EQ(s.next.green_failures, 1);
  EXPECT_EQ(tasks_of(s, RollingCommandKind::StopTask, Color::Green), (std::vector<size_t>{0}));
  s = decide_rolling(s.next, stopped_ev(Color::Green, 0), t0 + 2s);
  EXPECT_EQ(tasks_of(s, RollingCommandKind::StartTask, Color::Green), (std::vector<size_t>{1}));
  // The second failure is a health timeout.
  s = decide_rolling(s.next, ev(RollingEventKind::Timer), t0 + 2s + 60s);
  EXPECT_EQ(s.next.green_failures, 2);
  EXPECT_EQ(s.next.phase, RollingPhase::Updating);
  s = decide_rolling(s.next, stopped_ev(Color::Green, 1), t0 + 63s);
  ASSERT_EQ(tasks_of(s, RollingCommandKind::StartTask, Color::Green), (std::vector<size_t>{2}));
  s = decide_rolling(s.next, failed_ev(Color::Green, 2), t0 + 64s);
  EXPECT_EQ(s.next.green_failures, 3);
  EXPECT_EQ(s.next.phase, RollingPhase::RollingBack);
  EXPECT_NE(s.next.reason.find("circuit breaker: 3 green tasks failed"), std::string::npos)
      << s.next.reason;
  // Blue back to 2: one new blue task; no weights to move (green never had traffic).
  EXPECT_EQ(tasks_of(s, RollingCommandKind::StartTask, Color::Blue), (std::vector<size_t>{2}));
  EXPECT_TRUE(weights_of(s).empty());
  s = decide_rolling(s.next, stopped_ev(Color::Green, 2), t0 + 65s);
  EXPECT_EQ(s.next.phase, RollingPhase::RollingBack);  // blue 2 still starting
  s = decide_rolling(s.next, healthy_ev(Color::Blue, 2), t0 + 66s);
  EXPECT_EQ(s.next.phase, RollingPhase::Failed);
  EXPECT_EQ(healthy(s.next, Color::Blue), 2);
}

// Green had production weight: blue is restored first, then one SetWeights(0), then green stops.
TEST(Rolling, CircuitBreakerAfterTrafficRollsBackInOneSnapshot) {
  auto d = fresh(2, 100, 200);
  d.circuit_breaker_threshold = 1;
  auto s = decide_rolling(d, ev(RollingEventKind::Start), t0);
  s = decide_rolling(s.next, healthy_ev(Color::Green, 0), t0);
  EXPECT_EQ(weights_of(s), (std::vector{5000}));  // blue 0 chosen: 1 green : 1 blue
  s = decide_rolling(s.next, applied(5000, s.next.snapshot), t0);
  EXPECT_EQ(tasks_of(s, RollingCommandKind::StopTask, Color::Blue), (std::vector<size_t>{0}));
  s = decide_rolling(s.next, failed_ev(Color::Green, 1), t0 + 1s);
  EXPECT_EQ(s.next.phase, RollingPhase::RollingBack);
  EXPECT_EQ(s.next.green_failures, 1);
  EXPECT_EQ(tasks_of(s, RollingCommandKind::StartTask, Color::Blue), (std::vector<size_t>{2}));
  EXPECT_TRUE(weights_of(s).empty());  // not before blue is back
  EXPECT_TRUE(tasks_of(s, RollingCommandKind::StopTask, Color::Green) ==
              (std::vector<size_t>{1}));  // the failed one; healthy green 0 keeps serving
  s = decide_rolling(s.next, healthy_ev(Color::Blue, 2), t0 + 2s);
  EXPECT_EQ(weights_of(s), (std::vector{0}));
  EXPECT_TRUE(tasks_of(s, RollingCommandKind::StopTask, Color::Green).empty());
  s = decide_rolling(s.next, applied(0, s.next.snapshot), t0 + 3s);
  EXPECT_EQ(tasks_of(s, RollingCommandKind::StopTask, Color::Green), (std::vector<size_t>{0}));
  s = decide_rolling(s.next, stopped_ev(Color::Green, 0), t0 + 4s);
  s = decide_rolling(s.next, stopped_ev(Color::Green, 1), t0 + 4s);
  EXPECT_EQ(s.next.phase, RollingPhase::RolledBack);
}

TEST(Rolling, CircuitBreakerWithoutFailureInAutoRollbackLeavesEverything) {
  auto d = fresh(2, 100, 200);
  d.circuit_breaker_threshold = 1;
  d.rollback_on_failure = false;
  auto s = decide_rolling(d, ev(RollingEventKind::Start), t0);
  s = decide_rolling(s.next, healthy_ev(Color::Green, 0), t0);
  s = decide_rolling(s.next, applied(5000, s.next.snapshot), t0);
  s = decide_rolling(s.next, failed_ev(Color::Green, 1), t0 + 1s);
  EXPECT_EQ(s.next.phase, RollingPhase::Failed);
  EXPECT_NE(s.next.reason.find("auto_rollback does not include failure"), std::string::npos);
  EXPECT_FALSE(s.next.deadline);
}

TEST(Rolling, AlarmRollsBackOnlyOnceGreenHasTraffic) {
  auto d = fresh(2, 100, 200);
  d.has_alarms = true;
  auto s = decide_rolling(d, ev(RollingEventKind::Start), t0);
  EXPECT_TRUE(has(s, RollingCommandKind::WatchAlarms));
  RollingEvent alarm{
      .kind = RollingEventKind::AlarmVerdict, .detail = "5xx", .alarm = AlarmState::Alarm};
  auto before = decide_rolling(s.next, alarm, t0 + 1s);
  EXPECT_EQ(before.next.phase, RollingPhase::Updating);  // recorded only
  EXPECT_EQ(before.next.alarms, AlarmState::Alarm);
  s = decide_rolling(s.next, healthy_ev(Color::Green, 0), t0 + 1s);  // SetWeights in flight
  s = decide_rolling(s.next, alarm, t0 + 2s);
  EXPECT_EQ(s.next.phase, RollingPhase::RollingBack);
  EXPECT_EQ(s.next.ending, Ending::RolledBack);
  // Blue is still whole: the rollback snapshot goes at once.
  EXPECT_EQ(weights_of(s), (std::vector{0}));
}

TEST(Rolling, OperatorCommands) {
  auto s = decide_rolling(fresh(2, 100, 200), ev(RollingEventKind::Start), t0);
  auto p = decide_rolling(s.next, ev(RollingEventKind::Promote), t0);
  EXPECT_TRUE(p.commands.empty());
  EXPECT_EQ(p.next.phase, RollingPhase::Updating);
  auto a = decide_rolling(s.next, ev(RollingEventKind::Abort), t0 + 1s);
  EXPECT_EQ(a.next.phase, RollingPhase::RollingBack);
  EXPECT_EQ(tasks_of(a, RollingCommandKind::StopTask, Color::Green), (std::vector<size_t>{0, 1}));
  a = decide_rolling(a.next, stopped_ev(Color::Green, 0), t0 + 2s);
  a = decide_rolling(a.next, stopped_ev(Color::Green, 1), t0 + 2s);
  EXPECT_EQ(a.next.phase, RollingPhase::Stopped);
  auto r = decide_rolling(
      s.next, RollingEvent{.kind = RollingEventKind::Rollback, .detail = "alice"}, t0 + 1s);
  EXPECT_EQ(r.next.ending, Ending::RolledBack);
  EXPECT_NE(r.next.reason.find("alice"), std::string::npos);
  // A second rollback while rolling back changes nothing.
  EXPECT_TRUE(decide_rolling(r.next, ev(RollingEventKind::Rollback), t0 + 2s).commands.empty());
}

TEST(Rolling, BoundsThatCannotProgressFailAtStart) {
  auto s = decide_rolling(fresh(1, 50, 100), ev(RollingEventKind::Start), t0);
  EXPECT_EQ(s.next.phase, RollingPhase::Failed);
  EXPECT_NE(s.next.reason.find("leave no room"), std::string::npos) << s.next.reason;
}

TEST(Rolling, FirstDeploymentHasNoBlue) {
  auto s = decide_rolling(fresh(2, 100, 200, false), ev(RollingEventKind::Start), t0);
  EXPECT_EQ(tasks_of(s, RollingCommandKind::StartTask, Color::Green), (std::vector<size_t>{0, 1}));
  s = decide_rolling(s.next, healthy_ev(Color::Green, 0), t0);
  EXPECT_EQ(weights_of(s), (std::vector{kWeightTotal}));
  s = decide_rolling(s.next, applied(kWeightTotal, s.next.snapshot), t0);
  s = decide_rolling(s.next, healthy_ev(Color::Green, 1), t0);
  EXPECT_EQ(s.next.phase, RollingPhase::Succeeded);
}

TEST(Rolling, StaleAndDuplicateEventsChangeNothing) {
  auto s = decide_rolling(fresh(2, 100, 200), ev(RollingEventKind::Start), t0);
  s = decide_rolling(s.next, healthy_ev(Color::Green, 0), t0);
  for (const auto& e :
       {healthy_ev(Color::Green, 0), healthy_ev(Color::Green, 7), stopped_ev(Color::Blue, 1),
        applied(1234, s.next.snapshot), ev(RollingEventKind::Timer), ev(RollingEventKind::Start)}) {
    auto x = decide_rolling(s.next, e, t0 + 1s);
    EXPECT_TRUE(x.commands.empty()) << to_string(e.kind);
    EXPECT_EQ(x.next.green, s.next.green);
    EXPECT_EQ(x.next.blue, s.next.blue);
  }
}

TEST(Rolling, ProxyRefusingWeightsFails) {
  auto s = decide_rolling(fresh(2, 100, 200), ev(RollingEventKind::Start), t0);
  s = decide_rolling(s.next, healthy_ev(Color::Green, 0), t0);
  s = decide_rolling(
      s.next,
      RollingEvent{
          .kind = RollingEventKind::WeightsFailed, .detail = "v9", .snapshot = s.next.snapshot},
      t0 + 1s);
  EXPECT_EQ(s.next.phase, RollingPhase::RollingBack);
  EXPECT_EQ(s.next.ending, Ending::Failed);  // green never had traffic
  EXPECT_NE(s.next.reason.find("refused"), std::string::npos);
}

TEST(Rolling, PhaseNamesRoundTrip) {
  for (auto p : {RollingPhase::Pending, RollingPhase::Updating, RollingPhase::RollingBack,
                 RollingPhase::Succeeded, RollingPhase::Failed, RollingPhase::RolledBack,
                 RollingPhase::Stopped}) {
    EXPECT_EQ(*parse_rolling_phase(to_string(p)), p);
  }
  EXPECT_FALSE(parse_rolling_phase("Updatin").ok());
}

// ---------------------------------------------------------------------------------------------
// Randomized simulation: 10,000 rolling deployments in simulated time against a model of the
// runtime (tasks that fail to start, crash-loop, never get healthy, flap) and the proxy (refused
// and lost snapshots), with alarms, operator commands and controller restarts that replay the
// last decision's commands. After every event:
//   R1 Updating: tasks running in the model and in the machine <= max_running;
//      RollingBack: <= max_running + N.
//   R2 whenever a decision in Updating chooses blue tasks to stop, the healthy tasks left
//      (healthy green + healthy blue not chosen) >= min_healthy. A fault (a health flap, a green
//      failure) may still lower the count afterwards: that is the "when the faults allow it".
//   R3 SetWeights(w): w > 0 only with a healthy green task, w < 10000 only with a healthy blue
//      task; at most one per decision; in Updating w = 10000 * healthy green / healthy total.
//      A blue task is stopped in Updating only once the applied weight already excludes it.
//   R4 a deadline in every non-terminal state (after Start), none in terminal ones.
//   R5 green_failures < threshold while Updating; leaving Updating by the circuit breaker
//      happens at exactly threshold.
namespace {

struct WTask {
  bool running = false;
  bool healthy = false;  // its health report is on its way or delivered
};

struct Pending {
  TimePoint at;
  uint64_t seq;
  RollingEvent event;
  bool operator>(const Pending& o) const { return at != o.at ? at > o.at : seq > o.seq; }
};

struct Sim {
  std::mt19937_64 rng;
  RollingDeployment d;
  std::map<std::pair<Color, size_t>, WTask> world;
  int world_weight = 0;
  bool bad_version = false;  // every green task fails
  TimePoint now = t0;
  uint64_t seq = 0;
  std::priority_queue<Pending, std::vector<Pending>, std::greater<>> q;
  std::vector<RollingCommand> last_commands;
  bool alarms_watched = false;
  bool breaker_tripped = false;
  int initial_running = 0;
  bool trace = false;

  explicit Sim(uint64_t seed) : rng(seed) {}

  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; }
  cutover::core::Duration delay() { return std::chrono::milliseconds(rng() % 3000); }
  void later(RollingEvent e, cutover::core::Duration after) { q.push({now + after, seq++, e}); }

  int world_running(std::optional<Color> c = std::nullopt) const {
    int n = 0;
    for (const auto& [k, t] : world) n += t.running && (!c || k.first == *c);
    return n;
  }

  void check(const RollingDeployment& prev, const RollingDecision& dec) {
    const RollingDeployment& n = dec.next;
    SCOPED_TRACE(std::string("phase ") + std::string(to_string(n.phase)));
    const int n_tasks = n.desired;
    // R4
    if (!is_terminal(n.phase) && n.phase != RollingPhase::Pending) {
      ASSERT_TRUE(n.deadline.has_value()) << "R4: no deadline";
    }
    if (is_terminal(n.phase)) {
      ASSERT_FALSE(n.deadline.has_value());
    }
    // R1
    // With a count lowered by this release, blue alone may start above max_running: then the
    // bound is that nothing is started until the count is back under it.
    const int bound = std::max(max_running(n), initial_running);
    if (n.phase == RollingPhase::Updating) {
      ASSERT_LE(running(n), bound) << "R1";
      ASSERT_LE(world_running(), bound) << "R1 (model)";
      if (!tasks_of(dec, RollingCommandKind::StartTask, Color::Green).empty()) {
        ASSERT_LE(running(n), max_running(n)) << "R1: started above max_running";
      }
    } else if (n.phase == RollingPhase::RollingBack) {
      ASSERT_LE(world_running(), bound + n_tasks) << "R1 (rollback)";
    }
    // R2
    if (n.phase == RollingPhase::Updating) {
      bool chose = false;
      for (size_t i = 0; i < n.blue.size(); ++i) {
        const bool was =
            prev.blue[i].state == TaskState::Healthy || prev.blue[i].state == TaskState::Unhealthy;
        chose |= was && n.blue[i].state == TaskState::Draining;
      }
      if (chose) {
        ASSERT_GE(healthy(n, Color::Blue) + healthy(n, Color::Green), min_healthy(n)) << "R2";
      }
    }
    // R3
    int sets = 0;
    for (const auto& c : dec.commands) {
      if (c.kind == RollingCommandKind::SetWeights) {
        ++sets;
        if (c.weight > 0) {
          ASSERT_GT(healthy(n, Color::Green), 0) << "R3: weight to unhealthy green";
        }
        if (c.weight < kWeightTotal) {
          ASSERT_GT(healthy(n, Color::Blue), 0) << "R3: weight to unhealthy blue";
        }
        if (n.phase == RollingPhase::Updating) {
          ASSERT_EQ(c.weight, target_weight(healthy(n, Color::Green), healthy(n, Color::Blue)));
        }
      }
      if (c.kind == RollingCommandKind::StopTask && c.color == Color::Blue &&
          n.phase == RollingPhase::Updating) {
        const int hg = healthy(n, Color::Green);
        const int hb = healthy(n, Color::Blue);
        ASSERT_FALSE(n.awaiting_weights);
        if (hg + hb > 0) {
          ASSERT_EQ(world_weight, target_weight(hg, hb)) << "R3: blue stopped while weighed";
        }
      }
    }
    ASSERT_LE(sets, 1) << "R3: one snapshot per decision";
    // R5
    ASSERT_LE(n.green_failures, n.circuit_breaker_threshold);
    if (n.phase == RollingPhase::Updating) {
      ASSERT_LT(n.green_failures, n.circuit_breaker_threshold) << "R5: breaker late";
    }
    if (prev.phase == RollingPhase::Updating && n.phase != RollingPhase::Updating &&
        n.reason.rfind("circuit breaker", 0) == 0) {
      ASSERT_EQ(n.green_failures, n.circuit_breaker_threshold) << "R5";
      breaker_tripped = true;
    }
  }

  void execute(const RollingCommand& c) {
    switch (c.kind) {
      case RollingCommandKind::StartTask: {
        auto [it, inserted] = world.try_emplace({c.color, c.task});
        if (!inserted) break;  // a replayed command: the task exists already (idempotent)
        const bool green = c.color == Color::Green;
        const double r = std::uniform_real_distribution<double>(0, 1)(rng);
        if (green && bad_version) {
          it->second.running = chance(0.5);  // crash loop, or could not start at all
          later(task_ev(RollingEventKind::TaskFailed, c.color, c.task), delay());
        } else if (r < 0.04) {
          later(task_ev(RollingEventKind::TaskFailed, c.color, c.task), delay());
        } else {
          it->second.running = true;
          if (r > 0.07) {  // else never healthy
            it->second.healthy = true;
            later(healthy_ev(c.color, c.task), delay());
          }
        }
        break;
      }
      case RollingCommandKind::StopTask:
        world[{c.color, c.task}].running = false;
        world[{c.color, c.task}].healthy = false;
        if (!chance(0.03)) later(stopped_ev(c.color, c.task), delay());
        break;
      case RollingCommandKind::SetWeights:
        if (chance(0.02)) {
          later({.kind = RollingEventKind::WeightsFailed,
                 .detail = "refused",
                 .snapshot = c.snapshot},
                delay());
        } else {
          world_weight = c.weight;
          if (!chance(0.02)) later(applied(c.weight, c.snapshot), delay());
        }
        break;
      case RollingCommandKind::WatchAlarms:
        alarms_watched = true;
        break;
      case RollingCommandKind::ArmTimer:
        q.push({c.at, seq++, ev(RollingEventKind::Timer)});
        break;
      case RollingCommandKind::Finish:
        break;
    }
  }

  void inject_faults() {
    if (chance(0.03) && !world.empty()) {  // a running task loses its health, maybe comes back
      auto it = std::next(world.begin(), static_cast<long>(rng() % world.size()));
      if (it->second.running && it->second.healthy) {
        later(task_ev(RollingEventKind::TaskUnhealthy, it->first.first, it->first.second), delay());
        it->second.healthy = chance(0.6);
        if (it->second.healthy) later(healthy_ev(it->first.first, it->first.second), 5s);
      }
    }
    if (alarms_watched && chance(0.2)) {
      const int r = static_cast<int>(rng() % 10);
      const AlarmState a = r == 0  ? AlarmState::Alarm
                           : r < 3 ? AlarmState::InsufficientData
                                   : AlarmState::Ok;
      later({.kind = RollingEventKind::AlarmVerdict, .detail = "5xx", .alarm = a}, delay());
    }
    if (chance(0.005)) later(ev(RollingEventKind::Rollback), delay());
    if (chance(0.003)) later(ev(RollingEventKind::Abort), delay());
    if (chance(0.02)) later(ev(RollingEventKind::Promote), delay());
    if (chance(0.05) && !world.empty()) {  // a duplicate of a true report, late
      auto it = std::next(world.begin(), static_cast<long>(rng() % world.size()));
      if (!it->second.running) later(stopped_ev(it->first.first, it->first.second), delay());
      if (it->second.healthy) later(healthy_ev(it->first.first, it->first.second), delay());
    }
    if (chance(0.02)) {  // reports about tasks that do not exist
      later(healthy_ev(chance(0.5) ? Color::Blue : Color::Green, 50 + rng() % 6), delay());
    }
    if (chance(0.02)) {  // a duplicate of an older snapshot's reply
      later(applied(static_cast<int>(rng() % 3) * 5000, rng() % std::max<uint64_t>(d.snapshot, 1)),
            delay());
    }
  }

  void run() {
    static constexpr int kMin[] = {0, 50, 75, 100};
    static constexpr int kMax[] = {100, 125, 150, 200};
    do {
      d = fresh(1 + static_cast<int>(rng() % 5), kMin[rng() % 4], kMax[rng() % 4], chance(0.85));
    } while (max_running(d) <= min_healthy(d));
    d.circuit_breaker_threshold = 1 + static_cast<int>(rng() % 4);
    d.has_alarms = chance(0.5);
    d.rollback_on_failure = chance(0.8);
    d.rollback_on_alarm = chance(0.8);
    bad_version = chance(0.1);
    if (d.previous_release_id && chance(0.2)) {  // the count changed with this release
      d.blue.assign(1 + rng() % 5, TaskSlot{.state = TaskState::Healthy, .deadline = std::nullopt});
    }
    for (size_t i = 0; i < d.blue.size(); ++i) world[{Color::Blue, i}].running = true;
    initial_running = static_cast<int>(d.blue.size());
    later(ev(RollingEventKind::Start), 0s);
    int events = 0;
    while (!is_terminal(d.phase)) {
      ASSERT_LT(++events, 20000) << "R4: the deployment did not end";
      ASSERT_FALSE(q.empty()) << "no event can arrive any more in " << to_string(d.phase);
      Pending p = q.top();
      q.pop();
      now = std::max(now, p.at);
      if (chance(0.01)) {
        for (const auto& c : last_commands) execute(c);  // restart: the outbox replays
      }
      RollingDecision dec = decide_rolling(d, p.event, now);
      if (trace) {
        std::printf("%s %s c%d t%zu w%d -> %s w%d/%d hb%d hg%d:",
                    std::string(to_string(p.event.kind)).c_str(), p.event.detail.c_str(),
                    int(p.event.color), p.event.task, p.event.weight,
                    std::string(to_string(dec.next.phase)).c_str(), dec.next.weight, world_weight,
                    healthy(dec.next, Color::Blue), healthy(dec.next, Color::Green));
        for (auto& c : dec.commands)
          std::printf(" %s(c%d t%zu w%d)", std::string(to_string(c.kind)).c_str(), int(c.color),
                      c.task, c.weight);
        std::printf("\n");
      }
      for (const auto& c : dec.commands) execute(c);
      check(d, dec);
      if (::testing::Test::HasFatalFailure()) return;
      d = dec.next;
      if (dec.commands.empty()) continue;
      last_commands = dec.commands;
      inject_faults();
    }
    const bool has_blue = d.previous_release_id.has_value();
    switch (d.phase) {
      case RollingPhase::Succeeded:
        EXPECT_EQ(world_running(Color::Green), d.desired);
        EXPECT_EQ(world_running(Color::Blue), 0);
        EXPECT_EQ(world_weight, kWeightTotal);
        EXPECT_FALSE(bad_version);
        break;
      case RollingPhase::RolledBack:
      case RollingPhase::Stopped:
        EXPECT_EQ(world_running(Color::Green), 0);
        EXPECT_EQ(world_weight, 0);
        if (d.phase == RollingPhase::RolledBack && has_blue) {
          EXPECT_GE(world_running(Color::Blue), 1) << "rolled back to no blue";
        }
        break;
      case RollingPhase::Failed:
        EXPECT_FALSE(d.reason.empty());
        if (world_running(Color::Green) > 0) {
          EXPECT_NE(d.reason.find("left"), std::string::npos) << d.reason;
        }
        break;
      default:
        FAIL() << "not terminal";
    }
    const bool went_back = d.reason.find("left") == std::string::npos;
    if (has_blue && went_back && d.phase != RollingPhase::Succeeded) {
      // Blue is back to N unless its own restarts failed, which the reason then says.
      if (healthy(d, Color::Blue) < d.desired) {
        EXPECT_NE(d.reason.find("blue has"), std::string::npos) << d.reason;
      }
    }
  }
};

}  // namespace

TEST(RollingSimulation, TenThousandDeploymentsWithFaultsKeepTheInvariants) {
  std::map<RollingPhase, int> endings;
  int breakers = 0;
  for (uint64_t seed = 1; seed <= 10'000; ++seed) {
    Sim sim(seed);
    sim.trace = getenv("ROLLING_TRACE") && std::stoul(getenv("ROLLING_TRACE")) == seed;
    sim.run();
    if (::testing::Test::HasFailure()) FAIL() << "seed " << seed;
    ++endings[sim.d.phase];
    breakers += sim.breaker_tripped;
  }
  for (auto p : {RollingPhase::Succeeded, RollingPhase::Failed, RollingPhase::RolledBack,
                 RollingPhase::Stopped}) {
    EXPECT_GT(endings[p], 30) << to_string(p);
  }
  EXPECT_GT(breakers, 500);
  for (const auto& [p, n] : endings) std::printf("%s: %d\n", std::string(to_string(p)).c_str(), n);
  std::printf("circuit breaker tripped: %d\n", breakers);
}
