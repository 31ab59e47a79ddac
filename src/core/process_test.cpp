#include "core/process.hpp"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include "core/temp_dir.hpp"

#include <atomic>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "core/fs.hpp"
#include "core/id.hpp"

using namespace cutover::core;
using namespace std::chrono_literals;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

namespace {

SpawnSpec shell(const std::string& script) {
  SpawnSpec spec;
  spec.argv = {"/bin/sh", "-c", script};
  spec.env = minimal_environment();
  return spec;
}

// Polls cond until it holds or 10 s pass (a generous deadline for a busy machine).
template <typename Pred>
bool eventually(Pred cond) {
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return cond();
}

std::vector<std::string> run_lines(const SpawnSpec& spec, RunResult* out = nullptr) {
  std::vector<std::string> lines;
  auto r = run_command(spec, 20s, [&](std::string_view l) { lines.emplace_back(l); });
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  if (r.ok() && out != nullptr) *out = *r;
  return lines;
}

}  // namespace

TEST(ExitStatus, DescribesCodeAndSignal) {
  EXPECT_EQ(ExitStatus::exited_with(3).to_string(), "exited with code 3");
  EXPECT_EQ(ExitStatus::killed_by(SIGKILL).to_string(), "killed by signal 9 (SIGKILL)");
  EXPECT_TRUE(ExitStatus::exited_with(0).success());
  EXPECT_FALSE(ExitStatus::killed_by(SIGTERM).success());
}

TEST(Spawn, RunsProgramWithExactEnvironmentCwdAndAppendsOutput) {
  TempDir dir;
  auto out = dir.path() / "out.log";
  SpawnSpec spec = shell("echo \"cwd=$(pwd) foo=$FOO secret=${SECRET:-none}\"; echo err >&2");
  spec.env["FOO"] = "bar";
  spec.cwd = dir.path();
  spec.stdout_file = out;
  ::setenv("SECRET", "leak", 1);
  for (int i = 0; i < 2; ++i) {
    auto pid = spawn(spec);
    ASSERT_TRUE(pid.ok()) << pid.error().message;
    auto st = wait_for_exit(*pid, 10s);
    ASSERT_TRUE(st.ok()) << st.error().message;
    EXPECT_TRUE(st->success()) << st->to_string();
  }
  ::unsetenv("SECRET");
  std::string line = "cwd=" + dir.path().string() + " foo=bar secret=none\nerr\n";
  EXPECT_EQ(read_file(out).value(), line + line);
}

TEST(Spawn, ReportsMissingBinaryAsError) {
  SpawnSpec spec;
  spec.env = minimal_environment();
  spec.argv = {"/nonexistent/bin/program"};
  auto r = spawn(spec);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message, HasSubstr("cannot execute /nonexistent/bin/program"));

  spec.argv = {"no-such-command-cutover"};
  r = spawn(spec);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message, HasSubstr("command not found: 'no-such-command-cutover'"));
}

TEST(Spawn, ReportsBadWorkingDirectoryAsError) {
  SpawnSpec spec = shell("true");
  spec.cwd = "/nonexistent/dir";
  auto r = spawn(spec);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message, HasSubstr("cannot change to working directory /nonexistent/dir"));
}

TEST(Spawn, LeadsOwnSessionAndClosesInheritedDescriptors) {
  int leaked = ::open("/dev/null", O_RDONLY);  // deliberately without O_CLOEXEC
  ASSERT_GE(leaked, 0);
  RunResult res;
  auto lines = run_lines(
      shell("test -e /proc/$$/fd/" + std::to_string(leaked) + " && echo leaked || echo clean"),
      &res);
  ::close(leaked);
  EXPECT_THAT(lines, ElementsAre("clean"));

  auto pid = spawn(shell("exec sleep 1000"));
  ASSERT_TRUE(pid.ok());
  EXPECT_EQ(::getsid(*pid), *pid);
  EXPECT_EQ(::getpgid(*pid), *pid);
  auto st = terminate_tree(*pid, SIGTERM, 5s);
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_EQ(*st, ExitStatus::killed_by(SIGTERM));
}

TEST(Process, StartTimeIdentifiesProcessAcrossPidReuse) {
  auto self = process_start_time(::getpid());
  ASSERT_TRUE(self.ok());
  EXPECT_TRUE(is_same_process(::getpid(), *self));
  EXPECT_FALSE(is_same_process(::getpid(), *self + 1));  // same pid, another incarnation

  auto pid = spawn(shell("exec sleep 1000"));
  ASSERT_TRUE(pid.ok());
  auto start = process_start_time(*pid);
  ASSERT_TRUE(start.ok());
  EXPECT_TRUE(is_same_process(*pid, *start));
  ::kill(*pid, SIGKILL);
  // A zombie is not "the same process" any more, even before it is reaped.
  EXPECT_TRUE(eventually([&] { return !is_same_process(*pid, *start); }));
  EXPECT_TRUE(wait_gone(*pid, *start, 1s));
  auto st = wait_for_exit(*pid, 10s);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(*st, ExitStatus::killed_by(SIGKILL));
  EXPECT_FALSE(is_same_process(*pid, *start));
  EXPECT_FALSE(process_start_time(*pid).ok());
}

TEST(Process, WaitForExitTimesOutOnRunningChild) {
  auto pid = spawn(shell("exec sleep 1000"));
  ASSERT_TRUE(pid.ok());
  auto st = wait_for_exit(*pid, 20ms);
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.error().message, HasSubstr("did not exit"));
  ASSERT_TRUE(terminate_tree(*pid, SIGKILL, 0ms).ok());
}

TEST(Process, SignalGroupRefusesDangerousTargets) {
  signal_group(0, SIGKILL);   // would be our own group
  signal_group(1, SIGKILL);   // init
  signal_group(-1, SIGKILL);  // would be every process
  SUCCEED();                  // still alive
}

TEST(Process, TerminateTreeEscalatesAndKillsGrandchildren) {
  TempDir dir;
  auto pidfile = dir.path() / "grandchild.pid";
  // Ignoring TERM is inherited by the grandchild, so only SIGKILL ends either of them.
  auto pid = spawn(shell("trap '' TERM; sleep 1000 & echo $! > " + pidfile.string() + "; wait"));
  ASSERT_TRUE(pid.ok());
  ASSERT_TRUE(eventually([&] {
    auto c = read_file(pidfile);
    return c.ok() && !c->empty() && c->back() == '\n';
  }));
  pid_t grandchild = std::stoi(read_file(pidfile).value());
  auto gstart = process_start_time(grandchild);
  ASSERT_TRUE(gstart.ok());

  auto st = terminate_tree(*pid, SIGTERM, 300ms);
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_EQ(*st, ExitStatus::killed_by(SIGKILL));
  EXPECT_FALSE(is_same_process(grandchild, *gstart));
  EXPECT_FALSE(group_alive(*pid));
}

TEST(RunCommand, CapturesLinesInOrderAndExitCode) {
  RunResult res;
  auto lines =
      run_lines(shell("echo one; echo two >&2; printf 'three\\n\\nlast-no-newline'; exit 7"), &res);
  EXPECT_THAT(lines, ElementsAre("one", "two", "three", "", "last-no-newline"));
  EXPECT_EQ(res.status, ExitStatus::exited_with(7));
  EXPECT_FALSE(res.timed_out);
  EXPECT_FALSE(res.cancelled);
}

TEST(RunCommand, StderrDiscardedWhenNotMerged) {
  SpawnSpec spec = shell("echo out; echo err >&2");
  spec.merge_stderr = false;
  EXPECT_THAT(run_lines(spec), ElementsAre("out"));
}

TEST(RunCommand, ReportsStartFailure) {
  SpawnSpec spec;
  spec.argv = {"/nonexistent/tool"};
  auto r = run_command(spec, 1s, [](std::string_view) {});
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message, HasSubstr("cannot execute /nonexistent/tool"));
}

TEST(RunCommand, SplitsLongLines) {
  auto lines = run_lines(shell("head -c 200000 /dev/zero | tr '\\0' x; echo; echo end"));
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_EQ(lines[0].size(), kMaxLineBytes);
  EXPECT_EQ(lines[1].size(), kMaxLineBytes);
  EXPECT_EQ(lines[2].size(), kMaxLineBytes);
  EXPECT_EQ(lines[3].size(), 200000 - 3 * kMaxLineBytes);
  EXPECT_EQ(lines[4], "end");
}

TEST(RunCommand, TimeoutKillsWholeTree) {
  pid_t grandchild = 0;
  int64_t gstart = 0;
  auto r = run_command(shell("sleep 1000 & echo $!; wait"), 300ms, [&](std::string_view l) {
    grandchild = std::stoi(std::string(l));
    gstart = process_start_time(grandchild).ok() ? *process_start_time(grandchild) : -1;
  });
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->timed_out);
  EXPECT_FALSE(r->status.success());
  ASSERT_GT(grandchild, 0);
  ASSERT_GT(gstart, 0);
  // run_command returns only once the group is gone.
  EXPECT_FALSE(is_same_process(grandchild, gstart));
}

TEST(RunCommand, KillsWhatTheCommandLeftBehind) {
  pid_t bg = 0;
  int64_t bstart = 0;
  // The background sleep has its stdout elsewhere, so only the group kill ends it.
  auto r = run_command(shell("sleep 1000 >/dev/null 2>&1 & echo $!"), 20s, [&](std::string_view l) {
    bg = std::stoi(std::string(l));
    bstart = process_start_time(bg).ok() ? *process_start_time(bg) : -1;
  });
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->status.success());
  ASSERT_GT(bstart, 0);
  EXPECT_TRUE(eventually([&] { return !is_same_process(bg, bstart); }));
}

TEST(RunCommand, CancelStopsTheCommand) {
  std::atomic<bool> cancel{false};
  auto r = run_command(
      shell("echo started; exec sleep 1000"), 60s,
      [&](std::string_view l) {
        if (l == "started") cancel = true;
      },
      &cancel);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->cancelled);
  EXPECT_FALSE(r->timed_out);
  EXPECT_EQ(r->status, ExitStatus::killed_by(SIGTERM));
}

TEST(RunCommand, HandlerExceptionKillsCommand) {
  auto r = run_command(shell("echo boom; exec sleep 1000"), 60s,
                       [](std::string_view) { throw std::runtime_error("handler broke"); });
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message, HasSubstr("handler broke"));
}

TEST(RunCommand, StreamsFiftyMegabytes) {
  // 524288 lines of 99 characters + '\n' = 50 MiB through the pipe.
  constexpr size_t kLines = 524288;
  size_t lines = 0, bytes = 0, longest = 0;
  auto r = run_command(
      shell("yes 012345678901234567890123456789012345678901234567890123456789012345678901234567"
            "890123456789012345678 | head -n " +
            std::to_string(kLines)),
      60s, [&](std::string_view l) {
        ++lines;
        bytes += l.size();
        longest = std::max(longest, l.size());
      });
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->status.success()) << r->status.to_string();
  EXPECT_EQ(lines, kLines);
  EXPECT_EQ(bytes, kLines * 99);
  EXPECT_EQ(longest, 99u);
}

TEST(Environment, MinimalEnvironmentHasOnlySafeBase) {
  auto env = minimal_environment();
  EXPECT_EQ(env.size(), 3u);
  EXPECT_TRUE(env.count("PATH") && env.count("HOME") && env.count("LANG"));
}

TEST(Spawn, AppliesResourceLimits) {
  SpawnSpec spec = shell("ulimit -n");
  spec.rlimits.push_back({RLIMIT_NOFILE, 64, 64});
  EXPECT_THAT(run_lines(spec), ElementsAre("64"));
}

TEST(Spawn, ResetsIgnoredSignalsToDefaults) {
  // Servers ignore SIGPIPE; their children must not inherit that.
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  struct sigaction previous {};
  ASSERT_EQ(::sigaction(SIGPIPE, &ignore, &previous), 0);
  RunResult res;
  auto lines = run_lines(shell("kill -PIPE $$; echo survived"), &res);
  ::sigaction(SIGPIPE, &previous, nullptr);
  EXPECT_TRUE(lines.empty());
  EXPECT_EQ(res.status, ExitStatus::killed_by(SIGPIPE));
}
