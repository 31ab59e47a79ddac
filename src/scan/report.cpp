// Findings out: fingerprints, .gitleaksignore, baselines, and the text / gitleaks JSON / SARIF
// 2.1.0 formats.
#include <openssl/sha.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/fs.hpp"
#include "scan/scan.hpp"

namespace cutover::scan {

namespace fs = std::filesystem;
using core::Error;
using core::Result;
using nlohmann::json;

namespace {

constexpr const char* kRedacted = "REDACTED";

std::string hex_sha256(std::string_view s) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(s.data()), s.size(), digest);
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned char b : digest) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

std::string baseline_key(std::string_view rule, std::string_view path, std::string_view hash) {
  return std::string(rule) + "\n" + std::string(path) + "\n" + std::string(hash);
}

std::string redact(const std::string& text, const std::string& secret) {
  if (secret.empty()) return text;
  std::string out = text;
  for (size_t pos = out.find(secret); pos != std::string::npos;
       pos = out.find(secret, pos + std::char_traits<char>::length(kRedacted))) {
    out.replace(pos, secret.size(), kRedacted);
  }
  return out;
}

// GitHub code scanning ranks by security-severity (0-10): private keys and cloud or payment keys
// above webhooks above generic guesses.
std::string security_severity(const Rule* r) {
  if (r == nullptr) return "7.0";
  const auto has = [&](const char* t) {
    return std::find(r->tags.begin(), r->tags.end(), t) != r->tags.end();
  };
  if (has("private-key") || has("aws") || has("payment")) return "9.0";
  if (has("generic")) return "5.0";
  if (has("webhook")) return "6.5";
  return "8.0";
}

}  // namespace

std::string Finding::fingerprint() const {
  std::string fp = file + ":" + rule_id + ":" + std::to_string(start_line);
  return commit.empty() ? fp : commit + ":" + fp;
}

std::string Finding::secret_hash() const { return hex_sha256(secret); }

Result<std::set<std::string>> load_ignore_file(const fs::path& file) {
  auto content = core::read_file(file);
  if (!content) return content.error();
  std::set<std::string> out;
  std::istringstream in(*content);
  std::string line;
  while (std::getline(in, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) {
      line.pop_back();
    }
    size_t b = line.find_first_not_of(" \t");
    if (b == std::string::npos || line[b] == '#') continue;
    out.insert(line.substr(b));
  }
  return out;
}

bool Baseline::contains(const Finding& f) const {
  return keys.count(baseline_key(f.rule_id, f.file, f.secret_hash())) > 0;
}

Result<Baseline> load_baseline(const fs::path& file) {
  auto content = core::read_file(file);
  if (!content) return content.error();
  json j = json::parse(*content, nullptr, false);
  if (j.is_discarded() || !j.is_array()) {
    return Error(file.string() +
                 ": a baseline is the JSON array of a `cutover scan --format json` "
                 "(or gitleaks) report");
  }
  Baseline b;
  for (size_t i = 0; i < j.size(); ++i) {
    const json& e = j[i];
    const std::string where = file.string() + ": entry " + std::to_string(i);
    if (!e.is_object() || !e.contains("RuleID") || !e["RuleID"].is_string() ||
        !e.contains("File") || !e["File"].is_string()) {
      return Error(where + ": needs RuleID and File strings");
    }
    std::string hash;
    if (e.contains("SecretSHA256") && e["SecretSHA256"].is_string()) {
      hash = e["SecretSHA256"].get<std::string>();
    } else if (e.contains("Secret") && e["Secret"].is_string() && e["Secret"] != kRedacted) {
      hash = hex_sha256(e["Secret"].get<std::string>());
    } else {
      return Error(where + ": needs SecretSHA256 (or an unredacted Secret) to match findings");
    }
    b.keys.insert(baseline_key(e["RuleID"].get<std::string>(), e["File"].get<std::string>(), hash));
  }
  return b;
}

void suppress(std::vector<Finding>& findings, const std::set<std::string>& ignored,
              const Baseline* baseline) {
  std::erase_if(findings, [&](const Finding& f) {
    if (ignored.count(f.fingerprint()) > 0) return true;
    // gitleaks also accepts the fingerprint without the commit for history findings.
    if (!f.commit.empty() &&
        ignored.count(f.file + ":" + f.rule_id + ":" + std::to_string(f.start_line)) > 0) {
      return true;
    }
    return baseline != nullptr && baseline->contains(f);
  });
}

std::string format_report(const ScanReport& report, const RuleSet& rules, Format format,
                          bool redact_secrets) {
  std::map<std::string, const Rule*> by_id;
  for (const auto& r : rules.rules) by_id[r.id] = &r;
  const auto shown = [&](const Finding& f, const std::string& text) {
    return redact_secrets ? redact(text, f.secret) : text;
  };

  if (format == Format::Text) {
    std::ostringstream out;
    for (const auto& f : report.findings) {
      out << f.file << ":" << f.start_line << ":" << f.start_column << ": " << f.rule_id << ": "
          << f.description << "\n";
      if (!f.commit.empty()) {
        out << "  commit: " << f.commit << " " << f.author << " <" << f.email << "> " << f.date
            << "\n";
      }
      std::string m = shown(f, f.match);
      if (m.size() > 200) m = m.substr(0, 200) + "...";
      out << "  match:  " << m << "\n";
      out << "  fingerprint: " << f.fingerprint() << "\n";
    }
    out << report.findings.size() << " finding" << (report.findings.size() == 1 ? "" : "s") << "; "
        << report.stats.files_scanned << " files";
    if (report.stats.commits_scanned > 0)
      out << " in " << report.stats.commits_scanned << " commits";
    out << ", " << report.stats.bytes_scanned << " bytes scanned";
    if (report.stats.skipped_binary + report.stats.skipped_large > 0) {
      out << "; skipped " << report.stats.skipped_binary << " binary, "
          << report.stats.skipped_large << " too large";
    }
    out << "\n";
    return out.str();
  }

  if (format == Format::Json) {
    json arr = json::array();
    for (const auto& f : report.findings) {
      arr.push_back({{"Description", f.description},
                     {"StartLine", f.start_line},
                     {"EndLine", f.end_line},
                     {"StartColumn", f.start_column},
                     {"EndColumn", f.end_column},
                     {"Match", shown(f, f.match)},
                     {"Secret", redact_secrets ? std::string(kRedacted) : f.secret},
                     {"SecretSHA256", f.secret_hash()},
                     {"File", f.file},
                     {"SymlinkFile", ""},
                     {"Commit", f.commit},
                     {"Entropy", f.entropy},
                     {"Author", f.author},
                     {"Email", f.email},
                     {"Date", f.date},
                     {"Message", f.message},
                     {"Tags", f.tags},
                     {"RuleID", f.rule_id},
                     {"Fingerprint", f.fingerprint()}});
    }
    return arr.dump(1) + "\n";
  }

  // SARIF 2.1.0, as GitHub code scanning reads it.
  json sarif_rules = json::array();
  std::map<std::string, size_t> rule_index;
  for (const auto& r : rules.rules) {
    rule_index[r.id] = sarif_rules.size();
    json props = {{"tags", r.tags}, {"security-severity", security_severity(&r)}};
    props["tags"].push_back("security");
    sarif_rules.push_back(
        {{"id", r.id},
         {"name", r.id},
         {"shortDescription", {{"text", r.description.empty() ? r.id : r.description}}},
         {"fullDescription", {{"text", r.description.empty() ? r.id : r.description}}},
         {"help",
          {{"text",
            "Remove the secret from the repository, rotate it, and load it "
            "from a secret store at run time."}}},
         {"defaultConfiguration", {{"level", "error"}}},
         {"properties", props}});
  }
  json results = json::array();
  for (const auto& f : report.findings) {
    json region = {{"startLine", std::max(1, f.start_line)},
                   {"startColumn", std::max(1, f.start_column)},
                   {"endLine", std::max(1, f.end_line)},
                   {"endColumn", std::max(1, f.end_column) + 1},
                   {"snippet", {{"text", shown(f, f.match)}}}};
    json location = {{"physicalLocation",
                      {{"artifactLocation", {{"uri", f.file}, {"uriBaseId", "%SRCROOT%"}}},
                       {"region", region}}}};
    json result = {{"ruleId", f.rule_id},
                   {"level", "error"},
                   {"message", {{"text", f.description + " (" + f.rule_id + ")"}}},
                   {"locations", json::array({location})},
                   {"partialFingerprints", {{"secretHash/v1", f.secret_hash()}}}};
    if (auto it = rule_index.find(f.rule_id); it != rule_index.end()) {
      result["ruleIndex"] = it->second;
    }
    if (!f.commit.empty()) {
      result["properties"] = {{"commitSha", f.commit}, {"author", f.author}, {"date", f.date}};
    }
    results.push_back(std::move(result));
  }
  json doc = {{"$schema", "https://json.schemastore.org/sarif-2.1.0.json"},
              {"version", "2.1.0"},
              {"runs", json::array({{{"tool",
                                      {{"driver",
                                        {{"name", "cutover"},
                                         {"informationUri", "https://github.com/cutover/cutover"},
                                         {"semanticVersion", "0.1.0"},
                                         {"version", "0.1.0"},
                                         {"rules", sarif_rules}}}}},
                                     {"results", results}}})}};
  return doc.dump(2) + "\n";
}

}  // namespace cutover::scan
