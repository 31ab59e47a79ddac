#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "controller/internal.hpp"

namespace cutover::controller {
namespace {

using ::testing::ElementsAre;
using Routing = Controller::Impl::Routing;

std::shared_ptr<const config::Config> parse(const std::string& service_yaml) {
  auto c = config::parse_config(
      "version: 1\n"
      "pipeline:\n"
      "  stages: [{ name: build, run: make, artifacts: dist }]\n"
      "services:\n"
      "  web:\n"
      "    artifact: build\n"
      "    task: { containers: [{ name: app, command: [dist/server] }] }\n" +
          service_yaml,
      "cutover.yaml");
  EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error().message);
  return c.ok() ? *c : std::make_shared<const config::Config>();
}

store::TaskRecord task(std::string id, std::string color, int port) {
  store::TaskRecord t;
  t.task_id = std::move(id);
  t.service = "web";
  t.color = std::move(color);
  t.port = port;
  return t;
}

proxy::RouteSnapshot build(const config::Config& c, const Routing& r,
                           const std::vector<store::TaskRecord>& tasks) {
  proxy::RouteSnapshot snap;
  snap.version = 1;
  add_service_routes(c.services.at(0), r, tasks, snap);
  // What the controller builds, the proxy accepts, and it survives the admin API's JSON.
  auto valid = proxy::validate(snap);
  EXPECT_TRUE(valid.ok()) << (valid.ok() ? "" : valid.error().message);
  auto parsed = proxy::parse_snapshot(proxy::to_json(snap));
  EXPECT_TRUE(parsed.ok()) << (parsed.ok() ? "" : parsed.error().message);
  if (parsed.ok()) EXPECT_EQ(*parsed, snap);
  return snap;
}

TEST(Routes, PlainServiceKeepsTheDefaults) {
  auto c = parse("    listeners: { production: 127.0.0.1:8000 }\n");
  Routing r;
  r.weights = {{"blue", proxy::kWeightTotal}};
  auto snap = build(*c, r, {task("t1", "blue", 30001), task("t2", "blue", 30002)});
  ASSERT_EQ(snap.listeners.size(), 1u);
  const proxy::Listener& l = snap.listeners[0];
  EXPECT_EQ(l.name, "web/production");
  EXPECT_EQ(l.address, "127.0.0.1:8000");
  EXPECT_THAT(l.routes, ElementsAre(proxy::Route{"web-blue", proxy::kWeightTotal}));
  EXPECT_EQ(l.sticky_cookie, "");
  EXPECT_EQ(l.tls_cert, "");
  EXPECT_EQ(l.tls_key, "");
  EXPECT_EQ(l.redirect_https_port, 0);
  ASSERT_EQ(snap.target_groups.size(), 1u);
  const proxy::TargetGroup& g = snap.target_groups[0];
  EXPECT_EQ(g.name, "web-blue");
  EXPECT_EQ(g.algorithm, proxy::Algorithm::RoundRobin);
  EXPECT_FALSE(g.passive_ejection.enabled());
  EXPECT_EQ(g.health.path, "/health");
  EXPECT_EQ(g.health.interval_ms, 5000);
  EXPECT_EQ(g.health.matcher, "200-299");
  EXPECT_EQ(g.drain_timeout_ms, 30000);
  EXPECT_THAT(g.targets, ElementsAre(proxy::Target{"t1", "127.0.0.1:30001"},
                                     proxy::Target{"t2", "127.0.0.1:30002"}));
}

constexpr const char* kEverything =
    "    listeners:\n"
    "      production:\n"
    "        address: 0.0.0.0:8443\n"
    "        tls: { cert: /etc/tls/fullchain.pem, key: /etc/tls/key.pem }\n"
    "        redirect_http: 0.0.0.0:8080\n"
    "      test:\n"
    "        address: 127.0.0.1:9443\n"
    "        tls: { cert: /etc/tls/test.pem, key: /etc/tls/test-key.pem }\n"
    "        redirect_http: 127.0.0.1:9080\n"
    "    load_balancing: least_outstanding_requests\n"
    "    target_health:\n"
    "      matcher: 200,302-304\n"
    "      passive: { consecutive_5xx: 4, ejection: 30s }\n"
    "    deployment:\n"
    "      sticky: true\n"
    "      drain_timeout: 5s\n";

TEST(Routes, EveryProxyFeatureReachesTheSnapshot) {
  auto c = parse(kEverything);
  Routing r;
  r.weights = {{"blue", proxy::kWeightTotal}};
  r.registered = {"green"};  // green being installed: health-checked, no production weight
  r.test_color = "green";    // AllowTestTraffic
  auto snap = build(*c, r, {task("b1", "blue", 30001), task("g1", "green", 30002)});

  ASSERT_EQ(snap.listeners.size(), 4u);
  const proxy::Listener& prod = snap.listeners[0];
  EXPECT_EQ(prod.name, "web/production");
  EXPECT_EQ(prod.address, "0.0.0.0:8443");
  EXPECT_EQ(prod.tls_cert, "/etc/tls/fullchain.pem");
  EXPECT_EQ(prod.tls_key, "/etc/tls/key.pem");
  EXPECT_EQ(prod.sticky_cookie, "cutover_cohort");
  EXPECT_EQ(prod.redirect_https_port, 0);
  EXPECT_THAT(prod.routes, ElementsAre(proxy::Route{"web-blue", proxy::kWeightTotal}));

  const proxy::Listener& prod_redirect = snap.listeners[1];
  EXPECT_EQ(prod_redirect.name, "web/production-redirect");
  EXPECT_EQ(prod_redirect.address, "0.0.0.0:8080");
  EXPECT_EQ(prod_redirect.redirect_https_port, 8443);
  EXPECT_TRUE(prod_redirect.routes.empty());
  EXPECT_EQ(prod_redirect.tls_cert, "");
  EXPECT_EQ(prod_redirect.sticky_cookie, "");

  const proxy::Listener& test = snap.listeners[2];
  EXPECT_EQ(test.name, "web/test");
  EXPECT_EQ(test.address, "127.0.0.1:9443");
  EXPECT_EQ(test.tls_cert, "/etc/tls/test.pem");
  EXPECT_EQ(test.tls_key, "/etc/tls/test-key.pem");
  EXPECT_EQ(test.sticky_cookie, "");  // the test listener is never split
  EXPECT_THAT(test.routes, ElementsAre(proxy::Route{"web-green", proxy::kWeightTotal}));

  const proxy::Listener& test_redirect = snap.listeners[3];
  EXPECT_EQ(test_redirect.name, "web/test-redirect");
  EXPECT_EQ(test_redirect.address, "127.0.0.1:9080");
  EXPECT_EQ(test_redirect.redirect_https_port, 9443);

  ASSERT_EQ(snap.target_groups.size(), 2u);
  for (const auto& g : snap.target_groups) {
    SCOPED_TRACE(g.name);
    EXPECT_EQ(g.algorithm, proxy::Algorithm::LeastOutstandingRequests);
    EXPECT_EQ(g.passive_ejection, (proxy::PassiveEjection{4, 3, 30000, 50}));
    EXPECT_EQ(g.health.matcher, "200,302-304");
    EXPECT_EQ(g.drain_timeout_ms, 5000);
  }
  EXPECT_EQ(snap.target_groups[0].name, "web-blue");
  EXPECT_THAT(snap.target_groups[0].targets, ElementsAre(proxy::Target{"b1", "127.0.0.1:30001"}));
  EXPECT_EQ(snap.target_groups[1].name, "web-green");
  EXPECT_THAT(snap.target_groups[1].targets, ElementsAre(proxy::Target{"g1", "127.0.0.1:30002"}));
}

TEST(Routes, PassiveDefaultsAndStickyCookieName) {
  auto c = parse(
      "    listeners: { production: 127.0.0.1:8000 }\n"
      "    target_health: { passive: {} }\n"
      "    deployment: { sticky: { cookie: web_version } }\n");
  Routing r;
  r.weights = {{"blue", 9000}, {"green", 1000}};
  auto snap = build(*c, r, {task("b1", "blue", 30001), task("g1", "green", 30002)});
  EXPECT_EQ(snap.listeners[0].sticky_cookie, "web_version");
  EXPECT_THAT(snap.listeners[0].routes,
              ElementsAre(proxy::Route{"web-blue", 9000}, proxy::Route{"web-green", 1000}));
  for (const auto& g : snap.target_groups) {
    EXPECT_EQ(g.passive_ejection, proxy::kDefaultPassiveEjection);
  }
}

TEST(Routes, TestListenerFollowsTheHeaviestVersionWhenNothingIsBeingInstalled) {
  auto c = parse("    listeners: { production: 127.0.0.1:8000, test: 127.0.0.1:8001 }\n");
  Routing r;
  r.weights = {{"blue", 9000}, {"green", 1000}};
  auto snap = build(*c, r, {});
  ASSERT_EQ(snap.listeners.size(), 2u);
  EXPECT_EQ(snap.listeners[1].name, "web/test");
  EXPECT_EQ(snap.listeners[1].address, "127.0.0.1:8001");
  EXPECT_THAT(snap.listeners[1].routes, ElementsAre(proxy::Route{"web-blue", proxy::kWeightTotal}));

  Routing first;  // first deployment: nothing live yet, green registered
  first.registered = {"green"};
  auto snap2 = build(*c, first, {});
  EXPECT_TRUE(snap2.listeners[0].routes.empty());  // production answers 503 until green is live
  EXPECT_TRUE(snap2.listeners[1].routes.empty());  // and so does test until AllowTestTraffic
  first.test_color = "green";
  snap2 = build(*c, first, {});
  EXPECT_TRUE(snap2.listeners[0].routes.empty());
  EXPECT_THAT(snap2.listeners[1].routes,
              ElementsAre(proxy::Route{"web-green", proxy::kWeightTotal}));

  Routing none;
  auto snap3 = build(*c, none, {});
  EXPECT_TRUE(snap3.listeners[1].routes.empty());
}

// Rolling: a task chosen for stopping leaves its group (the proxy drains it) while the rest of the
// group, and a color with weight 0 (health-checked, no production traffic), stay.
TEST(Routes, DrainingTasksLeaveTheirGroupAndWeightZeroColorsStayHealthChecked) {
  auto c = parse("    listeners: { production: 127.0.0.1:8000 }\n");
  Routing r;
  r.weights = {{"blue", proxy::kWeightTotal}, {"green", 0}};
  r.draining = {"t2"};
  auto snap = build(
      *c, r, {task("t1", "blue", 30001), task("t2", "blue", 30002), task("t3", "green", 30003)});
  EXPECT_THAT(snap.listeners[0].routes, ElementsAre(proxy::Route{"web-blue", proxy::kWeightTotal}));
  ASSERT_EQ(snap.target_groups.size(), 2u);
  EXPECT_EQ(snap.target_groups[0].name, "web-blue");
  EXPECT_THAT(snap.target_groups[0].targets, ElementsAre(proxy::Target{"t1", "127.0.0.1:30001"}));
  EXPECT_EQ(snap.target_groups[1].name, "web-green");
  EXPECT_THAT(snap.target_groups[1].targets, ElementsAre(proxy::Target{"t3", "127.0.0.1:30003"}));
}

}  // namespace
}  // namespace cutover::controller
