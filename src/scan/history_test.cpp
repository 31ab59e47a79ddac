// History mode and --since on git repositories made by the test (the `git` command builds them;
// the scanner reads them with libgit2).
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "core/temp_dir.hpp"
#include "scan/scan.hpp"

namespace cutover::scan {
namespace {

namespace fs = std::filesystem;

constexpr const char* kGhp = "ghp_u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d";
constexpr const char* kNpm = "npm_B3m03nbqnsGpWLuqIA1id6Vw5DQL05HA064G";

class HistoryScan : public ::testing::Test {
 protected:
  void SetUp() override {
    git("init -q -b main");
    auto s = Scanner::create(default_rules(), ScanOptions{.threads = 1});
    ASSERT_TRUE(s);
    scanner_ = std::move(*s);
  }
  void git(const std::string& args) {
    std::string cmd = "git -C '" + dir_.path().string() +
                      "' -c user.name=Tester -c user.email=tester@example.com "
                      "-c commit.gpgsign=false " +
                      args + " >/dev/null 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }
  std::string head() {
    std::string cmd = "git -C '" + dir_.path().string() + "' rev-parse HEAD";
    FILE* p = ::popen(cmd.c_str(), "r");
    char buf[64] = {};
    EXPECT_NE(std::fgets(buf, sizeof buf, p), nullptr);
    ::pclose(p);
    std::string s(buf);
    while (!s.empty() && s.back() == '\n') s.pop_back();
    return s;
  }
  void write(const std::string& rel, const std::string& content) {
    fs::create_directories((dir_.path() / rel).parent_path());
    std::ofstream(dir_.path() / rel, std::ios::binary) << content;
  }
  void commit(const std::string& message) {
    git("add -A");
    git("commit -q -m '" + message + "'");
  }

  core::TempDir dir_;
  std::unique_ptr<Scanner> scanner_;
};

TEST_F(HistoryScan, FindsSecretsAddedInAnyCommitEvenIfRemovedLater) {
  write("README", "hello\n");
  commit("first");
  const std::string first = head();
  write("app/config.js", std::string("line 1\nline 2\nconst token = \"") + kGhp + "\";\n");
  commit("add token");
  const std::string leaked = head();
  write("app/config.js", "line 1\nline 2\nconst token = process.env.TOKEN;\n");
  commit("remove token");

  // The working tree is clean now; the history is not.
  auto tree = scanner_->scan_directory(dir_.path());
  ASSERT_TRUE(tree);
  EXPECT_TRUE(tree->findings.empty());

  auto r = scanner_->scan_history(dir_.path(), std::nullopt);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->stats.commits_scanned, 3u);
  ASSERT_EQ(r->findings.size(), 1u);
  const Finding& f = r->findings[0];
  EXPECT_EQ(f.rule_id, "github-pat");
  EXPECT_EQ(f.commit, leaked);
  EXPECT_EQ(f.file, "app/config.js");
  EXPECT_EQ(f.start_line, 3);  // the line in the file, not in the diff
  EXPECT_EQ(f.author, "Tester");
  EXPECT_EQ(f.email, "tester@example.com");
  EXPECT_EQ(f.message, "add token");
  EXPECT_EQ(f.fingerprint(), leaked + ":app/config.js:github-pat:3");
  EXPECT_NE(first, leaked);
}

TEST_F(HistoryScan, SinceScansOnlyWhatTheNewCommitsAdded) {
  write("a.txt", std::string("old = \"") + kGhp + "\"\n");
  commit("old leak");
  const std::string base = head();
  // Unchanged old lines around the new one are not rescanned.
  write("a.txt", std::string("old = \"") + kGhp + "\"\nnew = \"" + kNpm + "\"\n");
  commit("new leak");

  auto all = scanner_->scan_history(dir_.path(), std::nullopt);
  ASSERT_TRUE(all);
  EXPECT_EQ(all->findings.size(), 2u);

  auto pushed = scanner_->scan_history(dir_.path(), base);
  ASSERT_TRUE(pushed) << pushed.error().message;
  EXPECT_EQ(pushed->stats.commits_scanned, 1u);
  ASSERT_EQ(pushed->findings.size(), 1u);
  EXPECT_EQ(pushed->findings[0].rule_id, "npm-token");
  EXPECT_EQ(pushed->findings[0].start_line, 2);

  auto nothing = scanner_->scan_history(dir_.path(), head());
  ASSERT_TRUE(nothing);
  EXPECT_EQ(nothing->stats.commits_scanned, 0u);
  EXPECT_TRUE(nothing->findings.empty());
}

TEST_F(HistoryScan, AllowlistedCommitsAndIgnoreFingerprints) {
  write("a.txt", std::string("x = \"") + kGhp + "\"\n");
  commit("leak");
  const std::string sha = head();
  auto rules = parse_rules(
      "[extend]\nuseDefault = true\n[allowlist]\ncommits = [\"" + sha + "\"]\n", "rules.toml");
  ASSERT_TRUE(rules) << rules.error().message;
  auto s = Scanner::create(std::move(*rules));
  ASSERT_TRUE(s);
  auto r = (*s)->scan_history(dir_.path(), std::nullopt);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->findings.empty());

  r = scanner_->scan_history(dir_.path(), std::nullopt);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->findings.size(), 1u);
  suppress(r->findings, {sha + ":a.txt:github-pat:1"}, nullptr);
  EXPECT_TRUE(r->findings.empty());
}

TEST_F(HistoryScan, ErrorsAreClear) {
  auto r = scanner_->scan_history(dir_.path(), std::nullopt);
  ASSERT_TRUE(r);  // no commits yet: nothing was added
  EXPECT_TRUE(r->findings.empty());

  write("a.txt", "a\n");
  commit("one");
  r = scanner_->scan_history(dir_.path(), std::string("no-such-rev"));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("--since no-such-rev: unknown revision"), std::string::npos)
      << r.error().message;
  core::TempDir plain;
  r = scanner_->scan_history(plain.path(), std::nullopt);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("not a git repository"), std::string::npos);
}

// The pipeline's `scan: secrets` gate: with the mirror, the execution's commit and the last commit
// that passed, it scans the lines the commits in between added (in a bare repository, at a commit
// that is not HEAD), falls back to the whole checkout when the earlier commit is gone, and caches
// the compiled rules.
TEST_F(HistoryScan, GateScansWhatThePushAddedInTheMirror) {
  write("README", "hello\n");
  commit("first");
  const std::string first = head();
  write("config.py", std::string("TOKEN = '") + kGhp + "'\n");
  commit("leak");
  const std::string leak = head();
  write("README", "hello again\n");
  commit("third");
  const std::string third = head();
  write("README", "later\n");
  commit("fourth, not part of this execution");

  core::TempDir mirror_parent, checkout, cache;
  const fs::path mirror = mirror_parent.path() / "source";
  ASSERT_EQ(std::system(("git clone -q --bare '" + dir_.path().string() + "' '" + mirror.string() +
                         "' >/dev/null 2>&1")
                            .c_str()),
            0);
  // The checkout the pipeline would run in: the tree of `third`.
  ASSERT_EQ(std::system(("git -C '" + dir_.path().string() + "' archive " + third +
                         " | tar -x -C '" + checkout.path().string() + "'")
                            .c_str()),
            0);
  std::vector<std::string> said;
  GateOptions options{.cache_dir = cache.path(),
                      .repository = mirror,
                      .commit = third,
                      .since = first,
                      .log = [&](const std::string& line) { said.push_back(line); }};
  auto r = run_gate(Gate::Secrets, checkout.path(), options);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, core::ErrorKind::Conflict);
  EXPECT_NE(r.error().message.find("config.py:1:10: github-pat in commit " + leak.substr(0, 7)),
            std::string::npos)
      << r.error().message;
  EXPECT_EQ(r.error().message.find(kGhp), std::string::npos) << "the secret is never shown";
  ASSERT_EQ(said.size(), 1u);
  EXPECT_NE(said[0].find("2 commit(s) since " + first.substr(0, 7)), std::string::npos) << said[0];
  size_t cached = 0;
  for (const auto& e : fs::directory_iterator(cache.path()))
    cached += e.path().extension() == ".hsdb";
  EXPECT_EQ(cached, 1u);

  // The leak passed (say, as a baselined secret): what came after it is clean.
  said.clear();
  options.since = leak;
  EXPECT_TRUE(run_gate(Gate::Secrets, checkout.path(), options));
  ASSERT_EQ(said.size(), 1u);
  EXPECT_NE(said[0].find("1 commit(s) since " + leak.substr(0, 7)), std::string::npos) << said[0];

  // The earlier commit is unknown (a force-push removed it): the whole checkout is scanned.
  said.clear();
  options.since = std::string(40, 'a');
  r = run_gate(Gate::Secrets, checkout.path(), options);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("config.py:1:10: github-pat ("), std::string::npos)
      << r.error().message;
  ASSERT_EQ(said.size(), 1u);
  EXPECT_NE(said[0].find("gone from the repository"), std::string::npos) << said[0];

  // A first execution has nothing to compare with.
  said.clear();
  options.since.clear();
  EXPECT_FALSE(run_gate(Gate::Secrets, checkout.path(), options));
  ASSERT_EQ(said.size(), 2u);
  EXPECT_NE(said[0].find("no earlier scanned commit"), std::string::npos) << said[0];
}

}  // namespace
}  // namespace cutover::scan
