// The artifact registry end to end, black-box: provenance verified at deploy time (a tampered
// artifact file and a tampered statement are refused, production stays on the running version),
// `cutover registry gc` with keep 3 after 12 releases (never the live release or the rollback
// target), and a tag that would move to other content is refused.
#include <sys/stat.h>

#include <regex>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "harness.hpp"
#include "serve_fixture.hpp"

namespace cutover::e2e {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace std::chrono_literals;

void make_writable(const fs::path& p) {
  std::error_code ec;
  if (!fs::exists(p, ec)) return;
  ::chmod(p.c_str(), 0755);
  for (auto it = fs::recursive_directory_iterator(p, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (!it->is_symlink(ec)) ::chmod(it->path().c_str(), 0755);
  }
}

class Registry : public ServeTest {
 protected:
  Registry() : ServeTest("cutover-e2e-registry") {}

  void SetUp() override {
    ServeTest::SetUp();
    std::string yaml = read_text(app_ / "cutover.yaml");
    // Cheap deployments: one task, a short warm blue. Builds are not reproducible (a time stamp),
    // and a VERSION saying "broken" fails the deployment in before_install (no task starts).
    yaml = std::regex_replace(yaml, std::regex("      count: 2\n"), "      count: 1\n");
    yaml = std::regex_replace(yaml, std::regex("termination_wait: 5s"), "termination_wait: 1s");
    yaml = std::regex_replace(yaml, std::regex("        - cp server.py VERSION dist/\n"),
                              "        - cp server.py VERSION dist/\n"
                              "        - date +%s%N > dist/stamp\n");
    yaml = std::regex_replace(
        yaml, std::regex("      drain_timeout: 5s\n"),
        "      drain_timeout: 5s\n"
        "      hooks: { before_install: [\"! grep -q broken dist/VERSION\"] }\n");
    write_text(app_ / "cutover.yaml", yaml);
    ASSERT_NE(yaml.find("count: 1"), std::string::npos) << yaml;
    ASSERT_NE(yaml.find("dist/stamp"), std::string::npos) << yaml;
    ASSERT_NE(yaml.find("before_install"), std::string::npos) << yaml;
    auto valid = run({CUTOVER_BIN, "validate", (app_ / "cutover.yaml").string()});
    ASSERT_EQ(valid.exit_code, 0) << valid.err << yaml;
    sh(app_, "git commit -q -am 'hello v1, cheap'");
  }

  void TearDown() override {
    ServeTest::TearDown();
    make_writable(state_ / "registry");  // read-only trees, so that the temp dir goes away
  }

  void start_serve_keeping(int keep) {
    serve_ = std::make_unique<Child>(
        std::vector<std::string>{CUTOVER_BIN, "serve", "--repo", app_.string(), "--state-dir",
                                 state_.string(), "--api", "127.0.0.1:0", "--poll", "250ms",
                                 "--registry-keep", std::to_string(keep)},
        dir_.path() / "serve.log");
  }

  CommandResult cli(const std::vector<std::string>& args) {
    std::vector<std::string> argv{CUTOVER_BIN};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--state-dir", state_.string()});
    return run(argv);
  }

  std::string head_sha() {
    auto r = run({"git", "-C", app_.string(), "rev-parse", "HEAD"});
    return r.out.substr(0, 40);
  }

  json deployments() {
    json h = cli_json({"history", "hello"});
    return h.is_object() ? h["deployments"] : json::array();
  }

  static bool refused(const json& d) {
    return d["status"] == "failed" || d["status"] == "rolled_back";
  }

  // Waits until the newest deployment is of `commit` and has ended; returns it. While waiting,
  // counts production responses that did not come from `serving` (if given).
  json wait_deployment_end(const std::string& commit, size_t at_least,
                           const std::string& serving = "", int* wrong = nullptr) {
    json last;
    const bool ended = wait_for(
        [&] {
          if (!serving.empty() && wrong != nullptr && !serves(serving)) ++*wrong;
          json ds = deployments();
          if (ds.size() < at_least) return false;
          last = ds[0];
          return last["commit"] == commit.substr(0, 7) && last["status"] != "in_progress";
        },
        kDeployTimeout);
    EXPECT_TRUE(ended) << "deployment of " << commit << " did not end; last: " << last << "\n"
                       << serve_log();
    return last;
  }

  // The artifact directory of the release built from commit (registry ls).
  fs::path artifact_dir_of(const std::string& commit) {
    json ls = cli_json({"registry", "ls", "hello"});
    EXPECT_TRUE(ls.is_object()) << ls;
    if (!ls.is_object()) return {};
    for (const auto& a : ls["artifacts"]) {
      for (const auto& r : a["releases"]) {
        if (r["commit"] == commit.substr(0, 7)) {
          const std::string digest = a["digest"];
          return state_ / "registry" / "sha256" / digest.substr(7);
        }
      }
    }
    ADD_FAILURE() << "no artifact of " << commit << " in " << ls;
    return {};
  }
};

TEST_F(Registry, TamperedArtifactOrProvenanceIsRefusedAtDeploy) {
  start_serve();
  ASSERT_TRUE(wait_for([&] { return serves("v1"); }, kDeployTimeout)) << serve_log();
  const std::string v1 = head_sha();
  commit("hello v2", "echo v2 > VERSION");
  const std::string v2 = head_sha();
  json d = wait_deployment_end(v2, 2);
  ASSERT_EQ(d["status"], "succeeded") << d;
  {
    auto r = http_get(port_, "/");
    ASSERT_TRUE(serves("v2")) << r.status << " " << r.body << r.error << "\n" << serve_log();
  }

  // The public key is exported, as a file and through the API.
  json key = cli_json({"registry", "key"});
  ASSERT_TRUE(key.is_object()) << key;
  EXPECT_EQ(key["public_key_pem"], read_text(state_ / "provenance.pub"));
  struct stat st {};
  ASSERT_EQ(::stat((state_ / "provenance.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  const fs::path dir = artifact_dir_of(v1);
  ASSERT_FALSE(dir.empty());
  const std::string digest = "sha256:" + dir.filename().string();
  std::vector<fs::path> statements;
  for (const auto& e : fs::directory_iterator(dir / "provenance")) statements.push_back(e.path());
  ASSERT_EQ(statements.size(), 1u);
  const fs::path version = dir / "tree" / "dist" / "VERSION";
  const std::string original = read_text(version);
  ASSERT_EQ(original, "v1\n");

  // 1. A file of v1's artifact modified after the build: `rollback` (which redeploys v1) fails.
  ::chmod((dir / "tree" / "dist").c_str(), 0755);
  ::chmod(version.c_str(), 0644);
  write_text(version, "v1 with a backdoor\n");
  int wrong = 0;
  auto rb = cli({"rollback", "hello"});
  ASSERT_EQ(rb.exit_code, 0) << rb.err;
  d = wait_deployment_end(v1, 3, "v2", &wrong);
  EXPECT_TRUE(refused(d)) << d;
  const std::string tampered_reason = d["reason"];
  EXPECT_NE(tampered_reason.find(digest + " was tampered with: dist/VERSION was modified"),
            std::string::npos)
      << tampered_reason;
  EXPECT_EQ(wrong, 0) << "production left v2 while a tampered v1 was refused";
  EXPECT_TRUE(serves("v2"));

  // 2. The artifact restored, its provenance statement's signature altered: refused too.
  write_text(version, original);
  const std::string statement = read_text(statements[0]);
  json env = json::parse(statement);
  std::string sig = env["signatures"][0]["sig"];
  sig[10] = sig[10] == 'A' ? 'B' : 'A';
  env["signatures"][0]["sig"] = sig;
  ::chmod(statements[0].c_str(), 0644);
  write_text(statements[0], env.dump());
  rb = cli({"rollback", "hello"});
  ASSERT_EQ(rb.exit_code, 0) << rb.err;
  d = wait_deployment_end(v1, 4, "v2", &wrong);
  EXPECT_TRUE(refused(d)) << d;
  const std::string sig_reason = d["reason"];
  EXPECT_NE(sig_reason.find("artifact " + digest), std::string::npos) << sig_reason;
  EXPECT_NE(sig_reason.find("does not verify with this installation's key " +
                            key["key_id"].get<std::string>()),
            std::string::npos)
      << sig_reason;
  EXPECT_EQ(wrong, 0);

  // 3. A statement removed: refused.
  fs::remove(statements[0]);
  rb = cli({"rollback", "hello"});
  ASSERT_EQ(rb.exit_code, 0) << rb.err;
  d = wait_deployment_end(v1, 5, "v2", &wrong);
  EXPECT_TRUE(refused(d)) << d;
  EXPECT_NE(d["reason"].get<std::string>().find("no provenance statement"), std::string::npos) << d;
  EXPECT_EQ(wrong, 0);
  EXPECT_TRUE(serves("v2"));

  // The same rollback with the original statement back succeeds: the refusals were about the
  // tampering, nothing else.
  write_text(statements[0], statement);
  rb = cli({"rollback", "hello"});
  ASSERT_EQ(rb.exit_code, 0) << rb.err;
  d = wait_deployment_end(v1, 6);
  EXPECT_EQ(d["status"], "succeeded") << d;
  EXPECT_TRUE(serves("v1"));
}

TEST_F(Registry, GcKeepsLiveAndRollbackTargetAndTagsNeverMove) {
  start_serve_keeping(3);
  ASSERT_TRUE(wait_for([&] { return serves("v1"); }, kDeployTimeout)) << serve_log();
  std::vector<std::string> commits{head_sha()};
  // v2 and v3 go live; then 9 commits whose deployments fail before any task starts.
  for (int i = 2; i <= 12; ++i) {
    const bool broken = i > 3;
    commit("release " + std::to_string(i),
           std::string("echo ") + (broken ? "broken" : "v") + std::to_string(i) + " > VERSION");
    commits.push_back(head_sha());
    json d = wait_deployment_end(commits.back(), static_cast<size_t>(i));
    ASSERT_TRUE(broken ? refused(d) : d["status"] == "succeeded") << i << ": " << d << serve_log();
  }
  ASSERT_TRUE(serves("v3"));

  // 12 releases, keep 3: live v3, rollback target v2, the last three (10-12) stay; 1 and 4-9 go.
  json ls = cli_json({"registry", "ls"});
  ASSERT_TRUE(ls.is_object()) << ls;
  ASSERT_EQ(ls["artifacts"].size(), 12u) << ls;
  std::map<std::string, std::string> retention_of_commit;
  for (const auto& a : ls["artifacts"]) {
    for (const auto& r : a["releases"]) retention_of_commit[r["commit"]] = a["retention"];
  }
  const auto short_of = [&](int i) { return commits[static_cast<size_t>(i - 1)].substr(0, 7); };
  EXPECT_EQ(retention_of_commit[short_of(3)], "live");
  EXPECT_EQ(retention_of_commit[short_of(2)], "rollback-target");
  for (int i : {10, 11, 12}) EXPECT_EQ(retention_of_commit[short_of(i)], "kept") << i;
  for (int i : {1, 4, 5, 6, 7, 8, 9}) EXPECT_EQ(retention_of_commit[short_of(i)], "removable") << i;

  auto text = cli({"registry", "ls", "hello"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("rollback-target"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("hello:" + short_of(3)), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("12 artifact(s)"), std::string::npos) << text.out;
  auto dry = cli({"registry", "gc", "--dry-run"});
  ASSERT_EQ(dry.exit_code, 0) << dry.err;
  EXPECT_NE(dry.out.find("would remove 7 artifact(s)"), std::string::npos) << dry.out;
  json gc = cli_json({"registry", "gc"});
  ASSERT_TRUE(gc.is_object()) << gc;
  EXPECT_EQ(gc["removed"].size(), 7u) << gc;
  EXPECT_EQ(gc["kept"].size(), 5u) << gc;
  EXPECT_TRUE(gc["errors"].empty()) << gc;
  EXPECT_GT(gc["freed_bytes"].get<uint64_t>(), 0u);
  ls = cli_json({"registry", "ls"});
  ASSERT_EQ(ls["artifacts"].size(), 5u) << ls;
  // Audited.
  EXPECT_NE(read_text(dir_.path() / "serve.log").find("registry: gc by cli:"), std::string::npos);
  // A second gc finds nothing more to remove.
  gc = cli_json({"registry", "gc"});
  EXPECT_EQ(gc["removed"].size(), 0u) << gc;

  // The rollback target survived intact: rollback to it works.
  auto rb = cli({"rollback", "hello"});
  ASSERT_EQ(rb.exit_code, 0) << rb.err;
  json d = wait_deployment_end(commits[1], 13);
  EXPECT_EQ(d["status"], "succeeded") << d << serve_log();
  EXPECT_TRUE(serves("v2"));

  // A force-push back to v3 rebuilds v3; the build is not reproducible, so its tag would have to
  // move to another digest: refused, and production stays where it is.
  const size_t deployments_before = deployments().size();
  sh(app_, "git reset -q --hard " + commits[2]);
  json ex;
  ASSERT_TRUE(wait_for(
      [&] {
        json all = cli_json({"executions"});
        if (!all.is_object() || all["executions"].empty()) return false;
        ex = all["executions"][0];
        return ex["commit"] == short_of(3) &&
               (ex["status"] == "failed" || ex["status"] == "succeeded");
      },
      kDeployTimeout))
      << serve_log();
  EXPECT_EQ(ex["status"], "failed") << ex;
  EXPECT_NE(
      ex["message"].get<std::string>().find("tag hello:" + short_of(3) + " already points to"),
      std::string::npos)
      << ex;
  EXPECT_NE(ex["message"].get<std::string>().find("tags are immutable"), std::string::npos) << ex;
  EXPECT_EQ(deployments().size(), deployments_before);
  EXPECT_TRUE(serves("v2"));
}

}  // namespace
}  // namespace cutover::e2e
