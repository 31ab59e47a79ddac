// deploy/rolling: the pure state machine of the `rolling` strategy (ECS rolling-update
// semantics), in the same functional-core style as deploy.hpp:
//
//   decide_rolling(deployment, event, now) -> {next deployment, commands}
//
// It does no I/O and reads no clock. Thread-safety: pure functions over value types.
//
// Blue is the task set of the previous release (none on a first deployment), green the new
// release. Tasks are replaced one at a time, addressed by (color, index): blue indices are the
// running blue tasks in a stable order chosen by the controller; green indices are handed out by
// this machine, one per task it starts (a failed task's replacement gets a new index). With
// N = desired count:
//
//   max_running = floor(N * max_percent / 100)          (ECS rounds max_percent down)
//   min_healthy = ceil(N * min_healthy_percent / 100)   (ECS rounds min_healthy_percent up)
//
//   * a green task is started only while running tasks (every task that is starting, healthy,
//     unhealthy or not yet confirmed stopped, of both colors) stay <= max_running;
//   * a blue task is chosen for stopping only while the healthy tasks without it (healthy green +
//     healthy blue not chosen) stay >= min_healthy; unhealthy blue tasks go first;
//   * production weight between the two colors follows the healthy counts, so each healthy task
//     gets an equal share as if they were one target group:
//       weight (green, basis points) = 10000 * healthy green / (healthy green + healthy blue)
//     one SetWeights per change, one in flight at a time; a chosen blue task is excluded from
//     the weight first and stopped (drained by the controller) only once that weight is applied;
//   * the circuit breaker counts green tasks that fail: TaskFailed (could not start, crash loop),
//     TaskUnhealthy after having been healthy, or not healthy by task_timeout. At `threshold`
//     failures the deployment fails (rolls back when `failure` is in auto_rollback).
//
//   Pending ─Start─▶ Updating ──green healthy = N, blue all stopped, weight 10000─▶ Succeeded
//                       │
//                       │ circuit breaker / proxy refused weights / alarm / stall / operator
//                       ▼
//                   RollingBack: (1) blue brought back to N tasks (drain choices cancelled,
//                       │            stopped ones restarted), green that is not healthy stopped
//                       │        (2) when no blue task is still starting: SetWeights(0), one
//                       │            snapshot (only if green had production weight)
//                       │        (3) WeightsApplied(0): every green task stopped
//                       ▼
//                   RolledBack (rollback, alarm, failure after traffic) | Failed (failure before
//                   green had traffic) | Stopped (abort)
//   A failure after green got traffic with the matching auto_rollback entry missing, or with no
//   blue to go back to, ends Failed at once: tasks and traffic are left where they are.
//   Promote has nothing to skip in a rolling deployment: it is ignored.
//
// Invariants (checked after every event by the randomized simulation in rolling_test.cpp):
//   R1. Updating: running tasks <= max_running (stopping tasks count until confirmed or timed
//       out). RollingBack may exceed it by at most N (blue capacity is restored first).
//   R2. A blue task is chosen for stopping only if healthy tasks without it >= min_healthy.
//   R3. SetWeights(w): w > 0 only with a healthy green task, w < 10000 only with a healthy blue
//       task that is not being stopped (DESIGN.md §3 invariant 1); one command per change (2).
//   R4. Every non-terminal state has a deadline; a Timer at the deadline always moves on (4).
//   R5. The circuit breaker trips at exactly `threshold` failed green tasks, never before.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.hpp"
#include "deploy/deploy.hpp"

namespace cutover::deploy {

enum class RollingPhase { Pending, Updating, RollingBack, Succeeded, Failed, RolledBack, Stopped };
std::string_view to_string(RollingPhase p);
core::Result<RollingPhase> parse_rolling_phase(std::string_view s);
bool is_terminal(RollingPhase p);

enum class TaskState {
  Starting,   // StartTask issued; not healthy yet (deadline: task_timeout)
  Healthy,    // passes the proxy's target health checks
  Unhealthy,  // blue only: lost its health (the supervisor restarts it); may come back
  Draining,   // blue only: chosen for stopping; excluded from the weight, not stopped yet
  Stopping,   // StopTask issued (deadline: stop_timeout)
  Stopped,
};
std::string_view to_string(TaskState s);

struct TaskSlot {
  TaskState state = TaskState::Starting;
  std::optional<core::TimePoint> deadline;  // Starting and Stopping only
  bool failed = false;                      // green: counted by the circuit breaker
  bool operator==(const TaskSlot&) const = default;
};

struct RollingDeployment {
  std::string id;
  std::string service;
  std::string release_id;
  std::optional<std::string> previous_release_id;  // what blue runs; none on a first deploy
  RollingPhase phase = RollingPhase::Pending;
  std::vector<TaskSlot> blue;   // the controller fills this with the running blue tasks
  std::vector<TaskSlot> green;  // grows by one per green task started
  int weight = 0;               // green's production weight as last applied (basis points)
  int requested_weight = 0;     // the SetWeights in flight, when awaiting_weights
  bool awaiting_weights = false;
  uint64_t snapshot = 0;  // numbers the SetWeights commands; a reply must carry the latest
  std::optional<core::TimePoint> weights_deadline;
  bool rollback_weights_sent = false;  // RollingBack: SetWeights(0) issued
  int green_failures = 0;              // the circuit breaker's count
  AlarmState alarms = AlarmState::InsufficientData;
  Ending ending = Ending::RolledBack;
  bool stall_guard = false;  // `deadline` is the no-progress guard, not a task's deadline
  std::optional<core::TimePoint> deadline;  // earliest pending deadline
  std::string reason;

  // Configuration (copied in so decide_rolling() stays pure).
  int desired = 1;
  int min_healthy_percent = 100;
  int max_percent = 200;
  int circuit_breaker_threshold = 3;
  bool has_alarms = false;
  bool rollback_on_failure = true;
  bool rollback_on_alarm = true;
  core::Duration task_timeout{std::chrono::minutes{2}};    // start to healthy, per task
  core::Duration apply_timeout{std::chrono::seconds{30}};  // a snapshot to be confirmed
  core::Duration stop_timeout{std::chrono::seconds{30}};   // a task to be stopped
};

// The bounds of the update and the counts they are checked against.
int max_running(const RollingDeployment& d);
int min_healthy(const RollingDeployment& d);
int running(const RollingDeployment& d);           // every task not confirmed stopped
int healthy(const RollingDeployment& d, Color c);  // Healthy tasks of one color
int target_weight(int healthy_green, int healthy_blue);

enum class RollingEventKind {
  Start,
  TaskHealthy,     // color, task: passed the proxy's target health checks
  TaskUnhealthy,   // color, task: lost its health after having had it
  TaskFailed,      // color, task: could not start, or crash-looped (detail)
  TaskStopped,     // color, task
  WeightsApplied,  // weight, snapshot
  WeightsFailed,   // snapshot, detail
  AlarmVerdict,    // alarm, detail
  Timer,
  Rollback,  // operator (detail: who)
  Abort,     // operator
  Promote,   // operator: ignored (nothing to skip)
};
std::string_view to_string(RollingEventKind k);

struct RollingEvent {
  RollingEventKind kind;
  std::string detail{};
  Color color = Color::Green;
  size_t task = 0;
  int weight = 0;
  AlarmState alarm = AlarmState::Ok;
  uint64_t snapshot = 0;
};

enum class RollingCommandKind {
  StartTask,    // color, task: start one task of the color's release; report its health
  StopTask,     // color, task: drain it through the proxy, then stop; reply TaskStopped
  SetWeights,   // weight, snapshot: green's production share, one snapshot; reply
                // WeightsApplied / WeightsFailed with the same snapshot number
  WatchAlarms,  // start feeding AlarmVerdict events (idempotent)
  ArmTimer,     // at
  Finish,       // record the outcome; live release = release_id when succeeded
};
std::string_view to_string(RollingCommandKind k);

struct RollingCommand {
  RollingCommandKind kind;
  Color color = Color::Green;
  size_t task = 0;
  int weight = 0;
  core::TimePoint at{};
  uint64_t snapshot = 0;
};

struct RollingDecision {
  RollingDeployment next;
  std::vector<RollingCommand> commands;
};

// The transition function. An event that does not apply (a late or duplicate report, a stale
// timer) leaves the deployment unchanged with no commands: replays are harmless.
RollingDecision decide_rolling(const RollingDeployment& d, const RollingEvent& e,
                               core::TimePoint now);

}  // namespace cutover::deploy
