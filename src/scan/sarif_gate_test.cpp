// The generic SARIF gate: levels, rule defaults, thresholds, bad input, and our own SARIF output
// read back through it.
#include <gtest/gtest.h>

#include <fstream>

#include "core/temp_dir.hpp"
#include "scan/scan.hpp"

namespace cutover::scan {
namespace {

// Shaped like semgrep's output: levels on results, one rule with a default level.
const char* kLog = R"({
  "version": "2.1.0",
  "runs": [{
    "tool": {"driver": {"name": "semgrep", "rules": [
      {"id": "sql-injection", "defaultConfiguration": {"level": "error"}},
      {"id": "weak-hash"}
    ]}},
    "results": [
      {"ruleId": "sql-injection", "message": {"text": "tainted query"},
       "locations": [{"physicalLocation": {"artifactLocation": {"uri": "app/db.py"},
                                           "region": {"startLine": 42}}}]},
      {"ruleIndex": 1, "message": {"text": "md5"}},
      {"ruleId": "style", "level": "note", "message": {"text": "nit"}}
    ]
  }]
})";

TEST(SarifGate, LevelsComeFromResultThenRuleThenWarning) {
  auto s = evaluate_sarif(kLog, "semgrep.sarif", SarifLevel::Error);
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->results, 3u);
  EXPECT_EQ(s->by_level[static_cast<size_t>(SarifLevel::Error)], 1u);
  EXPECT_EQ(s->by_level[static_cast<size_t>(SarifLevel::Warning)], 1u);
  EXPECT_EQ(s->by_level[static_cast<size_t>(SarifLevel::Note)], 1u);
  EXPECT_EQ(s->blocking, 1u);
  ASSERT_EQ(s->listed.size(), 1u);
  EXPECT_EQ(s->listed[0], "app/db.py:42: error sql-injection [semgrep]: tainted query");

  EXPECT_EQ(evaluate_sarif(kLog, "x", SarifLevel::Warning)->blocking, 2u);
  EXPECT_EQ(evaluate_sarif(kLog, "x", SarifLevel::Note)->blocking, 3u);
  EXPECT_EQ(evaluate_sarif(kLog, "x", SarifLevel::None)->blocking, 0u);
}

TEST(SarifGate, BadLogsAreClearErrors) {
  EXPECT_NE(
      evaluate_sarif("{", "r.sarif", SarifLevel::Error).error().message.find("r.sarif: not JSON"),
      std::string::npos);
  EXPECT_NE(
      evaluate_sarif("{}", "r.sarif", SarifLevel::Error).error().message.find("no runs array"),
      std::string::npos);
  EXPECT_NE(evaluate_sarif(R"({"version": "1.0.0", "runs": []})", "r.sarif", SarifLevel::Error)
                .error()
                .message.find("expected \"2.1.0\""),
            std::string::npos);
  auto empty =
      evaluate_sarif(R"({"version": "2.1.0", "runs": [{"tool": {}}]})", "r", SarifLevel::Error);
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->results, 0u);
}

TEST(SarifGate, GateOnACheckoutAndOnOurOwnSarif) {
  core::TempDir dir;
  auto missing = run_sarif_gate(dir.path(), "reports/semgrep.sarif", SarifLevel::Error);
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().kind, core::ErrorKind::Conflict);
  EXPECT_NE(missing.error().message.find("cannot read reports/semgrep.sarif"), std::string::npos);

  std::filesystem::create_directories(dir.path() / "reports");
  std::ofstream(dir.path() / "reports" / "semgrep.sarif") << kLog;
  auto r = run_sarif_gate(dir.path(), "reports/semgrep.sarif", SarifLevel::Error);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, core::ErrorKind::Conflict);
  EXPECT_NE(r.error().message.find("1 of 3 results"), std::string::npos) << r.error().message;

  // cutover's own SARIF output gates like any other scanner's.
  ScanReport report;
  Finding f;
  f.rule_id = "github-pat";
  f.description = "GitHub personal access token (classic)";
  f.file = "a.py";
  f.start_line = f.end_line = 3;
  f.start_column = 5;
  f.end_column = 44;
  f.secret = f.match = "ghp_u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d";
  report.findings.push_back(f);
  std::ofstream(dir.path() / "ours.sarif")
      << format_report(report, default_rules(), Format::Sarif, true);
  r = run_sarif_gate(dir.path(), "ours.sarif", SarifLevel::Error);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("a.py:3: error github-pat [cutover]"), std::string::npos)
      << r.error().message;
}

}  // namespace
}  // namespace cutover::scan
