// UniqueFd and wait_ready: the two pieces every blocking socket client here needs (the CLI's API
// client, the controller's proxy admin client).
//
// Thread-safety: UniqueFd is a move-only owner; wait_ready has no state.
#pragma once

#include <chrono>

namespace cutover::core {

// Owns a file descriptor and closes it at destruction.
class UniqueFd {
 public:
  explicit UniqueFd(int fd = -1) : fd_(fd) {}
  ~UniqueFd();
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// Polls fd for `events` (POLLIN, POLLOUT) until it is ready (true) or the deadline passes or poll
// fails (false). Deadlines are real time: a socket does not follow a simulated clock.
bool wait_ready(int fd, short events, std::chrono::steady_clock::time_point deadline);

}  // namespace cutover::core
