// deploy: the pure deployment state machine (DESIGN.md §3, "Functional core, imperative shell").
//
//   decide(deployment, event, now) -> {next deployment, commands}
//
// It does no I/O and reads no clock: the controller persists `next` and the commands in one
// transaction, executes the commands (each idempotent), and feeds their results back as events.
// Thread-safety: pure functions over value types.
//
// The walking skeleton implements blue/green with all-at-once traffic. The CodeDeploy phase names
// are used from the start so that the deployment-engine issue adds phases (hooks, test traffic,
// canary/linear schedules, alarms, rollback) without renaming any:
//
//        Start
//          │
//          ▼
//     ┌─────────┐ TaskSetStarted  ┌──────────────┐ TargetsHealthy ┌──────────────┐
//     │ Install │────────────────▶│ Install      │───────────────▶│ AllowTraffic │
//     │ (start  │                 │ (wait green  │                │ (green 100%) │
//     │  green) │                 │  healthy)    │                └──────┬───────┘
//     └────┬────┘                 └──────┬───────┘                       │ WeightsApplied
//          │ TaskSetFailed               │ InstallDeadline               ▼
//          │                             │                       ┌─────────────────┐
//          ▼                             ▼                       │ TerminationWait │
//     ┌────────┐   GreenStopped   ┌──────────────┐               │ (stop blue)     │
//     │ Failed │◀─────────────────│ RollingBack  │               └──────┬──────────┘
//     └────────┘                  │ (stop green) │                      │ BlueStopped
//                                 └──────────────┘                      ▼
//                                                                 ┌───────────┐
//                                                                 │ Succeeded │
//                                                                 └───────────┘
//
// Every wait state has a deadline (invariant 4): Install waits at most install_timeout for
// health, TerminationWait and RollingBack at most stop_timeout for the task set to stop; a
// deadline that passes moves the deployment on (to RollingBack, or to its end state with the
// leftover reported in `reason`).
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.hpp"
#include "core/result.hpp"

namespace cutover::deploy {

enum class Phase {
  Pending,
  Install,          // green task set starting / waiting for target health
  AllowTraffic,     // production listener being moved to green
  TerminationWait,  // blue being stopped
  RollingBack,      // green being stopped after a failure; production never left blue
  Succeeded,
  Failed,
};

std::string_view to_string(Phase p);
core::Result<Phase> parse_phase(std::string_view s);
bool is_terminal(Phase p);

enum class Color { Blue, Green };
std::string_view to_string(Color c);
Color other(Color c);

struct Deployment {
  std::string id;
  std::string service;
  std::string release_id;
  std::optional<std::string> previous_release_id;  // what blue runs; none on a first deploy
  Color green = Color::Blue;                       // the color the new version starts as
  Phase phase = Phase::Pending;
  bool green_started = false;
  bool green_healthy = false;
  std::optional<core::TimePoint> deadline;  // of the current wait state
  std::string reason;                       // why it failed, or what was left over
  // Configuration the state machine needs (copied in so decide() stays pure).
  core::Duration install_timeout{std::chrono::minutes{2}};
  core::Duration stop_timeout{std::chrono::seconds{30}};
};

enum class EventKind {
  Start,
  TaskSetStarted,
  TaskSetFailed,
  TargetsHealthy,
  WeightsApplied,
  WeightsFailed,
  TaskSetStopped,
  Timer,  // the controller's timer for `deadline` fired
};

struct Event {
  EventKind kind;
  std::string detail;  // error text for *Failed events
};

enum class CommandKind {
  StartTaskSet,  // color
  WatchHealth,   // color: report TargetsHealthy when every target of the set is healthy
  RouteAllTo,    // color: one snapshot sending 100% of production to color
  StopTaskSet,   // color (drain first)
  ArmTimer,      // at
  Finish,        // record the outcome; live release = release_id when succeeded
};

struct Command {
  CommandKind kind;
  Color color = Color::Blue;
  core::TimePoint at{};
};

struct Decision {
  Deployment next;
  std::vector<Command> commands;
};

// The transition function. An event that does not apply to the current phase (a late health
// report, a duplicate) leaves the deployment unchanged with no commands: replays are harmless.
Decision decide(const Deployment& d, const Event& e, core::TimePoint now);

std::string_view to_string(EventKind k);
std::string_view to_string(CommandKind k);

}  // namespace cutover::deploy
