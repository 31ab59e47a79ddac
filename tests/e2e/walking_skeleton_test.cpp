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

// Processes of this state directory's tasks, found the hard way (not through cutover): every
// process whose environment has TASK_ID=task-... and whose working directory is under state.
std::map<int, std::string> task_processes(const fs::path& state) {
  std::map<int, std::string> out;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::error_code ec;
    const fs::path cwd = fs::read_symlink(e.path() / "cwd", ec);
    if (ec || cwd.string().rfind(state.string(), 0) != 0) continue;
    const std::string env = read_text(e.path() / "environ");
    size_t at = env.find(std::string("TASK_ID=task-"));
    if (at == std::string::npos || (at != 0 && env[at - 1] != '\0')) continue;
    std::string stat = read_text(e.path() / "stat");
    // A zombie is not a running task.
    if (auto paren = stat.rfind(')');
        paren != std::string::npos && stat.size() > paren + 2 && stat[paren + 2] == 'Z') {
      continue;
    }
    out[std::stoi(name)] = env.substr(at + 8, env.find('\0', at) - at - 8);
  }
  return out;
}

// The runtime issue end to end: task definition revisions, a crashed task restarted under the same
// id, a controller SIGKILL after which the same processes are re-adopted (nothing started twice,
// nothing orphaned) with their supervision re-attached: a hung task fails its liveness check and
// is replaced by the restarted controller. Task logs through `cutover logs SERVICE --task`.
TEST_F(WalkingSkeleton, TaskDefinitionsSupervisionAndReadoption) {
  start_serve();
  ASSERT_TRUE(wait_for([&] { return serves("v1"); }, kDeployTimeout)) << serve_log();
  json defs = cli_json({"task-defs", "hello"});
  ASSERT_EQ(defs["revisions"].size(), 1u) << defs.dump(2);
  EXPECT_EQ(defs["revisions"][0]["name"], "hello:1");

  // v2 changes the task (a faster liveness check): a new revision, deployed.
  commit("hello v2: faster liveness",
         "sed -i 's|health: { http: /health, interval: 2s }|health: { http: /health, interval: "
         "1s, timeout: 1s, retries: 2, start_period: 10s }|' cutover.yaml && echo v2 > VERSION");
  ASSERT_TRUE(wait_for([&] { return serves("v2"); }, kDeployTimeout)) << serve_log();
  ASSERT_TRUE(wait_for(
      [&] {
        json s = status();
        return s.is_object() && s["services"][0]["tasks"].size() == 2 &&
               s["services"][0]["deployment"]["status"] == "succeeded";
      },
      60s))
      << status().dump(2);
  defs = cli_json({"task-defs", "hello"});
  ASSERT_EQ(defs["revisions"].size(), 2u) << defs.dump(2);
  EXPECT_EQ(defs["revisions"][0]["name"], "hello:2");
  json diff = cli_json({"task-defs", "hello", "--diff", "1", "hello:2"});
  ASSERT_TRUE(diff.is_object());
  std::vector<std::string> changes = diff["changes"];
  EXPECT_EQ(changes, (std::vector<std::string>{"containers[app].health.interval_ms: 2000 -> 1000",
                                               "containers[app].health.retries: 3 -> 2",
                                               "containers[app].health.start_period_ms: 0 -> 10000",
                                               "containers[app].health.timeout_ms: 5000 -> 1000"}))
      << diff.dump(2);
  auto text_diff =
      run({CUTOVER_BIN, "task-defs", "hello", "--diff", "1", "2", "--state-dir", state_.string()});
  EXPECT_EQ(text_diff.exit_code, 0) << text_diff.err;
  EXPECT_NE(text_diff.out.find("--- hello:1\n+++ hello:2\n"), std::string::npos) << text_diff.out;

  json st = status();
  std::map<std::string, int> pid_of;  // task id -> pid
  for (const auto& t : st["services"][0]["tasks"]) {
    pid_of[t["id"]] = t["pid"];
    EXPECT_EQ(t["liveness"], "healthy") << st.dump(2);
  }
  ASSERT_EQ(pid_of.size(), 2u);
  const std::string crash_id = pid_of.begin()->first;
  const std::string hang_id = std::next(pid_of.begin())->first;

  // Task logs: what the task printed.
  auto tlog =
      run({CUTOVER_BIN, "logs", "hello", "--task", crash_id, "--state-dir", state_.string()});
  EXPECT_EQ(tlog.exit_code, 0) << tlog.err;
  EXPECT_NE(tlog.out.find("hello v2 listening on 127.0.0.1:"), std::string::npos) << tlog.out;
  {
    // -f keeps printing what the task prints after it started following.
    Child follow(
        {CUTOVER_BIN, "logs", "hello", "--task", crash_id, "-f", "--state-dir", state_.string()},
        dir_.path() / "follow.log");
    ASSERT_TRUE(wait_for(
        [&] {
          return read_text(dir_.path() / "follow.log").find("listening") != std::string::npos;
        },
        30s));
    EXPECT_TRUE(wait_for(
        [&] {
          (void)http_get(port_, "/version?followed");  // reaches one of the two tasks
          return read_text(dir_.path() / "follow.log").find("GET /version?followed") !=
                 std::string::npos;
        },
        30s))
        << read_text(dir_.path() / "follow.log");
  }

  // A task that crashes is restarted under the same id (and port), with a new pid in the store.
  ASSERT_EQ(::kill(pid_of[crash_id], SIGKILL), 0);
  ASSERT_TRUE(wait_for(
      [&] {
        json s = status();
        if (!s.is_object()) return false;
        for (const auto& t : s["services"][0]["tasks"]) {
          if (t["id"] == crash_id && t["pid"] != pid_of[crash_id] && t["restarts"] == 1) {
            pid_of[crash_id] = t["pid"];
            return true;
          }
        }
        return false;
      },
      60s))
      << status().dump(2) << serve_log();
  EXPECT_NE(serve_log().find("task " + crash_id), std::string::npos);
  ASSERT_TRUE(wait_for([&] { return serves("v2"); }, 30s));

  // The controller is SIGKILLed and started again: the same processes, each once, re-adopted.
  // python3 may be a wrapper script (pyenv) that forks before it execs: wait until both tasks are
  // python itself, with the pids the store has.
  auto settled = [&] {
    auto procs = task_processes(state_);
    if (procs.size() != 2) return false;
    for (const auto& [pid, id] : procs) {
      std::error_code ec;
      auto exe = fs::read_symlink("/proc/" + std::to_string(pid) + "/exe", ec).filename().string();
      if (ec || exe.rfind("python", 0) != 0 || pid_of[id] != pid) return false;
    }
    return true;
  };
  ASSERT_TRUE(wait_for(settled, 30s));
  std::map<int, std::string> before = task_processes(state_);
  auto show = [](const std::map<int, std::string>& m) {
    std::string out;
    for (const auto& [pid, id] : m) {
      out += std::to_string(pid) + "=" + id + " " +
             read_text("/proc/" + std::to_string(pid) + "/cmdline") + "\n";
    }
    return out;
  };
  ASSERT_EQ(before.size(), 2u) << show(before) << status().dump(2);
  EXPECT_EQ(before[pid_of[crash_id]], crash_id);
  EXPECT_EQ(before[pid_of[hang_id]], hang_id);
  serve_->kill(SIGKILL);
  ASSERT_TRUE(serve_->wait(10s).has_value());
  // While it is down, a process appears that claims to be a task of this state directory but
  // that no stored task accounts for: the restarted controller reports it and leaves it alone.
  // (setsid forks the new session leader and waits for it.)
  Child stray({"setsid", "-w", "/usr/bin/env", "CUTOVER_TASK_DIR=" + (state_ / "tasks").string(),
               "TASK_ID=task-stray", "/bin/sleep", "1000"},
              dir_.path() / "stray.log");
  start_serve();
  ASSERT_TRUE(wait_for(
      [&] {
        json s = status();
        return s.is_object() && !s["services"].empty() && s["services"][0]["tasks"].size() == 2 &&
               s["services"][0]["tasks"][0]["liveness"] != "unsupervised";
      },
      60s))
      << serve_log();
  st = status();
  for (const auto& t : st["services"][0]["tasks"]) {
    EXPECT_EQ(t["pid"], pid_of[t["id"]]) << "re-adopted, not restarted: " << st.dump(2);
  }
  EXPECT_EQ(task_processes(state_), before) << "nothing started twice, nothing orphaned";
  EXPECT_NE(serve_log().find("re-adopted 2 running task(s)"), std::string::npos) << serve_log();
  ASSERT_EQ(st["unaccounted_tasks"].size(), 1u) << st.dump(2);
  EXPECT_EQ(st["unaccounted_tasks"][0]["task_id"], "task-stray");
  const int stray_pid = st["unaccounted_tasks"][0].value("pid", 0);
  ASSERT_GT(stray_pid, 1);
  EXPECT_NE(read_text("/proc/" + std::to_string(stray_pid) + "/environ").find("task-stray"),
            std::string::npos);
  EXPECT_TRUE(stray.alive()) << "an unaccounted task is reported, not killed";
  ::kill(stray_pid, SIGKILL);

  // Liveness is re-attached: a task that hangs (SIGSTOP) fails its checks and is replaced by the
  // restarted controller, though it is not its child.
  ASSERT_EQ(::kill(pid_of[hang_id], SIGSTOP), 0);
  const int hung_pid = pid_of[hang_id];
  ASSERT_TRUE(wait_for(
      [&] {
        json s = status();
        if (!s.is_object()) return false;
        for (const auto& t : s["services"][0]["tasks"]) {
          if (t["id"] == hang_id && t["pid"] != hung_pid) return true;
        }
        return false;
      },
      60s))
      << status().dump(2) << serve_log();
  EXPECT_NE(serve_log().find("is unhealthy: liveness"), std::string::npos) << serve_log();
  ASSERT_TRUE(wait_for(
      [&] {
        json s = status();
        if (!s.is_object()) return false;
        for (const auto& t : s["services"][0]["tasks"]) pid_of[t["id"]] = t["pid"];
        return settled();
      },
      30s))
      << status().dump(2);
  EXPECT_EQ(task_processes(state_).count(hung_pid), 0u) << "the hung process must be gone";
  ASSERT_TRUE(wait_for([&] { return serves("v2"); }, 30s));
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
