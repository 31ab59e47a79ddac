#include "runtime/podman_driver.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <nlohmann/json.hpp>

#include "config/config.hpp"
#include "core/fd.hpp"
#include "core/fs.hpp"
#include "core/id.hpp"
#include "core/process.hpp"
#include "runtime/log_copier.hpp"

namespace cutover::runtime {

namespace {

using nlohmann::json;
using std::chrono::milliseconds;

// After a container stopped, how long its log copier may take to write what is left and exit.
constexpr size_t kMaxCommandOutput = 64 * 1024;
// How many host ports a start tries when podman finds the allocated one taken.
constexpr int kPortAttempts = 3;

std::string describe(const Task& task) {
  return "task " + task.task_id + " (container " + PodmanDriver::container_name(task.task_id) + ")";
}

bool no_such_container(const std::string& output) {
  return output.find("no such container") != std::string::npos ||
         output.find("no such object") != std::string::npos ||
         output.find("no container with name or ID") != std::string::npos;
}

std::filesystem::path fifo_path(const Task& task) {
  auto p = task.log_path;
  p.replace_extension(".fifo");
  return p;
}

}  // namespace

std::string PodmanDriver::container_name(const std::string& task_id) {
  return "cutover-" + task_id;
}

PodmanDriver::PodmanDriver(PortAllocator& ports, PodmanDriverOptions options)
    : ports_(ports), options_(std::move(options)) {}

core::Result<void> PodmanDriver::podman(const std::vector<std::string>& args, std::string* out,
                                        milliseconds timeout) const {
  core::SpawnSpec spec;
  spec.argv.push_back(options_.podman);
  spec.argv.insert(spec.argv.end(), options_.global_args.begin(), options_.global_args.end());
  spec.argv.insert(spec.argv.end(), args.begin(), args.end());
  spec.env = core::minimal_environment();
  return podman_with_env(spec, out, timeout);
}

core::Result<void> PodmanDriver::podman_with_env(core::SpawnSpec spec, std::string* out,
                                                 milliseconds timeout) const {
  spec.merge_stderr = true;
  spec.new_session = true;
  std::string output;
  std::string last_line;
  auto r = core::run_command(spec, timeout, [&](std::string_view line) {
    if (output.size() < kMaxCommandOutput) {
      output.append(line);
      output += '\n';
    }
    if (!line.empty()) last_line = std::string(line);
  });
  if (out != nullptr) *out = output;
  const std::string what = "podman " + (spec.argv.size() > 1 + options_.global_args.size()
                                            ? spec.argv[1 + options_.global_args.size()]
                                            : std::string());
  if (!r.ok()) return r.error().wrap(what);
  if (r->timed_out) {
    return core::Error(what + " did not finish within " + std::to_string(timeout.count()) + "ms",
                       core::ErrorKind::Unavailable);
  }
  if (!r->status.success()) {
    return core::Error(what + " " + r->status.to_string() + ": " + last_line);
  }
  return {};
}

core::Result<Task> PodmanDriver::start(const TaskSpec& spec) {
  const std::string what = "cannot start a task of service " + spec.service + " (container " +
                           spec.container + ", podman)";
  if (spec.image.empty()) return core::Error(what + ": no image");
  if (spec.container_port <= 0 || spec.container_port > 65535) {
    return core::Error(what + ": the podman driver needs the container port (`port:` of the " +
                       "container in cutover.yaml)");
  }
  if (options_.log_copier.empty()) return core::Error(what + ": no log copier is configured");
  if (auto dir = core::ensure_dir(spec.log_dir); !dir.ok()) return dir.error().wrap(what);
  auto port = ports_.allocate();
  if (!port.ok()) return port.error().wrap(what);

  Task task;
  task.task_id = core::new_id("task");
  task.service = spec.service;
  task.revision = spec.revision;
  task.color = spec.color;
  task.port = *port;
  task.log_path = spec.log_dir / (task.task_id + ".log");
  task.stop_signal = spec.stop_signal;
  task.stop_timeout = spec.stop_timeout;
  return launch(std::move(task), spec, /*new_task=*/true, what);
}

core::Result<Task> PodmanDriver::restart(const Task& old, const TaskSpec& spec) {
  const std::string what = "cannot restart " + describe(old);
  if (alive(old)) return core::Error(what + ": it is still running");
  // The old container's output has ended: its copier drains and exits; then the container goes.
  copiers_.finish(old.task_id);
  std::string output;
  if (auto r = podman({"rm", "-f", container_name(old.task_id)}, &output, options_.command_timeout);
      !r.ok() && !no_such_container(output)) {
    return r.error().wrap(what);
  }
  Task task = old;
  task.pid = 0;
  task.start_time = 0;
  return launch(std::move(task), spec, /*new_task=*/false, what);
}

core::Result<Task> PodmanDriver::launch(Task task, const TaskSpec& spec, bool new_task,
                                        const std::string& what) {
  const std::string name = container_name(task.task_id);
  // A new task gives its port back on failure; a restarted one keeps it until stop().
  const auto fail = [&](const core::Error& e) {
    if (new_task) ports_.release(task.port);
    return e.wrap(what);
  };

  // The FIFO conmon writes into, with the copier already reading (conmon's open must not block),
  // and a write end of ours until podman has started, so the copier sees no early end of file.
  const std::filesystem::path fifo = fifo_path(task);
  ::unlink(fifo.c_str());
  if (::mkfifo(fifo.c_str(), 0600) != 0) {
    return fail(core::Error("cannot create " + fifo.string() + ": " + std::strerror(errno)));
  }
  core::UniqueFd read_end(::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  core::UniqueFd write_end(::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
  if (read_end.get() < 0 || write_end.get() < 0) {
    ::unlink(fifo.c_str());
    return fail(core::Error("cannot open " + fifo.string() + ": " + std::strerror(errno)));
  }
  ::fcntl(read_end.get(), F_SETFL, ::fcntl(read_end.get(), F_GETFL) & ~O_NONBLOCK);
  std::vector<std::string> values;
  for (const auto& [k, v] : spec.secrets) values.push_back(v);
  auto copier = spawn_log_copier(options_.log_copier, task.log_path, values, read_end.get(),
                                 LogFormat::K8sFile);
  read_end = core::UniqueFd();
  if (!copier.ok()) {
    ::unlink(fifo.c_str());
    return fail(copier.error());
  }
  copiers_.add(*copier, task.task_id);
  const auto cleanup = [&] {
    write_end = core::UniqueFd();
    std::string ignored;
    (void)podman({"rm", "-f", name}, &ignored, options_.command_timeout);
    copiers_.finish(task.task_id);
    ::unlink(fifo.c_str());
  };

  // Values reach podman through its environment (`--env NAME` takes the value from there), never
  // through its command line or a file.
  const std::map<std::string, std::string> vars = {{"PORT", std::to_string(spec.container_port)},
                                                   {"SERVICE", spec.service},
                                                   {"REVISION", spec.revision},
                                                   {"TASK_ID", task.task_id},
                                                   {"COLOR", spec.color}};
  std::map<std::string, std::string> env;
  for (const auto& [k, v] : spec.env) env[k] = config::expand_variables(v, vars);
  for (const auto& [k, v] : spec.secrets) env[k] = v;
  for (const auto& [k, v] : vars) env[k] = v;

  // The host port was bindable when allocated, but another program may take it before podman
  // binds it: then podman fails to listen, and the task gets another port.
  const long stop_seconds = static_cast<long>((spec.stop_timeout.count() + 999) / 1000);
  for (int attempt = 1;; ++attempt) {
    core::SpawnSpec run;
    run.argv = {options_.podman};
    run.argv.insert(run.argv.end(), options_.global_args.begin(), options_.global_args.end());
    run.argv.insert(run.argv.end(), {"run",
                                     "-d",
                                     "--name",
                                     name,
                                     "--label",
                                     "cutover.service=" + spec.service,
                                     "--label",
                                     "cutover.task_id=" + task.task_id,
                                     "--label",
                                     "cutover.color=" + spec.color,
                                     "--label",
                                     "cutover.revision=" + spec.revision,
                                     "--label",
                                     "cutover.port=" + std::to_string(task.port),
                                     "-p",
                                     "127.0.0.1:" + std::to_string(task.port) + ":" +
                                         std::to_string(spec.container_port),
                                     "--stop-signal",
                                     std::to_string(spec.stop_signal),
                                     "--stop-timeout",
                                     std::to_string(stop_seconds),
                                     "--log-driver",
                                     "k8s-file",
                                     "--log-opt",
                                     "path=" + fifo.string()});
    run.argv.insert(run.argv.end(), options_.run_args.begin(), options_.run_args.end());
    run.env = core::minimal_environment();
    for (const auto& [k, v] : env) {
      run.argv.insert(run.argv.end(), {"--env", k});
      run.env[k] = v;
    }
    run.argv.push_back(spec.image);
    for (const auto& arg : spec.command) run.argv.push_back(config::expand_variables(arg, vars));
    std::string output;
    auto r = podman_with_env(run, &output, options_.command_timeout);
    if (r.ok()) break;
    const bool port_taken = output.find("address already in use") != std::string::npos ||
                            output.find("cannot listen on the TCP port") != std::string::npos;
    if (!port_taken || !new_task || attempt == kPortAttempts) {
      cleanup();
      return fail(r.error());
    }
    std::string ignored;
    (void)podman({"rm", "-f", name}, &ignored, options_.command_timeout);
    auto other = ports_.allocate();
    if (!other.ok()) {
      cleanup();
      return fail(other.error());
    }
    ports_.release(task.port);
    task.port = *other;
  }
  write_end = core::UniqueFd();  // conmon holds the FIFO now: the copier ends when it does

  std::string pid_text;
  if (auto r = podman({"inspect", "--format", "{{.State.Pid}}", name}, &pid_text,
                      options_.command_timeout);
      !r.ok()) {
    cleanup();
    return fail(r.error());
  }
  task.pid = static_cast<pid_t>(std::strtol(pid_text.c_str(), nullptr, 10));
  auto start_time = core::process_start_time(task.pid);
  if (task.pid <= 0 || !start_time.ok()) {
    cleanup();
    return fail(
        core::Error("container " + name + " exited at once (see " + task.log_path.string() + ")"));
  }
  task.start_time = *start_time;
  std::lock_guard lock(mu_);
  tasks_[task.task_id] = Entry{task, false, false};
  return task;
}

core::Result<void> PodmanDriver::stop(const Task& task) {
  {
    std::lock_guard lock(mu_);
    if (auto it = tasks_.find(task.task_id); it != tasks_.end()) it->second.stopping = true;
  }
  const std::string name = container_name(task.task_id);
  const long stop_seconds = static_cast<long>((task.stop_timeout.count() + 999) / 1000);
  std::string output;
  core::Result<void> result = podman({"stop", "-t", std::to_string(stop_seconds), name}, &output,
                                     task.stop_timeout + options_.command_timeout);
  if (!result.ok() && no_such_container(output)) result = {};
  if (result.ok()) {
    auto removed = podman({"rm", "-f", name}, &output, options_.command_timeout);
    if (!removed.ok() && !no_such_container(output)) result = removed;
  }
  if (!result.ok()) {
    std::lock_guard lock(mu_);
    if (auto it = tasks_.find(task.task_id); it != tasks_.end()) it->second.stopping = false;
    return result.error().wrap("cannot stop " + describe(task));
  }
  copiers_.finish(task.task_id);  // so the log is complete when stop returns
  ::unlink(fifo_path(task).c_str());
  std::lock_guard lock(mu_);
  if (auto it = tasks_.find(task.task_id); it != tasks_.end()) {
    ports_.release(it->second.task.port);
    tasks_.erase(it);
  }
  return {};
}

core::Result<void> PodmanDriver::kill(const Task& task) {
  const long stop_seconds = static_cast<long>((task.stop_timeout.count() + 999) / 1000);
  std::string output;
  auto r = podman({"stop", "-t", std::to_string(stop_seconds), container_name(task.task_id)},
                  &output, task.stop_timeout + options_.command_timeout);
  if (!r.ok() && !no_such_container(output)) return r.error().wrap("cannot kill " + describe(task));
  return {};
}

core::Result<core::RunResult> PodmanDriver::run_check(const Task& task, const TaskSpec& spec,
                                                      milliseconds timeout) {
  core::SpawnSpec run;
  run.argv = {options_.podman};
  run.argv.insert(run.argv.end(), options_.global_args.begin(), options_.global_args.end());
  run.argv.insert(run.argv.end(), {"exec", container_name(task.task_id)});
  run.argv.insert(run.argv.end(), spec.health.command.begin(), spec.health.command.end());
  run.env = core::minimal_environment();
  return core::run_command(run, timeout, [](std::string_view) {});
}

bool PodmanDriver::alive(const Task& task) const {
  return core::is_same_process(task.pid, task.start_time);
}

core::Result<void> PodmanDriver::adopt(const Task& task) {
  {
    std::lock_guard lock(mu_);
    if (auto it = tasks_.find(task.task_id); it != tasks_.end()) {
      if (it->second.task.pid == task.pid) return {};
      return core::Error("cannot adopt " + describe(task) + ": already running here",
                         core::ErrorKind::Conflict);
    }
  }
  const std::string name = container_name(task.task_id);
  std::string output;
  if (auto r = podman({"inspect", name}, &output, options_.command_timeout); !r.ok()) {
    if (no_such_container(output)) {
      return core::Error("cannot adopt " + describe(task) + ": no such container",
                         core::ErrorKind::NotFound);
    }
    return r.error().wrap("cannot adopt " + describe(task));
  }
  json info = json::parse(output, nullptr, false);
  if (!info.is_array() || info.empty() || !info[0].is_object()) {
    return core::Error("cannot adopt " + describe(task) + ": podman inspect answered no JSON",
                       core::ErrorKind::Internal);
  }
  const json& c = info[0];
  const json labels = c.value("/Config/Labels"_json_pointer, json::object());
  if (!labels.is_object() || labels.value("cutover.task_id", "") != task.task_id) {
    return core::Error("cannot adopt " + describe(task) + ": the container " + name +
                           " does not carry the label cutover.task_id=" + task.task_id,
                       core::ErrorKind::NotFound);
  }
  const bool running = c.value("/State/Running"_json_pointer, false);
  const int64_t pid = c.value("/State/Pid"_json_pointer, int64_t{0});
  if (!running || pid != task.pid || !core::is_same_process(task.pid, task.start_time)) {
    return core::Error("cannot adopt " + describe(task) + ": the container is not running (or " +
                           "runs another process than the one recorded)",
                       core::ErrorKind::NotFound);
  }
  if (!ports_.reserve(task.port)) {
    return core::Error("cannot adopt " + describe(task) + ": port " + std::to_string(task.port) +
                           " is already allocated to another task",
                       core::ErrorKind::Conflict);
  }
  std::lock_guard lock(mu_);
  tasks_[task.task_id] = Entry{task, false, false};
  return {};
}

std::vector<TaskExit> PodmanDriver::reap() {
  std::vector<TaskExit> exits;
  std::vector<Task> ended;
  {
    std::lock_guard lock(mu_);
    for (auto& [id, entry] : tasks_) {
      if (entry.stopping || entry.ended) continue;
      if (!core::is_same_process(entry.task.pid, entry.task.start_time)) {
        entry.ended = true;
        ended.push_back(entry.task);
      }
    }
    copiers_.reap();
  }
  for (const Task& t : ended) {
    std::optional<core::ExitStatus> status;
    std::string code;
    if (podman({"inspect", "--format", "{{.State.ExitCode}}", container_name(t.task_id)}, &code,
               options_.command_timeout)
            .ok()) {
      status =
          core::ExitStatus::exited_with(static_cast<int>(std::strtol(code.c_str(), nullptr, 10)));
    }
    exits.push_back({t.task_id, t.pid, status});
  }
  return exits;
}

core::Result<std::vector<LabelledContainer>> PodmanDriver::list_containers() const {
  std::string output;
  if (auto r = podman({"ps", "-a", "--filter", "label=cutover.task_id", "--format", "json"},
                      &output, options_.command_timeout);
      !r.ok()) {
    return r.error();
  }
  json list = json::parse(output, nullptr, false);
  if (!list.is_array()) return core::Error("podman ps answered no JSON list");
  std::vector<LabelledContainer> out;
  for (const json& c : list) {
    if (!c.is_object()) continue;
    LabelledContainer lc;
    const json names = c.value("Names", json::array());
    if (names.is_array() && !names.empty() && names[0].is_string()) lc.name = names[0];
    const json labels = c.value("Labels", json::object());
    if (labels.is_object()) {
      lc.task_id = labels.value("cutover.task_id", "");
      lc.service = labels.value("cutover.service", "");
    }
    lc.state = c.value("State", "");
    out.push_back(std::move(lc));
  }
  return out;
}

}  // namespace cutover::runtime
