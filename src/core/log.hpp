// Logging: spdlog behind one setup call. Components log through cutover::core::logger(), which
// writes "2026-11-22T10:00:00.123Z info  [component] message" to stderr and optionally a file.
//
// Thread-safety: spdlog's multi-threaded sinks; setup_logging() once at start.
#pragma once

#include <memory>
#include <string>

#include <spdlog/spdlog.h>

namespace cutover::core {

enum class LogLevel { Debug, Info, Warn, Error };

// Configures the default logger. file_path empty = stderr only.
void setup_logging(LogLevel level, const std::string& file_path = "");
std::shared_ptr<spdlog::logger> logger();

}  // namespace cutover::core
