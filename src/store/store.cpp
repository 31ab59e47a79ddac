// The connection: opening, pragmas, migrations, transactions and the statement wrapper.
#include "store/store.hpp"

#include <array>
#include <system_error>

#include <fmt/format.h>

#include "store/sqlite_db.hpp"

namespace cutover::store {

// ---- Enums
// ---------------------------------------------------------------------------------------

namespace {

template <typename E, size_t N>
std::optional<E> parse_enum(const std::array<std::string_view, N>& names, std::string_view text) {
  for (size_t i = 0; i < N; ++i) {
    if (names[i] == text) return static_cast<E>(i);
  }
  return std::nullopt;
}

// Indexed by the enum's value; keep in declaration order.
constexpr std::array<std::string_view, 6> kExecutionStatusNames = {
    "queued", "running", "succeeded", "failed", "cancelled", "superseded"};
constexpr std::array<std::string_view, 7> kStageStatusNames = {
    "pending", "running", "waiting", "succeeded", "failed", "skipped", "cancelled"};
constexpr std::array<std::string_view, 3> kLogStreamNames = {"stdout", "stderr", "system"};
constexpr std::array<std::string_view, 6> kDeploymentStatusNames = {
    "in_progress", "succeeded", "failed", "rolled_back", "stopped", "superseded"};
constexpr std::array<std::string_view, 3> kTaskStatusNames = {"running", "stopped", "failed"};

}  // namespace

std::string_view to_string(ExecutionStatus s) {
  return kExecutionStatusNames.at(static_cast<size_t>(s));
}
std::string_view to_string(StageStatus s) { return kStageStatusNames.at(static_cast<size_t>(s)); }
std::string_view to_string(LogStream s) { return kLogStreamNames.at(static_cast<size_t>(s)); }
std::string_view to_string(DeploymentStatus s) {
  return kDeploymentStatusNames.at(static_cast<size_t>(s));
}
std::string_view to_string(TaskStatus s) { return kTaskStatusNames.at(static_cast<size_t>(s)); }

std::optional<ExecutionStatus> parse_execution_status(std::string_view text) {
  return parse_enum<ExecutionStatus>(kExecutionStatusNames, text);
}
std::optional<StageStatus> parse_stage_status(std::string_view text) {
  return parse_enum<StageStatus>(kStageStatusNames, text);
}
std::optional<LogStream> parse_log_stream(std::string_view text) {
  return parse_enum<LogStream>(kLogStreamNames, text);
}
std::optional<DeploymentStatus> parse_deployment_status(std::string_view text) {
  return parse_enum<DeploymentStatus>(kDeploymentStatusNames, text);
}
std::optional<TaskStatus> parse_task_status(std::string_view text) {
  return parse_enum<TaskStatus>(kTaskStatusNames, text);
}

bool is_terminal(ExecutionStatus s) {
  return s != ExecutionStatus::Queued && s != ExecutionStatus::Running;
}
bool is_terminal(StageStatus s) {
  return s != StageStatus::Pending && s != StageStatus::Running && s != StageStatus::Waiting;
}
bool is_terminal(DeploymentStatus s) { return s != DeploymentStatus::InProgress; }

// ---- Statement wrapper
// ---------------------------------------------------------------------------

namespace detail {

core::Error sqlite_error(sqlite3* db, std::string_view what) {
  if (what.empty()) return core::Error(fmt::format("store: {}", sqlite3_errmsg(db)));
  return core::Error(fmt::format("store: {}: {}", what, sqlite3_errmsg(db)));
}

core::Error in_context(const core::Error& e, std::string_view what) {
  constexpr std::string_view kPrefix = "store: ";
  std::string_view rest = e.message;
  if (rest.substr(0, kPrefix.size()) == kPrefix) rest.remove_prefix(kPrefix.size());
  return core::Error(fmt::format("store: {}: {}", what, rest));
}

Stmt::~Stmt() {
  if (stmt_ != nullptr) {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
}

void Stmt::bind(int i, std::string_view v) {
  sqlite3_bind_text64(stmt_, i, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
}
void Stmt::bind(int i, int64_t v) { sqlite3_bind_int64(stmt_, i, v); }
void Stmt::bind(int i, std::nullptr_t) { sqlite3_bind_null(stmt_, i); }

core::Result<bool> Stmt::step() {
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return sqlite_error(db_, "");
}

core::Result<void> Stmt::run() {
  for (;;) {
    auto row = step();
    if (!row.ok()) return row.error();
    if (!*row) return core::ok();
  }
}

std::string Stmt::text(int col) const {
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
  if (p == nullptr) return {};
  return std::string(p, static_cast<size_t>(sqlite3_column_bytes(stmt_, col)));
}
std::optional<std::string> Stmt::opt_text(int col) const {
  if (is_null(col)) return std::nullopt;
  return text(col);
}
int64_t Stmt::int64(int col) const { return sqlite3_column_int64(stmt_, col); }
std::optional<int64_t> Stmt::opt_int64(int col) const {
  if (is_null(col)) return std::nullopt;
  return int64(col);
}
bool Stmt::is_null(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }

}  // namespace detail

// ---- Connection
// ----------------------------------------------------------------------------------

Store::Impl::~Impl() {
  for (auto& [sql, stmt] : cache) sqlite3_finalize(stmt);
  sqlite3_close(db);
}

core::Result<detail::Stmt> Store::Impl::prepare(std::string_view sql) {
  std::string key(sql);
  auto it = cache.find(key);
  if (it == cache.end()) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v3(db, key.c_str(), static_cast<int>(key.size()), SQLITE_PREPARE_PERSISTENT,
                           &stmt, nullptr) != SQLITE_OK) {
      return detail::sqlite_error(db, "prepare \"" + key + "\"");
    }
    it = cache.emplace(std::move(key), stmt).first;
  }
  return detail::Stmt(db, it->second);
}

core::Result<void> Store::Impl::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    // Migrations are long: name only their beginning.
    std::string_view brief(sql);
    if (brief.size() > 60) brief = brief.substr(0, 60);
    core::Error e(
        fmt::format("store: \"{}\": {}", brief, err != nullptr ? err : sqlite3_errmsg(db)));
    sqlite3_free(err);
    return e;
  }
  return core::ok();
}

core::Result<void> Store::Impl::begin(bool write) {
  if (depth == 0) {
    STORE_TRY(exec(write ? "BEGIN IMMEDIATE" : "BEGIN"));
  } else {
    STORE_TRY(exec(fmt::format("SAVEPOINT s{}", depth).c_str()));
  }
  ++depth;
  return core::ok();
}

core::Result<void> Store::Impl::end(bool commit) {
  --depth;
  // SQLite rolls the whole transaction back by itself after some errors (I/O, full disk): then
  // there is nothing left to commit, and saying "ok" would be a lie.
  if (sqlite3_get_autocommit(db) != 0) {
    if (commit) return core::Error("store: the transaction was aborted by SQLite and rolled back");
    return core::ok();
  }
  if (depth == 0) {
    if (commit) {
      auto r = exec("COMMIT");
      if (!r.ok()) {
        if (sqlite3_get_autocommit(db) == 0) (void)exec("ROLLBACK");
        return r;
      }
      return core::ok();
    }
    return exec("ROLLBACK");
  }
  if (commit) return exec(fmt::format("RELEASE s{}", depth).c_str());
  return exec(fmt::format("ROLLBACK TO s{0}; RELEASE s{0}", depth).c_str());
}

// ---- Migrations
// ----------------------------------------------------------------------------------

namespace {

// Step i (0-based) takes user_version i to i + 1. Append new steps; never edit a released one.
const char* const kMigrations[] = {
    // 1: the initial schema.
    R"sql(
CREATE TABLE executions (
  id TEXT PRIMARY KEY,
  commit_sha TEXT NOT NULL,
  branch TEXT NOT NULL,
  status TEXT NOT NULL,
  message TEXT NOT NULL DEFAULT '',
  created_at INTEGER NOT NULL,
  started_at INTEGER,
  finished_at INTEGER
);
CREATE INDEX executions_by_commit ON executions(commit_sha, created_at);
CREATE INDEX executions_by_created ON executions(created_at);

CREATE TABLE stage_runs (
  execution_id TEXT NOT NULL REFERENCES executions(id) ON DELETE CASCADE,
  idx INTEGER NOT NULL,
  name TEXT NOT NULL,
  status TEXT NOT NULL,
  started_at INTEGER,
  finished_at INTEGER,
  exit_code INTEGER,
  message TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (execution_id, idx)
) WITHOUT ROWID;

CREATE TABLE execution_logs (
  execution_id TEXT NOT NULL REFERENCES executions(id) ON DELETE CASCADE,
  seq INTEGER NOT NULL,
  time INTEGER NOT NULL,
  stage TEXT NOT NULL,
  stream TEXT NOT NULL,
  text TEXT NOT NULL,
  PRIMARY KEY (execution_id, seq)
) WITHOUT ROWID;

CREATE TABLE releases (
  id TEXT PRIMARY KEY,
  service TEXT NOT NULL,
  commit_sha TEXT NOT NULL,
  execution_id TEXT REFERENCES executions(id),
  artifact_digest TEXT NOT NULL,
  artifact_path TEXT NOT NULL,
  task_revision TEXT NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE INDEX releases_by_service ON releases(service, created_at);
CREATE INDEX releases_by_commit ON releases(service, commit_sha, created_at);

CREATE TABLE deployments (
  id TEXT PRIMARY KEY,
  service TEXT NOT NULL,
  release_id TEXT NOT NULL REFERENCES releases(id),
  previous_release_id TEXT REFERENCES releases(id),
  status TEXT NOT NULL,
  phase TEXT NOT NULL,
  state_json TEXT NOT NULL,
  reason TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  finished_at INTEGER
);
CREATE INDEX deployments_by_service ON deployments(service, created_at);
CREATE INDEX deployments_by_status ON deployments(service, status);

CREATE TABLE deployment_events (
  deployment_id TEXT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
  seq INTEGER NOT NULL,
  time INTEGER NOT NULL,
  type TEXT NOT NULL,
  detail_json TEXT NOT NULL,
  PRIMARY KEY (deployment_id, seq)
) WITHOUT ROWID;

CREATE TABLE audit_log (
  seq INTEGER PRIMARY KEY,
  time INTEGER NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  subject TEXT NOT NULL,
  detail_json TEXT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);

CREATE TABLE outbox (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  deployment_id TEXT NOT NULL REFERENCES deployments(id),
  command_json TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  done_at INTEGER
);
CREATE INDEX outbox_pending ON outbox(id) WHERE done_at IS NULL;

CREATE TABLE tasks (
  task_id TEXT PRIMARY KEY,
  service TEXT NOT NULL,
  release_id TEXT NOT NULL REFERENCES releases(id),
  color TEXT NOT NULL,
  container TEXT NOT NULL,
  pid INTEGER NOT NULL,
  start_time INTEGER NOT NULL,
  port INTEGER NOT NULL,
  log_path TEXT NOT NULL,
  status TEXT NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE INDEX tasks_by_status ON tasks(status, service);

CREATE TABLE live_services (
  service TEXT PRIMARY KEY,
  release_id TEXT NOT NULL REFERENCES releases(id),
  color TEXT NOT NULL,
  updated_at INTEGER NOT NULL
);

CREATE TABLE meta (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
)sql",
    // 2: the secret store. Values are sealed before they reach SQL (store/secrets.hpp): the file
    // only ever holds ciphertext.
    R"sql(
CREATE TABLE secrets (
  name TEXT PRIMARY KEY,
  key_id TEXT NOT NULL,
  nonce TEXT NOT NULL,
  ciphertext TEXT NOT NULL,
  version INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
) WITHOUT ROWID;
)sql",
    // 3: task definitions with revisions (web:1, web:2, ...), immutable once written.
    R"sql(
CREATE TABLE task_definitions (
  service TEXT NOT NULL,
  revision INTEGER NOT NULL,
  digest TEXT NOT NULL,
  definition_json TEXT NOT NULL,
  commit_sha TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (service, revision)
);
CREATE TRIGGER task_definitions_immutable BEFORE UPDATE ON task_definitions
BEGIN SELECT RAISE(ABORT, 'task definitions are immutable'); END;
)sql",
};
constexpr int kMigrationCount = static_cast<int>(std::size(kMigrations));
static_assert(kMigrationCount == kSchemaVersion, "kSchemaVersion must match the migration list");

core::Result<int> read_user_version(Store::Impl& impl) {
  auto st = impl.prepare("PRAGMA user_version");
  if (!st.ok()) return st.error();
  auto row = st->step();
  if (!row.ok()) return row.error();
  return static_cast<int>(st->int64(0));
}

// Applies the missing steps, each in its own transaction together with its user_version bump, so
// a crash between steps leaves a database at a well-defined version.
core::Result<void> migrate(Store::Impl& impl, const std::filesystem::path& file) {
  for (;;) {
    // Checked inside a write transaction: another process opening the same file at the same
    // moment cannot apply the same step twice.
    auto stepped = impl.in_tx(true, [&]() -> core::Result<bool> {
      auto version = read_user_version(impl);
      if (!version.ok()) return version.error();
      if (*version > kSchemaVersion) {
        return core::Error(fmt::format(
            "store: {} has schema version {}, but this cutover binary supports up to {}; "
            "upgrade cutover (or restore a backup made by this version)",
            file.string(), *version, kSchemaVersion));
      }
      if (*version == kSchemaVersion) return false;
      auto applied = impl.exec(kMigrations[*version]);
      if (!applied.ok()) {
        return detail::in_context(applied.error(),
                                  fmt::format("migration to schema version {}", *version + 1));
      }
      STORE_TRY(impl.exec(fmt::format("PRAGMA user_version = {}", *version + 1).c_str()));
      return true;
    });
    if (!stepped.ok()) return stepped.error();
    if (!*stepped) return core::ok();
  }
}

}  // namespace

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Store::~Store() = default;

core::Result<std::unique_ptr<Store>> Store::open(const std::filesystem::path& db_file,
                                                 core::Clock& clock) {
  if (db_file.has_parent_path()) {
    std::error_code ec;
    std::filesystem::create_directories(db_file.parent_path(), ec);
    if (ec) {
      return core::Error(fmt::format("store: cannot create directory {}: {}",
                                     db_file.parent_path().string(), ec.message()));
    }
  }
  // The state names deployments, tasks and audit actors: readable by its owner only. SQLite gives
  // the -wal and -shm files the database file's permissions.
  const bool created = !std::filesystem::exists(db_file);
  sqlite3* db = nullptr;
  const int rc =
      sqlite3_open_v2(db_file.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    core::Error e(fmt::format("store: cannot open {}: {}", db_file.string(),
                              db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc)));
    sqlite3_close(db);
    return e;
  }
  auto impl = std::make_unique<Impl>(db, clock);  // owns db from here on
  if (created) {
    std::error_code ec;
    std::filesystem::permissions(
        db_file, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write, ec);
  }
  sqlite3_extended_result_codes(db, 1);

  // busy_timeout first: the other pragmas may already need a lock held by another process.
  sqlite3_busy_timeout(db, 5000);
  std::string mode;
  {
    auto wal = impl->prepare("PRAGMA journal_mode = WAL");
    if (!wal.ok()) return detail::in_context(wal.error(), db_file.string());
    auto row = wal->step();
    if (!row.ok()) return detail::in_context(row.error(), db_file.string());
    if (*row) mode = wal->text(0);
  }
  if (mode != "wal") {
    return core::Error(
        fmt::format("store: {}: cannot switch to WAL journal mode (got \"{}\"); is it on a network "
                    "file system?",
                    db_file.string(), mode));
  }
  auto pragmas = impl->exec("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;");
  if (!pragmas.ok()) return detail::in_context(pragmas.error(), db_file.string());

  auto migrated = migrate(*impl, db_file);
  if (!migrated.ok()) return migrated.error();
  return std::unique_ptr<Store>(new Store(std::move(impl)));
}

core::Result<void> Store::transaction(const std::function<core::Result<void>(Store&)>& fn) {
  return impl_->in_tx(true, [&] { return fn(*this); });
}

}  // namespace cutover::store
