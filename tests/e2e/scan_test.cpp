// `cutover scan`, black-box: exit codes 0/1/2, redaction, formats, baselines, .gitleaksignore,
// --config and --history/--since on a git repository made by the test.
#include <gtest/gtest.h>

#include <cstdlib>

#include <nlohmann/json.hpp>

#include "harness.hpp"

namespace cutover::e2e {
namespace {

namespace fs = std::filesystem;

constexpr const char* kGhp = "ghp_u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d";
constexpr const char* kNpm = "npm_B3m03nbqnsGpWLuqIA1id6Vw5DQL05HA064G";

class ScanCommand : public ::testing::Test {
 protected:
  ScanCommand() : dir_("cutover-e2e-scan"), out_("cutover-e2e-scan-out") {}
  CommandResult scan(std::vector<std::string> args) {
    args.insert(args.begin(), {CUTOVER_BIN, "scan"});
    // A private cache directory: the test must not depend on (or fill) the user's.
    return run(args, {{"XDG_CACHE_HOME", (out_.path() / "cache").string()}});
  }
  TempDir dir_, out_;
};

TEST_F(ScanCommand, ExitCodesRedactionAndFormats) {
  write_text(dir_.path() / "main.c", "int main(void) { return 0; }\n");
  auto clean = scan({dir_.path().string()});
  EXPECT_EQ(clean.exit_code, 0) << clean.err;
  EXPECT_NE(clean.out.find("0 findings"), std::string::npos) << clean.out;

  fs::create_directories(dir_.path() / "src");
  write_text(dir_.path() / "src" / "settings.py", std::string("TOKEN = \"") + kGhp + "\"\n");
  auto found = scan({dir_.path().string()});
  EXPECT_EQ(found.exit_code, 1);
  EXPECT_NE(found.out.find("src/settings.py:1:10: github-pat"), std::string::npos) << found.out;
  EXPECT_EQ(found.out.find(kGhp), std::string::npos) << "redacted by default";
  EXPECT_NE(scan({dir_.path().string(), "--no-redact"}).out.find(kGhp), std::string::npos);
  EXPECT_EQ(scan({dir_.path().string(), "--mode", "report"}).exit_code, 0);

  auto json = scan({dir_.path().string(), "--format", "json"});
  EXPECT_EQ(json.exit_code, 1);
  auto j = nlohmann::json::parse(json.out);
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0]["RuleID"], "github-pat");
  EXPECT_EQ(j[0]["Secret"], "REDACTED");

  auto sarif = scan({dir_.path().string(), "--format", "sarif"});
  EXPECT_EQ(sarif.exit_code, 1);
  auto s = nlohmann::json::parse(sarif.out);
  // What GitHub code scanning requires of an upload, beyond the schema (SarifMatchesTheSchema).
  EXPECT_EQ(s["version"], "2.1.0");
  ASSERT_TRUE(s["runs"].is_array());
  EXPECT_EQ(s["runs"][0]["tool"]["driver"]["name"], "cutover");
  for (const auto& rule : s["runs"][0]["tool"]["driver"]["rules"]) {
    EXPECT_TRUE(rule["id"].is_string());
    EXPECT_TRUE(rule["shortDescription"]["text"].is_string());
    const std::string sev = rule["properties"]["security-severity"];
    EXPECT_GT(std::stod(sev), 0.0);
    EXPECT_LE(std::stod(sev), 10.0);
  }
  const auto& res = s["runs"][0]["results"][0];
  EXPECT_TRUE(res["message"]["text"].is_string());
  EXPECT_EQ(res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"], "src/settings.py");
  EXPECT_GE(res["locations"][0]["physicalLocation"]["region"]["startLine"].get<int>(), 1);
  EXPECT_TRUE(res["partialFingerprints"].is_object());

  auto missing = scan({(dir_.path() / "nope").string()});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.err.find("no such directory"), std::string::npos) << missing.err;
  write_text(out_.path() / "bad.toml", "[[rules]]\nid = \"x\"\nregex = \"(\"\n");
  auto bad = scan({dir_.path().string(), "--config", (out_.path() / "bad.toml").string()});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("bad.toml:3:9: rules[0].regex: invalid regex"), std::string::npos)
      << bad.err;
}

TEST_F(ScanCommand, BaselineIgnoreFileAndCustomRules) {
  write_text(dir_.path() / "a.py", std::string("T = \"") + kGhp + "\"\n");
  auto first = scan({dir_.path().string(), "--format", "json"});
  write_text(out_.path() / "baseline.json", first.out);
  // The secret moves two lines down: still in the baseline.
  write_text(dir_.path() / "a.py", std::string("\n\nT = \"") + kGhp + "\"\n");
  EXPECT_EQ(scan({dir_.path().string(), "--baseline", (out_.path() / "baseline.json").string()})
                .exit_code,
            0);
  write_text(dir_.path() / ".gitleaksignore", "a.py:github-pat:3\n");
  EXPECT_EQ(scan({dir_.path().string()}).exit_code, 0);
  fs::remove(dir_.path() / ".gitleaksignore");

  write_text(dir_.path() / ".gitleaks.toml",
             "[extend]\nuseDefault = true\ndisabledRules = [\"github-pat\"]\n"
             "[[rules]]\nid = \"internal\"\nregex = '''itk_[0-9a-f]{16}'''\n");
  write_text(dir_.path() / "b.txt", "key itk_0123456789abcdef\n");
  auto custom = scan({dir_.path().string()});
  EXPECT_EQ(custom.exit_code, 1);
  EXPECT_NE(custom.out.find("b.txt:1:5: internal"), std::string::npos) << custom.out;
  EXPECT_EQ(custom.out.find("github-pat"), std::string::npos) << custom.out;
}

TEST_F(ScanCommand, HistoryAndSince) {
  const std::string git = "git -c user.name=T -c user.email=t@example.com -c commit.gpgsign=false ";
  sh(dir_.path(), "git init -q -b main && printf 'x = \"" + std::string(kGhp) +
                      "\"\\n' > a.txt && " + git + "add -A && " + git +
                      "commit -qm leak && rm a.txt && " + git + "add -A && " + git +
                      "commit -qm cleanup && git tag base && printf 'y = \"" + kNpm +
                      "\"\\n' > b.txt && " + git + "add -A && " + git + "commit -qm new");
  auto all = scan({dir_.path().string(), "--history", "--format", "json"});
  EXPECT_EQ(all.exit_code, 1) << all.err;
  auto j = nlohmann::json::parse(all.out);
  ASSERT_EQ(j.size(), 2u);
  for (const auto& f : j) EXPECT_EQ(f["Commit"].get<std::string>().size(), 40u);

  auto since = scan({dir_.path().string(), "--since", "base", "--format", "json"});
  EXPECT_EQ(since.exit_code, 1) << since.err;
  j = nlohmann::json::parse(since.out);
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0]["RuleID"], "npm-token");
  EXPECT_EQ(j[0]["Message"], "new");

  EXPECT_EQ(scan({dir_.path().string(), "--since", "HEAD"}).exit_code, 0);
  auto bad = scan({dir_.path().string(), "--since", "nope"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("--since nope: unknown revision"), std::string::npos) << bad.err;
}

// Every SARIF document cutover writes validates against the OASIS SARIF 2.1.0 JSON schema (the
// final rtm.5 text, which scripts/setup installs): findings of several rules, none, and history
// findings with commits. A document broken on purpose must fail, so the validator is live.
TEST_F(ScanCommand, SarifMatchesTheSchema) {
  const char* env = std::getenv("CUTOVER_SARIF_SCHEMA");
  const fs::path schema = env ? env : "/var/cache/cutover-dev/sarif-2.1.0-rtm.5.json";
  ASSERT_TRUE(fs::exists(schema)) << schema << " is missing: run scripts/setup";
  const std::string validator = std::string(CUTOVER_SOURCE_DIR) + "/tests/tools/validate_sarif.py";
  const auto validate = [&](const std::string& name, const std::string& text) {
    const fs::path file = out_.path() / name;
    write_text(file, text);
    return run({"python3", validator, schema.string(), file.string()});
  };

  auto empty = scan({dir_.path().string(), "--format", "sarif"});
  EXPECT_EQ(empty.exit_code, 0) << empty.err;
  auto r = validate("empty.sarif", empty.out);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;

  write_text(dir_.path() / "a.py", std::string("T = \"") + kGhp + "\"\n");
  write_text(dir_.path() / "b.ini", std::string("token=") + kNpm + "\n");
  write_text(dir_.path() / "key.pem",
             "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAvK2mN8ZqJ3Yb7aXwQv0dE1n6\n"
             "-----END RSA PRIVATE KEY-----\n");
  auto files = scan({dir_.path().string(), "--format", "sarif"});
  EXPECT_EQ(files.exit_code, 1) << files.err;
  auto doc = nlohmann::json::parse(files.out);
  EXPECT_GE(doc["runs"][0]["results"].size(), 2u) << files.out;
  r = validate("files.sarif", files.out);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;

  const std::string git = "git -c user.name=T -c user.email=t@example.com -c commit.gpgsign=false ";
  sh(dir_.path(), "git init -q -b main && " + git + "add -A && " + git + "commit -qm leak");
  auto history = scan({dir_.path().string(), "--history", "--format", "sarif"});
  EXPECT_EQ(history.exit_code, 1) << history.err;
  r = validate("history.sarif", history.out);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;

  // The validator rejects what the schema forbids: an unknown level and a missing message.
  doc["runs"][0]["results"][0]["level"] = "fatal";
  doc["runs"][0]["results"][0].erase("message");
  r = validate("broken.sarif", doc.dump());
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("runs/0/results/0"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace cutover::e2e
