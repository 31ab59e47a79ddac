#include "scan/scan.hpp"

#include <sstream>

namespace cutover::scan {

namespace fs = std::filesystem;

namespace {

constexpr size_t kMaxListedFindings = 20;  // in a gate's message; the rest are counted

core::Result<void> run_secrets_gate(const fs::path& root) {
  std::error_code ec;
  RuleSet rules;
  if (fs::exists(root / ".gitleaks.toml", ec)) {
    auto loaded = load_rules(root / ".gitleaks.toml");
    if (!loaded) return loaded.error();
    rules = std::move(*loaded);
  } else {
    rules = default_rules();
  }
  std::set<std::string> ignored;
  if (fs::exists(root / ".gitleaksignore", ec)) {
    auto loaded = load_ignore_file(root / ".gitleaksignore");
    if (!loaded) return loaded.error();
    ignored = std::move(*loaded);
  }
  auto scanner = Scanner::create(std::move(rules));
  if (!scanner) return scanner.error();
  auto report = (*scanner)->scan_directory(root);
  if (!report) return core::Error(report.error().message, core::ErrorKind::Internal);
  suppress(report->findings, ignored, nullptr);
  if (report->findings.empty()) return {};
  std::ostringstream msg;
  msg << report->findings.size() << " secret" << (report->findings.size() == 1 ? "" : "s")
      << " found:";
  for (size_t i = 0; i < report->findings.size() && i < kMaxListedFindings; ++i) {
    const auto& f = report->findings[i];
    msg << "\n  " << f.file << ":" << f.start_line << ":" << f.start_column << ": " << f.rule_id
        << " (fingerprint " << f.fingerprint() << ")";
  }
  if (report->findings.size() > kMaxListedFindings) {
    msg << "\n  ... and " << report->findings.size() - kMaxListedFindings << " more";
  }
  return core::Error(msg.str(), core::ErrorKind::Conflict);
}

}  // namespace

core::Result<void> run_gate(Gate gate, const fs::path& root) {
  if (gate == Gate::Secrets) return run_secrets_gate(root);
  return core::Error(
      "scan gate \"config\" is not available in this build of cutover; the stage fails instead of "
      "passing a gate that did not run",
      core::ErrorKind::Internal);
}

}  // namespace cutover::scan
