// The imperative shell around deploy::decide (DESIGN.md §3): persist each decision with its
// commands (outbox) in one transaction, execute the commands, feed their results back as events.
#include <deque>
#include <map>

#include <nlohmann/json.hpp>

#include "controller/internal.hpp"
#include "core/duration.hpp"
#include "core/log.hpp"
#include "core/process.hpp"

namespace cutover::controller {

using nlohmann::json;

namespace {

// How soon the alarms look again when the proxy has not closed the new second's datapoint yet.
constexpr auto kDatapointRecheck = std::chrono::milliseconds(20);

// The deployment's state as stored and shown by `cutover status`; the deadline of the current
// wait as wall-clock time (Unix ms), so that the time left can be shown.
json state_json(const deploy::Deployment& d, const core::Clock& clock) {
  json deadline = nullptr;
  if (d.deadline) {
    deadline = core::to_unix_ms(
        clock.wall() + std::chrono::duration_cast<core::Duration>(*d.deadline - clock.now()));
  }
  return json{{"deadline_unix_ms", deadline},
              {"phase", std::string(deploy::to_string(d.phase))},
              {"wait", std::string(deploy::to_string(d.wait))},
              {"green", std::string(deploy::to_string(d.green))},
              {"green_started", d.green_started},
              {"green_healthy", d.green_healthy},
              {"test_traffic_on_green", d.test_traffic_on_green},
              {"weight", d.weight},
              {"step", d.step},
              {"steps", d.schedule.size()},
              {"alarms", d.has_alarms ? std::string(deploy::to_string(d.alarms)) : "none"},
              {"reason", d.reason}};
}

json command_json(const deploy::Command& c) {
  json j{{"kind", std::string(deploy::to_string(c.kind))},
         {"color", std::string(deploy::to_string(c.color))}};
  if (c.kind == deploy::CommandKind::SetWeights) j["weight"] = c.weight;
  if (c.kind == deploy::CommandKind::RunHook) j["hook"] = std::string(deploy::to_string(c.hook));
  return j;
}

store::DeploymentStatus status_of(deploy::Phase p) {
  switch (p) {
    case deploy::Phase::Succeeded:
      return store::DeploymentStatus::Succeeded;
    case deploy::Phase::Failed:
      return store::DeploymentStatus::Failed;
    case deploy::Phase::RolledBack:
      return store::DeploymentStatus::RolledBack;
    case deploy::Phase::Stopped:
      return store::DeploymentStatus::Stopped;
    default:
      return store::DeploymentStatus::InProgress;
  }
}

// The URL a hook reaches a listener at: wildcard addresses are reached on loopback.
std::string listener_url(const config::Listener& l) {
  std::string host = l.host;
  if (host.empty() || host == "0.0.0.0") host = "127.0.0.1";
  if (host == "::") host = "::1";
  if (host.find(':') != std::string::npos) host = "[" + host + "]";
  return std::string(l.tls ? "https://" : "http://") + host + ":" + std::to_string(l.port);
}

const std::vector<std::string>& hook_commands(const config::Hooks& h, deploy::Hook hook) {
  switch (hook) {
    case deploy::Hook::BeforeInstall:
      return h.before_install;
    case deploy::Hook::AfterInstall:
      return h.after_install;
    case deploy::Hook::AfterAllowTestTraffic:
      return h.after_allow_test_traffic;
    case deploy::Hook::BeforeAllowTraffic:
      return h.before_allow_traffic;
    case deploy::Hook::AfterAllowTraffic:
      return h.after_allow_traffic;
  }
  return h.before_install;
}

// config and alarm name the same things in the same order; alarm may not depend on config.
alarm::Rule to_rule(const config::Alarm& a) {
  static_assert(static_cast<int>(config::Metric::UpstreamErrors) ==
                static_cast<int>(alarm::Metric::UpstreamErrors));
  static_assert(static_cast<int>(config::Statistic::Max) ==
                static_cast<int>(alarm::Statistic::Max));
  static_assert(static_cast<int>(config::Comparison::LessOrEqual) ==
                static_cast<int>(alarm::Comparison::LessOrEqual));
  alarm::Rule r;
  r.name = a.name;
  r.metric = static_cast<alarm::Metric>(a.metric);
  r.statistic = static_cast<alarm::Statistic>(a.statistic);
  r.period_seconds =
      std::max<int64_t>(1, std::chrono::duration_cast<std::chrono::seconds>(a.period).count());
  r.evaluation_periods = a.evaluation_periods;
  r.datapoints_to_alarm = a.datapoints_to_alarm;
  r.comparison = static_cast<alarm::Comparison>(a.comparison);
  r.threshold = a.threshold;
  r.min_requests = static_cast<uint64_t>(std::max(0, a.min_requests));
  return r;
}

// Sums the datapoints of several groups second by second (production = blue + green).
std::vector<core::Datapoint> sum_by_second(const std::vector<const proxy::GroupSeries*>& groups) {
  std::map<int64_t, core::Datapoint> by_time;
  for (const auto* g : groups) {
    if (!g) continue;
    for (const auto& dp : g->datapoints) {
      auto [it, fresh] = by_time.try_emplace(dp.time, dp);
      if (!fresh) (void)it->second.add(dp);
    }
  }
  std::vector<core::Datapoint> out;
  out.reserve(by_time.size());
  for (auto& [t, dp] : by_time) out.push_back(std::move(dp));
  return out;
}

}  // namespace

core::Result<runtime::TaskSpec> Controller::Impl::task_spec(const config::Service& service,
                                                            const store::Release& release,
                                                            const std::string& color) const {
  if (service.task.containers.size() != 1) {
    return core::Error("service " + service.name +
                       ": tasks with more than one container are not supported yet");
  }
  const config::Container& c = service.task.containers.front();
  if (c.command.empty() && service.driver == config::Driver::Process) {
    return core::Error("service " + service.name + ", container " + c.name + ": no command");
  }
  runtime::TaskSpec spec;
  spec.service = service.name;
  spec.container = c.name;
  spec.revision = release.commit_sha;
  spec.color = color;
  spec.command = c.command;
  spec.env = c.env;
  auto secret_env = resolve_secrets(c.secrets, "service " + service.name + ", container " + c.name);
  if (!secret_env) return secret_env.error();
  spec.secrets = std::move(*secret_env);
  spec.workdir = release.artifact_path;
  spec.log_dir = task_log_dir();
  spec.stop_signal = c.stop_signal_number;
  spec.stop_timeout = c.stop_timeout;
  if (service.driver == config::Driver::Podman) {
    spec.image = config::expand_variables(
        c.image,
        {{"COMMIT_SHA", release.commit_sha}, {"COMMIT_SHORT", release.commit_sha.substr(0, 7)}});
    spec.container_port = c.port.value_or(0);
  }
  spec.rlimits = runtime::to_rlimits(c.limits);
  spec.health = c.health;
  return spec;
}

core::Result<std::vector<runtime::Task>> Controller::Impl::start_tasks(
    const config::Service& service, const store::Release& release, deploy::Color color, int count) {
  // No task starts from an artifact whose tree or provenance does not verify; gc waits meanwhile.
  std::lock_guard registry_lock(registry_mu);
  if (auto verified = verify_artifact(release); !verified) return verified.error();
  auto made = task_spec(service, release, std::string(deploy::to_string(color)));
  if (!made) return made.error();
  const runtime::TaskSpec& spec = *made;
  const config::Container& c = service.task.containers.front();
  runtime::Driver& runner = driver_for(service);
  auto tasks = runtime::start_task_set(runner, spec, count < 0 ? service.task.count : count);
  if (!tasks) return tasks.error();
  for (const auto& t : *tasks) {
    store::TaskRecord rec;
    rec.task_id = t.task_id;
    rec.service = service.name;
    rec.release_id = release.id;
    rec.color = spec.color;
    rec.container = c.name;
    rec.pid = t.pid;
    rec.start_time = t.start_time;
    rec.port = t.port;
    rec.log_path = t.log_path.string();
    auto recorded = record_driver(t.task_id, service);
    if (recorded) {
      if (auto r = store->insert_task(rec); !r) recorded = r.error();
    }
    if (!recorded) {
      (void)runtime::stop_task_set(runner, *tasks);
      return recorded.error();
    }
  }
  runtime::Supervisor& sup = &runner == driver.get() ? *supervisor : *podman_supervisor;
  for (const auto& t : *tasks) sup.supervise(t, spec);
  return tasks;
}

runtime::Supervisor& Controller::Impl::supervisor_of(const std::string& task_id) {
  return &driver_of(task_id) == driver.get() ? *supervisor : *podman_supervisor;
}

core::Result<void> Controller::Impl::stop_task(const runtime::Task& task) {
  return supervisor_of(task.task_id).stop(task);
}

core::Result<void> Controller::Impl::stop_tasks(const config::Service& service,
                                                const std::string& color) {
  const core::Duration drain_timeout = service.deployment.drain_timeout;
  auto running = store->list_running_tasks(service.name);
  if (!running) return running.error();
  std::vector<store::TaskRecord> doomed;
  for (const auto& t : *running) {
    if (t.color == color) doomed.push_back(t);
  }
  // The caller has already taken the targets out of the route snapshot; the proxy drains them.
  // Wait until it reports them gone (in-flight requests finished) before stopping processes.
  const auto deadline = clock.now() + drain_timeout;
  while (!doomed.empty() && clock.now() < deadline && !stop_requested()) {
    auto states = target_states();
    if (!states) break;
    bool draining = false;
    for (const auto& t : doomed) {
      if (states->count(t.task_id)) draining = true;
    }
    if (!draining) break;
    wait_until(clock.now() + std::chrono::milliseconds(100));
  }
  core::Result<void> result;
  for (const auto& t : doomed) {
    runtime::Task task = to_runtime_task(t);
    if (!service.task.containers.empty()) {
      task.stop_signal = service.task.containers.front().stop_signal_number;
      task.stop_timeout = service.task.containers.front().stop_timeout;
    }
    if (auto r = stop_task(task); !r) {
      core::logger()->warn("runtime: stopping task {}: {}", t.task_id, r.error().message);
      result = r;
    }
    (void)store->update_task_status(t.task_id, store::TaskStatus::Stopped);
  }
  return result;
}

void Controller::Impl::deploy_release(const config::Service& service, const store::Release& release,
                                      bool fast_path) {
  // A rolling service replaces its tasks in place (rolling.cpp); an operator's rollback redeploy
  // (fast_path) goes all at once through blue/green.
  if (service.deployment.strategy == config::Strategy::Rolling && !fast_path) {
    deploy_rolling(service, release);
    return;
  }
  auto log = core::logger();
  auto live = store->live(service.name);
  if (!live) {
    log->error("deploy: {}: {}", service.name, live.error().message);
    return;
  }
  const config::Deployment& spec = service.deployment;
  deploy::Deployment d;
  d.service = service.name;
  d.release_id = release.id;
  if (live->has_value()) {
    d.previous_release_id = (*live)->release_id;
    d.green = (*live)->color == "blue" ? deploy::Color::Green : deploy::Color::Blue;
  }
  const auto& th = service.target_health;
  core::Duration start_period{0};
  core::Duration stop_timeout{0};
  for (const auto& c : service.task.containers) {
    start_period = std::max(start_period, c.health.start_period);
    stop_timeout = std::max(stop_timeout, c.stop_timeout);
  }
  d.install_timeout = start_period + (th.interval + th.timeout) * (th.healthy_threshold + 2) +
                      std::chrono::seconds(30);
  d.stop_timeout = spec.drain_timeout + stop_timeout + std::chrono::seconds(10);
  d.hook_timeout = spec.hook_timeout;
  d.termination_wait = spec.termination_wait;
  d.apply_timeout = std::chrono::seconds(30);
  d.schedule.clear();
  if (d.previous_release_id && !fast_path) {
    for (const auto& step : config::traffic_schedule(spec.traffic)) {
      d.schedule.push_back({step.weight * (deploy::kWeightTotal / 100), step.pause});
    }
  }
  if (d.schedule.empty() || d.schedule.back().weight != deploy::kWeightTotal) {
    d.schedule.push_back({});  // a first deployment has nothing to shift from: all at once
  }
  for (size_t i = 0; i < deploy::kHookCount; ++i) {
    d.hooks[i] = !hook_commands(spec.hooks, static_cast<deploy::Hook>(i)).empty();
  }
  d.has_alarms = !spec.alarms.empty();
  d.insufficient_data_timeout = spec.insufficient_data_timeout;
  d.insufficient_data_continue = spec.insufficient_data_continue;
  d.rollback_on_failure = spec.auto_rollback.count(config::RollbackTrigger::Failure) > 0;
  d.rollback_on_alarm = spec.auto_rollback.count(config::RollbackTrigger::Alarm) > 0;

  store::Deployment rec;
  rec.service = service.name;
  rec.release_id = release.id;
  rec.previous_release_id = d.previous_release_id;
  rec.phase = std::string(deploy::to_string(d.phase));
  rec.state_json = state_json(d, clock).dump();
  auto inserted = store->insert_deployment(rec);
  if (!inserted) {
    log->error("deploy: {}: {}", service.name, inserted.error().message);
    return;
  }
  d.id = inserted->id;
  (void)store->append_audit(
      "controller", "deploy", "service:" + service.name,
      json{{"deployment", d.id}, {"release", release.id}, {"commit", release.commit_sha}}.dump());
  log->info("deploy: {} of {} started: release {} ({}) as {}{}", d.id, service.name, release.id,
            release.commit_sha.substr(0, 7), deploy::to_string(d.green),
            fast_path ? " (rollback: all at once)" : "");
  notify_deployment("deployment.started", d, release, "in_progress");

  auto cfg = config_at(release.commit_sha);
  Routing before = routing[service.name];
  Routing& route = routing[service.name];
  if (cfg) {
    if (!route.config) route.config = *cfg;  // first deploy: the new config defines the listener
  }
  std::shared_ptr<const config::Config> new_config = cfg ? *cfg : nullptr;

  std::deque<deploy::Event> events{{.kind = deploy::EventKind::Start}};
  std::optional<deploy::Color> watching;
  bool watching_alarms = false;
  std::optional<alarm::Verdict> last_verdict;
  core::TimePoint next_alarm_check{};
  core::TimePoint next_fetch = clock.now() + opts.poll_interval;
  bool newer_waiting = false;
  int64_t alarm_second = 0;  // the newest datapoint the alarms were evaluated on
  core::TimePoint next_health_check{};
  std::optional<core::TimePoint> timer;
  std::vector<std::string> green_ids;
  const deploy::Color green_color = d.green;
  const deploy::Color blue_color = deploy::other(d.green);
  const std::string green = std::string(deploy::to_string(green_color));
  const std::string blue = std::string(deploy::to_string(blue_color));
  const auto result = [&](deploy::EventKind kind, deploy::Color color, std::string detail = {}) {
    events.push_back({.kind = kind, .detail = std::move(detail), .color = color});
  };

  while (!deploy::is_terminal(d.phase)) {
    if (events.empty()) {
      if (stop_requested()) {
        log->warn("deploy: {} left in {} at shutdown; the next start settles it", d.id,
                  deploy::to_string(d.phase));
        return;
      }
      {
        std::lock_guard lock(mu);
        auto it = operator_events.find(service.name);
        if (it != operator_events.end()) {
          for (auto& e : it->second) events.push_back(std::move(e));
          operator_events.erase(it);
        }
      }
      const auto now = clock.now();
      if (watching) {
        if (auto states = target_states(); states) {
          bool all = !green_ids.empty();
          for (const auto& id : green_ids) {
            auto it = states->find(id);
            if (it == states->end() || it->second != "healthy") all = false;
          }
          if (all) {
            result(deploy::EventKind::TargetsHealthy, green_color);
            watching.reset();
          }
        }
      }
      // Green had its health and lost it on every target (a version that breaks under traffic):
      // decide rolls back while green is live. One target down is the proxy's business: it routes
      // around it and the runtime restarts it.
      if (!watching && d.green_healthy && !green_ids.empty() && now >= next_health_check) {
        next_health_check = now + std::chrono::milliseconds(500);
        if (auto states = target_states(); states) {
          bool all_down = true;
          for (const auto& id : green_ids) {
            auto it = states->find(id);
            if (it == states->end() || it->second != "unhealthy") all_down = false;
          }
          if (all_down) {
            result(deploy::EventKind::TargetsUnhealthy, green_color,
                   "every green target failed its health checks");
          }
        }
      }
      // The proxy closes the datapoint of second S as S+1 begins. The alarms are evaluated right
      // after that, once per new datapoint (not on a free-running 1 s timer, which would add up
      // to a second between a breach and the rollback).
      if (watching_alarms && now >= next_alarm_check) {
        int64_t second = 0;
        auto ev = evaluate_alarms(service, green, blue, &second);
        if (!ev) {
          next_alarm_check = now + std::chrono::seconds(1);
          log->warn("deploy: {}: alarms not evaluated: {}", d.id, ev.error().message);
        } else if (second <= alarm_second) {
          next_alarm_check = now + kDatapointRecheck;  // not closed yet: look again shortly
        } else {
          alarm_second = second;
          const auto into_second = std::chrono::duration_cast<std::chrono::milliseconds>(
                                       clock.wall().time_since_epoch()) %
                                   std::chrono::seconds(1);
          next_alarm_check = now + (std::chrono::seconds(1) - into_second) + kDatapointRecheck;
          if (ev->verdict != last_verdict || ev->verdict == alarm::Verdict::Alarm) {
            last_verdict = ev->verdict;
            deploy::Event e{.kind = deploy::EventKind::AlarmVerdict, .detail = ev->summary};
            e.alarm = ev->verdict == alarm::Verdict::Ok      ? deploy::AlarmState::Ok
                      : ev->verdict == alarm::Verdict::Alarm ? deploy::AlarmState::Alarm
                                                             : deploy::AlarmState::InsufficientData;
            events.push_back(std::move(e));
          }
        }
      }
      // Commits keep being fetched and built while this deployment runs.
      poll_source_if_due(next_fetch);
      // Blue is kept warm for termination_wait, but a newer release does not wait that long: the
      // wait is cut short so that the next deployment can start (its blue is this green).
      if (d.phase == deploy::Phase::TerminationWait && d.wait == deploy::Wait::Warm &&
          !newer_waiting && release_waiting(service.name)) {
        newer_waiting = true;
        events.push_back({.kind = deploy::EventKind::Promote,
                          .detail = "a newer release is waiting: blue is stopped now"});
      }
      if (events.empty() && timer && now >= *timer) {
        events.push_back({.kind = deploy::EventKind::Timer});
        timer.reset();
      }
      if (events.empty()) {
        auto wake = clock.now() + std::chrono::milliseconds(100);
        if (watching_alarms) wake = std::min(wake, next_alarm_check);
        wait_until(wake);
        continue;
      }
    }
    const deploy::Event ev = events.front();
    events.pop_front();
    const auto now = clock.now();
    deploy::Decision dec = deploy::decide(d, ev, now);
    if (dec.commands.empty() && dec.next.phase == d.phase) {
      d = dec.next;  // e.g. a new alarm verdict: remembered, nothing to persist or do
      continue;
    }

    // Persist the decision and its commands together (outbox) before acting on them.
    std::vector<int64_t> command_ids;
    auto tx = store->transaction([&](store::Store& s) -> core::Result<void> {
      store::DeploymentUpdate u;
      u.status = status_of(dec.next.phase);
      u.phase = std::string(deploy::to_string(dec.next.phase));
      u.state_json = state_json(dec.next, clock).dump();
      u.reason = dec.next.reason;
      if (auto r = s.update_deployment(d.id, u); !r) return r.error();
      if (auto r =
              s.append_deployment_event(d.id, std::string(deploy::to_string(ev.kind)),
                                        json{{"detail", ev.detail}, {"phase", u.phase}}.dump());
          !r) {
        return r.error();
      }
      for (const auto& c : dec.commands) {
        auto id = s.enqueue_command(d.id, command_json(c).dump());
        if (!id) return id.error();
        command_ids.push_back(*id);
      }
      return {};
    });
    if (!tx) {
      log->error("deploy: {}: cannot persist the decision: {}", d.id, tx.error().message);
      return;
    }
    if (dec.next.phase != d.phase) {
      log->info("deploy: {} {} -> {}{}", d.id, deploy::to_string(d.phase),
                deploy::to_string(dec.next.phase),
                dec.next.reason.empty() ? "" : " (" + dec.next.reason + ")");
    }
    d = dec.next;

    for (size_t i = 0; i < dec.commands.size(); ++i) {
      const deploy::Command& c = dec.commands[i];
      const std::string color = std::string(deploy::to_string(c.color));
      switch (c.kind) {
        case deploy::CommandKind::StartTaskSet: {
          auto tasks = start_tasks(service, release, c.color);
          if (!tasks) {
            result(deploy::EventKind::TaskSetFailed, c.color, tasks.error().message);
            break;
          }
          green_ids.clear();
          for (const auto& t : *tasks) green_ids.push_back(t.task_id);
          // Register green with the proxy without weight so that it health-checks it.
          route.registered = {color};
          if (new_config && !route.config) route.config = new_config;
          if (auto r = publish_routes(); !r) {
            result(deploy::EventKind::TaskSetFailed, c.color, r.error().message);
            break;
          }
          result(deploy::EventKind::TaskSetStarted, c.color);
          break;
        }
        case deploy::CommandKind::WatchHealth:
          watching = c.color;
          break;
        case deploy::CommandKind::RouteTestTo: {
          const std::string saved = route.test_color;
          route.test_color = color;
          if (auto r = publish_routes(); !r) {
            route.test_color = saved;
            result(deploy::EventKind::WeightsFailed, c.color, r.error().message);
            break;
          }
          result(deploy::EventKind::TestTrafficApplied, c.color);
          break;
        }
        case deploy::CommandKind::SetWeights: {
          // The live release is the one that serves all of production. It is recorded before the
          // snapshot moves everything to green, so that a crash after the snapshot finds the store
          // already saying so (recovery then stops blue); and it is given back to blue before a
          // rollback snapshot.
          Routing saved = route;
          const int w = c.weight;
          std::optional<std::pair<std::string, std::string>> live_now;  // release, color
          if (w >= proxy::kWeightTotal) {
            live_now = {release.id, green};
          } else if (d.previous_release_id) {
            live_now = {*d.previous_release_id, blue};
          }
          if (live_now) {
            if (auto r = store->set_live(service.name, live_now->first, live_now->second); !r) {
              events.push_back(
                  {.kind = deploy::EventKind::WeightsFailed, .detail = r.error().message});
              break;
            }
          }
          if (w > 0 && new_config) route.config = new_config;
          if (w == 0 && before.config) route.config = before.config;
          route.weights.clear();
          if (w > 0) route.weights[green] = w;
          if (d.previous_release_id) route.weights[blue] = proxy::kWeightTotal - w;
          // Green stays health-checked while it has no weight (until it is stopped).
          route.registered.clear();
          if (w == 0) route.registered = {green};
          if (auto r = publish_routes(); !r) {
            route = saved;
            if (w >= proxy::kWeightTotal && d.previous_release_id) {
              (void)store->set_live(service.name, *d.previous_release_id, blue);
            }
            events.push_back(
                {.kind = deploy::EventKind::WeightsFailed, .detail = r.error().message});
            break;
          }
          log->info("deploy: {}: production {} {}% / {} {}%", d.id, green, w / 100.0, blue,
                    (proxy::kWeightTotal - w) / 100.0);
          events.push_back({.kind = deploy::EventKind::WeightsApplied, .weight = w});
          break;
        }
        case deploy::CommandKind::WatchAlarms:
          watching_alarms = true;
          break;
        case deploy::CommandKind::RunHook: {
          auto r = run_hook(service, release, d, c.hook);
          if (r) {
            events.push_back({.kind = deploy::EventKind::HookSucceeded, .hook = c.hook});
          } else {
            events.push_back({.kind = deploy::EventKind::HookFailed,
                              .detail = r.error().message,
                              .hook = c.hook});
          }
          break;
        }
        case deploy::CommandKind::StopTaskSet: {
          // The color leaves the snapshot first (the proxy drains it), then its tasks stop.
          route.weights.erase(color);
          route.registered.clear();
          if (route.test_color == color) route.test_color.clear();
          if (c.color == green_color && !before.config) route = before;  // nothing was live
          (void)publish_routes();
          (void)stop_tasks(service, color);
          result(deploy::EventKind::TaskSetStopped, c.color);
          break;
        }
        case deploy::CommandKind::ArmTimer:
          timer = c.at;
          break;
        case deploy::CommandKind::Finish: {
          const bool ok = d.phase == deploy::Phase::Succeeded;
          const std::string outcome(deploy::to_string(d.phase));
          (void)store->append_audit("controller", ok ? "deploy.succeeded" : "deploy.ended",
                                    "service:" + service.name,
                                    json{{"deployment", d.id}, {"reason", d.reason}}.dump());
          notify_deployment(
              ok ? "deployment.succeeded"
              : d.phase == deploy::Phase::RolledBack || d.phase == deploy::Phase::Stopped
                  ? "deployment.rolled_back"
                  : "deployment.failed",
              d, release, outcome);
          if (ok) {
            log->info("deploy: {} of {} succeeded: {} serves production", d.id, service.name,
                      release.commit_sha.substr(0, 7));
          } else {
            log->warn("deploy: {} of {} ended {}: {}", d.id, service.name, outcome, d.reason);
          }
          break;
        }
      }
      (void)store->mark_command_done(command_ids[i]);
    }
  }
}

core::Result<void> Controller::Impl::run_hook(const config::Service& service,
                                              const store::Release& release,
                                              const deploy::Deployment& d, deploy::Hook hook) {
  const auto& commands = hook_commands(service.deployment.hooks, hook);
  {
    // Hooks run in the artifact directory: nothing runs there before it verifies.
    std::lock_guard registry_lock(registry_mu);
    if (auto verified = verify_artifact(release); !verified) return verified.error();
  }
  core::SpawnSpec spec;
  spec.env = core::minimal_environment();
  spec.env["SERVICE"] = service.name;
  spec.env["REVISION"] = release.commit_sha;
  spec.env["DEPLOYMENT_ID"] = d.id;
  spec.env["PHASE"] = std::string(deploy::to_string(d.phase));
  spec.env["PRODUCTION_URL"] = listener_url(service.listeners.production);
  if (service.listeners.test) spec.env["TEST_URL"] = listener_url(*service.listeners.test);
  spec.cwd = release.artifact_path;
  const auto deadline = clock.now() + service.deployment.hook_timeout;
  auto log = core::logger();
  for (const auto& command : commands) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock.now());
    if (left.count() <= 0) {
      return core::Error("`" + command + "` not started: hook_timeout reached");
    }
    spec.argv = {"/bin/sh", "-ec", config::expand_variables(command, spec.env)};
    log->info("deploy: {} {} hook: {}", d.id, deploy::to_string(hook), command);
    auto r = core::run_command(spec, left, [&](std::string_view line) {
      log->info("deploy: {} {} hook | {}", d.id, deploy::to_string(hook), line);
    });
    if (!r) return core::Error("`" + command + "` could not start: " + r.error().message);
    if (r->timed_out) {
      return core::Error("`" + command + "` timed out (hook_timeout " +
                         core::format_duration(service.deployment.hook_timeout) + ")");
    }
    if (!r->status.success()) return core::Error("`" + command + "` " + r->status.to_string());
  }
  return {};
}

core::Result<alarm::Evaluation> Controller::Impl::evaluate_alarms(const config::Service& service,
                                                                  const std::string& green,
                                                                  const std::string& blue,
                                                                  int64_t* last_second) {
  auto series = proxy_admin->stats_series();
  if (!series) return series.error();
  if (!series->last) return core::Error("the proxy has no datapoints yet");
  if (last_second != nullptr) *last_second = *series->last;
  const int64_t now = *series->last + 1;  // every datapoint up to `last` is final
  const auto* g = series->find_group(group_name(service.name, green));
  const auto* b = series->find_group(group_name(service.name, blue));
  const std::vector<core::Datapoint> green_points =
      g ? g->datapoints : std::vector<core::Datapoint>{};
  const std::vector<core::Datapoint> production_points = sum_by_second({g, b});
  // All alarms combined: ALARM if one is in alarm, OK if all are OK, else insufficient data.
  alarm::Evaluation combined;
  combined.verdict = alarm::Verdict::Ok;
  std::string insufficient;
  for (const auto& a : service.deployment.alarms) {
    const auto& points =
        a.target == config::AlarmTarget::Production ? production_points : green_points;
    auto ev = alarm::evaluate(to_rule(a), points, now);
    if (ev.verdict == alarm::Verdict::Alarm) {
      ev.summary = a.name + ": " + ev.summary;
      return ev;
    }
    if (ev.verdict == alarm::Verdict::InsufficientData) {
      combined.verdict = alarm::Verdict::InsufficientData;
      if (insufficient.empty()) insufficient = a.name + ": " + ev.summary;
    }
  }
  combined.summary = combined.verdict == alarm::Verdict::Ok ? "all alarms OK" : insufficient;
  return combined;
}

void Controller::Impl::poll_source_if_due(core::TimePoint& next_fetch) {
  bool requested = false;
  {
    std::lock_guard lock(mu);
    requested = poll_requested;
    poll_requested = false;
  }
  const auto now = clock.now();
  if (!requested && now < next_fetch) return;
  next_fetch = now + opts.poll_interval;
  if (routes_dirty.exchange(false)) {
    if (auto r = publish_routes(); !r) core::logger()->error("proxy: {}", r.error().message);
  }
  poll_source();
}

bool Controller::Impl::release_waiting(const std::string& service) {
  std::lock_guard lock(mu);
  for (const auto& r : ready_releases) {
    if (r.release.service == service) return true;
  }
  return false;
}

void Controller::Impl::record_skipped(const ReadyRelease& r, const store::Release& newer) {
  // Recorded as a deployment that never ran, so that `cutover history` shows it.
  store::Deployment rec;
  rec.service = r.release.service;
  rec.release_id = r.release.id;
  if (auto live = store->live(r.release.service); live && live->has_value()) {
    rec.previous_release_id = (*live)->release_id;
  }
  rec.status = store::DeploymentStatus::Superseded;
  rec.phase = "Skipped";
  rec.reason = "skipped: release " + r.release.id + " of commit " +
               r.release.commit_sha.substr(0, 7) + " arrived while " +
               (r.behind.empty() ? std::string("another deployment") : "deployment " + r.behind) +
               " ran; release " + newer.id + " of commit " + newer.commit_sha.substr(0, 7) +
               " is newer";
  auto inserted = store->insert_deployment(rec);
  if (!inserted) {
    core::logger()->error("deploy: {}: {}", rec.service, inserted.error().message);
    return;
  }
  (void)store->append_audit(
      "controller", "deploy.skipped", "service:" + rec.service,
      json{{"deployment", inserted->id}, {"release", rec.release_id}, {"newer", newer.id}}.dump());
  core::logger()->info("deploy: {} of {}: {}", inserted->id, rec.service, rec.reason);
}

void Controller::Impl::deploy_ready_releases() {
  std::deque<ReadyRelease> ready;
  {
    std::lock_guard lock(mu);
    ready.swap(ready_releases);
  }
  if (ready.empty()) return;
  // Newest per service, in the order the services' newest releases arrived.
  std::map<std::string, size_t> newest;
  for (size_t i = 0; i < ready.size(); ++i) newest[ready[i].release.service] = i;
  for (size_t i = 0; i < ready.size(); ++i) {
    const ReadyRelease& r = ready[i];
    const size_t n = newest[r.release.service];
    if (n == i) continue;
    record_skipped(r, ready[n].release);
  }
  for (size_t i = 0; i < ready.size(); ++i) {
    const ReadyRelease& r = ready[i];
    if (newest[r.release.service] != i || stop_requested()) continue;
    const config::Service* svc = r.config->find_service(r.release.service);
    if (svc == nullptr) {
      core::logger()->error("deploy: release {} names service {} that its config lacks",
                            r.release.id, r.release.service);
      continue;
    }
    deploy_release(*svc, r.release);
  }
}

void Controller::Impl::run_redeploys() {
  std::map<std::string, Redeploy> requests;
  {
    std::lock_guard lock(mu);
    requests.swap(redeploy_requests);
  }
  for (const auto& [name, request] : requests) {
    auto log = core::logger();
    const std::string& release_id = request.release_id;
    const std::string& why = request.why;
    auto rel = store->get_release(release_id);
    if (!rel || !rel->has_value()) {
      log->error("{} of {}: release {} is gone", why, name, release_id);
      continue;
    }
    auto cfg = config_at((**rel).commit_sha);
    if (!cfg) {
      log->error("{} of {}: {}", why, name, cfg.error().message);
      continue;
    }
    const config::Service* svc = nullptr;
    for (const auto& s : (*cfg)->services) {
      if (s.name == name) svc = &s;
    }
    if (!svc) {
      log->error("{} of {}: release {} has no service {}", why, name, release_id, name);
      continue;
    }
    log->warn("{} of {}: redeploying release {} ({}){}", why, name, release_id,
              (**rel).commit_sha.substr(0, 7),
              request.fast_path ? " all at once" : " with its traffic schedule");
    deploy_release(*svc, **rel, request.fast_path);
  }
}

}  // namespace cutover::controller
