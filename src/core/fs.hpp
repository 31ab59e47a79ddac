// Small file helpers used across modules: whole-file reads, atomic replacement (write to a
// temporary in the same directory, fsync, rename), directories.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "core/result.hpp"

namespace cutover::core {

Result<std::string> read_file(const std::filesystem::path& path);
// Replaces path atomically: readers see the old or the new content, never a mix. mode applies to
// the new file (e.g. 0600 for tokens and keys).
Result<void> write_file_atomic(const std::filesystem::path& path, std::string_view content,
                               unsigned mode = 0644);
Result<void> ensure_dir(const std::filesystem::path& path, unsigned mode = 0755);

}  // namespace cutover::core
