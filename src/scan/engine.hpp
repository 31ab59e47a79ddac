// Internal to the scan module: the compiled form of a RuleSet (Scanner::Impl), shared by the
// directory scan, the history scan and the tests of this folder.
#pragma once

#include <hs.h>
#include <re2/re2.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "scan/scan.hpp"

namespace cutover::scan {

struct CompiledAllowlist {
  explicit CompiledAllowlist(const Allowlist& a);
  // line: the text of the finding's first line (regexTarget = "line").
  bool allows(const Finding& f, std::string_view line) const;

  AllowlistCondition condition;
  RegexTarget target;
  std::set<std::string> commits;
  std::vector<std::unique_ptr<RE2>> regexes, paths;
  std::vector<std::string> stopwords;  // lower case
};

struct CompiledRule {
  const Rule* rule = nullptr;
  std::unique_ptr<RE2> regex, path;
  std::vector<CompiledAllowlist> allowlists;
  bool multiline = false;     // the regex may match across a newline
  bool no_prefilter = false;  // Hyperscan rejected the regex: RE2 scans the whole text
  bool generic = false;       // id contains "generic": loses to a specific rule in dedupe
};

// Owns one Hyperscan scratch; null when the rule set compiled to no database.
class ScratchHolder {
 public:
  explicit ScratchHolder(hs_scratch_t* s) : s_(s) {}
  ~ScratchHolder();
  ScratchHolder(const ScratchHolder&) = delete;
  ScratchHolder& operator=(const ScratchHolder&) = delete;
  hs_scratch_t* get() const { return s_; }

 private:
  hs_scratch_t* s_;
};

struct Scanner::Impl {
  static constexpr unsigned kKeywordBase = 1u << 24;  // Hyperscan ids >= this are keywords

  static core::Result<std::unique_ptr<Impl>> build(RuleSet rules, ScanOptions options);
  Impl() = default;
  ~Impl();
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  hs_scratch_t* clone_scratch() const;
  bool load_cached(const std::filesystem::path& file);
  void store_cached(const std::filesystem::path& file) const;
  std::vector<Finding> scan(std::string_view text, std::string_view path, std::string_view commit,
                            hs_scratch_t* scratch) const;
  bool allowed(const CompiledRule& c, const Finding& f, std::string_view line) const;
  void dedupe(std::vector<Finding>& findings) const;

  ScanOptions options;
  RuleSet rules;
  std::vector<CompiledRule> compiled;
  std::vector<CompiledAllowlist> global_allowlists;
  std::vector<size_t> keyword_rule;  // keyword index -> rule index
  hs_database_t* db = nullptr;
  hs_scratch_t* scratch = nullptr;  // prototype, cloned per thread
};

void sort_findings(std::vector<Finding>& findings);

}  // namespace cutover::scan
