// The imperative shell around deploy::decide (DESIGN.md §3): persist each decision with its
// commands (outbox) in one transaction, execute the commands, feed their results back as events.
#include <deque>

#include <nlohmann/json.hpp>

#include "controller/internal.hpp"
#include "core/log.hpp"

namespace cutover::controller {

using nlohmann::json;

namespace {

json state_json(const deploy::Deployment& d) {
  return json{{"phase", std::string(deploy::to_string(d.phase))},
              {"green", std::string(deploy::to_string(d.green))},
              {"green_started", d.green_started},
              {"green_healthy", d.green_healthy},
              {"reason", d.reason},
              {"install_timeout_ms", d.install_timeout.count()},
              {"stop_timeout_ms", d.stop_timeout.count()}};
}

json command_json(const deploy::Command& c) {
  return json{{"kind", std::string(deploy::to_string(c.kind))},
              {"color", std::string(deploy::to_string(c.color))}};
}

store::DeploymentStatus status_of(deploy::Phase p) {
  switch (p) {
    case deploy::Phase::Succeeded:
      return store::DeploymentStatus::Succeeded;
    case deploy::Phase::Failed:
      return store::DeploymentStatus::Failed;
    default:
      return store::DeploymentStatus::InProgress;
  }
}

}  // namespace

core::Result<runtime::TaskSpec> Controller::Impl::task_spec(const config::Service& service,
                                                            const store::Release& release,
                                                            const std::string& color) const {
  if (service.driver != config::Driver::Process) {
    return core::Error("service " + service.name +
                       ": the podman driver is not available in this build yet (driver: process)");
  }
  if (service.task.containers.size() != 1) {
    return core::Error("service " + service.name +
                       ": tasks with more than one container are not supported yet");
  }
  const config::Container& c = service.task.containers.front();
  if (!c.secrets.empty()) {
    return core::Error("service " + service.name + ", container " + c.name +
                       ": secrets are not available in this build yet (no secret store)");
  }
  if (c.command.empty()) {
    return core::Error("service " + service.name + ", container " + c.name + ": no command");
  }
  runtime::TaskSpec spec;
  spec.service = service.name;
  spec.container = c.name;
  spec.revision = release.commit_sha;
  spec.color = color;
  spec.command = c.command;
  spec.env = c.env;
  spec.workdir = release.artifact_path;
  spec.log_dir = task_log_dir();
  spec.stop_signal = c.stop_signal_number;
  spec.stop_timeout = c.stop_timeout;
  spec.rlimits = runtime::to_rlimits(c.limits);
  spec.health = c.health;
  return spec;
}

core::Result<std::vector<runtime::Task>> Controller::Impl::start_tasks(
    const config::Service& service, const store::Release& release, deploy::Color color) {
  auto made = task_spec(service, release, std::string(deploy::to_string(color)));
  if (!made) return made.error();
  const runtime::TaskSpec& spec = *made;
  const config::Container& c = service.task.containers.front();
  auto tasks = runtime::start_task_set(*driver, spec, service.task.count);
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
    if (auto r = store->insert_task(rec); !r) {
      (void)runtime::stop_task_set(*driver, *tasks);
      return r.error();
    }
  }
  for (const auto& t : *tasks) supervisor->supervise(t, spec);
  return tasks;
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
    if (auto r = supervisor->stop(task); !r) {
      core::logger()->warn("runtime: stopping task {}: {}", t.task_id, r.error().message);
      result = r;
    }
    (void)store->update_task_status(t.task_id, store::TaskStatus::Stopped);
  }
  return result;
}

void Controller::Impl::deploy_release(const config::Service& service,
                                      const store::Release& release) {
  auto log = core::logger();
  auto live = store->live(service.name);
  if (!live) {
    log->error("deploy: {}: {}", service.name, live.error().message);
    return;
  }
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
  d.stop_timeout = service.deployment.drain_timeout + stop_timeout + std::chrono::seconds(10);

  store::Deployment rec;
  rec.service = service.name;
  rec.release_id = release.id;
  rec.previous_release_id = d.previous_release_id;
  rec.phase = std::string(deploy::to_string(d.phase));
  rec.state_json = state_json(d).dump();
  auto inserted = store->insert_deployment(rec);
  if (!inserted) {
    log->error("deploy: {}: {}", service.name, inserted.error().message);
    return;
  }
  d.id = inserted->id;
  (void)store->append_audit(
      "controller", "deploy", "service:" + service.name,
      json{{"deployment", d.id}, {"release", release.id}, {"commit", release.commit_sha}}.dump());
  log->info("deploy: {} of {} started: release {} ({}) as {}", d.id, service.name, release.id,
            release.commit_sha.substr(0, 7), deploy::to_string(d.green));

  auto cfg = config_at(release.commit_sha);
  Routing before = routing[service.name];
  Routing& route = routing[service.name];
  if (cfg) {
    if (!route.config) route.config = *cfg;  // first deploy: the new config defines the listener
  }
  std::shared_ptr<const config::Config> new_config = cfg ? *cfg : nullptr;

  std::deque<deploy::Event> events{{deploy::EventKind::Start, ""}};
  std::optional<deploy::Color> watching;
  std::optional<core::TimePoint> timer;
  std::vector<std::string> green_ids;
  const std::string green = std::string(deploy::to_string(d.green));
  const std::string blue = std::string(deploy::to_string(deploy::other(d.green)));

  while (!deploy::is_terminal(d.phase)) {
    if (events.empty()) {
      if (stop_requested()) {
        log->warn("deploy: {} left in {} at shutdown; the next start settles it", d.id,
                  deploy::to_string(d.phase));
        return;
      }
      if (watching) {
        if (auto states = target_states(); states) {
          bool all = !green_ids.empty();
          for (const auto& id : green_ids) {
            auto it = states->find(id);
            if (it == states->end() || it->second != "healthy") all = false;
          }
          if (all) events.push_back({deploy::EventKind::TargetsHealthy, ""});
        }
      }
      if (events.empty() && timer && clock.now() >= *timer) {
        events.push_back({deploy::EventKind::Timer, ""});
      }
      if (events.empty()) {
        wait_until(clock.now() + std::chrono::milliseconds(100));
        continue;
      }
    }
    const deploy::Event ev = events.front();
    events.pop_front();
    const auto now = clock.now();
    deploy::Decision dec = deploy::decide(d, ev, now);
    if (dec.commands.empty() && dec.next.phase == d.phase) continue;  // event did not apply

    // Persist the decision and its commands together (outbox) before acting on them.
    std::vector<int64_t> command_ids;
    auto tx = store->transaction([&](store::Store& s) -> core::Result<void> {
      store::DeploymentUpdate u;
      u.status = status_of(dec.next.phase);
      u.phase = std::string(deploy::to_string(dec.next.phase));
      u.state_json = state_json(dec.next).dump();
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
            events.push_back({deploy::EventKind::TaskSetFailed, tasks.error().message});
            break;
          }
          green_ids.clear();
          for (const auto& t : *tasks) green_ids.push_back(t.task_id);
          // Register green with the proxy without weight so that it health-checks it.
          route.registered = {color};
          if (new_config && !route.config) route.config = new_config;
          if (auto r = publish_routes(); !r) {
            events.push_back({deploy::EventKind::TaskSetFailed, r.error().message});
            break;
          }
          events.push_back({deploy::EventKind::TaskSetStarted, ""});
          break;
        }
        case deploy::CommandKind::WatchHealth:
          watching = c.color;
          break;
        case deploy::CommandKind::RouteAllTo: {
          // Record the new live release first: a crash after the snapshot is applied must find
          // the store already saying green serves production (recovery then stops blue).
          Routing saved = route;
          if (auto r = store->set_live(service.name, release.id, color); !r) {
            events.push_back({deploy::EventKind::WeightsFailed, r.error().message});
            break;
          }
          route.config = new_config ? new_config : route.config;
          route.weights = {{color, proxy::kWeightTotal}};
          route.registered.clear();
          if (auto r = publish_routes(); !r) {
            route = saved;
            if (d.previous_release_id) {
              (void)store->set_live(service.name, *d.previous_release_id, blue);
            }
            events.push_back({deploy::EventKind::WeightsFailed, r.error().message});
            break;
          }
          watching.reset();
          events.push_back({deploy::EventKind::WeightsApplied, ""});
          break;
        }
        case deploy::CommandKind::StopTaskSet: {
          if (c.color == d.green) {
            // Rolling back: green leaves the snapshot (it never had weight), then stops.
            route.registered.clear();
            if (!before.config && !d.green_healthy) route = before;
            (void)publish_routes();
          }
          (void)stop_tasks(service, color);
          events.push_back({deploy::EventKind::TaskSetStopped, ""});
          break;
        }
        case deploy::CommandKind::ArmTimer:
          timer = c.at;
          break;
        case deploy::CommandKind::Finish: {
          const bool ok = d.phase == deploy::Phase::Succeeded;
          (void)store->append_audit("controller", ok ? "deploy.succeeded" : "deploy.failed",
                                    "service:" + service.name,
                                    json{{"deployment", d.id}, {"reason", d.reason}}.dump());
          if (ok) {
            log->info("deploy: {} of {} succeeded: {} serves production", d.id, service.name,
                      release.commit_sha.substr(0, 7));
          } else {
            log->warn("deploy: {} of {} failed: {}", d.id, service.name, d.reason);
          }
          break;
        }
      }
      (void)store->mark_command_done(command_ids[i]);
    }
  }
}

}  // namespace cutover::controller
