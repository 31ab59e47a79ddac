// Durations as people write them in cutover.yaml and on the command line: 250ms, 10s, 5m, 1h,
// and combinations such as 1m30s.
#pragma once

#include <string>
#include <string_view>

#include "core/clock.hpp"
#include "core/result.hpp"

namespace cutover::core {

// Parses "250ms", "10s", "5m", "1h", "1h30m". Rejects empty strings, negative values, unknown units
// and overflow with a message that quotes the input.
Result<Duration> parse_duration(std::string_view text);
// The shortest exact spelling: 90000ms -> "1m30s", 250ms -> "250ms", 0 -> "0s".
std::string format_duration(Duration d);

}  // namespace cutover::core
