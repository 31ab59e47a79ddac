#include "proxy/snapshot.hpp"

#include <gtest/gtest.h>

namespace cutover::proxy {
namespace {

constexpr const char* kExample = R"({"version": 7,
 "listeners": [{"name": "hello/production", "address": "127.0.0.1:8000",
                "routes": [{"target_group": "hello-blue", "weight": 10000}]}],
 "target_groups": [{"name": "hello-blue",
                    "targets": [{"id": "task-1a2b", "address": "127.0.0.1:30001"}],
                    "health": {"path": "/health", "interval_ms": 1000, "timeout_ms": 1000,
                               "healthy_threshold": 2, "unhealthy_threshold": 3, "matcher": "200-299"},
                    "drain_timeout_ms": 30000}]})";

TEST(Snapshot, ParsesTheControllerFormatAndRoundTrips) {
  auto s = parse_snapshot(kExample);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->version, 7u);
  ASSERT_EQ(s->listeners.size(), 1u);
  EXPECT_EQ(s->listeners[0].routes[0].weight, 10000);
  ASSERT_EQ(s->target_groups.size(), 1u);
  EXPECT_EQ(s->target_groups[0].targets[0].id, "task-1a2b");
  EXPECT_EQ(s->target_groups[0].health.unhealthy_threshold, 3);
  auto again = parse_snapshot(to_json(*s));
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(*again, *s);
}

TEST(Snapshot, DefaultsForOptionalFields) {
  auto s = parse_snapshot(R"({"version":1,"target_groups":[{"name":"g","targets":[]}]})");
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->target_groups[0].health, HealthCheck{});
  EXPECT_EQ(s->target_groups[0].drain_timeout_ms, 30000);
}

struct BadCase {
  const char* json;
  const char* expected;  // substring of the error
};

TEST(Snapshot, RejectsInvalidSnapshotsWithThePath) {
  const BadCase cases[] = {
      {"{", "not valid JSON"},
      {"[]", "expected an object"},
      {R"({"listeners":[]})", "version: is required"},
      {R"({"version":-1})", "version: must be"},
      {R"({"version":1,"extra":1})", "unknown key \"extra\""},
      {R"({"version":1,"listeners":[{"name":"a","address":"127.0.0.1:1","routes":[{"target_group":"x","weight":10000}]}]})",
       "listeners[0].routes[0].target_group: unknown target group \"x\""},
      {R"({"version":1,"target_groups":[{"name":"g"},{"name":"h"}],"listeners":[{"name":"a","address":"127.0.0.1:1","routes":[{"target_group":"g","weight":1000},{"target_group":"h","weight":1000}]}]})",
       "sum to 2000"},
      {R"({"version":1,"target_groups":[{"name":"g"}],"listeners":[{"name":"a","address":"127.0.0.1:1","routes":[{"target_group":"g","weight":10001}]}]})",
       "listeners[0].routes[0].weight: must be 0..10000, got 10001"},
      {R"({"version":1,"listeners":[{"name":"a","address":"nohost"}]})", "not host:port"},
      {R"({"version":1,"listeners":[{"name":"a","address":"127.0.0.1:99999"}]})", "invalid port"},
      {R"({"version":1,"listeners":[{"name":"a","address":"127.0.0.1:1"},{"name":"a","address":"127.0.0.1:2"}]})",
       "duplicate listener"},
      {R"({"version":1,"target_groups":[{"name":"g","targets":[{"id":"t","address":"127.0.0.1:1"},{"id":"t","address":"127.0.0.1:2"}]}]})",
       "duplicate target \"t\""},
      {R"({"version":1,"target_groups":[{"name":"g","health":{"matcher":"2xx"}}]})",
       "target_groups[0].health: matcher \"2xx\""},
      {R"({"version":1,"target_groups":[{"name":"g","health":{"path":"health"}}]})",
       "must start with '/'"},
      {R"({"version":1,"target_groups":[{"name":"g","health":{"healthy_threshold":0}}]})",
       "healthy_threshold: must be 1..100"},
      {R"({"version":"1"})", "version: expected an integer"},
  };
  for (const auto& c : cases) {
    auto s = parse_snapshot(c.json);
    ASSERT_FALSE(s.ok()) << c.json;
    EXPECT_NE(s.error().message.find(c.expected), std::string::npos)
        << c.json << " -> " << s.error().message;
  }
}

TEST(Snapshot, RoutingOptionsParseAndRoundTrip) {
  auto s = parse_snapshot(R"({"version":1,
    "target_groups":[{"name":"web-blue","algorithm":"least_outstanding_requests",
                      "passive_ejection":{"consecutive_5xx":7,"consecutive_connect_failures":0,
                                          "ejection_ms":2500,"max_ejection_percent":34}},
                     {"name":"web-green","passive_ejection":{}}],
    "listeners":[{"name":"web/production","address":"127.0.0.1:1",
                  "routes":[{"target_group":"web-blue","weight":9000},
                            {"target_group":"web-green","weight":1000}],
                  "sticky":{"cookie":"cutover_cohort"}}]})");
  ASSERT_TRUE(s.ok()) << s.error().message;
  const auto& blue = s->target_groups[0];
  EXPECT_EQ(blue.algorithm, Algorithm::LeastOutstandingRequests);
  EXPECT_EQ(blue.passive_ejection, (PassiveEjection{7, 0, 2500, 34}));
  const auto& green = s->target_groups[1];
  EXPECT_EQ(green.algorithm, Algorithm::RoundRobin);
  EXPECT_EQ(green.passive_ejection, kDefaultPassiveEjection) << "an empty object = the defaults";
  EXPECT_TRUE(green.passive_ejection.enabled());
  EXPECT_EQ(s->listeners[0].sticky_cookie, "cutover_cohort");
  auto again = parse_snapshot(to_json(*s));
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(*again, *s);
}

TEST(Snapshot, RoutingOptionsDefaultToOff) {
  auto s = parse_snapshot(
      R"({"version":1,"target_groups":[{"name":"g"}],"listeners":[{"name":"a","address":"127.0.0.1:1"}]})");
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->target_groups[0].algorithm, Algorithm::RoundRobin);
  EXPECT_FALSE(s->target_groups[0].passive_ejection.enabled());
  EXPECT_TRUE(s->listeners[0].sticky_cookie.empty());
  auto again = parse_snapshot(to_json(*s));
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(*again, *s);
}

TEST(Snapshot, RejectsInvalidRoutingOptionsWithThePath) {
  const BadCase cases[] = {
      {R"({"version":1,"target_groups":[{"name":"g","algorithm":"random"}]})",
       "target_groups[0].algorithm: must be \"round_robin\" or \"least_outstanding_requests\", "
       "got \"random\""},
      {R"({"version":1,"target_groups":[{"name":"g","algorithm":1}]})",
       "target_groups[0].algorithm: expected a string"},
      {R"({"version":1,"target_groups":[{"name":"g","passive_ejection":5}]})",
       "target_groups[0].passive_ejection: expected an object"},
      {R"({"version":1,"target_groups":[{"name":"g","passive_ejection":{"consecutive_500":5}}]})",
       "target_groups[0].passive_ejection: unknown key \"consecutive_500\""},
      {R"({"version":1,"target_groups":[{"name":"g","passive_ejection":{"consecutive_5xx":-1}}]})",
       "target_groups[0].passive_ejection.consecutive_5xx: must be 0..1000, got -1"},
      {R"({"version":1,"target_groups":[{"name":"g","passive_ejection":{"consecutive_connect_failures":1001}}]})",
       "target_groups[0].passive_ejection.consecutive_connect_failures: must be 0..1000, got 1001"},
      {R"({"version":1,"target_groups":[{"name":"g","passive_ejection":{"ejection_ms":0}}]})",
       "target_groups[0].passive_ejection.ejection_ms: must be 1..3600000, got 0"},
      {R"({"version":1,"target_groups":[{"name":"g","passive_ejection":{"max_ejection_percent":101}}]})",
       "target_groups[0].passive_ejection.max_ejection_percent: must be 1..100, got 101"},
      {R"({"version":1,"target_groups":[{"name":"g","passive_ejection":{"ejection_ms":"10s"}}]})",
       "target_groups[0].passive_ejection.ejection_ms: expected an integer"},
      {R"({"version":1,"listeners":[{"name":"a","address":"127.0.0.1:1","sticky":"cutover_cohort"}]})",
       "listeners[0].sticky: expected an object"},
      {R"({"version":1,"listeners":[{"name":"a","address":"127.0.0.1:1","sticky":{}}]})",
       "listeners[0].sticky.cookie: is required"},
      {R"({"version":1,"listeners":[{"name":"a","address":"127.0.0.1:1","sticky":{"cookie":""}}]})",
       "listeners[0].sticky.cookie: must not be empty"},
      {R"({"version":1,"listeners":[{"name":"a","address":"127.0.0.1:1","sticky":{"cookie":"x","ttl":1}}]})",
       "listeners[0].sticky: unknown key \"ttl\""},
      {R"({"version":1,"listeners":[{"name":"a","address":"127.0.0.1:1","sticky":{"cookie":"a=b"}}]})",
       "listeners[0].sticky.cookie: \"a=b\" is not a cookie name"},
      {R"({"version":1,"listeners":[{"name":"a","address":"127.0.0.1:1","sticky":{"cookie":"has space"}}]})",
       "listeners[0].sticky.cookie: \"has space\" is not a cookie name"},
      {R"({"version":1,"target_groups":[{"name":"g;1"}],"listeners":[{"name":"a","address":"127.0.0.1:1","routes":[{"target_group":"g;1","weight":10000}],"sticky":{"cookie":"c"}}]})",
       "listeners[0].routes[0].target_group: \"g;1\" cannot be a sticky cookie value"},
  };
  for (const auto& c : cases) {
    auto s = parse_snapshot(c.json);
    ASSERT_FALSE(s.ok()) << c.json;
    EXPECT_NE(s.error().message.find(c.expected), std::string::npos)
        << c.json << " -> " << s.error().message;
  }
}

TEST(Snapshot, ValidateChecksProgrammaticRoutingOptions) {
  RouteSnapshot s;
  s.version = 1;
  TargetGroup g;
  g.name = "g";
  g.passive_ejection = {5, 3, 0, 50};
  s.target_groups.push_back(g);
  auto r = validate(s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message,
            "target_groups[0].passive_ejection.ejection_ms: must be 1..3600000, got 0");
  // A group name that is no cookie value is fine as long as no sticky listener routes it.
  s.target_groups[0] = TargetGroup{};
  s.target_groups[0].name = "g 1";
  s.listeners.push_back(Listener{"a", "127.0.0.1:1", {Route{"g 1", 10000}}, ""});
  EXPECT_TRUE(validate(s).ok());
  s.listeners[0].sticky_cookie = "c";
  EXPECT_FALSE(validate(s).ok());
}

TEST(Snapshot, CookieNamesAndValues) {
  EXPECT_TRUE(is_cookie_name("cutover_cohort"));
  EXPECT_TRUE(is_cookie_name("__Host-x.y~1"));
  EXPECT_FALSE(is_cookie_name(""));
  EXPECT_FALSE(is_cookie_name("a b"));
  EXPECT_FALSE(is_cookie_name("a;b"));
  EXPECT_FALSE(is_cookie_name("a=b"));
  EXPECT_FALSE(is_cookie_name("caf\xc3\xa9"));
  EXPECT_TRUE(is_cookie_value("web-green.0a1b2c3d"));
  EXPECT_TRUE(is_cookie_value("a=b/c:d"));
  EXPECT_FALSE(is_cookie_value("a b"));
  EXPECT_FALSE(is_cookie_value("a\"b"));
  EXPECT_FALSE(is_cookie_value("a,b"));
  EXPECT_FALSE(is_cookie_value("a;b"));
  EXPECT_FALSE(is_cookie_value("a\\b"));
}

TEST(Snapshot, AllZeroWeightsAreValid) {
  auto s = parse_snapshot(
      R"({"version":1,"target_groups":[{"name":"g"}],"listeners":[{"name":"a","address":"127.0.0.1:1","routes":[{"target_group":"g","weight":0}]}]})");
  EXPECT_TRUE(s.ok()) << s.error().message;
}

TEST(Snapshot, HostPort) {
  auto a = parse_host_port("127.0.0.1:8000");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 8000);
  auto b = parse_host_port("[::1]:80");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->host, "::1");
  EXPECT_FALSE(parse_host_port("::1:80").ok());
  EXPECT_FALSE(parse_host_port(":80").ok());
  EXPECT_FALSE(parse_host_port("h:").ok());
}

TEST(Snapshot, StatusMatcher) {
  auto m = StatusMatcher::parse("200,302-304");
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(m->matches(200));
  EXPECT_FALSE(m->matches(201));
  EXPECT_TRUE(m->matches(303));
  EXPECT_FALSE(m->matches(305));
  EXPECT_FALSE(StatusMatcher::parse("299-200").ok());
  EXPECT_FALSE(StatusMatcher::parse("").ok());
  EXPECT_FALSE(StatusMatcher::parse("600").ok());
}

}  // namespace
}  // namespace cutover::proxy
