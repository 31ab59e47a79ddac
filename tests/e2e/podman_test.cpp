// The podman driver end to end with real containers: an image built here (a static busybox and a
// few files, `podman import`ed), a task set of two containers behind the real `cutover proxy`, the
// secret masked in the task logs, re-adoption by a second driver (a restarted controller) through
// the containers' labels, and stop. Skipped, with the reason printed, only where podman cannot
// run containers.
#include <signal.h>

#include <regex>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/id.hpp"
#include "harness.hpp"
#include "proxy/snapshot.hpp"
#include "runtime/podman_driver.hpp"

namespace cutover::e2e {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace std::chrono_literals;

const std::string kToken = "tok-" + std::string("Pd9Vx2Qa");

class Podman : public ::testing::Test {
 protected:
  void SetUp() override {
    auto version = run({"podman", "--version"});
    if (version.exit_code != 0) {
      GTEST_SKIP() << "podman cannot run here (`podman --version` failed: " << version.err
                   << "); scripts/setup installs it";
    }
    auto ldd = run({"/bin/sh", "-c", "ldd /bin/busybox 2>&1"});
    if (ldd.out.find("not a dynamic executable") == std::string::npos) {
      GTEST_SKIP() << "the test image needs a static /bin/busybox (Debian: busybox-static; "
                      "scripts/setup installs it)";
    }
    image_ = "localhost/cutover-e2e-" + core::random_hex(4) + ":1";
    const fs::path root = dir_.path() / "rootfs";
    fs::create_directories(root / "bin");
    fs::create_directories(root / "www");
    fs::copy_file("/bin/busybox", root / "bin" / "busybox");
    write_text(root / "www" / "index.html", "hello from podman\n");
    write_text(root / "www" / "health", "ok\n");
    sh(dir_.path(),
       "tar -C rootfs -cf rootfs.tar . && podman import -q rootfs.tar " + image_ + " >/dev/null");
    imported_ = true;
    auto probe = run({"podman", "run", "--rm", "--runtime", "runc", "--ulimit", "nofile=1024:1024",
                      "--ulimit", "nproc=4096:4096", image_, "/bin/busybox", "true"});
    if (probe.exit_code != 0) {
      GTEST_SKIP() << "podman cannot run containers here: " << probe.out << probe.err;
    }
  }

  void TearDown() override {
    proxy_.reset();
    if (imported_) (void)run({"podman", "rmi", "-f", image_});
  }

  runtime::TaskSpec spec() const {
    runtime::TaskSpec s;
    s.service = "web";
    s.container = "app";
    s.revision = "0123456789abcdef";
    s.color = "blue";
    s.image = image_;
    s.container_port = 8080;
    s.command = {"/bin/busybox", "sh", "-c",
                 "echo \"token is $API_TOKEN on $PORT\"; exec /bin/busybox httpd -f -v -p $PORT "
                 "-h /www"};
    s.secrets = {{"API_TOKEN", kToken}};
    s.log_dir = dir_.path() / "logs";
    s.stop_timeout = 2s;
    return s;
  }

  TempDir dir_{"cutover-e2e-podman"};
  std::string image_;
  bool imported_ = false;
  std::unique_ptr<Child> proxy_;
};

TEST_F(Podman, TaskSetBehindTheProxyReadoptedByLabelsAndStopped) {
  runtime::PodmanDriverOptions options;
  options.log_copier = {CUTOVER_BIN, "task-log"};
  runtime::PortAllocator ports;
  runtime::PodmanDriver driver(ports, options);
  auto set = runtime::start_task_set(driver, spec(), 2);
  ASSERT_TRUE(set.ok()) << set.error().message;
  ASSERT_EQ(set->size(), 2u);
  for (const auto& t : *set) {
    EXPECT_TRUE(driver.alive(t));
    EXPECT_TRUE(wait_for([&] { return http_get(t.port, "/").status == 200; }, 60s))
        << t.task_id << " on " << t.port;
  }

  // Behind the real proxy: one target group with both containers.
  proxy::RouteSnapshot snap;
  snap.version = 1;
  proxy::TargetGroup group;
  group.name = "web-blue";
  for (const auto& t : *set) {
    group.targets.push_back(proxy::Target{t.task_id, "127.0.0.1:" + std::to_string(t.port)});
  }
  group.health.interval_ms = 100;
  group.health.healthy_threshold = 1;
  snap.target_groups.push_back(group);
  const int proxy_port = free_port();
  proxy::Listener listener;
  listener.name = "web/production";
  listener.address = "127.0.0.1:" + std::to_string(proxy_port);
  listener.routes.push_back(proxy::Route{"web-blue", proxy::kWeightTotal});
  snap.listeners.push_back(listener);
  write_text(dir_.path() / "snapshot.json", proxy::to_json(snap));
  proxy_ = std::make_unique<Child>(
      std::vector<std::string>{CUTOVER_BIN, "proxy", "--admin-socket",
                               (dir_.path() / "admin.sock").string(), "--state-file",
                               (dir_.path() / "snapshot.json").string()},
      dir_.path() / "proxy.log");
  ASSERT_TRUE(wait_for([&] { return http_get(proxy_port, "/").status == 200; }, 60s))
      << read_text(dir_.path() / "proxy.log");
  for (int i = 0; i < 20; ++i) {
    auto r = http_get(proxy_port, "/");
    ASSERT_EQ(r.status, 200) << r.error;
    EXPECT_EQ(r.body, "hello from podman\n");
  }

  // Logs: conmon's records unwrapped, the secret masked, requests logged by httpd.
  for (const auto& t : *set) {
    ASSERT_TRUE(
        wait_for([&] { return read_text(t.log_path).find("token is *** on 8080\n") == 0; }, 30s))
        << read_text(t.log_path);
    EXPECT_EQ(read_text(t.log_path).find(kToken), std::string::npos);
  }

  // A second driver (a restarted controller) finds the containers by their labels and adopts them.
  runtime::PortAllocator ports2;
  runtime::PodmanDriver driver2(ports2, options);
  auto listed = driver2.list_containers();
  ASSERT_TRUE(listed.ok()) << listed.error().message;
  int found = 0;
  for (const auto& c : *listed) {
    for (const auto& t : *set) {
      if (c.task_id == t.task_id) {
        ++found;
        EXPECT_EQ(c.name, runtime::PodmanDriver::container_name(t.task_id));
        EXPECT_EQ(c.service, "web");
        EXPECT_EQ(c.state, "running");
      }
    }
  }
  EXPECT_EQ(found, 2);
  for (const auto& t : *set) {
    auto adopted = driver2.adopt(t);
    EXPECT_TRUE(adopted.ok()) << adopted.error().message;
    EXPECT_TRUE(ports2.is_allocated(t.port));
  }
  runtime::Task stranger = set->front();
  stranger.task_id = "task-0000000000";
  auto refused = driver2.adopt(stranger);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().kind, core::ErrorKind::NotFound);

  // Stop through the adopting driver: containers gone, ports released, still serving nothing.
  ASSERT_TRUE(runtime::stop_task_set(driver2, *set).ok());
  EXPECT_EQ(ports2.allocated_count(), 0u);
  listed = driver2.list_containers();
  ASSERT_TRUE(listed.ok());
  for (const auto& c : *listed) {
    for (const auto& t : *set) EXPECT_NE(c.task_id, t.task_id) << "container left behind";
  }
  for (const auto& t : *set) {
    EXPECT_FALSE(driver2.alive(t));
    EXPECT_NE(http_get(t.port, "/", 2s).status, 200);
  }
  // The first driver (the "crashed" controller) sees its tasks end once, and reaps the copiers.
  size_t ended = 0;
  EXPECT_TRUE(wait_for(
      [&] {
        ended += driver.reap().size();
        return ended == 2;
      },
      30s));
}

// The same through `cutover serve`: a service with `driver: podman` in cutover.yaml is deployed
// behind the proxy, and a controller killed with SIGKILL and started again re-adopts the same
// containers (by their labels) instead of starting new ones.
TEST_F(Podman, ServeDeploysADriverPodmanServiceAndReadoptsItAfterSigkill) {
  const fs::path app = dir_.path() / "app";
  const fs::path state = dir_.path() / "state";
  const int port = free_port();
  fs::create_directories(app);
  write_text(app / "cutover.yaml", R"(version: 1
pipeline:
  trigger: { branch: main }
  stages:
    - name: check
      run: "true"
services:
  ctr:
    driver: podman
    task:
      containers:
        - name: app
          image: IMAGE
          port: 8080
          command: [/bin/busybox, httpd, -f, -p, "${PORT}", -h, /www]
          stop_timeout: 2s
      count: 2
    listeners:
      production: 127.0.0.1:PRODUCTION_PORT
    target_health:
      path: /health
      interval: 1s
      healthy_threshold: 2
    deployment:
      strategy: blue_green
      traffic: { type: all_at_once }
      drain_timeout: 2s
)");
  std::string yaml = read_text(app / "cutover.yaml");
  yaml = std::regex_replace(yaml, std::regex("IMAGE"), image_);
  yaml = std::regex_replace(yaml, std::regex("PRODUCTION_PORT"), std::to_string(port));
  write_text(app / "cutover.yaml", yaml);
  auto valid = run({CUTOVER_BIN, "validate", (app / "cutover.yaml").string()});
  ASSERT_EQ(valid.exit_code, 0) << valid.err;
  sh(app, "git init -q -b main && git add -A && git commit -q -m 'containers'");

  const auto serve = [&] {
    return std::make_unique<Child>(
        std::vector<std::string>{CUTOVER_BIN, "serve", "--repo", app.string(), "--state-dir",
                                 state.string(), "--api", "127.0.0.1:0", "--poll", "250ms"},
        dir_.path() / "serve.log");
  };
  const auto status = [&] {
    auto r = run({CUTOVER_BIN, "status", "--state-dir", state.string(), "-o", "json"});
    return r.exit_code == 0 ? json::parse(r.out, nullptr, false) : json();
  };
  const auto task_ids = [&] {
    std::vector<std::string> ids;
    json st = status();
    if (!st.is_object() || st["services"].empty()) return ids;
    for (const auto& t : st["services"][0]["tasks"]) ids.push_back(t["id"]);
    std::sort(ids.begin(), ids.end());
    return ids;
  };
  struct Cleanup {
    std::function<void()> fn;
    ~Cleanup() { fn(); }
  } cleanup{[&] {
    (void)run({"/bin/sh", "-c",
               "podman rm -f $(podman ps -aq --filter label=cutover.service=ctr) >/dev/null "
               "2>&1; pkill -KILL -f -- '--admin-socket " +
                   (state / "proxy").string() + "'"});
  }};

  auto controller = serve();
  ASSERT_TRUE(wait_for(
      [&] {
        auto r = http_get(port, "/");
        return r.status == 200 && r.body == "hello from podman\n";
      },
      180s))
      << read_text(dir_.path() / "serve.log");
  const std::vector<std::string> before = task_ids();
  ASSERT_EQ(before.size(), 2u) << status().dump(2);
  auto ps =
      run({"podman", "ps", "--filter", "label=cutover.service=ctr", "--format", "{{.Names}}"});
  for (const auto& id : before) {
    EXPECT_NE(ps.out.find("cutover-" + id), std::string::npos) << ps.out;
  }

  controller->kill(SIGKILL);
  ASSERT_TRUE(controller->wait(10s).has_value());
  EXPECT_EQ(http_get(port, "/").status, 200);  // the proxy and the containers kept serving
  controller = serve();
  // (The API answers from the store before recovery ends: wait for recovery's own report.)
  ASSERT_TRUE(wait_for(
      [&] {
        return read_text(dir_.path() / "serve.log").find("re-adopted 2 running task(s)") !=
               std::string::npos;
      },
      60s))
      << read_text(dir_.path() / "serve.log");
  EXPECT_EQ(task_ids(), before);
  ps = run({"podman", "ps", "--filter", "label=cutover.service=ctr", "--format", "{{.Names}}"});
  EXPECT_EQ(std::count(ps.out.begin(), ps.out.end(), '\n'), 2) << ps.out;
  EXPECT_EQ(http_get(port, "/").status, 200);

  // A container that dies is restarted by the runtime under the same task id and host port.
  auto killed = run({"podman", "kill", "cutover-" + before[0]});
  ASSERT_EQ(killed.exit_code, 0) << killed.err;
  ASSERT_TRUE(wait_for(
      [&] {
        json st = status();
        if (!st.is_object() || st["services"].empty()) return false;
        for (const auto& t : st["services"][0]["tasks"]) {
          if (t["id"] == before[0] && t.value("restarts", 0) >= 1 &&
              t.value("liveness", "") != "failed") {
            return true;
          }
        }
        return false;
      },
      60s))
      << status().dump(2) << read_text(dir_.path() / "serve.log");
  EXPECT_EQ(task_ids(), before);
  ASSERT_TRUE(wait_for(
      [&] {
        auto r = run(
            {"podman", "ps", "--filter", "name=cutover-" + before[0], "--format", "{{.Names}}"});
        return r.out.find("cutover-" + before[0]) != std::string::npos;
      },
      30s));
  EXPECT_EQ(http_get(port, "/").status, 200);
  controller.reset();
}

}  // namespace
}  // namespace cutover::e2e
