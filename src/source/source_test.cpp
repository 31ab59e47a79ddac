#include "source/source.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/fs.hpp"
#include "core/id.hpp"

namespace fs = std::filesystem;
using cutover::source::GitSource;

namespace {

class SourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("cutover-source-" + cutover::core::random_hex(6));
    fs::create_directories(root_);
    repo_ = root_ / "app";
    fs::create_directories(repo_);
    git("init -q -b main");
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  void git(const std::string& args) {
    std::string cmd = "git -C '" + repo_.string() +
                      "' -c user.name=Tester -c user.email=tester@example.com "
                      "-c commit.gpgsign=false " +
                      args + " >/dev/null 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }
  void write(const std::string& rel, const std::string& content, unsigned mode = 0644) {
    fs::create_directories((repo_ / rel).parent_path());
    ASSERT_TRUE(cutover::core::write_file_atomic(repo_ / rel, content, mode).ok());
  }
  void commit(const std::string& message) {
    git("add -A");
    git("commit -q -m '" + message + "'");
  }
  std::unique_ptr<GitSource> open_source(const std::string& branch = "main") {
    auto s = GitSource::open(repo_.string(), branch, root_ / "mirror");
    EXPECT_TRUE(s.ok()) << s.error().message;
    return s.ok() ? std::move(s).value() : nullptr;
  }
  static std::string slurp(const fs::path& p) {
    auto r = cutover::core::read_file(p);
    return r.ok() ? *r : "<missing>";
  }

  fs::path root_;
  fs::path repo_;
};

TEST_F(SourceTest, FetchesHeadAndDetectsNewCommit) {
  write("README", "one\n");
  commit("first commit\n\nbody text");
  auto src = open_source();
  ASSERT_TRUE(src);
  auto h1 = src->fetch_head();
  ASSERT_TRUE(h1.ok()) << h1.error().message;
  ASSERT_TRUE(h1->has_value());
  const auto& c1 = **h1;
  EXPECT_EQ(c1.sha.size(), 40u);
  EXPECT_EQ(c1.short_sha, c1.sha.substr(0, 7));
  EXPECT_EQ(c1.message, "first commit");
  EXPECT_EQ(c1.author, "Tester <tester@example.com>");

  // Nothing new: same head.
  auto again = src->fetch_head();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->sha, c1.sha);

  write("README", "two\n");
  commit("second");
  auto h2 = src->fetch_head();
  ASSERT_TRUE(h2.ok()) << h2.error().message;
  EXPECT_NE((*h2)->sha, c1.sha);
  EXPECT_EQ((*h2)->message, "second");

  auto between = src->commits_between(c1.sha, (*h2)->sha);
  ASSERT_TRUE(between.ok()) << between.error().message;
  ASSERT_EQ(between->size(), 1u);
  EXPECT_EQ((*between)[0].sha, (*h2)->sha);
  auto all = src->commits_between("", (*h2)->sha);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 2u);
}

TEST_F(SourceTest, MirrorIsReusedAcrossOpens) {
  write("a", "1");
  commit("one");
  std::string sha;
  {
    auto src = open_source();
    ASSERT_TRUE(src);
    auto h = src->fetch_head();
    ASSERT_TRUE(h.ok() && h->has_value());
    sha = (*h)->sha;
  }
  auto src = open_source();
  ASSERT_TRUE(src);
  // The commit is already in the mirror: readable without fetching again.
  auto content = src->read_file(sha, "a");
  ASSERT_TRUE(content.ok()) << content.error().message;
  EXPECT_EQ(*content, "1");
}

TEST_F(SourceTest, CheckoutOfOlderCommitGivesOldTree) {
  write("app.txt", "v1\n");
  write("bin/run.sh", "#!/bin/sh\necho hi\n", 0755);
  write("sub/dir/deep.txt", "deep\n");
  ASSERT_EQ(::symlink("app.txt", (repo_ / "link").c_str()), 0);
  commit("v1");
  auto src = open_source();
  ASSERT_TRUE(src);
  auto h1 = src->fetch_head();
  ASSERT_TRUE(h1.ok() && h1->has_value());
  std::string old_sha = (*h1)->sha;

  write("app.txt", "v2\n");
  write("new.txt", "new\n");
  fs::remove(repo_ / "sub/dir/deep.txt");
  commit("v2");
  auto h2 = src->fetch_head();
  ASSERT_TRUE(h2.ok() && h2->has_value());
  ASSERT_NE((*h2)->sha, old_sha);

  fs::path dest = root_ / "work-old";
  auto r = src->checkout(old_sha, dest);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(slurp(dest / "app.txt"), "v1\n");
  EXPECT_EQ(slurp(dest / "sub/dir/deep.txt"), "deep\n");
  EXPECT_FALSE(fs::exists(dest / "new.txt"));
  EXPECT_FALSE(fs::exists(dest / ".git"));
  struct stat st {};
  ASSERT_EQ(::stat((dest / "bin/run.sh").c_str(), &st), 0);
  EXPECT_TRUE(st.st_mode & S_IXUSR);
  ASSERT_EQ(::stat((dest / "app.txt").c_str(), &st), 0);
  EXPECT_FALSE(st.st_mode & S_IXUSR);
  EXPECT_TRUE(fs::is_symlink(dest / "link"));
  EXPECT_EQ(fs::read_symlink(dest / "link"), "app.txt");

  fs::path dest_new = root_ / "work-new";
  ASSERT_TRUE(src->checkout((*h2)->sha, dest_new).ok());
  EXPECT_EQ(slurp(dest_new / "app.txt"), "v2\n");
  EXPECT_TRUE(fs::exists(dest_new / "new.txt"));

  // Abbreviated ids work; branch names and non-empty destinations are refused.
  ASSERT_TRUE(src->checkout(old_sha.substr(0, 10), root_ / "work-short").ok());
  EXPECT_FALSE(src->checkout("main", root_ / "work-branch").ok());
  EXPECT_FALSE(src->checkout(old_sha, dest).ok());
}

TEST_F(SourceTest, ReadFileAtCommit) {
  write("cutover.yaml", "version: 1\n");
  commit("config");
  auto src = open_source();
  ASSERT_TRUE(src);
  auto h = src->fetch_head();
  ASSERT_TRUE(h.ok() && h->has_value());
  auto yaml = src->read_file((*h)->sha, "cutover.yaml");
  ASSERT_TRUE(yaml.ok()) << yaml.error().message;
  EXPECT_EQ(*yaml, "version: 1\n");

  auto missing = src->read_file((*h)->sha, "nope/cutover.yaml");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(
      missing.error().message.find("nope/cutover.yaml not found at commit " + (*h)->short_sha),
      std::string::npos)
      << missing.error().message;

  auto unknown = src->read_file(std::string(40, 'a'), "cutover.yaml");
  EXPECT_FALSE(unknown.ok());
}

TEST_F(SourceTest, ForcePushReturnsNewHead) {
  write("f", "1");
  commit("one");
  write("f", "2");
  commit("two");
  auto src = open_source();
  ASSERT_TRUE(src);
  auto h1 = src->fetch_head();
  ASSERT_TRUE(h1.ok() && h1->has_value());
  std::string two = (*h1)->sha;

  git("reset -q --hard HEAD~1");
  write("f", "3");
  commit("three (rewritten)");
  auto h2 = src->fetch_head();
  ASSERT_TRUE(h2.ok()) << h2.error().message;
  ASSERT_TRUE(h2->has_value());
  EXPECT_NE((*h2)->sha, two);
  EXPECT_EQ((*h2)->message, "three (rewritten)");
  auto content = src->read_file((*h2)->sha, "f");
  ASSERT_TRUE(content.ok());
  EXPECT_EQ(*content, "3");
  // The commit that was force-pushed away stays readable from the mirror.
  auto old = src->read_file(two, "f");
  ASSERT_TRUE(old.ok()) << old.error().message;
  EXPECT_EQ(*old, "2");
}

TEST_F(SourceTest, MissingBranchIsNullopt) {
  write("f", "1");
  commit("one");
  auto src = open_source("release");
  ASSERT_TRUE(src);
  auto h = src->fetch_head();
  ASSERT_TRUE(h.ok()) << h.error().message;
  EXPECT_FALSE(h->has_value());

  // Once the branch appears, it is seen; once deleted, it is gone again (pruned).
  git("branch release");
  h = src->fetch_head();
  ASSERT_TRUE(h.ok());
  EXPECT_TRUE(h->has_value());
  git("branch -D release");
  h = src->fetch_head();
  ASSERT_TRUE(h.ok());
  EXPECT_FALSE(h->has_value());
}

TEST_F(SourceTest, FileUrlWorksAndBadInputIsAnError) {
  write("f", "1");
  commit("one");
  auto src = GitSource::open("file://" + repo_.string(), "main", root_ / "mirror-url");
  ASSERT_TRUE(src.ok()) << src.error().message;
  auto h = (*src)->fetch_head();
  ASSERT_TRUE(h.ok()) << h.error().message;
  EXPECT_TRUE(h->has_value());

  EXPECT_FALSE(GitSource::open((root_ / "does-not-exist").string(), "main", root_ / "m2").ok());
  EXPECT_FALSE(GitSource::open(repo_.string(), "bad..name", root_ / "m3").ok());
  auto unreachable = GitSource::open("file://" + (root_ / "gone").string(), "main", root_ / "m4");
  ASSERT_TRUE(unreachable.ok());
  auto fetched = (*unreachable)->fetch_head();
  EXPECT_FALSE(fetched.ok());
}

}  // namespace
