// libFuzzer target for the gitleaks TOML loader and the matching path. Input: TOML, optionally
// followed by a line "=====" and a text. The TOML goes through parse_rules (errors must name the
// origin); the text is scanned with the parsed rules when they load, and always with the default
// rules. Findings must point inside the text. Seeds: tests/fuzz/scan/.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "scan/scan.hpp"

namespace {

using cutover::scan::Finding;

void check(const std::vector<Finding>& findings, std::string_view text) {
  size_t lines = 1;
  for (char c : text) lines += c == '\n';
  for (const auto& f : findings) {
    if (f.match.rfind("file detected: ", 0) == 0) continue;
    if (f.start_line < 1 || f.end_line < f.start_line || static_cast<size_t>(f.end_line) > lines ||
        f.start_column < 1 || f.secret.empty() || text.find(f.match) == std::string_view::npos) {
      __builtin_trap();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto defaults = cutover::scan::Scanner::create(cutover::scan::default_rules());
  if (!defaults) __builtin_trap();
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t sep = input.find("\n=====\n");
  const std::string_view toml = input.substr(0, sep);
  const std::string_view text = sep == std::string_view::npos ? input : input.substr(sep + 7);

  auto rules = cutover::scan::parse_rules(toml, "fuzz.toml");
  if (!rules.ok() && rules.error().message.rfind("fuzz.toml", 0) != 0) __builtin_trap();
  // Compiling arbitrary rule sets is slow; keep the fuzzer fast on small ones.
  if (rules.ok() && toml.size() < 2048 && rules->rules.size() <= 8) {
    auto scanner = cutover::scan::Scanner::create(std::move(*rules));
    if (scanner.ok()) check((*scanner)->scan_text(text, "fuzz/file.txt", "c0ffee"), text);
  }
  check((*defaults)->scan_text(text, "fuzz/file.txt"), text);
  return 0;
}
