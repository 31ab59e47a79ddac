// Supervisor: keeps the tasks of a Driver alive and tells the truth about them (ECS's service
// scheduler and container health checks, on one host).
//
// For every task it supervises it
//  - restarts it when it ends on its own, after an exponential backoff (backoff_initial doubled for
//    each exit inside crash_loop_window, at most backoff_max), under the same task id and port;
//  - gives up when it ended crash_loop_exits times within crash_loop_window: the task is reported
//    Failed once and left stopped (no retry loop that never ends);
//  - runs its liveness check (command | http | tcp; interval, timeout, retries, start_period as
//    ECS; the first one an interval after the start): `retries` failures in a row after the start
//    period make it Unhealthy, and it is killed (stop_signal, SIGKILL after stop_timeout, whole
//    tree) and restarted like a crash, which counts towards the crash loop. A success during the
//    start period ends it;
//  - rotates its log file (copy then truncate, as logrotate's copytruncate: the task keeps its
//    O_APPEND descriptor, so nothing has to be reopened and the task may outlive the controller)
//    once it is larger than log_max_bytes, keeping log_keep older files <log>.1 ... <log>.N.
//
// State machine of one supervised task:
//
//   supervise() ──▶ Running ──exit / liveness kill──▶ Backoff ──restart ok──▶ Running
//                      │                                 │ restart fails: counts as an exit
//                      │ stop()                          └─ crash_loop_exits in window ─▶ Failed
//                      ▼
//                  (forgotten; the driver stops it)
//
// Events (Exited, Unhealthy, Restarted, Failed) go to the listener given at construction, in
// order, from the supervisor's thread (or from the caller of tick()), never while a lock of the
// supervisor is held: the listener may call state() but must not block for long. The controller
// persists Restarted (new pid + start time, for re-adoption) and Failed.
//
// Thread-safety: every public method may be called from any thread. tick() is what the
// background thread (start()) calls every options.tick; tests may call it directly instead.
// Liveness checks and kills run on their own short-lived threads (one per task at most), so a
// slow check never delays another task.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.hpp"
#include "core/result.hpp"
#include "runtime/runtime.hpp"

namespace cutover::runtime {

struct SupervisorOptions {
  core::Duration tick{std::chrono::milliseconds{200}};
  core::Duration backoff_initial{std::chrono::seconds{1}};
  core::Duration backoff_max{std::chrono::seconds{60}};
  int crash_loop_exits = 5;
  core::Duration crash_loop_window{std::chrono::minutes{5}};
  uint64_t log_max_bytes = 10ULL << 20;
  int log_keep = 3;
  core::Duration log_check_interval{std::chrono::seconds{1}};
};

enum class TaskEventKind { Exited, Unhealthy, Restarted, Failed };
std::string_view to_string(TaskEventKind k);  // "exited", "unhealthy", "restarted", "failed"

struct TaskEvent {
  TaskEventKind kind = TaskEventKind::Exited;
  Task task;           // as it is now: after Restarted, the new pid and start time
  std::string detail;  // "exited with code 3", "liveness: http /health: status 500 (3 in a row)"
};

enum class LivenessState { None, Starting, Healthy, Unhealthy };
std::string_view to_string(LivenessState s);  // "none", "starting", "healthy", "unhealthy"

struct TaskState {
  Task task;
  bool running = false;  // false while backing off or after Failed
  bool failed = false;   // crash loop: given up
  int restarts = 0;      // by this supervisor
  LivenessState liveness = LivenessState::None;
  std::string last_exit;  // how the last instance ended, "" if none did
};

class Supervisor {
 public:
  using Listener = std::function<void(const TaskEvent&)>;

  Supervisor(Driver& driver, core::Clock& clock, SupervisorOptions options, Listener listener);
  // Stops the thread and waits for checks in flight; tasks keep running (they outlive us).
  ~Supervisor();
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // Runs tick() every options.tick on a thread of its own until shutdown().
  void start();
  void shutdown();

  // Supervises a task the driver started or adopted; spec is what restarts run (and its health
  // is the liveness check). Supervising a task again replaces its spec. An adopted task has been
  // running for a while: its start period is over (its first failures count).
  void supervise(const Task& task, const TaskSpec& spec, bool adopted = false);
  // Stops supervising (waiting for its check or kill in flight), then driver.stop() on the task as
  // it is now. A task not supervised here is stopped as given. Idempotent like Driver::stop.
  core::Result<void> stop(const Task& task);
  // Stops supervising without stopping the task (it keeps running).
  void forget(const std::string& task_id);

  std::optional<TaskState> state(const std::string& task_id) const;
  std::vector<TaskState> states() const;

  // One pass: reap exits, restart what is due, start/collect liveness checks, rotate logs.
  void tick();

 private:
  struct CheckOutcome {
    bool ok = false;
    std::string detail;
  };
  struct Entry {
    TaskSpec spec;
    TaskState state;
    core::TimePoint started_at{};  // of the current instance
    std::deque<core::TimePoint> exits;
    std::optional<core::TimePoint> restart_at;
    core::TimePoint next_check{};
    int consecutive_failures = 0;
    // At most one of these is in flight.
    std::future<CheckOutcome> check;
    pid_t check_pid = 0;  // the instance the check in flight is about
    std::future<core::Result<void>> kill;
    std::string kill_reason;
  };

  void ended(Entry& e, const std::string& how, core::TimePoint now, std::vector<TaskEvent>& out);
  void emit(const std::vector<TaskEvent>& events);

  Driver& driver_;
  core::Clock& clock_;
  const SupervisorOptions options_;
  const Listener listener_;

  mutable std::mutex mu_;
  std::map<std::string, Entry> entries_;  // by task_id
  // Exits reaped before their task was supervised (it ended between Driver::start and
  // supervise()): handed to the entry when supervise() comes. Bounded by kMaxUnclaimed.
  std::map<std::string, TaskExit> unclaimed_;
  std::vector<TaskExit> replay_;
  core::TimePoint next_log_check_{};
  std::mutex tick_mu_;  // one tick() at a time

  std::mutex thread_mu_;
  std::condition_variable thread_cv_;
  bool stopping_ = false;
  std::thread thread_;
};

// Liveness probes against 127.0.0.1:port (a process task's port, a container's published port).
// Error says what failed ("connect: connection refused", "timed out after 2s", "status 500").
core::Result<void> probe_tcp(int port, std::chrono::milliseconds timeout);
// GET path; 200-399 is healthy.
core::Result<void> probe_http(int port, const std::string& path, std::chrono::milliseconds timeout);

// Rotates path if it is larger than max_bytes: <path>.(keep-1) -> <path>.keep, ..., copy of
// <path> -> <path>.1, <path> truncated. Lines written between the copy and the truncation are lost
// (at most a few). Returns whether it rotated.
core::Result<bool> rotate_log(const std::filesystem::path& path, uint64_t max_bytes, int keep);

// The last max_lines lines of a task's log, reading the rotated files <path>.1 ... if the current
// one has fewer (oldest first).
core::Result<std::vector<std::string>> tail_log(const std::filesystem::path& path,
                                                size_t max_lines);

}  // namespace cutover::runtime
