#include "controller/controller.hpp"

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "controller/internal.hpp"
#include "core/fs.hpp"
#include "core/log.hpp"
#include "runtime/task_definition.hpp"

namespace cutover::controller {

using nlohmann::json;

std::string group_name(const std::string& service, std::string_view color) {
  return service + "-" + std::string(color);
}

runtime::Task to_runtime_task(const store::TaskRecord& record) {
  runtime::Task task;
  task.task_id = record.task_id;
  task.service = record.service;
  task.color = record.color;
  task.pid = static_cast<pid_t>(record.pid);
  task.start_time = record.start_time;
  task.port = record.port;
  task.log_path = record.log_path;
  return task;
}

Controller::Controller(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Controller::~Controller() { stop(); }

core::Result<std::unique_ptr<Controller>> Controller::create(Options options, core::Clock& clock) {
  auto impl = std::make_unique<Impl>(std::move(options), clock);
  const auto& dir = impl->opts.state_dir;
  for (const auto& sub : {dir, dir / "proxy", dir / "tasks", dir / "workspaces", dir / "cache"}) {
    if (auto r = core::ensure_dir(sub, 0700); !r) return r.error();
  }
  auto st = store::Store::open(dir / "state.db", clock);
  if (!st) return st.error().wrap("cannot open the state database");
  impl->store = std::move(*st);
  // A broken audit chain does not stop the controller (it is evidence, kept as it is), but it is
  // said at once; `cutover audit` says it on every read.
  if (auto chain = impl->store->verify_audit_chain(); !chain) {
    core::logger()->error("{}", chain.error().message);
  }
  auto key = store::SecretKey::load(dir);
  if (!key) return key.error().wrap("cannot load the secret store's key");
  impl->secrets = std::make_unique<store::SecretStore>(*impl->store, std::move(*key));
  auto reg = registry::Registry::open(dir / "registry");
  if (!reg) return reg.error().wrap("cannot open the artifact registry");
  impl->registry = std::move(*reg);
  auto signing = registry::SigningKey::load_or_create(dir);
  if (!signing) return signing.error().wrap("cannot load the provenance key");
  impl->provenance_key = std::make_unique<registry::SigningKey>(std::move(*signing));
  auto src = source::GitSource::open(impl->opts.repo, impl->opts.branch, dir / "source");
  if (!src) return src.error().wrap("cannot open repository " + impl->opts.repo);
  impl->source = std::move(*src);
  runtime::ProcessDriverOptions driver_options;
  if (!impl->opts.self_exe.empty()) driver_options.log_copier = {impl->opts.self_exe, "task-log"};
  impl->driver = std::make_unique<runtime::ProcessDriver>(impl->ports, driver_options);
  runtime::PodmanDriverOptions podman_options;
  podman_options.log_copier = driver_options.log_copier;
  impl->podman = std::make_unique<runtime::PodmanDriver>(impl->ports, podman_options);
  impl->supervisor = std::make_unique<runtime::Supervisor>(
      *impl->driver, clock, runtime::SupervisorOptions{},
      [impl = impl.get()](const runtime::TaskEvent& e) { impl->on_task_event(e); });
  impl->podman_supervisor = std::make_unique<runtime::Supervisor>(
      *impl->podman, clock, runtime::SupervisorOptions{},
      [impl = impl.get()](const runtime::TaskEvent& e) { impl->on_task_event(e); });
  impl->proxy_admin = std::make_unique<proxy::AdminClient>(impl->admin_socket());
  return std::unique_ptr<Controller>(new Controller(std::move(impl)));
}

core::Result<void> Controller::start() {
  if (auto r = impl_->recover(); !r) return r;
  // Notification receivers of the newest commit seen, for deployments recovery resumes.
  if (auto last = impl_->store->list_executions(1); last && !last->empty()) {
    if (auto cfg = impl_->config_at(last->front().commit_sha); cfg) {
      impl_->configure_notifications(**cfg);
    }
  }
  impl_->supervisor->start();
  impl_->podman_supervisor->start();
  impl_->worker_thread = std::thread([impl = impl_.get()] { impl->run_worker(); });
  impl_->loop_thread = std::thread([impl = impl_.get()] { impl->run_loop(); });
  return {};
}

void Controller::stop() {
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopping = true;
  }
  {
    // The running execution is cancelled (its command tree killed) and the worker joined.
    std::lock_guard lock(impl_->exec_mu);
    impl_->worker_stopping = true;
    if (!impl_->running_execution.empty() && impl_->cancelled_by.empty()) {
      impl_->cancelled_by = "the controller (stopping)";
    }
    impl_->cancel_execution = true;
  }
  impl_->exec_cv.notify_all();
  impl_->cv.notify_all();
  if (impl_->worker_thread.joinable()) impl_->worker_thread.join();
  if (impl_->loop_thread.joinable()) impl_->loop_thread.join();
  impl_->supervisor->shutdown();
  impl_->podman_supervisor->shutdown();
}

void Controller::request_poll() {
  {
    std::lock_guard lock(impl_->mu);
    impl_->poll_requested = true;
  }
  impl_->cv.notify_all();
}

// ---- loop
// ----------------------------------------------------------------------------------------

bool Controller::Impl::stop_requested() {
  std::lock_guard lock(mu);
  return stopping;
}

bool Controller::Impl::wait_until(core::TimePoint until) {
  std::unique_lock lock(mu);
  while (!stopping) {
    const auto left = until - clock.now();
    if (left <= core::Duration::zero()) break;
    cv.wait_for(lock, std::min<std::chrono::nanoseconds>(left, std::chrono::milliseconds(100)));
  }
  return !stopping;
}

bool Controller::Impl::wait_for_work(core::TimePoint until) {
  std::unique_lock lock(mu);
  while (!stopping && !poll_requested && ready_releases.empty()) {
    const auto left = until - clock.now();
    if (left <= core::Duration::zero()) break;
    // The clock may be simulated, so wait in short real slices and re-read it.
    cv.wait_for(lock, std::min<std::chrono::nanoseconds>(left, std::chrono::milliseconds(100)));
  }
  return !stopping;
}

void Controller::Impl::run_loop() {
  // The source is fetched every poll interval and when asked (webhook, POST /v1/poll); a wake-up
  // for other work (a release the worker handed over) does not fetch, so a webhook-only setup
  // (--poll 1h) builds exactly the commits it was told about.
  core::TimePoint next_fetch = clock.now();
  while (!stop_requested()) {
    bool fetch = false;
    {
      std::lock_guard lock(mu);
      fetch = poll_requested;
      poll_requested = false;
    }
    const auto now = clock.now();
    if (now >= next_fetch) fetch = true;
    if (fetch) next_fetch = now + opts.poll_interval;
    tick(fetch);
    if (!wait_for_work(next_fetch)) break;
  }
}

void Controller::Impl::on_task_event(const runtime::TaskEvent& e) {
  auto log = core::logger();
  const std::string what = "runtime: task " + e.task.task_id + " of " + e.task.service + " (pid " +
                           std::to_string(e.task.pid) + ")";
  switch (e.kind) {
    case runtime::TaskEventKind::Exited:
      log->warn("{} exited unexpectedly: {}", what, e.detail);
      break;
    case runtime::TaskEventKind::Unhealthy:
      log->warn("{} is unhealthy: {}", what, e.detail);
      break;
    case runtime::TaskEventKind::Restarted:
      log->info("{} restarted: {}", what, e.detail);
      if (auto r = store->update_task_process(e.task.task_id, e.task.pid, e.task.start_time); !r) {
        log->error("store: {}", r.error().message);
      }
      break;
    case runtime::TaskEventKind::Failed:
      log->error("{} failed: {}", what, e.detail);
      if (auto r = store->update_task_status(e.task.task_id, store::TaskStatus::Failed); !r) {
        log->error("store: {}", r.error().message);
      }
      routes_dirty = true;
      {
        std::lock_guard lock(mu);
        poll_requested = true;  // wake the loop to republish now
      }
      cv.notify_all();
      break;
  }
}

void Controller::Impl::tick(bool fetch) {
  // A task the supervisor gave up on (crash loop) leaves the routes.
  bool routes_changed = routes_dirty.exchange(false);
  // The proxy outlives us, but if it died, start it again: it reloads its persisted snapshot.
  if (!proxy_admin->health()) {
    core::logger()->error("proxy: not answering on {}; restarting it", admin_socket().string());
    if (auto r = ensure_proxy(); !r) core::logger()->error("proxy: {}", r.error().message);
    routes_changed = true;
  }
  if (routes_changed) {
    if (auto r = publish_routes(); !r) core::logger()->error("proxy: {}", r.error().message);
  }
  run_redeploys();
  if (fetch) poll_source();
  deploy_ready_releases();
}

void Controller::Impl::poll_source() {
  auto head = source->fetch_head();
  if (!head) {
    core::logger()->warn("source: fetch of {} failed: {}", opts.repo, head.error().message);
    return;
  }
  if (!head->has_value()) return;  // branch missing; the source logged why
  const source::Commit& commit = **head;
  auto last = store->get_meta("source.last_commit");
  if (last.ok() && last->has_value() && **last == commit.sha) return;
  core::logger()->info("source: new commit {} on {}: {}", commit.short_sha, opts.branch,
                       commit.message);
  if (auto r = store->set_meta("source.last_commit", commit.sha); !r) {
    core::logger()->error("store: {}", r.error().message);
    return;
  }
  enqueue_execution(commit);
}

// ---- read side
// -----------------------------------------------------------------------------------

namespace {

json opt_time(const std::optional<int64_t>& t) {
  if (!t) return nullptr;
  return core::format_rfc3339(core::from_unix_ms(*t));
}

json execution_json(const store::Execution& e) {
  return json{{"id", e.id},
              {"commit", e.commit_sha.substr(0, 7)},
              {"commit_sha", e.commit_sha},
              {"branch", e.branch},
              {"status", std::string(store::to_string(e.status))},
              {"message", e.message},
              {"created_at", core::format_rfc3339(core::from_unix_ms(e.created_at))},
              {"started_at", opt_time(e.started_at)},
              {"finished_at", opt_time(e.finished_at)}};
}

core::Error internal(const core::Error& e) {
  return core::Error(e.message, core::ErrorKind::Internal);
}

}  // namespace

core::Result<json> Controller::status(const std::string& service_filter) const {
  auto& impl = *impl_;
  json out;
  json proxy_info{{"status", "unreachable"}, {"version", nullptr}};
  std::optional<proxy::RouteSnapshot> snapshot;
  if (auto snap = impl.proxy_admin->get_snapshot(); snap) {
    snapshot = *snap;
    proxy_info = json{{"status", "ok"}, {"version", snap->version}};
    if (auto h = impl.proxy_admin->health(); h) proxy_info["pid"] = h->pid;
  }
  out["proxy"] = proxy_info;
  std::map<std::string, std::string> health;
  if (auto states = impl.proxy_admin->target_health(); states) health = *states;

  auto execs = impl.store->list_executions(1);
  if (!execs) return internal(execs.error());
  out["last_execution"] = execs->empty() ? json(nullptr) : execution_json(execs->front());

  auto names_meta = impl.store->get_meta("services");
  if (!names_meta) return internal(names_meta.error());
  std::vector<std::string> names;
  if (names_meta->has_value()) {
    json n = json::parse(**names_meta, nullptr, false);
    if (n.is_array()) names = n.get<std::vector<std::string>>();
  }
  if (!service_filter.empty() &&
      std::find(names.begin(), names.end(), service_filter) == names.end()) {
    return core::Error("no service named \"" + service_filter + "\"", core::ErrorKind::NotFound);
  }
  out["webhooks"] = impl.webhook_counts_json();
  const notify::Stats ns = impl.notifier->stats();
  out["notifications"] =
      json{{"queued", ns.queued},   {"delivered", ns.delivered}, {"failed", ns.failed},
           {"dropped", ns.dropped}, {"retries", ns.retries},     {"pending", ns.pending}};
  out["unaccounted_tasks"] = json::array();
  {
    std::lock_guard lock(impl.unaccounted_mu);
    for (const auto& p : impl.unaccounted) {
      out["unaccounted_tasks"].push_back(json{{"pid", p.pid}, {"task_id", p.task_id}});
    }
  }
  out["services"] = json::array();
  for (const auto& name : names) {
    if (!service_filter.empty() && name != service_filter) continue;
    json s{{"name", name}};
    auto live = impl.store->live(name);
    if (!live) return internal(live.error());
    s["live"] = nullptr;
    s["listeners"] = json::object();
    if (live->has_value()) {
      auto rel = impl.store->get_release((*live)->release_id);
      if (rel && rel->has_value()) {
        s["live"] = json{{"release", (**rel).id},
                         {"commit", (**rel).commit_sha.substr(0, 7)},
                         {"artifact", (**rel).artifact_digest},
                         {"color", (*live)->color},
                         {"since", core::format_rfc3339(core::from_unix_ms((*live)->updated_at))}};
        if (auto cfg = impl.config_at((**rel).commit_sha); cfg) {
          if (const auto* svc = (*cfg)->find_service(name)) {
            s["listeners"]["production"] = svc->listeners.production.address;
            if (svc->listeners.test) s["listeners"]["test"] = svc->listeners.test->address;
          }
        }
      }
    }
    // Traffic as the proxy applies it: production listener weights by color.
    s["traffic"] = json::object();
    if (snapshot) {
      for (const auto& l : snapshot->listeners) {
        if (l.name != name + "/production") continue;
        for (const auto& r : l.routes) {
          const std::string prefix = name + "-";
          std::string color = r.target_group.rfind(prefix, 0) == 0
                                  ? r.target_group.substr(prefix.size())
                                  : r.target_group;
          s["traffic"][color] = r.weight / 100.0;
        }
      }
    }
    auto active = impl.store->active_deployment(name);
    auto recent = impl.store->list_deployments(name, 1);
    std::optional<store::Deployment> dep;
    if (active && active->has_value()) {
      dep = **active;
    } else if (recent && !recent->empty()) {
      dep = recent->front();
    }
    s["deployment"] = nullptr;
    if (dep) {
      std::string commit;
      if (auto rel = impl.store->get_release(dep->release_id); rel && rel->has_value()) {
        commit = (**rel).commit_sha.substr(0, 7);
      }
      s["deployment"] = json{{"id", dep->id},
                             {"release", dep->release_id},
                             {"commit", commit},
                             {"phase", dep->phase},
                             {"status", std::string(store::to_string(dep->status))},
                             {"reason", dep->reason},
                             {"state", json::parse(dep->state_json, nullptr, false)}};
    }
    s["tasks"] = json::array();
    auto tasks = impl.store->list_running_tasks(name);
    if (!tasks) return internal(tasks.error());
    for (const auto& t : *tasks) {
      auto h = health.find(t.task_id);
      json tj{{"id", t.task_id},
              {"color", t.color},
              {"pid", t.pid},
              {"port", t.port},
              {"release", t.release_id},
              {"health", h == health.end() ? "unregistered" : h->second},
              {"liveness", "unsupervised"},
              {"restarts", 0}};
      if (auto sup = impl.supervisor_of(t.task_id).state(t.task_id)) {
        tj["liveness"] = std::string(runtime::to_string(sup->liveness));
        tj["restarts"] = sup->restarts;
        if (!sup->last_exit.empty()) tj["last_exit"] = sup->last_exit;
      }
      s["tasks"].push_back(std::move(tj));
    }
    out["services"].push_back(std::move(s));
  }
  return out;
}

core::Result<json> Controller::history(const std::string& service) const {
  auto deps = impl_->store->list_deployments(service, 100);
  if (!deps) return internal(deps.error());
  json out{{"service", service}, {"deployments", json::array()}};
  for (const auto& d : *deps) {
    std::string commit;
    if (auto rel = impl_->store->get_release(d.release_id); rel && rel->has_value()) {
      commit = (**rel).commit_sha.substr(0, 7);
    }
    out["deployments"].push_back(
        json{{"id", d.id},
             {"release", d.release_id},
             {"previous_release", d.previous_release_id ? json(*d.previous_release_id) : json()},
             {"commit", commit},
             {"status", std::string(store::to_string(d.status))},
             {"phase", d.phase},
             {"reason", d.reason},
             {"created_at", core::format_rfc3339(core::from_unix_ms(d.created_at))},
             {"finished_at", opt_time(d.finished_at)}});
  }
  return out;
}

core::Result<json> Controller::audit(int64_t after_seq, int limit) const {
  auto list = impl_->store->list_audit(after_seq, limit);
  if (!list) return internal(list.error());
  json out{{"entries", json::array()}};
  for (const auto& a : *list) {
    json detail = json::parse(a.detail_json.empty() ? "null" : a.detail_json, nullptr, false);
    if (detail.is_discarded()) detail = a.detail_json;
    out["entries"].push_back(json{{"seq", a.seq},
                                  {"time", core::format_rfc3339(core::from_unix_ms(a.time))},
                                  {"actor", a.actor},
                                  {"action", a.action},
                                  {"subject", a.subject},
                                  {"detail", std::move(detail)},
                                  {"hash", a.hash}});
  }
  auto verified = impl_->store->verify_audit_chain();
  out["chain"] = verified ? json{{"verified", true}}
                          : json{{"verified", false}, {"error", verified.error().message}};
  return out;
}

core::Result<json> Controller::executions(int limit) const {
  auto list = impl_->store->list_executions(limit);
  if (!list) return internal(list.error());
  json out{{"executions", json::array()}};
  for (const auto& e : *list) out["executions"].push_back(execution_json(e));
  return out;
}

core::Result<json> Controller::execution(const std::string& id) const {
  auto e = impl_->store->get_execution(id);
  if (!e) return internal(e.error());
  if (!e->has_value()) {
    return core::Error("no execution with id \"" + id + "\"", core::ErrorKind::NotFound);
  }
  json out = execution_json(**e);
  out["stages"] = json::array();
  if (auto stages = impl_->store->list_stage_runs(id); stages) {
    for (const auto& s : *stages) {
      out["stages"].push_back(json{{"index", s.index},
                                   {"name", s.name},
                                   {"status", std::string(store::to_string(s.status))},
                                   {"exit_code", s.exit_code ? json(*s.exit_code) : json()},
                                   {"message", s.message},
                                   {"started_at", opt_time(s.started_at)},
                                   {"finished_at", opt_time(s.finished_at)}});
    }
  }
  return out;
}

core::Result<json> Controller::logs(const std::string& execution_id, int64_t after_seq,
                                    int limit) const {
  auto e = impl_->store->get_execution(execution_id);
  if (!e) return internal(e.error());
  if (!e->has_value()) {
    return core::Error("no execution with id \"" + execution_id + "\"", core::ErrorKind::NotFound);
  }
  auto lines = impl_->store->read_logs(execution_id, after_seq, std::clamp(limit, 1, 10000));
  if (!lines) return internal(lines.error());
  json out{{"execution", execution_id},
           {"status", std::string(store::to_string((**e).status))},
           {"finished", store::is_terminal((**e).status)},
           {"lines", json::array()}};
  for (const auto& l : *lines) {
    out["lines"].push_back(json{{"seq", l.seq},
                                {"stage", l.stage},
                                {"stream", std::string(store::to_string(l.stream))},
                                {"time", core::format_rfc3339(core::from_unix_ms(l.time))},
                                {"text", l.text}});
  }
  return out;
}

core::Result<json> Controller::cancel(const std::string& execution_id, const std::string& who) {
  Impl& impl = *impl_;
  const std::string actor = who.empty() ? "operator" : who;
  auto e = impl.store->get_execution(execution_id);
  if (!e) return internal(e.error());
  if (!e->has_value()) {
    return core::Error("no execution with id \"" + execution_id + "\"", core::ErrorKind::NotFound);
  }
  json out{{"execution", execution_id}, {"commit", (**e).commit_sha.substr(0, 7)}};
  {
    std::lock_guard lock(impl.exec_mu);
    if (impl.queued_execution && impl.queued_execution->id == execution_id) {
      impl.queued_execution.reset();
      (void)impl.store->update_execution_status(execution_id, store::ExecutionStatus::Cancelled,
                                                "cancelled by " + actor + " before it started");
      out["status"] = "cancelled";
      out["was"] = "queued";
    } else if (impl.running_execution == execution_id) {
      if (impl.cancelled_by.empty()) impl.cancelled_by = actor;
      impl.cancel_execution = true;
      out["status"] = "cancelling";
      out["was"] = "running";
    }
  }
  if (!out.contains("status")) {
    return core::Error("execution " + execution_id + " is " +
                           std::string(store::to_string((**e).status)) +
                           "; only a queued or running execution can be cancelled",
                       core::ErrorKind::Conflict);
  }
  impl.exec_cv.notify_all();
  core::logger()->warn("execution {} ({}) cancelled by {}", execution_id,
                       (**e).commit_sha.substr(0, 7), actor);
  (void)impl.store->append_audit(actor, "execution.cancel", "execution:" + execution_id,
                                 out.dump());
  return out;
}

core::Result<json> Controller::decide_approval(const std::string& execution_id, bool approve,
                                               const std::string& who, const std::string& comment) {
  Impl& impl = *impl_;
  const std::string actor = who.empty() ? "operator" : who;
  auto e = impl.store->get_execution(execution_id);
  if (!e) return internal(e.error());
  if (!e->has_value()) {
    return core::Error("no execution with id \"" + execution_id + "\"", core::ErrorKind::NotFound);
  }
  json out{{"execution", execution_id},
           {"commit", (**e).commit_sha.substr(0, 7)},
           {"decision", approve ? "approved" : "rejected"},
           {"user", actor},
           {"comment", comment}};
  {
    std::lock_guard lock(impl.exec_mu);
    if (!impl.approval || impl.approval->execution_id != execution_id || impl.approval->decision) {
      return core::Error("execution " + execution_id + " is not waiting for approval (it is " +
                             std::string(store::to_string((**e).status)) + ")",
                         core::ErrorKind::Conflict);
    }
    out["stage"] = impl.approval->stage;
    using Kind = pipeline::ApprovalDecision::Kind;
    impl.approval->decision =
        pipeline::ApprovalDecision{approve ? Kind::Approved : Kind::Rejected, actor, comment};
    // Audited while the decision is taken, so the trail has it before the pipeline acts on it.
    (void)impl.store->append_audit(actor, approve ? "approval.approve" : "approval.reject",
                                   "execution:" + execution_id, out.dump());
  }
  impl.exec_cv.notify_all();
  core::logger()->info("execution {}: stage {} {} by {}{}", execution_id,
                       out["stage"].get<std::string>(), approve ? "approved" : "rejected", actor,
                       comment.empty() ? "" : ": " + comment);
  return out;
}

core::Result<nlohmann::json> Controller::operate(const std::string& service,
                                                 const std::string& action,
                                                 const std::string& who) {
  Impl& impl = *impl_;
  deploy::EventKind kind;
  if (action == "rollback") {
    kind = deploy::EventKind::Rollback;
  } else if (action == "abort") {
    kind = deploy::EventKind::Abort;
  } else if (action == "promote") {
    kind = deploy::EventKind::Promote;
  } else if (action == "retry") {
    kind = deploy::EventKind::Start;  // not an event of a running deployment: a new one
  } else {
    return core::Error(
        "unknown action \"" + action + "\"; expected rollback, abort, promote or retry",
        core::ErrorKind::Invalid);
  }
  auto active = impl.store->active_deployment(service);
  if (!active) return internal(active.error());
  auto live = impl.store->live(service);
  if (!live) return internal(live.error());
  if (!active->has_value() && !live->has_value()) {
    return core::Error("no service named " + service + " has been deployed",
                       core::ErrorKind::NotFound);
  }
  const std::string actor = who.empty() ? "operator" : who;
  json out{{"service", service}, {"action", action}};
  if (action == "retry") {
    // Deploys the release of the latest deployment again, with its traffic schedule, when that
    // deployment failed, rolled back or was stopped (CodeDeploy's "retry deployment").
    if (active->has_value()) {
      return core::Error("deployment " + (**active).id + " of " + service +
                             " is in progress; retry is for a deployment that ended without "
                             "succeeding",
                         core::ErrorKind::Conflict);
    }
    auto deps = impl.store->list_deployments(service, 1);
    if (!deps) return internal(deps.error());
    if (deps->empty()) {
      return core::Error("no deployment of " + service + " to retry", core::ErrorKind::NotFound);
    }
    const store::Deployment& last = deps->front();
    if (last.status == store::DeploymentStatus::Succeeded ||
        last.status == store::DeploymentStatus::Superseded) {
      return core::Error("the latest deployment of " + service + " (" + last.id + ") is " +
                             std::string(store::to_string(last.status)) + "; nothing to retry",
                         core::ErrorKind::Conflict);
    }
    {
      std::lock_guard lock(impl.mu);
      impl.redeploy_requests[service] = {.release_id = last.release_id, .why = "retry"};
      impl.poll_requested = true;
    }
    impl.cv.notify_all();
    out["release"] = last.release_id;
    out["retries"] = last.id;
    out["status"] = "redeploying release " + last.release_id + " of " + last.id;
    (void)impl.store->append_audit(actor, "deploy.retry", "service:" + service, out.dump());
    return out;
  }
  if (active->has_value()) {
    const std::string& id = (**active).id;
    {
      std::lock_guard lock(impl.mu);
      impl.operator_events[service].push_back({.kind = kind, .detail = "(" + actor + ")"});
    }
    impl.cv.notify_all();
    out["deployment"] = id;
    out["status"] = "accepted";
  } else {
    if (kind != deploy::EventKind::Rollback) {
      return core::Error("no deployment of " + service + " is in progress",
                         core::ErrorKind::Conflict);
    }
    // The release before the live one: the previous release of the deployment that made it live.
    auto deps = impl.store->list_deployments(service, 50);
    if (!deps) return internal(deps.error());
    std::optional<std::string> previous;
    for (const auto& d : *deps) {
      if (d.release_id == (*live)->release_id && d.status == store::DeploymentStatus::Succeeded) {
        previous = d.previous_release_id;
        break;
      }
    }
    if (!previous) {
      return core::Error("no previous release of " + service + " to roll back to",
                         core::ErrorKind::Conflict);
    }
    {
      std::lock_guard lock(impl.mu);
      impl.redeploy_requests[service] = {
          .release_id = *previous, .fast_path = true, .why = "rollback"};
      impl.poll_requested = true;
    }
    impl.cv.notify_all();
    out["release"] = *previous;
    out["status"] = "redeploying the previous release";
  }
  (void)impl.store->append_audit(actor, "deploy." + action, "service:" + service, out.dump());
  return out;
}

core::Result<json> Controller::task_definitions(const std::string& service) const {
  auto defs = impl_->store->list_task_definitions(service, 0);
  if (!defs) return internal(defs.error());
  if (defs->empty()) {
    return core::Error("service \"" + service + "\" has no task definition yet",
                       core::ErrorKind::NotFound);
  }
  json out{{"service", service}, {"revisions", json::array()}};
  for (const auto& d : *defs) {
    out["revisions"].push_back(
        json{{"revision", d.revision},
             {"name", service + ":" + std::to_string(d.revision)},
             {"digest", d.digest},
             {"commit", d.commit_sha.substr(0, 7)},
             {"commit_sha", d.commit_sha},
             {"created_at", core::format_rfc3339(core::from_unix_ms(d.created_at))},
             {"definition", json::parse(d.definition_json, nullptr, false)}});
  }
  return out;
}

core::Result<json> Controller::task_definition_diff(const std::string& service, int64_t from,
                                                    int64_t to) const {
  auto get = [&](int64_t rev) -> core::Result<json> {
    auto d = impl_->store->get_task_definition(service, rev);
    if (!d) return internal(d.error());
    if (!d->has_value()) {
      return core::Error("no task definition " + service + ":" + std::to_string(rev),
                         core::ErrorKind::NotFound);
    }
    return json::parse((**d).definition_json, nullptr, false);
  };
  auto a = get(from);
  if (!a) return a.error();
  auto b = get(to);
  if (!b) return b.error();
  return json{{"service", service},
              {"from", service + ":" + std::to_string(from)},
              {"to", service + ":" + std::to_string(to)},
              {"changes", runtime::diff_task_definitions(*a, *b)}};
}

core::Result<json> Controller::task_logs(const std::string& service, const std::string& task_id,
                                         std::optional<int64_t> offset, int tail_lines) const {
  std::vector<store::TaskRecord> tasks;
  if (!task_id.empty()) {
    auto t = impl_->store->get_task(task_id);
    if (!t) return internal(t.error());
    if (!t->has_value() || (**t).service != service) {
      return core::Error("service " + service + " has no task \"" + task_id + "\"",
                         core::ErrorKind::NotFound);
    }
    tasks.push_back(**t);
  } else {
    if (offset) return core::Error("offset needs a task (?task=ID)");
    auto running = impl_->store->list_running_tasks(service);
    if (!running) return internal(running.error());
    tasks = *running;
  }
  json out{{"service", service}, {"tasks", json::array()}};
  for (const auto& t : tasks) {
    json tj{{"id", t.task_id},
            {"color", t.color},
            {"status", std::string(store::to_string(t.status))},
            {"pid", t.pid},
            {"log_path", t.log_path}};
    std::error_code ec;
    const auto size = static_cast<int64_t>(std::filesystem::file_size(t.log_path, ec));
    const int64_t end = ec ? 0 : size;
    if (offset) {
      int64_t from = *offset;
      tj["rotated"] = from > end;  // truncated by rotation since the last read: start again
      if (from > end) from = 0;
      constexpr int64_t kMaxChunk = 1 << 20;
      std::string text;
      if (end > from) {
        std::ifstream in(t.log_path, std::ios::binary);
        in.seekg(from);
        text.resize(static_cast<size_t>(std::min(end - from, kMaxChunk)));
        in.read(text.data(), static_cast<std::streamsize>(text.size()));
        text.resize(static_cast<size_t>(in.gcount()));
      }
      tj["text"] = text;  // the API dumps invalid UTF-8 as U+FFFD
      tj["offset"] = from + static_cast<int64_t>(text.size());
    } else {
      auto lines =
          runtime::tail_log(t.log_path, static_cast<size_t>(std::clamp(tail_lines, 1, 10000)));
      tj["lines"] = lines ? json(*lines) : json::array();
      tj["offset"] = end;
    }
    out["tasks"].push_back(std::move(tj));
  }
  return out;
}

}  // namespace cutover::controller
