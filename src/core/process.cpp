#include "core/process.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <thread>

// Real processes run in real time: the waits below use std::chrono::steady_clock on purpose
// (an injected Clock could not make a child exit sooner).

namespace cutover::core {

namespace {

using std::chrono::milliseconds;
using SteadyTime = std::chrono::steady_clock::time_point;

constexpr const char* kDefaultPath = "/usr/local/bin:/usr/bin:/bin";
// After SIGKILL, how long to wait for the kernel to tear the group down before reporting it.
constexpr milliseconds kKillWait{5000};
// When a command's leader has exited, how long run_command keeps reading output still held by
// processes that escaped its group before giving up on EOF.
constexpr milliseconds kDrainAfterExit{2000};

SteadyTime steady_now() { return std::chrono::steady_clock::now(); }

std::string errno_text(int err) { return std::strerror(err); }

// Polls done() with a short exponential backoff (1 ms .. 25 ms) until it returns true or the
// deadline passes. Returns whether done() became true.
template <typename Pred>
bool poll_until(SteadyTime deadline, Pred done) {
  milliseconds delay{1};
  while (true) {
    if (done()) return true;
    auto now = steady_now();
    if (now >= deadline) return false;
    auto left = std::chrono::duration_cast<milliseconds>(deadline - now) + milliseconds{1};
    std::this_thread::sleep_for(std::min(delay, left));
    delay = std::min(delay * 2, milliseconds{25});
  }
}

struct ProcStat {
  char state = '?';
  pid_t pgrp = 0;
  int64_t start_time = 0;
};

std::optional<ProcStat> read_proc_stat(pid_t pid) {
  if (pid <= 0) return std::nullopt;
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  char buf[2048];
  ssize_t n;
  do {
    n = ::read(fd, buf, sizeof buf - 1);
  } while (n < 0 && errno == EINTR);
  ::close(fd);
  if (n <= 0) return std::nullopt;
  buf[n] = '\0';
  // comm (field 2) may contain spaces and parentheses: fields resume after the last ')'.
  char* close_paren = std::strrchr(buf, ')');
  if (close_paren == nullptr) return std::nullopt;
  ProcStat st;
  int field = 2;
  char* save = nullptr;
  for (char* tok = strtok_r(close_paren + 1, " ", &save); tok != nullptr;
       tok = strtok_r(nullptr, " ", &save)) {
    ++field;
    if (field == 3) {
      st.state = tok[0];
    } else if (field == 5) {
      st.pgrp = static_cast<pid_t>(std::strtol(tok, nullptr, 10));
    } else if (field == 22) {
      st.start_time = std::strtoll(tok, nullptr, 10);
      return st;
    }
  }
  return std::nullopt;
}

bool is_dead_state(char state) { return state == 'Z' || state == 'X' || state == 'x'; }

enum class ChildState { Running, Exited, NotChild };

// Observes a child without reaping it (WNOWAIT), so its pid, and the process group it leads, stay
// reserved until we decide to reap.
ChildState child_state(pid_t pid) {
  siginfo_t info;
  while (true) {
    std::memset(&info, 0, sizeof info);
    if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0) {
      return info.si_pid == 0 ? ChildState::Running : ChildState::Exited;
    }
    if (errno != EINTR) return ChildState::NotChild;
  }
}

Result<ExitStatus> reap_blocking(pid_t pid) {
  int status = 0;
  while (true) {
    pid_t r = ::waitpid(pid, &status, 0);
    if (r == pid) return ExitStatus::from_wait_status(status);
    if (r < 0 && errno != EINTR) {
      return Error("cannot wait for process " + std::to_string(pid) + ": " + errno_text(errno));
    }
  }
}

Result<std::string> resolve_executable(const std::string& name,
                                       const std::map<std::string, std::string>& env) {
  if (name.empty()) return Error("cannot start a process: empty program name");
  if (name.find('/') != std::string::npos) return name;
  auto it = env.find("PATH");
  std::string path = it != env.end() ? it->second : kDefaultPath;
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t end = path.find(':', pos);
    if (end == std::string::npos) end = path.size();
    std::string dir = path.substr(pos, end - pos);
    pos = end + 1;
    if (dir.empty()) continue;  // "current directory" entries are a classic trap; skip them
    std::string candidate = dir + "/" + name;
    struct stat sb;
    if (::stat(candidate.c_str(), &sb) == 0 && S_ISREG(sb.st_mode) &&
        ::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
  }
  return Error("command not found: '" + name + "' (searched PATH=" + path + ")");
}

// Steps of the child between fork and exec, reported through the error pipe on failure.
enum ChildStage : int { kStageDup = 1, kStageSetsid, kStageRlimit, kStageChdir, kStageExec };

struct ChildPlan {
  const char* exec_path;
  char* const* argv;
  char* const* envp;
  const char* cwd;  // nullptr = keep
  int in_fd;
  int out_fd;
  int err_fd;
  int report_fd;
  bool new_session;
  const std::vector<ResourceLimit>* rlimits;
  int max_fd;
};

// Runs in the forked child: async-signal-safe calls only (no allocation, no locks).
[[noreturn]] void exec_child(const ChildPlan& plan) {
  // Move every descriptor we need above 2 first, so dup2 onto 0..2 cannot clobber one of them.
  int report = ::fcntl(plan.report_fd, F_DUPFD_CLOEXEC, 3);
  if (report < 0) ::_exit(127);
  auto fail = [report](int stage) {
    int msg[2] = {stage, errno};
    ssize_t ignored = ::write(report, msg, sizeof msg);
    (void)ignored;
    ::_exit(127);
  };
  int in = ::fcntl(plan.in_fd, F_DUPFD_CLOEXEC, 3);
  int out = ::fcntl(plan.out_fd, F_DUPFD_CLOEXEC, 3);
  int err = ::fcntl(plan.err_fd, F_DUPFD_CLOEXEC, 3);
  if (in < 0 || out < 0 || err < 0) fail(kStageDup);
  if (::dup2(in, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(err, 2) < 0) fail(kStageDup);

  // Ignored signals survive exec: give the program the defaults it expects (e.g. SIGPIPE).
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_DFL;
  for (int s = 1; s < NSIG; ++s) ::sigaction(s, &sa, nullptr);  // fails harmlessly for some
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);

  if (plan.new_session && ::setsid() < 0) fail(kStageSetsid);
  for (const ResourceLimit& rl : *plan.rlimits) {
    struct rlimit lim;
    lim.rlim_cur = static_cast<rlim_t>(rl.soft);
    lim.rlim_max = static_cast<rlim_t>(rl.hard);
    if (::setrlimit(rl.resource, &lim) != 0) fail(kStageRlimit);
  }
  if (plan.cwd != nullptr && ::chdir(plan.cwd) != 0) fail(kStageChdir);

  // Close everything but 0..2 and the report pipe (close-on-exec, so exec closes it).
  bool closed = true;
  if (report > 3 && ::close_range(3, static_cast<unsigned>(report - 1), 0) != 0) closed = false;
  if (closed && ::close_range(static_cast<unsigned>(report + 1), ~0U, 0) != 0) closed = false;
  if (!closed) {
    for (int fd = 3; fd < plan.max_fd; ++fd) {
      if (fd != report) ::close(fd);
    }
  }
  ::execve(plan.exec_path, plan.argv, plan.envp);
  fail(kStageExec);
  ::_exit(127);  // unreachable: fail() exits
}

std::string describe_child_failure(int stage, int err, const SpawnSpec& spec,
                                   const std::string& exec_path) {
  std::string reason = errno_text(err);
  switch (stage) {
    case kStageDup:
      return "cannot set up standard streams for " + spec.argv[0] + ": " + reason;
    case kStageSetsid:
      return "cannot start a new session for " + spec.argv[0] + ": " + reason;
    case kStageRlimit:
      return "cannot apply resource limits for " + spec.argv[0] + ": " + reason;
    case kStageChdir:
      return "cannot change to working directory " + spec.cwd.string() + ": " + reason;
    case kStageExec:
      return "cannot execute " + exec_path + ": " + reason;
    default:
      return "cannot start " + spec.argv[0] + ": unknown failure";
  }
}

class FdGuard {
 public:
  explicit FdGuard(int fd = -1) : fd_(fd) {}
  ~FdGuard() { reset(); }
  FdGuard(const FdGuard&) = delete;
  FdGuard& operator=(const FdGuard&) = delete;
  int get() const { return fd_; }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

// spawn() with stdout (and stderr when merged) going to out_fd when out_fd >= 0.
Result<pid_t> spawn_impl(const SpawnSpec& spec, int out_fd) {
  if (spec.argv.empty()) return Error("cannot start a process: empty command");
  auto exec_path = resolve_executable(spec.argv[0], spec.env);
  if (!exec_path.ok()) return exec_path.error();

  std::vector<char*> argv;
  argv.reserve(spec.argv.size() + 1);
  for (const std::string& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<std::string> env_strings;
  env_strings.reserve(spec.env.size());
  for (const auto& [k, v] : spec.env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp;
  envp.reserve(env_strings.size() + 1);
  for (std::string& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);

  FdGuard devnull(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (devnull.get() < 0) return Error("cannot open /dev/null: " + errno_text(errno));
  FdGuard file_out;
  int out = devnull.get();
  if (out_fd < 0) out_fd = spec.stdout_fd;
  if (out_fd >= 0) {
    out = out_fd;
  } else if (!spec.stdout_file.empty()) {
    file_out.reset(
        ::open(spec.stdout_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
    if (file_out.get() < 0) {
      return Error("cannot open output file " + spec.stdout_file.string() + ": " +
                   errno_text(errno));
    }
    out = file_out.get();
  }
  int report_pipe[2];
  if (::pipe2(report_pipe, O_CLOEXEC) != 0)
    return Error("cannot create pipe: " + errno_text(errno));
  FdGuard report_read(report_pipe[0]);
  FdGuard report_write(report_pipe[1]);

  struct rlimit nofile;
  int max_fd = 65536;
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY) {
    max_fd = static_cast<int>(std::min<rlim_t>(nofile.rlim_cur, 1 << 20));
  }
  std::string cwd = spec.cwd.string();
  ChildPlan plan{exec_path->c_str(),
                 argv.data(),
                 envp.data(),
                 cwd.empty() ? nullptr : cwd.c_str(),
                 spec.stdin_fd >= 0 ? spec.stdin_fd : devnull.get(),
                 out,
                 spec.merge_stderr ? out : devnull.get(),
                 report_write.get(),
                 spec.new_session,
                 &spec.rlimits,
                 max_fd};

  pid_t pid = ::fork();
  if (pid < 0)
    return Error("cannot fork to start " + spec.argv[0] + ": " + errno_text(errno),
                 ErrorKind::Unavailable);
  if (pid == 0) exec_child(plan);

  report_write.reset();
  int msg[2] = {0, 0};
  size_t got = 0;
  while (got < sizeof msg) {
    ssize_t n = ::read(report_read.get(), reinterpret_cast<char*>(msg) + got, sizeof msg - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  if (got == 0) return pid;  // the pipe closed on exec: the program is running
  (void)reap_blocking(pid);
  if (got < sizeof msg) return Error("cannot start " + spec.argv[0] + ": child failed early");
  return Error(describe_child_failure(msg[0], msg[1], spec, *exec_path));
}

// Splits a byte stream into lines of at most kMaxLineBytes, with bounded memory.
class LineSplitter {
 public:
  explicit LineSplitter(const std::function<void(std::string_view)>& on_line) : on_line_(on_line) {}

  void feed(const char* data, size_t n) {
    buf_.append(data, n);
    size_t start = 0;
    while (start < buf_.size()) {
      size_t window = std::min(buf_.size() - start, kMaxLineBytes + 1);
      const void* nl = std::memchr(buf_.data() + start, '\n', window);
      if (nl != nullptr) {
        size_t len = static_cast<const char*>(nl) - (buf_.data() + start);
        on_line_(std::string_view(buf_.data() + start, len));
        start += len + 1;
      } else if (buf_.size() - start >= kMaxLineBytes) {
        on_line_(std::string_view(buf_.data() + start, kMaxLineBytes));
        start += kMaxLineBytes;
      } else {
        break;
      }
    }
    buf_.erase(0, start);
  }

  void finish() {
    if (!buf_.empty()) on_line_(buf_);
    buf_.clear();
  }

 private:
  const std::function<void(std::string_view)>& on_line_;
  std::string buf_;
};

}  // namespace

ExitStatus ExitStatus::from_wait_status(int status) {
  if (WIFSIGNALED(status)) return killed_by(WTERMSIG(status));
  if (WIFEXITED(status)) return exited_with(WEXITSTATUS(status));
  return exited_with(-1);
}

std::string ExitStatus::to_string() const {
  if (signal == 0) return "exited with code " + std::to_string(code);
  std::string out = "killed by signal " + std::to_string(signal);
  if (const char* abbrev = sigabbrev_np(signal)) out += std::string(" (SIG") + abbrev + ")";
  return out;
}

std::map<std::string, std::string> minimal_environment() {
  auto from_env = [](const char* name, const char* fallback) {
    const char* v = std::getenv(name);
    return std::string(v != nullptr && *v != '\0' ? v : fallback);
  };
  return {{"PATH", from_env("PATH", kDefaultPath)},
          {"HOME", from_env("HOME", "/")},
          {"LANG", from_env("LANG", "C.UTF-8")}};
}

Result<pid_t> spawn(const SpawnSpec& spec) { return spawn_impl(spec, -1); }

Result<int64_t> process_start_time(pid_t pid) {
  auto st = read_proc_stat(pid);
  if (!st) return Error("no process with pid " + std::to_string(pid));
  return st->start_time;
}

bool is_same_process(pid_t pid, int64_t start_time) {
  auto st = read_proc_stat(pid);
  return st && !is_dead_state(st->state) && st->start_time == start_time;
}

void signal_group(pid_t pgid, int sig) {
  if (pgid <= 1) return;  // kill(0|-1, ...) would hit our own group or every process
  ::kill(-pgid, sig);
}

bool group_alive(pid_t pgid) {
  if (pgid <= 0) return false;
  DIR* dir = ::opendir("/proc");
  if (dir == nullptr) return false;
  bool alive = false;
  while (struct dirent* e = ::readdir(dir)) {
    if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
    auto st = read_proc_stat(static_cast<pid_t>(std::strtol(e->d_name, nullptr, 10)));
    if (st && st->pgrp == pgid && !is_dead_state(st->state)) {
      alive = true;
      break;
    }
  }
  ::closedir(dir);
  return alive;
}

Result<ExitStatus> wait_for_exit(pid_t pid, std::chrono::milliseconds timeout) {
  int status = 0;
  pid_t r = 0;
  int err = 0;
  bool done = poll_until(steady_now() + timeout, [&] {
    r = ::waitpid(pid, &status, WNOHANG);
    if (r < 0 && errno == EINTR) return false;
    err = errno;
    return r != 0;
  });
  if (!done) {
    return Error("process " + std::to_string(pid) + " did not exit within " +
                 std::to_string(timeout.count()) + "ms");
  }
  if (r < 0)
    return Error("cannot wait for process " + std::to_string(pid) + ": " + errno_text(err));
  return ExitStatus::from_wait_status(status);
}

bool wait_gone(pid_t pid, int64_t start_time, std::chrono::milliseconds timeout) {
  return poll_until(steady_now() + timeout, [&] { return !is_same_process(pid, start_time); });
}

Result<ExitStatus> terminate_tree(pid_t pgid, int sig, std::chrono::milliseconds grace) {
  if (pgid <= 1) return Error("refusing to signal process group " + std::to_string(pgid));
  if (child_state(pgid) == ChildState::NotChild) {
    return Error("process " + std::to_string(pgid) + " is not a child of this process");
  }
  // The leader stays a zombie (unreaped) while we wait, so the pgid cannot be reused meanwhile.
  auto tree_gone = [pgid] {
    return child_state(pgid) != ChildState::Running && !group_alive(pgid);
  };
  signal_group(pgid, sig);
  if (sig != SIGKILL && sig != SIGCONT) signal_group(pgid, SIGCONT);  // wake stopped members
  if (!poll_until(steady_now() + grace, tree_gone)) {
    signal_group(pgid, SIGKILL);
    if (!poll_until(steady_now() + kKillWait, tree_gone)) {
      return Error("process group " + std::to_string(pgid) +
                   " survived SIGKILL (a process is probably in uninterruptible sleep)");
    }
  }
  return reap_blocking(pgid);
}

Result<RunResult> run_command(const SpawnSpec& spec, std::chrono::milliseconds timeout,
                              const std::function<void(std::string_view line)>& on_line,
                              const std::atomic<bool>* cancel) {
  int out_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) return Error("cannot create pipe: " + errno_text(errno));
  FdGuard read_end(out_pipe[0]);
  auto spawned = [&] {
    FdGuard write_end(out_pipe[1]);  // the parent must not keep a writer, or EOF never comes
    return spawn_impl(spec, write_end.get());
  }();
  if (!spawned.ok()) return spawned.error();
  const pid_t pid = *spawned;
  ::fcntl(read_end.get(), F_SETFL, ::fcntl(read_end.get(), F_GETFL) | O_NONBLOCK);

  auto signal_tree = [&](int sig) {
    if (spec.new_session) {
      signal_group(pid, sig);
    } else {
      ::kill(pid, sig);
    }
  };

  LineSplitter splitter(on_line);
  RunResult result;
  bool eof = false;
  enum class Phase { Running, Terminating, Killed } phase = Phase::Running;
  SteadyTime deadline = steady_now() + timeout;
  SteadyTime kill_at{};
  std::optional<std::string> callback_error;

  // Reads what is available now; false once the callback threw.
  char chunk[65536];
  auto read_available = [&](int max_reads) {
    for (int i = 0; i < max_reads && !eof; ++i) {
      ssize_t n = ::read(read_end.get(), chunk, sizeof chunk);
      if (n > 0) {
        try {
          splitter.feed(chunk, static_cast<size_t>(n));
        } catch (const std::exception& e) {
          callback_error = e.what();
          return false;
        } catch (...) {
          callback_error = "unknown exception";
          return false;
        }
      } else if (n == 0) {
        eof = true;
      } else if (errno != EINTR) {
        if (errno != EAGAIN && errno != EWOULDBLOCK) eof = true;  // unreadable pipe: stop reading
        break;
      }
    }
    return true;
  };

  while (true) {
    auto now = steady_now();
    if (phase == Phase::Running) {
      bool cancelled = cancel != nullptr && cancel->load();
      if (cancelled || now >= deadline) {
        (cancelled ? result.cancelled : result.timed_out) = true;
        signal_tree(SIGTERM);
        signal_tree(SIGCONT);
        kill_at = now + kRunKillGrace;
        phase = Phase::Terminating;
      }
    }
    if (phase == Phase::Terminating && now >= kill_at) {
      signal_tree(SIGKILL);
      phase = Phase::Killed;
    }
    SteadyTime next = phase == Phase::Running ? deadline : kill_at;
    auto slice = std::chrono::duration_cast<milliseconds>(next - now);
    slice = std::clamp(slice, milliseconds{1}, milliseconds{50});
    if (phase == Phase::Killed) slice = milliseconds{10};

    if (!eof) {
      struct pollfd pfd = {read_end.get(), POLLIN, 0};
      int r = ::poll(&pfd, 1, static_cast<int>(slice.count()));
      if (r > 0 && !read_available(16)) break;
    } else {
      std::this_thread::sleep_for(std::min(slice, milliseconds{10}));
    }
    if (callback_error) break;

    ChildState state = child_state(pid);
    if (state == ChildState::NotChild) {
      return Error("lost track of process " + std::to_string(pid) +
                   " (reaped elsewhere: is SIGCHLD ignored or waitpid(-1) used?)");
    }
    if (state == ChildState::Exited) {
      // The leader is a zombie, so its pgid is still reserved: kill what it left behind, then
      // read the rest of the output.
      if (spec.new_session) signal_group(pid, SIGKILL);
      SteadyTime drain_deadline = steady_now() + kDrainAfterExit;
      while (!eof && !callback_error && steady_now() < drain_deadline) {
        struct pollfd pfd = {read_end.get(), POLLIN, 0};
        if (::poll(&pfd, 1, 10) > 0 && !read_available(16)) break;
      }
      // SIGKILL is delivered asynchronously: return only once nothing of the group runs.
      if (spec.new_session)
        poll_until(steady_now() + kKillWait, [pid] { return !group_alive(pid); });
      break;
    }
  }

  if (callback_error) {
    signal_tree(SIGKILL);
    (void)reap_blocking(pid);
    return Error("output handler of " + spec.argv[0] + " failed: " + *callback_error);
  }
  try {
    splitter.finish();
  } catch (...) {
    // The command has finished; a failing handler on the last line changes nothing about it.
  }
  auto status = reap_blocking(pid);
  if (!status.ok()) return status.error();
  result.status = *status;
  return result;
}

}  // namespace cutover::core
