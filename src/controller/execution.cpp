// One pipeline execution: exact-commit checkout, cutover.yaml validation, stages, artifacts,
// releases, then a deployment per service.
#include <filesystem>
#include <mutex>

#include <nlohmann/json.hpp>

#include "controller/internal.hpp"
#include "core/duration.hpp"
#include "core/log.hpp"
#include "core/process.hpp"
#include "pipeline/pipeline.hpp"
#include "runtime/task_definition.hpp"

namespace cutover::controller {

using nlohmann::json;

namespace {

// Buffers log lines and writes them to the store in batches (one transaction per batch): when 200
// lines are waiting, on flush(), and every 250 ms from its own thread, so that a stage that
// prints a line and then works quietly shows it live (`cutover logs -f`).
class LogSink {
 public:
  LogSink(store::Store& st, std::string execution_id)
      : store_(st), execution_id_(std::move(execution_id)), flusher_([this] { run_flusher(); }) {}
  ~LogSink() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    flusher_.join();
    flush();
  }
  LogSink(const LogSink&) = delete;
  LogSink& operator=(const LogSink&) = delete;

  void add(const std::string& stage, store::LogStream stream, std::string_view text) {
    bool full = false;
    {
      std::lock_guard lock(mu_);
      lines_.push_back({execution_id_, stage, stream, std::string(text)});
      full = lines_.size() >= 200;
    }
    if (full) flush();
  }
  void flush() {
    // One writer at a time keeps the lines in order in the store.
    std::lock_guard write(write_mu_);
    std::vector<store::LogAppend> batch;
    {
      std::lock_guard lock(mu_);
      batch.swap(lines_);
    }
    if (batch.empty()) return;
    if (auto r = store_.append_logs(batch); !r) {
      core::logger()->warn("store: dropping {} log lines of {}: {}", batch.size(), execution_id_,
                           r.error().message);
    }
  }

 private:
  void run_flusher() {
    std::unique_lock lock(mu_);
    while (!stopping_) {
      cv_.wait_for(lock, std::chrono::milliseconds(250));
      if (stopping_ || lines_.empty()) continue;
      lock.unlock();
      flush();
      lock.lock();
    }
  }

  store::Store& store_;
  std::string execution_id_;
  std::mutex write_mu_;  // held while a batch is written
  std::mutex mu_;        // guards lines_ and stopping_
  std::condition_variable cv_;
  std::vector<store::LogAppend> lines_;
  bool stopping_ = false;
  std::thread flusher_;  // last: starts after the members it uses
};

}  // namespace

void Controller::Impl::enqueue_execution(const source::Commit& commit) {
  auto log = core::logger();
  store::Execution e;
  e.commit_sha = commit.sha;
  e.branch = opts.branch;
  e.status = store::ExecutionStatus::Queued;
  auto inserted = store->insert_execution(e);
  if (!inserted) {
    log->error("store: cannot record an execution for {}: {}", commit.short_sha,
               inserted.error().message);
    return;
  }
  {
    std::lock_guard lock(exec_mu);
    if (queued_execution) {
      // Newest wins: the commit still waiting will never be built.
      const std::string message = "superseded by commit " + commit.short_sha + " (execution " +
                                  inserted->id + ") before it started";
      (void)store->update_execution_status(queued_execution->id, store::ExecutionStatus::Superseded,
                                           message);
      log->info("execution {} ({}) {}", queued_execution->id, queued_execution->commit.short_sha,
                message);
    }
    queued_execution = QueuedExecution{inserted->id, commit};
    if (!running_execution.empty()) {
      log->info("execution {} ({}) queued behind {}", inserted->id, commit.short_sha,
                running_execution);
    }
  }
  exec_cv.notify_all();
}

void Controller::Impl::run_worker() {
  while (true) {
    QueuedExecution next;
    {
      std::unique_lock lock(exec_mu);
      exec_cv.wait(lock, [&] { return worker_stopping || queued_execution.has_value(); });
      if (worker_stopping) return;
      next = std::move(*queued_execution);
      queued_execution.reset();
      running_execution = next.id;
      cancelled_by.clear();
      cancel_execution = false;
    }
    run_execution(next.id, next.commit);
    {
      std::lock_guard lock(exec_mu);
      running_execution.clear();
      approval.reset();
    }
  }
}

pipeline::ApprovalDecision Controller::Impl::await_approval(const std::string& execution_id,
                                                            int index, const std::string& stage,
                                                            core::TimePoint deadline,
                                                            core::Duration timeout) {
  using Kind = pipeline::ApprovalDecision::Kind;
  const std::string until = core::format_rfc3339(
      clock.wall() + std::chrono::duration_cast<core::Duration>(deadline - clock.now()));
  (void)store->update_stage_status(execution_id, index, store::StageStatus::Waiting, std::nullopt,
                                   "waiting for approval until " + until);
  (void)store->update_execution_status(
      execution_id, store::ExecutionStatus::Running,
      "waiting for approval (stage " + stage + ", until " + until + ")");
  core::logger()->info("execution {}: stage {} waiting for approval until {}", execution_id, stage,
                       until);
  std::optional<pipeline::ApprovalDecision> decision;
  {
    std::unique_lock lock(exec_mu);
    approval = ApprovalWait{execution_id, index, stage, std::nullopt};
    while (true) {
      if (approval->decision) {
        decision = approval->decision;
        break;
      }
      if (cancel_execution || worker_stopping) {
        decision = pipeline::ApprovalDecision{Kind::Cancelled, cancelled_by, ""};
        break;
      }
      const auto left = deadline - clock.now();
      if (left <= core::Duration::zero()) {
        decision = pipeline::ApprovalDecision{Kind::TimedOut, "", ""};
        break;
      }
      // The clock may be simulated: wait in short real slices and read it again.
      exec_cv.wait_for(lock,
                       std::min<std::chrono::nanoseconds>(left, std::chrono::milliseconds(100)));
    }
    approval.reset();
  }
  if (decision->kind == Kind::TimedOut) {
    (void)store->append_audit(
        "controller", "approval.timeout", "execution:" + execution_id,
        json{{"stage", stage}, {"timeout", core::format_duration(timeout)}}.dump());
  }
  (void)store->update_execution_status(execution_id, store::ExecutionStatus::Running);
  return *decision;
}

void Controller::Impl::run_execution(const std::string& id, const source::Commit& commit) {
  auto log = core::logger();
  const int64_t started_unix_ms = core::to_unix_ms(clock.wall());
  LogSink sink(*store, id);
  const auto fail = [&](const std::string& message) {
    sink.add("pipeline", store::LogStream::System, message);
    sink.flush();
    std::string who;
    if (cancel_execution) {
      std::lock_guard lock(exec_mu);
      who = cancelled_by;
    }
    if (!who.empty()) {
      // Cancelled by an operator: the execution says so, whatever stage it was in.
      (void)store->update_execution_status(id, store::ExecutionStatus::Cancelled,
                                           "cancelled by " + who + " (" + message + ")");
      log->warn("execution {} ({}) cancelled by {}", id, commit.short_sha, who);
      return;
    }
    (void)store->update_execution_status(id, store::ExecutionStatus::Failed, message);
    log->warn("execution {} ({}) failed: {}", id, commit.short_sha, message);
    notify_execution("execution.failed", id, commit.sha, "failed", message);
  };
  (void)store->update_execution_status(id, store::ExecutionStatus::Running);
  log->info("execution {} started for {} ({})", id, commit.short_sha, commit.message);

  // The configuration of exactly this commit. An invalid file fails the execution; whatever is
  // live keeps serving.
  auto text = source->read_file(commit.sha, "cutover.yaml");
  if (!text)
    return fail("no usable cutover.yaml at the root of " + commit.short_sha + ": " +
                text.error().message);
  // This host serves the release, so the TLS files the config names must be readable here: a
  // missing certificate fails the execution now rather than the deployment later.
  auto cfg = config::parse_config(*text, "cutover.yaml", config::ParseOptions{.check_files = true});
  if (!cfg) return fail("cutover.yaml is invalid:\n" + cfg.error().message);
  if (auto r = store->set_meta("config/" + commit.sha, *text); !r) return fail(r.error().message);
  configure_notifications(**cfg);
  notify_execution("execution.started", id, commit.sha, "running");

  const std::filesystem::path workspace = opts.state_dir / "workspaces" / id;
  std::error_code ec;
  std::filesystem::remove_all(workspace, ec);
  if (auto r = source->checkout(commit.sha, workspace); !r) {
    return fail("checkout of " + commit.short_sha + " failed: " + r.error().message);
  }
  struct Cleanup {
    std::filesystem::path p;
    ~Cleanup() {
      std::error_code ignored;
      std::filesystem::remove_all(p, ignored);
    }
  } cleanup{workspace};

  const auto& stages = (*cfg)->pipeline.stages;
  for (size_t i = 0; i < stages.size(); ++i) {
    store::StageRun run;
    run.execution_id = id;
    run.index = static_cast<int>(i);
    run.name = stages[i].name;
    (void)store->upsert_stage_run(run);
  }

  pipeline::ExecutionContext ctx;
  ctx.execution_id = id;
  ctx.commit_sha = commit.sha;
  ctx.commit_short = commit.short_sha;
  ctx.branch = opts.branch;
  ctx.workspace = workspace;
  ctx.cache_root = opts.state_dir / "cache";
  ctx.base_env = core::minimal_environment();
  ctx.clock = &clock;
  ctx.resolve_secret = [this](const std::string& name) { return secrets->get(name); };
  ctx.await_approval = [this, &id, &sink](int index, const std::string& stage,
                                          core::TimePoint deadline, core::Duration timeout) {
    sink.flush();
    return await_approval(id, index, stage, deadline, timeout);
  };
  // `scan: secrets` looks at what came after the last commit that passed its pipeline.
  ctx.repository = opts.state_dir / "source";
  ctx.scan_cache_dir = opts.state_dir / "scan-cache";
  if (auto recent = store->list_executions(200); recent) {
    for (const auto& past : *recent) {
      if (past.id != id && past.status == store::ExecutionStatus::Succeeded) {
        ctx.scan_since = past.commit_sha;
        break;
      }
    }
  }

  pipeline::Observer obs;
  obs.on_stage_start = [&](int index, const std::string& name) {
    sink.flush();
    (void)store->update_stage_status(id, index, store::StageStatus::Running);
    log->info("execution {}: stage {} started", id, name);
    if (stages[static_cast<size_t>(index)].kind == config::StageKind::Approval) {
      notify_execution("execution.waiting_for_approval", id, commit.sha, "waiting");
    }
  };
  obs.on_log = [&](const std::string& stage, std::string_view line) {
    sink.add(stage, store::LogStream::Stdout, line);
  };
  obs.on_stage_end = [&](int index, const std::string& name, const pipeline::StageOutcome& out) {
    sink.flush();
    store::StageStatus st = store::StageStatus::Failed;
    switch (out.status) {
      case pipeline::StageStatus::Succeeded:
        st = store::StageStatus::Succeeded;
        break;
      case pipeline::StageStatus::Skipped:
        st = store::StageStatus::Skipped;
        break;
      case pipeline::StageStatus::Cancelled:
        st = store::StageStatus::Cancelled;
        break;
      default:
        st = store::StageStatus::Failed;
        break;
    }
    (void)store->update_stage_status(id, index, st, std::nullopt, out.message);
    if (!out.message.empty()) sink.add(name, store::LogStream::System, out.message);
    log->info("execution {}: stage {} {}{}", id, name, pipeline::to_string(out.status),
              out.message.empty() ? "" : ": " + out.message);
  };
  auto result = pipeline::run_execution(stages, ctx, *registry, obs, &cancel_execution);
  sink.flush();
  if (!result) return fail(result.error().message);
  if (!result->succeeded) return fail(result->message);
  // Every artifact this execution put gets its signed provenance statement before any use.
  for (const auto& sr : result->stages) {
    if (!sr.outcome.artifact) continue;
    if (auto r =
            attest_artifact(sr.outcome.artifact->digest, id, commit.sha, sr.name, started_unix_ms);
        !r) {
      return fail(r.error().message);
    }
    sink.add(sr.name, store::LogStream::System,
             "provenance of " + sr.outcome.artifact->digest + " signed");
  }

  // One release per service, from the artifact of the stage it names.
  std::vector<std::pair<const config::Service*, store::Release>> releases;
  for (const auto& svc : (*cfg)->services) {
    const registry::Artifact* art = nullptr;
    for (const auto& sr : result->stages) {
      if (sr.name == svc.artifact && sr.outcome.artifact) art = &*sr.outcome.artifact;
    }
    // A podman service without `artifact:` runs its image alone: its release has no artifact.
    const bool image_only = svc.driver == config::Driver::Podman && svc.artifact.empty();
    if (!art && !image_only)
      return fail("service " + svc.name + ": stage " + svc.artifact + " produced no artifact");
    if (art) {
      if (auto r = registry->tag(svc.name, commit.short_sha, art->digest); !r) {
        return fail("service " + svc.name + ": " + r.error().message);
      }
    }
    store::Release rel;
    rel.service = svc.name;
    rel.commit_sha = commit.sha;
    rel.execution_id = id;
    rel.artifact_digest = art ? art->digest : "";
    rel.artifact_path = art ? art->path.string() : "";
    // Every change of the service's task makes a new immutable revision ("web:7").
    auto def =
        store->register_task_definition(svc.name, runtime::task_definition(svc).dump(), commit.sha);
    if (!def) return fail("service " + svc.name + ": " + def.error().message);
    rel.task_revision = svc.name + ":" + std::to_string(def->revision);
    auto saved = store->insert_release(rel);
    if (!saved) return fail(saved.error().message);
    releases.emplace_back(&svc, *saved);
    sink.add("pipeline", store::LogStream::System,
             "release " + saved->id + " of " + svc.name + ": " +
                 (art ? art->digest : "image only (no artifact)") + ", task definition " +
                 rel.task_revision);
  }
  // Remember every service ever configured (status lists them).
  std::vector<std::string> names;
  if (auto m = store->get_meta("services"); m && m->has_value()) {
    json n = json::parse(**m, nullptr, false);
    if (n.is_array()) names = n.get<std::vector<std::string>>();
  }
  for (const auto& svc : (*cfg)->services) {
    if (std::find(names.begin(), names.end(), svc.name) == names.end()) names.push_back(svc.name);
  }
  (void)store->set_meta("services", json(names).dump());
  sink.flush();
  (void)store->update_execution_status(id, store::ExecutionStatus::Succeeded);
  log->info("execution {} ({}) succeeded; {} release(s) ready to deploy", id, commit.short_sha,
            releases.size());
  notify_execution("execution.succeeded", id, commit.sha, "succeeded");
  // The loop deploys (it owns the routing and the deployments); the worker only hands over. Only
  // the newest release of a service waits: one already waiting is skipped now (recorded, so that
  // `cutover history` shows it), which also bounds the queue by the number of services.
  std::vector<std::pair<ReadyRelease, store::Release>> skipped;  // (skipped, newer)
  {
    std::lock_guard lock(mu);
    for (const auto& [svc, rel] : releases) {
      ReadyRelease ready{*cfg, rel, ""};
      if (auto active = store->active_deployment(svc->name); active && active->has_value()) {
        ready.behind = (**active).id;
      }
      for (auto it = ready_releases.begin(); it != ready_releases.end();) {
        if (it->release.service != svc->name) {
          ++it;
          continue;
        }
        skipped.emplace_back(std::move(*it), rel);
        it = ready_releases.erase(it);
      }
      ready_releases.push_back(std::move(ready));
    }
  }
  cv.notify_all();
  for (const auto& [old, newer] : skipped) record_skipped(old, newer);
}

}  // namespace cutover::controller
