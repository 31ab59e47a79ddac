#include "runtime/runtime.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cassert>
#include <cerrno>
#include <cstring>
#include <thread>

#include "core/fd.hpp"
#include "core/fs.hpp"
#include "core/id.hpp"
#include "runtime/log_copier.hpp"

namespace cutover::runtime {

namespace {

using std::chrono::milliseconds;

// After SIGKILL, how long the kernel may take to tear a group down before we report failure.
constexpr milliseconds kKillWait{5000};
// After a task stopped, how long its log copier may take to write what is left and exit.

bool port_bindable(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // No SO_REUSEADDR: a port with connections still in TIME_WAIT is skipped too.
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

// Real processes run in real time (see core/process.cpp): polls with a short backoff.
template <typename Pred>
bool poll_until(std::chrono::steady_clock::time_point deadline, Pred done) {
  milliseconds delay{1};
  while (true) {
    if (done()) return true;
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return false;
    std::this_thread::sleep_for(std::min(delay, milliseconds{25}));
    delay = std::min(delay * 2, milliseconds{25});
  }
}

std::string expand(const std::string& text, const std::map<std::string, std::string>& vars) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    if (text.compare(i, 2, "${") == 0) {
      size_t end = text.find('}', i + 2);
      if (end != std::string::npos) {
        auto it = vars.find(text.substr(i + 2, end - i - 2));
        if (it != vars.end()) {
          out += it->second;
          i = end + 1;
          continue;
        }
      }
    }
    out += text[i++];
  }
  return out;
}

std::string describe(const Task& task) {
  return "task " + task.task_id + " (pid " + std::to_string(task.pid) + ")";
}

// Stops a task that is not (or no longer) our unreaped child: we cannot wait for it, only watch
// /proc. Its group is signalled only while the pid is still the task itself or absent: a pid now
// held by another process may mean the pgid is about to belong to someone else.
core::Result<void> stop_foreign(const Task& task) {
  auto current = core::process_start_time(task.pid);
  if (current.ok() && *current != task.start_time) return {};  // pid reused: the task is gone
  auto gone = [&] {
    return !core::is_same_process(task.pid, task.start_time) && !core::group_alive(task.pid);
  };
  // A dead leader may have left stragglers in its group: they get the same treatment.
  if (gone()) return {};
  core::signal_group(task.pid, task.stop_signal);
  if (task.stop_signal != SIGKILL) core::signal_group(task.pid, SIGCONT);
  if (poll_until(std::chrono::steady_clock::now() + task.stop_timeout, gone)) return {};
  core::signal_group(task.pid, SIGKILL);
  if (poll_until(std::chrono::steady_clock::now() + kKillWait, gone)) return {};
  return core::Error(describe(task) + " of service " + task.service +
                         " survived SIGKILL (a process is probably in uninterruptible sleep)",
                     core::ErrorKind::Internal);
}

}  // namespace

std::vector<core::ResourceLimit> to_rlimits(const config::Limits& limits) {
  std::vector<core::ResourceLimit> out;
  auto add = [&](int resource, const std::optional<uint64_t>& v) {
    if (v) out.push_back({resource, *v, *v});
  };
  add(RLIMIT_NOFILE, limits.open_files);
  add(RLIMIT_NPROC, limits.processes);
  add(RLIMIT_AS, limits.memory);
  add(RLIMIT_FSIZE, limits.file_size);
  if (limits.cpu_time) {
    const auto secs = static_cast<uint64_t>(std::max<int64_t>(
        1, std::chrono::duration_cast<std::chrono::seconds>(*limits.cpu_time).count()));
    out.push_back({RLIMIT_CPU, secs, secs});
  }
  return out;
}

// ---- PortAllocator ----

PortAllocator::PortAllocator(int first, int last) : first_(first), last_(last), next_(first) {
  assert(first > 0 && first <= last && last <= 65535 && "PortAllocator: invalid port range");
}

core::Result<int> PortAllocator::allocate() {
  std::lock_guard lock(mu_);
  const int size = last_ - first_ + 1;
  for (int i = 0; i < size; ++i) {
    int port = next_;
    next_ = next_ == last_ ? first_ : next_ + 1;
    if (allocated_.count(port) != 0) continue;
    if (!port_bindable(port)) continue;
    allocated_.insert(port);
    return port;
  }
  return core::Error("no free TCP port on 127.0.0.1 in " + std::to_string(first_) + "-" +
                         std::to_string(last_) + " (" + std::to_string(allocated_.size()) +
                         " allocated to tasks, the rest in use by other programs)",
                     core::ErrorKind::Unavailable);
}

bool PortAllocator::reserve(int port) {
  std::lock_guard lock(mu_);
  return allocated_.insert(port).second;
}

void PortAllocator::release(int port) {
  std::lock_guard lock(mu_);
  allocated_.erase(port);
}

bool PortAllocator::is_allocated(int port) const {
  std::lock_guard lock(mu_);
  return allocated_.count(port) != 0;
}

size_t PortAllocator::allocated_count() const {
  std::lock_guard lock(mu_);
  return allocated_.size();
}

// ---- ProcessDriver ----

ProcessDriver::ProcessDriver(PortAllocator& ports, ProcessDriverOptions options)
    : ports_(ports), options_(std::move(options)) {}

core::Result<pid_t> ProcessDriver::start_log_copier(const TaskSpec& spec, const Task& task,
                                                    int read_fd) {
  core::SpawnSpec copier;
  copier.argv = options_.log_copier;
  copier.argv.insert(copier.argv.end(), {"--log", task.log_path.string()});
  std::vector<std::string> values;
  values.reserve(spec.secrets.size());
  for (const auto& [name, value] : spec.secrets) values.push_back(value);
  copier.env = core::minimal_environment();
  for (auto& [k, v] : log_copier_env(values)) copier.env[k] = std::move(v);
  copier.stdin_fd = read_fd;
  copier.merge_stderr = false;
  copier.new_session = true;  // a Ctrl-C at the controller's terminal must not reach it
  auto pid = core::spawn(copier);
  if (!pid.ok()) return pid.error().wrap("cannot start the log copier");
  copiers_.add(*pid, task.task_id);
  return *pid;
}

namespace {

std::map<std::string, std::string> task_variables(const Task& task, const TaskSpec& spec) {
  return {{"PORT", std::to_string(task.port)},
          {"SERVICE", spec.service},
          {"REVISION", spec.revision},
          {"TASK_ID", task.task_id},
          {"COLOR", spec.color}};
}

core::SpawnSpec task_spawn_spec(const Task& task, const TaskSpec& spec,
                                const std::vector<std::string>& argv) {
  const auto vars = task_variables(task, spec);
  core::SpawnSpec spawn;
  for (const std::string& arg : argv) spawn.argv.push_back(expand(arg, vars));
  spawn.env = core::minimal_environment();
  for (const auto& [k, v] : spec.env) spawn.env[k] = expand(v, vars);
  for (const auto& [k, v] : vars) spawn.env[k] = v;
  spawn.cwd = spec.workdir;
  spawn.new_session = true;
  return spawn;
}

}  // namespace

core::Result<void> ProcessDriver::spawn_task(const TaskSpec& spec, Task& task) {
  core::SpawnSpec spawn = task_spawn_spec(task, spec, spec.command);
  for (const auto& [k, v] : spec.secrets) spawn.env[k] = v;
  for (const auto& [k, v] : task_variables(task, spec)) spawn.env[k] = v;  // they win
  spawn.env["CUTOVER_TASK_DIR"] = spec.log_dir.string();  // see find_task_processes
  spawn.stdout_file = task.log_path;
  spawn.merge_stderr = true;
  spawn.rlimits = spec.rlimits;

  // With secrets, output goes through the log copier, which masks them.
  core::UniqueFd pipe_write;
  pid_t copier = 0;
  if (!spec.secrets.empty()) {
    if (options_.log_copier.empty()) {
      return core::Error("it has secrets, and no log copier is configured to mask them in its log");
    }
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
      return core::Error(std::string("cannot create a pipe: ") + std::strerror(errno),
                         core::ErrorKind::Unavailable);
    }
    core::UniqueFd pipe_read(fds[0]);
    pipe_write = core::UniqueFd(fds[1]);
    auto started = start_log_copier(spec, task, pipe_read.get());
    if (!started.ok()) return started.error();
    copier = *started;
    spawn.stdout_fd = pipe_write.get();
  }

  auto pid = core::spawn(spawn);
  // The task holds the only write end now: the copier ends when the task's output does.
  pipe_write = core::UniqueFd();
  if (!pid.ok()) {
    if (copier != 0) copiers_.finish(task.task_id);
    return pid.error();
  }
  task.pid = *pid;
  // Our unreaped child: its /proc entry exists even if it already exited.
  auto start_time = core::process_start_time(task.pid);
  if (!start_time.ok()) {
    (void)core::terminate_tree(task.pid, SIGKILL, milliseconds{0});
    if (copier != 0) copiers_.finish(task.task_id);
    return start_time.error();
  }
  task.start_time = *start_time;
  return {};
}

core::Result<Task> ProcessDriver::start(const TaskSpec& spec) {
  const std::string what =
      "cannot start a task of service " + spec.service + " (container " + spec.container + ")";
  if (spec.command.empty()) return core::Error(what + ": the command is empty");
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
  if (auto r = spawn_task(spec, task); !r.ok()) {
    ports_.release(task.port);
    return r.error().wrap(what);
  }

  std::lock_guard lock(mu_);
  tasks_[task.task_id] = Entry{task, /*child=*/true, /*stopping=*/false, /*ended=*/false};
  return task;
}

core::Result<Task> ProcessDriver::restart(const Task& old, const TaskSpec& spec) {
  const std::string what = "cannot restart " + describe(old) + " of service " + old.service;
  if (spec.command.empty()) return core::Error(what + ": the command is empty");
  {
    std::lock_guard lock(mu_);
    auto it = tasks_.find(old.task_id);
    if (it == tasks_.end()) {
      return core::Error(what + ": this driver does not run it (stopped, or never started here)",
                         core::ErrorKind::NotFound);
    }
    Entry& e = it->second;
    if (e.stopping) return core::Error(what + ": it is being stopped", core::ErrorKind::Conflict);
    if (e.child) {
      // Reap the old instance if it ended and reap() has not seen it yet.
      int status = 0;
      pid_t r = ::waitpid(e.task.pid, &status, WNOHANG);
      if (r == e.task.pid || (r < 0 && errno == ECHILD)) {
        e.child = false;
        e.ended = true;
      } else {
        return core::Error(what + ": its process is still running", core::ErrorKind::Conflict);
      }
    } else if (core::is_same_process(e.task.pid, e.task.start_time)) {
      return core::Error(what + ": its process is still running", core::ErrorKind::Conflict);
    }
    // A leader that is gone may have left stragglers in its group (they hold the port).
    if (core::group_alive(e.task.pid)) core::signal_group(e.task.pid, SIGKILL);
    e.stopping = true;  // reap() and stop() keep off while we spawn
  }
  Task task = old;
  task.revision = spec.revision;
  task.color = spec.color;
  task.stop_signal = spec.stop_signal;
  task.stop_timeout = spec.stop_timeout;
  auto spawned = spawn_task(spec, task);
  std::lock_guard lock(mu_);
  auto it = tasks_.find(old.task_id);
  if (it == tasks_.end()) {
    // stop() ran concurrently and gave the task up: the new instance must not outlive it.
    if (spawned.ok()) (void)core::terminate_tree(task.pid, SIGKILL, milliseconds{0});
    return core::Error(what + ": it was stopped while restarting", core::ErrorKind::Conflict);
  }
  it->second.stopping = false;
  if (!spawned.ok()) return spawned.error().wrap(what);
  it->second = Entry{task, /*child=*/true, /*stopping=*/false, /*ended=*/false};
  return task;
}

core::Result<void> ProcessDriver::kill(const Task& task) {
  bool child = false;
  {
    std::lock_guard lock(mu_);
    auto it = tasks_.find(task.task_id);
    if (it == tasks_.end() || it->second.task.pid != task.pid ||
        it->second.task.start_time != task.start_time) {
      return stop_foreign(task);
    }
    if (it->second.stopping) {
      return core::Error("cannot kill " + describe(task) + ": it is being stopped",
                         core::ErrorKind::Conflict);
    }
    child = it->second.child;
    it->second.stopping = true;
  }
  core::Result<void> result;
  std::optional<core::ExitStatus> status;
  if (child) {
    auto r = core::terminate_tree(task.pid, task.stop_signal, task.stop_timeout);
    if (r.ok()) {
      status = *r;
    } else {
      result = r.error().wrap("cannot kill " + describe(task));
    }
  } else {
    result = stop_foreign(task);
  }
  std::lock_guard lock(mu_);
  auto it = tasks_.find(task.task_id);
  if (it != tasks_.end()) {
    it->second.stopping = false;
    if (result.ok()) {
      // Ended on purpose: not reported by reap(); the port stays with the task for restart().
      it->second.child = false;
      it->second.ended = true;
    }
  }
  return result;
}

core::Result<core::RunResult> ProcessDriver::run_check(const Task& task, const TaskSpec& spec,
                                                       milliseconds timeout) {
  if (spec.health.command.empty()) {
    return core::Error("task " + task.task_id + ": no health check command");
  }
  core::SpawnSpec spawn = task_spawn_spec(task, spec, spec.health.command);
  spawn.merge_stderr = true;
  return core::run_command(spawn, timeout, [](std::string_view) {});
}

core::Result<void> ProcessDriver::stop(const Task& given) {
  // A task restarted since the caller recorded it is stopped as it is now (its current pid).
  Task task = given;
  bool known = false;
  bool child = false;
  {
    std::lock_guard lock(mu_);
    auto it = tasks_.find(given.task_id);
    if (it != tasks_.end()) {
      known = true;
      task.pid = it->second.task.pid;
      task.start_time = it->second.task.start_time;
      // A concurrent stop() of the same task owns the waitpid; this one watches /proc.
      child = it->second.child && !it->second.stopping;
      it->second.stopping = true;
    }
  }

  core::Result<void> result;
  if (child) {
    // The leader stays unreaped while terminate_tree waits, so its pgid cannot be reused.
    auto status = core::terminate_tree(task.pid, task.stop_signal, task.stop_timeout);
    if (!status.ok()) result = status.error().wrap("cannot stop " + describe(task));
  } else {
    result = stop_foreign(task);
  }

  if (result.ok()) copiers_.finish(task.task_id);  // so the log is complete when stop returns
  if (known) {
    std::lock_guard lock(mu_);
    auto it = tasks_.find(task.task_id);
    if (it != tasks_.end()) {
      if (result.ok()) {
        ports_.release(it->second.task.port);
        tasks_.erase(it);
      } else {
        it->second.stopping = false;
      }
    }
  }
  return result;
}

bool ProcessDriver::alive(const Task& task) const {
  return core::is_same_process(task.pid, task.start_time);
}

core::Result<void> ProcessDriver::adopt(const Task& task) {
  std::lock_guard lock(mu_);
  auto it = tasks_.find(task.task_id);
  if (it != tasks_.end()) {
    if (it->second.task.pid == task.pid && it->second.task.start_time == task.start_time) {
      return {};  // already ours: adoption is idempotent
    }
    return core::Error("cannot adopt " + describe(task) + ": this driver already runs a task " +
                           "with that id (pid " + std::to_string(it->second.task.pid) + ")",
                       core::ErrorKind::Conflict);
  }
  if (!core::is_same_process(task.pid, task.start_time)) {
    return core::Error("cannot adopt " + describe(task) + " of service " + task.service +
                           ": it is no longer running (or its pid now belongs to another process)",
                       core::ErrorKind::NotFound);
  }
  if (!ports_.reserve(task.port)) {
    return core::Error("cannot adopt " + describe(task) + ": port " + std::to_string(task.port) +
                           " is already allocated to another task",
                       core::ErrorKind::Conflict);
  }
  tasks_[task.task_id] = Entry{task, /*child=*/false, /*stopping=*/false, /*ended=*/false};
  return {};
}

std::vector<TaskExit> ProcessDriver::reap() {
  std::vector<TaskExit> exits;
  std::lock_guard lock(mu_);
  for (auto& [id, entry] : tasks_) {
    if (entry.stopping || entry.ended) continue;
    if (entry.child) {
      int status = 0;
      pid_t r = ::waitpid(entry.task.pid, &status, WNOHANG);
      if (r == entry.task.pid) {
        entry.child = false;
        entry.ended = true;
        exits.push_back({id, entry.task.pid, core::ExitStatus::from_wait_status(status)});
      } else if (r < 0 && errno == ECHILD) {
        entry.child = false;  // reaped elsewhere (a bug elsewhere); fall back to watching /proc
      }
    } else if (!core::is_same_process(entry.task.pid, entry.task.start_time)) {
      entry.ended = true;
      exits.push_back({id, entry.task.pid, std::nullopt});
    }
  }
  // Log copiers end after their task's output closes; reap them as they do.
  copiers_.reap();
  return exits;
}

std::vector<FoundProcess> find_task_processes(const std::filesystem::path& log_dir) {
  std::vector<FoundProcess> out;
  const std::string marker = "CUTOVER_TASK_DIR=" + log_dir.string();
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(name));
    // Only a task's leader: it leads its own session.
    auto stat = core::read_file(entry.path() / "stat");
    if (!stat.ok()) continue;
    const size_t paren = stat->rfind(')');
    if (paren == std::string::npos) continue;
    std::vector<std::string> fields;  // from field 3 (state) on
    size_t i = paren + 2;
    while (i < stat->size() && fields.size() < 4) {
      size_t j = stat->find(' ', i);
      if (j == std::string::npos) j = stat->size();
      fields.push_back(stat->substr(i, j - i));
      i = j + 1;
    }
    if (fields.size() < 4 || fields[0] == "Z" || fields[3] != name) continue;  // field 6: session
    auto env = core::read_file(entry.path() / "environ");
    if (!env.ok()) continue;
    bool marked = false;
    std::string task_id;
    size_t at = 0;
    while (at < env->size()) {
      size_t end = env->find('\0', at);
      if (end == std::string::npos) end = env->size();
      std::string_view var(env->data() + at, end - at);
      if (var == marker) marked = true;
      if (var.substr(0, 8) == "TASK_ID=") task_id = std::string(var.substr(8));
      at = end + 1;
    }
    if (!marked || task_id.empty()) continue;
    auto start = core::process_start_time(pid);
    if (!start.ok()) continue;
    out.push_back({pid, *start, task_id});
  }
  return out;
}

// ---- task sets ----

core::Result<std::vector<Task>> start_task_set(Driver& driver, const TaskSpec& spec, int count) {
  if (count < 1) {
    return core::Error("cannot start task set of service " + spec.service +
                       ": count must be at least 1, got " + std::to_string(count));
  }
  std::vector<Task> tasks;
  tasks.reserve(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    auto task = driver.start(spec);
    if (!task.ok()) {
      (void)stop_task_set(driver, tasks);
      return task.error().wrap("task set of service " + spec.service + ", task " +
                               std::to_string(i + 1) + " of " + std::to_string(count));
    }
    tasks.push_back(std::move(task).value());
  }
  return tasks;
}

core::Result<void> stop_task_set(Driver& driver, const std::vector<Task>& tasks) {
  std::vector<core::Result<void>> results(tasks.size());
  {
    std::vector<std::jthread> workers;
    workers.reserve(tasks.size());
    for (size_t i = 0; i < tasks.size(); ++i) {
      workers.emplace_back([&, i] { results[i] = driver.stop(tasks[i]); });
    }
  }  // jthreads join here
  std::string errors;
  for (const auto& r : results) {
    if (r.ok()) continue;
    if (!errors.empty()) errors += "; ";
    errors += r.error().message;
  }
  if (!errors.empty()) return core::Error(errors);
  return {};
}

}  // namespace cutover::runtime
