// The `rolling` strategy end to end, black-box: the real `cutover serve` and proxy, real tasks of
// examples/hello (count 4), a paced client on the production listener the whole time.
//
//   (a) min_healthy_percent 50 / max_percent 150 (at least 2 healthy, at most 6 running): the
//       deployment completes in batches with 0 failed requests, and the task counts recorded with
//       every deployment event stay within those bounds;
//   (b) a version that never passes its health checks: its tasks fail by the task timeout, the
//       circuit breaker (threshold 2) trips, blue is brought back to 4 running tasks and green
//       stopped, 0 failed requests. (A version that exits at start would crash-loop instead, but
//       between its restarts its port is free, and on a shared machine another test's server may
//       take it and pass the health checks for it.)
//   (c) the controller SIGKILLed while the rollout has blue down to 2 tasks and restarted: the
//       deployment is settled, green stopped, blue brought back to 4 tasks, 0 failed requests.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <thread>

#include "serve_fixture.hpp"

namespace cutover::e2e {
namespace {

// A client that GETs / every 20 ms and counts answers by version.
class PacedLoad {
 public:
  explicit PacedLoad(int port) : port_(port), thread_([this] { run(); }) {}
  ~PacedLoad() { stop(); }
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

 private:
  void run() {
    auto next = std::chrono::steady_clock::now();
    while (!stop_) {
      auto r = http_get(port_, "/");
      ++total_;
      {
        std::lock_guard lock(mu_);
        if (r.status == 200 && r.body.rfind("hello from ", 0) == 0) {
          ++seen_[r.body.substr(11, r.body.find(' ', 11) - 11)];
        } else if (failures_++ == 0) {
          first_failure_ = std::to_string(r.status) + " " + r.error + r.body;
        }
      }
      next += std::chrono::milliseconds(20);
      std::this_thread::sleep_until(next);  // pacing, not waiting for a condition
    }
  }

  int port_;
  std::atomic<bool> stop_{false};
  std::atomic<int> failures_{0};
  std::atomic<int> total_{0};
  std::mutex mu_;
  std::map<std::string, int> seen_;
  std::string first_failure_;
  std::thread thread_;
};

class Rolling : public ServeTest {
 protected:
  Rolling() : ServeTest("cutover-e2e-rolling") {}

  // The example's deployment block becomes a rolling one; `env` is the container's env. A version
  // that is meant to stay unhealthy runs without the container liveness check: the runtime would
  // restart it over and over, and between two restarts its port is free for any other program on
  // this shared machine to bind (another test's hello server, which then passes the health checks
  // in its place).
  void configure(const std::string& env = "", bool liveness = true) {
    std::string yaml = read_text(app_ / "cutover.yaml");
    if (!liveness) {
      yaml = std::regex_replace(yaml, std::regex("\n          health: \\{[^}]*\\}"), "");
    }
    yaml = std::regex_replace(yaml, std::regex("count: 2"), "count: 4");
    yaml = std::regex_replace(yaml, std::regex("\n          env: \\{[^}]*\\}"), "");
    if (!env.empty()) {
      yaml = std::regex_replace(yaml, std::regex("          stop_timeout: 5s"),
                                "          stop_timeout: 5s\n          env: " + env);
    }
    const auto at = yaml.find("    deployment:");
    yaml = yaml.substr(0, at) +
           "    deployment:\n"
           "      strategy: rolling\n"
           "      min_healthy_percent: 50\n"
           "      max_percent: 150\n"
           "      circuit_breaker: { threshold: 2 }\n"
           "      drain_timeout: 2s\n";
    write_text(app_ / "cutover.yaml", yaml);
  }

  void deploy_v1() {
    sh(app_, "git commit -q -am 'configure v1'");
    start_serve();
    ASSERT_TRUE(wait_for([&] { return serves("v1"); }, kDeployTimeout)) << serve_log();
    ASSERT_TRUE(
        wait_for([&] { return running_tasks() == 4 && deployment_status(0) == "succeeded"; },
                 kDeployTimeout))
        << status().dump(2) << serve_log();
  }

  int running_tasks() {
    json st = status();
    if (!st.is_object() || st["services"].empty()) return -1;
    return static_cast<int>(st["services"][0]["tasks"].size());
  }
  // The status of the n-th newest deployment ("" if there is none yet).
  std::string deployment_status(size_t n) {
    json hist = cli_json({"history", "hello"});
    if (!hist.is_object() || hist["deployments"].size() <= n) return "";
    return hist["deployments"][n].value("status", "");
  }
  std::string wait_v2_ended() {
    std::string st;
    wait_for(
        [&] {
          json hist = cli_json({"history", "hello"});
          if (!hist.is_object() || hist["deployments"].size() < 2) return false;
          st = hist["deployments"][0].value("status", "");
          return st != "in_progress";
        },
        kDeployTimeout);
    return st;
  }
  json v2() { return cli_json({"history", "hello"})["deployments"][0]; }

  // The detail of every event of deployment `id`, in order, read from the store (read-only).
  json events(const std::string& id) {
    const std::string script =
        "import json, sqlite3, sys\n"
        "db = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)\n"
        "rows = db.execute('SELECT type, detail_json FROM deployment_events WHERE deployment_id = "
        "? ORDER BY seq', (sys.argv[2],)).fetchall()\n"
        "print(json.dumps([dict(json.loads(d), type=t) for t, d in rows]))\n";
    auto r = run({"python3", "-c", script, (state_ / "state.db").string(), id});
    return json::parse(r.out, nullptr, false);
  }
};

TEST_F(Rolling, ReplacesTasksInBatchesWithinTheBoundsAndZeroFailedRequests) {
  configure();
  deploy_v1();
  PacedLoad load(port_);
  commit("v2", "echo v2 > VERSION");
  EXPECT_EQ(wait_v2_ended(), "succeeded") << v2().dump() << serve_log();
  ASSERT_TRUE(wait_for([&] { return load.count("v2") > 20; }, 30s));
  load.stop();
  EXPECT_EQ(load.failures(), 0) << load.first_failure();
  EXPECT_GT(load.count("v1"), 0);
  EXPECT_TRUE(serves("v2"));
  EXPECT_EQ(running_tasks(), 4);

  // min healthy = ceil(4 * 50%) = 2, max running = floor(4 * 150%) = 6.
  json evs = events(v2().value("id", ""));
  ASSERT_TRUE(evs.is_array() && evs.size() > 4) << evs.dump();
  int peak = 0;
  int fewest_healthy = 100;
  bool batched = false;  // some point had both colors healthy and serving
  for (const auto& e : evs) {
    if (!e.contains("running")) continue;
    peak = std::max(peak, e["running"].get<int>());
    if (e["type"] != "Start") fewest_healthy = std::min(fewest_healthy, e["healthy"].get<int>());
    const int w = e["weight"].get<int>();
    batched |= w > 0 && w < 10000;
  }
  EXPECT_LE(peak, 6) << evs.dump();
  EXPECT_GE(peak, 5) << "never used the room max_percent gives";
  EXPECT_GE(fewest_healthy, 2) << evs.dump();
  EXPECT_TRUE(batched) << evs.dump();
  std::printf(
      "rolling deployment: %zu events, peak %d running, fewest %d healthy; %d requests, "
      "%d v1, %d v2, %d failed\n",
      evs.size(), peak, fewest_healthy, load.total(), load.count("v1"), load.count("v2"),
      load.failures());
}

TEST_F(Rolling, AVersionThatNeverGetsHealthyTripsTheCircuitBreakerAndBlueIsRestored) {
  configure();
  deploy_v1();
  configure("{ UNHEALTHY: \"1\" }", /*liveness=*/false);
  PacedLoad load(port_);
  commit("v2", "echo v2 > VERSION");
  EXPECT_EQ(wait_v2_ended(), "failed") << v2().dump() << serve_log();
  const std::string reason = v2().value("reason", "");
  EXPECT_NE(reason.find("circuit breaker: 2 green tasks failed"), std::string::npos) << reason;
  ASSERT_TRUE(wait_for([&] { return running_tasks() == 4; }, 30s)) << status().dump(2);
  load.stop();
  EXPECT_EQ(load.failures(), 0) << load.first_failure();
  EXPECT_EQ(load.count("v2"), 0);
  json st = status();
  for (const auto& t : st["services"][0]["tasks"]) {
    EXPECT_EQ(t["color"], st["services"][0]["live"]["color"]) << "green was not stopped";
  }
  EXPECT_TRUE(serves("v1"));
  std::printf("circuit breaker: %s; %d requests, %d failed\n", reason.c_str(), load.total(),
              load.failures());
}

TEST_F(Rolling, ControllerKilledMidRolloutRestoresBlueToItsCount) {
  configure();
  deploy_v1();
  // Green never gets healthy: the rollout stays half-way.
  configure("{ UNHEALTHY: \"1\" }", /*liveness=*/false);
  PacedLoad load(port_);
  commit("v2", "echo v2 > VERSION");
  ASSERT_TRUE(wait_for(
      [&] {
        json hist = cli_json({"history", "hello"});
        if (!hist.is_object() || hist["deployments"].size() < 2) return false;
        json st = status();
        if (!st.is_object() || st["services"].empty()) return false;
        const json& state = st["services"][0]["deployment"]["state"];
        return state.is_object() && state.value("blue_healthy", -1) == 2 &&
               state.value("green_starting", 0) > 0;
      },
      kDeployTimeout))
      << status().dump(2) << serve_log();
  serve_->kill(SIGKILL);
  ASSERT_TRUE(serve_->wait(10s).has_value());
  start_serve();
  EXPECT_EQ(wait_v2_ended(), "failed") << v2().dump();
  EXPECT_NE(v2().value("reason", "").find("brought back to its task count"), std::string::npos)
      << v2().dump();
  ASSERT_TRUE(wait_for(
      [&] {
        json st = status();
        if (!st.is_object() || st["services"].empty()) return false;
        const json& svc = st["services"][0];
        if (svc["tasks"].size() != 4) return false;
        for (const auto& t : svc["tasks"]) {
          if (t["color"] != svc["live"]["color"] || t.value("health", "") != "healthy")
            return false;
        }
        return true;
      },
      60s))
      << status().dump(2);
  const int after = load.total();
  ASSERT_TRUE(wait_for([&] { return load.total() > after + 20; }, 30s));
  load.stop();
  EXPECT_EQ(load.failures(), 0) << load.first_failure();
  EXPECT_EQ(load.count("v2"), 0);
  std::printf("controller SIGKILL mid-rollout: %d requests, %d failed\n", load.total(),
              load.failures());
}

}  // namespace
}  // namespace cutover::e2e
