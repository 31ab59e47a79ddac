// Clock: the only way code reads time. Real for production, simulated for tests (STYLE.md, "Time
// and tests"): nothing calls std::chrono::*::now() directly.
//
// Thread-safety: RealClock is stateless. SimulatedClock is safe to read from any thread; advance()
// and set() may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

namespace cutover::core {

using Duration = std::chrono::milliseconds;
// Monotonic time for deadlines and intervals.
using TimePoint = std::chrono::steady_clock::time_point;
// Wall time for records shown to people (executions, events, audit).
using WallTime = std::chrono::system_clock::time_point;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint now() const = 0;
  virtual WallTime wall() const = 0;
};

class RealClock final : public Clock {
 public:
  TimePoint now() const override;
  WallTime wall() const override;
  // A process-wide instance for the imperative shell.
  static RealClock& instance();
};

class SimulatedClock final : public Clock {
 public:
  explicit SimulatedClock(WallTime start_wall = WallTime{std::chrono::seconds{1'700'000'000}});
  TimePoint now() const override;
  WallTime wall() const override;
  void advance(Duration d);

 private:
  std::atomic<int64_t> elapsed_ms_{0};
  WallTime start_wall_;
};

// Milliseconds since the Unix epoch, the representation used in the store and the API.
int64_t to_unix_ms(WallTime t);
WallTime from_unix_ms(int64_t ms);
// RFC 3339 in UTC with milliseconds: 2026-11-22T10:00:00.123Z
std::string format_rfc3339(WallTime t);

}  // namespace cutover::core
