#include "pipeline/pipeline.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "core/fs.hpp"
#include "core/id.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using cutover::config::StageKind;
using cutover::pipeline::ExecutionContext;
using cutover::pipeline::ExecutionResult;
using cutover::pipeline::Observer;
using cutover::pipeline::StageOutcome;
using cutover::pipeline::StageSpec;
using cutover::pipeline::StageStatus;

namespace {

void make_writable(const fs::path& p) {
  std::error_code ec;
  ::chmod(p.c_str(), 0755);
  for (auto it = fs::recursive_directory_iterator(p, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (!it->is_symlink(ec)) ::chmod(it->path().c_str(), 0755);
  }
}

StageSpec run_stage(const std::string& name, std::vector<std::string> build) {
  StageSpec s;
  s.name = name;
  s.kind = StageKind::Run;
  s.phases.build = std::move(build);
  return s;
}

class PipelineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("cutover-pipeline-" + cutover::core::random_hex(6));
    ctx_.workspace = root_ / "ws";
    ctx_.cache_root = root_ / "cache";
    fs::create_directories(ctx_.workspace);
    ctx_.execution_id = "ex-0123456789";
    ctx_.commit_sha = std::string(40, 'c');
    ctx_.commit_short = "ccccccc";
    ctx_.branch = "main";
    auto r = cutover::registry::Registry::open(root_ / "registry");
    ASSERT_TRUE(r.ok()) << r.error().message;
    registry_ = std::move(r).value();
    observer_.on_stage_start = [this](int i, const std::string& s) {
      events_.push_back("start " + std::to_string(i) + " " + s);
    };
    observer_.on_log = [this](const std::string& s, std::string_view line) {
      logs_.push_back(s + "| " + std::string(line));
      if (on_line_) on_line_(line);
    };
    observer_.on_stage_end = [this](int i, const std::string& s, const StageOutcome& o) {
      events_.push_back("end " + std::to_string(i) + " " + s + " " + to_string(o.status));
    };
  }
  void TearDown() override {
    make_writable(root_);
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  ExecutionResult run(const std::vector<StageSpec>& stages) {
    auto r = cutover::pipeline::run_execution(stages, ctx_, *registry_, observer_, &cancel_);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    return r.ok() ? std::move(r).value() : ExecutionResult{};
  }
  bool logged(const std::string& needle) const {
    for (const auto& l : logs_) {
      if (l.find(needle) != std::string::npos) return true;
    }
    return false;
  }
  std::string all_logs() const {
    std::string out;
    for (const auto& l : logs_) out += l + "\n";
    return out;
  }

  fs::path root_;
  ExecutionContext ctx_;
  std::unique_ptr<cutover::registry::Registry> registry_;
  Observer observer_;
  std::vector<std::string> events_;
  std::vector<std::string> logs_;
  std::function<void(std::string_view)> on_line_;
  std::atomic<bool> cancel_{false};
};

TEST_F(PipelineTest, TwoStagesPassAndProduceArtifact) {
  ASSERT_TRUE(cutover::core::write_file_atomic(ctx_.workspace / "input.txt", "hello\n").ok());
  auto test = run_stage("test", {"test -f input.txt", "echo tests ok"});
  auto build =
      run_stage("build", {"mkdir -p dist", "cp input.txt dist/app.txt",
                          "printf '#!/bin/sh\\necho hi\\n' > dist/run && chmod +x dist/run"});
  build.artifacts = {"dist/"};
  auto result = run({test, build});
  ASSERT_TRUE(result.succeeded) << result.message << "\n" << all_logs();
  ASSERT_EQ(result.stages.size(), 2u);
  EXPECT_EQ(result.stages[0].outcome.status, StageStatus::Succeeded);
  EXPECT_FALSE(result.stages[0].outcome.artifact.has_value());
  const auto& artifact = result.stages[1].outcome.artifact;
  ASSERT_TRUE(artifact.has_value());
  EXPECT_EQ(artifact->file_count, 2u);
  auto content = cutover::core::read_file(artifact->path / "dist/app.txt");
  ASSERT_TRUE(content.ok());
  EXPECT_EQ(*content, "hello\n");
  EXPECT_FALSE(fs::exists(artifact->path / "input.txt"));
  EXPECT_TRUE(registry_->get(artifact->digest).ok());
  EXPECT_EQ(events_, (std::vector<std::string>{"start 0 test", "end 0 test succeeded",
                                               "start 1 build", "end 1 build succeeded"}));
  EXPECT_TRUE(logged("test| tests ok"));
}

TEST_F(PipelineTest, FailingCommandStopsExecution) {
  auto first = run_stage("first", {"echo one", "exit 3", "echo never"});
  auto second = run_stage("second", {"touch second-ran"});
  auto result = run({first, second});
  EXPECT_FALSE(result.succeeded);
  ASSERT_EQ(result.stages.size(), 2u);
  EXPECT_EQ(result.stages[0].outcome.status, StageStatus::Failed);
  EXPECT_NE(result.stages[0].outcome.message.find("`exit 3` exited with code 3"), std::string::npos)
      << result.stages[0].outcome.message;
  EXPECT_EQ(result.stages[1].outcome.status, StageStatus::Skipped);
  EXPECT_FALSE(fs::exists(ctx_.workspace / "second-ran"));
  EXPECT_FALSE(logged("never"));
  EXPECT_EQ(result.message.rfind("first: ", 0), 0u);
  EXPECT_EQ(events_, (std::vector<std::string>{"start 0 first", "end 0 first failed",
                                               "end 1 second skipped"}));
}

TEST_F(PipelineTest, ShellRunsWithErrexit) {
  // sh -e: a failing command in the middle of a multi-line script fails the stage.
  auto s = run_stage("s", {"false\necho after-false"});
  auto result = run({s});
  EXPECT_FALSE(result.succeeded);
  EXPECT_TRUE(logged("s| [cutover] > echo after-false")) << all_logs();
  EXPECT_FALSE(std::count(logs_.begin(), logs_.end(), "s| after-false")) << all_logs();
}

TEST_F(PipelineTest, PhasesFollowCodeBuildSemantics) {
  StageSpec s = run_stage("s", {"echo build >> order", "false"});
  s.phases.install = {"echo install >> order"};
  s.phases.pre_build = {"echo pre_build >> order"};
  s.phases.post_build = {"echo post_build >> order"};
  s.artifacts = {"order"};
  auto result = run({s});
  EXPECT_FALSE(result.succeeded);
  EXPECT_EQ(result.stages[0].outcome.status, StageStatus::Failed);
  EXPECT_NE(result.stages[0].outcome.message.find("build: `false`"), std::string::npos);
  EXPECT_FALSE(result.stages[0].outcome.artifact.has_value());
  auto order = cutover::core::read_file(ctx_.workspace / "order");
  ASSERT_TRUE(order.ok());
  EXPECT_EQ(*order, "install\npre_build\nbuild\npost_build\n");

  // pre_build failure: build and post_build are skipped.
  fs::remove(ctx_.workspace / "order");
  StageSpec t = run_stage("t", {"echo build >> order"});
  t.phases.pre_build = {"echo pre_build >> order", "exit 1"};
  t.phases.post_build = {"echo post_build >> order"};
  result = run({t});
  EXPECT_FALSE(result.succeeded);
  order = cutover::core::read_file(ctx_.workspace / "order");
  ASSERT_TRUE(order.ok());
  EXPECT_EQ(*order, "pre_build\n");
}

bool process_gone(pid_t pid) {
  if (::kill(pid, 0) != 0) return true;
  // A zombie waiting for its new parent to reap it counts as gone.
  auto stat = cutover::core::read_file("/proc/" + std::to_string(pid) + "/stat");
  if (!stat.ok()) return true;
  auto close = stat->rfind(')');
  return close != std::string::npos && close + 2 < stat->size() && (*stat)[close + 2] == 'Z';
}

bool wait_gone(pid_t pid) {
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (process_gone(pid)) return true;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

TEST_F(PipelineTest, TimeoutKillsProcessTree) {
  StageSpec s = run_stage("slow", {"sleep 60 & echo $! > bg.pid; echo started; sleep 60"});
  s.timeout = cutover::core::Duration{500};
  s.phases.post_build = {"touch post-ran"};
  auto after = run_stage("after", {"touch after-ran"});
  auto result = run({s, after});
  EXPECT_FALSE(result.succeeded);
  EXPECT_EQ(result.stages[0].outcome.status, StageStatus::TimedOut);
  EXPECT_NE(result.stages[0].outcome.message.find("timed out"), std::string::npos);
  EXPECT_EQ(result.stages[1].outcome.status, StageStatus::Skipped);
  EXPECT_FALSE(fs::exists(ctx_.workspace / "post-ran"));
  auto pid_text = cutover::core::read_file(ctx_.workspace / "bg.pid");
  ASSERT_TRUE(pid_text.ok());
  pid_t bg = std::stoi(*pid_text);
  ASSERT_GT(bg, 1);
  EXPECT_TRUE(wait_gone(bg)) << "background process " << bg << " survived the timeout";
}

TEST_F(PipelineTest, EnvironmentAndPipelineVariables) {
  ctx_.base_env = {{"BASE", "from-base"}, {"COMMIT_SHA", "cannot-override"}};
  ctx_.resolve_secret = [](const std::string& name) -> cutover::core::Result<std::string> {
    if (name == "npm-token") return std::string("s3cr3t-value");
    return cutover::core::Error("no secret " + name);
  };
  StageSpec s = run_stage("env", {
                                     "echo \"sha=$COMMIT_SHA short=$COMMIT_SHORT\"",
                                     "echo \"branch=${BRANCH} id=$EXECUTION_ID ws=$WORKSPACE\"",
                                     "echo \"base=$BASE flags=$CFLAGS tag=$TAG\"",
                                     "echo \"token=$NPM_TOKEN\"",
                                     "pwd",
                                 });
  s.env = {{"CFLAGS", "-O2"}, {"TAG", "web:${COMMIT_SHORT}"}};
  s.secrets = {{"NPM_TOKEN", "npm-token"}};
  auto result = run({s});
  ASSERT_TRUE(result.succeeded) << result.message << "\n" << all_logs();
  EXPECT_TRUE(logged("sha=" + ctx_.commit_sha + " short=ccccccc")) << all_logs();
  EXPECT_TRUE(logged("branch=main id=ex-0123456789 ws=" + ctx_.workspace.string()));
  EXPECT_TRUE(logged("base=from-base flags=-O2 tag=web:ccccccc")) << all_logs();
  EXPECT_TRUE(logged("token=***")) << all_logs();
  EXPECT_FALSE(logged("s3cr3t-value"));
  EXPECT_TRUE(logged("env| " + ctx_.workspace.string()));

  StageSpec missing = run_stage("missing", {"true"});
  missing.secrets = {{"X", "nope"}};
  result = run({missing});
  EXPECT_FALSE(result.succeeded);
  EXPECT_NE(result.message.find("no secret nope"), std::string::npos) << result.message;
}

TEST_F(PipelineTest, SecretValuesAreMaskedInEveryLogLine) {
  const std::string pem = "-----BEGIN TEST KEY-----\nAAAAsecretbody\n-----END TEST KEY-----";
  ctx_.resolve_secret = [&](const std::string& name) -> cutover::core::Result<std::string> {
    if (name == "db/password") return std::string("pa55-W0rd-xyz");
    if (name == "tls/key") return pem;
    return cutover::core::Error("no secret " + name);
  };
  // The value whole, on stderr, written in two pieces that reach the pipe as two reads, and a
  // multi-line value printed in full.
  StageSpec s = run_stage("deploy", {
                                        "echo \"password=$DB_PASSWORD\"",
                                        "echo \"err $DB_PASSWORD\" >&2",
                                        "printf %s \"${DB_PASSWORD%???????}\"; sleep 0.2; "
                                        "printf '%s!\\n' \"${DB_PASSWORD#??????}\"",
                                        "printf '%s\\n' \"$TLS_KEY\"",
                                    });
  s.secrets = {{"DB_PASSWORD", "db/password"}, {"TLS_KEY", "tls/key"}};
  auto result = run({s});
  ASSERT_TRUE(result.succeeded) << result.message << "\n" << all_logs();
  EXPECT_TRUE(logged("deploy| password=***")) << all_logs();
  EXPECT_TRUE(logged("deploy| err ***")) << all_logs();
  EXPECT_TRUE(logged("deploy| ***!")) << all_logs();
  // The three lines of the PEM value, each masked on its own.
  EXPECT_EQ(std::count(logs_.begin(), logs_.end(), "deploy| ***"), 3) << all_logs();
  const std::string logs = all_logs();
  for (const char* clear : {"pa55", "W0rd", "AAAAsecretbody", "BEGIN TEST KEY"}) {
    EXPECT_EQ(logs.find(clear), std::string::npos) << clear << " in:\n" << logs;
  }
}

TEST_F(PipelineTest, AMissingSecretNamesTheStageTheVariableAndTheSecret) {
  ctx_.resolve_secret = [](const std::string& name) -> cutover::core::Result<std::string> {
    return cutover::core::Error("no secret named \"" + name + "\"",
                                cutover::core::ErrorKind::NotFound);
  };
  StageSpec s = run_stage("publish", {"touch ran"});
  s.secrets = {{"NPM_TOKEN", "npm-token"}};
  auto result = run({s});
  EXPECT_FALSE(result.succeeded);
  EXPECT_EQ(result.stages[0].outcome.status, StageStatus::Failed);
  EXPECT_NE(result.message.find("publish: secret npm-token for NPM_TOKEN: no secret named"),
            std::string::npos)
      << result.message;
  EXPECT_FALSE(fs::exists(ctx_.workspace / "ran"));
}

TEST_F(PipelineTest, CancelStopsRunningCommand) {
  on_line_ = [this](std::string_view line) {
    if (line == "started") cancel_ = true;
  };
  StageSpec s = run_stage("long", {"echo started; sleep 60"});
  auto after = run_stage("after", {"touch after-ran"});
  auto result = run({s, after});
  EXPECT_FALSE(result.succeeded);
  EXPECT_EQ(result.stages[0].outcome.status, StageStatus::Cancelled);
  EXPECT_EQ(result.stages[1].outcome.status, StageStatus::Skipped);
  EXPECT_FALSE(fs::exists(ctx_.workspace / "after-ran"));
}

TEST_F(PipelineTest, ScanAndApprovalStagesFailClearly) {
  StageSpec scan;
  scan.name = "secrets";
  scan.kind = StageKind::Scan;
  scan.mode = cutover::config::ScanMode::Block;
  StageSpec approve;
  approve.name = "approve";
  approve.kind = StageKind::Approval;
  // A clean workspace passes the secrets gate.
  auto result = run({scan, approve});
  EXPECT_FALSE(result.succeeded);
  EXPECT_EQ(result.stages[0].outcome.status, StageStatus::Succeeded);
  EXPECT_EQ(result.stages[1].outcome.status, StageStatus::Failed);
  EXPECT_NE(result.stages[1].outcome.message.find("no approval callback"), std::string::npos)
      << result.stages[1].outcome.message;

  // A planted secret fails a blocking gate, with the finding (not the secret) in the message.
  const std::string secret = "sk_live_1Qh6yYTWmE4lBYOvfZ8UzDzV";
  {
    std::ofstream out(ctx_.workspace / "pay.env");
    out << "STRIPE=" << secret << "\n";
  }
  result = run({scan});
  EXPECT_FALSE(result.succeeded);
  EXPECT_EQ(result.stages[0].outcome.status, StageStatus::Failed);
  EXPECT_NE(result.message.find("secrets gate: 1 secret found"), std::string::npos)
      << result.message;
  EXPECT_NE(result.message.find("pay.env:1:8: stripe-secret-key"), std::string::npos)
      << result.message;
  EXPECT_EQ(result.message.find(secret), std::string::npos);

  // Report mode records the same finding and passes.
  scan.mode = cutover::config::ScanMode::Report;
  result = run({scan});
  EXPECT_TRUE(result.succeeded) << result.message;
  bool logged = false;
  for (const auto& l : logs_)
    logged = logged || l.find("mode report: recorded") != std::string::npos;
  EXPECT_TRUE(logged);
}

TEST_F(PipelineTest, SarifGateOnARunStageBlocksOrReports) {
  // The stage's command plays an external scanner that writes SARIF.
  const std::string sarif =
      R"({"version":"2.1.0","runs":[{"tool":{"driver":{"name":"fake-scanner"}},"results":[)"
      R"({"ruleId":"CVE-2024-0001","level":"error","message":{"text":"vulnerable"},)"
      R"("locations":[{"physicalLocation":{"artifactLocation":{"uri":"go.sum"},"region":{"startLine":7}}}]}]}]})";
  StageSpec s =
      run_stage("scanner", {"mkdir -p reports && printf '%s' '" + sarif + "' > reports/out.sarif"});
  s.gate = cutover::config::Stage::SarifGate{"reports/out.sarif", "error",
                                             cutover::config::ScanMode::Block};
  auto after = run_stage("after", {"touch after-ran"});
  auto result = run({s, after});
  EXPECT_FALSE(result.succeeded);
  EXPECT_EQ(result.stages[0].outcome.status, StageStatus::Failed);
  EXPECT_NE(result.message.find("go.sum:7: error CVE-2024-0001 [fake-scanner]"), std::string::npos)
      << result.message;
  EXPECT_FALSE(fs::exists(ctx_.workspace / "after-ran"));

  s.gate->mode = cutover::config::ScanMode::Report;
  EXPECT_TRUE(run({s}).succeeded);
  s.gate->mode = cutover::config::ScanMode::Block;
  s.gate->fail_on = "none";
  EXPECT_TRUE(run({s}).succeeded);
  // A stage that did not write its report fails a blocking gate.
  s.gate->fail_on = "error";
  s.gate->sarif = "reports/missing.sarif";
  result = run({s});
  EXPECT_FALSE(result.succeeded);
  EXPECT_NE(result.message.find("cannot read reports/missing.sarif"), std::string::npos)
      << result.message;
}

TEST_F(PipelineTest, CacheIsKeptBetweenExecutions) {
  StageSpec s =
      run_stage("build", {"mkdir -p .cache && echo run >> .cache/runs", "cat .cache/runs"});
  s.cache = {".cache/"};
  ASSERT_TRUE(run({s}).succeeded);
  // A fresh workspace for the next execution.
  make_writable(ctx_.workspace);
  fs::remove_all(ctx_.workspace);
  fs::create_directories(ctx_.workspace);
  ASSERT_TRUE(run({s}).succeeded) << all_logs();
  auto runs = cutover::core::read_file(ctx_.workspace / ".cache/runs");
  ASSERT_TRUE(runs.ok());
  EXPECT_EQ(*runs, "run\nrun\n");
}

TEST_F(PipelineTest, MissingArtifactFailsStage) {
  StageSpec s = run_stage("build", {"true"});
  s.artifacts = {"dist/"};
  auto result = run({s});
  EXPECT_FALSE(result.succeeded);
  EXPECT_NE(result.message.find("artifacts: "), std::string::npos) << result.message;
}

TEST_F(PipelineTest, MissingWorkspaceIsAnError) {
  ctx_.workspace = root_ / "nope";
  auto r =
      cutover::pipeline::run_execution({run_stage("s", {"true"})}, ctx_, *registry_, observer_);
  EXPECT_FALSE(r.ok());
}

}  // namespace

namespace {

StageSpec approval_stage(cutover::core::Duration timeout) {
  StageSpec s;
  s.name = "approve";
  s.kind = StageKind::Approval;
  s.approval_timeout = timeout;
  return s;
}

}  // namespace

TEST_F(PipelineTest, ApprovalStageWaitsOnTheCallbackWithItsDeadline) {
  using Decision = cutover::pipeline::ApprovalDecision;
  cutover::core::SimulatedClock clock;
  ctx_.clock = &clock;
  std::vector<std::string> calls;
  Decision next{Decision::Kind::Approved, "cli:alice", "looks good"};
  ctx_.await_approval = [&](int index, const std::string& stage, cutover::core::TimePoint deadline,
                            cutover::core::Duration timeout) {
    calls.push_back(std::to_string(index) + " " + stage);
    EXPECT_EQ(deadline - clock.now(), timeout);
    EXPECT_EQ(timeout, cutover::core::Duration(std::chrono::hours(24)));
    // Nothing after the approval stage has run while it waits.
    EXPECT_FALSE(fs::exists(ctx_.workspace / "after-ran"));
    return next;
  };
  auto before = run_stage("test", {"touch test-ran"});
  auto after = run_stage("deploy", {"touch after-ran"});

  // Approved: the pipeline goes on.
  auto result = run({before, approval_stage(std::chrono::hours(24)), after});
  EXPECT_TRUE(result.succeeded) << result.message;
  EXPECT_EQ(calls, std::vector<std::string>{"1 approve"});
  EXPECT_EQ(result.stages[1].outcome.status, StageStatus::Succeeded);
  EXPECT_TRUE(fs::exists(ctx_.workspace / "after-ran"));
  EXPECT_TRUE(logged("approve| [cutover] approved by cli:alice: looks good")) << all_logs();

  // Rejected: the stage fails with who and the comment, and later stages are skipped.
  fs::remove(ctx_.workspace / "after-ran");
  next = {Decision::Kind::Rejected, "cli:bob", "not on a Friday"};
  result = run({before, approval_stage(std::chrono::hours(24)), after});
  EXPECT_FALSE(result.succeeded);
  EXPECT_EQ(result.stages[1].outcome.status, StageStatus::Failed);
  EXPECT_EQ(result.message, "approve: rejected by cli:bob: not on a Friday");
  EXPECT_EQ(result.stages[2].outcome.status, StageStatus::Skipped);
  EXPECT_FALSE(fs::exists(ctx_.workspace / "after-ran"));

  // A timeout is a rejection that says how long it waited.
  next = {Decision::Kind::TimedOut, "", ""};
  result = run({before, approval_stage(std::chrono::hours(24)), after});
  EXPECT_FALSE(result.succeeded);
  EXPECT_EQ(result.stages[1].outcome.status, StageStatus::Failed);
  EXPECT_EQ(result.message, "approve: approval timed out after 24h");

  // A cancel while waiting cancels the stage.
  next = {Decision::Kind::Cancelled, "cli:carol", ""};
  result = run({before, approval_stage(std::chrono::hours(24)), after});
  EXPECT_FALSE(result.succeeded);
  EXPECT_EQ(result.stages[1].outcome.status, StageStatus::Cancelled);
  EXPECT_NE(result.message.find("cancelled while waiting for approval by cli:carol"),
            std::string::npos)
      << result.message;
  EXPECT_EQ(calls.size(), 4u);

  // Cancelled before the approval stage starts: the callback is not called.
  cancel_ = true;
  result = run({approval_stage(std::chrono::hours(24))});
  EXPECT_EQ(result.stages[0].outcome.status, StageStatus::Cancelled);
  EXPECT_EQ(calls.size(), 4u);
}
