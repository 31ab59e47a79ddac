// The `scan: secrets` stage of a real pipeline (examples/hello starts with one): the first
// execution scans the checkout, later ones only the lines their push added; a leaked secret fails
// the execution while the running version keeps serving, and a .gitleaksignore fingerprint lets the
// next push through.
#include <regex>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "harness.hpp"
#include "serve_fixture.hpp"

namespace cutover::e2e {
namespace {

class PipelineGate : public ServeTest {
 protected:
  PipelineGate() : ServeTest("cutover-e2e-gate") {}

  // The newest execution once it has ended with one of the given statuses, for `commit`.
  json finished_execution(const std::string& commit_sha) {
    json found;
    wait_for(
        [&] {
          json ex = cli_json({"executions"});
          if (!ex.is_object()) return false;
          for (const auto& e : ex["executions"]) {
            if (e["commit"] == commit_sha.substr(0, 7) &&
                (e["status"] == "succeeded" || e["status"] == "failed")) {
              found = e;
              return true;
            }
          }
          return false;
        },
        kDeployTimeout);
    return found;
  }
  std::string head() {
    auto r = run({"git", "-C", app_.string(), "rev-parse", "HEAD"});
    std::string s = r.out;
    while (!s.empty() && s.back() == '\n') s.pop_back();
    return s;
  }
  std::string logs(const std::string& execution) {
    return run({CUTOVER_BIN, "logs", execution, "--state-dir", state_.string()}).out;
  }
};

TEST_F(PipelineGate, SecretsGateScansWhatEachPushAdded) {
  start_serve();
  json first = finished_execution(head());
  ASSERT_TRUE(first.is_object()) << serve_log();
  ASSERT_EQ(first["status"], "succeeded") << first.dump() << serve_log();
  EXPECT_NE(logs(first["id"]).find("no earlier scanned commit; scanning the whole checkout"),
            std::string::npos);
  ASSERT_TRUE(wait_for([&] { return serves("v1"); }, kDeployTimeout)) << serve_log();

  // A push that leaks a token: the gate names file, line, rule and commit, never the token.
  const std::string token = "ghp_" + std::string("u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d");
  sh(app_, "printf 'TOKEN = \"" + token + "\"\\n' > settings.py && git add settings.py");
  commit("add settings", "sed -i 's/v1/v2/' VERSION");
  const std::string leak = head();
  json failed = finished_execution(leak);
  ASSERT_TRUE(failed.is_object()) << serve_log();
  ASSERT_EQ(failed["status"], "failed") << failed.dump();
  const std::string message = failed["message"];
  EXPECT_NE(message.find("settings.py:1:10: github-pat in commit " + leak.substr(0, 7)),
            std::string::npos)
      << message;
  const std::string log = logs(failed["id"]);
  EXPECT_NE(log.find("scanned the lines added by 1 commit(s) since " +
                     first["commit"].get<std::string>().substr(0, 7)),
            std::string::npos)
      << log;
  EXPECT_EQ(log.find(token), std::string::npos);
  EXPECT_EQ(message.find(token), std::string::npos);
  EXPECT_TRUE(serves("v1")) << "the running version keeps serving";

  // The token was revoked; its fingerprint goes into .gitleaksignore and the next push passes,
  // although the range since the last passing commit still holds the leak.
  std::smatch m;
  ASSERT_TRUE(std::regex_search(message, m, std::regex("\\(fingerprint ([^)]+)\\)"))) << message;
  sh(app_, "printf '%s\\n' '" + m[1].str() + "' > .gitleaksignore && git add .gitleaksignore");
  commit("ignore the revoked token", "sed -i 's/v2/v3/' VERSION");
  json passed = finished_execution(head());
  ASSERT_TRUE(passed.is_object()) << serve_log();
  EXPECT_EQ(passed["status"], "succeeded") << passed.dump() << logs(passed["id"]);
  EXPECT_NE(logs(passed["id"]).find("scanned the lines added by 2 commit(s)"), std::string::npos);
}

}  // namespace
}  // namespace cutover::e2e
