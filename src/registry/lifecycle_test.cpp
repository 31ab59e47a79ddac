#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>

#include "core/fs.hpp"
#include "core/id.hpp"
#include "registry/registry.hpp"

namespace fs = std::filesystem;
using cutover::registry::ArtifactEntry;
using cutover::registry::plan_retention;
using cutover::registry::Registry;
using cutover::registry::ReleaseRef;
using cutover::registry::Retention;
using cutover::registry::RetentionInput;

namespace {

std::string d(int i) { return "sha256:" + std::string(63, '0') + std::to_string(i % 10); }

// Releases r1..rN of service "web" with artifacts d(1)..d(N), r1 oldest.
std::vector<ReleaseRef> web_releases(int n) {
  std::vector<ReleaseRef> out;
  for (int i = 1; i <= n; ++i) out.push_back({"r" + std::to_string(i), "web", d(i), i * 1000});
  return out;
}

std::vector<ArtifactEntry> artifacts(int n) {
  std::vector<ArtifactEntry> out;
  for (int i = 1; i <= n; ++i) out.push_back({d(i), 10, i * 1000, {}});
  return out;
}

struct Case {
  const char* name;
  RetentionInput in;
  int artifact_count;
  std::map<int, Retention> expected;  // artifact index -> retention
};

TEST(LifecycleTest, PlanTable) {
  using R = Retention;
  std::vector<Case> cases;
  {
    RetentionInput in;
    in.keep = 3;
    in.releases = web_releases(6);
    cases.push_back({"last N per service",
                     in,
                     6,
                     {{1, R::Removable},
                      {2, R::Removable},
                      {3, R::Removable},
                      {4, R::Kept},
                      {5, R::Kept},
                      {6, R::Kept}}});
  }
  {
    RetentionInput in;
    in.keep = 2;
    in.releases = web_releases(6);
    in.live = {"r1"};  // rolled back to the oldest
    in.rollback_targets = {"r2"};
    cases.push_back({"live and rollback target beyond N",
                     in,
                     6,
                     {{1, R::Live},
                      {2, R::RollbackTarget},
                      {3, R::Removable},
                      {4, R::Removable},
                      {5, R::Kept},
                      {6, R::Kept}}});
  }
  {
    RetentionInput in;
    in.keep = 1;
    in.releases = web_releases(4);
    in.in_progress = {"r2"};  // a rollback redeploying r2
    in.live = {"r4", "r3"};   // green being installed, blue serving
    cases.push_back({"in progress",
                     in,
                     4,
                     {{1, R::Removable}, {2, R::InProgress}, {3, R::Live}, {4, R::Live}}});
  }
  {
    RetentionInput in;
    in.keep = 2;
    in.releases = web_releases(3);
    // A second service that re-used web's oldest artifact.
    in.releases.push_back({"a1", "api", d(1), 500});
    cases.push_back(
        {"last N counts each service", in, 3, {{1, R::Kept}, {2, R::Kept}, {3, R::Kept}}});
  }
  {
    RetentionInput in;
    in.keep = 1;
    in.releases = web_releases(2);
    in.protect_since_unix_ms = 3000;  // an execution started at 3 s may tag artifacts 3 and 4
    cases.push_back({"untagged artifacts of an execution in progress",
                     in,
                     4,
                     {{1, R::Removable}, {2, R::Kept}, {3, R::Recent}, {4, R::Recent}}});
  }
  {
    RetentionInput in;
    in.keep = 0;
    in.releases = web_releases(3);
    in.live = {"r3"};
    in.rollback_targets = {"r3"};  // live wins over rollback target
    cases.push_back({"keep 0 keeps only what runs",
                     in,
                     3,
                     {{1, R::Removable}, {2, R::Removable}, {3, R::Live}}});
  }
  {
    RetentionInput in;
    in.keep = 10;
    in.releases = web_releases(2);
    cases.push_back(
        {"artifacts no release names", in, 3, {{1, R::Kept}, {2, R::Kept}, {3, R::Removable}}});
  }
  for (const auto& c : cases) {
    auto plan = plan_retention(artifacts(c.artifact_count), c.in);
    ASSERT_EQ(plan.size(), static_cast<size_t>(c.artifact_count)) << c.name;
    for (const auto& [i, want] : c.expected) {
      EXPECT_EQ(plan.at(d(i)), want)
          << c.name << ": artifact " << i << " is " << cutover::registry::to_string(plan.at(d(i)));
    }
  }
}

void make_writable(const fs::path& p) {
  std::error_code ec;
  ::chmod(p.c_str(), 0755);
  for (auto it = fs::recursive_directory_iterator(p, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (!it->is_symlink(ec)) ::chmod(it->path().c_str(), 0755);
  }
}

TEST(LifecycleTest, ListAndRemove) {
  const fs::path root = fs::temp_directory_path() / ("cutover-gc-" + cutover::core::random_hex(6));
  fs::create_directories(root / "ws" / "dist");
  auto reg = Registry::open(root / "registry");
  ASSERT_TRUE(reg.ok());
  std::vector<std::string> digests;
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(cutover::core::write_file_atomic(root / "ws" / "dist" / "app",
                                                 "version " + std::to_string(i), 0755)
                    .ok());
    auto a = (*reg)->put_directory(root / "ws", {"dist"});
    ASSERT_TRUE(a.ok());
    ASSERT_TRUE((*reg)->tag("web", "c" + std::to_string(i), a->digest).ok());
    digests.push_back(a->digest);
  }
  auto listed = (*reg)->list();
  ASSERT_TRUE(listed.ok()) << listed.error().message;
  ASSERT_EQ(listed->size(), 2u);
  for (const auto& a : *listed) {
    ASSERT_EQ(a.tags.size(), 1u);
    EXPECT_EQ(a.tags[0], a.digest == digests[0] ? "web:c0" : "web:c1");
    EXPECT_GT(a.size_bytes, 0u);
    EXPECT_GT(a.put_unix_ms, 0);
  }
  // Put again since the plan: kept.
  EXPECT_FALSE((*reg)->remove(digests[0], 0).ok());
  auto freed = (*reg)->remove(digests[0], INT64_MAX);
  ASSERT_TRUE(freed.ok()) << freed.error().message;
  EXPECT_GT(*freed, 0u);
  EXPECT_FALSE((*reg)->get(digests[0]).ok());
  EXPECT_TRUE((*reg)->get(digests[1]).ok());
  listed = (*reg)->list();
  ASSERT_EQ(listed->size(), 1u);
  // The tag stays bound to the removed digest: it can never name other content.
  auto resolved = (*reg)->resolve("web", "c0");
  ASSERT_FALSE(resolved.ok());
  EXPECT_NE(resolved.error().message.find("gc removed"), std::string::npos);
  EXPECT_FALSE((*reg)->tag("web", "c0", digests[1]).ok());
  // Building the same content again brings it back under its old tag.
  ASSERT_TRUE(
      cutover::core::write_file_atomic(root / "ws" / "dist" / "app", "version 0", 0755).ok());
  auto again = (*reg)->put_directory(root / "ws", {"dist"});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->digest, digests[0]);
  EXPECT_TRUE((*reg)->resolve("web", "c0").ok());
  make_writable(root);
  std::error_code ec;
  fs::remove_all(root, ec);
}

}  // namespace
