// The generic gate: any scanner's SARIF 2.1.0 log (semgrep, trivy, checkov, ...) decides a stage
// like our own findings do. A result's level is its own `level`, else its rule's
// defaultConfiguration.level, else "warning" (SARIF §3.27.10).
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "core/fs.hpp"
#include "scan/scan.hpp"

namespace cutover::scan {

namespace fs = std::filesystem;
using core::Error;
using core::Result;
using nlohmann::json;

namespace {

constexpr size_t kMaxListed = 20;

int rank(SarifLevel l) {
  switch (l) {
    case SarifLevel::None:
      return 0;
    case SarifLevel::Note:
      return 1;
    case SarifLevel::Warning:
      return 2;
    case SarifLevel::Error:
      return 3;
  }
  return 0;
}

std::optional<SarifLevel> parse_level(const json& j) {
  if (!j.is_string()) return std::nullopt;
  const auto s = j.get<std::string>();
  if (s == "error") return SarifLevel::Error;
  if (s == "warning") return SarifLevel::Warning;
  if (s == "note") return SarifLevel::Note;
  if (s == "none") return SarifLevel::None;
  return std::nullopt;
}

}  // namespace

const char* to_string(SarifLevel l) {
  switch (l) {
    case SarifLevel::None:
      return "none";
    case SarifLevel::Note:
      return "note";
    case SarifLevel::Warning:
      return "warning";
    case SarifLevel::Error:
      return "error";
  }
  return "none";
}

Result<SarifSummary> evaluate_sarif(std::string_view text, std::string_view origin,
                                    SarifLevel fail_on) {
  const std::string where(origin);
  json doc = json::parse(text, nullptr, false);
  if (doc.is_discarded()) return Error(where + ": not JSON");
  if (!doc.is_object() || !doc.contains("runs") || !doc["runs"].is_array()) {
    return Error(where + ": not a SARIF log (no runs array)");
  }
  if (doc.contains("version") && doc["version"] != "2.1.0") {
    return Error(where + ": SARIF version " + doc["version"].dump() + ", expected \"2.1.0\"");
  }
  SarifSummary sum;
  for (size_t r = 0; r < doc["runs"].size(); ++r) {
    const json& run = doc["runs"][r];
    if (!run.is_object())
      return Error(where + ": runs[" + std::to_string(r) + "] is not an object");
    std::string tool = "unknown tool";
    std::map<std::string, SarifLevel> rule_level;
    std::vector<std::string> rule_ids;
    if (run.contains("tool") && run["tool"].is_object() && run["tool"].contains("driver")) {
      const json& d = run["tool"]["driver"];
      if (d.contains("name") && d["name"].is_string()) tool = d["name"].get<std::string>();
      if (d.contains("rules") && d["rules"].is_array()) {
        for (const auto& rule : d["rules"]) {
          std::string id =
              rule.contains("id") && rule["id"].is_string() ? rule["id"].get<std::string>() : "";
          rule_ids.push_back(id);
          if (rule.contains("defaultConfiguration") && rule["defaultConfiguration"].is_object()) {
            if (auto l = parse_level(rule["defaultConfiguration"].value("level", json()))) {
              rule_level[id] = *l;
            }
          }
        }
      }
    }
    if (!run.contains("results") || run["results"].is_null()) continue;
    if (!run["results"].is_array()) {
      return Error(where + ": runs[" + std::to_string(r) + "].results is not an array");
    }
    for (const auto& res : run["results"]) {
      if (!res.is_object()) continue;
      std::string rule_id;
      if (res.contains("ruleId") && res["ruleId"].is_string()) {
        rule_id = res["ruleId"].get<std::string>();
      } else if (res.contains("ruleIndex") && res["ruleIndex"].is_number_unsigned() &&
                 res["ruleIndex"].get<size_t>() < rule_ids.size()) {
        rule_id = rule_ids[res["ruleIndex"].get<size_t>()];
      }
      SarifLevel level = SarifLevel::Warning;
      if (auto l = parse_level(res.value("level", json()))) {
        level = *l;
      } else if (auto it = rule_level.find(rule_id); it != rule_level.end()) {
        level = it->second;
      }
      ++sum.results;
      ++sum.by_level[static_cast<size_t>(level)];
      if (fail_on == SarifLevel::None || rank(level) < rank(fail_on)) continue;
      ++sum.blocking;
      if (sum.listed.size() >= kMaxListed) continue;
      std::string loc;
      if (res.contains("locations") && res["locations"].is_array() && !res["locations"].empty()) {
        const json& pl = res["locations"][0].value("physicalLocation", json::object());
        if (pl.is_object()) {
          const json& al = pl.value("artifactLocation", json::object());
          if (al.is_object() && al.contains("uri") && al["uri"].is_string()) {
            loc = al["uri"].get<std::string>();
          }
          const json& region = pl.value("region", json::object());
          if (region.is_object() && region.contains("startLine") &&
              region["startLine"].is_number_integer()) {
            loc += ":" + std::to_string(region["startLine"].get<long long>());
          }
        }
      }
      std::string message;
      if (res.contains("message") && res["message"].is_object() &&
          res["message"].contains("text") && res["message"]["text"].is_string()) {
        message = res["message"]["text"].get<std::string>();
        if (message.size() > 200) message = message.substr(0, 200) + "...";
      }
      sum.listed.push_back((loc.empty() ? std::string("-") : loc) + ": " + to_string(level) + " " +
                           (rule_id.empty() ? "(no rule)" : rule_id) + " [" + tool + "]" +
                           (message.empty() ? "" : ": " + message));
    }
  }
  return sum;
}

Result<void> run_sarif_gate(const fs::path& root, const std::string& sarif_path,
                            SarifLevel fail_on) {
  auto text = core::read_file(root / sarif_path);
  if (!text) {
    return Error("gate: cannot read " + sarif_path +
                 " (did the stage write it?): " + text.error().message);
  }
  auto sum = evaluate_sarif(*text, sarif_path, fail_on);
  if (!sum) return Error("gate: " + sum.error().message);
  if (sum->blocking == 0) return {};
  std::ostringstream msg;
  msg << "gate: " << sum->blocking << " of " << sum->results << " results in " << sarif_path
      << " are at or above " << to_string(fail_on) << ":";
  for (const auto& l : sum->listed) msg << "\n  " << l;
  if (sum->blocking > sum->listed.size()) {
    msg << "\n  ... and " << sum->blocking - sum->listed.size() << " more";
  }
  return Error(msg.str(), core::ErrorKind::Conflict);
}

}  // namespace cutover::scan
