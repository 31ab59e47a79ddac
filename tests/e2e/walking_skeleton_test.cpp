// The walking skeleton end to end, black-box: a real git repository made here, the real
// `cutover serve` (which starts the real `cutover proxy`), real task processes, loopback only.
//
//   commit v1 → served;  commit v2 → served (blue/green switch);
//   commit with a broken cutover.yaml → execution failed with file:line:col, v2 still served;
//   controller SIGKILLed and restarted → same tasks still serving, no request failed meanwhile,
//   state intact, and the next commit deploys.
#include <signal.h>

#include <atomic>
#include <map>
#include <regex>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "harness.hpp"
#include "serve_fixture.hpp"

namespace cutover::e2e {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace std::chrono_literals;

class WalkingSkeleton : public ServeTest {
 protected:
  WalkingSkeleton() : ServeTest("cutover-e2e-skeleton") {}
};

TEST_F(WalkingSkeleton, CommitsDeployBadConfigIsRejectedRestartKeepsServing) {
  start_serve();
  ASSERT_TRUE(wait_for([&] { return serves("v1"); }, kDeployTimeout)) << serve_log();

  // The API refuses requests without the bearer token; the token file is private.
  std::string api = read_text(state_ / "api-address");
  api = api.substr(0, api.find('\n'));
  auto anonymous = http_get(std::stoi(api.substr(api.rfind(':') + 1)), "/v1/status");
  EXPECT_EQ(anonymous.status, 401) << anonymous.error;
  EXPECT_EQ(fs::status(state_ / "api-token").permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);

  json st = status();
  ASSERT_TRUE(st.is_object());
  ASSERT_EQ(st["services"].size(), 1u);
  const json& svc = st["services"][0];
  EXPECT_EQ(svc["name"], "hello");
  EXPECT_EQ(svc["tasks"].size(), 2u);
  const std::string v1_color = svc["live"]["color"];
  EXPECT_EQ(svc["traffic"][v1_color], 100.0);

  // v2: a blue/green switch to the other color; the old tasks are stopped.
  commit("hello v2", "echo v2 > VERSION");
  ASSERT_TRUE(wait_for([&] { return serves("v2"); }, kDeployTimeout)) << serve_log();
  ASSERT_TRUE(wait_for(
      [&] {
        json s = status();
        return s.is_object() && s["services"][0]["tasks"].size() == 2 &&
               s["services"][0]["deployment"]["status"] == "succeeded";
      },
      60s))
      << status().dump(2);
  st = status();
  const std::string v2_color = st["services"][0]["live"]["color"];
  EXPECT_NE(v2_color, v1_color);
  std::vector<int> v2_pids;
  for (const auto& t : st["services"][0]["tasks"]) {
    EXPECT_EQ(t["color"], v2_color);
    EXPECT_EQ(t["health"], "healthy");
    v2_pids.push_back(t["pid"]);
  }
  json hist = cli_json({"history", "hello"});
  ASSERT_EQ(hist["deployments"].size(), 2u);
  EXPECT_EQ(hist["deployments"][0]["status"], "succeeded");

  // A broken cutover.yaml: the execution fails with file:line:column, v2 keeps serving.
  commit("broken config", "sed -i 's/count: 2/count: many/' cutover.yaml");
  json failed;
  ASSERT_TRUE(wait_for(
      [&] {
        json ex = cli_json({"executions"});
        if (!ex.is_object() || ex["executions"].size() < 3) return false;
        failed = ex["executions"][0];
        return failed["status"] == "failed";
      },
      60s))
      << serve_log();
  const std::string msg = failed["message"];
  EXPECT_TRUE(std::regex_search(msg, std::regex("cutover\\.yaml:[0-9]+:[0-9]+: .*count"))) << msg;
  EXPECT_TRUE(serves("v2"));
  auto logs = run({CUTOVER_BIN, "logs", failed["id"], "--state-dir", state_.string()});
  EXPECT_EQ(logs.exit_code, 0) << logs.err;
  EXPECT_NE(logs.out.find("cutover.yaml:"), std::string::npos) << logs.out;

  // Crash the controller while a client keeps requesting: no request may fail, the same
  // processes keep serving, and a restarted controller re-adopts them.
  std::atomic<bool> stop{false};
  std::atomic<int> ok_count{0};
  std::atomic<int> failures{0};
  std::string first_failure;
  std::thread client([&] {
    while (!stop) {
      auto r = http_get(port_, "/");
      if (r.status == 200 && r.body.find("hello from v2 ") != std::string::npos) {
        ++ok_count;
      } else if (failures++ == 0) {
        first_failure = std::to_string(r.status) + " " + r.error + r.body;
      }
    }
  });
  serve_->kill(SIGKILL);
  ASSERT_TRUE(serve_->wait(10s).has_value());
  const int ok_while_down = ok_count.load();
  ASSERT_TRUE(wait_for([&] { return ok_count.load() > ok_while_down + 20; }, 30s));
  start_serve();
  ASSERT_TRUE(wait_for(
      [&] {
        json s = status();
        return s.is_object() && !s["services"].empty() && s["services"][0]["tasks"].size() == 2;
      },
      60s))
      << serve_log();
  const int ok_after_restart = ok_count.load();
  ASSERT_TRUE(wait_for([&] { return ok_count.load() > ok_after_restart + 20; }, 30s));
  stop = true;
  client.join();
  EXPECT_EQ(failures.load(), 0) << "first failure: " << first_failure;

  st = status();
  std::vector<int> pids_after;
  for (const auto& t : st["services"][0]["tasks"]) pids_after.push_back(t["pid"]);
  EXPECT_EQ(pids_after, v2_pids) << "the restarted controller must re-adopt, not restart, tasks";
  EXPECT_EQ(st["services"][0]["live"]["color"], v2_color);
  hist = cli_json({"history", "hello"});
  EXPECT_EQ(hist["deployments"].size(), 2u);
  json ex = cli_json({"executions"});
  EXPECT_EQ(ex["executions"].size(), 3u) << "a restart must not rerun a seen commit";

  // The restarted controller still deploys: fix the config with v3.
  commit("hello v3", "sed -i 's/count: many/count: 2/' cutover.yaml && echo v3 > VERSION");
  ASSERT_TRUE(wait_for([&] { return serves("v3"); }, kDeployTimeout)) << serve_log();
}

// The proxy's features configured in cutover.yaml reach the real proxy through the controller:
// a TLS listener (certificate made here by openssl) with its HTTP -> HTTPS redirect, a plain test
// listener, and the target group settings in the snapshot the proxy persisted.
TEST_F(WalkingSkeleton, ProxyFeaturesFromCutoverYaml) {
  const fs::path cert = dir_.path() / "cert.pem";
  const fs::path key = dir_.path() / "key.pem";
  sh(dir_.path(),
     "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout '" +
         key.string() + "' -out '" + cert.string() +
         "' -subj /CN=localhost -addext subjectAltName=DNS:localhost -days 2 >/dev/null 2>&1");
  const int redirect_port = free_port();
  const int test_port = free_port();
  std::string yaml = read_text(app_ / "cutover.yaml");
  const std::string plain = "      production: 127.0.0.1:" + std::to_string(port_) + "\n";
  ASSERT_NE(yaml.find(plain), std::string::npos) << yaml;
  yaml.replace(yaml.find(plain), plain.size(),
               "      production:\n"
               "        address: 127.0.0.1:" +
                   std::to_string(port_) +
                   "\n"
                   "        tls: { cert: " +
                   cert.string() + ", key: " + key.string() +
                   " }\n"
                   "        redirect_http: 127.0.0.1:" +
                   std::to_string(redirect_port) +
                   "\n"
                   "      test: 127.0.0.1:" +
                   std::to_string(test_port) +
                   "\n"
                   "    load_balancing: least_outstanding_requests\n");
  yaml = std::regex_replace(yaml, std::regex("      healthy_threshold: 2\n"),
                            "      healthy_threshold: 2\n"
                            "      passive: { consecutive_5xx: 4, ejection: 20s }\n");
  yaml = std::regex_replace(yaml, std::regex("      drain_timeout: 5s\n"),
                            "      drain_timeout: 5s\n"
                            "      sticky: { cookie: hello_version }\n");
  write_text(app_ / "cutover.yaml", yaml);
  auto valid = run({CUTOVER_BIN, "validate", (app_ / "cutover.yaml").string()});
  ASSERT_EQ(valid.exit_code, 0) << valid.err << yaml;
  sh(app_, "git commit -q -am 'tls'");

  start_serve();
  const std::string https = "https://localhost:" + std::to_string(port_);
  const std::string resolve = "localhost:" + std::to_string(port_) + ":127.0.0.1";
  CommandResult r;
  ASSERT_TRUE(wait_for(
      [&] {
        r = run({"curl", "-sS", "--max-time", "5", "--cacert", cert.string(), "--resolve", resolve,
                 https + "/"});
        return r.exit_code == 0 && r.out.find("hello from v1 ") != std::string::npos;
      },
      kDeployTimeout))
      << r.out << r.err << serve_log();

  // The redirect listener: plain HTTP answered with 308 to the TLS listener, same host and target.
  auto redirect = run({"curl", "-sS", "--max-time", "5", "-o", "/dev/null", "-w",
                       "%{http_code} %{redirect_url}",
                       "http://localhost:" + std::to_string(redirect_port) + "/a/b?c=1"});
  EXPECT_EQ(redirect.out, "308 " + https + "/a/b?c=1") << redirect.err;
  // The test listener is plain HTTP to the live version.
  auto test = http_get(test_port, "/");
  EXPECT_EQ(test.status, 200) << test.error;
  EXPECT_NE(test.body.find("hello from v1 "), std::string::npos) << test.body;

  // What the controller sent, as the proxy persisted it.
  json snap = json::parse(read_text(state_ / "proxy" / "snapshot.json"), nullptr, false);
  ASSERT_TRUE(snap.is_object());
  std::map<std::string, json> listeners;
  for (const auto& l : snap["listeners"]) listeners[l["name"]] = l;
  ASSERT_EQ(listeners.size(), 3u) << snap.dump(2);
  const json& prod = listeners["hello/production"];
  EXPECT_EQ(prod["tls"]["cert"], cert.string());
  EXPECT_EQ(prod["tls"]["key"], key.string());
  EXPECT_EQ(prod["sticky"]["cookie"], "hello_version");
  EXPECT_EQ(listeners["hello/production-redirect"]["redirect_https_port"], port_);
  EXPECT_FALSE(listeners["hello/test"].contains("sticky"));
  for (const auto& g : snap["target_groups"]) {
    EXPECT_EQ(g["algorithm"], "least_outstanding_requests");
    EXPECT_EQ(g["passive_ejection"]["consecutive_5xx"], 4);
    EXPECT_EQ(g["passive_ejection"]["consecutive_connect_failures"], 3);
    EXPECT_EQ(g["passive_ejection"]["ejection_ms"], 20000);
    EXPECT_EQ(g["passive_ejection"]["max_ejection_percent"], 50);
  }
}

}  // namespace
}  // namespace cutover::e2e

namespace cutover::e2e {
namespace {

// The proxy is a separate process; if it dies, the controller starts a new one, which reloads
// the persisted route snapshot and serves again once the targets pass their health checks.
TEST(ProxyRecovery, ControllerRestartsAKilledProxy) {
  namespace fs = std::filesystem;
  using nlohmann::json;
  using namespace std::chrono_literals;
  TempDir dir("cutover-e2e-proxy");
  const fs::path app = dir.path() / "app";
  const fs::path state = dir.path() / "state";
  const int port = free_port();
  fs::copy(fs::path(CUTOVER_SOURCE_DIR) / "examples" / "hello", app, fs::copy_options::recursive);
  write_text(app / "cutover.yaml",
             std::regex_replace(read_text(app / "cutover.yaml"), std::regex("127\\.0\\.0\\.1:8000"),
                                "127.0.0.1:" + std::to_string(port)));
  sh(app, "git init -q -b main && git add -A && git commit -q -m 'hello v1'");
  Child serve({CUTOVER_BIN, "serve", "--repo", app.string(), "--state-dir", state.string(), "--api",
               "127.0.0.1:0", "--poll", "250ms"},
              dir.path() / "serve.log");
  const auto serves = [&] {
    auto r = http_get(port, "/");
    return r.status == 200 && r.body.find("hello from v1 ") != std::string::npos;
  };
  const auto status = [&] {
    auto r = run({CUTOVER_BIN, "status", "--state-dir", state.string(), "-o", "json"});
    return r.exit_code == 0 ? json::parse(r.out, nullptr, false) : json();
  };
  ASSERT_TRUE(wait_for(serves, 180s)) << read_text(dir.path() / "serve.log");
  json st = status();
  ASSERT_TRUE(st["proxy"].contains("pid")) << st.dump(2);
  const int old_pid = st["proxy"]["pid"];
  const auto version = st["proxy"]["version"].get<int>();
  ASSERT_EQ(::kill(old_pid, SIGKILL), 0);
  ASSERT_TRUE(wait_for(
      [&] {
        json s = status();
        return s.is_object() && s["proxy"]["status"] == "ok" && s["proxy"]["pid"] != old_pid;
      },
      60s))
      << read_text(dir.path() / "serve.log");
  ASSERT_TRUE(wait_for(serves, 60s)) << read_text(dir.path() / "serve.log");
  st = status();
  EXPECT_GE(st["proxy"]["version"].get<int>(), version) << "the snapshot was reloaded, not reset";
  for (const auto& t : st["services"][0]["tasks"]) ::kill(-t["pid"].get<int>(), SIGKILL);
  ::kill(st["proxy"]["pid"].get<int>(), SIGKILL);
}

}  // namespace
}  // namespace cutover::e2e
