// The log copier: a small process between a task and its log file, like podman's conmon. The task
// writes into a pipe; the copier reads it, masks secret values as "***" (core::RedactingStream,
// so a value split across reads is masked too) and appends to <log_dir>/<task_id>.log.
//
// It is a separate program (`cutover task-log --log FILE`, started by ProcessDriver), not a thread
// of the controller: a task must keep running and logging while the controller is down or being
// restarted (DESIGN.md §3), and a pipe whose reader died would kill the task with SIGPIPE. It runs
// in its own session, ignores SIGTERM/SIGINT/SIGHUP and ends at end of file, i.e. once the task and
// everything it started have closed their output. The values to mask reach it in its environment
// (CUTOVER_REDACT_COUNT and CUTOVER_REDACT_1..n, removed from its environment at start), which is
// no more exposed than the task's own environment (both readable by the same user only).
//
// Thread-safety: run_log_copier is a program's main loop; log_copier_env is pure.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"

namespace cutover::runtime {

inline constexpr std::string_view kRedactCountEnv = "CUTOVER_REDACT_COUNT";
inline constexpr std::string_view kRedactValueEnvPrefix = "CUTOVER_REDACT_";

// What arrives on the copier's input.
enum class LogFormat {
  Raw,      // the task's own output bytes
  K8sFile,  // conmon's k8s-file records "<time> <stdout|stderr> <P|F> <text>\n" (podman), whose
            // text is unwrapped: P (partial) records are joined with the next F of their stream
};

// The environment variables that hand secret_values to the copier.
std::map<std::string, std::string> log_copier_env(const std::vector<std::string>& secret_values);

// Starts `<copier...> --log FILE [--format k8s-file]` in its own session with stdin = in_fd (the
// caller keeps its descriptor) and secret_values in its environment. Returns its pid: a child of
// the caller, to be reaped.
core::Result<pid_t> spawn_log_copier(const std::vector<std::string>& copier,
                                     const std::filesystem::path& log_file,
                                     const std::vector<std::string>& secret_values, int in_fd,
                                     LogFormat format = LogFormat::Raw);

// Copies in_fd to log_file (appended, created 0644) until end of file, masking the values named
// by the environment. Returns the process exit code: 0 at end of file, 1 if the log file cannot
// be opened or written (then it keeps draining in_fd so the task is not killed by SIGPIPE), 2 on
// a bad environment.
int run_log_copier(const std::filesystem::path& log_file, int in_fd,
                   LogFormat format = LogFormat::Raw);

// The log copiers a driver started and has not reaped yet (they are its children). Thread-safe.
class LogCopiers {
 public:
  void add(pid_t pid, const std::string& task_id);
  // Waits up to 5 s for the copier of task_id to end (its task's output has closed) and reaps it,
  // so that the task's log is complete when this returns.
  void finish(const std::string& task_id);
  // Reaps the copiers that have ended, without waiting.
  void reap();

 private:
  std::mutex mu_;
  std::map<pid_t, std::string> pids_;  // -> task_id
};

}  // namespace cutover::runtime
