#include "core/clock.hpp"

#include <ctime>

#include <fmt/format.h>

namespace cutover::core {

TimePoint RealClock::now() const { return std::chrono::steady_clock::now(); }
WallTime RealClock::wall() const { return std::chrono::system_clock::now(); }
RealClock& RealClock::instance() {
  static RealClock clock;
  return clock;
}

SimulatedClock::SimulatedClock(WallTime start_wall) : start_wall_(start_wall) {}
TimePoint SimulatedClock::now() const {
  return TimePoint{} + std::chrono::hours{24} + Duration{elapsed_ms_.load()};
}
WallTime SimulatedClock::wall() const { return start_wall_ + Duration{elapsed_ms_.load()}; }
void SimulatedClock::advance(Duration d) { elapsed_ms_.fetch_add(d.count()); }

int64_t to_unix_ms(WallTime t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}
WallTime from_unix_ms(int64_t ms) { return WallTime{std::chrono::milliseconds{ms}}; }

std::string format_rfc3339(WallTime t) {
  const int64_t ms = to_unix_ms(t);
  const std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms % 1000);
}

}  // namespace cutover::core
