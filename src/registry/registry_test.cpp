#include "registry/registry.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "core/fs.hpp"
#include "core/id.hpp"

namespace fs = std::filesystem;
using cutover::registry::Registry;

namespace {

void make_writable(const fs::path& p) {
  std::error_code ec;
  ::chmod(p.c_str(), 0755);
  for (auto it = fs::recursive_directory_iterator(p, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (!it->is_symlink(ec)) ::chmod(it->path().c_str(), 0755);
  }
}

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("cutover-registry-" + cutover::core::random_hex(6));
    src_ = root_ / "workspace";
    fs::create_directories(src_);
    auto r = Registry::open(root_ / "registry");
    ASSERT_TRUE(r.ok()) << r.error().message;
    reg_ = std::move(r).value();
  }
  void TearDown() override {
    make_writable(root_);
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  void write(const fs::path& base, const std::string& rel, const std::string& content,
             unsigned mode = 0644) {
    fs::create_directories((base / rel).parent_path());
    ASSERT_TRUE(cutover::core::write_file_atomic(base / rel, content, mode).ok());
  }
  void write(const std::string& rel, const std::string& content, unsigned mode = 0644) {
    write(src_, rel, content, mode);
  }

  fs::path root_;
  fs::path src_;
  std::unique_ptr<Registry> reg_;
};

TEST_F(RegistryTest, PutsIncludedPathsReadOnly) {
  write("dist/server", "#!/bin/sh\necho hi\n", 0755);
  write("dist/static/index.html", "<h1>hi</h1>");
  write("src/main.c", "int main(){}");
  ASSERT_EQ(::symlink("server", (src_ / "dist/current").c_str()), 0);
  auto a = reg_->put_directory(src_, {"dist/"});
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(a->digest.rfind("sha256:", 0), 0u);
  EXPECT_EQ(a->digest.size(), 7u + 64u);
  EXPECT_EQ(a->file_count, 3u);
  EXPECT_EQ(a->size_bytes, std::string("#!/bin/sh\necho hi\n").size() + 11u);
  EXPECT_TRUE(fs::exists(a->path / "dist/server"));
  EXPECT_TRUE(fs::exists(a->path / "dist/static/index.html"));
  EXPECT_FALSE(fs::exists(a->path / "src"));
  EXPECT_TRUE(fs::is_symlink(a->path / "dist/current"));
  EXPECT_TRUE(fs::exists(a->path.parent_path() / "manifest.json"));
  struct stat st {};
  ASSERT_EQ(::stat((a->path / "dist/server").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0555u);
  ASSERT_EQ(::stat((a->path / "dist/static/index.html").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0444u);

  auto got = reg_->get(a->digest);
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(got->path, a->path);
  EXPECT_EQ(got->file_count, a->file_count);
  EXPECT_EQ(got->size_bytes, a->size_bytes);
}

TEST_F(RegistryTest, SameContentSameDigestStoredOnce) {
  write("dist/a", "alpha");
  write("dist/b/c", "gamma");
  auto a1 = reg_->put_directory(src_, {"dist"});
  ASSERT_TRUE(a1.ok()) << a1.error().message;

  // Same content elsewhere, different timestamps: same digest, no second copy.
  fs::path other = root_ / "other";
  write(other, "dist/b/c", "gamma");
  write(other, "dist/a", "alpha");
  auto a2 = reg_->put_directory(other, {"./dist/"});
  ASSERT_TRUE(a2.ok()) << a2.error().message;
  EXPECT_EQ(a1->digest, a2->digest);
  EXPECT_EQ(a1->path, a2->path);
  size_t stored = 0;
  for (const auto& e : fs::directory_iterator(root_ / "registry/sha256")) {
    (void)e;
    ++stored;
  }
  EXPECT_EQ(stored, 1u);
  EXPECT_TRUE(fs::is_empty(root_ / "registry/tmp"));

  // One byte changes the digest.
  write(other, "dist/a", "alphb");
  auto a3 = reg_->put_directory(other, {"dist"});
  ASSERT_TRUE(a3.ok());
  EXPECT_NE(a3->digest, a1->digest);
}

TEST_F(RegistryTest, ExecBitMatters) {
  write("bin/tool", "content", 0644);
  auto plain = reg_->put_directory(src_, {"bin"});
  ASSERT_TRUE(plain.ok());
  ASSERT_EQ(::chmod((src_ / "bin/tool").c_str(), 0755), 0);
  auto exec = reg_->put_directory(src_, {"bin"});
  ASSERT_TRUE(exec.ok());
  EXPECT_NE(plain->digest, exec->digest);
  // Other mode bits do not.
  ASSERT_EQ(::chmod((src_ / "bin/tool").c_str(), 0700), 0);
  auto exec2 = reg_->put_directory(src_, {"bin"});
  ASSERT_TRUE(exec2.ok());
  EXPECT_EQ(exec->digest, exec2->digest);
}

TEST_F(RegistryTest, PathsAreCanonical) {
  // Including a file and its directory, or everything, yields deterministic manifests.
  write("dist/x", "1");
  auto a = reg_->put_directory(src_, {"dist", "dist/x"});
  auto b = reg_->put_directory(src_, {"dist/x", "dist/"});
  auto all = reg_->put_directory(src_, {});
  ASSERT_TRUE(a.ok() && b.ok() && all.ok());
  EXPECT_EQ(a->digest, b->digest);
  EXPECT_EQ(all->digest, a->digest);
  // A name that contains a newline cannot forge another entry.
  write("n/a", "1");
  write("n/b", "1");
  write("m/a\nf - 0 0 1:b", "1");
  auto forged = reg_->put_directory(src_, {"m"});
  ASSERT_TRUE(forged.ok()) << forged.error().message;
}

TEST_F(RegistryTest, TagsAreImmutable) {
  write("dist/a", "v1");
  auto v1 = reg_->put_directory(src_, {"dist"});
  write("dist/a", "v2");
  auto v2 = reg_->put_directory(src_, {"dist"});
  ASSERT_TRUE(v1.ok() && v2.ok());

  ASSERT_TRUE(reg_->tag("web", "abc1234", v1->digest).ok());
  EXPECT_TRUE(reg_->tag("web", "abc1234", v1->digest).ok());  // idempotent
  auto moved = reg_->tag("web", "abc1234", v2->digest);
  ASSERT_FALSE(moved.ok());
  EXPECT_NE(moved.error().message.find("immutable"), std::string::npos) << moved.error().message;
  auto resolved = reg_->resolve("web", "abc1234");
  ASSERT_TRUE(resolved.ok());
  EXPECT_EQ(*resolved, v1->digest);

  EXPECT_TRUE(reg_->tag("team/web", "v2", v2->digest).ok());
  EXPECT_EQ(*reg_->resolve("team/web", "v2"), v2->digest);
  EXPECT_FALSE(reg_->resolve("web", "nope").ok());
  EXPECT_FALSE(reg_->tag("../evil", "x", v1->digest).ok());
  EXPECT_FALSE(reg_->tag("web", "../x", v1->digest).ok());
  EXPECT_FALSE(reg_->tag("web", "x", "sha256:" + std::string(64, '0')).ok());
}

TEST_F(RegistryTest, ConcurrentTaggingHasOneWinner) {
  write("dist/a", "v1");
  auto v1 = reg_->put_directory(src_, {"dist"});
  write("dist/a", "v2");
  auto v2 = reg_->put_directory(src_, {"dist"});
  ASSERT_TRUE(v1.ok() && v2.ok());
  std::atomic<int> wins{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      if (reg_->tag("web", "race", i % 2 == 0 ? v1->digest : v2->digest).ok()) ++wins;
    });
  }
  for (auto& t : threads) t.join();
  // Exactly one digest won; all callers that asked for it succeeded, the others failed.
  auto winner = reg_->resolve("web", "race");
  ASSERT_TRUE(winner.ok());
  EXPECT_EQ(wins.load(), 4);
}

TEST_F(RegistryTest, ConcurrentPutsOfSameContentAgree) {
  write("dist/a", "same");
  write("dist/b/c", "content");
  std::vector<std::string> digests(4);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < digests.size(); ++i) {
    threads.emplace_back([&, i] {
      auto a = reg_->put_directory(src_, {"dist"});
      digests[i] = a.ok() ? a->digest : "error: " + a.error().message;
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& d : digests) EXPECT_EQ(d, digests[0]);
  auto got = reg_->get(digests[0]);
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(got->file_count, 2u);
  EXPECT_TRUE(fs::is_empty(root_ / "registry/tmp"));
}

TEST_F(RegistryTest, DetectsTampering) {
  write("dist/app", "original");
  write("dist/conf", "x");
  auto a = reg_->put_directory(src_, {"dist"});
  ASSERT_TRUE(a.ok());
  fs::path f = a->path / "dist/app";
  ASSERT_EQ(::chmod(f.c_str(), 0644), 0);
  {  // the directory stays read-only: rewrite the file in place
    FILE* fp = std::fopen(f.c_str(), "w");
    ASSERT_NE(fp, nullptr);
    std::fputs("tampered", fp);
    std::fclose(fp);
  }
  auto got = reg_->get(a->digest);
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.error().message.find("tampered"), std::string::npos) << got.error().message;
  EXPECT_NE(got.error().message.find("dist/app was modified"), std::string::npos)
      << got.error().message;
}

TEST_F(RegistryTest, DetectsAddedFile) {
  write("dist/app", "original");
  auto a = reg_->put_directory(src_, {"dist"});
  ASSERT_TRUE(a.ok());
  ASSERT_EQ(::chmod((a->path / "dist").c_str(), 0755), 0);
  write(a->path, "dist/extra", "x");
  auto got = reg_->get(a->digest);
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.error().message.find("dist/extra was added"), std::string::npos)
      << got.error().message;
}

TEST_F(RegistryTest, RefusesEscapes) {
  write("dist/a", "1");
  ASSERT_EQ(::symlink("/etc/passwd", (src_ / "dist/abs").c_str()), 0);
  auto abs = reg_->put_directory(src_, {"dist"});
  ASSERT_FALSE(abs.ok());
  EXPECT_NE(abs.error().message.find("dist/abs"), std::string::npos) << abs.error().message;
  fs::remove(src_ / "dist/abs");

  ASSERT_EQ(::symlink("../../secret", (src_ / "dist/up").c_str()), 0);
  auto up = reg_->put_directory(src_, {"dist"});
  ASSERT_FALSE(up.ok());
  EXPECT_NE(up.error().message.find("outside"), std::string::npos) << up.error().message;
  fs::remove(src_ / "dist/up");

  // A symlink to a sibling inside the artifact is fine.
  ASSERT_EQ(::symlink("../dist/a", (src_ / "dist/ok").c_str()), 0);
  EXPECT_TRUE(reg_->put_directory(src_, {"dist"}).ok());

  // A symlinked directory cannot lead an include out of the workspace.
  fs::create_directories(root_ / "outside/sub");
  write(root_ / "outside", "sub/f", "secret");
  ASSERT_EQ(::symlink((root_ / "outside").c_str(), (src_ / "link").c_str()), 0);
  EXPECT_FALSE(reg_->put_directory(src_, {"link/sub"}).ok());
  auto top_link = reg_->put_directory(src_, {"link"});
  EXPECT_FALSE(top_link.ok());

  EXPECT_FALSE(reg_->put_directory(src_, {"../x"}).ok());
  EXPECT_FALSE(reg_->put_directory(src_, {"dist/../../x"}).ok());
  EXPECT_FALSE(reg_->put_directory(src_, {"/etc"}).ok());
  auto missing = reg_->put_directory(src_, {"build/"});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("build"), std::string::npos);
  // Nothing half-written is left behind.
  EXPECT_TRUE(fs::is_empty(root_ / "registry/tmp"));
}

TEST_F(RegistryTest, UnknownDigest) {
  EXPECT_FALSE(reg_->get("sha256:" + std::string(64, 'a')).ok());
  EXPECT_FALSE(reg_->get("md5:abc").ok());
  EXPECT_FALSE(reg_->get("sha256:../../etc").ok());
}

}  // namespace
