// Outbound notifications end to end: a commit whose cutover.yaml names two receivers (generic
// JSON signed with a secret from the store, and Slack format for deployment.succeeded only), the
// real `cutover serve` building and deploying it, and a real HTTP receiver on loopback checking
// what arrives: every state change in order, each signature verified over the received bytes.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "harness.hpp"
#include "notify/test_receiver.hpp"
#include "serve_fixture.hpp"

namespace cutover::e2e {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

std::string hmac_hex(const std::string& key, const std::string& body) {
  auto r = run({"/bin/sh", "-c", "printf %s \"$BODY\" | openssl dgst -sha256 -hmac \"$KEY\" -r"},
               {{"BODY", body}, {"KEY", key}});
  return r.out.substr(0, 64);
}

class Notifications : public ServeTest {
 protected:
  Notifications() : ServeTest("cutover-e2e-notify") {}
};

TEST_F(Notifications, ExecutionAndDeploymentStateChangesArriveSignedAndFiltered) {
  notify::testing::Receiver rx;
  start_serve();
  ASSERT_TRUE(wait_for([&] { return serves("v1"); }, kDeployTimeout)) << serve_log();
  EXPECT_EQ(rx.count(), 0u);  // v1 configures no notifications

  auto set = run({"/bin/sh", "-c",
                  "printf %s n0tify-k3y | \"$CUTOVER\" secrets set notify/hmac --state-dir "
                  "\"$STATE\""},
                 {{"CUTOVER", CUTOVER_BIN}, {"STATE", state_}});
  ASSERT_EQ(set.exit_code, 0) << set.err;
  std::string yaml = read_text(app_ / "cutover.yaml");
  yaml +=
      "notifications:\n"
      "  - url: " +
      rx.url("/json") +
      "\n"
      "    secret: notify/hmac\n"
      "  - url: " +
      rx.url("/slack") +
      "\n"
      "    format: slack\n"
      "    events: [deployment.succeeded]\n";
  write_text(app_ / "cutover.yaml", yaml);
  commit("hello v2 with notifications", "echo v2 > VERSION");
  const std::string sha = run({"git", "-C", app_.string(), "rev-parse", "HEAD"}).out.substr(0, 40);

  ASSERT_TRUE(wait_for([&] { return serves("v2"); }, kDeployTimeout)) << serve_log();
  ASSERT_TRUE(rx.wait_for_count(5, 60s)) << serve_log();

  std::vector<std::string> json_events;
  int slack = 0;
  for (const auto& r : rx.received()) {
    EXPECT_EQ(r.method, "POST");
    auto body = json::parse(r.body, nullptr, false);
    ASSERT_TRUE(body.is_object()) << r.body;
    if (r.target == "/slack") {
      ++slack;
      EXPECT_EQ(r.headers.count("x-cutover-signature"), 0u);
      EXPECT_THAT(body["text"].get<std::string>(),
                  ::testing::MatchesRegex("Deployment dep-.* of hello succeeded \\(commit " +
                                          sha.substr(0, 7) + "\\)"));
      continue;
    }
    EXPECT_EQ(r.target, "/json");
    ASSERT_EQ(r.headers.count("x-cutover-signature"), 1u);
    EXPECT_EQ(r.headers.at("x-cutover-signature"), "sha256=" + hmac_hex("n0tify-k3y", r.body));
    EXPECT_EQ(body["commit"], sha);
    EXPECT_FALSE(body["execution_id"].get<std::string>().empty());
    if (body["event"].get<std::string>().starts_with("deployment.")) {
      EXPECT_EQ(body["service"], "hello");
      EXPECT_FALSE(body["deployment_id"].get<std::string>().empty());
    }
    json_events.push_back(body["event"]);
  }
  EXPECT_EQ(slack, 1);
  EXPECT_THAT(json_events, ::testing::ElementsAre("execution.started", "execution.succeeded",
                                                  "deployment.started", "deployment.succeeded"));
  // The key never shows up in the controller's log.
  EXPECT_EQ(serve_log().find("n0tify-k3y"), std::string::npos);
}

}  // namespace
}  // namespace cutover::e2e
