// Controller internals shared by its source files; not part of the module's interface.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "alarm/alarm.hpp"
#include "config/config.hpp"
#include "controller/controller.hpp"
#include "deploy/deploy.hpp"
#include "notify/notify.hpp"
#include "pipeline/pipeline.hpp"
#include "proxy/admin_client.hpp"
#include "proxy/snapshot.hpp"
#include "registry/registry.hpp"
#include "runtime/podman_driver.hpp"
#include "runtime/runtime.hpp"
#include "runtime/supervisor.hpp"
#include "source/source.hpp"
#include "store/secrets.hpp"
#include "store/store.hpp"

namespace cutover::controller {

inline constexpr const char* kCutoverVersion = "0.1.0";

struct Controller::Impl {
  Options opts;
  core::Clock& clock;
  std::unique_ptr<store::Store> store;
  std::unique_ptr<store::SecretStore> secrets;
  std::unique_ptr<source::GitSource> source;
  std::unique_ptr<registry::Registry> registry;
  std::unique_ptr<registry::SigningKey> provenance_key;  // signs and verifies provenance
  std::mutex registry_mu;  // gc vs. the start of task sets (controller/artifacts.cpp)
  runtime::PortAllocator ports;
  std::unique_ptr<runtime::ProcessDriver> driver;
  std::unique_ptr<runtime::PodmanDriver> podman;  // services with `driver: podman`
  // Restarts, crash loops, liveness and log rotation of every running task; its events are
  // persisted from its thread (on_task_event), so a restarted task's new pid is in the store
  // before anything else happens to it.
  std::unique_ptr<runtime::Supervisor> supervisor;
  std::unique_ptr<runtime::Supervisor> podman_supervisor;  // the same, for containers
  // The supervisor of the driver that runs task_id.
  runtime::Supervisor& supervisor_of(const std::string& task_id);
  std::atomic<bool> routes_dirty{false};  // a task failed: the loop republishes the routes
  // Task processes of this state directory that no stored task accounts for, found at recovery:
  // reported (log, audit, status), never killed. Guarded by unaccounted_mu.
  mutable std::mutex unaccounted_mu;
  std::vector<runtime::FoundProcess> unaccounted;
  std::unique_ptr<proxy::AdminClient> proxy_admin;
  pid_t proxy_pid = 0;  // when this controller started the proxy (our child, to be reaped)

  std::thread loop_thread;
  std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;        // guarded by mu
  bool poll_requested = false;  // guarded by mu
  // Operator events for the deployment in progress, by service (guarded by mu).
  std::map<std::string, std::vector<deploy::Event>> operator_events;
  // Redeploys asked for by an operator when no deployment is in progress (guarded by mu):
  // rollback (the previous release, all at once) and retry (the failed release, on its schedule).
  struct Redeploy {
    std::string release_id;
    bool fast_path = false;
    std::string why;  // "rollback" | "retry", for the log
  };
  std::map<std::string, Redeploy> redeploy_requests;
  // Webhook deliveries by provider (webhooks.cpp): accepted and rejected, guarded by webhook_mu.
  struct WebhookCount {
    uint64_t accepted = 0;
    uint64_t rejected = 0;
  };
  mutable std::mutex webhook_mu;
  std::map<std::string, WebhookCount> webhook_counts;
  nlohmann::json webhook_counts_json() const;

  // ---- notifications (notifications.cpp) -------------------------------------------------------
  std::unique_ptr<notify::Notifier> notifier = std::make_unique<notify::Notifier>();
  // Receivers of cfg.notifications, secrets resolved (a missing one leaves that receiver out).
  void configure_notifications(const config::Config& cfg);
  // Queue "execution.*" / "deployment.*" events (config::kNotificationEvents); never block.
  void notify_execution(const std::string& event, const std::string& execution_id,
                        const std::string& commit_sha, const std::string& status,
                        const std::string& reason = "");
  void notify_deployment(const std::string& event, const deploy::Deployment& d,
                         const store::Release& release, const std::string& status);

  // ---- the pipeline worker (execution.cpp) ------------------------------------------------------
  // One worker thread runs executions one at a time. The loop records each new commit as a queued
  // execution and hands it over here; a newer one supersedes the one still waiting (the queue holds
  // at most one). All fields below are guarded by exec_mu; exec_cv wakes the worker (new work,
  // stop) and an approval wait (decision, cancel, stop).
  struct QueuedExecution {
    std::string id;
    source::Commit commit;
  };
  struct ApprovalWait {
    std::string execution_id;
    int stage_index = 0;
    std::string stage;
    std::optional<pipeline::ApprovalDecision> decision;
  };
  std::thread worker_thread;
  std::mutex exec_mu;
  std::condition_variable exec_cv;
  bool worker_stopping = false;
  std::optional<QueuedExecution> queued_execution;
  std::string running_execution;  // id; empty when the worker is idle
  std::string cancelled_by;       // who cancelled the running execution
  std::optional<ApprovalWait> approval;
  std::atomic<bool> cancel_execution{false};  // the running execution's cancel flag

  // A release the worker built, waiting for the loop to deploy it (guarded by mu). Only the newest
  // per service waits: an older one is recorded as a skipped deployment when a newer one arrives.
  struct ReadyRelease {
    std::shared_ptr<const config::Config> config;
    store::Release release;
    std::string behind;  // the deployment in progress when it arrived, if any
  };
  std::deque<ReadyRelease> ready_releases;  // guarded by mu; oldest first, one per service

  Impl(Options o, core::Clock& c) : opts(std::move(o)), clock(c) {}

  // ---- paths -------------------------------------------------------------------------------
  std::filesystem::path proxy_dir() const { return opts.state_dir / "proxy"; }
  std::filesystem::path admin_socket() const { return proxy_dir() / "admin.sock"; }
  std::filesystem::path task_log_dir() const { return opts.state_dir / "tasks"; }

  // ---- loop (controller.cpp) -----------------------------------------------------------------
  void run_loop();
  // Sleeps until `until` or a stop/poll request. Returns false when stopping.
  // Sleeps until `until` or a stop request. Returns false when stopping.
  bool wait_until(core::TimePoint until);
  // The loop's idle wait: also returns early on a poll request or a release ready to deploy.
  bool wait_for_work(core::TimePoint until);
  bool stop_requested();
  // One turn of the loop: proxy health, redeploys, a fetch of the source when `fetch`, and the
  // releases the worker handed over.
  void tick(bool fetch);
  // Fetches the branch head; a new commit becomes a queued execution for the worker.
  void poll_source();
  // During a deployment (deployer.cpp): keeps fetching every poll interval or on a poll request,
  // so that commits are queued and built while the loop deploys.
  void poll_source_if_due(core::TimePoint& next_fetch);

  void on_task_event(const runtime::TaskEvent& event);

  // ---- recovery (recovery.cpp) ----------------------------------------------------------------
  core::Result<void> recover();
  // Puts a re-adopted task back under supervision with the spec of its release (logged if not).
  void supervise_adopted(const store::TaskRecord& t);

  // ---- executions (execution.cpp) -------------------------------------------------------------
  void run_worker();
  // Records a queued execution of commit and hands it to the worker (superseding a waiting one).
  void enqueue_execution(const source::Commit& commit);
  void run_execution(const std::string& id, const source::Commit& commit);
  // The approval callback of pipeline::ExecutionContext, on the worker thread.
  pipeline::ApprovalDecision await_approval(const std::string& execution_id, int index,
                                            const std::string& stage, core::TimePoint deadline,
                                            core::Duration timeout);
  // Loop thread: deploys the newest ready release of each service; older ones are skipped.
  void deploy_ready_releases();
  // Records `skipped` as a deployment that never ran because `newer` (same service) arrived.
  void record_skipped(const ReadyRelease& skipped, const store::Release& newer);
  // True when a release of service is waiting for the loop (a newer one than what deploys now).
  bool release_waiting(const std::string& service);

  // ---- proxy (proxy_link.cpp) -----------------------------------------------------------------
  core::Result<void> ensure_proxy();
  // Builds the snapshot from the live state of every service (+ extra groups being installed)
  // and puts it. `routing` overrides a service's production weights by color.
  core::Result<void> publish_routes();
  // Per service: weights by color ("blue" -> 10000) and colors whose target group is registered
  // (health-checked) without weight. Kept in memory; rebuilt from the store on restart.
  struct Routing {
    std::shared_ptr<const config::Config> config;  // the config the service runs with
    std::map<std::string, int> weights;            // production weights by color (sum 10000)
    std::vector<std::string> registered;           // colors health-checked without weight
    std::string test_color;          // where the test listener goes; empty = most production weight
    std::set<std::string> draining;  // task ids left out of the snapshot (rolling: being stopped)
  };
  std::map<std::string, Routing> routing;  // loop thread only
  core::Result<std::map<std::string, std::string>> target_states();

  // ---- configs of releases (config_cache.cpp-free: stored in meta) ---------------------------
  core::Result<std::shared_ptr<const config::Config>> config_at(
      const std::string& commit_sha) const;

  // ---- secrets (secrets.cpp) -------------------------------------------------------------------
  // env var -> value for a `secrets:` map; the error names the secret, the variable and `where`
  // ("service web, container app").
  core::Result<std::map<std::string, std::string>> resolve_secrets(
      const std::map<std::string, std::string>& env_to_name, const std::string& where) const;

  // ---- drivers (drivers.cpp)
  // --------------------------------------------------------------------- The driver a service's
  // config asks for, and the one that started a recorded task (the store keeps it per task in meta
  // "task.driver/<task_id>"; absent = process).
  runtime::Driver& driver_for(const config::Service& service);
  runtime::Driver& driver_of(const std::string& task_id);
  core::Result<void> record_driver(const std::string& task_id, const config::Service& service);

  // ---- registry (artifacts.cpp) ---------------------------------------------------------------
  // Signs the provenance statement of an artifact an execution's stage put.
  core::Result<void> attest_artifact(const std::string& digest, const std::string& execution_id,
                                     const std::string& commit_sha, const std::string& stage,
                                     int64_t started_unix_ms);
  // The release's artifact is intact and its execution's provenance statement verifies with the
  // installation's key; else an error naming the release, the artifact and the reason.
  core::Result<void> verify_artifact(const store::Release& release);
  struct RegistryPlan {
    int64_t planned_at_ms = 0;
    std::vector<registry::ArtifactEntry> artifacts;
    std::map<std::string, registry::Retention> retention;
    std::map<std::string, std::vector<store::Release>> release_of;  // by digest
  };
  // Callers hold registry_mu.
  core::Result<RegistryPlan> plan_registry();
  core::Result<nlohmann::json> run_registry_gc(bool dry_run, const std::string& who);

  // ---- deployments (deployer.cpp) ---------------------------------------------------------------
  // fast_path: all at once whatever the traffic schedule (a rollback redeploying the previous
  // release does not replay its canary).
  void deploy_release(const config::Service& service, const store::Release& release,
                      bool fast_path = false);
  // Redeploys what operate() queued (tick, before fetching the source).
  void run_redeploys();
  // What the runtime runs for the tasks of service at release (also to supervise adopted tasks).
  core::Result<runtime::TaskSpec> task_spec(const config::Service& service,
                                            const store::Release& release,
                                            const std::string& color) const;
  // count: the service's task count unless given (rolling starts one task at a time).
  core::Result<std::vector<runtime::Task>> start_tasks(const config::Service& service,
                                                       const store::Release& release,
                                                       deploy::Color color, int count = -1);
  // The `rolling` strategy (rolling.cpp): deploy_release hands a rolling service's release here.
  void deploy_rolling(const config::Service& service, const store::Release& release);
  // recovery.cpp: a rolling deployment a restart interrupted leaves the live color at its count.
  core::Result<void> top_up_rolling(const std::shared_ptr<const config::Config>& cfg,
                                    const std::string& release_id, const std::string& color);
  // Stops one task through the driver that started it (and its supervisor, for processes).
  core::Result<void> stop_task(const runtime::Task& task);
  // Drains (up to the service's drain_timeout) and stops the tasks of one color, with the
  // container's stop signal and stop timeout.
  core::Result<void> stop_tasks(const config::Service& service, const std::string& color);
  // Runs a hook point's commands in order (/bin/sh -ec, in the artifact directory, with the hook
  // variables of DESIGN.md §6) within hook_timeout; the first failure is the error.
  core::Result<void> run_hook(const config::Service& service, const store::Release& release,
                              const deploy::Deployment& d, deploy::Hook hook);
  // Evaluates the service's alarms on the proxy's datapoints of the green and blue groups.
  // *last_second is set to the newest final datapoint's second (unix time) the verdict is on.
  core::Result<alarm::Evaluation> evaluate_alarms(const config::Service& service,
                                                  const std::string& green, const std::string& blue,
                                                  int64_t* last_second = nullptr);
};

// "hello-blue"
std::string group_name(const std::string& service, std::string_view color);

// Appends one service's listeners and target groups to snap (routes.cpp), from its configuration,
// its routing state and its running tasks (all colors). Listeners: "<svc>/production" (weights
// by color, sticky cohorts), "<svc>/test" (100% to the color being installed, else to the one with
// most production weight), and "<listener>-redirect" for each redirect_http. Pure.
void add_service_routes(const config::Service& svc, const Controller::Impl::Routing& routing,
                        const std::vector<store::TaskRecord>& tasks, proxy::RouteSnapshot& snap);

// The runtime's handle on a task the store recorded (for stop and adopt).
runtime::Task to_runtime_task(const store::TaskRecord& record);

}  // namespace cutover::controller
