// PodmanDriver: runs tasks as podman containers behind the same Driver interface as the process
// driver (chosen per service with `driver: podman` in cutover.yaml).
//
// A task is the container `cutover-<task_id>`, started detached (`podman run -d`) with the flags
// of PodmanDriverOptions::run_args (`--runtime runc` and explicit ulimits on these machines: crun
// fails on hybrid cgroups, and podman's default ulimits are above what an unprivileged namespace
// may set), labels cutover.service / cutover.task_id / cutover.color / cutover.revision /
// cutover.port, the container port published on 127.0.0.1:<allocated host port>, env and secrets
// from an --env-file (mode 0600, removed once the container started, so values never appear on a
// command line), stop signal and stop timeout. Task::pid is the container's init process as the
// host sees it and Task::start_time its start time, so alive() is as cheap as for a process.
//
// Logs: conmon writes the container's output as k8s-file records into a FIFO
// (<log_dir>/<task_id>.fifo) read by the log copier (log_copier.hpp, format k8s-file), which
// unwraps the records, masks secret values and appends to <log_dir>/<task_id>.log. conmon and the
// copier both outlive the controller. (`podman logs` therefore has nothing to show for these
// containers: read the task log.)
//
// Re-adoption is by name and labels: adopt() inspects `cutover-<task_id>` and accepts it only if
// its cutover.task_id label matches and its init pid and start time are the recorded ones.
// list_containers() finds every container cutover labelled, so that a restarted controller can
// report the ones it has no record of.
//
// Thread-safety: like ProcessDriver. start()/stop() run podman and block (stop() up to
// stop_timeout plus PodmanDriverOptions::command_timeout): call them from a worker pool.
#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "core/process.hpp"
#include "runtime/runtime.hpp"

namespace cutover::runtime {

struct PodmanDriverOptions {
  std::string podman = "podman";
  // Before the subcommand, e.g. {"--root", DIR, "--runroot", DIR} for an isolated store.
  std::vector<std::string> global_args;
  std::vector<std::string> run_args = {"--runtime",        "runc",     "--ulimit",
                                       "nofile=1024:1024", "--ulimit", "nproc=4096:4096"};
  // The log copier's command line before `--log FILE` (as ProcessDriverOptions::log_copier);
  // required: container output always goes through it.
  std::vector<std::string> log_copier;
  // Limit for one podman command (run, inspect, rm); stop gets the task's stop_timeout on top.
  std::chrono::milliseconds command_timeout{120000};
};

// A container that cutover labelled, as `podman ps` reports it.
struct LabelledContainer {
  std::string name;
  std::string task_id;
  std::string service;
  std::string state;  // "running", "exited", ...
};

class PodmanDriver final : public Driver {
 public:
  PodmanDriver(PortAllocator& ports, PodmanDriverOptions options);
  ~PodmanDriver() override = default;
  PodmanDriver(const PodmanDriver&) = delete;
  PodmanDriver& operator=(const PodmanDriver&) = delete;

  // Error (nothing left running, port released) if the image is missing, the container port is
  // not set, or podman fails; the message carries podman's own.
  core::Result<Task> start(const TaskSpec& spec) override;
  // `podman stop -t <stop_timeout>` (podman sends SIGKILL after it), then `podman rm -f`.
  // Idempotent: a container that no longer exists is stopped.
  core::Result<void> stop(const Task& task) override;
  bool alive(const Task& task) const override;
  core::Result<void> adopt(const Task& task) override;
  std::vector<TaskExit> reap() override;
  // A new container under the same task id, name, host port and log file (the old one removed).
  core::Result<Task> restart(const Task& old, const TaskSpec& spec) override;
  // `podman stop -t stop_timeout`, keeping the container, its port and its identity.
  core::Result<void> kill(const Task& task) override;
  // `podman exec` of spec.health.command in the task's container.
  core::Result<core::RunResult> run_check(const Task& task, const TaskSpec& spec,
                                          std::chrono::milliseconds timeout) override;

  // Every container with a cutover.task_id label (running or not).
  core::Result<std::vector<LabelledContainer>> list_containers() const;
  // "cutover-<task_id>"
  static std::string container_name(const std::string& task_id);

 private:
  // Runs the container of task (FIFO, log copier, `podman run`, pid). new_task: a start (the port
  // may move when it is taken, and is released on failure), else a restart (same port, kept).
  core::Result<Task> launch(Task task, const TaskSpec& spec, bool new_task,
                            const std::string& what);
  struct Entry {
    Task task;
    bool stopping = false;
    bool ended = false;
  };
  // Runs podman with args; its output (stdout and stderr) in out. Error if it cannot start, times
  // out or exits non-zero (the message ends with podman's last output line).
  core::Result<void> podman(const std::vector<std::string>& args, std::string* out,
                            std::chrono::milliseconds timeout) const;
  // The same for a complete command line and environment.
  core::Result<void> podman_with_env(core::SpawnSpec spec, std::string* out,
                                     std::chrono::milliseconds timeout) const;

  PortAllocator& ports_;
  const PodmanDriverOptions options_;
  mutable std::mutex mu_;
  std::map<std::string, Entry> tasks_;  // by task_id
  LogCopiers copiers_;                  // log copiers not reaped yet
};

}  // namespace cutover::runtime
