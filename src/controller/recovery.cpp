// What a (re)started controller does before its loop runs: adopt the proxy and the tasks the last
// run left, settle what a crash interrupted, and republish the routes of what is live.
#include <set>

#include <nlohmann/json.hpp>

#include "controller/internal.hpp"
#include "core/log.hpp"

namespace cutover::controller {

using nlohmann::json;

namespace {

// How long a restarted controller waits for the proxy to drain the tasks it is about to stop.
constexpr std::chrono::seconds kRecoveryDrainTimeout{30};

std::vector<std::string> known_services(store::Store& st) {
  auto m = st.get_meta("services");
  if (!m || !m->has_value()) return {};
  json n = json::parse(**m, nullptr, false);
  if (!n.is_array()) return {};
  return n.get<std::vector<std::string>>();
}

}  // namespace

void Controller::Impl::supervise_adopted(const store::TaskRecord& t) {
  // Restarts and liveness need what the task runs: the config of its release.
  auto why_not = [&]() -> std::string {
    auto rel = store->get_release(t.release_id);
    if (!rel) return rel.error().message;
    if (!rel->has_value()) return "its release " + t.release_id + " is not in the store";
    auto cfg = config_at((**rel).commit_sha);
    if (!cfg) return cfg.error().message;
    const config::Service* svc = (*cfg)->find_service(t.service);
    if (!svc) return "its release's configuration has no service " + t.service;
    auto spec = task_spec(*svc, **rel, t.color);
    if (!spec) return spec.error().message;
    runtime::Task task = to_runtime_task(t);
    task.revision = (**rel).commit_sha;
    task.stop_signal = spec->stop_signal;
    task.stop_timeout = spec->stop_timeout;
    supervisor_of(t.task_id).supervise(task, *spec, /*adopted=*/true);
    return "";
  }();
  if (!why_not.empty()) {
    core::logger()->warn("runtime: task {} of {} re-adopted but not supervised: {}", t.task_id,
                         t.service, why_not);
  }
}

core::Result<void> Controller::Impl::recover() {
  if (auto r = ensure_proxy(); !r) return r;

  // Executions the last run left running or queued cannot be resumed half-way: they are cancelled
  // ("controller restarted"). If one of them was for the newest commit seen, that commit was never
  // built to the end, so the loop is made to build the branch head again, as a new execution.
  if (auto execs = store->list_executions(200); execs) {
    auto last = store->get_meta("source.last_commit");
    bool rebuild_head = false;
    for (const auto& e : *execs) {
      if (e.status != store::ExecutionStatus::Running &&
          e.status != store::ExecutionStatus::Queued) {
        continue;
      }
      const bool was_running = e.status == store::ExecutionStatus::Running;
      (void)store->update_execution_status(
          e.id, store::ExecutionStatus::Cancelled,
          std::string("controller restarted while this execution ") +
              (was_running ? "ran" : "was queued"));
      core::logger()->warn("execution {} ({}) cancelled: the controller restarted", e.id,
                           e.commit_sha.substr(0, 7));
      if (last && last->has_value() && **last == e.commit_sha) rebuild_head = true;
    }
    if (rebuild_head) {
      core::logger()->info("source: the newest commit was not built to the end; building it again");
      (void)store->set_meta("source.last_commit", "");
    }
  }

  // Re-adopt running tasks (pid + start time). A task whose process is gone is recorded stopped.
  auto tasks = store->list_running_tasks();
  if (!tasks) return tasks.error();
  int adopted = 0;
  for (const auto& t : *tasks) {
    if (auto r = driver_of(t.task_id).adopt(to_runtime_task(t)); r) {
      ++adopted;
      supervise_adopted(t);
    } else {
      core::logger()->warn("runtime: task {} of {} is gone ({}); recorded as stopped", t.task_id,
                           t.service, r.error().message);
      (void)store->update_task_status(t.task_id, store::TaskStatus::Stopped);
    }
  }
  if (!tasks->empty()) core::logger()->info("runtime: re-adopted {} running task(s)", adopted);
  // Containers cutover labelled that the store does not know: reported, never removed here.
  if (auto containers = podman->list_containers(); containers) {
    for (const auto& c : *containers) {
      bool known = false;
      for (const auto& t : *tasks) known = known || t.task_id == c.task_id;
      if (!known && c.state == "running") {
        core::logger()->warn(
            "runtime: container {} (service {}) carries cutover's labels but no task record; left "
            "running (remove it with `podman rm -f {}` if it is not needed)",
            c.name, c.service, c.name);
      }
    }
  }

  // Task processes that the store does not account for (started by a controller that crashed
  // before it recorded them, or by hand with our marker): reported, never killed.
  std::set<std::pair<int64_t, int64_t>> known;  // (pid, start time)
  if (auto running = store->list_running_tasks(); running) {
    for (const auto& t : *running) known.insert({t.pid, t.start_time});
  }
  std::vector<runtime::FoundProcess> strays;
  for (const auto& p : runtime::find_task_processes(task_log_dir())) {
    if (known.count({p.pid, p.start_time})) continue;
    core::logger()->warn(
        "runtime: process {} claims to be task {} but no running task of the store accounts for "
        "it; left running (stop it by hand if it is not yours)",
        p.pid, p.task_id);
    (void)store->append_audit("controller", "runtime.unaccounted_task", "task:" + p.task_id,
                              json{{"pid", p.pid}, {"start_time", p.start_time}}.dump());
    strays.push_back(p);
  }
  {
    std::lock_guard lock(unaccounted_mu);
    unaccounted = std::move(strays);
  }

  std::vector<store::TaskRecord> doomed;
  struct RollingTopUp {
    std::shared_ptr<const config::Config> config;
    std::string release_id;
    std::string color;
  };
  std::vector<RollingTopUp> rolling_top_ups;
  // Deployments a crash interrupted: if production had already moved to green (the live release
  // is the deployment's), finish it by stopping blue; otherwise stop green and keep blue.
  for (const auto& name : known_services(*store)) {
    auto active = store->active_deployment(name);
    auto live = store->live(name);
    if (!active || !live) continue;
    auto cfg = live->has_value() ? [&]() -> std::shared_ptr<const config::Config> {
      auto rel = store->get_release((*live)->release_id);
      if (!rel || !rel->has_value()) return nullptr;
      auto c = config_at((**rel).commit_sha);
      return c ? *c : nullptr;
    }()
        : nullptr;
    if (live->has_value()) {
      routing[name].config = cfg;
      routing[name].weights = {{(*live)->color, proxy::kWeightTotal}};
    }
    if (!active->has_value()) continue;
    const store::Deployment& dep = **active;
    const bool moved = live->has_value() && (*live)->release_id == dep.release_id;
    auto running = store->list_running_tasks(name);
    if (!running) continue;
    for (const auto& t : *running) {
      const bool green_task = t.release_id == dep.release_id;
      if (moved == green_task) continue;  // keep what serves production
      doomed.push_back(t);                // stopped below, once the proxy has drained them
    }
    store::DeploymentUpdate u;
    u.status = moved ? store::DeploymentStatus::Succeeded : store::DeploymentStatus::Failed;
    u.phase = moved ? "Succeeded" : "Failed";
    u.state_json = dep.state_json;
    u.reason = moved ? "completed after a controller restart (production had moved; blue stopped)"
                     : "the controller restarted during " + dep.phase +
                           "; green stopped, production stayed on the previous release";
    // Rolling: the kept color may be short of tasks (blue stopped as green came up, or green
    // live before it had all of them): it is brought back to the service's count below.
    if (json::parse(dep.state_json, nullptr, false).value("strategy", "") == "rolling" && cfg &&
        live->has_value()) {
      rolling_top_ups.push_back({cfg, (*live)->release_id, (*live)->color});
      u.reason += " (rolling: " + (*live)->color + " brought back to its task count)";
    }
    (void)store->update_deployment(dep.id, u);
    (void)store->append_deployment_event(dep.id, "Recovered",
                                         json{{"outcome", u.phase}, {"reason", u.reason}}.dump());
    core::logger()->warn("deploy: {} of {}: {}", dep.id, name, u.reason);
  }
  // A release built before the stop but never deployed (it was waiting for the loop, or behind a
  // deployment) is the newest of its service with no deployment record: it is deployed now.
  for (const auto& name : known_services(*store)) {
    auto rels = store->list_releases(name, 1);
    if (!rels || rels->empty()) continue;
    const store::Release& rel = rels->front();
    auto deps = store->list_deployments(name, 0);
    if (!deps) continue;
    bool deployed = false;
    for (const auto& d : *deps) deployed = deployed || d.release_id == rel.id;
    if (deployed) continue;
    // Only what a successful execution released (a failed one may have released some services).
    auto ex = store->get_execution(rel.execution_id);
    if (!ex || !ex->has_value() || (**ex).status != store::ExecutionStatus::Succeeded) continue;
    auto cfg = config_at(rel.commit_sha);
    if (!cfg || (*cfg)->find_service(name) == nullptr) continue;
    core::logger()->info(
        "deploy: release {} of {} ({}) was built but not deployed before the "
        "restart; deploying it",
        rel.id, name, rel.commit_sha.substr(0, 7));
    std::lock_guard lock(mu);
    ready_releases.push_back(ReadyRelease{*cfg, rel, ""});
  }
  // Commands of settled deployments are not replayed.
  if (auto pending = store->pending_commands(); pending) {
    for (const auto& c : *pending) (void)store->mark_command_done(c.id);
  }
  // The snapshot without the doomed tasks goes first: the proxy stops sending them requests and
  // drains what is in flight; only then are they stopped, so no request is cut off.
  auto published = publish_routes();
  if (!doomed.empty()) {
    const auto deadline = clock.now() + kRecoveryDrainTimeout;
    while (published && clock.now() < deadline) {
      auto states = target_states();
      if (!states) break;
      bool draining = false;
      for (const auto& t : doomed) draining = draining || states->count(t.task_id) > 0;
      if (!draining || !wait_until(clock.now() + std::chrono::milliseconds(100))) break;
    }
    for (const auto& t : doomed) {
      (void)stop_task(to_runtime_task(t));
      (void)store->update_task_status(t.task_id, store::TaskStatus::Stopped);
    }
  }
  for (const auto& top : rolling_top_ups) {
    auto r = top_up_rolling(top.config, top.release_id, top.color);
    if (published) published = r;
  }
  return published;
}

// Rolling deployments a restart interrupted: the live color is started up to the service's task
// count (whatever the rollout had stopped), then the routes are published with the new tasks.
core::Result<void> Controller::Impl::top_up_rolling(
    const std::shared_ptr<const config::Config>& cfg, const std::string& release_id,
    const std::string& color) {
  auto rel = store->get_release(release_id);
  if (!rel || !rel->has_value()) return publish_routes();
  for (const auto& svc : cfg->services) {
    if (svc.name != (**rel).service) continue;
    auto running = store->list_running_tasks(svc.name);
    if (!running) return running.error();
    int have = 0;
    for (const auto& t : *running) have += t.color == color && t.release_id == release_id;
    if (have >= svc.task.count) break;
    const deploy::Color c = color == "blue" ? deploy::Color::Blue : deploy::Color::Green;
    if (auto started = start_tasks(svc, **rel, c, svc.task.count - have); !started) {
      core::logger()->error("deploy: {}: restoring {} to {} tasks: {}", svc.name, color,
                            svc.task.count, started.error().message);
    } else {
      core::logger()->warn("deploy: {}: {} task(s) of {} started to restore its count of {}",
                           svc.name, started->size(), color, svc.task.count);
    }
  }
  return publish_routes();
}

}  // namespace cutover::controller
