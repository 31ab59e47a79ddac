// The deployment engine end to end, black-box: the real `cutover serve` and proxy, real tasks of
// examples/hello, a client looping GETs on the production listener the whole time.
//
//   (a) a linear deployment with a passing test-traffic hook completes with 0 failed requests;
//   (b) a version that answers 500 to half its requests is rolled back by its alarm (the time from
//       the first 500 to the last response from green is printed);
//   (c) a green that never gets healthy is stopped, 0 failed production requests;
//   (d) a failing after_allow_test_traffic hook rolls back before any user request reaches green;
//   (e) the controller SIGKILLed during AllowTraffic and restarted: 0 failed requests, production
//       back on blue, the deployment settled.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <thread>

#include "serve_fixture.hpp"

namespace cutover::e2e {
namespace {

// A client that loops GETs on / and counts answers by version.
class Load {
 public:
  explicit Load(int port) : port_(port), thread_([this] { run(); }) {}
  ~Load() { stop(); }

  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  int count(const std::string& version) {
    std::lock_guard lock(mu_);
    return seen_[version];
  }
  int failures() { return failures_.load(); }
  int total() { return total_.load(); }
  std::string first_failure() {
    std::lock_guard lock(mu_);
    return first_failure_;
  }
  // Milliseconds from the first failure to the last answer that was not from `stable`.
  std::optional<int64_t> failure_to_last_other_ms() {
    std::lock_guard lock(mu_);
    if (!first_failure_at_ || !last_other_at_) return std::nullopt;
    return std::chrono::duration_cast<std::chrono::milliseconds>(*last_other_at_ -
                                                                 *first_failure_at_)
        .count();
  }
  std::string stable;  // set before traffic shifts: the version users had before

 private:
  void run() {
    while (!stop_) {
      auto r = http_get(port_, "/");
      const auto now = std::chrono::steady_clock::now();
      ++total_;
      std::lock_guard lock(mu_);
      if (r.status == 200 && r.body.rfind("hello from ", 0) == 0) {
        const std::string version = r.body.substr(11, r.body.find(' ', 11) - 11);
        ++seen_[version];
        if (!stable.empty() && version != stable) last_other_at_ = now;
      } else {
        if (failures_++ == 0) {
          first_failure_ = std::to_string(r.status) + " " + r.error + r.body;
          first_failure_at_ = now;
        }
        last_other_at_ = now;
      }
    }
  }

  int port_;
  std::atomic<bool> stop_{false};
  std::atomic<int> failures_{0};
  std::atomic<int> total_{0};
  std::mutex mu_;
  std::map<std::string, int> seen_;
  std::string first_failure_;
  std::optional<std::chrono::steady_clock::time_point> first_failure_at_;
  std::optional<std::chrono::steady_clock::time_point> last_other_at_;
  std::thread thread_;
};

class Deployment : public ServeTest {
 protected:
  Deployment() : ServeTest("cutover-e2e-deploy") {}

  // Rewrites the app's cutover.yaml: `traffic` replaces the all-at-once line; `deployment_extra`
  // is appended to the deployment block; `env` is the container's env; a test listener is added.
  void configure(const std::string& traffic, const std::string& deployment_extra = "",
                 const std::string& env = "") {
    std::string yaml = read_text(app_ / "cutover.yaml");
    yaml = std::regex_replace(yaml, std::regex("traffic: \\{[^}]*\\}"), "traffic: " + traffic);
    yaml = std::regex_replace(yaml, std::regex("\n          env: \\{[^}]*\\}"), "");
    if (!env.empty()) {
      yaml = std::regex_replace(yaml, std::regex("          stop_timeout: 5s"),
                                "          stop_timeout: 5s\n          env: " + env);
    }
    if (yaml.find("      test: ") == std::string::npos) {
      yaml = std::regex_replace(yaml, std::regex("(      production: 127\\.0\\.0\\.1:[0-9]+)"),
                                "$1\n      test: 127.0.0.1:" + std::to_string(test_port_));
    }
    const auto marker = yaml.find("      termination_wait:");
    yaml = yaml.substr(0, yaml.find('\n', marker) + 1) + deployment_extra;
    write_text(app_ / "cutover.yaml", yaml);
  }

  // Commits v1 with the given config and waits until it serves.
  void deploy_v1() {
    sh(app_, "git commit -q -am 'configure v1'");
    start_serve();
    ASSERT_TRUE(wait_for([&] { return serves("v1"); }, kDeployTimeout)) << serve_log();
    ASSERT_TRUE(wait_for([&] { return deployment_status() == "succeeded"; }, 60s))
        << status().dump(2);
  }

  void commit_v2() { sh(app_, "echo v2 > VERSION && git commit -q -am 'v2'"); }

  json deployment() {
    json st = status();
    if (!st.is_object() || st["services"].empty()) return json();
    return st["services"][0]["deployment"];
  }
  std::string deployment_status() {
    json d = deployment();
    return d.is_object() ? d.value("status", "") : "";
  }
  // The deployment of the second release (v2) has ended; returns its status.
  std::string wait_v2_ended(std::chrono::seconds timeout) {
    std::string st;
    wait_for(
        [&] {
          json hist = cli_json({"history", "hello"});
          if (!hist.is_object() || hist["deployments"].size() < 2) return false;
          st = hist["deployments"][0].value("status", "");
          return st != "in_progress";
        },
        timeout);
    return st;
  }
  std::string v2_reason() {
    json hist = cli_json({"history", "hello"});
    return hist["deployments"][0].value("reason", "");
  }

  int test_port_ = free_port();
};

TEST_F(Deployment, LinearWithAPassingTestHookCompletesWithZeroFailedRequests) {
  configure("{ type: linear, percent: 25, interval: 2s }");
  deploy_v1();
  // v2's hook checks that the test listener reaches v2 (TEST_URL) before any user does.
  configure("{ type: linear, percent: 25, interval: 2s }",
            "      hooks:\n"
            "        after_allow_test_traffic: [\"curl -fsS $TEST_URL/version | grep -qx v2\"]\n");
  Load load(port_);
  load.stable = "v1";
  commit_v2();
  EXPECT_EQ(wait_v2_ended(kDeployTimeout), "succeeded") << v2_reason() << serve_log();
  ASSERT_TRUE(wait_for([&] { return load.count("v2") > 50; }, 30s));
  load.stop();
  EXPECT_EQ(load.failures(), 0) << load.first_failure();
  EXPECT_GT(load.count("v1"), 0);
  EXPECT_TRUE(serves("v2"));
  std::printf("linear deployment: %d requests, %d v1, %d v2, %d failed\n", load.total(),
              load.count("v1"), load.count("v2"), load.failures());
}

TEST_F(Deployment, AVersionAnswering500IsRolledBackByItsAlarm) {
  configure("{ type: linear, percent: 20, interval: 30s }",
            "      alarms:\n"
            "        - { name: green-5xx, metric: http_5xx, period: 1s, evaluation_periods: 1,\n"
            "            threshold: 0, min_requests: 1 }\n");
  deploy_v1();
  configure("{ type: linear, percent: 20, interval: 30s }",
            "      alarms:\n"
            "        - { name: green-5xx, metric: http_5xx, period: 1s, evaluation_periods: 1,\n"
            "            threshold: 0, min_requests: 1 }\n",
            "{ FAIL_PERCENT: \"50\" }");
  Load load(port_);
  load.stable = "v1";
  commit_v2();
  EXPECT_EQ(wait_v2_ended(kDeployTimeout), "rolled_back") << v2_reason() << serve_log();
  EXPECT_NE(v2_reason().find("green-5xx"), std::string::npos) << v2_reason();
  load.stop();
  EXPECT_GT(load.failures(), 0) << "the bad version never answered a user";
  const auto ms = load.failure_to_last_other_ms();
  ASSERT_TRUE(ms.has_value());
  std::printf("alarm rollback: first 500 to last answer from green: %lld ms (%d failed of %d)\n",
              static_cast<long long>(*ms), load.failures(), load.total());
  for (int i = 0; i < 20; ++i) EXPECT_TRUE(serves("v1"));
  json st = status();
  for (const auto& t : st["services"][0]["tasks"]) {
    EXPECT_EQ(t["color"], st["services"][0]["live"]["color"]) << "green was not stopped";
  }
}

TEST_F(Deployment, AGreenThatNeverGetsHealthyIsStoppedWithZeroFailedRequests) {
  configure("{ type: all_at_once }");
  deploy_v1();
  configure("{ type: all_at_once }", "", "{ UNHEALTHY: \"1\" }");
  Load load(port_);
  load.stable = "v1";
  commit_v2();
  EXPECT_EQ(wait_v2_ended(kDeployTimeout), "failed") << v2_reason() << serve_log();
  EXPECT_NE(v2_reason().find("health checks"), std::string::npos) << v2_reason();
  load.stop();
  EXPECT_EQ(load.failures(), 0) << load.first_failure();
  EXPECT_EQ(load.count("v2"), 0);
  EXPECT_GT(load.count("v1"), 0);
}

// Green passes its health checks, takes traffic, then fails them on every target: the controller
// sees the proxy mark green unhealthy and rolls back while users keep getting answers.
TEST_F(Deployment, AGreenThatLosesItsHealthAfterGoingLiveIsRolledBack) {
  configure("{ type: linear, percent: 10, interval: 5m }");
  deploy_v1();
  configure("{ type: linear, percent: 10, interval: 5m }", "", "{ UNHEALTHY_AFTER: \"6\" }");
  Load load(port_);
  commit_v2();
  EXPECT_EQ(wait_v2_ended(kDeployTimeout), "rolled_back") << v2_reason() << serve_log();
  EXPECT_NE(v2_reason().find("green targets failed their health checks"), std::string::npos)
      << v2_reason();
  load.stop();
  EXPECT_EQ(load.failures(), 0) << load.first_failure();
  EXPECT_GT(load.count("v2"), 0) << "green never took traffic before it broke";
  EXPECT_TRUE(serves("v1"));
}

TEST_F(Deployment, AFailingTestTrafficHookRollsBackBeforeUsersReachGreen) {
  const std::string hook =
      "      hooks:\n"
      "        after_allow_test_traffic: [\"curl -fsS $TEST_URL/version | grep -qx v3\"]\n";
  // v1 has no hook (it would fail too: v1 is not v3).
  configure("{ type: all_at_once }");
  deploy_v1();
  configure("{ type: all_at_once }", hook);
  Load load(port_);
  load.stable = "v1";
  commit_v2();
  EXPECT_EQ(wait_v2_ended(kDeployTimeout), "rolled_back") << v2_reason() << serve_log();
  EXPECT_NE(v2_reason().find("after_allow_test_traffic hook failed"), std::string::npos)
      << v2_reason();
  load.stop();
  EXPECT_EQ(load.failures(), 0) << load.first_failure();
  EXPECT_EQ(load.count("v2"), 0) << "a user request reached green before its hooks passed";
  EXPECT_TRUE(serves("v1"));
}

TEST_F(Deployment, ControllerKilledDuringAllowTrafficLosesNoRequest) {
  configure("{ type: linear, percent: 10, interval: 5m }");
  deploy_v1();
  Load load(port_);
  load.stable = "v1";
  commit_v2();
  ASSERT_TRUE(wait_for(
      [&] {
        json d = deployment();
        return d.is_object() && d.value("phase", "") == "AllowTraffic" &&
               d["state"].value("weight", 0) > 0;
      },
      kDeployTimeout))
      << status().dump(2) << serve_log();
  ASSERT_TRUE(wait_for([&] { return load.count("v2") > 5; }, 30s)) << "green got no traffic";
  serve_->kill(SIGKILL);
  ASSERT_TRUE(serve_->wait(10s).has_value());
  const int before_restart = load.total();
  ASSERT_TRUE(wait_for([&] { return load.total() > before_restart + 20; }, 30s));
  start_serve();
  const std::string ended = wait_v2_ended(60s);
  EXPECT_TRUE(ended == "failed" || ended == "succeeded" || ended == "rolled_back") << ended;
  const int after = load.total();
  ASSERT_TRUE(wait_for([&] { return load.total() > after + 20; }, 30s));
  load.stop();
  EXPECT_EQ(load.failures(), 0) << load.first_failure();
  std::printf("controller SIGKILL during AllowTraffic: deployment %s (%s); %d requests, 0 failed\n",
              ended.c_str(), v2_reason().c_str(), load.total());
}

TEST_F(Deployment, OperatorPromoteRollbackAbortAndRetry) {
  configure("{ type: linear, percent: 10, interval: 5m }");
  deploy_v1();
  Load load(port_);
  auto cli = [&](const std::string& action) {
    return run({CUTOVER_BIN, action, "hello", "--state-dir", state_.string()});
  };
  // promote: a 10% step held for 5 minutes is skipped.
  commit_v2();
  ASSERT_TRUE(wait_for(
      [&] {
        json d = deployment();
        return d.is_object() && d.value("phase", "") == "AllowTraffic" &&
               d["state"].value("weight", 0) == 1000;
      },
      kDeployTimeout))
      << status().dump(2) << serve_log();
  auto promoted = cli("promote");
  EXPECT_EQ(promoted.exit_code, 0) << promoted.err;
  EXPECT_EQ(wait_v2_ended(60s), "succeeded") << v2_reason();
  EXPECT_TRUE(serves("v2"));

  // rollback with no deployment in progress: the previous release is redeployed all at once.
  auto rolled = cli("rollback");
  EXPECT_EQ(rolled.exit_code, 0) << rolled.err;
  EXPECT_NE(rolled.out.find("redeploying release"), std::string::npos) << rolled.out;
  ASSERT_TRUE(wait_for(
      [&] {
        json hist = cli_json({"history", "hello"});
        return hist.is_object() && hist["deployments"].size() == 3 &&
               hist["deployments"][0].value("status", "") == "succeeded";
      },
      kDeployTimeout))
      << serve_log();
  EXPECT_TRUE(serves("v1"));

  // abort with nothing in progress is refused, with a non-zero exit.
  auto refused = cli("abort");
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("no deployment of hello is in progress"), std::string::npos)
      << refused.err;

  // rollback during TerminationWait: one snapshot back to blue, instantly.
  configure("{ type: all_at_once }");
  std::string yaml = read_text(app_ / "cutover.yaml");
  write_text(app_ / "cutover.yaml",
             std::regex_replace(yaml, std::regex("termination_wait: 5s"), "termination_wait: 5m"));
  sh(app_, "echo v3 > VERSION && git commit -q -am 'v3'");
  ASSERT_TRUE(wait_for(
      [&] {
        json d = deployment();
        return d.is_object() && d.value("phase", "") == "TerminationWait";
      },
      kDeployTimeout))
      << status().dump(2) << serve_log();
  EXPECT_TRUE(serves("v3"));
  rolled = cli("rollback");
  EXPECT_EQ(rolled.exit_code, 0) << rolled.err;
  ASSERT_TRUE(wait_for([&] { return serves("v1"); }, 30s));
  ASSERT_TRUE(wait_for(
      [&] {
        json hist = cli_json({"history", "hello"});
        return hist.is_object() && hist["deployments"].size() == 4 &&
               hist["deployments"][0].value("status", "") == "rolled_back";
      },
      60s))
      << serve_log();

  // retry: v3's rolled-back release deploys again, on its own schedule (a new deployment);
  // while it runs, another retry is refused.
  auto retried = cli("retry");
  EXPECT_EQ(retried.exit_code, 0) << retried.err;
  EXPECT_NE(retried.out.find("with its traffic schedule"), std::string::npos) << retried.out;
  ASSERT_TRUE(wait_for(
      [&] {
        json d = deployment();
        return d.is_object() && d.value("phase", "") == "TerminationWait";
      },
      kDeployTimeout))
      << status().dump(2) << serve_log();
  EXPECT_TRUE(serves("v3"));
  auto again = cli("retry");
  EXPECT_NE(again.exit_code, 0);
  EXPECT_NE(again.err.find("is in progress"), std::string::npos) << again.err;
  EXPECT_EQ(cli("promote").exit_code, 0);  // ends the 5 minutes of TerminationWait
  ASSERT_TRUE(wait_for(
      [&] {
        json hist = cli_json({"history", "hello"});
        return hist.is_object() && hist["deployments"].size() == 5 &&
               hist["deployments"][0].value("status", "") == "succeeded" &&
               hist["deployments"][0].value("commit", "") ==
                   hist["deployments"][1].value("commit", "?");
      },
      60s))
      << cli_json({"history", "hello"}).dump(2) << serve_log();
  auto nothing = cli("retry");
  EXPECT_NE(nothing.exit_code, 0);
  EXPECT_NE(nothing.err.find("succeeded; nothing to retry"), std::string::npos) << nothing.err;
  load.stop();
  EXPECT_EQ(load.failures(), 0) << load.first_failure();
}

// Issue 5: a commit that arrives during a deployment waits for it; when two releases wait, only
// the newest deploys and the older one is recorded as skipped (`cutover history`).
TEST_F(Deployment, ReleasesArrivingDuringADeploymentWaitAndOnlyTheNewestDeploys) {
  configure("{ type: linear, percent: 10, interval: 10m }");
  deploy_v1();
  const auto head_short = [&] {
    auto r = run({"git", "-C", app_.string(), "rev-parse", "--short=7", "HEAD"});
    return r.out.substr(0, 7);
  };
  // The execution of the commit `short` has succeeded (its release is ready).
  const auto built = [&](const std::string& short_sha) {
    return wait_for(
        [&] {
          json list = cli_json({"executions"});
          if (!list.is_object()) return false;
          for (const auto& e : list["executions"]) {
            if (e.value("commit", "") == short_sha) return e.value("status", "") == "succeeded";
          }
          return false;
        },
        kDeployTimeout);
  };
  const auto history = [&] {
    json h = cli_json({"history", "hello"});
    return h.is_object() ? h["deployments"] : json::array();
  };

  // v2's deployment holds 10% for 10 minutes.
  commit_v2();
  ASSERT_TRUE(wait_for(
      [&] {
        json d = deployment();
        return d.is_object() && d.value("phase", "") == "AllowTraffic" &&
               d["state"].value("weight", 0) == 1000;
      },
      kDeployTimeout))
      << status().dump(2) << serve_log();
  const std::string v2_deployment = deployment().value("id", "");

  // v3 and v4 are built while it runs (the loop keeps fetching); their releases wait.
  sh(app_,
     "sed -i 's/traffic: .*/traffic: { type: all_at_once }/' cutover.yaml && echo v3 > VERSION && "
     "git commit -q -am v3");
  const std::string v3 = head_short();
  ASSERT_TRUE(built(v3)) << serve_log();
  sh(app_, "echo v4 > VERSION && git commit -q -am v4");
  const std::string v4 = head_short();
  ASSERT_TRUE(built(v4)) << serve_log();
  // Only the newest release waits: v3 is recorded as skipped as soon as v4 is ready.
  json during = history();
  ASSERT_EQ(during.size(), 3u) << during.dump(2);
  EXPECT_EQ(during[0].value("commit", ""), v3);
  EXPECT_EQ(during[0].value("status", ""), "superseded");
  EXPECT_EQ(during[1].value("id", ""), v2_deployment);
  EXPECT_EQ(during[1].value("status", ""), "in_progress");
  EXPECT_TRUE(serves("v1") || serves("v2"));

  // v2's deployment ends (promoted); then v4 deploys.
  auto promoted = run({CUTOVER_BIN, "promote", "hello", "--state-dir", state_.string()});
  EXPECT_EQ(promoted.exit_code, 0) << promoted.err;
  ASSERT_TRUE(wait_for([&] { return serves("v4"); }, kDeployTimeout)) << serve_log();
  json after;
  ASSERT_TRUE(wait_for(
      [&] {
        after = history();
        return after.size() == 4 && after[0].value("status", "") == "succeeded";
      },
      60s))
      << after.dump(2) << serve_log();
  EXPECT_EQ(after[0].value("commit", ""), v4);
  EXPECT_EQ(after[1].value("commit", ""), v3);
  EXPECT_EQ(after[1].value("status", ""), "superseded");
  const std::string reason = after[1].value("reason", "");
  EXPECT_NE(reason.find("skipped: release "), std::string::npos) << reason;
  EXPECT_NE(reason.find("of commit " + v3 + " arrived while deployment " + v2_deployment + " ran"),
            std::string::npos)
      << reason;
  EXPECT_NE(reason.find("of commit " + v4 + " is newer"), std::string::npos) << reason;
  EXPECT_EQ(after[2].value("id", ""), v2_deployment);
  EXPECT_EQ(after[2].value("status", ""), "succeeded");
  // v3 never served: its skipped record is its only deployment.
  int v3_deployments = 0;
  for (const auto& d : after) v3_deployments += d.value("commit", "") == v3 ? 1 : 0;
  EXPECT_EQ(v3_deployments, 1);
}

// A release built while a deployment ran, still waiting when the controller is killed, is
// deployed by the restarted controller (the interrupted deployment is settled first).
TEST_F(Deployment, AWaitingReleaseIsDeployedAfterARestart) {
  configure("{ type: linear, percent: 10, interval: 10m }");
  deploy_v1();
  commit_v2();
  ASSERT_TRUE(wait_for(
      [&] {
        json d = deployment();
        return d.is_object() && d.value("phase", "") == "AllowTraffic" &&
               d["state"].value("weight", 0) == 1000;
      },
      kDeployTimeout))
      << status().dump(2) << serve_log();
  sh(app_, "echo v3 > VERSION && git commit -q -am v3");
  auto r = run({"git", "-C", app_.string(), "rev-parse", "--short=7", "HEAD"});
  const std::string v3 = r.out.substr(0, 7);
  ASSERT_TRUE(wait_for(
      [&] {
        json list = cli_json({"executions"});
        return list.is_object() && !list["executions"].empty() &&
               list["executions"][0].value("commit", "") == v3 &&
               list["executions"][0].value("status", "") == "succeeded";
      },
      kDeployTimeout))
      << serve_log();
  serve_->kill(SIGKILL);
  ASSERT_TRUE(serve_->wait(30s).has_value());
  start_serve();
  json hist;
  ASSERT_TRUE(wait_for(
      [&] {
        hist = cli_json({"history", "hello"});
        return hist.is_object() && hist["deployments"].size() == 3 &&
               hist["deployments"][0].value("commit", "") == v3;
      },
      kDeployTimeout))
      << hist.dump(2) << serve_log();
  EXPECT_EQ(hist["deployments"][1].value("status", ""), "failed") << hist.dump(2);
  EXPECT_NE(serve_log().find("was built but not deployed before the restart"), std::string::npos);
}

}  // namespace
}  // namespace cutover::e2e
