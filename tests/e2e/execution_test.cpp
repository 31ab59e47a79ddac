// The execution flow of `cutover serve`, black-box, on real git repositories made by the tests:
// executions run on the pipeline worker one at a time while the loop keeps fetching, each builds
// exactly its commit, a newer commit supersedes the one still queued, `cutover cancel` kills a
// running execution's process tree or drops a queued one, approval stages wait for `cutover
// approve|reject` (or time out), a 50 MB log is stored whole, and a release that arrives during a
// deployment waits (with two waiting, the older is recorded as skipped).
//
// Stages that must stay "running" while the test acts block on a gate file the test creates.
#include <signal.h>

#include <chrono>

#include "core/fs.hpp"
#include "core/process.hpp"
#include "serve_fixture.hpp"

namespace cutover::e2e {
namespace {

// A zombie waiting for its new parent to reap it counts as gone.
bool process_gone(pid_t pid, int64_t start_time) {
  if (!core::is_same_process(pid, start_time)) return true;
  auto stat = core::read_file("/proc/" + std::to_string(pid) + "/stat");
  if (!stat.ok()) return true;
  auto close = stat->rfind(')');
  return close != std::string::npos && close + 2 < stat->size() && (*stat)[close + 2] == 'Z';
}

class Executions : public ServeTest {
 protected:
  Executions() : ServeTest("cutover-e2e-exec") {}

  void SetUp() override {
    ServeTest::SetUp();
    gate_ = dir_.path() / "gate";
  }

  // A cutover.yaml with these stages and no service (executions only: nothing to deploy).
  void pipeline_only(const std::string& stages) {
    write_text(app_ / "cutover.yaml",
               "version: 1\npipeline:\n  trigger: { branch: main }\n  stages:\n" + stages);
  }

  std::string head() {
    auto r = run({"git", "-C", app_.string(), "rev-parse", "HEAD"});
    std::string sha = r.out;
    while (!sha.empty() && sha.back() == '\n') sha.pop_back();
    return sha;
  }

  // The newest execution of commit sha (from `cutover executions -o json`), or null.
  json execution_of(const std::string& sha) {
    json list = cli_json({"executions", "-n", "50"});
    if (!list.is_object()) return json();
    for (const auto& e : list["executions"]) {
      if (e.value("commit_sha", "") == sha) return e;
    }
    return json();
  }
  std::string status_of(const std::string& sha) {
    json e = execution_of(sha);
    return e.is_object() ? e.value("status", "") : "";
  }
  // Waits until the execution of sha has `status`; returns the execution.
  json wait_status(const std::string& sha, const std::string& status,
                   std::chrono::milliseconds timeout = 120s) {
    json found;
    const bool ok = wait_for(
        [&] {
          found = execution_of(sha);
          return found.is_object() && found.value("status", "") == status;
        },
        timeout);
    EXPECT_TRUE(ok) << "execution of " << sha.substr(0, 7) << " never became " << status
                    << "; last seen: " << found.dump() << "\n"
                    << serve_log();
    return found;
  }

  // `cutover ARGS... --state-dir STATE` (text output).
  CommandResult cli(std::vector<std::string> args) {
    args.insert(args.begin(), CUTOVER_BIN);
    args.insert(args.end(), {"--state-dir", state_.string()});
    return run(args);
  }
  // All log lines of an execution so far, as `cutover logs ID` prints them ("[stage] text").
  std::vector<std::string> log_lines(const std::string& id) {
    auto r = cli({"logs", id});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::vector<std::string> lines;
    size_t start = 0;
    while (start < r.out.size()) {
      size_t end = r.out.find('\n', start);
      if (end == std::string::npos) end = r.out.size();
      lines.push_back(r.out.substr(start, end - start));
      start = end + 1;
    }
    return lines;
  }
  bool logged(const std::string& id, const std::string& line) {
    for (const auto& l : log_lines(id)) {
      if (l == line) return true;
    }
    return false;
  }

  void commit_version(const std::string& v) {
    sh(app_, "echo " + v + " > VERSION && git commit -q -am '" + v + "'");
  }

  fs::path gate_;
};

TEST_F(Executions, EachCommitBuildsItsOwnTreeNewestQueuedWinsAndCancelDropsAQueuedOne) {
  pipeline_only(
      "    - name: build\n"
      "      run:\n"
      "        - echo \"start $(cat VERSION)\"\n"
      "        - while [ ! -f " +
      gate_.string() +
      " ]; do sleep 0.05; done\n"
      "        - echo \"tree sees $(cat VERSION)\"\n"
      "      timeout: 5m\n");
  sh(app_, "git commit -q -am 'pipeline only'");
  const std::string v1 = head();
  start_serve();
  json first = wait_status(v1, "running");
  ASSERT_TRUE(first.is_object());
  const std::string first_id = first["id"];
  ASSERT_TRUE(wait_for([&] { return logged(first_id, "[build] start v1"); }, 60s)) << serve_log();

  // While v1's stage runs, the loop keeps fetching: v2 is recorded at once, as queued.
  commit_version("v2");
  const std::string v2 = head();
  json second = wait_status(v2, "queued");
  // v3 supersedes v2, which never runs, and the message names the commit that superseded it.
  commit_version("v3");
  const std::string v3 = head();
  json third = wait_status(v3, "queued");
  json superseded = wait_status(v2, "superseded");
  EXPECT_NE(superseded.value("message", "").find(v3.substr(0, 7)), std::string::npos)
      << superseded.dump();
  EXPECT_TRUE(superseded["started_at"].is_null()) << superseded.dump();

  // A queued execution is cancelled without running.
  auto cancelled = cli({"cancel", third["id"].get<std::string>()});
  EXPECT_EQ(cancelled.exit_code, 0) << cancelled.err;
  EXPECT_NE(cancelled.out.find("cancelled before it started"), std::string::npos) << cancelled.out;
  json third_now = wait_status(v3, "cancelled");
  EXPECT_TRUE(third_now["started_at"].is_null()) << third_now.dump();
  EXPECT_NE(third_now.value("message", "").find("cancelled by cli:"), std::string::npos)
      << third_now.dump();

  commit_version("v4");
  const std::string v4 = head();
  wait_status(v4, "queued");
  EXPECT_EQ(status_of(v1), "running");

  // The gate opens: v1 finishes with its own tree (v2..v4 were pushed meanwhile), then v4 runs.
  write_text(gate_, "open\n");
  wait_status(v1, "succeeded");
  json last = wait_status(v4, "succeeded");
  EXPECT_TRUE(logged(first_id, "[build] tree sees v1"));
  EXPECT_FALSE(logged(first_id, "[build] tree sees v4"));
  EXPECT_TRUE(logged(last["id"].get<std::string>(), "[build] tree sees v4"));
  for (const auto& l : log_lines(second["id"].get<std::string>())) {
    EXPECT_NE(l.rfind("[build]", 0), 0u) << "superseded v2 ran: " << l;
  }
  EXPECT_EQ(status_of(v2), "superseded");
  EXPECT_EQ(status_of(v3), "cancelled");

  // Cancelling a finished execution is a conflict; an unknown id is not found. Both exit 1.
  auto finished = cli({"cancel", first_id});
  EXPECT_EQ(finished.exit_code, 1);
  EXPECT_NE(finished.err.find("is succeeded; only a queued or running execution can be cancelled"),
            std::string::npos)
      << finished.err;
  EXPECT_NE(finished.err.find("HTTP 409"), std::string::npos) << finished.err;
  auto unknown = cli({"cancel", "ex-doesnotexist"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.err.find("no execution with id \"ex-doesnotexist\" (HTTP 404)"),
            std::string::npos)
      << unknown.err;
}

TEST_F(Executions, CancelKillsTheProcessTreeOfARunningExecution) {
  const fs::path pid_file = dir_.path() / "grandchild.pid";
  // sh -e -c (the stage's command) -> sh -c -> sleep: the sleep is a grandchild of the stage.
  pipeline_only(
      "    - name: build\n"
      "      run: sh -c 'sleep 600 & echo $! > " +
      pid_file.string() +
      "; wait'\n"
      "    - name: after\n"
      "      run: echo after ran\n");
  sh(app_, "git commit -q -am 'pipeline only'");
  const std::string v1 = head();
  start_serve();
  ASSERT_TRUE(wait_for([&] { return core::read_file(pid_file).ok(); }, 120s)) << serve_log();
  std::string text;
  ASSERT_TRUE(wait_for(
      [&] {
        auto t = core::read_file(pid_file);
        text = t.ok() ? *t : "";
        return text.find('\n') != std::string::npos;
      },
      10s));
  const pid_t grandchild = std::stoi(text);
  auto start = core::process_start_time(grandchild);
  ASSERT_TRUE(start.ok()) << start.error().message;
  ASSERT_FALSE(process_gone(grandchild, *start));
  json running = wait_status(v1, "running");

  auto r = cli({"cancel", running["id"].get<std::string>()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("cancelling"), std::string::npos) << r.out;
  json done = wait_status(v1, "cancelled", 60s);
  EXPECT_NE(done.value("message", "").find("cancelled by cli:"), std::string::npos) << done.dump();
  EXPECT_TRUE(wait_for([&] { return process_gone(grandchild, *start); }, 10s))
      << "pid " << grandchild << " survived the cancel";
  EXPECT_FALSE(logged(running["id"].get<std::string>(), "[after] after ran"));
}

TEST_F(Executions, ApprovalIsApprovedRejectedOrTimesOutAndEveryDecisionIsChecked) {
  const auto stages = [](const std::string& timeout) {
    return "    - name: test\n"
           "      run: echo tested\n"
           "    - name: approve\n"
           "      approval: { timeout: " +
           timeout +
           " }\n"
           "    - name: release\n"
           "      run: echo released $(cat VERSION)\n";
  };
  pipeline_only(stages("1h"));
  sh(app_, "git commit -q -am 'pipeline with approval'");
  const std::string v1 = head();
  start_serve();

  // Waiting: `cutover executions` says so; approving goes on with the pipeline.
  json waiting;
  ASSERT_TRUE(wait_for(
      [&] {
        waiting = execution_of(v1);
        return waiting.is_object() &&
               waiting.value("message", "").rfind("waiting for approval", 0) == 0;
      },
      120s))
      << waiting.dump() << serve_log();
  const std::string id1 = waiting["id"];
  auto text = cli({"executions"});
  EXPECT_NE(text.out.find("waiting for approval (stage approve"), std::string::npos) << text.out;
  EXPECT_FALSE(logged(id1, "[release] released v1"));
  auto approved = cli({"approve", id1, "--comment", "ship it"});
  EXPECT_EQ(approved.exit_code, 0) << approved.err;
  EXPECT_NE(approved.out.find("stage approve approved by cli:"), std::string::npos) << approved.out;
  wait_status(v1, "succeeded");
  EXPECT_TRUE(logged(id1, "[release] released v1"));
  bool noted = false;
  for (const auto& l : log_lines(id1)) {
    noted = noted || (l.find("[approve] [cutover] approved by cli:") == 0 &&
                      l.find(": ship it") != std::string::npos);
  }
  EXPECT_TRUE(noted);

  // Approving an execution that is not waiting is a conflict; an unknown one is not found.
  auto again = cli({"approve", id1});
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.err.find("execution " + id1 +
                           " is not waiting for approval (it is succeeded) (HTTP 409)"),
            std::string::npos)
      << again.err;
  auto unknown = cli({"reject", "ex-doesnotexist"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.err.find("HTTP 404"), std::string::npos) << unknown.err;

  // Rejected: the execution fails with who and the comment; the next stage does not run.
  commit_version("v2");
  const std::string v2 = head();
  ASSERT_TRUE(wait_for(
      [&] { return execution_of(v2).value("message", "").rfind("waiting for approval", 0) == 0; },
      120s))
      << serve_log();
  const std::string id2 = execution_of(v2)["id"];
  auto rejected = cli({"reject", id2, "--comment", "not on a Friday"});
  EXPECT_EQ(rejected.exit_code, 0) << rejected.err;
  json failed = wait_status(v2, "failed");
  EXPECT_NE(failed.value("message", "").find("approve: rejected by cli:"), std::string::npos)
      << failed.dump();
  EXPECT_NE(failed.value("message", "").find(": not on a Friday"), std::string::npos)
      << failed.dump();
  EXPECT_FALSE(logged(id2, "[release] released v2"));

  // A short timeout: rejected, saying how long it waited.
  pipeline_only(stages("1s"));
  commit_version("v3");
  const std::string v3 = head();
  json timed_out = wait_status(v3, "failed");
  EXPECT_EQ(timed_out.value("message", ""), "approve: approval timed out after 1s")
      << timed_out.dump();

  // A cancel ends the wait too.
  pipeline_only(stages("1h"));
  commit_version("v4");
  const std::string v4 = head();
  ASSERT_TRUE(wait_for(
      [&] { return execution_of(v4).value("message", "").rfind("waiting for approval", 0) == 0; },
      120s))
      << serve_log();
  auto cancelled = cli({"cancel", execution_of(v4)["id"].get<std::string>()});
  EXPECT_EQ(cancelled.exit_code, 0) << cancelled.err;
  wait_status(v4, "cancelled");
}

TEST_F(Executions, AFiftyMegabyteLogIsStoredWhole) {
  // 51200 lines of 1023 characters + '\n' = 50 MiB from one command.
  pipeline_only(
      "    - name: loud\n"
      "      run: yes \"$(head -c 1023 /dev/zero | tr '\\0' x)\" | head -n 51200\n"
      "    - name: after\n"
      "      run: echo after ran\n");
  sh(app_, "git commit -q -am 'a loud pipeline'");
  const std::string v1 = head();
  start_serve();
  json done = wait_status(v1, "succeeded", 300s);
  ASSERT_TRUE(done.is_object());
  const std::string line = "[loud] " + std::string(1023, 'x');
  size_t count = 0;
  size_t other_loud = 0;
  bool after_ran = false;
  for (const auto& l : log_lines(done["id"].get<std::string>())) {
    if (l == line) {
      ++count;
    } else if (l.rfind("[loud] ", 0) == 0 && l.rfind("[loud] [cutover]", 0) != 0) {
      ++other_loud;
    }
    after_ran = after_ran || l == "[after] after ran";
  }
  EXPECT_EQ(count, 51200u);
  EXPECT_EQ(other_loud, 0u);
  EXPECT_TRUE(after_ran);
}

TEST_F(Executions, ARestartCancelsWhatRanOrWaitedAndBuildsTheNewestCommitAgain) {
  pipeline_only(
      "    - name: build\n"
      "      run:\n"
      "        - while [ ! -f " +
      gate_.string() +
      " ]; do sleep 0.05; done\n"
      "        - echo \"tree sees $(cat VERSION)\"\n");
  sh(app_, "git commit -q -am 'pipeline only'");
  const std::string v1 = head();
  start_serve();
  json first = wait_status(v1, "running");
  commit_version("v2");
  const std::string v2 = head();
  json queued = wait_status(v2, "queued");
  ASSERT_TRUE(queued.is_object());

  // A crash: nothing gets to settle the executions.
  serve_->kill(SIGKILL);
  ASSERT_TRUE(serve_->wait(30s).has_value());
  write_text(gate_, "open\n");  // the orphaned stage command of v1 ends too
  start_serve();
  json ran = wait_status(v1, "cancelled");
  EXPECT_EQ(ran.value("message", ""), "controller restarted while this execution ran");
  json rerun;
  ASSERT_TRUE(wait_for(
      [&] {
        rerun = execution_of(v2);  // the newest execution of v2
        return rerun.is_object() && rerun.value("id", "") != queued.value("id", "") &&
               rerun.value("status", "") == "succeeded";
      },
      120s))
      << rerun.dump() << serve_log();
  EXPECT_TRUE(logged(rerun["id"].get<std::string>(), "[build] tree sees v2"));
  json list = cli_json({"executions"});
  bool old_cancelled = false;
  for (const auto& e : list["executions"]) {
    if (e.value("id", "") == queued.value("id", "")) {
      old_cancelled =
          e.value("status", "") == "cancelled" &&
          e.value("message", "") == "controller restarted while this execution was queued";
    }
  }
  EXPECT_TRUE(old_cancelled) << list.dump(2);
  // v1 is not built again: only the newest commit is.
  int v1_runs = 0;
  for (const auto& e : list["executions"]) v1_runs += e.value("commit_sha", "") == v1 ? 1 : 0;
  EXPECT_EQ(v1_runs, 1);
}

// CodeBuild's phase semantics through the real serve: a failing build phase still runs post_build,
// ends the stage and skips the later stages; then a stage past its timeout has its whole process
// tree killed (a grandchild that detached into the background included).
TEST_F(Executions, PhaseFailuresRunPostBuildAndATimeoutKillsTheStageTree) {
  pipeline_only(
      "    - name: build\n"
      "      phases:\n"
      "        install: [echo installed]\n"
      "        pre_build: [echo prepared]\n"
      "        build: [echo building, exit 3, echo never]\n"
      "        post_build: [echo cleaned up]\n"
      "    - name: after\n"
      "      run: echo later stage ran\n");
  sh(app_, "git commit -q -am 'phases'");
  const std::string v1 = head();
  start_serve();
  json failed = wait_status(v1, "failed");
  ASSERT_TRUE(failed.is_object());
  const std::string id = failed["id"];
  EXPECT_NE(failed.value("message", "").find("`exit 3`"), std::string::npos) << failed.dump();
  for (const char* line :
       {"[build] installed", "[build] prepared", "[build] building", "[build] cleaned up"}) {
    EXPECT_TRUE(logged(id, line)) << line << " missing from the log of " << id;
  }
  EXPECT_FALSE(logged(id, "[build] never"));
  EXPECT_FALSE(logged(id, "[after] later stage ran"));

  const fs::path pid_file = dir_.path() / "grandchild.pid";
  pipeline_only(
      "    - name: build\n"
      "      timeout: 2s\n"
      "      run: [\"sh -c 'sleep 300 & echo $! > " +
      pid_file.string() + "; wait'\"]\n");
  sh(app_, "git commit -q -am 'timeout'");
  const std::string v2 = head();
  json timed_out = wait_status(v2, "failed");
  ASSERT_TRUE(timed_out.is_object());
  EXPECT_NE(timed_out.value("message", "").find("timed out after 2s"), std::string::npos)
      << timed_out.dump();
  auto pid_text = core::read_file(pid_file);
  ASSERT_TRUE(pid_text.ok()) << "the stage never started its grandchild";
  const pid_t grandchild = static_cast<pid_t>(std::stol(*pid_text));
  ASSERT_GT(grandchild, 0);
  // Gone, or a zombie awaiting its reaper; a live `sleep 300` means the tree survived.
  EXPECT_TRUE(wait_for(
      [&] {
        auto start = core::process_start_time(grandchild);
        return !start.ok() || process_gone(grandchild, *start);
      },
      30s))
      << "pid " << grandchild << " outlived its stage's timeout";
}

}  // namespace
}  // namespace cutover::e2e
