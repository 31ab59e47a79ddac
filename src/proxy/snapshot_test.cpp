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
