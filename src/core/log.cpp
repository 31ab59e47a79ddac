#include "core/log.hpp"

#include <vector>

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace cutover::core {

void setup_logging(LogLevel level, const std::string& file_path) {
  std::vector<spdlog::sink_ptr> sinks;
  sinks.push_back(std::make_shared<spdlog::sinks::stderr_sink_mt>());
  if (!file_path.empty()) {
    sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(file_path));
  }
  auto log = std::make_shared<spdlog::logger>("cutover", sinks.begin(), sinks.end());
  log->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %-5l %v", spdlog::pattern_time_type::utc);
  switch (level) {
    case LogLevel::Debug:
      log->set_level(spdlog::level::debug);
      break;
    case LogLevel::Info:
      log->set_level(spdlog::level::info);
      break;
    case LogLevel::Warn:
      log->set_level(spdlog::level::warn);
      break;
    case LogLevel::Error:
      log->set_level(spdlog::level::err);
      break;
  }
  log->flush_on(spdlog::level::info);
  spdlog::set_default_logger(log);
}

std::shared_ptr<spdlog::logger> logger() { return spdlog::default_logger(); }

}  // namespace cutover::core
