// pipeline: runs one execution — the stages of cutover.yaml, in order, in a clean checkout of the
// commit that triggered it — and turns the artifacts of successful stages into registry artifacts.
// The controller checks the commit out (source::GitSource::checkout), calls run_execution() on a
// worker thread, and records what the Observer reports.
//
// A `run` stage, like a CodeBuild build:
//
//   install ──ok──▶ pre_build ──ok──▶ build ──ok or failed──▶ post_build ──▶ artifacts (if all ok)
//      │ failed         │ failed                                  │
//      └────────────────┴──▶ stage failed, later phases skipped   └─ failed: stage failed
//
//  - install or pre_build fails: the later phases of the stage do not run.
//  - build fails: post_build STILL runs (cleanup, reports), and the stage fails.
//  - A timeout (Stage::effective_timeout, for the whole stage) or a cancel stops at once: the
//    running command's process tree is killed and no further phase runs, post_build included.
//  - Within a phase, commands run in order; the first that fails ends the phase.
//  - Each command is `/bin/sh -e -c CMD` with the workspace as working directory, so `cd` and
//    `export` do not carry over to the next command (chain with && or use a multi-line command).
//  - Environment: PATH/HOME/LANG (core::minimal_environment), then ctx.base_env, then the stage's
//    env (values may use ${COMMIT_SHA} etc.), then its secrets, then the pipeline variables
//    COMMIT_SHA COMMIT_SHORT BRANCH EXECUTION_ID WORKSPACE (DESIGN.md §6), which always win.
//    `${NAME}` inside commands is expanded by the shell, as they are environment variables.
//  - Secret values are replaced by "***" in every log line the Observer receives.
//  - `cache:` paths are restored from ctx.cache_root/<stage>/ before the stage and saved back
//    after it succeeds.
//  - After success, `artifacts:` are put into the registry; the outcome carries the Artifact.
//
// A `scan` stage calls scan::run_gate on the workspace (secrets: with the checkout's .gitleaks.toml
// and .gitleaksignore, the lines the commits since ctx.scan_since added — what the push brought,
// like `cutover scan --since` — or every file of the checkout when there is no earlier scanned
// commit or the repository lost it): mode block fails the stage on a finding or
// when the gate cannot run; mode report logs it and passes.
//
// An `approval` stage runs no command: it calls ExecutionContext::await_approval with its deadline
// (now + approval.timeout on ctx.clock) and blocks until the callback returns the decision —
//
//   waiting ──approve──▶ succeeded (the pipeline goes on)
//      ├─────reject────▶ failed   "rejected by WHO: COMMENT"
//      ├─deadline passed▶ failed  "approval timed out after 24h" (a timeout is a rejection)
//      └─────cancel────▶ cancelled
//
// The callback is the controller's business (store status `waiting`, the API's approve/reject,
// the audit trail); pipeline only knows the decision. Without a callback the stage fails.
//
// The first stage that does not succeed ends the execution; the stages after it are Skipped: for
// them the Observer gets on_stage_end (status Skipped) but no on_stage_start, and no command runs.
//
// Thread-safety: run_execution is reentrant; run several executions on different threads with
// different workspaces. Observer callbacks are called on the calling thread, in order.
#pragma once

#include <atomic>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"
#include "core/clock.hpp"
#include "core/result.hpp"
#include "registry/registry.hpp"

namespace cutover::pipeline {

// A stage as parsed from cutover.yaml.
using StageSpec = config::Stage;

enum class StageStatus { Succeeded, Failed, TimedOut, Cancelled, Skipped };
// "succeeded" | "failed" | "timed_out" | "cancelled" | "skipped"
const char* to_string(StageStatus status);

struct StageOutcome {
  StageStatus status = StageStatus::Skipped;
  // Empty on success; otherwise what went wrong, e.g. "build: `make dist` exited with code 2".
  std::string message;
  // Set when the stage succeeded and lists `artifacts:`.
  std::optional<registry::Artifact> artifact;
};

struct StageResult {
  std::string name;
  StageOutcome outcome;
};

struct ExecutionResult {
  bool succeeded = false;
  std::vector<StageResult> stages;  // one per StageSpec, in order (Skipped after a failure)
  std::string message;              // the first failure's "stage: message"; empty on success
};

// What an approval stage's wait ended with (ExecutionContext::await_approval).
struct ApprovalDecision {
  enum class Kind { Approved, Rejected, TimedOut, Cancelled };
  Kind kind = Kind::Rejected;
  std::string who;      // who decided ("cli:alice"); empty for a timeout or a cancel
  std::string comment;  // free text from approve/reject --comment; may be empty
};

struct ExecutionContext {
  std::string execution_id;
  std::string commit_sha;
  std::string commit_short;
  std::string branch;
  std::filesystem::path workspace;   // the clean checkout; commands run here
  std::filesystem::path cache_root;  // per-stage caches live in cache_root/<stage name>/
  // `scan: secrets` stages: the git repository holding commit_sha (the controller's mirror) and
  // the last commit whose execution passed, so only what came after it is scanned. Either empty =
  // scan the whole checkout. scan_cache_dir keeps compiled rule databases ("" = none).
  std::filesystem::path repository;
  std::string scan_since;
  std::filesystem::path scan_cache_dir;
  std::map<std::string, std::string> base_env;
  // Resolves a secret-store name (Stage::secrets values) to its value. Unset: a stage that declares
  // secrets fails with a clear message.
  std::function<core::Result<std::string>(const std::string& secret_name)> resolve_secret;
  // Time source for stage deadlines; null = core::RealClock::instance().
  const core::Clock* clock = nullptr;
  // Blocks until the approval stage (index, name) is decided, the deadline (on clock) passes or
  // the execution is cancelled. timeout is the stage's approval timeout (for messages). Called on
  // the thread of run_execution. Unset: an approval stage fails with a clear message.
  std::function<ApprovalDecision(int index, const std::string& stage, core::TimePoint deadline,
                                 core::Duration timeout)>
      await_approval;
};

// All callbacks are optional.
struct Observer {
  std::function<void(int index, const std::string& stage)> on_stage_start;
  // Output of the stage's commands (stdout and stderr merged, one call per line, no '\n') and
  // cutover's own lines about the stage, which start with "[cutover] ". Secrets are masked.
  std::function<void(const std::string& stage, std::string_view line)> on_log;
  std::function<void(int index, const std::string& stage, const StageOutcome& outcome)>
      on_stage_end;
};

// Runs the stages in order. Stage failures are reported in the ExecutionResult (not as an Error);
// an Error means the execution could not run at all (e.g. the workspace does not exist). cancel
// may be null; when it becomes true the running command is stopped and the execution ends with the
// current stage Cancelled.
core::Result<ExecutionResult> run_execution(const std::vector<StageSpec>& stages,
                                            const ExecutionContext& ctx,
                                            registry::Registry& registry, const Observer& observer,
                                            const std::atomic<bool>* cancel = nullptr);

}  // namespace cutover::pipeline
