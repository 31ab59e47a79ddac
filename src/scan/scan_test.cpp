// The rule loader, allowlists, suppression, directory scanning, report formats and the gate.
#include "scan/scan.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/fs.hpp"
#include "core/temp_dir.hpp"

namespace cutover::scan {
namespace {

namespace fs = std::filesystem;

constexpr const char* kGhp = "ghp_u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d";
constexpr const char* kStripe = "sk_live_1Qh6yYTWmE4lBYOvfZ8UzDzV";

std::unique_ptr<Scanner> scanner_for(const std::string& toml) {
  auto rules = parse_rules(toml, "rules.toml");
  EXPECT_TRUE(rules) << rules.error().message;
  if (!rules) return nullptr;
  auto s = Scanner::create(std::move(*rules), ScanOptions{.threads = 2});
  EXPECT_TRUE(s) << s.error().message;
  return s ? std::move(*s) : nullptr;
}

std::vector<std::string> ids(const std::vector<Finding>& fs) {
  std::vector<std::string> out;
  for (const auto& f : fs) out.push_back(f.rule_id);
  return out;
}

void write(const fs::path& p, const std::string& content) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << content;
}

// ---- loader ----

TEST(RulesLoader, ParsesRulesAndAllowlists) {
  auto rules = parse_rules(R"(
title = "team rules"
[[rules]]
id = "internal-token"
description = "Internal service token"
regex = '''itk_([a-z0-9]{24})'''
secretGroup = 1
entropy = 2.5
keywords = ["ITK_"]
path = '''\.env$'''
tags = ["internal"]
[[rules.allowlists]]
condition = "AND"
regexTarget = "line"
regexes = ['''test''']
paths = ['''^fixtures/''']
[allowlist]
stopwords = ["sample"]
)",
                           "rules.toml");
  ASSERT_TRUE(rules) << rules.error().message;
  ASSERT_EQ(rules->rules.size(), 1u);
  const Rule& r = rules->rules[0];
  EXPECT_EQ(r.id, "internal-token");
  EXPECT_EQ(r.secret_group, 1);
  EXPECT_DOUBLE_EQ(r.entropy, 2.5);
  EXPECT_EQ(r.keywords, std::vector<std::string>{"itk_"});  // lower-cased like gitleaks
  EXPECT_EQ(r.path, "\\.env$");
  ASSERT_EQ(r.allowlists.size(), 1u);
  EXPECT_EQ(r.allowlists[0].condition, AllowlistCondition::And);
  EXPECT_EQ(r.allowlists[0].regex_target, RegexTarget::Line);
  ASSERT_EQ(rules->allowlists.size(), 1u);
  EXPECT_EQ(rules->allowlists[0].stopwords, std::vector<std::string>{"sample"});
}

TEST(RulesLoader, ErrorsSayWhereAndWhat) {
  struct Case {
    std::string toml, expected;
  };
  const std::vector<Case> cases = {
      {"[[rules]]\nid = \"a\"\nregex = \"(unclosed\"\n",
       "rules.toml:3:9: rules[0].regex: invalid regex"},
      {"[[rules]]\nid = \"a\"\nregx = \"x\"\n", "rules.toml:3:8: rules[0].regx: unknown key"},
      {"[[rules]]\ndescription = \"no id\"\nregex = \"x\"\n",
       "rules.toml:1:1: rules[0]: id is required"},
      {"[[rules]]\nid = \"a\"\n", "needs a regex, a path or both"},
      {"[[rules]]\nid = \"a\"\nregex = \"(x)\"\nsecretGroup = 2\n",
       "secretGroup 2 but the regex has 1 groups"},
      {"[[rules]]\nid = \"a\"\nregex = \"x\"\nentropy = \"high\"\n",
       "rules.toml:4:11: rules[0].entropy must be a number"},
      {"[[rules]]\nid = \"a\"\nregex = \"x\"\n[[rules]]\nid = \"a\"\nregex = \"y\"\n",
       "duplicate id \"a\""},
      {"[allowlist]\ndescription = \"empty\"\n", "allowlist must list at least one of"},
      {"[allowlist]\ncondition = \"XOR\"\nregexes = [\"x\"]\n", "must be \"OR\" or \"AND\""},
      {"[extend]\nuseDefault = \"yes\"\n",
       "rules.toml:2:14: extend.useDefault must be true or false"},
      {"[extend]\npath = \"missing.toml\"\n", "extend.path: cannot"},
      {"rules = 3\n", "rules must be an array of tables"},
      {"[[rules]]\nid = \"a\"\nregex = 'x\n", "rules.toml:3:"},
      {"[[allowlists]]\ntargetRules = [\"nope\"]\nregexes = [\"x\"]\n", "unknown rule \"nope\""},
  };
  for (const auto& c : cases) {
    auto r = parse_rules(c.toml, "rules.toml");
    ASSERT_FALSE(r) << c.toml;
    EXPECT_NE(r.error().message.find(c.expected), std::string::npos)
        << "got: " << r.error().message << "\nwanted: " << c.expected;
  }
}

TEST(RulesLoader, ExtendDefaultDisablesAndOverrides) {
  auto rules = parse_rules(R"(
[extend]
useDefault = true
disabledRules = ["generic-api-key", "jwt"]
[[rules]]
id = "github-pat"
[[rules.allowlists]]
stopwords = ["u8jz"]
[[rules]]
id = "mine"
regex = '''mine_[0-9]{8}'''
)",
                           "rules.toml");
  ASSERT_TRUE(rules) << rules.error().message;
  bool has_generic = false, has_mine = false, has_aws = false;
  for (const auto& r : rules->rules) {
    has_generic = has_generic || r.id == "generic-api-key" || r.id == "jwt";
    has_mine = has_mine || r.id == "mine";
    has_aws = has_aws || r.id == "aws-access-key-id";
  }
  EXPECT_FALSE(has_generic);
  EXPECT_TRUE(has_mine);
  EXPECT_TRUE(has_aws);
  auto s = Scanner::create(std::move(*rules));
  ASSERT_TRUE(s);
  // The override added an allowlist to the default github-pat rule, regex kept.
  EXPECT_TRUE((*s)->scan_text(std::string("t = ") + kGhp + "\n", "a").empty());
  EXPECT_EQ(ids((*s)->scan_text("ghp_AAAAbbbbCCCCddddEEEEffffGGGGhhhh1234\nmine_12345678\n", "a")),
            (std::vector<std::string>{"github-pat", "mine"}));
}

TEST(RulesLoader, ExtendPathIsRelativeToTheFile) {
  core::TempDir dir;
  write(dir.path() / "base" / "base.toml",
        "[[rules]]\nid = \"base-rule\"\nregex = '''base_[0-9]{6}'''\n");
  write(
      dir.path() / "rules.toml",
      "[extend]\npath = \"base/base.toml\"\n[[rules]]\nid = \"own\"\nregex = '''own_[0-9]{6}'''\n");
  auto rules = load_rules(dir.path() / "rules.toml");
  ASSERT_TRUE(rules) << rules.error().message;
  auto s = Scanner::create(std::move(*rules));
  ASSERT_TRUE(s);
  EXPECT_EQ(ids((*s)->scan_text("base_123456 own_654321", "x")),
            (std::vector<std::string>{"base-rule", "own"}));
}

// ---- detection order ----

TEST(Detection, KeywordsGateTheRule) {
  auto s = scanner_for(
      "[[rules]]\nid = \"hex\"\nregex = '''\\b([0-9a-f]{32})\\b'''\nkeywords = "
      "[\"digest_secret\"]\n");
  const std::string hex = "3f8a9c0d1e2b4a5968778695a4b3c2d1";
  EXPECT_TRUE(s->scan_text("checksum " + hex + "\n", "a").empty());
  EXPECT_EQ(s->scan_text("DIGEST_SECRET " + hex + "\n", "a").size(), 1u);
}

TEST(Detection, PathRulesAndPathOnlyRules) {
  auto s = scanner_for(R"(
[[rules]]
id = "env-token"
regex = '''TOKEN=(\S{8,})'''
path = '''\.env$'''
[[rules]]
id = "keystore"
description = "Java keystore"
path = '''\.jks$'''
)");
  EXPECT_EQ(s->scan_text("TOKEN=abcdefgh12\n", "app/.env").size(), 1u);
  EXPECT_TRUE(s->scan_text("TOKEN=abcdefgh12\n", "app/README").empty());
  auto ks = s->scan_text("whatever", "certs/prod.jks");
  ASSERT_EQ(ks.size(), 1u);
  EXPECT_EQ(ks[0].rule_id, "keystore");
  EXPECT_EQ(ks[0].match, "file detected: certs/prod.jks");
}

TEST(Detection, SecretGroupFirstNonEmptyGroupAndEntropy) {
  auto s = scanner_for(R"(
[[rules]]
id = "grouped"
regex = '''(?:user=(\w+)|pass=(\w+))'''
[[rules]]
id = "second"
regex = '''(k)ey=(\w{6,})'''
secretGroup = 2
entropy = 2.0
)");
  auto f = s->scan_text("pass=hunter2\n", "a");
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].secret, "hunter2");  // group 1 is empty: the first non-empty group
  f = s->scan_text("key=Zx81Qw\nkey=aaaaaaaa\n", "a");
  ASSERT_EQ(f.size(), 1u);  // aaaaaaaa has entropy 0 <= 2.0
  EXPECT_EQ(f[0].secret, "Zx81Qw");
  EXPECT_EQ(f[0].start_line, 1);
  EXPECT_EQ(f[0].start_column, 1);
  EXPECT_EQ(f[0].end_column, 10);
  EXPECT_NEAR(shannon_entropy("Zx81Qw"), std::log2(6.0), 1e-9);
  EXPECT_DOUBLE_EQ(shannon_entropy("aaaa"), 0.0);
}

TEST(Detection, AllowlistsOrAndTargetsStopwordsCommits) {
  auto s = scanner_for(R"(
[[rules]]
id = "tok"
regex = '''tok_([A-Za-z0-9]{10})'''
[[rules.allowlists]]
regexes = ['''^FAKE''']
[[rules.allowlists]]
condition = "AND"
regexTarget = "line"
regexes = ['''# test fixture''']
paths = ['''^tests/''']
[[rules.allowlists]]
regexTarget = "match"
regexes = ['''^tok_Match''']
[[rules.allowlists]]
commits = ["c0ffee"]
[allowlist]
stopwords = ["dummy"]
paths = ['''(^|/)vendor/''']
)");
  EXPECT_TRUE(s->scan_text("tok_FAKE123456\n", "a").empty());  // regex on the secret
  EXPECT_TRUE(s->scan_text("tok_MatchAbcde\n", "a").empty());  // regex on the match
  EXPECT_TRUE(s->scan_text("tok_xxDUMMYxx1\n", "a").empty());  // global stopword, any case
  EXPECT_TRUE(s->scan_text("tok_Abcdefgh12\n", "x/vendor/lib.c").empty());  // global path
  // AND: both the line regex and the path must hold.
  EXPECT_TRUE(s->scan_text("tok_Abcdefgh12 # test fixture\n", "tests/a").empty());
  EXPECT_EQ(s->scan_text("tok_Abcdefgh12 # test fixture\n", "src/a").size(), 1u);
  EXPECT_EQ(s->scan_text("tok_Abcdefgh12\n", "tests/a").size(), 1u);
  // Commits apply to history findings only.
  EXPECT_TRUE(s->scan_text("tok_Abcdefgh12\n", "a", "c0ffee").empty());
  EXPECT_EQ(s->scan_text("tok_Abcdefgh12\n", "a", "beef").size(), 1u);
}

TEST(Detection, GitleaksAllowComment) {
  auto s = Scanner::create(default_rules());
  ASSERT_TRUE(s);
  EXPECT_TRUE((*s)->scan_text(std::string("t = \"") + kGhp + "\" # gitleaks:allow\n", "a").empty());
  EXPECT_EQ((*s)->scan_text(std::string("t = \"") + kGhp + "\"\n# gitleaks:allow\n", "a").size(),
            1u);
}

TEST(Detection, RegexHyperscanCannotTakeIsConfirmedByRe2Alone) {
  // \C (any byte) and possessive forms are not Hyperscan syntax; a backreference-free RE2
  // pattern that Hyperscan rejects still works.
  auto s = scanner_for("[[rules]]\nid = \"anybyte\"\nregex = '''zz\\Cqq'''\n");
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->scan_text("..zz!qq..", "a").size(), 1u);
  EXPECT_TRUE(s->scan_text("..zzqq..", "a").empty());
}

TEST(Detection, ManyPrefilterHitsStillFindEverything) {
  auto s = scanner_for("[[rules]]\nid = \"n\"\nregex = '''\\bn([0-9]{4})x'''\n");
  std::string text;
  for (int i = 0; i < 10000; ++i)
    text += "n" + std::to_string(1000 + i % 9000) + (i % 2 ? "x " : "y ");
  EXPECT_EQ(s->scan_text(text, "a").size(), 5000u);
}

TEST(Detection, CompiledDatabasesAreCachedByRuleHash) {
  core::TempDir cache;
  const std::string toml = R"([[rules]]
id = "anybyte"
regex = '''zz\Cqq'''
[[rules]]
id = "tok"
regex = '''tok_[0-9]{6}'''
keywords = ["tok_"]
)";
  const auto make = [&] {
    auto rules = parse_rules(toml, "rules.toml");
    EXPECT_TRUE(rules);
    auto s =
        Scanner::create(std::move(*rules), ScanOptions{.threads = 1, .cache_dir = cache.path()});
    EXPECT_TRUE(s);
    return std::move(*s);
  };
  const std::string text = "zz!qq tok_123456\n";
  auto first = make();
  ASSERT_EQ(std::distance(fs::directory_iterator(cache.path()), fs::directory_iterator()), 1);
  const fs::path file = fs::directory_iterator(cache.path())->path();
  EXPECT_EQ(file.extension(), ".hsdb");
  const auto expected = ids(first->scan_text(text, "a"));
  EXPECT_EQ(expected, (std::vector<std::string>{"anybyte", "tok"}));
  // Loaded from the cache: same findings, including the rule Hyperscan rejected.
  EXPECT_EQ(ids(make()->scan_text(text, "a")), expected);
  // A damaged cache file is ignored and rewritten.
  write(file, "cutover-hsdb 1\n-\ngarbage");
  EXPECT_EQ(ids(make()->scan_text(text, "a")), expected);
  EXPECT_GT(fs::file_size(file), 100u);
}

// ---- directory scans, suppression ----

class DirectoryScan : public ::testing::Test {
 protected:
  void SetUp() override {
    write(dir_.path() / "src" / "config.py", std::string("GITHUB = \"") + kGhp + "\"\n");
    write(dir_.path() / "deep" / "a" / "b" / "pay.rb",
          std::string("\n\nkey = '") + kStripe + "'\n");
    write(dir_.path() / "clean.txt", "nothing to see\n");
    write(dir_.path() / "image.bin", std::string("\0\1\2", 3) + kGhp);
    write(dir_.path() / ".git" / "config", kGhp);
    std::error_code ec;
    fs::create_symlink(dir_.path() / "src" / "config.py", dir_.path() / "link.py", ec);
    auto s = Scanner::create(default_rules(), ScanOptions{.threads = 2, .max_file_size = 1 << 16});
    ASSERT_TRUE(s);
    scanner_ = std::move(*s);
  }
  core::TempDir dir_;
  std::unique_ptr<Scanner> scanner_;
};

TEST_F(DirectoryScan, FindsSecretsSkipsBinariesHugeFilesGitAndSymlinks) {
  write(dir_.path() / "huge.txt", std::string(1 << 17, 'a') + kGhp);
  auto r = scanner_->scan_directory(dir_.path());
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->findings.size(), 2u);
  EXPECT_EQ(r->findings[0].file, "deep/a/b/pay.rb");
  EXPECT_EQ(r->findings[0].rule_id, "stripe-secret-key");
  EXPECT_EQ(r->findings[0].start_line, 3);
  EXPECT_EQ(r->findings[1].file, "src/config.py");
  EXPECT_EQ(r->findings[1].fingerprint(), "src/config.py:github-pat:1");
  EXPECT_EQ(r->stats.files_scanned, 3u);
  EXPECT_EQ(r->stats.skipped_binary, 1u);
  EXPECT_EQ(r->stats.skipped_large, 1u);
}

TEST_F(DirectoryScan, ErrorsForAMissingDirectory) {
  auto r = scanner_->scan_directory(dir_.path() / "nope");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("no such directory"), std::string::npos);
}

TEST_F(DirectoryScan, GitleaksIgnoreFingerprints) {
  write(dir_.path() / ".gitleaksignore", "# reviewed\nsrc/config.py:github-pat:1\n\n");
  auto ignored = load_ignore_file(dir_.path() / ".gitleaksignore");
  ASSERT_TRUE(ignored);
  auto r = scanner_->scan_directory(dir_.path());
  ASSERT_TRUE(r);
  suppress(r->findings, *ignored, nullptr);
  ASSERT_EQ(r->findings.size(), 1u);
  EXPECT_EQ(r->findings[0].rule_id, "stripe-secret-key");
}

TEST_F(DirectoryScan, BaselineSurvivesMovedLinesButNotNewSecretsOrFiles) {
  auto first = scanner_->scan_directory(dir_.path());
  ASSERT_TRUE(first);
  core::TempDir out;  // outside the scanned tree: its hashes look like secrets to generic-api-key
  write(out.path() / "baseline.json", format_report(*first, default_rules(), Format::Json, true));
  auto baseline = load_baseline(out.path() / "baseline.json");
  ASSERT_TRUE(baseline) << baseline.error().message;

  // Move the secret down three lines; copy it into a new file; add a new secret.
  write(dir_.path() / "src" / "config.py",
        std::string("\n\n\nGITHUB = \"") + kGhp +
            "\"\nOTHER = \"ghp_AAAAbbbbCCCCddddEEEEffffGGGGhhhh9999\"\n");
  write(dir_.path() / "copy.py", std::string("x = \"") + kGhp + "\"\n");
  auto second = scanner_->scan_directory(dir_.path());
  ASSERT_TRUE(second);
  suppress(second->findings, {}, &*baseline);
  ASSERT_EQ(second->findings.size(), 2u);
  EXPECT_EQ(second->findings[0].file, "copy.py");
  EXPECT_EQ(second->findings[1].secret, "ghp_AAAAbbbbCCCCddddEEEEffffGGGGhhhh9999");

  write(out.path() / "bad.json", "{\"not\": \"an array\"}");
  EXPECT_FALSE(load_baseline(out.path() / "bad.json"));
  write(out.path() / "redacted.json",
        "[{\"RuleID\": \"x\", \"File\": \"f\", \"Secret\": \"REDACTED\"}]");
  auto r = load_baseline(out.path() / "redacted.json");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("SecretSHA256"), std::string::npos);
}

// ---- formats ----

TEST_F(DirectoryScan, JsonIsGitleaksShapedAndRedactedByDefault) {
  auto r = scanner_->scan_directory(dir_.path());
  ASSERT_TRUE(r);
  const std::string redacted = format_report(*r, default_rules(), Format::Json, true);
  EXPECT_EQ(redacted.find(kGhp), std::string::npos);
  auto j = nlohmann::json::parse(redacted);
  ASSERT_EQ(j.size(), 2u);
  for (const char* key : {"Description", "StartLine", "EndLine", "StartColumn", "EndColumn",
                          "Match", "Secret", "File", "SymlinkFile", "Commit", "Entropy", "Author",
                          "Email", "Date", "Message", "Tags", "RuleID", "Fingerprint"}) {
    EXPECT_TRUE(j[1].contains(key)) << key;
  }
  EXPECT_EQ(j[1]["Secret"], "REDACTED");
  EXPECT_EQ(j[1]["Match"], "REDACTED");
  const std::string clear = format_report(*r, default_rules(), Format::Json, false);
  EXPECT_NE(clear.find(kGhp), std::string::npos);

  const std::string text = format_report(*r, default_rules(), Format::Text, true);
  EXPECT_EQ(text.find(kGhp), std::string::npos);
  EXPECT_NE(text.find("src/config.py:1:11: github-pat"), std::string::npos) << text;
  EXPECT_NE(text.find("2 findings; 3 files"), std::string::npos) << text;
}

TEST_F(DirectoryScan, SarifHasRulesLocationsFingerprintsAndSeverity) {
  auto r = scanner_->scan_directory(dir_.path());
  ASSERT_TRUE(r);
  const std::string out = format_report(*r, default_rules(), Format::Sarif, true);
  EXPECT_EQ(out.find(kGhp), std::string::npos);
  auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["version"], "2.1.0");
  const auto& run = j["runs"][0];
  EXPECT_EQ(run["tool"]["driver"]["rules"].size(), default_rules().rules.size());
  ASSERT_EQ(run["results"].size(), 2u);
  const auto& res = run["results"][1];
  EXPECT_EQ(res["ruleId"], "github-pat");
  EXPECT_EQ(run["tool"]["driver"]["rules"][res["ruleIndex"].get<size_t>()]["id"], "github-pat");
  EXPECT_EQ(res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"], "src/config.py");
  EXPECT_EQ(res["locations"][0]["physicalLocation"]["region"]["startLine"], 1);
  EXPECT_EQ(res["partialFingerprints"]["secretHash/v1"].get<std::string>().size(), 64u);
  const auto& props = run["tool"]["driver"]["rules"][res["ruleIndex"].get<size_t>()]["properties"];
  EXPECT_TRUE(props.contains("security-severity"));
}

// ---- the pipeline gate ----

TEST(Gate, SecretsGatePassesCleanAndBlocksWithARedactedList) {
  core::TempDir dir;
  write(dir.path() / "main.c", "int main(void) { return 0; }\n");
  EXPECT_TRUE(run_gate(Gate::Secrets, dir.path()));

  write(dir.path() / "deploy.sh", std::string("export STRIPE=") + kStripe + "\n");
  auto r = run_gate(Gate::Secrets, dir.path());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, core::ErrorKind::Conflict);
  EXPECT_NE(r.error().message.find("1 secret found"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("deploy.sh:1:15: stripe-secret-key"), std::string::npos)
      << r.error().message;
  EXPECT_EQ(r.error().message.find(kStripe), std::string::npos);

  // The repository's .gitleaksignore and .gitleaks.toml apply.
  write(dir.path() / ".gitleaksignore", "deploy.sh:stripe-secret-key:1\n");
  EXPECT_TRUE(run_gate(Gate::Secrets, dir.path()));
  fs::remove(dir.path() / ".gitleaksignore");
  write(dir.path() / ".gitleaks.toml",
        "[extend]\nuseDefault = true\ndisabledRules = [\"stripe-secret-key\"]\n");
  EXPECT_TRUE(run_gate(Gate::Secrets, dir.path()));
  write(dir.path() / ".gitleaks.toml", "[[rules]]\nid = 1\n");
  r = run_gate(Gate::Secrets, dir.path());
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find(".gitleaks.toml:2:6: rules[0].id must be a string"),
            std::string::npos)
      << r.error().message;
}

}  // namespace
}  // namespace cutover::scan
