// Store: the controller's persistent state — executions and their stage runs and logs, releases,
// deployments and their events, the audit trail (a SHA-256 hash chain), the command outbox, the
// tasks to re-adopt after a crash, each service's live release, sealed secrets, and a small
// key/value table.
//
// The interface speaks plain C++ value types only; that the backing store is SQLite (WAL mode,
// versioned migrations through PRAGMA user_version) is private to this module, so that it can move
// to PostgreSQL later (DESIGN.md §7). Times are Unix milliseconds (core::to_unix_ms) stamped from
// the injected Clock; ids are strings (core::new_id is used when an insert gets an empty id).
// Getters return Result<std::optional<T>>: nullopt means "no such row", an Error means the store
// itself failed. A `limit` <= 0 means "no limit". Nothing here throws.
//
// Durability: WAL with synchronous=NORMAL — a committed call survives a crash of the process; a
// power loss may lose the last few commits but never corrupts the database.
//
// Thread-safety: one connection guarded by a mutex; every public method may be called from any
// thread and runs as one transaction. transaction() runs several calls atomically: it holds the
// mutex for the whole callback (other threads wait), and calls made inside it — including nested
// transaction() calls, which become savepoints — join the enclosing transaction. Do not block in
// the callback on another thread that uses the same Store.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.hpp"
#include "core/result.hpp"

namespace cutover::store {

// The schema version this binary writes. A database with a higher version is refused.
inline constexpr int kSchemaVersion = 3;

// ---- Status enums: stored as their lowercase spelling
// --------------------------------------------

enum class ExecutionStatus { Queued, Running, Succeeded, Failed, Cancelled, Superseded };
// pending -> running [-> waiting (approval)] -> succeeded | failed | skipped | cancelled
enum class StageStatus { Pending, Running, Waiting, Succeeded, Failed, Skipped, Cancelled };
enum class LogStream { Stdout, Stderr, System };
enum class DeploymentStatus { InProgress, Succeeded, Failed, RolledBack, Stopped, Superseded };
enum class TaskStatus { Running, Stopped, Failed };

std::string_view to_string(ExecutionStatus s);   // "queued", "running", ...
std::string_view to_string(StageStatus s);       // "pending", "running", "waiting", ...
std::string_view to_string(LogStream s);         // "stdout", "stderr", "system"
std::string_view to_string(DeploymentStatus s);  // "in_progress", "rolled_back", ...
std::string_view to_string(TaskStatus s);        // "running", "stopped", "failed"
std::optional<ExecutionStatus> parse_execution_status(std::string_view text);
std::optional<StageStatus> parse_stage_status(std::string_view text);
std::optional<LogStream> parse_log_stream(std::string_view text);
std::optional<DeploymentStatus> parse_deployment_status(std::string_view text);
std::optional<TaskStatus> parse_task_status(std::string_view text);

// True for statuses after which nothing changes (finished_at gets stamped).
bool is_terminal(ExecutionStatus s);
bool is_terminal(StageStatus s);
bool is_terminal(DeploymentStatus s);

// ---- Value types
// ---------------------------------------------------------------------------------

struct Execution {
  std::string id{};  // empty on insert = generated ("ex-...")
  std::string commit_sha{};
  std::string branch{};
  ExecutionStatus status = ExecutionStatus::Queued;
  std::string message{};                 // error or validation message
  int64_t created_at = 0;                // stamped on insert
  std::optional<int64_t> started_at{};   // stamped when the status first becomes running
  std::optional<int64_t> finished_at{};  // stamped when the status becomes terminal
};

struct StageRun {
  std::string execution_id{};
  int index = 0;  // position in the pipeline; (execution_id, index) is the key
  std::string name{};
  StageStatus status = StageStatus::Pending;
  std::optional<int64_t> started_at{};
  std::optional<int64_t> finished_at{};
  std::optional<int> exit_code{};
  std::string message{};
};

// One line to append; seq and time are assigned by the store.
struct LogAppend {
  std::string execution_id{};
  std::string stage{};
  LogStream stream = LogStream::Stdout;
  std::string text{};  // one line, without the trailing newline
};

struct LogLine {
  std::string execution_id{};
  int64_t seq = 0;  // 1, 2, 3, ... per execution
  int64_t time = 0;
  std::string stage{};
  LogStream stream = LogStream::Stdout;
  std::string text{};
};

struct Release {
  std::string id{};  // empty on insert = generated ("rel-...")
  std::string service{};
  std::string commit_sha{};
  std::string execution_id{};  // may be empty (a release not built by an execution)
  std::string artifact_digest{};
  std::string artifact_path{};
  std::string task_revision{};
  int64_t created_at = 0;  // stamped on insert
};

struct Deployment {
  std::string id{};  // empty on insert = generated ("dep-...")
  std::string service{};
  std::string release_id{};
  std::optional<std::string> previous_release_id{};
  DeploymentStatus status = DeploymentStatus::InProgress;
  std::string phase{};            // free text owned by the deploy engine
  std::string state_json = "{}";  // opaque JSON owned by the deploy engine; must be valid JSON
  std::string reason{};
  int64_t created_at = 0;                // stamped on insert
  int64_t updated_at = 0;                // stamped on insert and update
  std::optional<int64_t> finished_at{};  // stamped when the status becomes terminal
};

struct DeploymentUpdate {
  DeploymentStatus status = DeploymentStatus::InProgress;
  std::string phase{};
  std::string state_json = "{}";
  std::string reason{};
};

struct DeploymentEvent {
  std::string deployment_id{};
  int64_t seq = 0;  // 1, 2, 3, ... per deployment
  int64_t time = 0;
  std::string type{};
  std::string detail_json{};
};

struct AuditEntry {
  int64_t seq = 0;  // 1, 2, 3, ...
  int64_t time = 0;
  std::string actor{};    // "operator:alice", "controller", "webhook"
  std::string action{};   // "rollback", "approve", ...
  std::string subject{};  // "service:web", "execution:ex-..."
  std::string detail_json{};
  std::string prev_hash{};  // hex; 64 zeros for the first entry
  std::string hash{};       // hex SHA-256 over prev_hash and the fields above
};

struct OutboxCommand {
  int64_t id = 0;  // increasing; never reused
  std::string deployment_id{};
  std::string command_json{};
  int64_t created_at = 0;
};

struct TaskRecord {
  std::string task_id{};
  std::string service{};
  std::string release_id{};
  std::string color{};  // "blue" | "green"
  std::string container{};
  int64_t pid = 0;
  int64_t start_time = 0;  // process start time in clock ticks (/proc/<pid>/stat field 22)
  int port = 0;
  std::string log_path{};
  TaskStatus status = TaskStatus::Running;
  int64_t created_at = 0;  // stamped on insert
};

// A secret as the store keeps it: sealed (store/secrets.hpp does the sealing). Never the value.
struct SecretRow {
  std::string name{};
  std::string key_id{};      // which key sealed it (SecretKey::id)
  std::string nonce{};       // hex
  std::string ciphertext{};  // hex
  int64_t version = 0;       // 1 on first put, +1 on every put of the same name
  int64_t created_at = 0;    // stamped on first put
  int64_t updated_at = 0;    // stamped on every put
};

// One immutable revision of a service's task definition (ECS: "web:7").
struct TaskDefinition {
  std::string service{};
  int64_t revision = 0;         // 1, 2, 3, ... per service
  std::string digest{};         // "sha256:<hex>" of definition_json
  std::string definition_json;  // canonical JSON written by the runtime
  std::string commit_sha{};     // the commit whose cutover.yaml first had it
  int64_t created_at = 0;       // stamped on insert
};

struct LiveState {
  std::string release_id{};
  std::string color{};
  int64_t updated_at = 0;
};

// ---- The store
// -----------------------------------------------------------------------------------

class Store {
 public:
  // Opens (creating the file and its directory if needed) and migrates the database to
  // kSchemaVersion. Refuses a database written by a newer binary. clock must outlive the Store.
  static core::Result<std::unique_ptr<Store>> open(const std::filesystem::path& db_file,
                                                   core::Clock& clock);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Runs fn atomically: everything it does commits together when it returns ok, and nothing is
  // kept when it returns an error (or throws; the exception becomes an Error). Returns fn's result,
  // or the commit's error.
  core::Result<void> transaction(const std::function<core::Result<void>(Store&)>& fn);

  int schema_version() const { return kSchemaVersion; }

  // Executions. update_execution_status fails if the id is unknown.
  core::Result<Execution> insert_execution(Execution e);
  core::Result<void> update_execution_status(const std::string& id, ExecutionStatus status,
                                             const std::string& message = "");
  core::Result<std::optional<Execution>> get_execution(const std::string& id);
  core::Result<std::vector<Execution>> list_executions(int limit);  // newest first
  core::Result<std::optional<Execution>> latest_execution_for_commit(const std::string& sha);

  // Stage runs: upsert writes every field as given; update_stage_status stamps started_at (first
  // time running) and finished_at (terminal) and fails if the stage run does not exist.
  core::Result<void> upsert_stage_run(const StageRun& run);
  core::Result<void> update_stage_status(const std::string& execution_id, int index,
                                         StageStatus status, std::optional<int> exit_code = {},
                                         const std::string& message = "");
  core::Result<std::vector<StageRun>> list_stage_runs(const std::string& execution_id);  // by index

  // Execution logs. Return the seq of the (last) appended line. Lines of one batch may belong to
  // several executions; the batch is one transaction.
  core::Result<int64_t> append_log(const std::string& execution_id, const std::string& stage,
                                   LogStream stream, const std::string& text);
  core::Result<int64_t> append_logs(const std::vector<LogAppend>& lines);
  // Lines with seq > after_seq, in seq order, at most limit (for `logs -f` polling).
  core::Result<std::vector<LogLine>> read_logs(const std::string& execution_id, int64_t after_seq,
                                               int limit);

  // Releases.
  core::Result<Release> insert_release(Release r);
  core::Result<std::optional<Release>> get_release(const std::string& id);
  core::Result<std::vector<Release>> list_releases(const std::string& service,
                                                   int limit);  // newest first
  // The newest release of service built from commit_sha.
  core::Result<std::optional<Release>> find_release(const std::string& service,
                                                    const std::string& commit_sha);

  // Deployments. update_deployment fails if the id is unknown.
  core::Result<Deployment> insert_deployment(Deployment d);
  core::Result<Deployment> update_deployment(const std::string& id, const DeploymentUpdate& u);
  core::Result<std::optional<Deployment>> get_deployment(const std::string& id);
  core::Result<std::vector<Deployment>> list_deployments(const std::string& service,
                                                         int limit);  // newest first
  // The newest in-progress deployment of service.
  core::Result<std::optional<Deployment>> active_deployment(const std::string& service);

  // Deployment events; append returns the new seq.
  core::Result<int64_t> append_deployment_event(const std::string& deployment_id,
                                                const std::string& type,
                                                const std::string& detail_json = "{}");
  core::Result<std::vector<DeploymentEvent>> list_deployment_events(
      const std::string& deployment_id, int64_t after_seq = 0);

  // Audit trail. Never write secrets into detail_json (DESIGN.md invariant 8).
  core::Result<AuditEntry> append_audit(const std::string& actor, const std::string& action,
                                        const std::string& subject,
                                        const std::string& detail_json = "{}");
  // Recomputes the whole chain; the error names the first entry that does not match, or says that
  // entries were removed from the end. (Detects accidents and naive edits; someone who can rewrite
  // the database file can also rewrite the whole chain — export hashes elsewhere for more.)
  core::Result<void> verify_audit_chain();
  core::Result<std::vector<AuditEntry>> list_audit(int64_t after_seq, int limit);  // oldest first

  // Outbox: enqueue in the same transaction() as the decision that produced the command; the
  // executor runs pending() in order and marks each done (marking twice is fine).
  core::Result<int64_t> enqueue_command(const std::string& deployment_id,
                                        const std::string& command_json);
  core::Result<std::vector<OutboxCommand>> pending_commands();
  core::Result<void> mark_command_done(int64_t id);

  // Tasks to re-adopt after a controller restart.
  core::Result<TaskRecord> insert_task(TaskRecord t);
  core::Result<void> update_task_status(const std::string& task_id, TaskStatus status);
  // The task was restarted by the runtime: same id and port, a new process.
  core::Result<void> update_task_process(const std::string& task_id, int64_t pid,
                                         int64_t start_time);
  core::Result<std::optional<TaskRecord>> get_task(const std::string& task_id);
  core::Result<std::vector<TaskRecord>> list_running_tasks(
      const std::optional<std::string>& service = std::nullopt);

  // Task definitions. register_task_definition returns the service's newest revision when its
  // digest equals that of definition_json, else writes revision newest + 1: every change makes a
  // new revision (changing back to an older definition too, as ECS does).
  core::Result<TaskDefinition> register_task_definition(const std::string& service,
                                                        const std::string& definition_json,
                                                        const std::string& commit_sha);
  core::Result<std::vector<TaskDefinition>> list_task_definitions(const std::string& service,
                                                                  int limit);  // newest first
  core::Result<std::optional<TaskDefinition>> get_task_definition(const std::string& service,
                                                                  int64_t revision);

  // Which release (and color) serves a service's production traffic.
  core::Result<std::optional<LiveState>> live(const std::string& service);
  core::Result<void> set_live(const std::string& service, const std::string& release_id,
                              const std::string& color);

  // Sealed secrets (use store::SecretStore, which seals and opens them). put replaces the row of
  // that name and returns it with version and times stamped; delete returns false if there was
  // none. list is ordered by name.
  core::Result<SecretRow> put_secret(SecretRow row);
  core::Result<std::optional<SecretRow>> get_secret(const std::string& name);
  core::Result<std::vector<SecretRow>> list_secrets();
  core::Result<bool> delete_secret(const std::string& name);

  // Small key/value settings, e.g. "source.last_commit". Keys starting with "store." are the
  // store's own (set_meta refuses them).
  core::Result<std::optional<std::string>> get_meta(const std::string& key);
  core::Result<void> set_meta(const std::string& key, const std::string& value);

  struct Impl;  // private; defined in the module's sources

 private:
  explicit Store(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cutover::store
