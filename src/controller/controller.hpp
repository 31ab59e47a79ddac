// Controller: the imperative shell of `cutover serve` (DESIGN.md §3). It wires the modules:
// source (poll the repository) → pipeline (run stages on the exact commit) → registry (keep the
// artifact) → deploy (pure decisions) → runtime (task sets) + proxy admin (route snapshots), and
// records everything in the store.
//
// Threads, and what each owns:
//  - the loop thread: polling the source (every poll interval, or at once on request_poll(), also
//    while a deployment runs), recording each new commit as a `queued` execution, and every
//    deployment (deploy_release, the in-memory routing of each service, the proxy snapshots).
//    Deployments run there one after another, so two deployments of a service never interleave.
//  - the pipeline worker thread: runs executions one at a time (checkout of the exact commit,
//    stages, artifacts, releases). A newer commit supersedes the one still queued (newest wins;
//    the queue holds one). When an execution succeeds the worker hands its releases to the loop
//    (a bounded queue, and the loop is woken); it never deploys. Releases that arrive while a
//    deployment runs wait; the loop then deploys only the newest per service and records the
//    older ones as skipped deployments (status `superseded`).
//  - the supervisors' threads (runtime) and the API server's thread. The read side and the
//    operator commands (operate, cancel, decide_approval, secrets) may be called from any thread:
//    they read the store and post to the loop or the worker under a mutex.
// stop() cancels the running execution (its command tree is killed) and joins the worker, then
// the loop. On start, executions that a previous run left `running` or `queued` are cancelled
// ("controller restarted"), and if the newest commit seen was one of them it is built again.
//
// Crash safety: every state change is written to the store before it is acted on; tasks are
// recorded with pid + start time so a restarted controller re-adopts them, and the proxy runs in
// its own process with its own persisted snapshot, so a controller crash drops no request.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

#include "core/clock.hpp"
#include "core/result.hpp"

namespace cutover::controller {

struct Options {
  std::string repo;  // path or URL of the application's git repository
  std::string branch = "main";
  std::filesystem::path state_dir;
  core::Duration poll_interval{std::chrono::seconds{2}};
  std::filesystem::path self_exe;  // the cutover binary, to start `cutover proxy`
  int registry_keep = 10;          // gc keeps the last N releases of each service (+ live etc.)
};

class Controller {
 public:
  static core::Result<std::unique_ptr<Controller>> create(Options options, core::Clock& clock);
  ~Controller();
  Controller(const Controller&) = delete;
  Controller& operator=(const Controller&) = delete;

  // Adopts what the last run left (tasks, proxy), then starts the loop thread.
  core::Result<void> start();
  // Stops the loop after the current step. Tasks and the proxy keep running (they outlive us).
  void stop();
  // Asks the loop to fetch the repository now instead of at the next poll.
  void request_poll();

  // An operator's command on a service's deployment: "rollback", "abort" or "promote", audited
  // with `who`. With a deployment in progress it becomes an event of that deployment (rollback:
  // production back to blue in one snapshot). Without one, "rollback" redeploys the release that
  // was live before the current one, all at once, as its own deployment; "abort" and "promote"
  // are a Conflict. Accepted commands are acted on by the loop within about 100 ms.
  core::Result<nlohmann::json> operate(const std::string& service, const std::string& action,
                                       const std::string& who);

  // Cancels an execution, audited with `who`: a queued one ends `cancelled` without running; a
  // running one has its command tree killed (or its approval wait ended) and ends `cancelled`.
  // Errors: NotFound for an unknown id, Conflict for an execution that has already finished.
  core::Result<nlohmann::json> cancel(const std::string& execution_id, const std::string& who);
  // Decides the approval stage an execution waits in: approve (the pipeline goes on) or reject
  // (the stage fails with the comment). Audited with who, when and the comment. Errors: NotFound
  // for an unknown id, Conflict when the execution is not waiting for approval.
  core::Result<nlohmann::json> decide_approval(const std::string& execution_id, bool approve,
                                               const std::string& who, const std::string& comment);

  // Read side, for the API. Errors carry ErrorKind::NotFound for unknown names and ids.
  core::Result<nlohmann::json> status(const std::string& service) const;
  core::Result<nlohmann::json> history(const std::string& service) const;
  core::Result<nlohmann::json> executions(int limit) const;
  // The audit trail, oldest first: up to limit entries after sequence number after_seq, and the
  // verdict of a check of the whole hash chain ("chain": {"verified": bool, "error": text}).
  core::Result<nlohmann::json> audit(int64_t after_seq, int limit) const;
  core::Result<nlohmann::json> execution(const std::string& id) const;
  core::Result<nlohmann::json> logs(const std::string& execution_id, int64_t after_seq,
                                    int limit) const;
  // Task definition revisions of a service, newest first, and the diff between two of them.
  core::Result<nlohmann::json> task_definitions(const std::string& service) const;
  core::Result<nlohmann::json> task_definition_diff(const std::string& service, int64_t from,
                                                    int64_t to) const;
  // Task logs of a service: its running tasks, or one task (any status) when task_id is given.
  // Without offset: the last tail_lines lines of each, and each file's end offset. With offset
  // (one task only): what the file holds after offset (at most 1 MiB; from 0 again if the file
  // was rotated since), for `logs -f`.
  core::Result<nlohmann::json> task_logs(const std::string& service, const std::string& task_id,
                                         std::optional<int64_t> offset, int tail_lines) const;

  // The secret store (store/secrets.hpp): values go in and are injected into stages and tasks;
  // no method returns one. Each change is audited (name and version, never the value). Errors:
  // kind Invalid for a bad name or value, NotFound for an unknown name. Any thread.
  core::Result<nlohmann::json> set_secret(const std::string& name, std::string_view value);
  core::Result<nlohmann::json> list_secrets() const;
  core::Result<nlohmann::json> remove_secret(const std::string& name);

  // The artifact registry (controller/artifacts.cpp). registry_list: every artifact (or those of
  // one service) with its tags, size, time and retention (live, rollback-target, in-progress,
  // kept, recent, removable). registry_gc removes the removable ones (dry_run: only says which),
  // audited with `who`; it runs serially with the start of task sets. registry_key: the public
  // half of the installation's provenance key. Any thread.
  core::Result<nlohmann::json> registry_list(const std::string& service);
  core::Result<nlohmann::json> registry_gc(bool dry_run, const std::string& who);
  core::Result<nlohmann::json> registry_key() const;
  // A push notification from a git host (POST /v1/webhooks/PROVIDER, docs/operations.md). The
  // provider is "github" (signature = X-Hub-Signature-256), "gitlab" (X-Gitlab-Token) or
  // "generic" (X-Cutover-Signature: sha256=HEX); the shared secret is the secret-store entry
  // "webhook/PROVIDER". A verified delivery only wakes the loop to fetch now (request_poll): the
  // commit to build is read from the repository, never from the body. Every verdict is counted
  // per provider (status()["webhooks"]) and rejections are logged without the signature. Any
  // thread.
  enum class WebhookVerdict { Accepted, Ping, Unauthorized, NotConfigured, UnknownProvider };
  struct WebhookRequest {
    std::string provider;
    std::string signature;  // the provider's header, empty when absent
    std::string event;      // X-GitHub-Event (ping is answered without a fetch)
    std::string body;
    std::string remote;  // peer address, for the log
  };
  struct WebhookReply {
    WebhookVerdict verdict = WebhookVerdict::Unauthorized;
    std::string message;
  };
  WebhookReply receive_webhook(const WebhookRequest& request);

  struct Impl;

 private:
  explicit Controller(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cutover::controller
