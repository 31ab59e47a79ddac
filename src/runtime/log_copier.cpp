#include "runtime/log_copier.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>

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

}  // namespace

std::map<std::string, std::string> log_copier_env(const std::vector<std::string>& secret_values) {
  std::map<std::string, std::string> env;
  env[std::string(kRedactCountEnv)] = std::to_string(secret_values.size());
  for (size_t i = 0; i < secret_values.size(); ++i) {
    env[std::string(kRedactValueEnvPrefix) + std::to_string(i + 1)] = secret_values[i];
  }
  return env;
}

int run_log_copier(const std::filesystem::path& log_file, int in_fd) {
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
  char buf[64 * 1024];
  while (true) {
    ssize_t n = ::read(in_fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (n == 0) break;
    std::string masked = stream.feed(std::string_view(buf, static_cast<size_t>(n)));
    // A full disk must not stop the task: keep reading (and dropping) its output.
    if (writable && !write_all(out, masked)) writable = false;
  }
  if (writable && !write_all(out, stream.finish())) writable = false;
  if (out >= 0) ::close(out);
  return writable ? 0 : 1;
}

}  // namespace cutover::runtime
