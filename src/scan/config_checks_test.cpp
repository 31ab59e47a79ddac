// `scan: config`: one case per check, a clean file, and the gate on a checkout.
#include <gtest/gtest.h>

#include <fstream>

#include "core/temp_dir.hpp"
#include "scan/scan.hpp"

namespace cutover::scan {
namespace {

// A file that passes every check.
const char* kClean = R"(version: 1
pipeline:
  stages:
    - name: test
      run: make test
      env: { CFLAGS: -O2 }
services:
  web:
    artifact: build
    task:
      containers:
        - name: app
          image: localhost:5000/web:${COMMIT_SHORT}
          env: { APP_ENV: production }
          secrets: { DATABASE_URL: web/database-url }
          health: { http: /health }
    listeners:
      production:
        address: 0.0.0.0:8443
        tls: { cert: /etc/cutover/fullchain.pem, key: /etc/cutover/key.pem }
      test: 127.0.0.1:8001
    deployment:
      auto_rollback: [failure, alarm]
      alarms:
        - { name: errors, metric: http_5xx, period: 10s, threshold: 10 }
)";

std::vector<std::string> ids(const std::vector<ConfigFinding>& fs) {
  std::vector<std::string> out;
  for (const auto& f : fs) out.push_back(f.id);
  return out;
}

TEST(ConfigChecks, CleanFileHasNoFindings) {
  auto r = check_config(kClean, "cutover.yaml");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(r->empty()) << format_config_findings(*r, "cutover.yaml");
}

TEST(ConfigChecks, EachCheckFiresWhereItShould) {
  struct Case {
    std::string from, to, id, where;
    int line;
  };
  const std::vector<Case> cases = {
      {"env: { APP_ENV: production }",
       "env: { APP_ENV: production, STRIPE: sk_live_1Qh6yYTWmE4lBYOvfZ8UzDzV }", "CFG001",
       "services.web.task.containers[0].env.STRIPE", 14},
      {"env: { CFLAGS: -O2 }", "env: { DB_PASSWORD: hunter2 }", "CFG001",
       "pipeline.stages[0].env.DB_PASSWORD", 6},
      {"image: localhost:5000/web:${COMMIT_SHORT}", "image: localhost:5000/web", "CFG002",
       "services.web.task.containers[0].image", 13},
      {"image: localhost:5000/web:${COMMIT_SHORT}", "image: docker.io/library/nginx:latest",
       "CFG002", "services.web.task.containers[0].image", 13},
      {"          health: { http: /health }\n", "", "CFG003", "services.web.task.containers[0]",
       12},
      {"      production:\n        address: 0.0.0.0:8443\n        tls: { cert: "
       "/etc/cutover/fullchain.pem, key: /etc/cutover/key.pem }\n",
       "      production: 0.0.0.0:8000\n", "CFG004", "services.web.listeners.production", 18},
      {"      alarms:\n        - { name: errors, metric: http_5xx, period: 10s, threshold: 10 }\n",
       "", "CFG005", "services.web.deployment.auto_rollback", 23},
      {"test: 127.0.0.1:8001", "test: 0.0.0.0:8001", "CFG006", "services.web.listeners.test", 21},
  };
  for (const auto& c : cases) {
    std::string yaml = kClean;
    const size_t at = yaml.find(c.from);
    ASSERT_NE(at, std::string::npos) << c.from;
    yaml.replace(at, c.from.size(), c.to);
    auto r = check_config(yaml, "cutover.yaml");
    ASSERT_TRUE(r) << r.error().message;
    ASSERT_EQ(ids(*r), std::vector<std::string>{c.id}) << yaml;
    EXPECT_EQ((*r)[0].where, c.where);
    EXPECT_EQ((*r)[0].line, c.line) << c.id;
    EXPECT_FALSE((*r)[0].fix.empty());
    EXPECT_FALSE((*r)[0].severity.empty());
    // The report never repeats a secret value.
    EXPECT_EQ(format_config_findings(*r, "cutover.yaml").find("sk_live_"), std::string::npos);
  }
}

TEST(ConfigChecks, DigestsAndVariablesAreFine) {
  std::string yaml = kClean;
  yaml.replace(
      yaml.find("localhost:5000/web:${COMMIT_SHORT}"), 34,
      "localhost:5000/web@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
  yaml.replace(yaml.find("APP_ENV: production"), 19, "API_TOKEN: \"${TOKEN_FROM_ENV}\"");
  auto r = check_config(yaml, "cutover.yaml");
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->empty()) << format_config_findings(*r, "cutover.yaml");
}

TEST(ConfigChecks, BrokenYamlIsAClearError) {
  auto r = check_config("services: [\n", "cutover.yaml");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message.rfind("cutover.yaml:", 0), 0u) << r.error().message;
}

TEST(ConfigChecks, GateReadsTheCheckoutsCutoverYaml) {
  core::TempDir dir;
  auto r = run_gate(Gate::Config, dir.path());
  ASSERT_FALSE(r);  // no cutover.yaml: the gate could not run
  EXPECT_NE(r.error().kind, core::ErrorKind::Conflict);

  std::ofstream(dir.path() / "cutover.yaml") << kClean;
  EXPECT_TRUE(run_gate(Gate::Config, dir.path()));
  std::string yaml = kClean;
  yaml.replace(yaml.find("test: 127.0.0.1:8001"), 20, "test: 0.0.0.0:8001");
  std::ofstream(dir.path() / "cutover.yaml") << yaml;
  r = run_gate(Gate::Config, dir.path());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, core::ErrorKind::Conflict);
  EXPECT_NE(r.error().message.find("cutover.yaml:21:13: CFG006 high: services.web.listeners.test"),
            std::string::npos)
      << r.error().message;
}

}  // namespace
}  // namespace cutover::scan
