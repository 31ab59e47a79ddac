#include "harness.hpp"

#include "proxy/test_support.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

namespace cutover::e2e {

namespace fs = std::filesystem;

TempDir::TempDir(const std::string& prefix) {
  std::string templ = (fs::temp_directory_path() / (prefix + "-XXXXXX")).string();
  char* p = ::mkdtemp(templ.data());
  if (p == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = p;
}

TempDir::~TempDir() {
  if (std::getenv("CUTOVER_KEEP_TEST_DIRS") != nullptr) return;
  std::error_code ec;
  fs::remove_all(path_, ec);
}

namespace {

std::string drain(int fd) {
  std::string out;
  char buf[65536];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

}  // namespace

CommandResult run(const std::vector<std::string>& argv,
                  const std::map<std::string, std::string>& extra_env) {
  // Output goes to temp files so that large outputs on both streams cannot deadlock.
  char out_path[] = "/tmp/cutover-e2e-out-XXXXXX";
  char err_path[] = "/tmp/cutover-e2e-err-XXXXXX";
  int out_fd = ::mkstemp(out_path);
  int err_fd = ::mkstemp(err_path);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out_fd, 1);
    ::dup2(err_fd, 2);
    for (const auto& [k, v] : extra_env) ::setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  ::lseek(out_fd, 0, SEEK_SET);
  ::lseek(err_fd, 0, SEEK_SET);
  r.out = drain(out_fd);
  r.err = drain(err_fd);
  ::close(out_fd);
  ::close(err_fd);
  ::unlink(out_path);
  ::unlink(err_path);
  return r;
}

void sh(const fs::path& cwd, const std::string& script) {
  auto r = run({"/bin/sh", "-c", "cd '" + cwd.string() + "' && " + script},
               {{"GIT_AUTHOR_NAME", "e2e"},
                {"GIT_AUTHOR_EMAIL", "e2e@localhost"},
                {"GIT_COMMITTER_NAME", "e2e"},
                {"GIT_COMMITTER_EMAIL", "e2e@localhost"}});
  ASSERT_EQ(r.exit_code, 0) << script << "\n" << r.out << r.err;
}

Child::Child(const std::vector<std::string>& argv, const fs::path& log_file) {
  int fd = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  pid_ = ::fork();
  if (pid_ == 0) {
    ::setpgid(0, 0);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  ::close(fd);
}

Child::~Child() {
  if (pid_ > 0 && !reaped_) {
    ::kill(-pid_, SIGKILL);
    wait(std::chrono::seconds(10));
  }
}

bool Child::alive() {
  if (reaped_) return false;
  int status = 0;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) reaped_ = true;
  return !reaped_;
}

void Child::kill(int sig) {
  if (!reaped_) ::kill(pid_, sig);
}

std::optional<int> Child::wait(std::chrono::milliseconds timeout) {
  std::optional<int> result;
  wait_for(
      [&] {
        if (reaped_) return true;
        int status = 0;
        if (::waitpid(pid_, &status, WNOHANG) == pid_) {
          reaped_ = true;
          result = status;
          return true;
        }
        return false;
      },
      timeout);
  return result;
}

HttpResult http_get(int port, const std::string& path, std::chrono::milliseconds timeout) {
  HttpResult r;
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{static_cast<time_t>(timeout.count() / 1000),
             static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    r.error = std::string("connect: ") + std::strerror(errno);
    ::close(fd);
    return r;
  }
  std::string req = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    r.error = "send failed";
    ::close(fd);
    return r;
  }
  std::string raw = drain(fd);
  ::close(fd);
  auto head_end = raw.find("\r\n\r\n");
  if (raw.rfind("HTTP/1.", 0) != 0 || head_end == std::string::npos) {
    r.error = "malformed or empty response: " + raw.substr(0, 200);
    return r;
  }
  r.status = std::atoi(raw.c_str() + 9);
  r.body = raw.substr(head_end + 4);
  return r;
}

bool wait_for(const std::function<bool()>& cond, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (cond()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

int free_port() { return cutover::proxy::test_support::free_port(); }

std::string one_target_snapshot_json(std::uint64_t version, const std::string& target_address,
                                     int port) {
  proxy::RouteSnapshot s;
  s.version = version;
  proxy::TargetGroup g;
  g.name = "web-blue";
  g.targets.push_back(proxy::Target{"task-1", target_address});
  g.health.interval_ms = 100;
  g.health.healthy_threshold = 1;
  s.target_groups.push_back(g);
  proxy::Listener l;
  l.name = "web/production";
  l.address = "127.0.0.1:" + std::to_string(port);
  l.routes.push_back(proxy::Route{"web-blue", proxy::kWeightTotal});
  s.listeners.push_back(l);
  return proxy::to_json(s);
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::trunc);
  out << text;
}

}  // namespace cutover::e2e
