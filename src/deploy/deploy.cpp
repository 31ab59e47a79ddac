#include "deploy/deploy.hpp"

#include <cassert>
#include <utility>

namespace cutover::deploy {

namespace {
constexpr std::array<std::pair<Phase, std::string_view>, 15> kPhases{{
    {Phase::Pending, "Pending"},
    {Phase::BeforeInstall, "BeforeInstall"},
    {Phase::Install, "Install"},
    {Phase::AfterInstall, "AfterInstall"},
    {Phase::AllowTestTraffic, "AllowTestTraffic"},
    {Phase::AfterAllowTestTraffic, "AfterAllowTestTraffic"},
    {Phase::BeforeAllowTraffic, "BeforeAllowTraffic"},
    {Phase::AllowTraffic, "AllowTraffic"},
    {Phase::AfterAllowTraffic, "AfterAllowTraffic"},
    {Phase::TerminationWait, "TerminationWait"},
    {Phase::RollingBack, "RollingBack"},
    {Phase::Succeeded, "Succeeded"},
    {Phase::Failed, "Failed"},
    {Phase::RolledBack, "RolledBack"},
    {Phase::Stopped, "Stopped"},
}};

// Builds one decision: the transition helpers below append to `out` and set its state.
struct Builder {
  Decision out;
  core::TimePoint now;

  Deployment& d() { return out.next; }
  void command(Command c) { out.commands.push_back(c); }
  void wait_for(Wait w, core::Duration timeout) {
    d().wait = w;
    d().deadline = now + timeout;
    command({.kind = CommandKind::ArmTimer, .color = d().green, .at = *d().deadline});
  }

  void finish(Phase end) {
    d().phase = end;
    d().wait = Wait::None;
    d().deadline.reset();
    command({.kind = CommandKind::Finish, .color = d().green});
  }

  // ---- the lifecycle, in order; each enter_* passes through empty hook phases ----
  bool run_hook(Phase phase, Hook hook) {
    if (!d().hooks[static_cast<size_t>(hook)]) return false;
    d().phase = phase;
    command({.kind = CommandKind::RunHook, .color = d().green, .hook = hook});
    wait_for(Wait::RunningHook, d().hook_timeout);
    return true;
  }

  void enter_before_install() {
    if (!run_hook(Phase::BeforeInstall, Hook::BeforeInstall)) enter_install();
  }
  void enter_install() {
    d().phase = Phase::Install;
    command({.kind = CommandKind::StartTaskSet, .color = d().green});
    wait_for(Wait::Starting, d().install_timeout);
  }
  void enter_after_install() {
    if (!run_hook(Phase::AfterInstall, Hook::AfterInstall)) enter_allow_test_traffic();
  }
  void enter_allow_test_traffic() {
    d().phase = Phase::AllowTestTraffic;
    command({.kind = CommandKind::RouteTestTo, .color = d().green});
    wait_for(Wait::Applying, d().apply_timeout);
  }
  void enter_after_allow_test_traffic() {
    if (!run_hook(Phase::AfterAllowTestTraffic, Hook::AfterAllowTestTraffic)) {
      enter_before_allow_traffic();
    }
  }
  void enter_before_allow_traffic() {
    if (!run_hook(Phase::BeforeAllowTraffic, Hook::BeforeAllowTraffic)) enter_allow_traffic();
  }
  void enter_allow_traffic() {
    d().phase = Phase::AllowTraffic;
    if (d().has_alarms) command({.kind = CommandKind::WatchAlarms, .color = d().green});
    apply_step(0);
  }
  void apply_step(size_t step) {
    assert(!d().schedule.empty() && "deploy: a schedule has at least its final step");
    step = std::min(step, d().schedule.size() - 1);
    d().step = step;
    d().requested_weight = d().schedule[step].weight;
    command({.kind = CommandKind::SetWeights, .color = d().green, .weight = d().requested_weight});
    wait_for(Wait::Applying, d().apply_timeout);
  }
  // The current step's pause is over: on to the next step when the alarms allow it.
  void step_done() {
    if (!d().has_alarms || d().alarms == AlarmState::Ok) {
      apply_step(d().step + 1);
    } else {
      wait_for(Wait::WaitingForData, d().insufficient_data_timeout);
    }
  }
  void enter_after_allow_traffic() {
    if (!run_hook(Phase::AfterAllowTraffic, Hook::AfterAllowTraffic)) enter_termination_wait();
  }
  void enter_termination_wait() {
    if (!d().previous_release_id) {
      finish(Phase::Succeeded);  // first deployment: no blue to keep warm
      return;
    }
    d().phase = Phase::TerminationWait;
    wait_for(Wait::Warm, d().termination_wait);
  }
  void stop_blue() {
    d().phase = Phase::TerminationWait;
    command({.kind = CommandKind::StopTaskSet, .color = other(d().green)});
    wait_for(Wait::StoppingTaskSet, d().stop_timeout);
  }

  // ---- failure and rollback ----
  // Could production or test traffic be on green? A snapshot in flight counts as applied.
  bool traffic_on_green() const {
    const Deployment& x = out.next;
    if (x.weight > 0 || x.test_traffic_on_green) return true;
    if (x.wait != Wait::Applying) return false;
    if (x.phase == Phase::AllowTestTraffic) return true;
    return x.phase == Phase::AllowTraffic && x.requested_weight > 0;
  }
  bool green_may_run() const {
    const Phase p = out.next.phase;
    return p != Phase::Pending && p != Phase::BeforeInstall;
  }

  void begin_rollback(Ending ending) {
    const bool may_run = green_may_run();
    d().phase = Phase::RollingBack;
    d().ending = ending;
    if (traffic_on_green()) {
      // One snapshot moves all production back to blue (invariant 3), then the test listener.
      d().requested_weight = 0;
      d().awaiting_weights = true;
      d().awaiting_test_route = true;
      command({.kind = CommandKind::SetWeights, .color = d().green, .weight = 0});
      command({.kind = CommandKind::RouteTestTo, .color = other(d().green)});
      wait_for(Wait::Applying, d().apply_timeout);
    } else if (may_run) {
      stop_green();
    } else {
      finish(ending_phase());
    }
  }
  void stop_green() {
    d().phase = Phase::RollingBack;
    command({.kind = CommandKind::StopTaskSet, .color = d().green});
    wait_for(Wait::StoppingTaskSet, d().stop_timeout);
  }
  Phase ending_phase() const {
    switch (out.next.ending) {
      case Ending::RolledBack:
        return Phase::RolledBack;
      case Ending::Failed:
        return Phase::Failed;
      case Ending::Stopped:
        return Phase::Stopped;
    }
    return Phase::Failed;
  }

  // A failure (or an alarm when `alarm` is true). Before green had traffic, green is only
  // stopped; after, it rolls back when auto_rollback says so and blue exists, else it ends Failed
  // with traffic left where it is.
  void fail(std::string reason, bool alarm = false) {
    d().reason = std::move(reason);
    if (!traffic_on_green()) {
      begin_rollback(Ending::Failed);
      return;
    }
    const bool wanted = alarm ? d().rollback_on_alarm : d().rollback_on_failure;
    if (wanted && d().previous_release_id) {
      begin_rollback(Ending::RolledBack);
      return;
    }
    d().reason +=
        wanted ? "; no previous release to roll back to"
               : std::string("; auto_rollback does not include ") + (alarm ? "alarm" : "failure");
    d().reason += ": traffic and green left as they are (cutover rollback restores blue)";
    finish(Phase::Failed);
  }
};

Phase hook_phase(Hook h) {
  switch (h) {
    case Hook::BeforeInstall:
      return Phase::BeforeInstall;
    case Hook::AfterInstall:
      return Phase::AfterInstall;
    case Hook::AfterAllowTestTraffic:
      return Phase::AfterAllowTestTraffic;
    case Hook::BeforeAllowTraffic:
      return Phase::BeforeAllowTraffic;
    case Hook::AfterAllowTraffic:
      return Phase::AfterAllowTraffic;
  }
  return Phase::Pending;
}

std::optional<Hook> hook_of(Phase p) {
  for (size_t i = 0; i < kHookCount; ++i) {
    if (hook_phase(static_cast<Hook>(i)) == p) return static_cast<Hook>(i);
  }
  return std::nullopt;
}

// After green is healthy and before it is the only color: where losing green's health, or an
// alarm, fails the deployment.
bool green_is_live(const Deployment& d) {
  switch (d.phase) {
    case Phase::AfterInstall:
    case Phase::AllowTestTraffic:
    case Phase::AfterAllowTestTraffic:
    case Phase::BeforeAllowTraffic:
    case Phase::AllowTraffic:
    case Phase::AfterAllowTraffic:
      return true;
    case Phase::TerminationWait:
      return d.wait == Wait::Warm;
    default:
      return false;
  }
}

bool alarms_apply(const Deployment& d) {
  return d.phase == Phase::AllowTraffic || d.phase == Phase::AfterAllowTraffic ||
         (d.phase == Phase::TerminationWait && d.wait == Wait::Warm);
}

}  // namespace

std::string_view to_string(Phase p) {
  for (const auto& [phase, name] : kPhases) {
    if (phase == p) return name;
  }
  return "?";
}

core::Result<Phase> parse_phase(std::string_view s) {
  for (const auto& [phase, name] : kPhases) {
    if (name == s) return phase;
  }
  return core::Error("unknown deployment phase \"" + std::string(s) + "\"");
}

bool is_terminal(Phase p) {
  return p == Phase::Succeeded || p == Phase::Failed || p == Phase::RolledBack ||
         p == Phase::Stopped;
}

std::string_view to_string(Color c) { return c == Color::Blue ? "blue" : "green"; }
Color other(Color c) { return c == Color::Blue ? Color::Green : Color::Blue; }

std::string_view to_string(Hook h) {
  switch (h) {
    case Hook::BeforeInstall:
      return "before_install";
    case Hook::AfterInstall:
      return "after_install";
    case Hook::AfterAllowTestTraffic:
      return "after_allow_test_traffic";
    case Hook::BeforeAllowTraffic:
      return "before_allow_traffic";
    case Hook::AfterAllowTraffic:
      return "after_allow_traffic";
  }
  return "?";
}

std::string_view to_string(Wait w) {
  switch (w) {
    case Wait::None:
      return "none";
    case Wait::Applying:
      return "applying";
    case Wait::Pausing:
      return "pausing";
    case Wait::WaitingForData:
      return "waiting_for_data";
    case Wait::Warm:
      return "warm";
    case Wait::StoppingTaskSet:
      return "stopping_task_set";
    case Wait::Starting:
      return "starting";
    case Wait::WaitingForHealth:
      return "waiting_for_health";
    case Wait::RunningHook:
      return "running_hook";
  }
  return "?";
}

std::string_view to_string(AlarmState a) {
  switch (a) {
    case AlarmState::Ok:
      return "OK";
    case AlarmState::Alarm:
      return "ALARM";
    case AlarmState::InsufficientData:
      return "INSUFFICIENT_DATA";
  }
  return "?";
}

std::string_view to_string(EventKind k) {
  switch (k) {
    case EventKind::Start:
      return "Start";
    case EventKind::TaskSetStarted:
      return "TaskSetStarted";
    case EventKind::TaskSetFailed:
      return "TaskSetFailed";
    case EventKind::TargetsHealthy:
      return "TargetsHealthy";
    case EventKind::TargetsUnhealthy:
      return "TargetsUnhealthy";
    case EventKind::TestTrafficApplied:
      return "TestTrafficApplied";
    case EventKind::WeightsApplied:
      return "WeightsApplied";
    case EventKind::WeightsFailed:
      return "WeightsFailed";
    case EventKind::HookSucceeded:
      return "HookSucceeded";
    case EventKind::HookFailed:
      return "HookFailed";
    case EventKind::AlarmVerdict:
      return "AlarmVerdict";
    case EventKind::TaskSetStopped:
      return "TaskSetStopped";
    case EventKind::Timer:
      return "Timer";
    case EventKind::Rollback:
      return "Rollback";
    case EventKind::Abort:
      return "Abort";
    case EventKind::Promote:
      return "Promote";
  }
  return "?";
}

std::string_view to_string(CommandKind k) {
  switch (k) {
    case CommandKind::StartTaskSet:
      return "StartTaskSet";
    case CommandKind::WatchHealth:
      return "WatchHealth";
    case CommandKind::RouteTestTo:
      return "RouteTestTo";
    case CommandKind::SetWeights:
      return "SetWeights";
    case CommandKind::WatchAlarms:
      return "WatchAlarms";
    case CommandKind::RunHook:
      return "RunHook";
    case CommandKind::StopTaskSet:
      return "StopTaskSet";
    case CommandKind::ArmTimer:
      return "ArmTimer";
    case CommandKind::Finish:
      return "Finish";
  }
  return "?";
}

Decision decide(const Deployment& d, const Event& e, core::TimePoint now) {
  const Decision unchanged{d, {}};
  if (is_terminal(d.phase)) return unchanged;
  Builder b{Decision{d, {}}, now};
  const bool deadline_passed = e.kind == EventKind::Timer && d.deadline && now >= *d.deadline;
  if (e.kind == EventKind::Timer && !deadline_passed) return unchanged;  // an early or old timer

  // Events that apply in most phases.
  switch (e.kind) {
    case EventKind::Start:
      if (d.phase != Phase::Pending) return unchanged;
      b.enter_before_install();
      return b.out;
    case EventKind::Rollback:
    case EventKind::Abort: {
      if (d.phase == Phase::RollingBack) return unchanged;
      // Blue is being stopped: it cannot take traffic back in one snapshot any more; the
      // controller redeploys the previous release instead once this one has ended.
      if (d.phase == Phase::TerminationWait && d.wait == Wait::StoppingTaskSet) return unchanged;
      const bool abort = e.kind == EventKind::Abort;
      b.d().reason = std::string(abort ? "aborted" : "rolled back") + " by operator" +
                     (e.detail.empty() ? "" : " " + e.detail);
      b.begin_rollback(abort ? Ending::Stopped : Ending::RolledBack);
      return b.out;
    }
    case EventKind::AlarmVerdict: {
      if (b.d().alarms == e.alarm && e.alarm != AlarmState::Alarm) return unchanged;
      b.d().alarms = e.alarm;
      if (e.alarm == AlarmState::Alarm && alarms_apply(d)) {
        b.fail("alarm: " + e.detail, /*alarm=*/true);
        return b.out;
      }
      if (e.alarm == AlarmState::Ok && d.phase == Phase::AllowTraffic &&
          d.wait == Wait::WaitingForData) {
        b.apply_step(d.step + 1);
      }
      return b.out;
    }
    case EventKind::TargetsUnhealthy:
      if (!green_is_live(d)) return unchanged;
      b.d().green_healthy = false;
      b.fail("green targets failed their health checks");
      return b.out;
    default:
      break;
  }

  switch (d.phase) {
    case Phase::Pending:
    case Phase::Succeeded:
    case Phase::Failed:
    case Phase::RolledBack:
    case Phase::Stopped:
      return unchanged;

    case Phase::BeforeInstall:
    case Phase::AfterInstall:
    case Phase::AfterAllowTestTraffic:
    case Phase::BeforeAllowTraffic:
    case Phase::AfterAllowTraffic: {
      const Hook hook = *hook_of(d.phase);
      const bool ours =
          (e.kind == EventKind::HookSucceeded || e.kind == EventKind::HookFailed) && e.hook == hook;
      if (ours && e.kind == EventKind::HookSucceeded) {
        switch (hook) {
          case Hook::BeforeInstall:
            b.enter_install();
            break;
          case Hook::AfterInstall:
            b.enter_allow_test_traffic();
            break;
          case Hook::AfterAllowTestTraffic:
            b.enter_before_allow_traffic();
            break;
          case Hook::BeforeAllowTraffic:
            b.enter_allow_traffic();
            break;
          case Hook::AfterAllowTraffic:
            b.enter_termination_wait();
            break;
        }
        return b.out;
      }
      if (ours) {
        b.fail(std::string(to_string(hook)) + " hook failed: " + e.detail);
        return b.out;
      }
      if (deadline_passed) {
        b.fail(std::string(to_string(hook)) + " hook did not finish within hook_timeout");
        return b.out;
      }
      return unchanged;
    }

    case Phase::Install: {
      if (e.kind == EventKind::TaskSetStarted && e.color == d.green && d.wait == Wait::Starting) {
        b.d().green_started = true;
        b.command({.kind = CommandKind::WatchHealth, .color = d.green});
        b.d().wait = Wait::WaitingForHealth;  // same deadline: install_timeout covers both
        return b.out;
      }
      if (e.kind == EventKind::TaskSetFailed && e.color == d.green) {
        b.fail("green task set failed to start: " + e.detail);
        return b.out;
      }
      if (e.kind == EventKind::TargetsHealthy && d.wait == Wait::WaitingForHealth) {
        b.d().green_healthy = true;
        b.enter_after_install();
        return b.out;
      }
      if (deadline_passed) {
        b.fail(d.wait == Wait::WaitingForHealth
                   ? "green tasks did not pass the target health checks within the install timeout"
                   : "green task set did not start within the install timeout");
        return b.out;
      }
      return unchanged;
    }

    case Phase::AllowTestTraffic: {
      if (e.kind == EventKind::TestTrafficApplied && e.color == d.green) {
        b.d().test_traffic_on_green = true;
        b.enter_after_allow_test_traffic();
        return b.out;
      }
      if (e.kind == EventKind::WeightsFailed) {
        b.fail("the proxy refused the test route: " + e.detail);
        return b.out;
      }
      if (deadline_passed) {
        b.fail("the proxy did not confirm the test route in time");
        return b.out;
      }
      return unchanged;
    }

    case Phase::AllowTraffic: {
      if (e.kind == EventKind::Promote) {
        if (d.wait == Wait::Applying && d.requested_weight == kWeightTotal) return unchanged;
        b.apply_step(d.schedule.size() - 1);
        return b.out;
      }
      switch (d.wait) {
        case Wait::Applying:
          if (e.kind == EventKind::WeightsApplied && e.weight == d.requested_weight) {
            b.d().weight = e.weight;
            if (e.weight >= kWeightTotal) {
              b.enter_after_allow_traffic();
            } else {
              b.wait_for(Wait::Pausing, d.schedule[d.step].pause);
            }
            return b.out;
          }
          if (e.kind == EventKind::WeightsFailed) {
            b.fail("the proxy refused the weights: " + e.detail);
            return b.out;
          }
          if (deadline_passed) {
            b.fail("the proxy did not confirm the weights in time");
            return b.out;
          }
          return unchanged;
        case Wait::Pausing:
          if (deadline_passed) b.step_done();
          return deadline_passed ? b.out : unchanged;
        case Wait::WaitingForData:
          if (!deadline_passed) return unchanged;
          if (d.insufficient_data_continue) {
            b.apply_step(d.step + 1);
          } else {
            b.fail("the alarms had too little traffic to pass within the insufficient-data timeout",
                   /*alarm=*/true);
          }
          return b.out;
        default:
          return unchanged;
      }
    }

    case Phase::TerminationWait: {
      if (d.wait == Wait::Warm) {
        if (deadline_passed || e.kind == EventKind::Promote) {
          b.stop_blue();
          return b.out;
        }
        return unchanged;
      }
      if (e.kind == EventKind::TaskSetStopped && e.color == other(d.green)) {
        b.finish(Phase::Succeeded);
        return b.out;
      }
      if (deadline_passed) {
        b.d().reason = "blue task set did not confirm its stop in time";
        b.finish(Phase::Succeeded);
        return b.out;
      }
      return unchanged;
    }

    case Phase::RollingBack: {
      if (d.wait == Wait::Applying) {
        if (e.kind == EventKind::WeightsApplied && e.weight == 0 && d.awaiting_weights) {
          b.d().weight = 0;
          b.d().awaiting_weights = false;
        } else if (e.kind == EventKind::TestTrafficApplied && e.color == other(d.green) &&
                   d.awaiting_test_route) {
          b.d().test_traffic_on_green = false;
          b.d().awaiting_test_route = false;
        } else if (e.kind == EventKind::WeightsFailed || deadline_passed) {
          // Green may still carry traffic: it keeps running, and the operator is told.
          b.d().reason += e.kind == EventKind::WeightsFailed
                              ? "; the proxy refused the rollback snapshot: " + e.detail
                              : std::string("; the proxy did not confirm the rollback in time");
          b.d().reason += "; green left running";
          b.finish(Phase::Failed);
          return b.out;
        } else {
          return unchanged;
        }
        if (!b.d().awaiting_weights && !b.d().awaiting_test_route) b.stop_green();
        return b.out;
      }
      if (e.kind == EventKind::TaskSetStopped && e.color == d.green) {
        b.finish(b.ending_phase());
        return b.out;
      }
      if (deadline_passed) {
        b.d().reason += "; green task set did not confirm its stop in time";
        b.finish(b.ending_phase());
        return b.out;
      }
      return unchanged;
    }
  }
  assert(false && "deploy::decide: unhandled phase");
  return unchanged;
}

}  // namespace cutover::deploy
