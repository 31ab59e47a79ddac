// Inbound webhooks end to end: `cutover serve --poll 1h` (so only a webhook can make it fetch),
// POST /v1/webhooks/{github,gitlab,generic} with valid, invalid and missing signatures through
// the real API, and the new commit's execution starting right after the valid one.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "harness.hpp"
#include "serve_fixture.hpp"

namespace cutover::e2e {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

struct Posted {
  int status = 0;
  json body;
};

class Webhooks : public ServeTest {
 protected:
  Webhooks() : ServeTest("cutover-e2e-webhooks") {}

  std::string api() {
    std::string a = read_text(state_ / "api-address");
    return a.substr(0, a.find('\n'));
  }

  // POST http://API/v1/webhooks/provider with headers ("Name: value"), through curl.
  Posted post(const std::string& provider, const std::vector<std::string>& headers,
              const std::string& body) {
    const fs::path body_file = dir_.path() / "webhook-body";
    write_text(body_file, body);
    std::vector<std::string> argv{"curl",
                                  "-sS",
                                  "-o",
                                  "-",
                                  "-w",
                                  "\n%{http_code}",
                                  "-X",
                                  "POST",
                                  "--data-binary",
                                  "@" + body_file.string()};
    for (const auto& h : headers) argv.insert(argv.end(), {"-H", h});
    argv.push_back("--path-as-is");  // send ../ as written: the server must not follow it
    argv.push_back("http://" + api() + "/v1/webhooks/" + provider);
    auto r = run(argv);
    Posted p;
    const auto nl = r.out.rfind('\n');
    if (r.exit_code != 0 || nl == std::string::npos) {
      ADD_FAILURE() << "curl failed: " << r.err;
      return p;
    }
    p.status = std::stoi(r.out.substr(nl + 1));
    p.body = json::parse(r.out.substr(0, nl), nullptr, false);
    return p;
  }

  // Hex HMAC-SHA256 of body under key, computed by openssl(1), not by cutover.
  std::string hmac(const std::string& key, const std::string& body) {
    auto r = run({"/bin/sh", "-c", "printf %s \"$BODY\" | openssl dgst -sha256 -hmac \"$KEY\" -r"},
                 {{"BODY", body}, {"KEY", key}});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.out.substr(0, 64);
  }

  void set_secret(const std::string& name, const std::string& value) {
    auto r = run({"/bin/sh", "-c",
                  "printf '%s' \"$VALUE\" | \"$CUTOVER\" secrets set \"$NAME\" --state-dir "
                  "\"$STATE\""},
                 {{"VALUE", value}, {"CUTOVER", CUTOVER_BIN}, {"NAME", name}, {"STATE", state_}});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  // Executions of commit sha (full).
  int executions_of(const std::string& sha) {
    json ex = cli_json({"executions"});
    int n = 0;
    if (ex.is_object()) {
      for (const auto& e : ex["executions"]) n += e["commit_sha"] == sha;
    }
    return n;
  }

  std::string head() {
    auto r = run({"git", "-C", app_.string(), "rev-parse", "HEAD"});
    return r.out.substr(0, 40);
  }
};

TEST_F(Webhooks, OnlyAVerifiedDeliveryTriggersAFetch) {
  start_serve("1h");
  const std::string v1 = head();
  ASSERT_TRUE(wait_for([&] { return executions_of(v1) == 1; }, kDeployTimeout)) << serve_log();
  commit("hello v2", "echo v2 > VERSION");
  const std::string v2 = head();
  const std::string body =
      R"({"ref":"refs/heads/main","after":"0000000000000000000000000000000000000000"})";

  // No secret configured: 401, and the message says which secret to set.
  auto unconfigured = post("github", {"X-Hub-Signature-256: sha256=" + hmac("s3cret", body)}, body);
  EXPECT_EQ(unconfigured.status, 401);
  EXPECT_NE(unconfigured.body.value("error", "").find("cutover secrets set webhook/github"),
            std::string::npos)
      << unconfigured.body;

  set_secret("webhook/github", "gh-s3cret");
  set_secret("webhook/gitlab", "gl-t0ken");
  set_secret("webhook/generic", "gen-s3cret");

  // Missing and wrong signatures: 401 with a clear error, no fetch.
  auto missing = post("github", {"X-GitHub-Event: push"}, body);
  EXPECT_EQ(missing.status, 401);
  EXPECT_NE(missing.body.value("error", "").find("missing X-Hub-Signature-256"), std::string::npos)
      << missing.body;
  auto wrong_key = post("github", {"X-Hub-Signature-256: sha256=" + hmac("guess", body)}, body);
  EXPECT_EQ(wrong_key.status, 401);
  // A signature of another body (the body is what is signed).
  auto other_body =
      post("github", {"X-Hub-Signature-256: sha256=" + hmac("gh-s3cret", body + " ")}, body);
  EXPECT_EQ(other_body.status, 401);
  auto gitlab_wrong = post("gitlab", {"X-Gitlab-Token: gl-t0kem"}, body);
  EXPECT_EQ(gitlab_wrong.status, 401);
  auto gitlab_missing = post("gitlab", {}, body);
  EXPECT_EQ(gitlab_missing.status, 401);
  EXPECT_NE(gitlab_missing.body.value("error", "").find("missing X-Gitlab-Token"),
            std::string::npos);
  auto generic_wrong =
      post("generic", {"X-Cutover-Signature: sha256=" + hmac("gh-s3cret", body)}, body);
  EXPECT_EQ(generic_wrong.status, 401);
  EXPECT_EQ(post("bitbucket", {}, body).status, 404);
  // The webhook paths skip the bearer token; nothing else is reachable through them.
  EXPECT_EQ(post("../secrets", {}, body).status, 404);
  EXPECT_EQ(post("github/../../poll", {}, body).status, 404);
  // GitHub's ping, signed: 200 and no fetch.
  auto ping = post(
      "github", {"X-GitHub-Event: ping", "X-Hub-Signature-256: sha256=" + hmac("gh-s3cret", "{}")},
      "{}");
  EXPECT_EQ(ping.status, 200) << ping.body;

  // Nothing above fetched: with a 1 h poll, v2 has no execution. The loop is idle (v1's
  // execution and deployment are over once its status is final), so a fetch would have shown.
  ASSERT_TRUE(wait_for([&] { return serves("v1"); }, kDeployTimeout)) << serve_log();
  EXPECT_EQ(executions_of(v2), 0);

  // A valid generic delivery: 202, and v2's execution starts without waiting for the poll.
  auto valid = post("generic", {"X-Cutover-Signature: sha256=" + hmac("gen-s3cret", body)}, body);
  EXPECT_EQ(valid.status, 202) << valid.body;
  ASSERT_TRUE(wait_for([&] { return executions_of(v2) == 1; }, kDeployTimeout)) << serve_log();

  // GitHub and GitLab deliveries verify too (they fetch again; no new commit, no new execution).
  EXPECT_EQ(post("github", {"X-Hub-Signature-256: sha256=" + hmac("gh-s3cret", body)}, body).status,
            202);
  EXPECT_EQ(post("gitlab", {"X-Gitlab-Token: gl-t0ken"}, body).status, 202);

  // A body over 1 MiB is refused before anything else.
  EXPECT_EQ(
      post("generic", {"X-Cutover-Signature: sha256=00"}, std::string((1 << 20) + 1, 'x')).status,
      413);

  json st = status();
  ASSERT_TRUE(st.is_object());
  const json& w = st["webhooks"];
  EXPECT_EQ(w["github"]["accepted"], 2) << w;  // the ping and one push
  EXPECT_EQ(w["github"]["rejected"], 4) << w;  // unconfigured, missing, wrong key, other body
  EXPECT_EQ(w["gitlab"]["accepted"], 1) << w;
  EXPECT_EQ(w["gitlab"]["rejected"], 2) << w;
  EXPECT_EQ(w["generic"]["accepted"], 1) << w;
  EXPECT_EQ(w["generic"]["rejected"], 1) << w;
  // Rejections are logged, never with what was presented.
  const std::string log = serve_log();
  EXPECT_NE(log.find("webhook github from 127.0.0.1"), std::string::npos);
  EXPECT_EQ(log.find(hmac("guess", body)), std::string::npos);
  EXPECT_EQ(log.find("gl-t0kem"), std::string::npos);
}

}  // namespace
}  // namespace cutover::e2e
