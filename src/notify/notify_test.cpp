// The notifier against a real HTTP receiver on loopback (test_receiver.hpp): payload formats, the
// HMAC header, retries with backoff, no retry on 4xx, the per-attempt deadline, notify() not
// waiting for a slow receiver, and a full queue dropping its oldest delivery.
#include "notify/notify.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "notify/test_receiver.hpp"

namespace cutover::notify {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using testing::Receiver;

constexpr auto kWait = 30s;  // generous: ASan on a busy 2-core machine

Event deployment_failed() {
  Event e;
  e.event = "deployment.failed";
  e.service = "web";
  e.deployment_id = "dep-7";
  e.execution_id = "ex-3";
  e.commit = "0123456789abcdef0123456789abcdef01234567";
  e.status = "failed";
  e.reason = "hook after_install failed";
  e.time = core::from_unix_ms(1'700'000'000'000);
  return e;
}

Options fast() {
  Options o;
  o.initial_backoff = 10ms;
  o.timeout = 5s;
  return o;
}

bool wait_stats(Notifier& n, const std::function<bool(const Stats&)>& cond) {
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond(n.stats())) return true;
    std::this_thread::sleep_for(10ms);  // polling a condition, with a deadline
  }
  return false;
}

TEST(Render, JsonCarriesEveryField) {
  auto j = nlohmann::json::parse(render(Format::Json, deployment_failed()));
  EXPECT_EQ(j["event"], "deployment.failed");
  EXPECT_EQ(j["service"], "web");
  EXPECT_EQ(j["deployment_id"], "dep-7");
  EXPECT_EQ(j["execution_id"], "ex-3");
  EXPECT_EQ(j["commit"], "0123456789abcdef0123456789abcdef01234567");
  EXPECT_EQ(j["status"], "failed");
  EXPECT_EQ(j["reason"], "hook after_install failed");
  EXPECT_EQ(j["time"], "2023-11-14T22:13:20.000Z");
}

TEST(Render, SlackIsOneTextLine) {
  auto j = nlohmann::json::parse(render(Format::Slack, deployment_failed()));
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j["text"],
            "Deployment dep-7 of web failed (commit 0123456): hook after_install failed");
  Event e;
  e.event = "execution.waiting_for_approval";
  e.execution_id = "ex-9";
  EXPECT_THAT(nlohmann::json::parse(render(Format::Slack, e))["text"].get<std::string>(),
              HasSubstr("Execution ex-9 is waiting for approval"));
}

TEST(Notifier, DeliversBothFormatsSignedAndFiltered) {
  Receiver rx;
  Notifier n(fast());
  ASSERT_TRUE(n.configure({Target{rx.url("/json"), Format::Json, {}, "k3y"},
                           Target{rx.url("/slack"), Format::Slack, {"deployment.rolled_back"}, ""}})
                  .ok());
  n.notify(deployment_failed());  // only /json subscribes to it
  Event rb = deployment_failed();
  rb.event = "deployment.rolled_back";
  rb.status = "rolled_back";
  n.notify(rb);
  ASSERT_TRUE(wait_stats(n, [](const Stats& s) { return s.delivered == 3; }));
  auto got = rx.received();
  ASSERT_EQ(got.size(), 3u);
  std::vector<std::string> targets;
  for (const auto& r : got) {
    EXPECT_EQ(r.method, "POST");
    EXPECT_EQ(r.headers.at("content-type"), "application/json");
    targets.push_back(r.target);
    if (r.target == "/json") {
      // The receiver's own check: HMAC-SHA256 of exactly the bytes received.
      EXPECT_EQ(r.headers.at("x-cutover-signature"), signature("k3y", r.body));
      EXPECT_EQ(r.headers.at("x-cutover-signature").substr(0, 7), "sha256=");
      EXPECT_TRUE(nlohmann::json::parse(r.body).contains("deployment_id"));
    } else {
      EXPECT_EQ(r.headers.count("x-cutover-signature"), 0u);
      EXPECT_EQ(r.headers.at("x-cutover-event"), "deployment.rolled_back");
      EXPECT_THAT(r.body, HasSubstr("\"text\""));
    }
  }
  EXPECT_THAT(targets, ::testing::UnorderedElementsAre("/json", "/json", "/slack"));
  EXPECT_EQ(n.stats().failed, 0u);
}

TEST(Notifier, RetriesServerErrorsThenDelivers) {
  Receiver rx;
  rx.script({500, 503});
  Notifier n(fast());
  ASSERT_TRUE(n.configure({Target{rx.url(), Format::Json, {}, ""}}).ok());
  n.notify(deployment_failed());
  ASSERT_TRUE(wait_stats(n, [](const Stats& s) { return s.delivered == 1; }));
  auto got = rx.received();
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].answered, 500);
  EXPECT_EQ(got[1].answered, 503);
  EXPECT_EQ(got[2].answered, 200);
  EXPECT_EQ(got[0].body, got[2].body);  // the same payload each time
  EXPECT_EQ(n.stats().retries, 2u);
  EXPECT_EQ(n.stats().pending, 0u);
}

TEST(Notifier, GivesUpAfterMaxAttemptsAndDoesNotRetryClientErrors) {
  Receiver rx;
  rx.script({500, 500, 500, 404, 429});
  Options o = fast();
  o.max_attempts = 3;
  Notifier n(o);
  ASSERT_TRUE(n.configure({Target{rx.url(), Format::Json, {}, ""}}).ok());
  n.notify(deployment_failed());
  ASSERT_TRUE(wait_stats(n, [](const Stats& s) { return s.failed == 1 && s.pending == 0; }));
  EXPECT_EQ(rx.count(), 3u);      // 3 attempts, then given up
  n.notify(deployment_failed());  // 404: final at once
  ASSERT_TRUE(wait_stats(n, [](const Stats& s) { return s.failed == 2 && s.pending == 0; }));
  EXPECT_EQ(rx.count(), 4u);
  n.notify(deployment_failed());  // 429 is retried, then 200
  ASSERT_TRUE(wait_stats(n, [](const Stats& s) { return s.delivered == 1; }));
  EXPECT_EQ(rx.count(), 6u);
  EXPECT_EQ(n.stats().retries, 3u);
}

TEST(Notifier, NotifyDoesNotWaitForASlowReceiver) {
  Receiver rx;
  rx.hold(true);  // reads requests, answers only when released
  Options o = fast();
  o.timeout = 60s;  // far longer than this test takes: the first attempt stays in flight
  Notifier n(o);
  ASSERT_TRUE(n.configure({Target{rx.url(), Format::Json, {}, ""}}).ok());
  n.notify(deployment_failed());
  ASSERT_TRUE(rx.wait_for_count(1, kWait));
  // The worker is stuck on the held receiver; notify() still returns and queues.
  for (int i = 0; i < 5; ++i) n.notify(deployment_failed());
  Stats s = n.stats();
  EXPECT_EQ(s.pending, 6u);
  EXPECT_EQ(s.delivered + s.failed, 0u);
  EXPECT_EQ(rx.count(), 1u);
  rx.hold(false);
  ASSERT_TRUE(wait_stats(n, [](const Stats& st) { return st.delivered == 6; }));
}

TEST(Notifier, AnAttemptHasADeadline) {
  Receiver rx;
  rx.hold(true);
  Options o = fast();
  o.timeout = 300ms;
  o.max_attempts = 2;
  Notifier n(o);
  ASSERT_TRUE(n.configure({Target{rx.url(), Format::Json, {}, ""}}).ok());
  n.notify(deployment_failed());
  // Both attempts time out (a timeout is retryable), then the delivery is given up.
  ASSERT_TRUE(wait_stats(n, [](const Stats& s) { return s.failed == 1 && s.pending == 0; }));
  EXPECT_EQ(n.stats().retries, 1u);
  EXPECT_EQ(n.stats().delivered, 0u);
  // The receiver serves one connection at a time: the retry waited in its backlog.
  EXPECT_EQ(rx.count(), 1u);
  rx.hold(false);
}

TEST(Notifier, AFullQueueDropsTheOldest) {
  Receiver rx;
  rx.hold(true);
  Options o = fast();
  o.queue_limit = 2;
  Notifier n(o);
  ASSERT_TRUE(n.configure({Target{rx.url(), Format::Json, {}, ""}}).ok());
  const auto numbered = [](int i) {
    Event e = deployment_failed();
    e.deployment_id = "dep-" + std::to_string(i);
    return e;
  };
  n.notify(numbered(1));
  ASSERT_TRUE(rx.wait_for_count(1, kWait));            // 1 is being sent, the queue is empty
  for (int i = 2; i <= 4; ++i) n.notify(numbered(i));  // 4 evicts 2
  EXPECT_EQ(n.stats().dropped, 1u);
  rx.hold(false);
  ASSERT_TRUE(wait_stats(n, [](const Stats& s) { return s.delivered == 3; }));
  std::vector<std::string> ids;
  for (const auto& r : rx.received()) ids.push_back(nlohmann::json::parse(r.body)["deployment_id"]);
  EXPECT_THAT(ids, ::testing::ElementsAre("dep-1", "dep-3", "dep-4"));
}

TEST(Notifier, UnreachableAndBadUrls) {
  Notifier n(fast());
  auto r = n.configure({Target{"ftp://x/", Format::Json, {}, ""},
                        Target{"http://127.0.0.1:1/", Format::Json, {}, ""}});
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message, HasSubstr("notifications[0].url must start with http://"));
  n.notify(deployment_failed());  // the valid one is kept: connection refused, retried, given up
  ASSERT_TRUE(wait_stats(n, [](const Stats& s) { return s.failed == 1 && s.pending == 0; }));
  EXPECT_EQ(n.stats().retries, 4u);
}

}  // namespace
}  // namespace cutover::notify
