#include "runtime/log_copier.hpp"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/process.hpp"
#include "core/redact.hpp"

namespace cutover::runtime {

namespace {

// Writes all of data; false on a write error other than EINTR.
bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Unwraps conmon's k8s-file records into the text they carry, line by line.
class K8sFileDecoder {
 public:
  // Appends the text of complete records in data to out.
  void feed(std::string_view data, std::string& out) {
    buf_.append(data);
    size_t start = 0;
    while (true) {
      const size_t nl = buf_.find('\n', start);
      if (nl == std::string::npos) break;
      record(std::string_view(buf_).substr(start, nl - start), out);
      start = nl + 1;
    }
    buf_.erase(0, start);
    if (buf_.size() > kMaxPartial) {  // not conmon's format after all: pass it on as it is
      out += buf_;
      buf_.clear();
    }
  }
  void finish(std::string& out) {
    if (!buf_.empty()) record(buf_, out);
    buf_.clear();
    for (auto* p : {&partial_stdout_, &partial_stderr_}) {
      if (!p->empty()) out += *p + "\n";
      p->clear();
    }
  }

 private:
  static constexpr size_t kMaxPartial = 1 << 20;

  void record(std::string_view line, std::string& out) {
    // <time> <stream> <tag> <text>
    const size_t a = line.find(' ');
    const size_t b = a == std::string_view::npos ? a : line.find(' ', a + 1);
    const size_t c = b == std::string_view::npos ? b : line.find(' ', b + 1);
    if (c == std::string_view::npos) {
      out.append(line);
      out += '\n';
      return;
    }
    const std::string_view stream = line.substr(a + 1, b - a - 1);
    const std::string_view tag = line.substr(b + 1, c - b - 1);
    const std::string_view text = line.substr(c + 1);
    std::string& partial = stream == "stderr" ? partial_stderr_ : partial_stdout_;
    partial.append(text);
    if (tag == "P" && partial.size() < kMaxPartial) return;
    out += partial;
    if (tag != "P") out += '\n';
    partial.clear();
  }

  std::string buf_;
  std::string partial_stdout_;
  std::string partial_stderr_;
};

}  // namespace

core::Result<pid_t> spawn_log_copier(const std::vector<std::string>& copier,
                                     const std::filesystem::path& log_file,
                                     const std::vector<std::string>& secret_values, int in_fd,
                                     LogFormat format) {
  core::SpawnSpec spec;
  spec.argv = copier;
  spec.argv.insert(spec.argv.end(), {"--log", log_file.string()});
  if (format == LogFormat::K8sFile) spec.argv.insert(spec.argv.end(), {"--format", "k8s-file"});
  spec.env = core::minimal_environment();
  for (auto& [k, v] : log_copier_env(secret_values)) spec.env[k] = std::move(v);
  spec.stdin_fd = in_fd;
  spec.merge_stderr = false;
  spec.new_session = true;
  auto pid = core::spawn(spec);
  if (!pid.ok()) return pid.error().wrap("cannot start the log copier");
  return *pid;
}

std::map<std::string, std::string> log_copier_env(const std::vector<std::string>& secret_values) {
  std::map<std::string, std::string> env;
  env[std::string(kRedactCountEnv)] = std::to_string(secret_values.size());
  for (size_t i = 0; i < secret_values.size(); ++i) {
    env[std::string(kRedactValueEnvPrefix) + std::to_string(i + 1)] = secret_values[i];
  }
  return env;
}

int run_log_copier(const std::filesystem::path& log_file, int in_fd, LogFormat format) {
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGPIPE}) std::signal(sig, SIG_IGN);

  std::vector<std::string> values;
  const std::string count_name(kRedactCountEnv);
  if (const char* count_text = std::getenv(count_name.c_str())) {
    char* end = nullptr;
    const long count = std::strtol(count_text, &end, 10);
    if (end == count_text || *end != '\0' || count < 0 || count > 10000) {
      std::fprintf(stderr, "cutover task-log: %s must be a count\n", count_name.c_str());
      return 2;
    }
    for (long i = 1; i <= count; ++i) {
      const std::string name = std::string(kRedactValueEnvPrefix) + std::to_string(i);
      const char* value = std::getenv(name.c_str());
      if (value == nullptr) {
        std::fprintf(stderr, "cutover task-log: %s is missing\n", name.c_str());
        return 2;
      }
      values.emplace_back(value);
      ::unsetenv(name.c_str());
    }
    ::unsetenv(count_name.c_str());
  }
  const core::Redactor redactor(values);
  core::RedactingStream stream(redactor);

  int out = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  bool writable = out >= 0;
  if (!writable) {
    std::fprintf(stderr, "cutover task-log: cannot open %s: %s\n", log_file.c_str(),
                 std::strerror(errno));
  }
  K8sFileDecoder decoder;
  std::string text;
  char buf[64 * 1024];
  while (true) {
    ssize_t n = ::read(in_fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (n == 0) break;
    std::string_view chunk(buf, static_cast<size_t>(n));
    if (format == LogFormat::K8sFile) {
      text.clear();
      decoder.feed(chunk, text);
      chunk = text;
    }
    std::string masked = stream.feed(chunk);
    // A full disk must not stop the task: keep reading (and dropping) its output.
    if (writable && !write_all(out, masked)) writable = false;
  }
  text.clear();
  if (format == LogFormat::K8sFile) decoder.finish(text);
  std::string rest = stream.feed(text) + stream.finish();
  if (writable && !write_all(out, rest)) writable = false;
  if (out >= 0) ::close(out);
  return writable ? 0 : 1;
}

void LogCopiers::add(pid_t pid, const std::string& task_id) {
  std::lock_guard lock(mu_);
  pids_[pid] = task_id;
}

void LogCopiers::finish(const std::string& task_id) {
  pid_t pid = 0;
  {
    std::lock_guard lock(mu_);
    for (const auto& [p, id] : pids_) {
      if (id == task_id) pid = p;
    }
  }
  if (pid == 0) return;
  if (core::wait_for_exit(pid, std::chrono::milliseconds(5000)).ok()) {
    std::lock_guard lock(mu_);
    pids_.erase(pid);
  }
}

void LogCopiers::reap() {
  std::lock_guard lock(mu_);
  for (auto it = pids_.begin(); it != pids_.end();) {
    int status = 0;
    const pid_t r = ::waitpid(it->first, &status, WNOHANG);
    if (r == it->first || (r < 0 && errno == ECHILD)) {
      it = pids_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace cutover::runtime
