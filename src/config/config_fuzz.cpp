// libFuzzer target: parse_config must never crash, hang or throw on any input (STYLE.md: untrusted
// input gets a clear error, never a crash). Seeds: tests/fuzz/config/.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "config/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto result = cutover::config::parse_config(text, "fuzz.yaml");
  if (!result.ok() && result.error().message.rfind("fuzz.yaml:", 0) != 0) __builtin_trap();
  return 0;
}
