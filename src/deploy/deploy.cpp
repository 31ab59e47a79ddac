#include "deploy/deploy.hpp"

#include <array>
#include <cassert>
#include <utility>

namespace cutover::deploy {

namespace {
constexpr std::array<std::pair<Phase, std::string_view>, 7> kPhases{{
    {Phase::Pending, "Pending"},
    {Phase::Install, "Install"},
    {Phase::AllowTraffic, "AllowTraffic"},
    {Phase::TerminationWait, "TerminationWait"},
    {Phase::RollingBack, "RollingBack"},
    {Phase::Succeeded, "Succeeded"},
    {Phase::Failed, "Failed"},
}};

Decision fail(Deployment d, std::string reason, core::TimePoint now) {
  d.reason = std::move(reason);
  Decision out{std::move(d), {}};
  if (out.next.green_started) {
    out.next.phase = Phase::RollingBack;
    out.next.deadline = now + out.next.stop_timeout;
    out.commands.push_back({CommandKind::StopTaskSet, out.next.green});
    out.commands.push_back({CommandKind::ArmTimer, out.next.green, *out.next.deadline});
  } else {
    out.next.phase = Phase::Failed;
    out.next.deadline.reset();
    out.commands.push_back({CommandKind::Finish, out.next.green});
  }
  return out;
}

Decision finish(Deployment d, Phase end) {
  d.phase = end;
  d.deadline.reset();
  Decision out{std::move(d), {}};
  out.commands.push_back({CommandKind::Finish, out.next.green});
  return out;
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

bool is_terminal(Phase p) { return p == Phase::Succeeded || p == Phase::Failed; }

std::string_view to_string(Color c) { return c == Color::Blue ? "blue" : "green"; }
Color other(Color c) { return c == Color::Blue ? Color::Green : Color::Blue; }

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
    case EventKind::WeightsApplied:
      return "WeightsApplied";
    case EventKind::WeightsFailed:
      return "WeightsFailed";
    case EventKind::TaskSetStopped:
      return "TaskSetStopped";
    case EventKind::Timer:
      return "Timer";
  }
  return "?";
}

std::string_view to_string(CommandKind k) {
  switch (k) {
    case CommandKind::StartTaskSet:
      return "StartTaskSet";
    case CommandKind::WatchHealth:
      return "WatchHealth";
    case CommandKind::RouteAllTo:
      return "RouteAllTo";
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
  const bool deadline_passed = e.kind == EventKind::Timer && d.deadline && now >= *d.deadline;
  switch (d.phase) {
    case Phase::Pending: {
      if (e.kind != EventKind::Start) return unchanged;
      Decision out{d, {}};
      out.next.phase = Phase::Install;
      out.next.deadline = now + d.install_timeout;
      out.commands.push_back({CommandKind::StartTaskSet, d.green});
      out.commands.push_back({CommandKind::ArmTimer, d.green, *out.next.deadline});
      return out;
    }
    case Phase::Install: {
      if (e.kind == EventKind::TaskSetStarted && !d.green_started) {
        Decision out{d, {}};
        out.next.green_started = true;
        out.commands.push_back({CommandKind::WatchHealth, d.green});
        return out;
      }
      if (e.kind == EventKind::TaskSetFailed) {
        Deployment next = d;
        // A partially started set is stopped by the runtime itself (no orphans); nothing of green
        // is left to stop.
        next.green_started = false;
        return fail(next, "green task set failed to start: " + e.detail, now);
      }
      if (e.kind == EventKind::TargetsHealthy && d.green_started) {
        Decision out{d, {}};
        out.next.green_healthy = true;
        out.next.phase = Phase::AllowTraffic;
        out.next.deadline = now + d.stop_timeout;
        out.commands.push_back({CommandKind::RouteAllTo, d.green});
        out.commands.push_back({CommandKind::ArmTimer, d.green, *out.next.deadline});
        return out;
      }
      if (deadline_passed) {
        return fail(d,
                    d.green_started ? "green tasks did not pass the target health check in time"
                                    : "green task set did not start in time",
                    now);
      }
      return unchanged;
    }
    case Phase::AllowTraffic: {
      if (e.kind == EventKind::WeightsApplied) {
        if (!d.previous_release_id) return finish(d, Phase::Succeeded);
        Decision out{d, {}};
        out.next.phase = Phase::TerminationWait;
        out.next.deadline = now + d.stop_timeout;
        out.commands.push_back({CommandKind::StopTaskSet, other(d.green)});
        out.commands.push_back({CommandKind::ArmTimer, d.green, *out.next.deadline});
        return out;
      }
      if (e.kind == EventKind::WeightsFailed) {
        return fail(d, "the proxy refused the route snapshot: " + e.detail, now);
      }
      if (deadline_passed) return fail(d, "the proxy did not confirm the route in time", now);
      return unchanged;
    }
    case Phase::TerminationWait: {
      if (e.kind == EventKind::TaskSetStopped) return finish(d, Phase::Succeeded);
      if (deadline_passed) {
        Deployment next = d;
        next.reason = "blue task set did not confirm its stop in time";
        return finish(next, Phase::Succeeded);
      }
      return unchanged;
    }
    case Phase::RollingBack: {
      if (e.kind == EventKind::TaskSetStopped || deadline_passed) {
        Deployment next = d;
        if (deadline_passed && e.kind != EventKind::TaskSetStopped) {
          next.reason += "; green task set did not confirm its stop in time";
        }
        return finish(next, Phase::Failed);
      }
      return unchanged;
    }
    case Phase::Succeeded:
    case Phase::Failed:
      return unchanged;
  }
  assert(false && "deploy::decide: unhandled phase");
  return unchanged;
}

}  // namespace cutover::deploy
