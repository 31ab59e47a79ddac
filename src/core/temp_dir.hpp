// TempDir: a fresh directory under the system temp directory, removed with everything in it at
// destruction. For tests (and scratch work) in every module.
//
// Thread-safety: a value owned by one thread.
#pragma once

#include <filesystem>
#include <string_view>
#include <system_error>

#include "core/id.hpp"

namespace cutover::core {

class TempDir {
 public:
  explicit TempDir(std::string_view prefix = "cutover")
      : path_(std::filesystem::temp_directory_path() / new_id(prefix)) {
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace cutover::core
