// Process spawning and control: what the pipeline (stage commands, hooks) and the runtime (tasks)
// use to start programs, stream their output, and stop whole process trees.
//
// Model: every spawned program leads its own session and process group (setsid), so that
//  - signal_group()/terminate_tree() reach it and everything it started, and
//  - it survives the controller (tasks are re-adopted after a restart by pid + start time).
// Processes that call setsid() themselves (daemonize) escape their group and are not reached.
//
// Reaping: nothing here installs a SIGCHLD handler or calls waitpid(-1). Whoever spawns a child
// reaps it by pid (wait_for_exit, terminate_tree, run_command, or runtime's ProcessDriver::reap).
// Consequently no code in the process may set SIGCHLD to SIG_IGN or wait for "any" child.
//
// Thread-safety: all functions may be called from any thread concurrently. spawn() only calls
// async-signal-safe functions between fork and exec, so it is safe in a multi-threaded process.
// Functions that wait block the calling thread (run them on a worker pool, never on an event loop).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"

namespace cutover::core {

// How a process ended: exited with a code, or killed by a signal.
struct ExitStatus {
  int code = 0;    // exit code when exited()
  int signal = 0;  // terminating signal, 0 when the process exited normally

  static ExitStatus exited_with(int code) { return {code, 0}; }
  static ExitStatus killed_by(int sig) { return {0, sig}; }
  // From a waitpid() status word.
  static ExitStatus from_wait_status(int status);

  bool exited() const { return signal == 0; }
  bool success() const { return signal == 0 && code == 0; }
  // "exited with code 3" | "killed by signal 9 (SIGKILL)"
  std::string to_string() const;
  bool operator==(const ExitStatus&) const = default;
};

struct ResourceLimit {
  int resource = 0;  // RLIMIT_NOFILE, RLIMIT_AS, RLIMIT_CPU, ...
  uint64_t soft = 0;
  uint64_t hard = 0;
};

struct SpawnSpec {
  // argv[0] without a '/' is looked up in env["PATH"] (not the controller's PATH); with a '/' it
  // is used as is, relative paths being relative to cwd.
  std::vector<std::string> argv;
  // The complete environment of the child: nothing is inherited. Start from minimal_environment().
  std::map<std::string, std::string> env;
  // Working directory; empty = the caller's.
  std::filesystem::path cwd;
  // stdout (and stderr when merge_stderr) is appended here (created 0644); empty = /dev/null.
  // stdin is /dev/null unless stdin_fd is set.
  std::filesystem::path stdout_file;
  // false: stderr goes to /dev/null.
  bool merge_stderr = true;
  // Lead a new session and process group (setsid). false: stay in the caller's group (then
  // signal_group/terminate_tree must not be used on the child).
  bool new_session = true;
  // Applied with setrlimit() in the child before exec.
  std::vector<ResourceLimit> rlimits;
  // When >= 0: the child's stdin is this descriptor instead of /dev/null.
  int stdin_fd = -1;
  // When >= 0: stdout (and stderr when merge_stderr) go to this descriptor instead of
  // stdout_file (a pipe to a log copier, for instance). The caller keeps ownership.
  int stdout_fd = -1;
};

// PATH, HOME and LANG taken from the controller's environment, with safe defaults when unset
// (PATH=/usr/local/bin:/usr/bin:/bin, HOME=/, LANG=C.UTF-8). Secrets never leak in by accident.
std::map<std::string, std::string> minimal_environment();

// Starts argv with fork+exec. All file descriptors other than 0,1,2 are closed in the child,
// signal dispositions and mask are reset to defaults. Any failure before the program runs (binary
// missing or not executable, bad cwd, unwritable stdout_file) is an Error, never a "started"
// process: the child reports it through a close-on-exec pipe and is reaped here.
Result<pid_t> spawn(const SpawnSpec& spec);

// Field 22 of /proc/PID/stat (clock ticks since boot): with the pid, identifies a process across
// pid reuse. Works for zombies too.
Result<int64_t> process_start_time(pid_t pid);
// True when pid is alive (not a zombie) and started at start_time.
bool is_same_process(pid_t pid, int64_t start_time);

// kill(-pgid, sig); a group that no longer exists is not an error. Refuses (no-op) pgid <= 1,
// which would mean "my own group" or "every process".
void signal_group(pid_t pgid, int sig);
// True while at least one non-zombie process has process group pgid (scans /proc).
bool group_alive(pid_t pgid);

// Waits for a child of this process to exit and reaps it. Error on timeout (the child is left
// running) or when pid is not a child of this process.
Result<ExitStatus> wait_for_exit(pid_t pid, std::chrono::milliseconds timeout);
// For processes that are not our children (adopted after a restart): true once the process
// identified by (pid, start_time) is gone or a zombie; false on timeout.
bool wait_gone(pid_t pid, int64_t start_time, std::chrono::milliseconds timeout);

// Stops the tree led by our child pgid (pid == pgid): sig to the group, then waits up to grace for
// every process of the group to end, then SIGKILLs the group. Reaps the leader and returns how it
// ended. Error only if the leader is not our child or survives SIGKILL (uninterruptible sleep).
Result<ExitStatus> terminate_tree(pid_t pgid, int sig, std::chrono::milliseconds grace);

// How long run_command() waits after SIGTERM before SIGKILL on timeout or cancel.
inline constexpr std::chrono::milliseconds kRunKillGrace{5000};
// Longer output lines are delivered in pieces of this size.
inline constexpr size_t kMaxLineBytes = 64 * 1024;

struct RunResult {
  ExitStatus status;
  bool timed_out = false;
  bool cancelled = false;
};

// Runs spec to completion (spec.stdout_file is ignored: stdout, and stderr when merge_stderr, go
// through a pipe) and calls on_line for each output line, in order, without the trailing '\n'.
// Memory stays bounded whatever the output size. On timeout or *cancel becoming true, the process
// group gets SIGTERM, then SIGKILL after kRunKillGrace. When the command exits, whatever it left
// running in its process group is killed, so no stage or hook leaves processes behind; it returns
// only once no process of the group is running.
// on_line runs on the calling thread and must not throw (an exception kills the tree and is
// returned as an Error). Error only if the command cannot be started. spec.stdout_fd is ignored
// too.
Result<RunResult> run_command(const SpawnSpec& spec, std::chrono::milliseconds timeout,
                              const std::function<void(std::string_view line)>& on_line,
                              const std::atomic<bool>* cancel = nullptr);

}  // namespace cutover::core
