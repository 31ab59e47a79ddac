#include "scan/scan.hpp"

#include <sstream>

#include "core/fs.hpp"

namespace cutover::scan {

namespace fs = std::filesystem;

namespace {

constexpr size_t kMaxListedFindings = 20;  // in a gate's message; the rest are counted

core::Result<void> run_secrets_gate(const fs::path& root, const GateOptions& options) {
  const auto say = [&](const std::string& line) {
    if (options.log) options.log(line);
  };
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
  auto scanner = Scanner::create(std::move(rules), ScanOptions{.cache_dir = options.cache_dir});
  if (!scanner) return scanner.error();
  // Incremental when the commit range is known: what the push added, not the whole tree again.
  const bool incremental = !options.repository.empty() && !options.commit.empty() &&
                           !options.since.empty() && options.since != options.commit;
  const std::string since_short = options.since.substr(0, 7);
  if (!options.repository.empty() && !options.since.empty() && !incremental) {
    say("secrets: commit already scanned at " + since_short + "; scanning the whole checkout");
  } else if (!options.repository.empty() && options.since.empty()) {
    say("secrets: no earlier scanned commit; scanning the whole checkout");
  }
  core::Result<ScanReport> report = core::Error("not run", core::ErrorKind::Internal);
  if (incremental && !has_commit(options.repository, options.since)) {
    say("secrets: " + since_short +
        " (the last scanned commit) is gone from the repository, e.g. after a force-push; "
        "scanning the whole checkout");
    report = (*scanner)->scan_directory(root);
  } else if (incremental) {
    report = (*scanner)->scan_history(options.repository, options.since, options.commit);
    if (report) {
      say("secrets: scanned the lines added by " + std::to_string(report->stats.commits_scanned) +
          " commit(s) since " + since_short + " (" + std::to_string(report->stats.files_scanned) +
          " file diffs, " + std::to_string(report->stats.bytes_scanned) + " bytes)");
    }
  } else {
    report = (*scanner)->scan_directory(root);
    if (report) {
      say("secrets: scanned " + std::to_string(report->stats.files_scanned) + " files (" +
          std::to_string(report->stats.bytes_scanned) + " bytes)");
    }
  }
  if (!report) return core::Error(report.error().message, core::ErrorKind::Internal);
  suppress(report->findings, ignored, nullptr);
  if (report->findings.empty()) return {};
  std::ostringstream msg;
  msg << report->findings.size() << " secret" << (report->findings.size() == 1 ? "" : "s")
      << " found:";
  for (size_t i = 0; i < report->findings.size() && i < kMaxListedFindings; ++i) {
    const auto& f = report->findings[i];
    msg << "\n  " << f.file << ":" << f.start_line << ":" << f.start_column << ": " << f.rule_id
        << (f.commit.empty() ? "" : " in commit " + f.commit.substr(0, 7)) << " (fingerprint "
        << f.fingerprint() << ")";
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

core::Result<void> run_gate(Gate gate, const fs::path& root, const GateOptions& options) {
  if (gate == Gate::Secrets) return run_secrets_gate(root, options);
  return run_config_gate(root);
}

}  // namespace cutover::scan
