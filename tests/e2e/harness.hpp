// Helpers for black-box tests of the real `cutover` binary: temporary directories, git
// repositories, child processes, plain HTTP GETs on loopback, and waiting on conditions with a
// deadline (never a bare sleep standing in for a condition).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace cutover::e2e {

// A directory under /tmp removed at destruction (unless CUTOVER_KEEP_TEST_DIRS is set).
class TempDir {
 public:
  explicit TempDir(const std::string& prefix);
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

// Runs argv to completion (no shell), capturing stdout and stderr.
CommandResult run(const std::vector<std::string>& argv,
                  const std::map<std::string, std::string>& extra_env = {});
// Runs `sh -c script` in cwd; fails the current test if it exits non-zero.
void sh(const std::filesystem::path& cwd, const std::string& script);

// A background child process (own process group) with output to a file; killed at destruction.
class Child {
 public:
  Child(const std::vector<std::string>& argv, const std::filesystem::path& log_file);
  ~Child();
  pid_t pid() const { return pid_; }
  bool alive();
  void kill(int sig);
  // Waits for the child to exit; returns its wait status or nullopt on timeout.
  std::optional<int> wait(std::chrono::milliseconds timeout);

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
};

struct HttpResult {
  int status = 0;  // 0 = transport failure
  std::string body;
  std::string error;
};
// GET http://127.0.0.1:port/path with Connection: close.
HttpResult http_get(int port, const std::string& path,
                    std::chrono::milliseconds timeout = std::chrono::seconds(5));

// Polls cond every 50 ms until it is true or the deadline passes.
bool wait_for(const std::function<bool()>& cond, std::chrono::milliseconds timeout);

int free_port();
// The route snapshot of one listener "web/production" on 127.0.0.1:port sending everything to
// group "web-blue" with one target "task-1" (health checked every 100 ms, healthy after one),
// as JSON for a proxy's --state-file.
std::string one_target_snapshot_json(std::uint64_t version, const std::string& target_address,
                                     int port);
std::string read_text(const std::filesystem::path& p);
void write_text(const std::filesystem::path& p, const std::string& text);

}  // namespace cutover::e2e
