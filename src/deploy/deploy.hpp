// deploy: the pure deployment state machine (DESIGN.md §3, "Functional core, imperative shell").
//
//   decide(deployment, event, now) -> {next deployment, commands}
//
// It does no I/O and reads no clock: the controller persists `next` and the commands in one
// transaction (outbox), executes the commands (each idempotent), and feeds their results back as
// events. Thread-safety: pure functions over value types.
//
// Blue/green with the CodeDeploy ECS lifecycle. Blue is what serves production now (none on a
// first deployment); green is the new release. A hook phase whose hook list is empty is passed
// through without stopping. `weight` is green's share of production in basis points (0-10000).
//
//   Pending ─Start─▶ BeforeInstall ─hook ok─▶ Install ─green started + healthy─▶ AfterInstall
//        ─hook ok─▶ AllowTestTraffic ─test listener → green─▶ AfterAllowTestTraffic ─hook ok─▶
//   BeforeAllowTraffic ─hook ok─▶ AllowTraffic ─schedule reaches 10000─▶ AfterAllowTraffic
//        ─hook ok─▶ TerminationWait ─termination_wait, blue stopped─▶ Succeeded
//
//   AllowTraffic, one step of the schedule at a time:
//     ┌────────────┐ WeightsApplied ┌──────────┐ pause over, alarms OK  ┌────────────┐
//     │ Applying   │───────────────▶│ Pausing  │───────────────────────▶│ Applying   │ (next step)
//     │ SetWeights │                └────┬─────┘                        └────────────┘
//     └────────────┘                     │ pause over, alarms INSUFFICIENT_DATA
//                                        ▼
//                                 ┌───────────────┐ verdict OK: next step; deadline: continue or
//                                 │ WaitingForData│ roll back (insufficient_data_continue)
//                                 └───────────────┘
//
//   Any failure, ALARM (auto_rollback), `rollback` or `abort` before the end:
//     ┌─────────────────────────────┐ WeightsApplied(0) ┌───────────────┐ TaskSetStopped(green)
//     │ RollingBack: RestoringTraffic│──────────────────▶│ StoppingGreen │──────────────────────┐
//     │ one SetWeights(0) snapshot  │                   └───────────────┘                      │
//     │ + test listener → blue      │                                                          ▼
//     └─────────────────────────────┘                       RolledBack (rollback, alarm, failure
//                                                           after traffic) | Failed (failure
//                                                           before any traffic) | Stopped (abort)
//   A failure after green got traffic, with `failure` not in auto_rollback, ends Failed at once:
//   traffic stays where it is and green keeps running, for the operator to `cutover rollback`.
//   A failure before green got any traffic only stops green (nothing to roll back): Failed.
//
// Invariants (DESIGN.md §3), checked by the randomized simulation in deploy_test.cpp:
//   1. SetWeights with a weight above 0 is issued only while green is healthy.
//   2. Each weight change is one SetWeights command (one snapshot).
//   3. Once blue is alive and green has weight, rollback's first command is SetWeights(0).
//   4. Every non-terminal state has a deadline; a Timer at the deadline always moves on, so a
//      deployment fed nothing but timers ends.
//   5. A hook that fails, is killed or times out (no result by its deadline) counts as failed.
//   Also: blue is stopped only after SetWeights(10000) was applied; green is stopped only when it
//   has no production weight (and, on the rollback path, after SetWeights(0) was applied).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.hpp"
#include "core/result.hpp"

namespace cutover::deploy {

enum class Phase {
  Pending,
  BeforeInstall,          // hook before green starts
  Install,                // green task set starting / waiting for target health
  AfterInstall,           // hook
  AllowTestTraffic,       // test listener being moved to green
  AfterAllowTestTraffic,  // hook (e.g. smoke tests against TEST_URL)
  BeforeAllowTraffic,     // hook
  AllowTraffic,           // production weights following the traffic schedule
  AfterAllowTraffic,      // hook
  TerminationWait,        // green serves 100%; blue kept warm, then stopped
  RollingBack,            // production back to blue, then green stopped
  Succeeded,
  Failed,
  RolledBack,
  Stopped,  // aborted by an operator (traffic restored to blue, green stopped)
};

std::string_view to_string(Phase p);
core::Result<Phase> parse_phase(std::string_view s);
bool is_terminal(Phase p);

enum class Color { Blue, Green };
std::string_view to_string(Color c);
Color other(Color c);

// The five hook points, in lifecycle order.
enum class Hook {
  BeforeInstall,
  AfterInstall,
  AfterAllowTestTraffic,
  BeforeAllowTraffic,
  AfterAllowTraffic
};
inline constexpr size_t kHookCount = 5;
std::string_view to_string(Hook h);  // snake_case, as in cutover.yaml: before_install, ...

enum class AlarmState { Ok, Alarm, InsufficientData };

inline constexpr int kWeightTotal = 10000;  // basis points: 0.01% granularity

// One step of the traffic schedule: green's production weight, then how long to hold it.
struct Step {
  int weight = kWeightTotal;  // basis points, 1-10000; the last step is 10000
  core::Duration pause{0};
  bool operator==(const Step&) const = default;
};

// Sub-states of the phases that wait for more than one thing.
enum class Wait {
  None,
  Applying,          // AllowTraffic / AllowTestTraffic / RollingBack: a snapshot is being applied
  Pausing,           // AllowTraffic: holding a step's weight for its pause
  WaitingForData,    // AllowTraffic: pause over, alarms have too little data to pass
  Warm,              // TerminationWait: blue kept warm for termination_wait
  StoppingTaskSet,   // TerminationWait (blue) / RollingBack (green)
  Starting,          // Install: green task set starting
  WaitingForHealth,  // Install: green started, waiting for its targets' health
  RunningHook,       // a hook phase
};
std::string_view to_string(Wait w);

// How a rollback ends.
enum class Ending { RolledBack, Failed, Stopped };

struct Deployment {
  std::string id;
  std::string service;
  std::string release_id;
  std::optional<std::string> previous_release_id;  // what blue runs; none on a first deploy
  Color green = Color::Blue;                       // the color the new version starts as
  Phase phase = Phase::Pending;
  Wait wait = Wait::None;
  bool green_started = false;
  bool green_healthy = false;
  bool test_traffic_on_green = false;  // the test listener has been sent to green
  int weight = 0;                      // green's production weight as last applied
  int requested_weight = 0;            // the weight of the SetWeights in flight (Applying)
  size_t step = 0;                     // index into schedule of the step being applied / held
  AlarmState alarms = AlarmState::InsufficientData;  // the last verdict (all alarms combined)
  Ending ending = Ending::RolledBack;                // RollingBack: where it ends
  // RollingBack / Applying: the confirmations still missing before green may be stopped.
  bool awaiting_weights = false;
  bool awaiting_test_route = false;
  std::optional<core::TimePoint> deadline;  // of the current wait
  std::string reason;                       // why it failed or rolled back, or what was left over

  // Configuration the state machine needs (copied in so decide() stays pure).
  std::vector<Step> schedule{Step{}};    // ends with weight 10000
  std::array<bool, kHookCount> hooks{};  // which hook points have commands
  bool has_alarms = false;
  bool rollback_on_failure = true;
  bool rollback_on_alarm = true;
  bool insufficient_data_continue = false;  // at the data deadline: go on (true) or roll back
  core::Duration install_timeout{std::chrono::minutes{2}};
  core::Duration hook_timeout{std::chrono::minutes{5}};
  core::Duration apply_timeout{std::chrono::seconds{30}};  // a snapshot to be confirmed
  core::Duration stop_timeout{std::chrono::seconds{30}};   // a task set to be stopped
  core::Duration termination_wait{std::chrono::hours{1}};
  core::Duration insufficient_data_timeout{std::chrono::minutes{5}};
};

enum class EventKind {
  Start,
  TaskSetStarted,
  TaskSetFailed,
  TargetsHealthy,    // every green target passed the proxy's health checks
  TargetsUnhealthy,  // green lost its health after having had it
  TestTrafficApplied,
  WeightsApplied,  // weight: the weight now in the proxy
  WeightsFailed,   // the snapshot was refused (detail)
  HookSucceeded,   // hook
  HookFailed,      // hook; non-zero exit, killed, timed out, could not start (detail)
  AlarmVerdict,    // alarm (detail: the summary of the alarm that decided it)
  TaskSetStopped,  // color
  Timer,           // the controller's timer for `deadline` fired
  Rollback,        // operator: `cutover rollback` (detail: who)
  Abort,           // operator: `cutover abort`
  Promote,         // operator: `cutover promote` — skip the remaining waits
};

struct Event {
  EventKind kind;
  std::string detail{};  // error text, alarm summary or operator
  Color color = Color::Green;
  Hook hook = Hook::BeforeInstall;
  AlarmState alarm = AlarmState::Ok;
  int weight = 0;
};

enum class CommandKind {
  StartTaskSet,  // color
  WatchHealth,   // color: report TargetsHealthy / TargetsUnhealthy
  RouteTestTo,   // color: the test listener goes to color; reply TestTrafficApplied
  SetWeights,    // weight: green's production share, one snapshot; reply WeightsApplied
  WatchAlarms,   // start feeding AlarmVerdict events (idempotent)
  RunHook,       // hook: run its commands; reply HookSucceeded / HookFailed
  StopTaskSet,   // color (drain first); reply TaskSetStopped
  ArmTimer,      // at
  Finish,        // record the outcome; live release = release_id when succeeded
};

struct Command {
  CommandKind kind;
  Color color = Color::Blue;
  core::TimePoint at{};
  int weight = 0;
  Hook hook = Hook::BeforeInstall;
};

struct Decision {
  Deployment next;
  std::vector<Command> commands;
};

// The transition function. An event that does not apply to the current phase (a late health
// report, a stale hook result, a duplicate) leaves the deployment unchanged with no commands:
// replays are harmless.
Decision decide(const Deployment& d, const Event& e, core::TimePoint now);

std::string_view to_string(EventKind k);
std::string_view to_string(CommandKind k);
std::string_view to_string(AlarmState a);

}  // namespace cutover::deploy
