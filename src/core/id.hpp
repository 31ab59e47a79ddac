// Identifiers: random, URL-safe, prefixed by kind ("ex-3f9a1c2b7d", "dep-...", "task-...").
//
// Thread-safety: new_id() may be called from any thread.
#pragma once

#include <string>
#include <string_view>

namespace cutover::core {

// prefix + "-" + 10 lowercase hex characters from the OS random source.
std::string new_id(std::string_view prefix);
// n random bytes as lowercase hex (tokens, keys).
std::string random_hex(size_t n_bytes);

}  // namespace cutover::core
