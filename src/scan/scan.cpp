#include "scan/scan.hpp"

#include <sstream>

#include "core/fs.hpp"

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

core::Result<void> run_config_gate(const fs::path& root) {
  auto content = core::read_file(root / "cutover.yaml");
  if (!content) return content.error();
  auto findings = check_config(*content, "cutover.yaml");
  if (!findings) return findings.error();
  if (findings->empty()) return {};
  std::ostringstream msg;
  msg << findings->size() << " configuration finding" << (findings->size() == 1 ? "" : "s") << ":\n"
      << format_config_findings(*findings, "cutover.yaml");
  std::string text = msg.str();
  while (!text.empty() && text.back() == '\n') text.pop_back();
  return core::Error(text, core::ErrorKind::Conflict);
}

}  // namespace

core::Result<void> run_gate(Gate gate, const fs::path& root) {
  if (gate == Gate::Secrets) return run_secrets_gate(root);
  return run_config_gate(root);
}

}  // namespace cutover::scan
