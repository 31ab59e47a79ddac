// Runtime: runs the tasks of a service revision as task sets (ECS words), and finds them again
// after a controller restart. Nothing outside this module knows that tasks are local processes.
//
// The walking skeleton has one driver, ProcessDriver: each task is a process started in its own
// session (so it survives the controller and its whole tree can be signalled), with stdout+stderr
// appended to <log_dir>/<task_id>.log, a TCP port allocated on 127.0.0.1 and passed as PORT.
// A task is identified by (pid, start_time), which is what the controller persists and what
// adopt() checks after a restart, so a reused pid is never mistaken for the task.
//
// Reaping (no SIGCHLD handler): tasks started by this driver are children of the controller and
// become zombies when they exit. The controller calls reap() periodically (its liveness tick);
// reap() waitpid(WNOHANG)s each known child and reports which tasks ended and how. stop() reaps
// the task it stops. Adopted tasks are not our children (init reaps them); reap() reports them
// once they are gone, without an exit status. Nothing in the process may wait for "any" child.
//
// Supervision (restart with backoff, crash loops, liveness checks, log rotation) lives in
// runtime/supervisor.hpp and drives any Driver through this interface: reap() tells it what
// ended, restart() brings a task back under the same id and port, run_check() runs a command
// health check in the task's context (the host for processes, `podman exec` for containers).
//
// Thread-safety: PortAllocator and ProcessDriver are safe to use from several threads. start()
// and stop() block (stop() up to stop_timeout plus a few seconds): call them from a worker pool.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "core/process.hpp"
#include "core/result.hpp"
#include "runtime/log_copier.hpp"

namespace cutover::runtime {

// Hands out TCP ports on 127.0.0.1 from [first, last], each verified bindable at allocation time
// and never one that is currently allocated. Allocation rotates through the range so that a port
// just released (its old target maybe still draining in the proxy) is not reused at once.
class PortAllocator {
 public:
  static constexpr int kDefaultFirst = 20000;
  static constexpr int kDefaultLast = 29999;

  explicit PortAllocator(int first = kDefaultFirst, int last = kDefaultLast);

  // Error (kind Unavailable) when every port of the range is allocated or not bindable.
  core::Result<int> allocate();
  // Marks a port as used by an adopted task; false if it is already allocated. Ports outside the
  // range are accepted: adopted tasks may come from an older configuration.
  bool reserve(int port);
  void release(int port);
  bool is_allocated(int port) const;
  size_t allocated_count() const;

 private:
  mutable std::mutex mu_;
  const int first_;
  const int last_;
  int next_;
  std::set<int> allocated_;
};

// What to run for one task. The controller maps config (service, container, revision) to this.
struct TaskSpec {
  std::string service;
  std::string container;
  std::string revision;  // commit SHA
  std::string color;     // blue | green
  // argv; ${PORT} ${SERVICE} ${REVISION} ${TASK_ID} ${COLOR} are expanded in arguments and in env
  // values (other ${...} are left as they are). A program without '/' is looked up in PATH;
  // a relative path is relative to workdir.
  std::vector<std::string> command;
  // Added to core::minimal_environment(); PORT SERVICE REVISION TASK_ID COLOR are then set and win.
  std::map<std::string, std::string> env;
  // Secret values by environment variable name, added after env (not ${...}-expanded). Their
  // values are masked as "***" in the task's log (log_copier.hpp).
  std::map<std::string, std::string> secrets;
  std::filesystem::path workdir;  // the unpacked artifact directory (process driver)
  // Podman driver: the image, and the port the program listens on inside the container (PORT is
  // set to it there; the allocated host port on 127.0.0.1 is published to it). command, when not
  // empty, replaces the image's command.
  std::string image;
  int container_port = 0;
  std::filesystem::path log_dir;  // created if missing
  int stop_signal = SIGTERM;
  std::chrono::milliseconds stop_timeout{10000};
  // Applied to the task's process (setrlimit before exec; podman: --ulimit); children inherit.
  std::vector<core::ResourceLimit> rlimits;
  // Liveness, run by the Supervisor (not by the driver). kind None = no check.
  config::Health health;
};

// Maps a container's `limits:` (docs/configuration.md) to rlimits.
std::vector<core::ResourceLimit> to_rlimits(const config::Limits& limits);

// A running task: what the controller persists and hands back to stop()/alive()/adopt().
struct Task {
  std::string task_id;  // "task-3f9a1c2b7d"
  std::string service;
  std::string revision;
  std::string color;
  pid_t pid = 0;           // leads its own process group: pgid == pid
  int64_t start_time = 0;  // core::process_start_time(pid)
  int port = 0;
  std::filesystem::path log_path;
  int stop_signal = SIGTERM;
  std::chrono::milliseconds stop_timeout{10000};
};

// A task that ended on its own (crashed or exited), reported once by reap().
struct TaskExit {
  std::string task_id;
  pid_t pid = 0;
  // How it ended; nullopt for adopted tasks (not our children, so their status is unknowable).
  std::optional<core::ExitStatus> status;
};

// The interface the controller and task sets code against; ProcessDriver now, podman later.
class Driver {
 public:
  virtual ~Driver() = default;
  virtual core::Result<Task> start(const TaskSpec& spec) = 0;
  // Idempotent: stopping a task that is already gone succeeds. task.stop_signal to the task's
  // group, SIGKILL after task.stop_timeout; then its port is released.
  virtual core::Result<void> stop(const Task& task) = 0;
  virtual bool alive(const Task& task) const = 0;
  // Takes over a task found in the store after a restart. Error (kind NotFound: replace the task)
  // if it is gone or its pid now belongs to another process (start time differs); kind Conflict
  // if its port is already allocated here. Idempotent for a task already adopted.
  virtual core::Result<void> adopt(const Task& task) = 0;
  // Reports tasks that ended since the last call (see the reaping note at the top).
  virtual std::vector<TaskExit> reap() = 0;
  // Starts a new instance of a task that ended (reported by reap(), or stopped for failing its
  // liveness check): same task_id, same port, same log file; new pid and start time. The driver
  // keeps the task's port between the end and the restart. Error (the task stays ended, its port
  // kept until stop()) if it cannot be started or if the old instance is still running.
  virtual core::Result<Task> restart(const Task& old, const TaskSpec& spec) = 0;
  // Ends a running instance so that restart() can replace it (stop_signal, SIGKILL after
  // stop_timeout, whole tree) without giving up its port or its identity. Idempotent.
  virtual core::Result<void> kill(const Task& task) = 0;
  // Runs spec.health.command in the task's context with the task's variables (PORT, TASK_ID,
  // ...) in its environment; kills it after timeout. Error when it cannot be started.
  virtual core::Result<core::RunResult> run_check(const Task& task, const TaskSpec& spec,
                                                  std::chrono::milliseconds timeout) = 0;
};

struct ProcessDriverOptions {
  // The log copier's command line before `--log FILE` (the controller uses {cutover, "task-log"}).
  // Tasks with secrets write into a pipe to it, which masks their values in the log file. Empty:
  // a task with secrets does not start (its values would reach the log in clear).
  std::vector<std::string> log_copier;
};

class ProcessDriver final : public Driver {
 public:
  explicit ProcessDriver(PortAllocator& ports, ProcessDriverOptions options = {});
  // Does not stop anything: tasks outlive the driver and the controller.
  ~ProcessDriver() override = default;
  ProcessDriver(const ProcessDriver&) = delete;
  ProcessDriver& operator=(const ProcessDriver&) = delete;

  // Allocates a port, spawns the command detached (own session) in spec.workdir with output
  // appended to <log_dir>/<task_id>.log — through the log copier when spec has secrets. Error (and
  // nothing left running, port released) if the program or the copier cannot be started.
  core::Result<Task> start(const TaskSpec& spec) override;
  // Works for our children and for adopted tasks. The port is released only if this driver
  // allocated or adopted it. Error only if the task survives SIGKILL.
  core::Result<void> stop(const Task& task) override;
  bool alive(const Task& task) const override;
  core::Result<void> adopt(const Task& task) override;
  std::vector<TaskExit> reap() override;
  core::Result<Task> restart(const Task& old, const TaskSpec& spec) override;
  core::Result<void> kill(const Task& task) override;
  core::Result<core::RunResult> run_check(const Task& task, const TaskSpec& spec,
                                          std::chrono::milliseconds timeout) override;

 private:
  // Spawns spec as task (task_id, port and log_path already set); fills pid and start_time.
  core::Result<void> spawn_task(const TaskSpec& spec, Task& task);

  struct Entry {
    Task task;
    bool child = false;     // started here and not reaped yet
    bool stopping = false;  // stop() in progress: reap() keeps its hands off
    bool ended = false;     // already reported by reap()
  };
  // Starts the log copier reading read_fd; its pid (our child, in its own session).
  core::Result<pid_t> start_log_copier(const TaskSpec& spec, const Task& task, int read_fd);
  // Reaps the copier of task_id once it has drained the task's output (bounded wait); one that

  PortAllocator& ports_;
  const ProcessDriverOptions options_;
  mutable std::mutex mu_;
  std::map<std::string, Entry> tasks_;  // by task_id
  LogCopiers copiers_;                  // log copiers not reaped yet
};

// A task process found on the host by find_task_processes().
struct FoundProcess {
  pid_t pid = 0;
  int64_t start_time = 0;
  std::string task_id;
};

// Processes that a ProcessDriver started with this log_dir (it marks each task's environment with
// CUTOVER_TASK_DIR=<log_dir>), found by scanning /proc: session leaders that are not zombies. A
// restarted controller compares them with the tasks it knows to report those it cannot account
// for (it does not kill them: they may be someone's).
std::vector<FoundProcess> find_task_processes(const std::filesystem::path& log_dir);

// Starts count tasks of spec. If one fails, the ones already started are stopped (no orphans) and
// the error names which task failed.
core::Result<std::vector<Task>> start_task_set(Driver& driver, const TaskSpec& spec, int count);
// Stops all tasks concurrently (so a set takes one stop_timeout, not count of them). Every task is
// attempted; the error lists the ones that could not be stopped.
core::Result<void> stop_task_set(Driver& driver, const std::vector<Task>& tasks);

}  // namespace cutover::runtime
