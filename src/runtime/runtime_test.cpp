#include "runtime/runtime.hpp"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include "core/temp_dir.hpp"

#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/fs.hpp"
#include "core/id.hpp"

using namespace cutover;
using namespace cutover::runtime;
using namespace std::chrono_literals;
using ::testing::HasSubstr;

namespace {

// A scratch directory per test.
class TempDir : public core::TempDir {
 public:
  TempDir() : core::TempDir("runtime-test") {}
};

template <typename Pred>
bool eventually(Pred cond) {
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return cond();
}

// A listening socket on an ephemeral loopback port; closing it frees the port.
class Listener {
 public:
  Listener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(fd_, 1), 0);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  ~Listener() { close(); }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

bool can_connect(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

// Ports of this test process only: ctest runs test processes in parallel, and two allocators of
// the same range could hand the same free port to two tasks before either binds it.
PortAllocator test_ports() {
  // Below the ephemeral range (32768-60999): a client socket can hold any port in it.
  const int base = 10000 + static_cast<int>(::getpid() % 100) * 100;  // 10000-19999
  return PortAllocator(base, base + 99);
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
  return spec;
}

std::string log_of(const Task& task) {
  auto r = core::read_file(task.log_path);
  return r.ok() ? *r : "";
}

// Every child of this test process has been reaped (no orphan, no zombie left by the driver).
bool no_children_left() {
  int status = 0;
  return ::waitpid(-1, &status, WNOHANG) < 0 && errno == ECHILD;
}

}  // namespace

TEST(PortAllocator, HandsOutDistinctPortsAndReusesReleasedOnes) {
  PortAllocator ports(39000, 39099);
  std::set<int> seen;
  for (int i = 0; i < 20; ++i) {
    auto p = ports.allocate();
    ASSERT_TRUE(p.ok()) << p.error().message;
    EXPECT_GE(*p, 39000);
    EXPECT_LE(*p, 39099);
    EXPECT_TRUE(seen.insert(*p).second) << "port handed out twice: " << *p;
    EXPECT_TRUE(ports.is_allocated(*p));
  }
  EXPECT_EQ(ports.allocated_count(), 20u);
  EXPECT_FALSE(ports.reserve(*seen.begin()));
  for (int p : seen) ports.release(p);
  EXPECT_EQ(ports.allocated_count(), 0u);
  EXPECT_TRUE(ports.reserve(*seen.begin()));
}

TEST(PortAllocator, SkipsPortsInUseAndReportsExhaustion) {
  Listener busy;
  PortAllocator ports(busy.port(), busy.port());
  auto p = ports.allocate();
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(p.error().message, HasSubstr("no free TCP port"));
  busy.close();
  p = ports.allocate();
  ASSERT_TRUE(p.ok()) << p.error().message;
  EXPECT_EQ(*p, busy.port());
  EXPECT_FALSE(ports.allocate().ok());  // the only port is allocated now
}

TEST(PortAllocator, ThreadSafe) {
  PortAllocator ports(39100, 39399);
  std::vector<std::vector<int>> got(2);
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < 2; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < 50; ++i) {
          auto p = ports.allocate();
          if (p.ok()) got[t].push_back(*p);
        }
      });
    }
  }
  std::set<int> all(got[0].begin(), got[0].end());
  all.insert(got[1].begin(), got[1].end());
  EXPECT_EQ(all.size(), got[0].size() + got[1].size());
  EXPECT_EQ(ports.allocated_count(), all.size());
}

TEST(ProcessDriver, StartsTaskSetWithVariablesAndStopsIt) {
  TempDir dir;
  PortAllocator ports = test_ports();
  ProcessDriver driver(ports);
  TaskSpec spec = shell_task(
      dir,
      "echo \"port=$PORT service=$SERVICE revision=$REVISION color=$COLOR task=$TASK_ID arg=$1 "
      "extra=$EXTRA pwd=$(pwd)\"; exec sleep 1000");
  spec.command.push_back("sh");
  spec.command.push_back("${PORT}");
  spec.env["EXTRA"] = "x-${COLOR}";
  spec.env["PORT"] = "1";  // the allocated port wins

  auto set = start_task_set(driver, spec, 3);
  ASSERT_TRUE(set.ok()) << set.error().message;
  ASSERT_EQ(set->size(), 3u);
  std::set<int> task_ports;
  std::set<std::string> ids;
  for (const Task& t : *set) {
    task_ports.insert(t.port);
    ids.insert(t.task_id);
    EXPECT_TRUE(driver.alive(t));
    EXPECT_TRUE(ports.is_allocated(t.port));
    EXPECT_EQ(::getpgid(t.pid), t.pid);
    EXPECT_EQ(t.log_path, spec.log_dir / (t.task_id + ".log"));
    std::string expected = "port=" + std::to_string(t.port) +
                           " service=web revision=0123456789abcdef color=green task=" + t.task_id +
                           " arg=" + std::to_string(t.port) +
                           " extra=x-green pwd=" + dir.path().string() + "\n";
    EXPECT_TRUE(eventually([&] { return log_of(t) == expected; })) << log_of(t);
  }
  EXPECT_EQ(task_ports.size(), 3u);
  EXPECT_EQ(ids.size(), 3u);

  ASSERT_TRUE(stop_task_set(driver, *set).ok());
  for (const Task& t : *set) {
    EXPECT_FALSE(driver.alive(t));
    EXPECT_FALSE(core::group_alive(t.pid));
  }
  EXPECT_EQ(ports.allocated_count(), 0u);
  EXPECT_TRUE(driver.reap().empty());  // stop() reaped them
  EXPECT_TRUE(no_children_left());
  // Stopping again is a no-op (idempotent commands).
  EXPECT_TRUE(driver.stop(set->front()).ok());
}

TEST(ProcessDriver, TaskServesOnItsPort) {
  TempDir dir;
  PortAllocator ports = test_ports();
  ProcessDriver driver(ports);
  TaskSpec spec;
  spec.service = "web";
  spec.color = "blue";
  spec.command = {"python3", "-m", "http.server", "${PORT}", "--bind", "127.0.0.1"};
  spec.workdir = dir.path();
  spec.log_dir = dir.path() / "logs";
  auto task = driver.start(spec);
  ASSERT_TRUE(task.ok()) << task.error().message;
  EXPECT_TRUE(eventually([&] { return can_connect(task->port) || !driver.alive(*task); }));
  EXPECT_TRUE(can_connect(task->port)) << log_of(*task);
  ASSERT_TRUE(driver.stop(*task).ok());
  EXPECT_FALSE(can_connect(task->port));
}

TEST(ProcessDriver, StopEscalatesToSigkillAndKillsChildren) {
  TempDir dir;
  PortAllocator ports = test_ports();
  ProcessDriver driver(ports);
  // Ignoring TERM is inherited by the grandchild sleep: only SIGKILL ends either.
  TaskSpec spec = shell_task(dir, "trap '' TERM; sleep 1000 & echo $!; wait");
  spec.stop_timeout = 300ms;
  auto task = driver.start(spec);
  ASSERT_TRUE(task.ok()) << task.error().message;
  ASSERT_TRUE(eventually([&] { return !log_of(*task).empty() && log_of(*task).back() == '\n'; }));
  pid_t grandchild = std::stoi(log_of(*task));
  auto gstart = core::process_start_time(grandchild);
  ASSERT_TRUE(gstart.ok());

  ASSERT_TRUE(driver.stop(*task).ok());
  EXPECT_FALSE(driver.alive(*task));
  EXPECT_FALSE(core::is_same_process(grandchild, *gstart));
  EXPECT_FALSE(ports.is_allocated(task->port));
}

TEST(ProcessDriver, StartFailureIsAnErrorAndReleasesThePort) {
  TempDir dir;
  PortAllocator ports = test_ports();
  ProcessDriver driver(ports);
  TaskSpec spec = shell_task(dir, "");
  spec.command = {"dist/no-such-server", "--port", "${PORT}"};
  auto task = driver.start(spec);
  ASSERT_FALSE(task.ok());
  EXPECT_THAT(task.error().message, HasSubstr("cannot start a task of service web"));
  EXPECT_THAT(task.error().message, HasSubstr("dist/no-such-server"));
  EXPECT_EQ(ports.allocated_count(), 0u);

  spec.command.clear();
  EXPECT_FALSE(driver.start(spec).ok());
}

TEST(ProcessDriver, FailedTaskSetLeavesNoOrphans) {
  TempDir dir;
  Listener probe;  // finds a free port, then frees it for the allocator
  probe.close();
  PortAllocator ports(probe.port(), probe.port());  // room for exactly one task
  ProcessDriver driver(ports);
  auto set = start_task_set(driver, shell_task(dir, "exec sleep 1000"), 2);
  ASSERT_FALSE(set.ok());
  EXPECT_THAT(set.error().message, HasSubstr("task 2 of 2"));
  EXPECT_THAT(set.error().message, HasSubstr("no free TCP port"));
  EXPECT_EQ(ports.allocated_count(), 0u);
  EXPECT_TRUE(no_children_left());
}

TEST(ProcessDriver, ReapReportsTasksThatExitOnTheirOwn) {
  TempDir dir;
  PortAllocator ports = test_ports();
  ProcessDriver driver(ports);
  auto task = driver.start(shell_task(dir, "exit 3"));
  ASSERT_TRUE(task.ok()) << task.error().message;
  std::vector<TaskExit> exits;
  ASSERT_TRUE(eventually([&] {
    for (auto& e : driver.reap()) exits.push_back(e);
    return !exits.empty();
  }));
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_EQ(exits[0].task_id, task->task_id);
  ASSERT_TRUE(exits[0].status.has_value());
  EXPECT_EQ(*exits[0].status, core::ExitStatus::exited_with(3));
  EXPECT_TRUE(driver.reap().empty());  // reported once
  EXPECT_FALSE(driver.alive(*task));
  EXPECT_TRUE(ports.is_allocated(task->port));  // until the controller stops (replaces) it
  EXPECT_TRUE(driver.stop(*task).ok());
  EXPECT_FALSE(ports.is_allocated(task->port));
  EXPECT_TRUE(no_children_left());
}

TEST(ProcessDriver, AnotherDriverAdoptsAndStopsARunningTask) {
  TempDir dir;
  PortAllocator ports_before;
  ProcessDriver before(ports_before);  // the controller before its restart
  TaskSpec spec = shell_task(dir, "trap '' TERM; sleep 1000 & echo $!; wait");
  spec.stop_timeout = 300ms;
  auto task = before.start(spec);
  ASSERT_TRUE(task.ok()) << task.error().message;
  ASSERT_TRUE(eventually([&] { return !log_of(*task).empty() && log_of(*task).back() == '\n'; }));
  pid_t grandchild = std::stoi(log_of(*task));
  auto gstart = core::process_start_time(grandchild);
  ASSERT_TRUE(gstart.ok());

  PortAllocator ports_after;
  ProcessDriver after(ports_after);  // the restarted controller
  Task reused = *task;
  reused.start_time += 1;  // same pid, different process
  auto bad = after.adopt(reused);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.error().message, HasSubstr("no longer running"));
  EXPECT_EQ(bad.error().kind, core::ErrorKind::NotFound);
  EXPECT_EQ(ports_after.allocated_count(), 0u);

  ASSERT_TRUE(after.adopt(*task).ok());
  EXPECT_TRUE(after.adopt(*task).ok());  // idempotent
  EXPECT_TRUE(ports_after.is_allocated(task->port));
  EXPECT_TRUE(after.alive(*task));
  auto next = ports_after.allocate();  // never the adopted task's port
  ASSERT_TRUE(next.ok());
  EXPECT_NE(*next, task->port);

  ASSERT_TRUE(after.stop(*task).ok());  // not its child: watches /proc, escalates to SIGKILL
  EXPECT_FALSE(after.alive(*task));
  EXPECT_FALSE(core::is_same_process(grandchild, *gstart));
  EXPECT_FALSE(ports_after.is_allocated(task->port));

  auto again = after.adopt(*task);
  ASSERT_FALSE(again.ok());
  EXPECT_THAT(again.error().message, HasSubstr("no longer running"));

  // In this test the "old controller" is the same process: it reaps its zombie.
  auto exits = before.reap();
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_EQ(exits[0].status, core::ExitStatus::killed_by(SIGKILL));
}

TEST(ProcessDriver, AdoptRefusesPortAlreadyAllocated) {
  TempDir dir;
  PortAllocator ports_before;
  ProcessDriver before(ports_before);
  auto task = before.start(shell_task(dir, "exec sleep 1000"));
  ASSERT_TRUE(task.ok());
  PortAllocator ports_after;
  ASSERT_TRUE(ports_after.reserve(task->port));
  ProcessDriver after(ports_after);
  auto r = after.adopt(*task);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message, HasSubstr("already allocated"));
  EXPECT_EQ(r.error().kind, core::ErrorKind::Conflict);
  EXPECT_TRUE(before.stop(*task).ok());
}

TEST(ProcessDriver, FindTaskProcessesSeesTheLeadersOfItsDirectoryOnly) {
  TempDir dir;
  PortAllocator ports = test_ports();
  ProcessDriver driver(ports);
  // The task has a child: only the leader counts.
  auto task = driver.start(shell_task(dir, "sleep 1000 & wait"));
  ASSERT_TRUE(task.ok());
  TaskSpec other = shell_task(dir, "exec sleep 1000");
  other.log_dir = dir.path() / "other-logs";  // another controller's tasks
  auto foreign = driver.start(other);
  ASSERT_TRUE(foreign.ok());
  std::vector<FoundProcess> found;
  ASSERT_TRUE(eventually([&] {
    found = find_task_processes(dir.path() / "logs");
    return found.size() == 1;
  }));
  EXPECT_EQ(found[0].pid, task->pid);
  EXPECT_EQ(found[0].start_time, task->start_time);
  EXPECT_EQ(found[0].task_id, task->task_id);
  ASSERT_TRUE(driver.stop(*task).ok());
  EXPECT_TRUE(find_task_processes(dir.path() / "logs").empty());
  ASSERT_TRUE(driver.stop(*foreign).ok());
}
