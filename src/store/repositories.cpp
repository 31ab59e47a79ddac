// The typed repositories: one section per table, each public method one transaction.
#include <sodium.h>

#include <algorithm>
#include <cstdlib>
#include <unordered_map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/id.hpp"
#include "store/sqlite_db.hpp"
#include "store/store.hpp"

// Binds `var` to the value of a Result-returning expression, or returns its error.
#define STORE_ASSIGN(var, expr)                          \
  auto var##_result_ = (expr);                           \
  if (!var##_result_.ok()) return var##_result_.error(); \
  auto& var = *var##_result_

namespace cutover::store {

using core::Error;
using core::Result;
using detail::Stmt;

namespace {

constexpr std::string_view kGenesisHash =
    "0000000000000000000000000000000000000000000000000000000000000000";

// SQLite's "no limit".
int64_t sql_limit(int limit) { return limit > 0 ? limit : -1; }

std::optional<std::string> null_if_empty(const std::string& s) {
  if (s.empty()) return std::nullopt;
  return s;
}

Result<void> check_json(std::string_view what, const std::string& text) {
  if (!nlohmann::json::accept(text)) {
    return Error(fmt::format("store: {} is not valid JSON: {:.80}", what, text));
  }
  return core::ok();
}

// Reads every row with read(Stmt&) -> Result<T>.
template <typename T, typename Read>
Result<std::vector<T>> collect(Stmt& st, Read read) {
  std::vector<T> out;
  for (;;) {
    STORE_ASSIGN(row, st.step());
    if (!row) return out;
    STORE_ASSIGN(value, read(st));
    out.push_back(std::move(value));
  }
}

template <typename T, typename Read>
Result<std::optional<T>> first(Stmt& st, Read read) {
  STORE_ASSIGN(row, st.step());
  if (!row) return std::optional<T>();
  STORE_ASSIGN(value, read(st));
  return std::optional<T>(std::move(value));
}

template <typename E, typename Parse>
Result<E> parse_column(const Stmt& st, int col, Parse parse, std::string_view table) {
  const std::string text = st.text(col);
  auto value = parse(text);
  if (!value) return Error(fmt::format("store: {} has an unknown status \"{}\"", table, text));
  return *value;
}

Error not_found(std::string_view what, std::string_view id) {
  return Error(fmt::format("store: no {} \"{}\"", what, id));
}

// ---- Row readers (column order = the SELECT lists below)
// -----------------------------------------

constexpr const char* kExecutionColumns =
    "id, commit_sha, branch, status, message, created_at, started_at, finished_at";

Result<Execution> read_execution(const Stmt& st) {
  Execution e;
  e.id = st.text(0);
  e.commit_sha = st.text(1);
  e.branch = st.text(2);
  STORE_ASSIGN(status, parse_column<ExecutionStatus>(st, 3, parse_execution_status, "executions"));
  e.status = status;
  e.message = st.text(4);
  e.created_at = st.int64(5);
  e.started_at = st.opt_int64(6);
  e.finished_at = st.opt_int64(7);
  return e;
}

Result<StageRun> read_stage_run(const Stmt& st) {
  StageRun r;
  r.execution_id = st.text(0);
  r.index = static_cast<int>(st.int64(1));
  r.name = st.text(2);
  STORE_ASSIGN(status, parse_column<StageStatus>(st, 3, parse_stage_status, "stage_runs"));
  r.status = status;
  r.started_at = st.opt_int64(4);
  r.finished_at = st.opt_int64(5);
  if (auto code = st.opt_int64(6)) r.exit_code = static_cast<int>(*code);
  r.message = st.text(7);
  return r;
}

Result<LogLine> read_log_line(const Stmt& st) {
  LogLine l;
  l.execution_id = st.text(0);
  l.seq = st.int64(1);
  l.time = st.int64(2);
  l.stage = st.text(3);
  STORE_ASSIGN(stream, parse_column<LogStream>(st, 4, parse_log_stream, "execution_logs"));
  l.stream = stream;
  l.text = st.text(5);
  return l;
}

constexpr const char* kReleaseColumns =
    "id, service, commit_sha, execution_id, artifact_digest, artifact_path, task_revision, "
    "created_at";

Result<Release> read_release(const Stmt& st) {
  Release r;
  r.id = st.text(0);
  r.service = st.text(1);
  r.commit_sha = st.text(2);
  r.execution_id = st.text(3);
  r.artifact_digest = st.text(4);
  r.artifact_path = st.text(5);
  r.task_revision = st.text(6);
  r.created_at = st.int64(7);
  return r;
}

constexpr const char* kDeploymentColumns =
    "id, service, release_id, previous_release_id, status, phase, state_json, reason, created_at, "
    "updated_at, finished_at";

Result<Deployment> read_deployment(const Stmt& st) {
  Deployment d;
  d.id = st.text(0);
  d.service = st.text(1);
  d.release_id = st.text(2);
  d.previous_release_id = st.opt_text(3);
  STORE_ASSIGN(status,
               parse_column<DeploymentStatus>(st, 4, parse_deployment_status, "deployments"));
  d.status = status;
  d.phase = st.text(5);
  d.state_json = st.text(6);
  d.reason = st.text(7);
  d.created_at = st.int64(8);
  d.updated_at = st.int64(9);
  d.finished_at = st.opt_int64(10);
  return d;
}

Result<DeploymentEvent> read_deployment_event(const Stmt& st) {
  DeploymentEvent e;
  e.deployment_id = st.text(0);
  e.seq = st.int64(1);
  e.time = st.int64(2);
  e.type = st.text(3);
  e.detail_json = st.text(4);
  return e;
}

constexpr const char* kAuditColumns =
    "seq, time, actor, action, subject, detail_json, prev_hash, hash";

Result<AuditEntry> read_audit(const Stmt& st) {
  AuditEntry a;
  a.seq = st.int64(0);
  a.time = st.int64(1);
  a.actor = st.text(2);
  a.action = st.text(3);
  a.subject = st.text(4);
  a.detail_json = st.text(5);
  a.prev_hash = st.text(6);
  a.hash = st.text(7);
  return a;
}

constexpr const char* kTaskColumns =
    "task_id, service, release_id, color, container, pid, start_time, port, log_path, status, "
    "created_at";

Result<TaskRecord> read_task(const Stmt& st) {
  TaskRecord t;
  t.task_id = st.text(0);
  t.service = st.text(1);
  t.release_id = st.text(2);
  t.color = st.text(3);
  t.container = st.text(4);
  t.pid = st.int64(5);
  t.start_time = st.int64(6);
  t.port = static_cast<int>(st.int64(7));
  t.log_path = st.text(8);
  STORE_ASSIGN(status, parse_column<TaskStatus>(st, 9, parse_task_status, "tasks"));
  t.status = status;
  t.created_at = st.int64(10);
  return t;
}

constexpr const char* kTaskDefinitionColumns =
    "service, revision, digest, definition_json, commit_sha, created_at";

Result<TaskDefinition> read_task_definition(const Stmt& st) {
  TaskDefinition d;
  d.service = st.text(0);
  d.revision = st.int64(1);
  d.digest = st.text(2);
  d.definition_json = st.text(3);
  d.commit_sha = st.text(4);
  d.created_at = st.int64(5);
  return d;
}

std::string sha256_digest(const std::string& text) {
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(digest, reinterpret_cast<const unsigned char*>(text.data()), text.size());
  char hex[crypto_hash_sha256_BYTES * 2 + 1];
  sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
  return std::string("sha256:") + hex;
}

// SHA-256 (hex) over the previous hash and the entry's fields, each length-prefixed so that no two
// different entries serialise to the same bytes.
std::string audit_hash(const AuditEntry& a) {
  std::string canonical;
  for (const std::string& field : {a.prev_hash, std::to_string(a.seq), std::to_string(a.time),
                                   a.actor, a.action, a.subject, a.detail_json}) {
    canonical += std::to_string(field.size());
    canonical += ':';
    canonical += field;
    canonical += '\n';
  }
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(digest, reinterpret_cast<const unsigned char*>(canonical.data()),
                     canonical.size());
  char hex[crypto_hash_sha256_BYTES * 2 + 1];
  sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
  return hex;
}

constexpr const char* kUpsertMeta =
    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) "
    "DO UPDATE SET value = excluded.value";
constexpr std::string_view kReservedMetaPrefix = "store.";
constexpr const char* kAuditHeadKey = "store.audit_head";

std::string audit_head(int64_t seq, const std::string& hash) {
  return fmt::format("{} {}", seq, hash);
}

// Next per-parent sequence number in a (parent, seq) keyed table.
Result<int64_t> next_seq(Store::Impl& impl, std::string_view sql, const std::string& parent) {
  STORE_ASSIGN(st, impl.query(sql, parent));
  STORE_ASSIGN(row, st.step());
  return (row ? st.int64(0) : 0) + 1;
}

}  // namespace

// ---- Executions
// ----------------------------------------------------------------------------------

Result<Execution> Store::insert_execution(Execution e) {
  return impl_->in_tx(true, [&]() -> Result<Execution> {
    if (e.id.empty()) e.id = core::new_id("ex");
    e.created_at = impl_->now_ms();
    STORE_ASSIGN(st, impl_->query("INSERT INTO executions (" + std::string(kExecutionColumns) +
                                      ") VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                  e.id, e.commit_sha, e.branch, to_string(e.status), e.message,
                                  e.created_at, e.started_at, e.finished_at));
    auto done = st.run();
    if (!done.ok()) return detail::in_context(done.error(), "insert execution " + e.id);
    return e;
  });
}

Result<void> Store::update_execution_status(const std::string& id, ExecutionStatus status,
                                            const std::string& message) {
  return impl_->in_tx(true, [&]() -> Result<void> {
    STORE_ASSIGN(st,
                 impl_->query("UPDATE executions SET status = ?1, message = ?2, "
                              "started_at = CASE WHEN ?1 = 'running' THEN COALESCE(started_at, ?3) "
                              "ELSE started_at END, "
                              "finished_at = CASE WHEN ?4 THEN COALESCE(finished_at, ?3) "
                              "ELSE finished_at END "
                              "WHERE id = ?5",
                              to_string(status), message, impl_->now_ms(),
                              static_cast<int64_t>(is_terminal(status)), id));
    STORE_TRY(st.run());
    if (sqlite3_changes(impl_->db) == 0) return not_found("execution", id);
    return core::ok();
  });
}

Result<std::optional<Execution>> Store::get_execution(const std::string& id) {
  return impl_->in_tx(false, [&]() -> Result<std::optional<Execution>> {
    STORE_ASSIGN(
        st, impl_->query(
                "SELECT " + std::string(kExecutionColumns) + " FROM executions WHERE id = ?", id));
    return first<Execution>(st, read_execution);
  });
}

Result<std::vector<Execution>> Store::list_executions(int limit) {
  return impl_->in_tx(false, [&]() -> Result<std::vector<Execution>> {
    STORE_ASSIGN(st, impl_->query("SELECT " + std::string(kExecutionColumns) +
                                      " FROM executions ORDER BY created_at DESC, rowid DESC "
                                      "LIMIT ?",
                                  sql_limit(limit)));
    return collect<Execution>(st, read_execution);
  });
}

Result<std::optional<Execution>> Store::latest_execution_for_commit(const std::string& sha) {
  return impl_->in_tx(false, [&]() -> Result<std::optional<Execution>> {
    STORE_ASSIGN(st, impl_->query("SELECT " + std::string(kExecutionColumns) +
                                      " FROM executions WHERE commit_sha = ? "
                                      "ORDER BY created_at DESC, rowid DESC LIMIT 1",
                                  sha));
    return first<Execution>(st, read_execution);
  });
}

// ---- Stage runs
// ----------------------------------------------------------------------------------

Result<void> Store::upsert_stage_run(const StageRun& r) {
  return impl_->in_tx(true, [&]() -> Result<void> {
    STORE_ASSIGN(
        st, impl_->query("INSERT INTO stage_runs (execution_id, idx, name, status, started_at, "
                         "finished_at, exit_code, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                         "ON CONFLICT (execution_id, idx) DO UPDATE SET name = excluded.name, "
                         "status = excluded.status, started_at = excluded.started_at, "
                         "finished_at = excluded.finished_at, exit_code = excluded.exit_code, "
                         "message = excluded.message",
                         r.execution_id, r.index, r.name, to_string(r.status), r.started_at,
                         r.finished_at, r.exit_code, r.message));
    auto done = st.run();
    if (!done.ok()) {
      return detail::in_context(done.error(),
                                fmt::format("stage {} of execution {}", r.index, r.execution_id));
    }
    return core::ok();
  });
}

Result<void> Store::update_stage_status(const std::string& execution_id, int index,
                                        StageStatus status, std::optional<int> exit_code,
                                        const std::string& message) {
  return impl_->in_tx(true, [&]() -> Result<void> {
    STORE_ASSIGN(st,
                 impl_->query("UPDATE stage_runs SET status = ?1, message = ?2, "
                              "exit_code = COALESCE(?3, exit_code), "
                              "started_at = CASE WHEN ?1 = 'running' THEN COALESCE(started_at, ?4) "
                              "ELSE started_at END, "
                              "finished_at = CASE WHEN ?5 THEN COALESCE(finished_at, ?4) "
                              "ELSE finished_at END "
                              "WHERE execution_id = ?6 AND idx = ?7",
                              to_string(status), message, exit_code, impl_->now_ms(),
                              static_cast<int64_t>(is_terminal(status)), execution_id, index));
    STORE_TRY(st.run());
    if (sqlite3_changes(impl_->db) == 0) {
      return not_found("stage run", fmt::format("{}#{}", execution_id, index));
    }
    return core::ok();
  });
}

Result<std::vector<StageRun>> Store::list_stage_runs(const std::string& execution_id) {
  return impl_->in_tx(false, [&]() -> Result<std::vector<StageRun>> {
    STORE_ASSIGN(st, impl_->query("SELECT execution_id, idx, name, status, started_at, "
                                  "finished_at, exit_code, message FROM stage_runs "
                                  "WHERE execution_id = ? ORDER BY idx",
                                  execution_id));
    return collect<StageRun>(st, read_stage_run);
  });
}

// ---- Execution logs
// ------------------------------------------------------------------------------

Result<int64_t> Store::append_log(const std::string& execution_id, const std::string& stage,
                                  LogStream stream, const std::string& text) {
  return append_logs({LogAppend{execution_id, stage, stream, text}});
}

Result<int64_t> Store::append_logs(const std::vector<LogAppend>& lines) {
  return impl_->in_tx(true, [&]() -> Result<int64_t> {
    const int64_t now = impl_->now_ms();
    std::unordered_map<std::string, int64_t> next;  // execution id -> next seq
    int64_t last = 0;
    for (const LogAppend& line : lines) {
      auto it = next.find(line.execution_id);
      if (it == next.end()) {
        STORE_ASSIGN(seq,
                     next_seq(*impl_, "SELECT MAX(seq) FROM execution_logs WHERE execution_id = ?",
                              line.execution_id));
        it = next.emplace(line.execution_id, seq).first;
      }
      last = it->second++;
      STORE_ASSIGN(st, impl_->query("INSERT INTO execution_logs (execution_id, seq, time, stage, "
                                    "stream, text) VALUES (?, ?, ?, ?, ?, ?)",
                                    line.execution_id, last, now, line.stage,
                                    to_string(line.stream), line.text));
      auto done = st.run();
      if (!done.ok())
        return detail::in_context(done.error(), "append log to execution " + line.execution_id);
    }
    return last;
  });
}

Result<std::vector<LogLine>> Store::read_logs(const std::string& execution_id, int64_t after_seq,
                                              int limit) {
  return impl_->in_tx(false, [&]() -> Result<std::vector<LogLine>> {
    STORE_ASSIGN(st, impl_->query("SELECT execution_id, seq, time, stage, stream, text "
                                  "FROM execution_logs WHERE execution_id = ? AND seq > ? "
                                  "ORDER BY seq LIMIT ?",
                                  execution_id, after_seq, sql_limit(limit)));
    return collect<LogLine>(st, read_log_line);
  });
}

// ---- Releases
// ------------------------------------------------------------------------------------

Result<Release> Store::insert_release(Release r) {
  return impl_->in_tx(true, [&]() -> Result<Release> {
    if (r.id.empty()) r.id = core::new_id("rel");
    r.created_at = impl_->now_ms();
    STORE_ASSIGN(st,
                 impl_->query("INSERT INTO releases (" + std::string(kReleaseColumns) +
                                  ") VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                              r.id, r.service, r.commit_sha, null_if_empty(r.execution_id),
                              r.artifact_digest, r.artifact_path, r.task_revision, r.created_at));
    auto done = st.run();
    if (!done.ok()) return detail::in_context(done.error(), "insert release " + r.id);
    return r;
  });
}

Result<std::optional<Release>> Store::get_release(const std::string& id) {
  return impl_->in_tx(false, [&]() -> Result<std::optional<Release>> {
    STORE_ASSIGN(
        st,
        impl_->query("SELECT " + std::string(kReleaseColumns) + " FROM releases WHERE id = ?", id));
    return first<Release>(st, read_release);
  });
}

Result<std::vector<Release>> Store::list_releases(const std::string& service, int limit) {
  return impl_->in_tx(false, [&]() -> Result<std::vector<Release>> {
    STORE_ASSIGN(st, impl_->query("SELECT " + std::string(kReleaseColumns) +
                                      " FROM releases WHERE service = ? "
                                      "ORDER BY created_at DESC, rowid DESC LIMIT ?",
                                  service, sql_limit(limit)));
    return collect<Release>(st, read_release);
  });
}

Result<std::optional<Release>> Store::find_release(const std::string& service,
                                                   const std::string& commit_sha) {
  return impl_->in_tx(false, [&]() -> Result<std::optional<Release>> {
    STORE_ASSIGN(st, impl_->query("SELECT " + std::string(kReleaseColumns) +
                                      " FROM releases WHERE service = ? AND commit_sha = ? "
                                      "ORDER BY created_at DESC, rowid DESC LIMIT 1",
                                  service, commit_sha));
    return first<Release>(st, read_release);
  });
}

// ---- Deployments
// ---------------------------------------------------------------------------------

Result<Deployment> Store::insert_deployment(Deployment d) {
  return impl_->in_tx(true, [&]() -> Result<Deployment> {
    if (d.id.empty()) d.id = core::new_id("dep");
    STORE_TRY(check_json("state_json of deployment " + d.id, d.state_json));
    d.created_at = d.updated_at = impl_->now_ms();
    if (is_terminal(d.status)) d.finished_at = d.created_at;
    STORE_ASSIGN(st, impl_->query("INSERT INTO deployments (" + std::string(kDeploymentColumns) +
                                      ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                  d.id, d.service, d.release_id, d.previous_release_id,
                                  to_string(d.status), d.phase, d.state_json, d.reason,
                                  d.created_at, d.updated_at, d.finished_at));
    auto done = st.run();
    if (!done.ok()) return detail::in_context(done.error(), "insert deployment " + d.id);
    return d;
  });
}

Result<Deployment> Store::update_deployment(const std::string& id, const DeploymentUpdate& u) {
  return impl_->in_tx(true, [&]() -> Result<Deployment> {
    STORE_TRY(check_json("state_json of deployment " + id, u.state_json));
    STORE_ASSIGN(st,
                 impl_->query("UPDATE deployments SET status = ?1, phase = ?2, state_json = ?3, "
                              "reason = ?4, updated_at = ?5, "
                              "finished_at = CASE WHEN ?6 THEN COALESCE(finished_at, ?5) "
                              "ELSE finished_at END WHERE id = ?7",
                              to_string(u.status), u.phase, u.state_json, u.reason, impl_->now_ms(),
                              static_cast<int64_t>(is_terminal(u.status)), id));
    STORE_TRY(st.run());
    if (sqlite3_changes(impl_->db) == 0) return not_found("deployment", id);
    STORE_ASSIGN(get, impl_->query("SELECT " + std::string(kDeploymentColumns) +
                                       " FROM deployments WHERE id = ?",
                                   id));
    STORE_ASSIGN(d, first<Deployment>(get, read_deployment));
    if (!d) return not_found("deployment", id);
    return std::move(*d);
  });
}

Result<std::optional<Deployment>> Store::get_deployment(const std::string& id) {
  return impl_->in_tx(false, [&]() -> Result<std::optional<Deployment>> {
    STORE_ASSIGN(st, impl_->query("SELECT " + std::string(kDeploymentColumns) +
                                      " FROM deployments WHERE id = ?",
                                  id));
    return first<Deployment>(st, read_deployment);
  });
}

Result<std::vector<Deployment>> Store::list_deployments(const std::string& service, int limit) {
  return impl_->in_tx(false, [&]() -> Result<std::vector<Deployment>> {
    STORE_ASSIGN(st, impl_->query("SELECT " + std::string(kDeploymentColumns) +
                                      " FROM deployments WHERE service = ? "
                                      "ORDER BY created_at DESC, rowid DESC LIMIT ?",
                                  service, sql_limit(limit)));
    return collect<Deployment>(st, read_deployment);
  });
}

Result<std::optional<Deployment>> Store::active_deployment(const std::string& service) {
  return impl_->in_tx(false, [&]() -> Result<std::optional<Deployment>> {
    STORE_ASSIGN(st, impl_->query("SELECT " + std::string(kDeploymentColumns) +
                                      " FROM deployments WHERE service = ? AND status = ? "
                                      "ORDER BY created_at DESC, rowid DESC LIMIT 1",
                                  service, to_string(DeploymentStatus::InProgress)));
    return first<Deployment>(st, read_deployment);
  });
}

// ---- Deployment events
// ---------------------------------------------------------------------------

Result<int64_t> Store::append_deployment_event(const std::string& deployment_id,
                                               const std::string& type,
                                               const std::string& detail_json) {
  return impl_->in_tx(true, [&]() -> Result<int64_t> {
    STORE_TRY(check_json("detail of event " + type, detail_json));
    STORE_ASSIGN(seq,
                 next_seq(*impl_, "SELECT MAX(seq) FROM deployment_events WHERE deployment_id = ?",
                          deployment_id));
    STORE_ASSIGN(st, impl_->query("INSERT INTO deployment_events (deployment_id, seq, time, type, "
                                  "detail_json) VALUES (?, ?, ?, ?, ?)",
                                  deployment_id, seq, impl_->now_ms(), type, detail_json));
    auto done = st.run();
    if (!done.ok())
      return detail::in_context(done.error(), "append event to deployment " + deployment_id);
    return seq;
  });
}

Result<std::vector<DeploymentEvent>> Store::list_deployment_events(const std::string& deployment_id,
                                                                   int64_t after_seq) {
  return impl_->in_tx(false, [&]() -> Result<std::vector<DeploymentEvent>> {
    STORE_ASSIGN(st, impl_->query("SELECT deployment_id, seq, time, type, detail_json "
                                  "FROM deployment_events WHERE deployment_id = ? AND seq > ? "
                                  "ORDER BY seq",
                                  deployment_id, after_seq));
    return collect<DeploymentEvent>(st, read_deployment_event);
  });
}

// ---- Audit
// ---------------------------------------------------------------------------------------

Result<AuditEntry> Store::append_audit(const std::string& actor, const std::string& action,
                                       const std::string& subject, const std::string& detail_json) {
  return impl_->in_tx(true, [&]() -> Result<AuditEntry> {
    STORE_TRY(check_json("audit detail of " + action, detail_json));
    AuditEntry a;
    a.prev_hash = std::string(kGenesisHash);
    a.seq = 1;
    {
      // Link to the recorded head rather than to the last row: if entries were removed from the
      // end, the new entry then does not follow the survivors and the gap stays visible.
      STORE_ASSIGN(st, impl_->query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"));
      STORE_ASSIGN(row, st.step());
      if (row) {
        a.seq = st.int64(0) + 1;
        a.prev_hash = st.text(1);
      }
    }
    {
      STORE_ASSIGN(st, impl_->query("SELECT value FROM meta WHERE key = ?", kAuditHeadKey));
      STORE_ASSIGN(row, st.step());
      if (row) {
        const std::string head = st.text(0);
        const size_t space = head.find(' ');
        const int64_t head_seq = std::strtoll(head.c_str(), nullptr, 10);
        if (space != std::string::npos) a.prev_hash = head.substr(space + 1);
        a.seq = std::max(a.seq, head_seq + 1);
      }
    }
    a.time = impl_->now_ms();
    a.actor = actor;
    a.action = action;
    a.subject = subject;
    a.detail_json = detail_json;
    a.hash = audit_hash(a);
    STORE_ASSIGN(st, impl_->query("INSERT INTO audit_log (" + std::string(kAuditColumns) +
                                      ") VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                  a.seq, a.time, a.actor, a.action, a.subject, a.detail_json,
                                  a.prev_hash, a.hash));
    STORE_TRY(st.run());
    // The head lets verify_audit_chain notice entries removed from the end of the chain, which
    // the links between the remaining entries cannot show.
    STORE_ASSIGN(head, impl_->query(kUpsertMeta, kAuditHeadKey, audit_head(a.seq, a.hash)));
    STORE_TRY(head.run());
    return a;
  });
}

Result<void> Store::verify_audit_chain() {
  return impl_->in_tx(false, [&]() -> Result<void> {
    STORE_ASSIGN(
        st, impl_->query("SELECT " + std::string(kAuditColumns) + " FROM audit_log ORDER BY seq"));
    std::string expected_prev(kGenesisHash);
    int64_t prev_seq = 0;
    for (;;) {
      STORE_ASSIGN(row, st.step());
      if (!row) break;
      STORE_ASSIGN(a, read_audit(st));
      if (a.prev_hash != expected_prev) {
        return Error(fmt::format(
            "store: audit chain broken at entry {}: it does not follow entry {} (an entry was "
            "removed, inserted or rewritten)",
            a.seq, prev_seq));
      }
      if (audit_hash(a) != a.hash) {
        return Error(fmt::format(
            "store: audit chain broken at entry {}: its contents do not match its hash (the "
            "entry was modified)",
            a.seq));
      }
      expected_prev = a.hash;
      prev_seq = a.seq;
    }
    STORE_ASSIGN(head_st, impl_->query("SELECT value FROM meta WHERE key = ?", kAuditHeadKey));
    STORE_ASSIGN(head_row, head_st.step());
    const std::string head = head_row ? head_st.text(0) : audit_head(0, std::string(kGenesisHash));
    if (head != audit_head(prev_seq, expected_prev)) {
      return Error(fmt::format(
          "store: audit chain truncated: the last entry is {} but the chain's head records "
          "\"{}\" (entries were removed from the end)",
          prev_seq, head));
    }
    return core::ok();
  });
}

Result<std::vector<AuditEntry>> Store::list_audit(int64_t after_seq, int limit) {
  return impl_->in_tx(false, [&]() -> Result<std::vector<AuditEntry>> {
    STORE_ASSIGN(st, impl_->query("SELECT " + std::string(kAuditColumns) +
                                      " FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?",
                                  after_seq, sql_limit(limit)));
    return collect<AuditEntry>(st, read_audit);
  });
}

// ---- Outbox
// --------------------------------------------------------------------------------------

Result<int64_t> Store::enqueue_command(const std::string& deployment_id,
                                       const std::string& command_json) {
  return impl_->in_tx(true, [&]() -> Result<int64_t> {
    STORE_TRY(check_json("command for deployment " + deployment_id, command_json));
    STORE_ASSIGN(st, impl_->query("INSERT INTO outbox (deployment_id, command_json, created_at) "
                                  "VALUES (?, ?, ?)",
                                  deployment_id, command_json, impl_->now_ms()));
    auto done = st.run();
    if (!done.ok())
      return detail::in_context(done.error(), "enqueue command for deployment " + deployment_id);
    return static_cast<int64_t>(sqlite3_last_insert_rowid(impl_->db));
  });
}

Result<std::vector<OutboxCommand>> Store::pending_commands() {
  return impl_->in_tx(false, [&]() -> Result<std::vector<OutboxCommand>> {
    STORE_ASSIGN(st, impl_->query("SELECT id, deployment_id, command_json, created_at FROM outbox "
                                  "WHERE done_at IS NULL ORDER BY id"));
    return collect<OutboxCommand>(st, [](const Stmt& s) -> Result<OutboxCommand> {
      return OutboxCommand{s.int64(0), s.text(1), s.text(2), s.int64(3)};
    });
  });
}

Result<void> Store::mark_command_done(int64_t id) {
  return impl_->in_tx(true, [&]() -> Result<void> {
    STORE_ASSIGN(st, impl_->query("UPDATE outbox SET done_at = COALESCE(done_at, ?) WHERE id = ?",
                                  impl_->now_ms(), id));
    STORE_TRY(st.run());
    if (sqlite3_changes(impl_->db) == 0) return not_found("outbox command", std::to_string(id));
    return core::ok();
  });
}

// ---- Tasks
// ---------------------------------------------------------------------------------------

Result<TaskRecord> Store::insert_task(TaskRecord t) {
  return impl_->in_tx(true, [&]() -> Result<TaskRecord> {
    if (t.task_id.empty()) t.task_id = core::new_id("task");
    t.created_at = impl_->now_ms();
    STORE_ASSIGN(st,
                 impl_->query("INSERT INTO tasks (" + std::string(kTaskColumns) +
                                  ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                              t.task_id, t.service, t.release_id, t.color, t.container, t.pid,
                              t.start_time, t.port, t.log_path, to_string(t.status), t.created_at));
    auto done = st.run();
    if (!done.ok()) return detail::in_context(done.error(), "insert task " + t.task_id);
    return t;
  });
}

Result<void> Store::update_task_status(const std::string& task_id, TaskStatus status) {
  return impl_->in_tx(true, [&]() -> Result<void> {
    STORE_ASSIGN(st, impl_->query("UPDATE tasks SET status = ? WHERE task_id = ?",
                                  to_string(status), task_id));
    STORE_TRY(st.run());
    if (sqlite3_changes(impl_->db) == 0) return not_found("task", task_id);
    return core::ok();
  });
}

Result<void> Store::update_task_process(const std::string& task_id, int64_t pid,
                                        int64_t start_time) {
  return impl_->in_tx(true, [&]() -> Result<void> {
    STORE_ASSIGN(st, impl_->query("UPDATE tasks SET pid = ?, start_time = ? WHERE task_id = ?", pid,
                                  start_time, task_id));
    STORE_TRY(st.run());
    if (sqlite3_changes(impl_->db) == 0) return not_found("task", task_id);
    return core::ok();
  });
}

Result<std::optional<TaskRecord>> Store::get_task(const std::string& task_id) {
  return impl_->in_tx(false, [&]() -> Result<std::optional<TaskRecord>> {
    STORE_ASSIGN(
        st, impl_->query("SELECT " + std::string(kTaskColumns) + " FROM tasks WHERE task_id = ?",
                         task_id));
    return first<TaskRecord>(st, read_task);
  });
}

Result<std::vector<TaskRecord>> Store::list_running_tasks(
    const std::optional<std::string>& service) {
  return impl_->in_tx(false, [&]() -> Result<std::vector<TaskRecord>> {
    STORE_ASSIGN(st, impl_->query("SELECT " + std::string(kTaskColumns) +
                                      " FROM tasks WHERE status = ?1 AND "
                                      "(?2 IS NULL OR service = ?2) ORDER BY created_at, rowid",
                                  to_string(TaskStatus::Running), service));
    return collect<TaskRecord>(st, read_task);
  });
}

// ---- Task definitions
// ---------------------------------------------------------------------------

Result<TaskDefinition> Store::register_task_definition(const std::string& service,
                                                       const std::string& definition_json,
                                                       const std::string& commit_sha) {
  return impl_->in_tx(true, [&]() -> Result<TaskDefinition> {
    const std::string digest = sha256_digest(definition_json);
    STORE_ASSIGN(latest, impl_->query("SELECT " + std::string(kTaskDefinitionColumns) +
                                          " FROM task_definitions WHERE service = ? "
                                          "ORDER BY revision DESC LIMIT 1",
                                      service));
    STORE_ASSIGN(newest, first<TaskDefinition>(latest, read_task_definition));
    if (newest && newest->digest == digest) return *newest;
    TaskDefinition d;
    d.service = service;
    d.revision = newest ? newest->revision + 1 : 1;
    d.digest = digest;
    d.definition_json = definition_json;
    d.commit_sha = commit_sha;
    d.created_at = impl_->now_ms();
    STORE_ASSIGN(
        st, impl_->query("INSERT INTO task_definitions (" + std::string(kTaskDefinitionColumns) +
                             ") VALUES (?, ?, ?, ?, ?, ?)",
                         d.service, d.revision, d.digest, d.definition_json, d.commit_sha,
                         d.created_at));
    STORE_TRY(st.run());
    return d;
  });
}

Result<std::vector<TaskDefinition>> Store::list_task_definitions(const std::string& service,
                                                                 int limit) {
  return impl_->in_tx(false, [&]() -> Result<std::vector<TaskDefinition>> {
    STORE_ASSIGN(st, impl_->query("SELECT " + std::string(kTaskDefinitionColumns) +
                                      " FROM task_definitions WHERE service = ? "
                                      "ORDER BY revision DESC LIMIT ?",
                                  service, sql_limit(limit)));
    return collect<TaskDefinition>(st, read_task_definition);
  });
}

Result<std::optional<TaskDefinition>> Store::get_task_definition(const std::string& service,
                                                                 int64_t revision) {
  return impl_->in_tx(false, [&]() -> Result<std::optional<TaskDefinition>> {
    STORE_ASSIGN(st, impl_->query("SELECT " + std::string(kTaskDefinitionColumns) +
                                      " FROM task_definitions WHERE service = ? AND revision = ?",
                                  service, revision));
    return first<TaskDefinition>(st, read_task_definition);
  });
}

// ---- Live state
// ----------------------------------------------------------------------------------

Result<std::optional<LiveState>> Store::live(const std::string& service) {
  return impl_->in_tx(false, [&]() -> Result<std::optional<LiveState>> {
    STORE_ASSIGN(st, impl_->query("SELECT release_id, color, updated_at FROM live_services "
                                  "WHERE service = ?",
                                  service));
    return first<LiveState>(st, [](const Stmt& s) -> Result<LiveState> {
      return LiveState{s.text(0), s.text(1), s.int64(2)};
    });
  });
}

Result<void> Store::set_live(const std::string& service, const std::string& release_id,
                             const std::string& color) {
  return impl_->in_tx(true, [&]() -> Result<void> {
    STORE_ASSIGN(st, impl_->query("INSERT INTO live_services (service, release_id, color, "
                                  "updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (service) DO "
                                  "UPDATE SET release_id = excluded.release_id, "
                                  "color = excluded.color, updated_at = excluded.updated_at",
                                  service, release_id, color, impl_->now_ms()));
    auto done = st.run();
    if (!done.ok()) return detail::in_context(done.error(), "set live release of " + service);
    return core::ok();
  });
}

// ---- Meta
// ----------------------------------------------------------------------------------------

Result<std::optional<std::string>> Store::get_meta(const std::string& key) {
  return impl_->in_tx(false, [&]() -> Result<std::optional<std::string>> {
    STORE_ASSIGN(st, impl_->query("SELECT value FROM meta WHERE key = ?", key));
    return first<std::string>(st, [](const Stmt& s) -> Result<std::string> { return s.text(0); });
  });
}

Result<void> Store::set_meta(const std::string& key, const std::string& value) {
  return impl_->in_tx(true, [&]() -> Result<void> {
    if (key.starts_with(kReservedMetaPrefix)) {
      return Error(fmt::format("store: meta key \"{}\" is reserved for the store itself", key));
    }
    STORE_ASSIGN(st, impl_->query(kUpsertMeta, key, value));
    return st.run();
  });
}

}  // namespace cutover::store
