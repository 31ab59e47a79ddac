// scan: the built-in security gates. The secret scanner reads rules in the gitleaks TOML format
// (so teams bring their existing .gitleaks.toml), finds candidates for all rules at once with a
// Hyperscan block-mode database (prefilter mode, plus each rule's keywords as caseless literals),
// and confirms spans and groups with RE2 only on the rules that fired, only around where they
// fired. The detection order is gitleaks': keywords, path, regex, secret group (or the first
// non-empty group), Shannon entropy, allowlists (rule, then global), `gitleaks:allow` on the line,
// .gitleaksignore fingerprints, then generic-vs-specific dedupe.
//
//   files ──mmap──▶ binary/huge? ──skip
//                     │ text
//                     ▼
//   Hyperscan (all rules, prefilter + keywords) ──ends per rule──▶ RE2 on the lines around them
//                     ──▶ secret group ──▶ entropy ──▶ allowlists ──▶ ignore ──▶ dedupe ──▶ Finding
//
// Thread-safety: RuleSet and Finding are values. A Scanner is immutable after create() and its
// scan_* functions may be called from several threads at once (each call uses its own Hyperscan
// scratch). scan_directory itself uses ScanOptions::threads worker threads.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"

namespace cutover::scan {

// ---- rules (gitleaks TOML format) ----

enum class AllowlistCondition { Or, And };
enum class RegexTarget { Secret, Match, Line };

struct Allowlist {
  std::string description;
  AllowlistCondition condition = AllowlistCondition::Or;
  RegexTarget regex_target = RegexTarget::Secret;
  std::vector<std::string> regexes = {};    // RE2 syntax (= Go's regexp)
  std::vector<std::string> paths = {};      // regexes over the file path
  std::vector<std::string> stopwords = {};  // case-insensitive substrings of the secret
  std::vector<std::string> commits = {};    // commit SHAs (history mode)
};

struct Rule {
  std::string id;
  std::string description;
  std::string regex;     // may be empty for a path-only rule
  int secret_group = 0;  // 0 = the first non-empty group, or the whole match without groups
  double entropy = 0;    // findings whose secret has Shannon entropy <= this are dropped
  std::vector<std::string> keywords;  // the rule runs only on text containing one (any case)
  std::string path;                   // regex over the file path; "" = every file
  std::vector<std::string> tags;
  std::vector<Allowlist> allowlists;
};

struct RuleSet {
  std::vector<Rule> rules;
  std::vector<Allowlist> allowlists;  // global: apply to every rule
};

// The rule set written by this project (src/scan/default_rules.cpp) for common credential formats.
const RuleSet& default_rules();

// Parses a gitleaks configuration. origin names the text in errors ("rules.toml:12:3: ...").
// [extend] path is resolved relative to base_dir; useDefault merges onto default_rules();
// disabledRules removes rule ids. Every regex is checked with RE2.
core::Result<RuleSet> parse_rules(std::string_view toml, std::string_view origin,
                                  const std::filesystem::path& base_dir = {});
core::Result<RuleSet> load_rules(const std::filesystem::path& file);

// ---- findings ----

struct Finding {
  std::string rule_id;
  std::string description;
  std::string file;                      // relative to the scanned root, '/'-separated
  int start_line = 0, end_line = 0;      // 1-based
  int start_column = 0, end_column = 0;  // 1-based, inclusive end
  std::string match;
  std::string secret;
  double entropy = 0;
  std::vector<std::string> tags;
  // History mode.
  std::string commit, author, email, date, message;
  // gitleaks' fingerprint: [commit:]file:rule:line, the key of .gitleaksignore.
  std::string fingerprint() const;
  // Hex SHA-256 of the secret: what baselines and SARIF fingerprints hold instead of the secret.
  std::string secret_hash() const;
};

// Shannon entropy in bits per byte, as gitleaks computes it.
double shannon_entropy(std::string_view s);

// ---- the scanner ----

struct ScanOptions {
  unsigned threads = 0;                       // 0 = all cores
  std::uint64_t max_file_size = 32ull << 20;  // larger files are skipped (and counted)
  std::filesystem::path cache_dir = {};       // serialized Hyperscan databases; "" = no cache
};

struct ScanStats {
  std::uint64_t files_scanned = 0, bytes_scanned = 0;
  std::uint64_t skipped_binary = 0, skipped_large = 0, commits_scanned = 0;
};

struct ScanReport {
  std::vector<Finding> findings;  // sorted by file, line, column, rule
  ScanStats stats;
};

class Scanner {
 public:
  static core::Result<std::unique_ptr<Scanner>> create(RuleSet rules, ScanOptions options = {});
  ~Scanner();
  Scanner(const Scanner&) = delete;
  Scanner& operator=(const Scanner&) = delete;

  const RuleSet& rules() const;

  // Scans one text as the content of `path` (relative, for path rules and allowlists). commit is
  // set on history findings and checked against allowlist commits. Applies everything except
  // .gitleaksignore and baselines.
  std::vector<Finding> scan_text(std::string_view text, std::string_view path,
                                 std::string_view commit = {}) const;

  // Every regular file under root (not .git, not symlinks), in parallel.
  core::Result<ScanReport> scan_directory(const std::filesystem::path& root) const;

  // History mode: the lines each commit added (diff against its first parent; the whole tree for a
  // root commit) of the commits reachable from `until` (default HEAD), or only of since..until
  // when since is set. repo may be bare (the controller's mirror).
  core::Result<ScanReport> scan_history(const std::filesystem::path& repo,
                                        const std::optional<std::string>& since,
                                        const std::optional<std::string>& until = {}) const;

  struct Impl;

 private:
  explicit Scanner(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// ---- suppression: .gitleaksignore and baselines ----

// Fingerprints, one a line; '#' starts a comment.
core::Result<std::set<std::string>> load_ignore_file(const std::filesystem::path& file);

// A baseline is a JSON report of an earlier scan (our --format json output, or gitleaks' with
// unredacted secrets). A finding is in the baseline when rule, path and secret hash are equal, so
// a secret that moves to another line does not resurface.
struct Baseline {
  std::set<std::string> keys;
  bool contains(const Finding& f) const;
};
core::Result<Baseline> load_baseline(const std::filesystem::path& file);

// Removes ignored and baselined findings.
void suppress(std::vector<Finding>& findings, const std::set<std::string>& ignored,
              const Baseline* baseline);

// ---- output ----

enum class Format { Text, Json, Sarif };
// redact: replace the secret by "REDACTED" in secret and match.
std::string format_report(const ScanReport& report, const RuleSet& rules, Format format,
                          bool redact);

// ---- config checks on cutover.yaml (`scan: config`) ----

struct ConfigFinding {
  std::string id;        // CFG001 ...
  std::string severity;  // high | medium
  std::string where;     // key path: services.web.task.containers[0].env.API_KEY
  int line = 0, column = 0;
  std::string message;
  std::string fix;
};

// CFG001 literal env value that looks like (or is named like) a secret; CFG002 image without a
// tag or with :latest; CFG003 container without a health check; CFG004 public production listener
// without TLS; CFG005 auto_rollback on alarm without alarms; CFG006 public test listener.
core::Result<std::vector<ConfigFinding>> check_config(std::string_view yaml,
                                                      std::string_view origin);
std::string format_config_findings(const std::vector<ConfigFinding>& findings,
                                   std::string_view origin);

// ---- the generic SARIF gate (`gate: { sarif: ..., fail_on: ... }` on a run stage) ----

enum class SarifLevel { None, Note, Warning, Error };
const char* to_string(SarifLevel level);

struct SarifSummary {
  size_t results = 0;
  size_t by_level[4] = {};          // indexed by SarifLevel
  size_t blocking = 0;              // results at or above fail_on
  std::vector<std::string> listed;  // the first blocking ones: "uri:line: level rule [tool]: msg"
};

// fail_on None never blocks. A result without a level takes its rule's defaultConfiguration.level,
// else "warning" (SARIF 2.1.0 §3.27.10).
core::Result<SarifSummary> evaluate_sarif(std::string_view text, std::string_view origin,
                                          SarifLevel fail_on);
// Reads root/sarif_path: an error of kind Conflict when results block, another kind when the file
// is missing or not SARIF.
core::Result<void> run_sarif_gate(const std::filesystem::path& root, const std::string& sarif_path,
                                  SarifLevel fail_on);

// ---- gates, for pipeline `scan` stages ----

enum class Gate { Secrets, Config };

// True when the git repository at repo resolves rev to a commit.
bool has_commit(const std::filesystem::path& repo, const std::string& rev);

struct GateOptions {
  // Compiled rule databases are cached here by rule hash ("" = compile every time).
  std::filesystem::path cache_dir = {};
  // Secrets, incremental: with repository (a git repository, bare or not, holding both commits)
  // and commit set, only the lines the commits since..commit added are scanned, like
  // `cutover scan --since`. since empty (a first execution) or unknown to the repository (a
  // force-push dropped it) scans the whole checkout instead, and says so through log.
  std::filesystem::path repository = {};
  std::string commit = {};
  std::string since = {};
  // What the gate did ("scanned 3 commits since 1a2b3c4: 12 files, 4 KiB"); may be null.
  std::function<void(const std::string&)> log = {};
};

// Runs gate over the checkout at root. Secrets: the default rules, or root/.gitleaks.toml when
// present, with root/.gitleaksignore. Config: check_config on root/cutover.yaml. An error when the
// gate finds something (kind Conflict, the message lists the findings with secrets redacted) or
// cannot run (kind Internal or Invalid).
core::Result<void> run_gate(Gate gate, const std::filesystem::path& root,
                            const GateOptions& options = {});

}  // namespace cutover::scan
