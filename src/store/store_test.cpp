#include "store/store.hpp"

#include <sqlite3.h>

#include <atomic>
#include <filesystem>
#include <set>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/id.hpp"

namespace cutover::store {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("cutover-store-test-" + core::random_hex(6));
    db_file_ = dir_ / "state" / "cutover.db";
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::unique_ptr<Store> open() {
    auto s = Store::open(db_file_, clock_);
    EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message);
    return s.ok() ? std::move(s.value()) : nullptr;
  }

  // Runs SQL through a second, raw connection (as an attacker or an old binary would).
  void raw_exec(const std::string& sql) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(db_file_.c_str(), &db), SQLITE_OK);
    char* err = nullptr;
    const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
    EXPECT_EQ(rc, SQLITE_OK) << (err != nullptr ? err : "");
    sqlite3_free(err);
    sqlite3_close(db);
  }

  Execution make_execution(Store& s, const std::string& sha = "abc123") {
    auto e = s.insert_execution({.commit_sha = sha, .branch = "main"});
    EXPECT_TRUE(e.ok()) << (e.ok() ? "" : e.error().message);
    return e.ok() ? e.value() : Execution{};
  }

  Release make_release(Store& s, const std::string& service = "web") {
    auto r = s.insert_release({.service = service,
                               .commit_sha = "abc123",
                               .artifact_digest = "sha256:00",
                               .artifact_path = "/var/lib/cutover/a",
                               .task_revision = "1"});
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    return r.ok() ? r.value() : Release{};
  }

  Deployment make_deployment(Store& s, const std::string& release_id) {
    auto d = s.insert_deployment({.service = "web", .release_id = release_id, .phase = "start"});
    EXPECT_TRUE(d.ok()) << (d.ok() ? "" : d.error().message);
    return d.ok() ? d.value() : Deployment{};
  }

  fs::path dir_;
  fs::path db_file_;
  core::SimulatedClock clock_;
};

TEST(StoreEnums, RoundTrip) {
  for (auto s :
       {ExecutionStatus::Queued, ExecutionStatus::Running, ExecutionStatus::Succeeded,
        ExecutionStatus::Failed, ExecutionStatus::Cancelled, ExecutionStatus::Superseded}) {
    EXPECT_EQ(parse_execution_status(to_string(s)), s);
  }
  for (auto s :
       {DeploymentStatus::InProgress, DeploymentStatus::Succeeded, DeploymentStatus::Failed,
        DeploymentStatus::RolledBack, DeploymentStatus::Stopped, DeploymentStatus::Superseded}) {
    EXPECT_EQ(parse_deployment_status(to_string(s)), s);
  }
  EXPECT_EQ(to_string(DeploymentStatus::RolledBack), "rolled_back");
  EXPECT_EQ(to_string(StageStatus::Waiting), "waiting");
  EXPECT_EQ(parse_log_stream("stderr"), LogStream::Stderr);
  EXPECT_EQ(parse_task_status("stopped"), TaskStatus::Stopped);
  EXPECT_FALSE(parse_execution_status("Queued"));
  EXPECT_FALSE(parse_deployment_status(""));
}

TEST_F(StoreTest, MigratesEmptyDatabaseToWal) {
  auto s = open();
  ASSERT_TRUE(s);
  EXPECT_TRUE(fs::exists(db_file_));
  EXPECT_EQ(fs::status(db_file_).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
  s.reset();

  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(db_file_.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(st, 0), kSchemaVersion);
  sqlite3_finalize(st);
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)), "wal");
  sqlite3_finalize(st);
  sqlite3_close(db);
}

TEST_F(StoreTest, RefusesNewerSchema) {
  ASSERT_TRUE(open());
  raw_exec("PRAGMA user_version = " + std::to_string(kSchemaVersion + 1));
  auto s = Store::open(db_file_, clock_);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error().message, HasSubstr("schema version " + std::to_string(kSchemaVersion + 1)));
  EXPECT_THAT(s.error().message, HasSubstr("upgrade cutover"));
}

TEST_F(StoreTest, ReportsUnopenableFile) {
  fs::create_directories(db_file_);  // a directory where the file should be
  auto s = Store::open(db_file_, clock_);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error().message, HasSubstr(db_file_.string()));
}

TEST_F(StoreTest, ExecutionLifecycleAndReopen) {
  std::string id;
  {
    auto s = open();
    ASSERT_TRUE(s);
    Execution e = make_execution(*s);
    id = e.id;
    EXPECT_THAT(id, ::testing::StartsWith("ex-"));
    EXPECT_EQ(e.created_at, core::to_unix_ms(clock_.wall()));
    clock_.advance(core::Duration{1000});
    ASSERT_TRUE(s->update_execution_status(id, ExecutionStatus::Running).ok());
    clock_.advance(core::Duration{1000});
    ASSERT_TRUE(s->update_execution_status(id, ExecutionStatus::Failed, "test failed").ok());
    auto dup = s->insert_execution({.id = id, .commit_sha = "x", .branch = "main"});
    ASSERT_FALSE(dup.ok());
    EXPECT_EQ(dup.error().message,
              "store: insert execution " + id + ": UNIQUE constraint failed: executions.id");
    auto missing = s->update_execution_status("ex-nope", ExecutionStatus::Running);
    ASSERT_FALSE(missing.ok());
    EXPECT_THAT(missing.error().message, HasSubstr("ex-nope"));
  }
  auto s = open();
  ASSERT_TRUE(s);
  auto got = s->get_execution(id);
  ASSERT_TRUE(got.ok());
  ASSERT_TRUE(got->has_value());
  const Execution& e = **got;
  EXPECT_EQ(e.status, ExecutionStatus::Failed);
  EXPECT_EQ(e.message, "test failed");
  EXPECT_EQ(e.branch, "main");
  ASSERT_TRUE(e.started_at && e.finished_at);
  EXPECT_EQ(*e.started_at - e.created_at, 1000);
  EXPECT_EQ(*e.finished_at - e.created_at, 2000);
  EXPECT_FALSE(s->get_execution("ex-nope")->has_value());
}

TEST_F(StoreTest, ListsExecutionsNewestFirst) {
  auto s = open();
  ASSERT_TRUE(s);
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(make_execution(*s, i % 2 == 0 ? "even" : "odd").id);
  }
  auto list = s->list_executions(3);
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 3u);
  EXPECT_EQ((*list)[0].id, ids[4]);
  EXPECT_EQ((*list)[2].id, ids[2]);
  EXPECT_EQ(s->list_executions(0)->size(), 5u);
  auto latest = s->latest_execution_for_commit("odd");
  ASSERT_TRUE(latest.ok() && latest->has_value());
  EXPECT_EQ((*latest)->id, ids[3]);
  EXPECT_FALSE(s->latest_execution_for_commit("none")->has_value());
}

TEST_F(StoreTest, StageRuns) {
  auto s = open();
  ASSERT_TRUE(s);
  Execution e = make_execution(*s);
  ASSERT_TRUE(s->upsert_stage_run({.execution_id = e.id, .index = 1, .name = "build"}).ok());
  ASSERT_TRUE(s->upsert_stage_run({.execution_id = e.id, .index = 0, .name = "test"}).ok());
  ASSERT_TRUE(s->update_stage_status(e.id, 0, StageStatus::Running).ok());
  ASSERT_TRUE(s->update_stage_status(e.id, 0, StageStatus::Failed, 2, "exit 2").ok());
  EXPECT_FALSE(s->update_stage_status(e.id, 7, StageStatus::Running).ok());
  EXPECT_FALSE(s->upsert_stage_run({.execution_id = "ex-nope", .index = 0, .name = "x"}).ok());

  auto runs = s->list_stage_runs(e.id);
  ASSERT_TRUE(runs.ok());
  ASSERT_EQ(runs->size(), 2u);
  EXPECT_EQ((*runs)[0].name, "test");
  EXPECT_EQ((*runs)[0].status, StageStatus::Failed);
  EXPECT_EQ((*runs)[0].exit_code, 2);
  EXPECT_EQ((*runs)[0].message, "exit 2");
  EXPECT_TRUE((*runs)[0].started_at && (*runs)[0].finished_at);
  EXPECT_EQ((*runs)[1].name, "build");
  EXPECT_EQ((*runs)[1].status, StageStatus::Pending);
  EXPECT_FALSE((*runs)[1].exit_code);
}

TEST_F(StoreTest, LogSeqIsMonotonicAndPages) {
  auto s = open();
  ASSERT_TRUE(s);
  Execution a = make_execution(*s);
  Execution b = make_execution(*s);
  auto first = s->append_log(a.id, "test", LogStream::System, "starting");
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(*first, 1);

  std::vector<LogAppend> batch;
  for (int i = 0; i < 1000; ++i) {
    batch.push_back({a.id, "test", LogStream::Stdout, "line " + std::to_string(i)});
    if (i % 100 == 0) batch.push_back({b.id, "build", LogStream::Stderr, "b " + std::to_string(i)});
  }
  auto last = s->append_logs(batch);
  ASSERT_TRUE(last.ok()) << last.error().message;
  EXPECT_EQ(*last, 1001);  // the last line of the batch belongs to a

  int64_t after = 0;
  int pages = 0;
  std::vector<LogLine> all;
  for (;;) {
    auto page = s->read_logs(a.id, after, 300);
    ASSERT_TRUE(page.ok());
    if (page->empty()) break;
    ++pages;
    for (auto& line : *page) {
      EXPECT_EQ(line.seq, after + 1);
      after = line.seq;
      all.push_back(line);
    }
  }
  EXPECT_EQ(pages, 4);
  ASSERT_EQ(all.size(), 1001u);
  EXPECT_EQ(all[0].stream, LogStream::System);
  EXPECT_EQ(all[1].text, "line 0");
  EXPECT_EQ(all[1000].text, "line 999");

  auto bl = s->read_logs(b.id, 0, 0);
  ASSERT_TRUE(bl.ok());
  ASSERT_EQ(bl->size(), 10u);
  EXPECT_EQ(bl->back().seq, 10);
  EXPECT_EQ(bl->back().stream, LogStream::Stderr);

  // A line for an unknown execution fails the whole batch.
  auto bad = s->append_logs(
      {{a.id, "x", LogStream::Stdout, "kept?"}, {"ex-nope", "x", LogStream::Stdout, "no"}});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.error().message, HasSubstr("ex-nope"));
  EXPECT_TRUE(s->read_logs(a.id, 1001, 10)->empty());
}

TEST_F(StoreTest, ReleasesAndDeployments) {
  auto s = open();
  ASSERT_TRUE(s);
  Execution e = make_execution(*s);
  Release r1 = make_release(*s);
  auto r2 = s->insert_release({.service = "web",
                               .commit_sha = "def456",
                               .execution_id = e.id,
                               .artifact_digest = "sha256:11",
                               .artifact_path = "/p",
                               .task_revision = "2"});
  ASSERT_TRUE(r2.ok());
  EXPECT_FALSE(s->insert_release({.service = "web", .execution_id = "ex-nope"}).ok());

  EXPECT_EQ(s->get_release(r1.id).value()->execution_id, "");
  EXPECT_EQ(s->get_release(r2->id).value()->execution_id, e.id);
  auto releases = s->list_releases("web", 10);
  ASSERT_EQ(releases->size(), 2u);
  EXPECT_EQ((*releases)[0].id, r2->id);
  EXPECT_EQ(s->find_release("web", "def456").value()->id, r2->id);
  EXPECT_FALSE(s->find_release("api", "def456").value().has_value());

  auto d = s->insert_deployment({.service = "web",
                                 .release_id = r2->id,
                                 .previous_release_id = r1.id,
                                 .phase = "before_install",
                                 .state_json = R"({"step":0})"});
  ASSERT_TRUE(d.ok()) << d.error().message;
  EXPECT_FALSE(s->insert_deployment({.service = "web", .release_id = "rel-nope"}).ok());
  auto bad_json = s->insert_deployment({.service = "web", .release_id = r1.id, .state_json = "{"});
  ASSERT_FALSE(bad_json.ok());
  EXPECT_THAT(bad_json.error().message, HasSubstr("not valid JSON"));

  auto active = s->active_deployment("web");
  ASSERT_TRUE(active.ok() && active->has_value());
  EXPECT_EQ((*active)->id, d->id);

  clock_.advance(core::Duration{5000});
  auto updated = s->update_deployment(
      d->id, {DeploymentStatus::RolledBack, "rollback", R"({"step":3})", "alarm new-version-5xx"});
  ASSERT_TRUE(updated.ok()) << updated.error().message;
  EXPECT_EQ(updated->status, DeploymentStatus::RolledBack);
  EXPECT_EQ(updated->previous_release_id, r1.id);
  EXPECT_EQ(updated->updated_at - updated->created_at, 5000);
  EXPECT_EQ(updated->finished_at, updated->updated_at);
  EXPECT_EQ(updated->reason, "alarm new-version-5xx");
  EXPECT_FALSE(s->active_deployment("web").value().has_value());
  EXPECT_FALSE(s->update_deployment("dep-nope", {}).ok());

  auto d2 = make_deployment(*s, r1.id);
  auto list = s->list_deployments("web", 0);
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].id, d2.id);
  EXPECT_FALSE((*list)[0].previous_release_id);

  EXPECT_EQ(s->append_deployment_event(d->id, "started").value(), 1);
  EXPECT_EQ(s->append_deployment_event(d->id, "weights", R"({"green":10})").value(), 2);
  EXPECT_EQ(s->append_deployment_event(d2.id, "started").value(), 1);
  EXPECT_FALSE(s->append_deployment_event("dep-nope", "x").ok());
  auto events = s->list_deployment_events(d->id);
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ((*events)[1].type, "weights");
  EXPECT_EQ((*events)[1].detail_json, R"({"green":10})");
  EXPECT_EQ(s->list_deployment_events(d->id, 1)->size(), 1u);
}

TEST_F(StoreTest, TransactionRollsBackOnError) {
  auto s = open();
  ASSERT_TRUE(s);
  auto r = s->transaction([&](Store& tx) -> core::Result<void> {
    auto e = tx.insert_execution({.commit_sha = "x", .branch = "main"});
    if (!e.ok()) return e.error();
    if (auto m = tx.set_meta("k", "v"); !m.ok()) return m;
    return core::Error("validation failed");
  });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "validation failed");
  EXPECT_TRUE(s->list_executions(0)->empty());
  EXPECT_FALSE(s->get_meta("k").value().has_value());

  // An exception inside the callback is an error too, and rolls back.
  auto thrown = s->transaction([&](Store& tx) -> core::Result<void> {
    (void)tx.set_meta("k", "v");
    throw std::runtime_error("boom");
  });
  ASSERT_FALSE(thrown.ok());
  EXPECT_THAT(thrown.error().message, HasSubstr("boom"));
  EXPECT_FALSE(s->get_meta("k").value().has_value());

  // Usable afterwards, and a successful transaction commits everything.
  ASSERT_TRUE(s->transaction([&](Store& tx) -> core::Result<void> {
                 if (auto m = tx.set_meta("a", "1"); !m.ok()) return m;
                 return tx.set_meta("b", "2");
               }).ok());
  EXPECT_EQ(s->get_meta("a").value(), "1");
  EXPECT_EQ(s->get_meta("b").value(), "2");
}

TEST_F(StoreTest, NestedTransactionIsASavepoint) {
  auto s = open();
  ASSERT_TRUE(s);
  auto r = s->transaction([&](Store& tx) -> core::Result<void> {
    if (auto m = tx.set_meta("outer", "1"); !m.ok()) return m;
    auto inner = tx.transaction([&](Store& tx2) -> core::Result<void> {
      (void)tx2.set_meta("inner", "1");
      return core::Error("inner failed");
    });
    EXPECT_FALSE(inner.ok());
    // The inner rollback does not end the outer transaction.
    EXPECT_FALSE(tx.get_meta("inner").value().has_value());
    auto ok_inner = tx.transaction([&](Store& tx2) { return tx2.set_meta("inner2", "1"); });
    EXPECT_TRUE(ok_inner.ok());
    return core::ok();
  });
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(s->get_meta("outer").value(), "1");
  EXPECT_FALSE(s->get_meta("inner").value().has_value());
  EXPECT_EQ(s->get_meta("inner2").value(), "1");

  // An outer failure discards the committed inner savepoint as well.
  auto r2 = s->transaction([&](Store& tx) -> core::Result<void> {
    auto inner = tx.transaction([&](Store& tx2) { return tx2.set_meta("gone", "1"); });
    EXPECT_TRUE(inner.ok());
    return core::Error("outer failed");
  });
  EXPECT_FALSE(r2.ok());
  EXPECT_FALSE(s->get_meta("gone").value().has_value());
}

TEST_F(StoreTest, AuditChainVerifiesAndDetectsTampering) {
  {
    auto s = open();
    ASSERT_TRUE(s);
    EXPECT_TRUE(s->verify_audit_chain().ok());  // empty chain
    for (int i = 0; i < 5; ++i) {
      auto a = s->append_audit("operator:alice", "rollback", "service:web",
                               R"({"n":)" + std::to_string(i) + "}");
      ASSERT_TRUE(a.ok());
      EXPECT_EQ(a->seq, i + 1);
      EXPECT_EQ(a->hash.size(), 64u);
    }
    auto list = s->list_audit(0, 0);
    ASSERT_EQ(list->size(), 5u);
    EXPECT_EQ((*list)[0].prev_hash, std::string(64, '0'));
    EXPECT_EQ((*list)[1].prev_hash, (*list)[0].hash);
    EXPECT_EQ(s->list_audit(3, 10)->size(), 2u);
    auto v = s->verify_audit_chain();
    EXPECT_TRUE(v.ok()) << v.error().message;
  }
  // Rewrite one entry's actor behind the store's back.
  raw_exec("UPDATE audit_log SET actor = 'operator:mallory' WHERE seq = 3");
  {
    auto s = open();
    ASSERT_TRUE(s);
    auto v = s->verify_audit_chain();
    ASSERT_FALSE(v.ok());
    EXPECT_THAT(v.error().message, HasSubstr("entry 3"));
  }
  // Recomputing that entry's hash does not help: the next entry no longer follows it.
  raw_exec("UPDATE audit_log SET actor = 'operator:alice', hash = 'ff' WHERE seq = 3");
  {
    auto s = open();
    auto v = s->verify_audit_chain();
    ASSERT_FALSE(v.ok());
    EXPECT_THAT(v.error().message, HasSubstr("entry 3"));
  }
}

TEST_F(StoreTest, AuditChainDetectsDeletedEntry) {
  {
    auto s = open();
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(s->append_audit("a", "b", "c").ok());
  }
  raw_exec("DELETE FROM audit_log WHERE seq = 2");
  auto s = open();
  auto v = s->verify_audit_chain();
  ASSERT_FALSE(v.ok());
  EXPECT_THAT(v.error().message, HasSubstr("entry 3"));
}

TEST_F(StoreTest, AuditChainDetectsTruncation) {
  {
    auto s = open();
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(s->append_audit("a", "b", "c").ok());
    EXPECT_FALSE(s->set_meta("store.audit_head", "0 x").ok());  // reserved
  }
  raw_exec("DELETE FROM audit_log WHERE seq = 3");
  auto s = open();
  auto v = s->verify_audit_chain();
  ASSERT_FALSE(v.ok());
  EXPECT_THAT(v.error().message, HasSubstr("truncated"));
  // Appending goes on from the recorded head, so the gap stays visible.
  auto next = s->append_audit("a", "b", "c");
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->seq, 4);
  v = s->verify_audit_chain();
  ASSERT_FALSE(v.ok());
  EXPECT_THAT(v.error().message, HasSubstr("entry 4: it does not follow entry 2"));
}

TEST_F(StoreTest, OutboxKeepsOrderAndCommitsWithDecision) {
  auto s = open();
  ASSERT_TRUE(s);
  Release r = make_release(*s);
  Deployment d = make_deployment(*s, r.id);
  std::vector<int64_t> ids;
  auto tx = s->transaction([&](Store& t) -> core::Result<void> {
    auto u = t.update_deployment(d.id, {DeploymentStatus::InProgress, "install", "{}", ""});
    if (!u.ok()) return u.error();
    for (int i = 0; i < 5; ++i) {
      auto id = t.enqueue_command(d.id, R"({"cmd":)" + std::to_string(i) + "}");
      if (!id.ok()) return id.error();
      ids.push_back(*id);
    }
    return core::ok();
  });
  ASSERT_TRUE(tx.ok()) << tx.error().message;
  ASSERT_TRUE(std::is_sorted(ids.begin(), ids.end()));

  // A decision that fails leaves no command behind.
  auto failed = s->transaction([&](Store& t) -> core::Result<void> {
    (void)t.enqueue_command(d.id, R"({"cmd":"lost"})");
    return core::Error("decision rejected");
  });
  ASSERT_FALSE(failed.ok());
  EXPECT_FALSE(s->enqueue_command(d.id, "not json").ok());

  ASSERT_TRUE(s->mark_command_done(ids[1]).ok());
  ASSERT_TRUE(s->mark_command_done(ids[1]).ok());  // idempotent
  EXPECT_FALSE(s->mark_command_done(999999).ok());
  auto pending = s->pending_commands();
  ASSERT_TRUE(pending.ok());
  ASSERT_EQ(pending->size(), 4u);
  EXPECT_EQ((*pending)[0].command_json, R"({"cmd":0})");
  EXPECT_EQ((*pending)[1].command_json, R"({"cmd":2})");
  EXPECT_EQ((*pending)[3].command_json, R"({"cmd":4})");
  EXPECT_EQ((*pending)[0].deployment_id, d.id);
}

TEST_F(StoreTest, TasksLiveAndMeta) {
  auto s = open();
  ASSERT_TRUE(s);
  Release r = make_release(*s);
  auto t1 = s->insert_task({.service = "web",
                            .release_id = r.id,
                            .color = "green",
                            .container = "app",
                            .pid = 4242,
                            .start_time = 123456789,
                            .port = 30001,
                            .log_path = "/logs/t1"});
  ASSERT_TRUE(t1.ok());
  EXPECT_THAT(t1->task_id, ::testing::StartsWith("task-"));
  auto t2 = s->insert_task({.task_id = "task-api", .service = "api", .release_id = r.id});
  ASSERT_TRUE(t2.ok());
  EXPECT_FALSE(s->insert_task({.task_id = "task-api", .service = "api", .release_id = r.id}).ok());

  EXPECT_EQ(s->list_running_tasks()->size(), 2u);
  auto web = s->list_running_tasks("web");
  ASSERT_EQ(web->size(), 1u);
  EXPECT_EQ((*web)[0].pid, 4242);
  EXPECT_EQ((*web)[0].start_time, 123456789);
  EXPECT_EQ((*web)[0].port, 30001);
  ASSERT_TRUE(s->update_task_process(t1->task_id, 5151, 987654321).ok());  // restarted
  EXPECT_FALSE(s->update_task_process("task-nope", 1, 1).ok());
  EXPECT_EQ(s->get_task(t1->task_id).value()->pid, 5151);
  EXPECT_EQ(s->get_task(t1->task_id).value()->start_time, 987654321);
  EXPECT_EQ(s->get_task(t1->task_id).value()->port, 30001);
  ASSERT_TRUE(s->update_task_status(t1->task_id, TaskStatus::Stopped).ok());
  EXPECT_FALSE(s->update_task_status("task-nope", TaskStatus::Stopped).ok());
  EXPECT_TRUE(s->list_running_tasks("web")->empty());
  EXPECT_EQ(s->get_task(t1->task_id).value()->status, TaskStatus::Stopped);

  EXPECT_FALSE(s->live("web").value().has_value());
  ASSERT_TRUE(s->set_live("web", r.id, "blue").ok());
  clock_.advance(core::Duration{10});
  ASSERT_TRUE(s->set_live("web", r.id, "green").ok());
  auto live = s->live("web");
  ASSERT_TRUE(live.ok() && live->has_value());
  EXPECT_EQ((*live)->color, "green");
  EXPECT_EQ((*live)->updated_at, core::to_unix_ms(clock_.wall()));
  EXPECT_FALSE(s->set_live("web", "rel-nope", "blue").ok());

  EXPECT_FALSE(s->get_meta("source.last_commit").value().has_value());
  ASSERT_TRUE(s->set_meta("source.last_commit", "abc").ok());
  ASSERT_TRUE(s->set_meta("source.last_commit", "def").ok());
  EXPECT_EQ(s->get_meta("source.last_commit").value(), "def");
}

TEST_F(StoreTest, ConcurrentCallsFromFourThreads) {
  auto s = open();
  ASSERT_TRUE(s);
  Execution shared = make_execution(*s);
  constexpr int kThreads = 4;
  constexpr int kPerThread = 50;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        if (!s->insert_execution({.commit_sha = "t" + std::to_string(t), .branch = "main"}).ok()) {
          ++failures;
        }
        if (!s->append_log(shared.id, "s", LogStream::Stdout, "x").ok()) ++failures;
        if (!s->append_audit("thread", "act", std::to_string(t)).ok()) ++failures;
        auto tx = s->transaction([&](Store& tx) -> core::Result<void> {
          auto v = tx.get_meta("counter");
          if (!v.ok()) return v.error();
          const int n = v->has_value() ? std::stoi(**v) : 0;
          return tx.set_meta("counter", std::to_string(n + 1));
        });
        if (!tx.ok()) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(s->list_executions(0)->size(), 1u + kThreads * kPerThread);
  auto logs = s->read_logs(shared.id, 0, 0);
  ASSERT_EQ(logs->size(), static_cast<size_t>(kThreads * kPerThread));
  for (size_t i = 0; i < logs->size(); ++i) EXPECT_EQ((*logs)[i].seq, static_cast<int64_t>(i + 1));
  EXPECT_EQ(s->get_meta("counter").value(), std::to_string(kThreads * kPerThread));
  EXPECT_TRUE(s->verify_audit_chain().ok());
  EXPECT_EQ(s->list_audit(0, 0)->size(), static_cast<size_t>(kThreads * kPerThread));
}

TEST_F(StoreTest, TwoStoresOnOneFile) {
  // A second process (here: a second connection) sees committed writes; WAL lets both work.
  auto a = open();
  auto b = open();
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(a->set_meta("k", "from a").ok());
  EXPECT_EQ(b->get_meta("k").value(), "from a");
  ASSERT_TRUE(b->set_meta("k", "from b").ok());
  EXPECT_EQ(a->get_meta("k").value(), "from b");
}

TEST_F(StoreTest, TaskDefinitionRevisions) {
  auto s = open();
  ASSERT_TRUE(s);
  const std::string a = R"({"count":1})";
  const std::string b = R"({"count":2})";
  auto r1 = s->register_task_definition("web", a, "c1");
  ASSERT_TRUE(r1.ok()) << r1.error().message;
  EXPECT_EQ(r1->revision, 1);
  EXPECT_THAT(r1->digest, ::testing::StartsWith("sha256:"));
  EXPECT_EQ(r1->digest.size(), 7u + 64u);
  // The same definition again: the same revision, nothing written.
  auto again = s->register_task_definition("web", a, "c2");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->revision, 1);
  EXPECT_EQ(again->commit_sha, "c1");
  auto r2 = s->register_task_definition("web", b, "c3");
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(r2->revision, 2);
  EXPECT_NE(r2->digest, r1->digest);
  // Back to the first definition: a change too, so a new revision.
  auto r3 = s->register_task_definition("web", a, "c4");
  ASSERT_TRUE(r3.ok());
  EXPECT_EQ(r3->revision, 3);
  EXPECT_EQ(r3->digest, r1->digest);
  // Revisions count per service.
  auto other = s->register_task_definition("api", b, "c3");
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->revision, 1);

  auto list = s->list_task_definitions("web", 0);
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 3u);
  EXPECT_EQ((*list)[0].revision, 3);
  EXPECT_EQ((*list)[2].revision, 1);
  EXPECT_EQ(s->list_task_definitions("web", 1)->size(), 1u);
  auto got = s->get_task_definition("web", 2);
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->definition_json, b);
  EXPECT_EQ((*got)->commit_sha, "c3");
  EXPECT_FALSE(s->get_task_definition("web", 9).value().has_value());
  EXPECT_TRUE(s->list_task_definitions("nope", 0)->empty());
}

}  // namespace
}  // namespace cutover::store
