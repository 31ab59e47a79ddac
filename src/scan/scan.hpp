// scan: the built-in security gates (secret scanner, config checks). The scanner itself arrives
// with the security-gates issue; until then a `scan` stage fails with a clear "not available"
// error rather than passing silently.
#pragma once

#include <filesystem>
#include <string>

#include "core/result.hpp"

namespace cutover::scan {

enum class Gate { Secrets, Config };

// Runs gate over the checkout at root. Today: always an error that says the scanner is not
// available in this build, so that no pipeline passes a gate that did not run.
core::Result<void> run_gate(Gate gate, const std::filesystem::path& root);

}  // namespace cutover::scan
