#include "deploy/rolling.hpp"

#include <algorithm>
#include <array>
#include <cassert>
#include <utility>

namespace cutover::deploy {

namespace {

constexpr std::array<std::pair<RollingPhase, std::string_view>, 7> kRollingPhases{{
    {RollingPhase::Pending, "Pending"},
    {RollingPhase::Updating, "Updating"},
    {RollingPhase::RollingBack, "RollingBack"},
    {RollingPhase::Succeeded, "Succeeded"},
    {RollingPhase::Failed, "Failed"},
    {RollingPhase::RolledBack, "RolledBack"},
    {RollingPhase::Stopped, "Stopped"},
}};

bool alive(const TaskSlot& t) { return t.state != TaskState::Stopped; }

// A task that may serve (or is about to serve) and is not on its way out.
bool active(const TaskSlot& t) {
  return t.state == TaskState::Starting || t.state == TaskState::Healthy ||
         t.state == TaskState::Unhealthy;
}

int count(const std::vector<TaskSlot>& v, TaskState s) {
  return static_cast<int>(
      std::count_if(v.begin(), v.end(), [s](const auto& t) { return t.state == s; }));
}

struct Builder {
  RollingDecision out;
  core::TimePoint now;

  RollingDeployment& d() { return out.next; }
  std::vector<TaskSlot>& tasks(Color c) { return c == Color::Blue ? d().blue : d().green; }
  void command(RollingCommand c) { out.commands.push_back(c); }

  void start_task(Color c) {
    auto& v = tasks(c);
    v.push_back({.state = TaskState::Starting, .deadline = now + d().task_timeout});
    command({.kind = RollingCommandKind::StartTask, .color = c, .task = v.size() - 1});
  }
  void stop_task(Color c, size_t i) {
    TaskSlot& t = tasks(c)[i];
    if (t.state == TaskState::Stopping || t.state == TaskState::Stopped) return;
    t.state = TaskState::Stopping;
    t.deadline = now + d().stop_timeout;
    command({.kind = RollingCommandKind::StopTask, .color = c, .task = i});
  }
  void set_weights(int w) {
    assert((w == 0 || healthy(d(), Color::Green) > 0) && "rolling: weight to an unhealthy green");
    d().requested_weight = w;
    d().awaiting_weights = true;
    d().weights_deadline = now + d().apply_timeout;
    ++d().snapshot;
    command({.kind = RollingCommandKind::SetWeights, .weight = w, .snapshot = d().snapshot});
  }
  void finish(RollingPhase end) {
    d().phase = end;
    d().deadline.reset();
    d().stall_guard = false;
    d().weights_deadline.reset();
    for (auto* v : {&d().blue, &d().green}) {
      for (auto& t : *v) t.deadline.reset();
    }
    command({.kind = RollingCommandKind::Finish});
  }

  // Production traffic could be on green: a snapshot in flight counts as applied.
  bool traffic_on_green() const {
    const RollingDeployment& x = out.next;
    return x.weight > 0 || (x.awaiting_weights && x.requested_weight > 0);
  }

  // ---- Updating ----
  void advance() {
    RollingDeployment& x = d();
    const int n = x.desired;
    // 1. Choose blue tasks to stop: unhealthy ones first (they do not lower the healthy count),
    //    then healthy ones while the healthy tasks without them stay >= min_healthy (R2).
    for (auto& t : x.blue) {
      if (t.state == TaskState::Unhealthy &&
          healthy(x, Color::Blue) + healthy(x, Color::Green) >= min_healthy(x)) {
        t.state = TaskState::Draining;
      }
    }
    for (auto& t : x.blue) {
      if (t.state == TaskState::Healthy &&
          healthy(x, Color::Blue) + healthy(x, Color::Green) - 1 >= min_healthy(x)) {
        t.state = TaskState::Draining;
      }
    }
    // 2. Weights follow the healthy counts; one snapshot in flight at a time (R3).
    const int hg = healthy(x, Color::Green);
    const int hb = healthy(x, Color::Blue);
    const bool any = hg + hb > 0;
    const int target = any ? target_weight(hg, hb) : x.weight;
    if (!x.awaiting_weights && target != x.weight) set_weights(target);
    // 3. Chosen blue tasks are stopped once the proxy no longer weighs them.
    if (!x.awaiting_weights && x.weight == target) {
      for (size_t i = 0; i < x.blue.size(); ++i) {
        if (x.blue[i].state == TaskState::Draining) stop_task(Color::Blue, i);
      }
    }
    // 4. Start green tasks up to N, within max_running (R1).
    auto green_active = [&] {
      return static_cast<int>(std::count_if(x.green.begin(), x.green.end(), active));
    };
    while (green_active() < n && running(x) < max_running(x)) start_task(Color::Green);
    // 5. Done: N healthy green, no blue left, all of production on green, nothing in flight.
    const bool green_settled = std::all_of(x.green.begin(), x.green.end(), [](const auto& t) {
      return t.state == TaskState::Healthy || t.state == TaskState::Stopped;
    });
    if (hg >= n && green_settled && std::none_of(x.blue.begin(), x.blue.end(), alive) &&
        !x.awaiting_weights && x.weight == kWeightTotal) {
      finish(RollingPhase::Succeeded);
    }
  }

  void green_failed(size_t i, const std::string& why) {
    TaskSlot& t = d().green[i];
    t.failed = true;
    stop_task(Color::Green, i);
    ++d().green_failures;
    if (d().green_failures >= d().circuit_breaker_threshold) {
      fail("circuit breaker: " + std::to_string(d().green_failures) +
           " green tasks failed (threshold " + std::to_string(d().circuit_breaker_threshold) +
           "); last: task " + std::to_string(i) + " " + why);
    }
  }

  // ---- failure and rollback ----
  void fail(std::string reason, bool alarm = false) {
    d().reason = std::move(reason);
    if (!traffic_on_green()) {
      begin_rollback(Ending::Failed);  // nothing served green: clean up, blue back to N
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
    d().reason += ": tasks and traffic left as they are (cutover rollback restores blue)";
    finish(RollingPhase::Failed);
  }

  void begin_rollback(Ending ending) {
    RollingDeployment& x = d();
    x.phase = RollingPhase::RollingBack;
    x.ending = ending;
    x.rollback_weights_sent = false;
    for (auto& t : x.blue) {
      if (t.state == TaskState::Draining) t.state = TaskState::Healthy;  // not stopped yet: keep
    }
    if (x.previous_release_id) {
      const auto blue_active = std::count_if(x.blue.begin(), x.blue.end(), active);
      for (auto k = blue_active; k < x.desired; ++k) start_task(Color::Blue);
    }
    // Green that serves nothing goes now; healthy green keeps serving until blue takes over.
    const bool keep_healthy = traffic_on_green();
    for (size_t i = 0; i < x.green.size(); ++i) {
      if (x.green[i].state == TaskState::Healthy && keep_healthy) continue;
      stop_task(Color::Green, i);
    }
    rollback_advance();
  }

  RollingPhase ending_phase() const {
    switch (out.next.ending) {
      case Ending::RolledBack:
        return RollingPhase::RolledBack;
      case Ending::Failed:
        return RollingPhase::Failed;
      case Ending::Stopped:
        return RollingPhase::Stopped;
    }
    return RollingPhase::Failed;
  }

  void rollback_advance() {
    RollingDeployment& x = d();
    const bool blue_starting = count(x.blue, TaskState::Starting) > 0;
    if (traffic_on_green() && !x.rollback_weights_sent) {
      if (blue_starting) return;  // restore capacity first
      if (healthy(x, Color::Blue) == 0) {
        x.reason += "; no blue task is healthy to take production back: green left running";
        finish(RollingPhase::Failed);
        return;
      }
      // One snapshot moves all of production back to blue (DESIGN.md §3 invariant 3).
      x.rollback_weights_sent = true;
      set_weights(0);
      return;
    }
    if (traffic_on_green()) return;  // waiting for WeightsApplied(0)
    for (size_t i = 0; i < x.green.size(); ++i) stop_task(Color::Green, i);
    if (blue_starting || std::any_of(x.green.begin(), x.green.end(), alive)) return;
    const int hb = healthy(x, Color::Blue);
    if (x.previous_release_id && hb < x.desired) {
      x.reason +=
          "; blue has " + std::to_string(hb) + "/" + std::to_string(x.desired) + " healthy tasks";
      if (hb == 0) {  // nothing was rolled back to
        finish(RollingPhase::Failed);
        return;
      }
    }
    finish(ending_phase());
  }

  // The earliest pending deadline; with none, a no-progress guard so that nothing waits forever.
  void rearm() {
    RollingDeployment& x = d();
    if (is_terminal(x.phase)) return;
    std::optional<core::TimePoint> earliest =
        x.awaiting_weights ? x.weights_deadline : std::nullopt;
    for (const auto* v : {&x.blue, &x.green}) {
      for (const auto& t : *v) {
        if (t.deadline && (!earliest || *t.deadline < *earliest)) earliest = t.deadline;
      }
    }
    if (earliest) {
      x.stall_guard = false;
    } else if (!x.stall_guard || !x.deadline) {
      x.stall_guard = true;
      earliest = now + x.task_timeout;
    } else {
      earliest = x.deadline;  // the guard stays where it is
    }
    if (earliest != x.deadline) {
      x.deadline = earliest;
      command({.kind = RollingCommandKind::ArmTimer, .at = *earliest});
    }
  }
};

}  // namespace

std::string_view to_string(RollingPhase p) {
  for (const auto& [phase, name] : kRollingPhases) {
    if (phase == p) return name;
  }
  return "?";
}

core::Result<RollingPhase> parse_rolling_phase(std::string_view s) {
  for (const auto& [phase, name] : kRollingPhases) {
    if (name == s) return phase;
  }
  return core::Error("unknown rolling deployment phase \"" + std::string(s) + "\"");
}

bool is_terminal(RollingPhase p) {
  return p == RollingPhase::Succeeded || p == RollingPhase::Failed ||
         p == RollingPhase::RolledBack || p == RollingPhase::Stopped;
}

std::string_view to_string(TaskState s) {
  switch (s) {
    case TaskState::Starting:
      return "starting";
    case TaskState::Healthy:
      return "healthy";
    case TaskState::Unhealthy:
      return "unhealthy";
    case TaskState::Draining:
      return "draining";
    case TaskState::Stopping:
      return "stopping";
    case TaskState::Stopped:
      return "stopped";
  }
  return "?";
}

std::string_view to_string(RollingEventKind k) {
  switch (k) {
    case RollingEventKind::Start:
      return "Start";
    case RollingEventKind::TaskHealthy:
      return "TaskHealthy";
    case RollingEventKind::TaskUnhealthy:
      return "TaskUnhealthy";
    case RollingEventKind::TaskFailed:
      return "TaskFailed";
    case RollingEventKind::TaskStopped:
      return "TaskStopped";
    case RollingEventKind::WeightsApplied:
      return "WeightsApplied";
    case RollingEventKind::WeightsFailed:
      return "WeightsFailed";
    case RollingEventKind::AlarmVerdict:
      return "AlarmVerdict";
    case RollingEventKind::Timer:
      return "Timer";
    case RollingEventKind::Rollback:
      return "Rollback";
    case RollingEventKind::Abort:
      return "Abort";
    case RollingEventKind::Promote:
      return "Promote";
  }
  return "?";
}

std::string_view to_string(RollingCommandKind k) {
  switch (k) {
    case RollingCommandKind::StartTask:
      return "StartTask";
    case RollingCommandKind::StopTask:
      return "StopTask";
    case RollingCommandKind::SetWeights:
      return "SetWeights";
    case RollingCommandKind::WatchAlarms:
      return "WatchAlarms";
    case RollingCommandKind::ArmTimer:
      return "ArmTimer";
    case RollingCommandKind::Finish:
      return "Finish";
  }
  return "?";
}

int max_running(const RollingDeployment& d) { return d.desired * d.max_percent / 100; }
int min_healthy(const RollingDeployment& d) {
  return (d.desired * d.min_healthy_percent + 99) / 100;
}
int running(const RollingDeployment& d) {
  return static_cast<int>(std::count_if(d.blue.begin(), d.blue.end(), alive) +
                          std::count_if(d.green.begin(), d.green.end(), alive));
}
int healthy(const RollingDeployment& d, Color c) {
  return count(c == Color::Blue ? d.blue : d.green, TaskState::Healthy);
}
int target_weight(int healthy_green, int healthy_blue) {
  const int total = healthy_green + healthy_blue;
  if (total == 0) return 0;
  return static_cast<int>((static_cast<long long>(kWeightTotal) * healthy_green) / total);
}

RollingDecision decide_rolling(const RollingDeployment& d, const RollingEvent& e,
                               core::TimePoint now) {
  const RollingDecision unchanged{d, {}};
  if (is_terminal(d.phase)) return unchanged;
  Builder b{RollingDecision{d, {}}, now};
  RollingDeployment& x = b.d();
  const bool deadline_passed =
      e.kind == RollingEventKind::Timer && d.deadline && now >= *d.deadline;
  if (e.kind == RollingEventKind::Timer && !deadline_passed) return unchanged;
  if (d.phase == RollingPhase::Pending && e.kind != RollingEventKind::Start) return unchanged;

  auto slot = [&](Color c) -> TaskSlot* {
    auto& v = b.tasks(c);
    return e.task < v.size() ? &v[e.task] : nullptr;
  };
  const bool updating = d.phase == RollingPhase::Updating;

  switch (e.kind) {
    case RollingEventKind::Start:
      if (d.phase != RollingPhase::Pending) return unchanged;
      x.phase = RollingPhase::Updating;
      if (x.desired < 1 || max_running(x) <= min_healthy(x)) {
        x.reason = "min_healthy_percent " + std::to_string(x.min_healthy_percent) +
                   " and max_percent " + std::to_string(x.max_percent) + " with count " +
                   std::to_string(x.desired) + " leave no room to replace a task (max running " +
                   std::to_string(max_running(x)) + ", min healthy " +
                   std::to_string(min_healthy(x)) + ")";
        b.finish(RollingPhase::Failed);
        return b.out;
      }
      if (x.has_alarms) b.command({.kind = RollingCommandKind::WatchAlarms});
      break;
    case RollingEventKind::Rollback:
    case RollingEventKind::Abort: {
      if (d.phase == RollingPhase::RollingBack) return unchanged;
      const bool abort = e.kind == RollingEventKind::Abort;
      x.reason = std::string(abort ? "aborted" : "rolled back") + " by operator" +
                 (e.detail.empty() ? "" : " " + e.detail);
      b.begin_rollback(abort ? Ending::Stopped : Ending::RolledBack);
      b.rearm();
      return b.out;
    }
    case RollingEventKind::Promote:
      return unchanged;  // no pause or wait to skip in a rolling update
    case RollingEventKind::AlarmVerdict:
      if (x.alarms == e.alarm && e.alarm != AlarmState::Alarm) return unchanged;
      x.alarms = e.alarm;
      if (e.alarm == AlarmState::Alarm && updating && b.traffic_on_green()) {
        b.fail("alarm: " + e.detail, /*alarm=*/true);
        b.rearm();
      }
      return b.out;  // the verdict is recorded either way
    case RollingEventKind::TaskHealthy: {
      TaskSlot* t = slot(e.color);
      if (!t) return unchanged;
      if (t->state == TaskState::Starting ||
          (t->state == TaskState::Unhealthy && e.color == Color::Blue)) {
        t->state = TaskState::Healthy;
        t->deadline.reset();
      } else {
        return unchanged;
      }
      break;
    }
    case RollingEventKind::TaskUnhealthy:
    case RollingEventKind::TaskFailed: {
      TaskSlot* t = slot(e.color);
      if (!t) return unchanged;
      const bool failed = e.kind == RollingEventKind::TaskFailed;
      if (e.color == Color::Blue) {
        if (t->state == TaskState::Healthy) {
          t->state = TaskState::Unhealthy;
        } else if (t->state == TaskState::Starting && failed) {
          b.stop_task(Color::Blue, e.task);  // rollback: this blue task will not come up
        } else {
          return unchanged;
        }
        break;
      }
      // A green task counts once: a failed one is already stopping. Losing health applies only
      // to a task that had it.
      const bool counts =
          t->state == TaskState::Healthy || (failed && t->state == TaskState::Starting);
      if (!counts) return unchanged;
      if (updating) {
        b.green_failed(e.task, failed ? "failed: " + e.detail : "lost its health");
      } else {
        b.stop_task(Color::Green, e.task);  // rolling back: green goes anyway
      }
      break;
    }
    case RollingEventKind::TaskStopped: {
      TaskSlot* t = slot(e.color);
      if (!t || t->state != TaskState::Stopping) return unchanged;
      t->state = TaskState::Stopped;
      t->deadline.reset();
      break;
    }
    case RollingEventKind::WeightsApplied:
      if (!x.awaiting_weights || e.snapshot != x.snapshot || e.weight != x.requested_weight) {
        return unchanged;
      }
      x.weight = e.weight;
      x.awaiting_weights = false;
      x.weights_deadline.reset();
      break;
    case RollingEventKind::WeightsFailed:
      if (!x.awaiting_weights || e.snapshot != x.snapshot) return unchanged;
      x.awaiting_weights = false;
      x.weights_deadline.reset();
      if (updating) {
        b.fail("the proxy refused the weights: " + e.detail);
      } else {
        x.reason +=
            "; the proxy refused the rollback snapshot: " + e.detail + "; green left running";
        b.finish(RollingPhase::Failed);
      }
      b.rearm();
      return b.out;
    case RollingEventKind::Timer: {
      bool changed = false;
      if (x.awaiting_weights && x.weights_deadline && now >= *x.weights_deadline) {
        x.awaiting_weights = false;
        x.weights_deadline.reset();
        if (updating) {
          // The snapshot may have been applied with its reply lost: assume the larger green share.
          x.weight = std::max(x.weight, x.requested_weight);
          b.fail("the proxy did not confirm the weights in time");
        } else {
          x.reason += "; the proxy did not confirm the rollback in time; green left running";
          b.finish(RollingPhase::Failed);
        }
        b.rearm();
        return b.out;
      }
      for (Color c : {Color::Blue, Color::Green}) {
        for (size_t i = 0; i < b.tasks(c).size(); ++i) {
          if (is_terminal(x.phase)) break;
          TaskSlot& t = b.tasks(c)[i];
          if (!t.deadline || now < *t.deadline) continue;
          changed = true;
          t.deadline.reset();
          if (t.state == TaskState::Stopping) {
            t.state = TaskState::Stopped;  // the runtime did not confirm; it was told to stop
            if (x.reason.find("did not confirm") == std::string::npos) {
              x.reason += std::string(x.reason.empty() ? "" : "; ") + std::string(to_string(c)) +
                          " task " + std::to_string(i) + " did not confirm its stop in time";
            }
          } else if (t.state == TaskState::Starting && c == Color::Green &&
                     x.phase == RollingPhase::Updating) {
            b.green_failed(i, "was not healthy within the task timeout");
          } else if (t.state == TaskState::Starting) {
            b.stop_task(c, i);
          }
        }
      }
      if (!changed && d.stall_guard) {
        if (updating) {
          b.fail("no progress: " + std::to_string(healthy(x, Color::Green)) + "/" +
                 std::to_string(x.desired) + " green healthy, " + std::to_string(running(x)) +
                 " running (max " + std::to_string(max_running(x)) + ")");
        } else {
          x.reason += "; rollback made no progress";
          b.finish(RollingPhase::Failed);
        }
        b.rearm();
        return b.out;
      }
      break;
    }
  }
  if (x.phase == RollingPhase::Updating) {
    b.advance();
  } else if (x.phase == RollingPhase::RollingBack) {
    b.rollback_advance();
  }
  b.rearm();
  return b.out;
}

}  // namespace cutover::deploy
