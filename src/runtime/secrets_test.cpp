// Secrets in tasks: injected as environment variables, masked as *** in the task's log by the log
// copier (a real process between the task and its log file).
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/fs.hpp"
#include "core/temp_dir.hpp"
#include "runtime/log_copier.hpp"
#include "runtime/runtime.hpp"

namespace cutover::runtime {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr const char* kValue = "s3cr3t-Pa55-value";

template <typename Pred>
bool within(std::chrono::milliseconds timeout, Pred cond) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return cond();
}

std::string log_of(const Task& task) {
  auto r = core::read_file(task.log_path);
  return r.ok() ? *r : "";
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + 1)) ++n;
  return n;
}

class TaskSecrets : public ::testing::Test {
 protected:
  TaskSpec spec(const std::string& script) {
    TaskSpec s;
    s.service = "web";
    s.container = "app";
    s.revision = "0123456789abcdef";
    s.color = "blue";
    s.command = {"/bin/sh", "-c", script};
    s.workdir = dir_.path();
    s.log_dir = dir_.path() / "logs";
    s.secrets = {{"DB_PASSWORD", kValue}, {"API_KEY", "key-1\nkey-line-2"}};
    s.stop_timeout = 10s;
    return s;
  }

  core::TempDir dir_{"runtime-secrets-test"};
  PortAllocator ports_;
  ProcessDriver driver_{ports_, ProcessDriverOptions{{RUNTIME_LOG_COPIER}}};
};

TEST_F(TaskSecrets, InjectedAndMaskedInTheLogEvenWhenSplitAcrossWrites) {
  // The value goes out whole, on stderr, and in two writes that reach the copier as two reads
  // (the task pauses between them); then the multi-line value; then a marker.
  auto task =
      driver_.start(spec("echo \"password is $DB_PASSWORD\"; echo \"stderr: $DB_PASSWORD\" >&2; "
                         "printf 's3cr3t-Pa'; sleep 0.3; printf '55-value and more\\n'; "
                         "echo \"api: $API_KEY\"; echo written; exec sleep 1000"));
  ASSERT_TRUE(task.ok()) << task.error().message;
  ASSERT_TRUE(within(20s, [&] { return log_of(*task).find("written\n") != std::string::npos; }))
      << log_of(*task);
  const std::string log = log_of(*task);
  EXPECT_THAT(log, HasSubstr("password is ***\n"));
  EXPECT_THAT(log, HasSubstr("stderr: ***\n"));
  EXPECT_THAT(log, HasSubstr("*** and more\n"));
  EXPECT_THAT(log, HasSubstr("api: ***\n***\n"));
  EXPECT_THAT(log, Not(HasSubstr("s3cr3t")));
  EXPECT_THAT(log, Not(HasSubstr("Pa55")));
  EXPECT_THAT(log, Not(HasSubstr("key-1")));
  EXPECT_THAT(log, Not(HasSubstr("key-line-2")));

  ASSERT_TRUE(driver_.stop(*task).ok());
  EXPECT_EQ(ports_.allocated_count(), 0u);
  // stop() reaped the task and its copier: nothing is left behind.
  int status = 0;
  EXPECT_TRUE(::waitpid(-1, &status, WNOHANG) < 0 && errno == ECHILD);
}

TEST_F(TaskSecrets, LastWordsAtStopAreInTheLogWhenStopReturns) {
  auto task =
      driver_.start(spec("trap 'echo \"bye $DB_PASSWORD\"; exit 0' TERM; echo ready; "
                         "while :; do sleep 0.05; done"));
  ASSERT_TRUE(task.ok()) << task.error().message;
  ASSERT_TRUE(within(20s, [&] { return log_of(*task) == "ready\n"; })) << log_of(*task);
  ASSERT_TRUE(driver_.stop(*task).ok());
  // (sh may also report its `sleep` child "Terminated": the group got the signal too.)
  const std::string log = log_of(*task);
  EXPECT_TRUE(log.starts_with("ready\n")) << log;
  EXPECT_TRUE(log.ends_with("bye ***\n")) << log;
}

TEST_F(TaskSecrets, AValueSpanningThePipeBufferIsMasked) {
  // 200 KiB of output with the value at every 4097th byte boundary: many reads, many splits.
  auto task = driver_.start(
      spec("i=0; while [ $i -lt 60 ]; do printf '%04093d%s' 0 \"$DB_PASSWORD\"; i=$((i+1)); "
           "done; echo; echo written; exec sleep 1000"));
  ASSERT_TRUE(task.ok()) << task.error().message;
  ASSERT_TRUE(within(30s, [&] { return log_of(*task).find("written\n") != std::string::npos; }));
  const std::string log = log_of(*task);
  EXPECT_EQ(count(log, "***"), 60u);
  EXPECT_THAT(log, Not(HasSubstr("s3cr3t")));
  ASSERT_TRUE(driver_.stop(*task).ok());
}

TEST_F(TaskSecrets, RefusedWithoutALogCopier) {
  ProcessDriver bare(ports_);
  auto task = bare.start(spec("echo $DB_PASSWORD"));
  ASSERT_FALSE(task.ok());
  EXPECT_THAT(task.error().message, HasSubstr("no log copier"));
  EXPECT_EQ(ports_.allocated_count(), 0u);
}

TEST_F(TaskSecrets, ACopierThatCannotStartFailsTheTaskCleanly) {
  ProcessDriver broken(ports_, ProcessDriverOptions{{"/nonexistent/cutover", "task-log"}});
  auto task = broken.start(spec("echo $DB_PASSWORD"));
  ASSERT_FALSE(task.ok());
  EXPECT_THAT(task.error().message, HasSubstr("cannot start the log copier"));
  EXPECT_EQ(ports_.allocated_count(), 0u);
  int status = 0;
  EXPECT_TRUE(::waitpid(-1, &status, WNOHANG) < 0 && errno == ECHILD);
}

TEST_F(TaskSecrets, TasksWithoutSecretsWriteTheirLogDirectly) {
  TaskSpec s = spec("echo plain; exec sleep 1000");
  s.secrets.clear();
  auto task = driver_.start(s);
  ASSERT_TRUE(task.ok()) << task.error().message;
  ASSERT_TRUE(within(20s, [&] { return log_of(*task) == "plain\n"; }));
  ASSERT_TRUE(driver_.stop(*task).ok());
}

}  // namespace
}  // namespace cutover::runtime

namespace cutover::runtime {
namespace {

// The copier's k8s-file mode (podman tasks): conmon's records are unwrapped, partial records are
// joined per stream, and a value split across two partial records is still masked.
TEST(LogCopierK8sFile, UnwrapsRecordsAndMasksAcrossPartials) {
  core::TempDir dir("runtime-copier-test");
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  auto copier = spawn_log_copier({RUNTIME_LOG_COPIER}, dir.path() / "t.log", {"hunter2-value"},
                                 fds[0], LogFormat::K8sFile);
  ::close(fds[0]);
  ASSERT_TRUE(copier.ok()) << copier.error().message;
  const std::string records =
      "2026-11-23T13:49:37.160820680+00:00 stdout F one\n"
      "2026-11-23T13:49:37.160820680+00:00 stdout P pass=hunter\n"
      "2026-11-23T13:49:37.161525058+00:00 stderr F err hunter2-value\n"
      "2026-11-23T13:49:38.167484604+00:00 stdout P 2-val\n"
      "2026-11-23T13:49:38.167484604+00:00 stdout F ue end\n"
      "2026-11-23T13:49:38.167484604+00:00 stdout P unfinished";
  ASSERT_EQ(::write(fds[1], records.data(), records.size()), static_cast<ssize_t>(records.size()));
  ::close(fds[1]);
  auto status = core::wait_for_exit(*copier, 20s);
  ASSERT_TRUE(status.ok()) << status.error().message;
  EXPECT_TRUE(status->success()) << status->to_string();
  EXPECT_EQ(*core::read_file(dir.path() / "t.log"), "one\nerr ***\npass=*** end\nunfinished\n");
}

}  // namespace
}  // namespace cutover::runtime
