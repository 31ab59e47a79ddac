#include "config/config.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/fs.hpp"
#include "core/temp_dir.hpp"

namespace cutover::config {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

const fs::path kData = fs::path(CUTOVER_SOURCE_DIR) / "tests" / "config";

std::shared_ptr<const Config> must_load(const fs::path& p) {
  auto r = load_config(p);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  return r.ok() ? *r : std::make_shared<const Config>();
}

std::shared_ptr<const Config> must_parse(std::string_view text) {
  auto r = parse_config(text, "t.yaml");
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  return r.ok() ? *r : std::make_shared<const Config>();
}

std::string first_error(std::string_view text) {
  auto r = parse_config(text, "t.yaml");
  if (r.ok()) return "<parsed>";
  const std::string& m = r.error().message;
  return m.substr(0, m.find('\n'));
}

TEST(Config, DesignExampleParsesWithTheRightValues) {
  auto c = must_load(kData / "valid" / "design-example.yaml");
  EXPECT_EQ(c->version, 1);
  EXPECT_EQ(c->pipeline.branch, "main");
  ASSERT_EQ(c->pipeline.stages.size(), 4u);

  const Stage& secrets = c->pipeline.stages[0];
  EXPECT_EQ(secrets.name, "secrets");
  EXPECT_EQ(secrets.kind, StageKind::Scan);
  EXPECT_EQ(secrets.scan, ScanKind::Secrets);
  EXPECT_EQ(secrets.mode, ScanMode::Block);

  const Stage& test = c->pipeline.stages[1];
  EXPECT_EQ(test.kind, StageKind::Run);
  EXPECT_THAT(test.phases.build, ElementsAre("make test"));
  EXPECT_EQ(test.timeout, std::optional<core::Duration>(10min));

  const Stage& build = c->pipeline.stages[2];
  EXPECT_EQ(build.kind, StageKind::Run);
  EXPECT_TRUE(build.phases.install.empty());
  EXPECT_THAT(build.phases.build, ElementsAre("make dist"));
  EXPECT_EQ(build.env, (EnvMap{{"CFLAGS", "-O2"}}));
  EXPECT_EQ(build.secrets, (SecretMap{{"NPM_TOKEN", "npm-token"}}));
  EXPECT_THAT(build.cache, ElementsAre(".cache/"));
  EXPECT_THAT(build.artifacts, ElementsAre("dist/"));
  EXPECT_FALSE(build.timeout.has_value());
  EXPECT_EQ(build.effective_timeout(), 1h);

  const Stage& approve = c->pipeline.stages[3];
  EXPECT_EQ(approve.kind, StageKind::Approval);
  EXPECT_EQ(approve.approval_timeout, 24h);

  ASSERT_EQ(c->services.size(), 1u);
  const Service& web = c->services[0];
  EXPECT_EQ(web.name, "web");
  EXPECT_EQ(web.artifact, "build");
  EXPECT_EQ(web.driver, Driver::Process);
  EXPECT_EQ(web.task.count, 2);
  ASSERT_EQ(web.task.containers.size(), 1u);
  const Container& app = web.task.containers[0];
  EXPECT_EQ(app.name, "app");
  EXPECT_THAT(app.command, ElementsAre("dist/server", "--port", "${PORT}"));
  EXPECT_EQ(app.port, std::optional<uint16_t>(8080));
  EXPECT_EQ(app.env, (EnvMap{{"APP_ENV", "production"}}));
  EXPECT_EQ(app.secrets, (SecretMap{{"DATABASE_URL", "web/database-url"}}));
  EXPECT_EQ(app.health.kind, HealthKind::Command);
  EXPECT_THAT(app.health.command, ElementsAre("dist/healthcheck"));
  EXPECT_EQ(app.health.interval, 5s);
  EXPECT_EQ(app.health.timeout, 2s);
  EXPECT_EQ(app.health.retries, 3);
  EXPECT_EQ(app.health.start_period, 10s);
  EXPECT_EQ(app.stop_signal, "SIGTERM");
  EXPECT_EQ(app.stop_signal_number, 15);
  EXPECT_EQ(app.stop_timeout, 10s);

  EXPECT_EQ(web.listeners.production.address, "0.0.0.0:8000");
  EXPECT_EQ(web.listeners.production.host, "0.0.0.0");
  EXPECT_EQ(web.listeners.production.port, 8000);
  ASSERT_TRUE(web.listeners.test.has_value());
  EXPECT_EQ(web.listeners.test->host, "127.0.0.1");
  EXPECT_EQ(web.listeners.test->port, 8001);

  const TargetHealth& th = web.target_health;
  EXPECT_EQ(th.path, "/health");
  EXPECT_EQ(th.interval, 1s);
  EXPECT_EQ(th.timeout, 1s);
  EXPECT_EQ(th.healthy_threshold, 2);
  EXPECT_EQ(th.unhealthy_threshold, 3);
  ASSERT_EQ(th.matcher.size(), 1u);
  EXPECT_EQ(th.matcher[0].low, 200);
  EXPECT_EQ(th.matcher[0].high, 299);

  const Deployment& d = web.deployment;
  EXPECT_EQ(d.strategy, Strategy::BlueGreen);
  EXPECT_EQ(d.traffic.type, TrafficType::Linear);
  EXPECT_EQ(d.traffic.percent, 10);
  EXPECT_EQ(d.traffic.interval, 1min);
  EXPECT_TRUE(d.traffic.preset.empty());
  EXPECT_THAT(d.hooks.after_allow_test_traffic, ElementsAre("curl -fsS ${TEST_URL}/health"));
  EXPECT_TRUE(d.hooks.before_install.empty());
  EXPECT_EQ(d.hook_timeout, 5min);
  ASSERT_EQ(d.alarms.size(), 1u);
  const Alarm& a = d.alarms[0];
  EXPECT_EQ(a.name, "new-version-5xx");
  EXPECT_EQ(a.metric, Metric::Http5xx);
  EXPECT_EQ(a.target, AlarmTarget::Green);
  EXPECT_EQ(a.statistic, Statistic::Sum);
  EXPECT_EQ(a.period, 10s);
  EXPECT_EQ(a.evaluation_periods, 2);
  EXPECT_EQ(a.datapoints_to_alarm, 2);
  EXPECT_EQ(a.comparison, Comparison::Greater);
  EXPECT_EQ(a.threshold, 10);
  EXPECT_EQ(a.min_requests, 20);
  EXPECT_EQ(d.auto_rollback, (std::set{RollbackTrigger::Failure, RollbackTrigger::Alarm}));
  EXPECT_EQ(d.termination_wait, 1h);
  EXPECT_EQ(d.drain_timeout, 30s);
  EXPECT_EQ(d.min_healthy_percent, 100);
  EXPECT_EQ(d.max_percent, 200);
  EXPECT_EQ(d.circuit_breaker_threshold, 3);
  EXPECT_EQ(d.insufficient_data_timeout, 5min);
  EXPECT_FALSE(d.insufficient_data_continue);

  EXPECT_EQ(c->find_service("web"), &web);
  EXPECT_EQ(c->find_service("nope"), nullptr);
  EXPECT_EQ(c->find_stage("build"), &build);
}

TEST(Config, HelloExampleParses) {
  auto c = must_load(kData / "valid" / "hello.yaml");
  ASSERT_EQ(c->services.size(), 1u);
  const Service& s = c->services[0];
  EXPECT_EQ(s.name, "hello");
  EXPECT_THAT(c->pipeline.stages[0].phases.build,
              ElementsAre("mkdir -p dist", "cp server.py dist/"));
  EXPECT_EQ(s.task.count, 2);
  EXPECT_EQ(s.task.containers[0].health.kind, HealthKind::Http);
  EXPECT_EQ(s.task.containers[0].health.path, "/health");
  EXPECT_EQ(s.listeners.production.port, 8000);
  EXPECT_FALSE(s.listeners.test.has_value());
  EXPECT_EQ(s.target_health.interval, 1s);
  // The default target health timeout (2s) is capped at the interval.
  EXPECT_EQ(s.target_health.timeout, 1s);
  EXPECT_EQ(s.target_health.healthy_threshold, 2);
  EXPECT_EQ(s.deployment.traffic.type, TrafficType::AllAtOnce);
}

TEST(Config, Defaults) {
  auto c = must_parse(R"(
version: 1
pipeline:
  stages:
    - { name: gate, scan: config }
    - { name: build, run: make, artifacts: dist }
    - { name: ok, approval: {} }
services:
  web:
    artifact: build
    task: { containers: [{ name: app, command: [dist/server] }] }
    listeners: { production: 127.0.0.1:8000 }
)");
  EXPECT_EQ(c->pipeline.branch, "main");
  const Stage& gate = c->pipeline.stages[0];
  EXPECT_EQ(gate.scan, ScanKind::Config);
  EXPECT_EQ(gate.mode, ScanMode::Block);
  EXPECT_EQ(gate.effective_timeout(), kDefaultStageTimeout);
  EXPECT_THAT(c->pipeline.stages[1].artifacts, ElementsAre("dist"));
  EXPECT_EQ(c->pipeline.stages[2].approval_timeout, 24h);

  const Service& s = c->services[0];
  EXPECT_EQ(s.driver, Driver::Process);
  EXPECT_EQ(s.task.count, 1);
  const Container& app = s.task.containers[0];
  EXPECT_EQ(app.health.kind, HealthKind::None);
  EXPECT_FALSE(app.port.has_value());
  EXPECT_EQ(app.stop_signal, "SIGTERM");
  EXPECT_EQ(app.stop_timeout, 30s);
  EXPECT_EQ(s.target_health.path, "/health");
  EXPECT_EQ(s.target_health.interval, 5s);
  EXPECT_EQ(s.target_health.timeout, 2s);
  EXPECT_EQ(s.target_health.healthy_threshold, 3);
  EXPECT_EQ(s.target_health.unhealthy_threshold, 2);
  const Deployment& d = s.deployment;
  EXPECT_EQ(d.strategy, Strategy::BlueGreen);
  EXPECT_EQ(d.traffic.type, TrafficType::AllAtOnce);
  EXPECT_EQ(d.hook_timeout, 5min);
  EXPECT_TRUE(d.alarms.empty());
  EXPECT_EQ(d.auto_rollback.size(), 2u);
  EXPECT_EQ(d.termination_wait, 1h);
  EXPECT_EQ(d.drain_timeout, 30s);
  EXPECT_EQ(d.min_healthy_percent, 100);
  EXPECT_EQ(d.max_percent, 200);
  EXPECT_EQ(d.circuit_breaker_threshold, 3);
  // The proxy's features are off unless asked for.
  EXPECT_FALSE(s.listeners.production.tls.has_value());
  EXPECT_FALSE(s.listeners.production.redirect_http.has_value());
  EXPECT_EQ(s.load_balancing, LoadBalancing::RoundRobin);
  EXPECT_FALSE(s.target_health.passive.has_value());
  EXPECT_EQ(d.sticky_cookie, "");
}

TEST(Config, ContainerLimits) {
  const std::string head = R"(
version: 1
pipeline:
  stages:
    - { name: build, run: make, artifacts: dist }
services:
  web:
    artifact: build
    listeners: { production: 127.0.0.1:8000 }
    task:
      containers:
        - name: app
          command: [dist/server]
)";
  auto c = must_parse(head + R"(          limits:
            open_files: 4096
            processes: 64
            memory: 512MiB
            file_size: 1G
            cpu_time: 1h
)");
  const Limits& l = c->services[0].task.containers[0].limits;
  EXPECT_EQ(l.open_files, 4096u);
  EXPECT_EQ(l.processes, 64u);
  EXPECT_EQ(l.memory, 512ULL << 20);
  EXPECT_EQ(l.file_size, 1000ULL * 1000 * 1000);
  EXPECT_EQ(l.cpu_time, 1h);
  EXPECT_EQ(must_parse(head)->services[0].task.containers[0].limits, Limits{});
  EXPECT_EQ(first_error(head + "          limits: { memory: 12 parsecs }\n"),
            "t.yaml:14:29: services.web.task.containers[app].limits.memory must be a size such as "
            "512MiB, 1G or 4096 (bytes), got \"12 parsecs\"");
  EXPECT_EQ(first_error(head + "          limits: { memory: 1MiB }\n"),
            "t.yaml:14:29: services.web.task.containers[app].limits.memory must be at least 16MiB, "
            "got 1MiB");
  EXPECT_EQ(first_error(head + "          limits: { open_files: 3 }\n"),
            "t.yaml:14:33: services.web.task.containers[app].limits.open_files must be "
            "16-1048576, got 3");
  EXPECT_THAT(first_error(head + "          limits: { swap: 1G }\n"), HasSubstr("swap"));
}

TEST(Config, ProxyFeatures) {
  auto c = must_load(kData / "valid" / "proxy-features.yaml");
  ASSERT_EQ(c->services.size(), 2u);
  const Service& web = c->services[0];
  const Listener& prod = web.listeners.production;
  EXPECT_EQ(prod.address, "0.0.0.0:8443");
  EXPECT_EQ(prod.host, "0.0.0.0");
  EXPECT_EQ(prod.port, 8443);
  ASSERT_TRUE(prod.tls.has_value());
  EXPECT_EQ(prod.tls->cert, "/etc/cutover/tls/fullchain.pem");
  EXPECT_EQ(prod.tls->key, "/etc/cutover/tls/key.pem");
  ASSERT_TRUE(prod.redirect_http.has_value());
  EXPECT_EQ(prod.redirect_http->address, "0.0.0.0:8080");
  EXPECT_EQ(prod.redirect_http->port, 8080);
  ASSERT_TRUE(web.listeners.test.has_value());
  EXPECT_EQ(web.listeners.test->address, "127.0.0.1:9443");
  EXPECT_TRUE(web.listeners.test->tls.has_value());
  EXPECT_FALSE(web.listeners.test->redirect_http.has_value());
  EXPECT_EQ(web.load_balancing, LoadBalancing::LeastOutstandingRequests);
  ASSERT_TRUE(web.target_health.passive.has_value());
  EXPECT_EQ(web.target_health.passive->consecutive_5xx, 3);
  EXPECT_EQ(web.target_health.passive->consecutive_connect_failures, 3);  // default
  EXPECT_EQ(web.target_health.passive->ejection, 30s);
  EXPECT_EQ(web.target_health.passive->max_ejection_percent, 50);  // default
  EXPECT_EQ(web.deployment.sticky_cookie, "cutover_cohort");

  const Service& api = c->services[1];
  EXPECT_EQ(api.listeners.production.host, "::1");
  EXPECT_EQ(api.listeners.production.tls->cert, "/etc/api/cert.pem");
  EXPECT_EQ(api.listeners.test->address, "127.0.0.1:7001");  // the string form still works
  EXPECT_FALSE(api.listeners.test->tls.has_value());
  EXPECT_EQ(api.load_balancing, LoadBalancing::RoundRobin);
  ASSERT_TRUE(api.target_health.passive.has_value());  // passive: {} = on, with the defaults
  EXPECT_EQ(api.target_health.passive->consecutive_5xx, 5);
  EXPECT_EQ(api.target_health.passive->consecutive_connect_failures, 3);
  EXPECT_EQ(api.target_health.passive->ejection, 10s);
  EXPECT_EQ(api.target_health.passive->max_ejection_percent, 50);
  EXPECT_EQ(api.deployment.sticky_cookie, "api_version");
}

constexpr std::string_view kServiceHead = R"(version: 1
pipeline:
  stages: [{ name: build, run: make, artifacts: dist }]
services:
  web:
    artifact: build
    task: { containers: [{ name: app, command: [dist/server] }] }
)";

TEST(Config, StickyFalseIsOff) {
  auto c = must_parse(std::string(kServiceHead) +
                      "    listeners: { production: 127.0.0.1:8000 }\n"
                      "    deployment: { sticky: false }\n");
  EXPECT_EQ(c->services[0].deployment.sticky_cookie, "");
}

TEST(Config, ListenerFileChecksOnlyWhenAsked) {
  const core::TempDir dir;
  const fs::path cert = dir.path() / "fullchain.pem";
  std::ofstream(cert) << "-----BEGIN CERTIFICATE-----\n";
  const std::string text = std::string(kServiceHead) +
                           "    listeners:\n"
                           "      production:\n"
                           "        address: 127.0.0.1:8443\n"
                           "        tls: { cert: " +
                           cert.string() + ", key: " + (dir.path() / "key.pem").string() + " }\n";
  // Parsing alone is a pure function of the text: the key's absence does not matter.
  EXPECT_TRUE(parse_config(text, "t.yaml").ok());
  auto r = parse_config(text, "t.yaml", ParseOptions{.check_files = true});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "t.yaml:11:" + std::to_string(29 + cert.string().size()) +
                                   ": services.web.listeners.production.tls.key: cannot read \"" +
                                   (dir.path() / "key.pem").string() +
                                   "\": No such file or directory");
  std::ofstream(dir.path() / "key.pem") << "-----BEGIN PRIVATE KEY-----\n";
  EXPECT_TRUE(parse_config(text, "t.yaml", ParseOptions{.check_files = true}).ok());
  auto d =
      parse_config(std::string(kServiceHead) +
                       "    listeners:\n"
                       "      production:\n"
                       "        address: 127.0.0.1:8443\n"
                       "        tls: { cert: " +
                       dir.path().string() + ", key: " + (dir.path() / "key.pem").string() + " }\n",
                   "t.yaml", ParseOptions{.check_files = true});
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.error().message, HasSubstr("is a directory, not a PEM file"));
}

TEST(Config, RedirectListenerConflictsWithOtherServices) {
  auto r = parse_config(std::string(kServiceHead) +
                            "    listeners:\n"
                            "      production:\n"
                            "        address: 0.0.0.0:8443\n"
                            "        tls: { cert: /c.pem, key: /k.pem }\n"
                            "        redirect_http: 0.0.0.0:8080\n"
                            "  api:\n"
                            "    artifact: build\n"
                            "    task: { containers: [{ name: app, command: [dist/api] }] }\n"
                            "    listeners: { production: 127.0.0.1:8080 }\n",
                        "t.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message,
            "t.yaml:16:30: services.api.listeners.production: address 127.0.0.1:8080 conflicts "
            "with services.web.listeners.production.redirect_http (0.0.0.0:8080, line 12)");
}

TEST(Config, AlarmDefaultsDependOnTheMetric) {
  auto c = must_parse(R"(
version: 1
pipeline: { stages: [{ name: build, run: make, artifacts: [dist] }] }
services:
  web:
    artifact: build
    task: { containers: [{ name: app, command: [x] }] }
    listeners: { production: 127.0.0.1:8000 }
    deployment:
      alarms:
        - { name: a, metric: http_5xx, threshold: 5, evaluation_periods: 3 }
        - { name: b, metric: latency_p99, threshold: 1s }
        - { name: c, metric: error_rate, threshold: 2.5, target: production }
)");
  const auto& alarms = c->services[0].deployment.alarms;
  ASSERT_EQ(alarms.size(), 3u);
  EXPECT_EQ(alarms[0].statistic, Statistic::Sum);
  EXPECT_EQ(alarms[0].datapoints_to_alarm, 3);
  EXPECT_EQ(alarms[0].period, 1min);
  EXPECT_EQ(alarms[0].comparison, Comparison::Greater);
  EXPECT_EQ(alarms[1].statistic, Statistic::Avg);
  EXPECT_EQ(alarms[1].threshold, 1000);
  EXPECT_EQ(alarms[2].threshold, 2.5);
  EXPECT_EQ(alarms[2].target, AlarmTarget::Production);
}

TEST(Config, OtherValidFilesParse) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(kData / "valid")) {
    if (e.path().extension() != ".yaml") continue;
    SCOPED_TRACE(e.path().string());
    must_load(e.path());
    ++n;
  }
  EXPECT_GE(n, 4);
  auto c = must_load(kData / "valid" / "multi-service.yaml");
  ASSERT_EQ(c->services.size(), 3u);
  EXPECT_EQ(c->services[0].name, "api");  // file order, not sorted
  EXPECT_EQ(c->services[1].name, "worker");
  EXPECT_EQ(c->services[2].name, "canary");
  EXPECT_EQ(c->pipeline.branch, "release/v2");
  EXPECT_THAT(c->pipeline.stages[0].phases.install, ElementsAre("pip install -r requirements.txt"));
  EXPECT_THAT(c->pipeline.stages[0].artifacts, ElementsAre("dist/"));
  const Service& api = c->services[0];
  EXPECT_EQ(api.listeners.production.host, "::1");
  EXPECT_EQ(api.listeners.production.port, 9000);
  EXPECT_EQ(api.task.containers[0].stop_signal, "SIGINT");
  EXPECT_EQ(api.task.containers[0].stop_signal_number, 2);
  EXPECT_EQ(api.task.containers[0].health.kind, HealthKind::Tcp);
  EXPECT_TRUE(api.deployment.auto_rollback.empty());
  EXPECT_EQ(api.deployment.insufficient_data_timeout, 90s);
  EXPECT_TRUE(api.deployment.insufficient_data_continue);
  EXPECT_EQ(api.deployment.alarms[0].threshold, 750);
  EXPECT_EQ(api.deployment.alarms[0].comparison, Comparison::GreaterOrEqual);
  EXPECT_THAT(traffic_schedule(api.deployment.traffic),
              ElementsAre(TrafficStep{1, 2min}, TrafficStep{50, 5min}, TrafficStep{100, 0s}));
  const Service& worker = c->services[1];
  EXPECT_EQ(worker.driver, Driver::Podman);
  EXPECT_EQ(worker.artifact, "");
  EXPECT_EQ(worker.task.containers[0].image, "localhost:5000/web:${COMMIT_SHORT}");
  EXPECT_EQ(worker.deployment.strategy, Strategy::Rolling);
  EXPECT_EQ(worker.deployment.min_healthy_percent, 50);
  EXPECT_EQ(worker.deployment.max_percent, 150);
  EXPECT_EQ(worker.deployment.circuit_breaker_threshold, 2);
  ASSERT_EQ(worker.target_health.matcher.size(), 2u);
  EXPECT_EQ(worker.target_health.matcher[1].low, 302);
  EXPECT_EQ(worker.target_health.matcher[1].high, 303);
  EXPECT_EQ(c->services[2].deployment.traffic.preset,
            "CodeDeployDefault.ECSCanary10Percent15Minutes");
}

struct PresetCase {
  const char* name;
  TrafficType type;
  int percent;
  core::Duration interval;
  size_t schedule_size;
};

TEST(Config, EveryPresetExpands) {
  const PresetCase cases[] = {
      {"CodeDeployDefault.ECSAllAtOnce", TrafficType::AllAtOnce, 0, 0s, 1},
      {"CodeDeployDefault.ECSCanary10Percent5Minutes", TrafficType::Canary, 10, 5min, 2},
      {"CodeDeployDefault.ECSCanary10Percent15Minutes", TrafficType::Canary, 10, 15min, 2},
      {"CodeDeployDefault.ECSLinear10PercentEvery1Minutes", TrafficType::Linear, 10, 1min, 10},
      {"CodeDeployDefault.ECSLinear10PercentEvery3Minutes", TrafficType::Linear, 10, 3min, 10},
  };
  for (const auto& pc : cases) {
    SCOPED_TRACE(pc.name);
    auto c = must_parse(std::string(R"(
version: 1
pipeline: { stages: [{ name: build, run: make, artifacts: [dist] }] }
services:
  web:
    artifact: build
    task: { containers: [{ name: app, command: [x] }] }
    listeners: { production: 127.0.0.1:8000 }
    deployment: { traffic: )") +
                        pc.name + " }\n");
    ASSERT_EQ(c->services.size(), 1u);
    const Traffic& t = c->services[0].deployment.traffic;
    EXPECT_EQ(t.type, pc.type);
    EXPECT_EQ(t.preset, pc.name);
    if (pc.type != TrafficType::AllAtOnce) {
      EXPECT_EQ(t.percent, pc.percent);
      EXPECT_EQ(t.interval, pc.interval);
    }
    auto schedule = traffic_schedule(t);
    ASSERT_EQ(schedule.size(), pc.schedule_size);
    EXPECT_EQ(schedule.back(), (TrafficStep{100, 0s}));
    if (pc.type != TrafficType::AllAtOnce) {
      EXPECT_EQ(schedule.front(), (TrafficStep{10, pc.interval}));
    }
  }
}

TEST(Config, TrafficSchedules) {
  Traffic linear;
  linear.type = TrafficType::Linear;
  linear.percent = 30;
  linear.interval = 1min;
  EXPECT_THAT(traffic_schedule(linear), ElementsAre(TrafficStep{30, 1min}, TrafficStep{60, 1min},
                                                    TrafficStep{90, 1min}, TrafficStep{100, 0s}));
  Traffic steps;
  steps.type = TrafficType::Steps;
  steps.steps = {{20, 1s}, {100, 0s}};
  EXPECT_THAT(traffic_schedule(steps), ElementsAre(TrafficStep{20, 1s}, TrafficStep{100, 0s}));
  EXPECT_THAT(traffic_schedule(Traffic{}), ElementsAre(TrafficStep{100, 0s}));
}

TEST(Config, ReportsAllErrorsSortedOnePerLine) {
  auto r = parse_config(R"(version: 2
pipeline:
  stages:
    - name: build
      run: make
      timeout: soon
services:
  web:
    artifact: nope
    task: { containers: [{ name: app, command: [x] }], count: 0 }
    listeners: { production: 127.0.0.1:8000 }
)",
                        "cutover.yaml");
  ASSERT_FALSE(r.ok());
  std::vector<std::string> lines;
  std::istringstream in(r.error().message);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  ASSERT_EQ(lines.size(), 4u) << r.error().message;
  EXPECT_THAT(lines[0], HasSubstr("cutover.yaml:1:10: version must be 1"));
  EXPECT_THAT(lines[1], HasSubstr("cutover.yaml:6:16: pipeline.stages[build].timeout: invalid"));
  EXPECT_THAT(lines[2], HasSubstr("cutover.yaml:9:15: services.web.artifact: no stage named"));
  EXPECT_THAT(lines[3], HasSubstr("cutover.yaml:10:63: services.web.task.count must be 1-100"));
}

// Every tests/config/invalid/NAME.yaml fails, and the first error line is NAME.expected exactly.
TEST(Config, InvalidFilesReportTheExpectedFirstError) {
  const bool regenerate = std::getenv("CUTOVER_REGENERATE_EXPECTED") != nullptr;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(kData / "invalid")) {
    if (e.path().extension() == ".yaml") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  EXPECT_GE(files.size(), 35u);
  for (const auto& f : files) {
    SCOPED_TRACE(f.filename().string());
    auto text = core::read_file(f);
    ASSERT_TRUE(text.ok());
    // With the file checks of `cutover validate` (listener-tls-missing-file.yaml needs them).
    auto r = parse_config(*text, f.filename().string(), ParseOptions{.check_files = true});
    ASSERT_FALSE(r.ok()) << "parsed without errors";
    const std::string& m = r.error().message;
    const std::string first = m.substr(0, m.find('\n'));
    fs::path expected_path = f;
    expected_path.replace_extension(".expected");
    if (regenerate) {
      std::ofstream(expected_path) << first << "\n";
      continue;
    }
    auto expected = core::read_file(expected_path);
    ASSERT_TRUE(expected.ok()) << "missing " << expected_path;
    std::string want = *expected;
    while (!want.empty() && (want.back() == '\n' || want.back() == '\r')) want.pop_back();
    EXPECT_EQ(first, want) << "all errors:\n" << m;
  }
}

TEST(Config, YamlSyntaxErrorsHaveAPosition) {
  EXPECT_THAT(first_error("version: 1\npipeline: [\n"), HasSubstr("t.yaml:3:1: invalid YAML:"));
  EXPECT_THAT(first_error("a: b: c\n"), HasSubstr("t.yaml:1:5: invalid YAML:"));
  // yaml-cpp 0.7's LoadAll never returns on these (jbeder/yaml-cpp#1040).
  EXPECT_THAT(first_error(","), HasSubstr("t.yaml:1:1: invalid YAML: unexpected \",\""));
  EXPECT_THAT(first_error("\"a\","), HasSubstr("t.yaml:1:"));
  EXPECT_EQ(first_error(""),
            "t.yaml:1:1: the file is empty; expected a mapping with version, "
            "pipeline and services");
}

TEST(Config, LoadConfigNamesTheMissingFile) {
  auto r = load_config(kData / "does-not-exist.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message, HasSubstr("does-not-exist.yaml"));
}

TEST(Config, NeverThrowsOnTruncatedOrMangledInput) {
  auto text = core::read_file(kData / "valid" / "design-example.yaml");
  ASSERT_TRUE(text.ok());
  int failures = 0;
  for (size_t n = 0; n < text->size(); n += 29) {
    auto r = parse_config(std::string_view(*text).substr(0, n), "x.yaml");
    if (!r.ok()) {
      ++failures;
      EXPECT_THAT(r.error().message, ::testing::StartsWith("x.yaml:"));
    }
  }
  EXPECT_GT(failures, 0);
  std::string mangled = *text;
  for (size_t i = 0; i < mangled.size(); i += 13) mangled[i] = "{[:-&*!|>'\"%@`,?#"[i % 17];
  auto r = parse_config(mangled, "x.yaml");
  EXPECT_FALSE(r.ok());
}

TEST(Config, ExpandVariables) {
  const std::map<std::string, std::string> vars{{"PORT", "8080"}, {"SERVICE", "web"}};
  EXPECT_EQ(expand_variables("--port=${PORT}", vars), "--port=8080");
  EXPECT_EQ(expand_variables("${SERVICE}:${PORT}${PORT}", vars), "web:80808080");
  EXPECT_EQ(expand_variables("${UNKNOWN} $PORT ${PORT", vars), "${UNKNOWN} $PORT ${PORT");
  EXPECT_EQ(expand_variables("$${PORT} $$ $", vars), "${PORT} $$ $");
  EXPECT_EQ(expand_variables("", vars), "");
}

TEST(Config, VariableListsFollowTheDesign) {
  EXPECT_THAT(stage_variables(),
              ElementsAre("COMMIT_SHA", "COMMIT_SHORT", "BRANCH", "EXECUTION_ID", "WORKSPACE"));
  EXPECT_THAT(hook_variables(), ElementsAre("TEST_URL", "PRODUCTION_URL", "DEPLOYMENT_ID",
                                            "SERVICE", "REVISION", "PHASE"));
  EXPECT_THAT(task_variables(),
              ::testing::IsSupersetOf({"PORT", "SERVICE", "REVISION", "TASK_ID", "COLOR"}));
}

TEST(Config, JsonSchemaIsValidJsonAndCoversTheFormat) {
  const std::string schema = json_schema();
  auto j = nlohmann::json::parse(schema, nullptr, false);
  ASSERT_FALSE(j.is_discarded());
  EXPECT_EQ(j["$schema"], "https://json-schema.org/draft/2020-12/schema");
  EXPECT_EQ(j["additionalProperties"], false);
  for (const char* key : {"version", "pipeline", "services", "notifications"}) {
    EXPECT_TRUE(j["properties"].contains(key)) << key;
  }
  for (const char* key : {"stages",
                          "trigger",
                          "artifact",
                          "task",
                          "listeners",
                          "target_health",
                          "deployment",
                          "traffic",
                          "hooks",
                          "alarms",
                          "auto_rollback",
                          "termination_wait",
                          "drain_timeout",
                          "circuit_breaker",
                          "insufficient_data",
                          "stop_signal",
                          "start_period",
                          "datapoints_to_alarm",
                          "min_requests",
                          "approval",
                          "load_balancing",
                          "least_outstanding_requests",
                          "tls",
                          "redirect_http",
                          "passive",
                          "consecutive_connect_failures",
                          "max_ejection_percent",
                          "sticky",
                          "cookie",
                          "url_secret",
                          "deployment.rolled_back",
                          "CodeDeployDefault.ECSCanary10Percent5Minutes"}) {
    EXPECT_THAT(schema, HasSubstr(std::string("\"") + key + "\"")) << key;
  }
}

}  // namespace
}  // namespace cutover::config

namespace cutover::config {
namespace {

TEST(Config, NotificationsParseWithDefaults) {
  auto r = parse_config(R"(version: 1
pipeline:
  stages: [{ name: build, run: make }]
notifications:
  - url: http://127.0.0.1:9000/hook
  - url: https://hooks.example.com/x
    format: slack
    events: [execution.failed, deployment.rolled_back]
    secret: notify/ops
  - url_secret: notify/slack-url
    format: slack
)",
                        "cutover.yaml");
  ASSERT_TRUE(r.ok()) << r.error().message;
  const auto& n = (*r)->notifications;
  ASSERT_EQ(n.size(), 3u);
  EXPECT_EQ(n[0].url, "http://127.0.0.1:9000/hook");
  EXPECT_EQ(n[0].format, NotificationFormat::Json);
  EXPECT_TRUE(n[0].events.empty());
  EXPECT_TRUE(n[0].secret.empty());
  EXPECT_EQ(n[1].format, NotificationFormat::Slack);
  EXPECT_THAT(n[1].events, ElementsAre("execution.failed", "deployment.rolled_back"));
  EXPECT_EQ(n[1].secret, "notify/ops");
  EXPECT_EQ(n[2].url_secret, "notify/slack-url");
  EXPECT_TRUE(n[2].url.empty());
}

}  // namespace
}  // namespace cutover::config
