// Supervision with real processes. Time that the supervisor reasons about (backoff, crash-loop
// window, check intervals, start period) is simulated and advanced by the test, so assertions are
// about what happened and in which order, never about how long it took; the processes themselves
// run in real time and the tests wait for them on conditions with deadlines.
#include "runtime/supervisor.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/fs.hpp"
#include "core/temp_dir.hpp"

using namespace cutover;
using namespace cutover::runtime;
using namespace std::chrono_literals;
using ::testing::HasSubstr;

namespace {

class TempDir : public core::TempDir {
 public:
  TempDir() : core::TempDir("supervisor-test") {}
};

// Collects the supervisor's events (the listener runs on the thread that calls tick()).
struct Recorder {
  std::mutex mu;
  std::vector<TaskEvent> events;
  Supervisor::Listener listener() {
    return [this](const TaskEvent& e) {
      std::lock_guard lock(mu);
      events.push_back(e);
    };
  }
  int count(TaskEventKind k) {
    std::lock_guard lock(mu);
    return static_cast<int>(std::count_if(events.begin(), events.end(),
                                          [&](const TaskEvent& e) { return e.kind == k; }));
  }
  std::vector<TaskEventKind> kinds() {
    std::lock_guard lock(mu);
    std::vector<TaskEventKind> out;
    for (const auto& e : events) out.push_back(e.kind);
    return out;
  }
  std::string dump() {
    std::lock_guard lock(mu);
    std::string out;
    for (const auto& e : events) {
      out += std::string(to_string(e.kind)) + " pid " + std::to_string(e.task.pid) + ": " +
             e.detail + "\n";
    }
    return out;
  }
  // The last event of kind k; an empty event (detail "none") when there is none.
  TaskEvent last(TaskEventKind k) {
    std::lock_guard lock(mu);
    for (auto it = events.rbegin(); it != events.rend(); ++it) {
      if (it->kind == k) return *it;
    }
    return TaskEvent{k, Task{}, "none"};
  }
};

// Ticks until pred holds (advancing the simulated clock by step each round), or 20 s of real time.
template <typename Pred>
bool drive(Supervisor& sup, core::SimulatedClock& clock, Pred pred,
           core::Duration step = std::chrono::milliseconds{10}) {
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < deadline) {
    sup.tick();
    if (pred()) return true;
    clock.advance(step);
    std::this_thread::sleep_for(2ms);
  }
  return pred();
}

// Ticks (without advancing time) until the driver has seen a task end, or 20 s.
template <typename Pred>
bool wait_real(Pred pred) {
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return pred();
}

TaskSpec shell_task(const TempDir& dir, const std::string& script) {
  TaskSpec spec;
  spec.service = "web";
  spec.container = "app";
  spec.revision = "0123456789abcdef";
  spec.color = "green";
  spec.command = {"/bin/sh", "-c", script};
  spec.workdir = dir.path();
  spec.log_dir = dir.path() / "logs";
  spec.stop_timeout = 300ms;
  return spec;
}

std::string log_of(const std::filesystem::path& p) {
  auto r = core::read_file(p);
  return r.ok() ? *r : "";
}

SupervisorOptions fast_options() {
  SupervisorOptions o;
  o.backoff_initial = 100ms;
  o.backoff_max = 800ms;
  o.crash_loop_exits = 4;
  o.crash_loop_window = 1min;
  return o;
}

// Ports of this test process only: ctest runs test processes in parallel, and two allocators of
// the same range could hand the same free port to two tasks before either binds it.
PortAllocator test_ports() {
  // Below the ephemeral range (32768-60999): a client socket can hold any port in it.
  const int base = 10000 + static_cast<int>(::getpid() % 100) * 100;  // 10000-19999
  return PortAllocator(base, base + 99);
}

bool no_children_left() {
  int status = 0;
  return ::waitpid(-1, &status, WNOHANG) < 0 && errno == ECHILD;
}

}  // namespace

TEST(Supervisor, RestartsATaskThatExitsAfterItsBackoffUnderTheSameIdAndPort) {
  TempDir dir;
  PortAllocator ports = test_ports();
  ProcessDriver driver(ports);
  core::SimulatedClock clock;
  Recorder rec;
  Supervisor sup(driver, clock, fast_options(), rec.listener());
  // The first instance exits 3; the ones after it keep running.
  TaskSpec spec = shell_task(
      dir,
      "echo \"run pid=$$ port=$PORT\"; if [ -e once ]; then exec sleep 1000; fi; touch once; "
      "exit 3");
  auto task = driver.start(spec);
  ASSERT_TRUE(task.ok()) << task.error().message;
  sup.supervise(*task, spec);

  // The exit is seen without any simulated time passing; the restart is not due yet.
  ASSERT_TRUE(wait_real([&] {
    sup.tick();
    return rec.count(TaskEventKind::Exited) == 1;
  }));
  EXPECT_EQ(rec.last(TaskEventKind::Exited).detail, "exited with code 3");
  EXPECT_FALSE(sup.state(task->task_id)->running);
  clock.advance(99ms);
  sup.tick();
  EXPECT_EQ(rec.count(TaskEventKind::Restarted), 0) << "restarted before its backoff";
  clock.advance(1ms);
  sup.tick();
  ASSERT_EQ(rec.count(TaskEventKind::Restarted), 1);

  auto state = sup.state(task->task_id);
  ASSERT_TRUE(state);
  EXPECT_TRUE(state->running);
  EXPECT_EQ(state->restarts, 1);
  EXPECT_EQ(state->last_exit, "exited with code 3");
  const Task now = state->task;
  EXPECT_EQ(now.task_id, task->task_id);
  EXPECT_EQ(now.port, task->port);
  EXPECT_NE(now.pid, task->pid);
  EXPECT_TRUE(driver.alive(now));
  EXPECT_FALSE(driver.alive(*task));
  EXPECT_TRUE(ports.is_allocated(now.port));
  EXPECT_EQ(rec.last(TaskEventKind::Restarted).task.pid, now.pid);
  // Both instances wrote to the same log, with the same port.
  const std::string port = std::to_string(task->port);
  EXPECT_TRUE(wait_real([&] {
    const std::string log = log_of(task->log_path);
    return log.find("pid=" + std::to_string(now.pid) + " port=" + port) != std::string::npos;
  })) << log_of(task->log_path);
  EXPECT_THAT(log_of(task->log_path), HasSubstr("pid=" + std::to_string(task->pid)));

  // stop() ends supervision first: the stopped task is not brought back.
  ASSERT_TRUE(sup.stop(*task).ok());  // the original record: the current instance is stopped
  EXPECT_FALSE(driver.alive(now));
  EXPECT_FALSE(sup.state(task->task_id));
  EXPECT_FALSE(ports.is_allocated(now.port));
  clock.advance(10s);
  sup.tick();
  EXPECT_EQ(rec.count(TaskEventKind::Restarted), 1);
  EXPECT_TRUE(no_children_left());
}

TEST(Supervisor, ACrashLoopIsReportedFailedOnceAndNotRetried) {
  TempDir dir;
  PortAllocator ports = test_ports();
  ProcessDriver driver(ports);
  core::SimulatedClock clock;
  Recorder rec;
  Supervisor sup(driver, clock, fast_options(), rec.listener());
  TaskSpec spec = shell_task(dir, "echo crash; exit 1");
  auto task = driver.start(spec);
  ASSERT_TRUE(task.ok()) << task.error().message;
  sup.supervise(*task, spec);

  // Backoffs double: 100, 200, 400 ms of simulated time between the 4 exits.
  std::vector<core::TimePoint> restarted_at;
  ASSERT_TRUE(drive(sup, clock, [&] {
    if (rec.count(TaskEventKind::Restarted) > static_cast<int>(restarted_at.size())) {
      restarted_at.push_back(clock.now());
    }
    return rec.count(TaskEventKind::Failed) == 1;
  }));
  EXPECT_EQ(rec.count(TaskEventKind::Exited), 4);
  EXPECT_EQ(rec.count(TaskEventKind::Restarted), 3);
  EXPECT_EQ(rec.kinds().back(), TaskEventKind::Failed);
  EXPECT_THAT(rec.last(TaskEventKind::Failed).detail, HasSubstr("crash loop: 4 exits within"));
  EXPECT_THAT(rec.last(TaskEventKind::Failed).detail, HasSubstr("exited with code 1"));
  ASSERT_EQ(restarted_at.size(), 3u);
  // Each wait is at least twice the one before (the exit itself takes some ticks too).
  EXPECT_GE(restarted_at[2] - restarted_at[1], 400ms);
  EXPECT_GE(restarted_at[1] - restarted_at[0], 200ms);

  auto state = sup.state(task->task_id);
  ASSERT_TRUE(state);
  EXPECT_TRUE(state->failed);
  EXPECT_FALSE(state->running);
  // Given up: however long we wait, nothing is started again.
  for (int i = 0; i < 20; ++i) {
    clock.advance(1min);
    sup.tick();
  }
  EXPECT_EQ(rec.count(TaskEventKind::Restarted), 3);
  EXPECT_EQ(rec.count(TaskEventKind::Failed), 1);
  EXPECT_TRUE(ports.is_allocated(task->port));  // until the controller stops (replaces) it
  EXPECT_TRUE(sup.stop(state->task).ok());
  EXPECT_FALSE(ports.is_allocated(task->port));
  EXPECT_TRUE(no_children_left());
}

TEST(Supervisor, ExitsOutsideTheWindowDoNotAddUpToACrashLoop) {
  TempDir dir;
  PortAllocator ports = test_ports();
  ProcessDriver driver(ports);
  core::SimulatedClock clock;
  Recorder rec;
  SupervisorOptions o = fast_options();
  o.crash_loop_exits = 2;
  o.crash_loop_window = 10s;
  Supervisor sup(driver, clock, o, rec.listener());
  TaskSpec spec = shell_task(dir, "exit 1");
  auto task = driver.start(spec);
  ASSERT_TRUE(task.ok());
  sup.supervise(*task, spec);
  for (int round = 1; round <= 3; ++round) {
    ASSERT_TRUE(wait_real([&] {
      sup.tick();
      return rec.count(TaskEventKind::Exited) == round;
    }));
    clock.advance(11s);  // the previous exit leaves the window before the next one
    sup.tick();
    ASSERT_EQ(rec.count(TaskEventKind::Restarted), round);
  }
  EXPECT_EQ(rec.count(TaskEventKind::Failed), 0);
  auto state = sup.state(task->task_id);
  EXPECT_TRUE(sup.stop(state->task).ok());
}

TEST(Supervisor, FailingLivenessCheckKillsAndRestartsTheTaskAfterTheStartPeriod) {
  TempDir dir;
  PortAllocator ports = test_ports();
  ProcessDriver driver(ports);
  core::SimulatedClock clock;
  Recorder rec;
  Supervisor sup(driver, clock, fast_options(), rec.listener());
  // Serves only while the file `alive` exists; the check is a command run in the workdir with the
  // task's variables.
  TaskSpec spec = shell_task(dir, "trap '' TERM; sleep 1000 & echo \"child=$!\"; wait");
  spec.health.kind = config::HealthKind::Command;
  spec.health.command = {"/bin/sh", "-c", "test -e alive && test \"$TASK_ID\" != \"\""};
  spec.health.interval = 1s;
  spec.health.timeout = 5s;
  spec.health.retries = 3;
  spec.health.start_period = 10s;
  std::ofstream(dir.path() / "alive").put('\n');
  auto task = driver.start(spec);
  ASSERT_TRUE(task.ok()) << task.error().message;
  sup.supervise(*task, spec);
  ASSERT_TRUE(drive(sup, clock,
                    [&] { return sup.state(task->task_id)->liveness == LivenessState::Healthy; }));

  ASSERT_TRUE(wait_real([&] { return log_of(task->log_path).find('\n') != std::string::npos; }));
  const pid_t child = std::stoi(log_of(task->log_path).substr(6));
  auto child_start = core::process_start_time(child);
  ASSERT_TRUE(child_start.ok());

  std::filesystem::remove(dir.path() / "alive");
  ASSERT_TRUE(drive(
      sup, clock, [&] { return rec.count(TaskEventKind::Unhealthy) == 1; }, 100ms));
  EXPECT_THAT(rec.last(TaskEventKind::Unhealthy).detail, HasSubstr("3 in a row"));
  EXPECT_THAT(rec.last(TaskEventKind::Unhealthy).detail, HasSubstr("exited with code 1"));
  std::filesystem::path alive = dir.path() / "alive";
  std::ofstream(alive).put('\n');
  ASSERT_TRUE(drive(sup, clock, [&] { return rec.count(TaskEventKind::Restarted) == 1; }));
  // The old instance ignored SIGTERM: it and its child were SIGKILLed as a tree.
  EXPECT_FALSE(driver.alive(*task));
  EXPECT_FALSE(core::is_same_process(child, *child_start));
  EXPECT_EQ(rec.count(TaskEventKind::Exited), 0);  // a kill on purpose is not an exit
  auto state = sup.state(task->task_id);
  EXPECT_THAT(state->last_exit, HasSubstr("liveness"));
  EXPECT_EQ(state->liveness, LivenessState::Starting);
  EXPECT_TRUE(driver.alive(state->task));
  ASSERT_TRUE(drive(sup, clock,
                    [&] { return sup.state(task->task_id)->liveness == LivenessState::Healthy; }));
  EXPECT_TRUE(sup.stop(state->task).ok());
  EXPECT_TRUE(no_children_left());
}

TEST(Supervisor, FailuresDuringTheStartPeriodDoNotCount) {
  TempDir dir;
  PortAllocator ports = test_ports();
  ProcessDriver driver(ports);
  core::SimulatedClock clock;
  Recorder rec;
  Supervisor sup(driver, clock, fast_options(), rec.listener());
  TaskSpec spec = shell_task(dir, "exec sleep 1000");  // never listens on PORT
  spec.health.kind = config::HealthKind::Tcp;
  spec.health.interval = 1s;
  spec.health.timeout = 1s;
  spec.health.retries = 2;
  spec.health.start_period = 30s;
  auto task = driver.start(spec);
  ASSERT_TRUE(task.ok());
  sup.supervise(*task, spec);
  const auto start = clock.now();
  ASSERT_TRUE(drive(
      sup, clock, [&] { return rec.count(TaskEventKind::Unhealthy) == 1; }, 250ms));
  EXPECT_GE(clock.now() - start, 30s);
  EXPECT_THAT(rec.last(TaskEventKind::Unhealthy).detail, HasSubstr("Connection refused"));
  EXPECT_EQ(sup.state(task->task_id)->liveness, LivenessState::Unhealthy);
  EXPECT_TRUE(sup.stop(*task).ok());
  EXPECT_TRUE(no_children_left());
}

TEST(Supervisor, HttpAndTcpLivenessAgainstARealServer) {
  TempDir dir;
  PortAllocator ports = test_ports();
  ProcessDriver driver(ports);
  core::SimulatedClock clock;
  Recorder rec;
  Supervisor sup(driver, clock, fast_options(), rec.listener());
  std::ofstream(dir.path() / "health").put('\n');
  TaskSpec spec;
  spec.service = "web";
  spec.color = "blue";
  spec.command = {"python3", "-m", "http.server", "${PORT}", "--bind", "127.0.0.1"};
  spec.workdir = dir.path();
  spec.log_dir = dir.path() / "logs";
  spec.health.kind = config::HealthKind::Http;
  spec.health.path = "/health";
  spec.health.interval = 1s;
  spec.health.timeout = 2s;
  spec.health.retries = 2;
  // python3 can take a few (real) seconds to listen on a loaded machine, while simulated seconds
  // pass in milliseconds here: a start period keeps a slow start from counting as failures.
  spec.health.start_period = 1h;
  auto task = driver.start(spec);
  ASSERT_TRUE(task.ok());
  sup.supervise(*task, spec);
  ASSERT_TRUE(wait_real([&] { return probe_tcp(task->port, 1s).ok(); }));
  ASSERT_TRUE(drive(sup, clock,
                    [&] { return sup.state(task->task_id)->liveness == LivenessState::Healthy; }))
      << rec.dump() << log_of(task->log_path);
  EXPECT_TRUE(probe_http(task->port, "/health", 2s).ok());
  auto missing = probe_http(task->port, "/missing", 2s);
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.error().message, HasSubstr("status 404"));

  // The path starts failing: after `retries` failures the task is replaced.
  std::filesystem::remove(dir.path() / "health");
  ASSERT_TRUE(drive(
      sup, clock, [&] { return rec.count(TaskEventKind::Restarted) == 1; }, 100ms));
  EXPECT_THAT(rec.last(TaskEventKind::Unhealthy).detail, HasSubstr("status 404 (2 in a row)"));
  EXPECT_TRUE(sup.stop(*task).ok());
  EXPECT_TRUE(no_children_left());
}

TEST(Supervisor, StopKillsAChildIgnoringSigtermAndItsGrandchild) {
  TempDir dir;
  PortAllocator ports = test_ports();
  ProcessDriver driver(ports);
  core::SimulatedClock clock;
  Recorder rec;
  Supervisor sup(driver, clock, fast_options(), rec.listener());
  // The leader dies on SIGTERM; its child ignores it and has a grandchild (which inherits that).
  TaskSpec spec = shell_task(
      dir,
      "sh -c 'trap \"\" TERM; sleep 1000 & echo \"grandchild=$!\"; echo \"child=$$\"; wait' & "
      "wait");
  auto task = driver.start(spec);
  ASSERT_TRUE(task.ok());
  sup.supervise(*task, spec);
  ASSERT_TRUE(wait_real([&] {
    return log_of(task->log_path).find("child=") != std::string::npos &&
           log_of(task->log_path).find("grandchild=") != std::string::npos &&
           log_of(task->log_path).back() == '\n';
  }));
  std::string log = log_of(task->log_path);
  auto pid_after = [&](const std::string& key) {
    auto at = log.find("\n" + key);
    at = at == std::string::npos ? log.find(key) : at + 1;
    return static_cast<pid_t>(std::stoi(log.substr(at + key.size())));
  };
  const pid_t child = pid_after("child=");
  const pid_t grandchild = pid_after("grandchild=");
  auto cs = core::process_start_time(child);
  auto gs = core::process_start_time(grandchild);
  ASSERT_TRUE(cs.ok() && gs.ok());
  ASSERT_TRUE(sup.stop(*task).ok());
  EXPECT_FALSE(core::is_same_process(child, *cs));
  EXPECT_FALSE(core::is_same_process(grandchild, *gs));
  EXPECT_FALSE(core::group_alive(task->pid));
  sup.tick();
  EXPECT_TRUE(rec.kinds().empty());  // a stop is not an exit and nothing is restarted
  EXPECT_TRUE(no_children_left());
}

TEST(Supervisor, RlimitsApplyToTheTask) {
  TempDir dir;
  PortAllocator ports = test_ports();
  ProcessDriver driver(ports);
  config::Limits limits;
  limits.open_files = 77;
  limits.file_size = 4096 * 1024;
  limits.cpu_time = 90s;
  TaskSpec spec =
      shell_task(dir, "echo \"nofile=$(ulimit -n) fsize=$(ulimit -f) cpu=$(ulimit -t)\"");
  spec.rlimits = to_rlimits(limits);
  auto task = driver.start(spec);
  ASSERT_TRUE(task.ok());
  ASSERT_TRUE(wait_real([&] { return !driver.reap().empty(); }));
  // dash counts ulimit -f in 512-byte blocks.
  EXPECT_EQ(log_of(task->log_path), "nofile=77 fsize=8192 cpu=90\n");
  EXPECT_TRUE(driver.stop(*task).ok());
}

TEST(Supervisor, MemoryLimitStopsAnAllocationBeyondIt) {
  TempDir dir;
  PortAllocator ports = test_ports();
  ProcessDriver driver(ports);
  config::Limits limits;
  limits.memory = 64ULL << 20;
  TaskSpec spec;
  spec.service = "web";
  spec.command = {"python3", "-c",
                  "import sys\ntry:\n  b = bytearray(256 * 1024 * 1024)\n  print('allocated')\n"
                  "except MemoryError:\n  print('refused')\n"};
  spec.workdir = dir.path();
  spec.log_dir = dir.path() / "logs";
  spec.rlimits = to_rlimits(limits);
  auto task = driver.start(spec);
  ASSERT_TRUE(task.ok());
  ASSERT_TRUE(wait_real([&] { return !driver.reap().empty(); }));
  EXPECT_EQ(log_of(task->log_path), "refused\n");
  EXPECT_TRUE(driver.stop(*task).ok());
}

TEST(Supervisor, RotatesALogThatOutgrowsItsCapAndTailReadsAcrossFiles) {
  TempDir dir;
  PortAllocator ports = test_ports();
  ProcessDriver driver(ports);
  core::SimulatedClock clock;
  Recorder rec;
  SupervisorOptions o = fast_options();
  o.log_max_bytes = 1000;
  o.log_keep = 2;
  o.log_check_interval = 100ms;
  Supervisor sup(driver, clock, o, rec.listener());
  // Writes a numbered line whenever the file `more` appears, then removes it.
  TaskSpec spec =
      shell_task(dir,
                 "i=0; while :; do if [ -e more ]; then n=0; while [ $n -lt 40 ]; do i=$((i+1)); "
                 "n=$((n+1)); echo \"line $i padding-padding-padding\"; done; rm more; fi; "
                 "sleep 0.01; done");
  auto task = driver.start(spec);
  ASSERT_TRUE(task.ok());
  sup.supervise(*task, spec);
  auto log1 = task->log_path;
  log1 += ".1";
  auto log2 = task->log_path;
  log2 += ".2";
  auto log3 = task->log_path;
  log3 += ".3";
  for (int batch = 1; batch <= 3; ++batch) {
    std::ofstream(dir.path() / "more").put('\n');
    ASSERT_TRUE(wait_real([&] { return !std::filesystem::exists(dir.path() / "more"); }));
    ASSERT_TRUE(drive(
        sup, clock, [&] { return std::filesystem::file_size(task->log_path) <= o.log_max_bytes; }));
  }
  EXPECT_TRUE(std::filesystem::exists(log1));
  EXPECT_TRUE(std::filesystem::exists(log2));
  EXPECT_FALSE(std::filesystem::exists(log3));  // keep = 2
  EXPECT_THAT(log_of(log1), HasSubstr("line 120 "));
  EXPECT_THAT(log_of(log2), HasSubstr("line 80 "));
  auto tail = tail_log(task->log_path, 50);
  ASSERT_TRUE(tail.ok());
  ASSERT_EQ(tail->size(), 50u);
  EXPECT_EQ(tail->back(), "line 120 padding-padding-padding");
  EXPECT_EQ(tail->front(), "line 71 padding-padding-padding");
  EXPECT_TRUE(sup.stop(*task).ok());

  auto none = tail_log(dir.path() / "nope.log", 10);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().kind, core::ErrorKind::NotFound);
}

TEST(Supervisor, AnExitReapedBeforeSuperviseIsNotLost) {
  TempDir dir;
  PortAllocator ports = test_ports();
  ProcessDriver driver(ports);
  core::SimulatedClock clock;
  Recorder rec;
  Supervisor sup(driver, clock, fast_options(), rec.listener());
  TaskSpec spec = shell_task(dir, "if [ -e once ]; then exec sleep 1000; fi; touch once; exit 7");
  auto task = driver.start(spec);
  ASSERT_TRUE(task.ok());
  // The supervisor's thread reaps the exit before the caller gets to supervise() the task.
  ASSERT_TRUE(wait_real([&] {
    sup.tick();
    return !driver.alive(*task) && !core::process_start_time(task->pid).ok();
  }));
  EXPECT_TRUE(rec.kinds().empty());
  sup.supervise(*task, spec);
  ASSERT_TRUE(drive(sup, clock, [&] { return rec.count(TaskEventKind::Restarted) == 1; }));
  EXPECT_EQ(rec.last(TaskEventKind::Exited).detail, "exited with code 7");
  EXPECT_TRUE(sup.stop(*task).ok());
  EXPECT_TRUE(no_children_left());
}

TEST(Supervisor, AnAdoptedTaskHasNoStartPeriodLeft) {
  TempDir dir;
  PortAllocator ports = test_ports();
  ProcessDriver driver(ports);
  core::SimulatedClock clock;
  Recorder rec;
  Supervisor sup(driver, clock, fast_options(), rec.listener());
  TaskSpec spec = shell_task(dir, "exec sleep 1000");  // never listens on PORT
  spec.health.kind = config::HealthKind::Tcp;
  spec.health.interval = 1s;
  spec.health.timeout = 1s;
  spec.health.retries = 2;
  spec.health.start_period = 5min;
  auto task = driver.start(spec);
  ASSERT_TRUE(task.ok());
  sup.supervise(*task, spec, /*adopted=*/true);
  const auto start = clock.now();
  ASSERT_TRUE(drive(
      sup, clock, [&] { return rec.count(TaskEventKind::Unhealthy) == 1; }, 250ms));
  EXPECT_LT(clock.now() - start, 5min);
  EXPECT_TRUE(sup.stop(*task).ok());
  EXPECT_TRUE(no_children_left());
}
