#include "runtime/supervisor.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <system_error>

#include "core/duration.hpp"

namespace cutover::runtime {

namespace {

using std::chrono::milliseconds;
using Steady = std::chrono::steady_clock;

constexpr size_t kMaxUnclaimed = 1024;

std::string describe_task(const Task& t) {
  return "task " + t.task_id + " (pid " + std::to_string(t.pid) + ")";
}

int remaining_ms(Steady::time_point deadline) {
  auto left = std::chrono::duration_cast<milliseconds>(deadline - Steady::now()).count();
  return static_cast<int>(std::max<int64_t>(0, left));
}

// A connected non-blocking socket to 127.0.0.1:port, or an error.
core::Result<int> connect_loopback(int port, Steady::time_point deadline) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return core::Error(std::string("socket: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    if (errno != EINPROGRESS) {
      int e = errno;
      ::close(fd);
      return core::Error(std::string("connect: ") + std::strerror(e));
    }
    pollfd p{fd, POLLOUT, 0};
    int r = ::poll(&p, 1, remaining_ms(deadline));
    if (r <= 0) {
      ::close(fd);
      return core::Error("connect: timed out");
    }
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      ::close(fd);
      return core::Error(std::string("connect: ") + std::strerror(err));
    }
  }
  return fd;
}

}  // namespace

std::string_view to_string(TaskEventKind k) {
  switch (k) {
    case TaskEventKind::Exited:
      return "exited";
    case TaskEventKind::Unhealthy:
      return "unhealthy";
    case TaskEventKind::Restarted:
      return "restarted";
    case TaskEventKind::Failed:
      return "failed";
  }
  return "?";
}

std::string_view to_string(LivenessState s) {
  switch (s) {
    case LivenessState::None:
      return "none";
    case LivenessState::Starting:
      return "starting";
    case LivenessState::Healthy:
      return "healthy";
    case LivenessState::Unhealthy:
      return "unhealthy";
  }
  return "?";
}

// ---- probes ----

core::Result<void> probe_tcp(int port, milliseconds timeout) {
  auto fd = connect_loopback(port, Steady::now() + timeout);
  if (!fd.ok()) return fd.error().wrap("tcp 127.0.0.1:" + std::to_string(port));
  ::close(*fd);
  return {};
}

core::Result<void> probe_http(int port, const std::string& path, milliseconds timeout) {
  const std::string what = "http GET 127.0.0.1:" + std::to_string(port) + path;
  const auto deadline = Steady::now() + timeout;
  auto fd = connect_loopback(port, deadline);
  if (!fd.ok()) return fd.error().wrap(what);
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{*fd};
  const std::string request = "GET " + path +
                              " HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: cutover-liveness\r\n"
                              "Connection: close\r\n\r\n";
  size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = ::send(*fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
      return core::Error(what + ": send: " + std::strerror(errno));
    }
    pollfd p{*fd, POLLOUT, 0};
    if (::poll(&p, 1, remaining_ms(deadline)) <= 0) return core::Error(what + ": timed out");
  }
  // Only the status line matters: "HTTP/1.1 200 OK".
  std::string head;
  while (head.find("\r\n") == std::string::npos && head.size() < 1024) {
    pollfd p{*fd, POLLIN, 0};
    if (::poll(&p, 1, remaining_ms(deadline)) <= 0) {
      return core::Error(what + ": timed out waiting for the response");
    }
    char buf[512];
    ssize_t n = ::recv(*fd, buf, sizeof buf, 0);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return core::Error(what + ": recv: " + std::strerror(errno));
    }
    head.append(buf, static_cast<size_t>(n));
  }
  if (head.rfind("HTTP/1.", 0) != 0 || head.size() < 12) {
    return core::Error(what + ": not an HTTP response");
  }
  int status = 0;
  for (size_t i = 9; i < 12; ++i) {
    if (head[i] < '0' || head[i] > '9') return core::Error(what + ": malformed status line");
    status = status * 10 + (head[i] - '0');
  }
  if (status < 200 || status > 399) {
    return core::Error(what + ": status " + std::to_string(status));
  }
  return {};
}

// ---- logs ----

core::Result<bool> rotate_log(const std::filesystem::path& path, uint64_t max_bytes, int keep) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory) return false;
    return core::Error("log " + path.string() + ": " + ec.message());
  }
  if (size <= max_bytes) return false;
  auto numbered = [&](int i) {
    auto p = path;
    p += "." + std::to_string(i);
    return p;
  };
  keep = std::max(keep, 1);
  std::filesystem::remove(numbered(keep), ec);
  for (int i = keep - 1; i >= 1; --i) {
    std::filesystem::rename(numbered(i), numbered(i + 1), ec);  // missing ones are fine
  }
  std::filesystem::copy_file(path, numbered(1), std::filesystem::copy_options::overwrite_existing,
                             ec);
  if (ec) return core::Error("rotating log " + path.string() + ": " + ec.message());
  if (::truncate(path.c_str(), 0) != 0) {
    return core::Error("rotating log " + path.string() + ": truncate: " + std::strerror(errno));
  }
  return true;
}

core::Result<std::vector<std::string>> tail_log(const std::filesystem::path& path,
                                                size_t max_lines) {
  std::deque<std::string> lines;
  bool found = false;
  // Newest file first; stop once enough lines are collected.
  for (int i = 0; i <= 9 && lines.size() < max_lines; ++i) {
    auto p = path;
    if (i > 0) p += "." + std::to_string(i);
    std::ifstream in(p, std::ios::binary);
    if (!in) {
      if (i == 0) continue;
      break;
    }
    found = true;
    std::vector<std::string> file_lines;
    std::string line;
    while (std::getline(in, line)) file_lines.push_back(std::move(line));
    for (auto it = file_lines.rbegin(); it != file_lines.rend() && lines.size() < max_lines; ++it) {
      lines.push_front(std::move(*it));
    }
  }
  if (!found) {
    return core::Error("no log file " + path.string() + " (the task never wrote one)",
                       core::ErrorKind::NotFound);
  }
  return std::vector<std::string>(lines.begin(), lines.end());
}

// ---- Supervisor ----

Supervisor::Supervisor(Driver& driver, core::Clock& clock, SupervisorOptions options,
                       Listener listener)
    : driver_(driver), clock_(clock), options_(options), listener_(std::move(listener)) {}

Supervisor::~Supervisor() { shutdown(); }

void Supervisor::start() {
  std::lock_guard lock(thread_mu_);
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread([this] {
    std::unique_lock lock(thread_mu_);
    while (!stopping_) {
      lock.unlock();
      tick();
      lock.lock();
      thread_cv_.wait_for(lock, options_.tick, [this] { return stopping_; });
    }
  });
}

void Supervisor::shutdown() {
  {
    std::lock_guard lock(thread_mu_);
    stopping_ = true;
  }
  thread_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Supervisor::supervise(const Task& task, const TaskSpec& spec, bool adopted) {
  std::lock_guard lock(mu_);
  auto now = clock_.now();
  auto it = entries_.find(task.task_id);
  if (it != entries_.end()) {
    it->second.spec = spec;
    return;
  }
  Entry& e = entries_[task.task_id];
  if (auto u = unclaimed_.find(task.task_id); u != unclaimed_.end()) {
    replay_.push_back(u->second);
    unclaimed_.erase(u);
  }
  e.spec = spec;
  e.state.task = task;
  e.state.running = true;
  e.state.liveness =
      spec.health.kind == config::HealthKind::None ? LivenessState::None : LivenessState::Starting;
  e.started_at = adopted ? now - spec.health.start_period : now;
  e.next_check = now + spec.health.interval;  // the first check after one interval (as ECS)
}

core::Result<void> Supervisor::stop(const Task& task) {
  std::optional<Entry> entry;
  {
    std::lock_guard lock(mu_);
    auto it = entries_.find(task.task_id);
    if (it != entries_.end()) {
      entry.emplace(std::move(it->second));
      entries_.erase(it);
    }
  }
  if (!entry) return driver_.stop(task);
  if (entry->check.valid()) entry->check.wait();
  if (entry->kill.valid()) (void)entry->kill.get();
  Task current = entry->state.task;
  current.stop_signal = task.stop_signal;
  current.stop_timeout = task.stop_timeout;
  return driver_.stop(current);
}

void Supervisor::forget(const std::string& task_id) {
  std::optional<Entry> entry;
  {
    std::lock_guard lock(mu_);
    auto it = entries_.find(task_id);
    if (it == entries_.end()) return;
    entry.emplace(std::move(it->second));
    entries_.erase(it);
  }
  // Futures in flight finish here, outside the lock.
}

std::optional<TaskState> Supervisor::state(const std::string& task_id) const {
  std::lock_guard lock(mu_);
  auto it = entries_.find(task_id);
  if (it == entries_.end()) return std::nullopt;
  return it->second.state;
}

std::vector<TaskState> Supervisor::states() const {
  std::lock_guard lock(mu_);
  std::vector<TaskState> out;
  out.reserve(entries_.size());
  for (const auto& [id, e] : entries_) out.push_back(e.state);
  return out;
}

void Supervisor::ended(Entry& e, const std::string& how, core::TimePoint now,
                       std::vector<TaskEvent>& out) {
  e.state.running = false;
  e.state.last_exit = how;
  e.consecutive_failures = 0;
  e.exits.push_back(now);
  while (!e.exits.empty() && now - e.exits.front() > options_.crash_loop_window) {
    e.exits.pop_front();
  }
  const int count = static_cast<int>(e.exits.size());
  if (count >= options_.crash_loop_exits) {
    e.state.failed = true;
    e.restart_at.reset();
    out.push_back({TaskEventKind::Failed, e.state.task,
                   "crash loop: " + std::to_string(count) + " exits within " +
                       core::format_duration(options_.crash_loop_window) + " (last: " + how +
                       "); not restarted again"});
    return;
  }
  core::Duration delay = options_.backoff_initial;
  for (int i = 1; i < count && delay < options_.backoff_max; ++i) delay *= 2;
  delay = std::min(delay, options_.backoff_max);
  e.restart_at = now + delay;
}

void Supervisor::emit(const std::vector<TaskEvent>& events) {
  if (!listener_) return;
  for (const auto& ev : events) listener_(ev);
}

void Supervisor::tick() {
  std::lock_guard tick_lock(tick_mu_);
  std::vector<TaskEvent> events;
  {
    std::lock_guard lock(mu_);
    const auto now = clock_.now();

    // 1. Instances that ended on their own.
    std::vector<TaskExit> exits = driver_.reap();
    exits.insert(exits.begin(), replay_.begin(), replay_.end());
    replay_.clear();
    for (const TaskExit& exit : exits) {
      auto it = entries_.find(exit.task_id);
      if (it == entries_.end()) {
        if (unclaimed_.size() >= kMaxUnclaimed) unclaimed_.erase(unclaimed_.begin());
        unclaimed_[exit.task_id] = exit;
        continue;
      }
      Entry& e = it->second;
      if (!e.state.running || e.state.task.pid != exit.pid) continue;
      const std::string how = exit.status ? exit.status->to_string() : "exited (status unknown)";
      events.push_back({TaskEventKind::Exited, e.state.task, how});
      ended(e, how, now, events);
    }

    for (auto& [id, e] : entries_) {
      // 2. A liveness kill that finished.
      if (e.kill.valid() && e.kill.wait_for(std::chrono::seconds{0}) == std::future_status::ready) {
        auto r = e.kill.get();
        if (r.ok()) {
          ended(e, e.kill_reason, now, events);
        } else {
          // It survived SIGKILL: nothing more can be done here; report it failed.
          e.state.running = false;
          e.state.failed = true;
          events.push_back(
              {TaskEventKind::Failed, e.state.task,
               "could not be killed after failing its liveness check: " + r.error().message});
        }
      }
      if (e.kill.valid() || e.state.failed) continue;

      // 3. Restarts that are due.
      if (!e.state.running && e.restart_at && now >= *e.restart_at) {
        e.restart_at.reset();
        auto task = driver_.restart(e.state.task, e.spec);
        if (task.ok()) {
          e.state.task = *task;
          e.state.running = true;
          ++e.state.restarts;
          e.started_at = now;
          e.next_check = now + e.spec.health.interval;
          e.consecutive_failures = 0;
          if (e.state.liveness != LivenessState::None) e.state.liveness = LivenessState::Starting;
          events.push_back(
              {TaskEventKind::Restarted, e.state.task,
               "restart " + std::to_string(e.state.restarts) + " after: " + e.state.last_exit});
        } else {
          ended(e, "restart failed: " + task.error().message, now, events);
        }
        continue;
      }
      if (!e.state.running || e.spec.health.kind == config::HealthKind::None) continue;

      // 4. Liveness: collect a finished check, start a due one.
      if (e.check.valid()) {
        if (e.check.wait_for(std::chrono::seconds{0}) != std::future_status::ready) continue;
        CheckOutcome outcome = e.check.get();
        e.next_check = now + e.spec.health.interval;
        if (e.check_pid != e.state.task.pid) {
          // About an instance that ended meanwhile: says nothing about this one.
        } else if (outcome.ok) {
          e.consecutive_failures = 0;
          e.state.liveness = LivenessState::Healthy;
        } else if (e.state.liveness == LivenessState::Starting &&
                   now - e.started_at < e.spec.health.start_period) {
          // Failures during the start period do not count.
        } else if (++e.consecutive_failures >= e.spec.health.retries) {
          e.state.liveness = LivenessState::Unhealthy;
          const std::string why = "liveness: " + outcome.detail + " (" +
                                  std::to_string(e.consecutive_failures) + " in a row)";
          events.push_back({TaskEventKind::Unhealthy, e.state.task, why});
          e.kill_reason = "killed after failing its liveness check: " + outcome.detail;
          e.kill = std::async(std::launch::async,
                              [this, task = e.state.task] { return driver_.kill(task); });
          continue;
        }
      }
      if (now >= e.next_check) {
        e.check = std::async(std::launch::async, [this, task = e.state.task, spec = e.spec] {
          const auto& h = spec.health;
          const auto timeout = std::chrono::duration_cast<milliseconds>(h.timeout);
          core::Result<void> r;
          switch (h.kind) {
            case config::HealthKind::Tcp:
              r = probe_tcp(task.port, timeout);
              break;
            case config::HealthKind::Http:
              r = probe_http(task.port, h.path, timeout);
              break;
            case config::HealthKind::Command: {
              auto run = driver_.run_check(task, spec, timeout);
              if (!run.ok()) {
                r = run.error().wrap("command");
              } else if (run->timed_out) {
                r = core::Error("command timed out after " + core::format_duration(h.timeout));
              } else if (!run->status.success()) {
                r = core::Error("command " + run->status.to_string());
              }
              break;
            }
            case config::HealthKind::None:
              break;
          }
          return r.ok() ? CheckOutcome{true, ""} : CheckOutcome{false, r.error().message};
        });
        e.check_pid = e.state.task.pid;
        // Far enough that a hung future is not restarted; reset when it completes.
        e.next_check = now + e.spec.health.interval + e.spec.health.timeout;
      }
    }

    // 5. Logs.
    if (now >= next_log_check_) {
      next_log_check_ = now + options_.log_check_interval;
      for (auto& [id, e] : entries_) {
        if (e.state.task.log_path.empty()) continue;
        (void)rotate_log(e.state.task.log_path, options_.log_max_bytes, options_.log_keep);
      }
    }
  }
  emit(events);
}

}  // namespace cutover::runtime
