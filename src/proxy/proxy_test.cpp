// End-to-end tests of the proxy in-process: real sockets on 127.0.0.1, backends on ephemeral
// ports, the admin API on a Unix socket in a temporary directory.
#include "proxy/proxy.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "proxy/test_support.hpp"

namespace cutover::proxy {
namespace {

using namespace cutover::proxy::test_support;

TEST_F(ProxyTest, RoutesToAHealthyBackendWithForwardingHeaders) {
  Backend a("task-a");
  start_proxy();
  put(snapshot(1, {{"blue", {&a}}}));
  ASSERT_TRUE(wait_state("task-a", "healthy"));
  Client c(port());
  auto res = c.request(http::verb::get, "/hello", "",
                       {{"Connection", "keep-alive, X-Secret"},
                        {"X-Secret", "hop"},
                        {"X-Forwarded-For", "10.0.0.1"}});
  EXPECT_EQ(res.result_int(), 200);
  EXPECT_EQ(res.body(), "task-a");
  auto h = a.last_headers();
  EXPECT_EQ(h["X-Forwarded-For"], "10.0.0.1, 127.0.0.1");
  EXPECT_EQ(h["X-Forwarded-Proto"], "http");
  EXPECT_FALSE(h["X-Request-Id"].empty());
  EXPECT_EQ(h.count("X-Secret"), 0u) << "headers named in Connection are hop-by-hop";
  EXPECT_EQ(h["Host"], "test");
  auto with_id = c.request(http::verb::get, "/", "", {{"X-Request-Id", "abc"}});
  EXPECT_EQ(with_id.result_int(), 200);
  EXPECT_EQ(a.last_headers()["X-Request-Id"], "abc");
}

TEST_F(ProxyTest, KeepAliveOnBothSides) {
  Backend a("task-a");
  start_proxy();
  put(snapshot(1, {{"blue", {&a}}}));
  ASSERT_TRUE(wait_state("task-a", "healthy"));
  Client c(port());
  for (int i = 0; i < 50; ++i) ASSERT_EQ(c.get("/x").result_int(), 200);
  EXPECT_EQ(a.requests.load(), 50);
  EXPECT_EQ(a.connections_with_traffic.load(), 1) << "the upstream connection is pooled";
}

TEST_F(ProxyTest, ATargetGetsNoTrafficUntilItPassesHealthyThreshold) {
  Backend a("task-a");
  a.healthy = false;
  start_proxy();
  put(snapshot(1, {{"blue", {&a}}}));
  ASSERT_TRUE(wait_state("task-a", "unhealthy"));
  Client c(port());
  EXPECT_EQ(c.get("/").result_int(), 503);
  EXPECT_EQ(a.requests.load(), 0);
  a.healthy = true;
  ASSERT_TRUE(wait_until([&] { return c.get("/").result_int() == 200; }));
  EXPECT_GE(a.ok_before_first_request.load(), 3) << "healthy_threshold = 3 consecutive passes";
  EXPECT_EQ(state_of("task-a"), "healthy");
}

TEST_F(ProxyTest, NewTargetsStartInitialAndUnroutable) {
  Backend a("task-a");
  Backend b("task-b");
  b.healthy = false;
  start_proxy();
  put(snapshot(1, {{"blue", {&a}}}));
  ASSERT_TRUE(wait_state("task-a", "healthy"));
  put(snapshot(2, {{"blue", {&a, &b}}}));
  EXPECT_EQ(state_of("task-a"), "healthy") << "kept across snapshots";
  auto s = state_of("task-b");
  EXPECT_TRUE(s == "initial" || s == "unhealthy") << s;
  Client c(port());
  for (int i = 0; i < 20; ++i) ASSERT_EQ(c.get("/").body(), "task-a");
  EXPECT_EQ(b.requests.load(), 0);
  b.healthy = true;
  ASSERT_TRUE(wait_state("task-b", "healthy"));
  std::map<std::string, int> seen;
  for (int i = 0; i < 20; ++i) seen[c.get("/").body()]++;
  EXPECT_EQ(seen["task-a"], 10);
  EXPECT_EQ(seen["task-b"], 10);
}

TEST_F(ProxyTest, DeadTargetRequestsGoElsewhereThen503WhenNoneIsLeft) {
  Backend a("task-a");
  Backend b("task-b");
  start_proxy();
  put(snapshot(1, {{"blue", {&a, &b}}}));
  ASSERT_TRUE(wait_state("task-a", "healthy"));
  ASSERT_TRUE(wait_state("task-b", "healthy"));
  b.stop();
  Client c(port());
  for (int i = 0; i < 10; ++i) {
    auto res = c.get("/");
    ASSERT_EQ(res.result_int(), 200) << res.body();
    ASSERT_EQ(res.body(), "task-a");
  }
  ASSERT_TRUE(wait_state("task-b", "unhealthy"));
  a.stop();
  ASSERT_TRUE(wait_state("task-a", "unhealthy"));
  auto res = c.get("/");
  if (res.result_int() == 599) {  // diagnose: does a fresh connection work?
    Client fresh(port());
    auto again = fresh.get("/");
    ADD_FAILURE() << "kept-alive connection closed; fresh connection: " << again.result_int() << " "
                  << again.body();
  }
  EXPECT_EQ(res.result_int(), 503) << res.body();
  EXPECT_NE(res.body().find("no healthy target"), std::string::npos) << res.body();
  auto stats = nlohmann::json::parse(admin().get("/stats").value());
  uint64_t errors = 0;
  for (const auto& g : stats["target_groups"])
    for (const auto& t : g["targets"]) errors += t["upstream_errors"].get<uint64_t>();
  EXPECT_GE(errors, 1u);
}

TEST_F(ProxyTest, WeightsTenNinetyAreExactOverTenThousandRequests) {
  Backend blue("task-blue");
  Backend green("task-green");
  start_proxy();
  put(snapshot(1, {{"blue", {&blue}, 1000}, {"green", {&green}, 9000}}));
  ASSERT_TRUE(wait_state("task-blue", "healthy"));
  ASSERT_TRUE(wait_state("task-green", "healthy"));
  Client c(port());
  for (int i = 0; i < 10000; ++i) ASSERT_EQ(c.get("/").result_int(), 200);
  EXPECT_EQ(blue.requests.load(), 1000);
  EXPECT_EQ(green.requests.load(), 9000);
  auto stats = nlohmann::json::parse(admin().get("/stats").value());
  for (const auto& g : stats["target_groups"])
    for (const auto& t : g["targets"])
      EXPECT_EQ(t["requests"]["2xx"].get<uint64_t>(), g["name"] == "blue" ? 1000u : 9000u);
}

TEST_F(ProxyTest, ZeroWeightsAnswer503) {
  Backend a("task-a");
  start_proxy();
  put(snapshot(1, {{"blue", {&a}, 0}}));
  Client c(port());
  EXPECT_EQ(c.get("/").result_int(), 503);
}

TEST_F(ProxyTest, SnapshotVersionRules) {
  Backend a("task-a");
  start_proxy();
  auto v2 = snapshot(2, {{"blue", {&a}}});
  put(v2);
  EXPECT_EQ(proxy_->version(), 2u);
  put(v2);  // same version, same content: idempotent
  auto older = admin().put_snapshot(snapshot(1, {{"blue", {&a}}}));
  ASSERT_FALSE(older.ok());
  EXPECT_NE(older.error().message.find("409"), std::string::npos) << older.error().message;
  EXPECT_NE(older.error().message.find("older"), std::string::npos) << older.error().message;
  auto changed = v2;
  changed.target_groups[0].drain_timeout_ms = 1;
  auto same_version = admin().put_snapshot(changed);
  ASSERT_FALSE(same_version.ok());
  EXPECT_NE(same_version.error().message.find("409"), std::string::npos);
  auto got = admin().get_snapshot();
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(*got, v2);
  auto health = admin().health();
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(health->status, "ok");
  EXPECT_EQ(health->version, 2u);
  EXPECT_EQ(health->pid, ::getpid());
}

TEST_F(ProxyTest, AdminRejectsBadRequests) {
  start_proxy();
  auto bad = admin().put("/snapshot", "{not json");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("400"), std::string::npos) << bad.error().message;
  auto invalid = admin().put("/snapshot", R"({"version":1,"listeners":[{"name":"x"}]})");
  ASSERT_FALSE(invalid.ok());
  EXPECT_NE(invalid.error().message.find("listeners[0].address: is required"), std::string::npos)
      << invalid.error().message;
  auto missing = admin().get("/nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("404"), std::string::npos);
  auto empty = admin().get_snapshot();
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->version, 0u);
  EXPECT_EQ(
      std::filesystem::status(options_.admin_socket).permissions() & std::filesystem::perms::all,
      std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
}

TEST_F(ProxyTest, BindFailureKeepsTheOldSnapshot) {
  Backend a("task-a");
  start_proxy();
  put(snapshot(1, {{"blue", {&a}}}));
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  auto taken = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  auto r = admin().put_snapshot(snapshot(2, {{"blue", {&a}}}, taken));
  ::close(fd);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("422"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("cannot bind listener web/production"), std::string::npos)
      << r.error().message;
  EXPECT_EQ(proxy_->version(), 1u);
  EXPECT_TRUE(proxy_->listener_port("web/production").has_value());
}

TEST_F(ProxyTest, PersistsTheSnapshotAndServesItAfterRestart) {
  Backend a("task-a");
  start_proxy();
  auto s = snapshot(3, {{"blue", {&a}}});
  put(s);
  auto text = core::read_file(options_.state_file);
  ASSERT_TRUE(text.ok());
  auto persisted = parse_snapshot(*text);
  ASSERT_TRUE(persisted.ok());
  EXPECT_EQ(*persisted, s);
  proxy_->stop();
  proxy_.reset();
  start_proxy();
  EXPECT_EQ(proxy_->version(), 3u);
  ASSERT_TRUE(proxy_->listener_port("web/production").has_value());
  ASSERT_TRUE(wait_state("task-a", "healthy"));
  Client c(port());
  EXPECT_EQ(c.get("/").body(), "task-a");
}

TEST_F(ProxyTest, ChunkedAndLargeBodiesPassThrough) {
  Backend a("task-a");
  a.handler = [](const Request& req, Response& res) {
    if (req.target() == "/echo") res.body() = req.body();
    if (req.target() == "/chunked") {
      res.body() = std::string(100000, 'z');
      res.chunked(true);
    }
  };
  start_proxy();
  put(snapshot(1, {{"blue", {&a}}}));
  ASSERT_TRUE(wait_state("task-a", "healthy"));
  Client c(port());
  std::string raw =
      "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
  asio::write(c.socket(), asio::buffer(raw));
  http::response_parser<http::string_body> parser;
  http::read(c.socket(), c.buffer(), parser);
  EXPECT_EQ(parser.get().result_int(), 200) << parser.get().body();
  EXPECT_EQ(parser.get().body(), "hello world");

  auto chunked = c.get("/chunked");
  EXPECT_EQ(chunked.result_int(), 200);
  EXPECT_TRUE(chunked.chunked());
  EXPECT_EQ(chunked.body(), std::string(100000, 'z'));

  std::string big(3 * 1024 * 1024 + 7, 'x');
  for (size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<char>('a' + i % 26);
  auto echoed = c.request(http::verb::post, "/echo", big);
  EXPECT_EQ(echoed.result_int(), 200) << echoed.body().substr(0, 200);
  EXPECT_TRUE(echoed.body() == big);
  auto head = c.request(http::verb::head, "/chunked");
  EXPECT_EQ(head.result_int(), 200);
  EXPECT_EQ(c.get("/").body(), "task-a") << "the connection still works after HEAD";
}

TEST_F(ProxyTest, OversizedHeadersGet431) {
  Backend a("task-a");
  start_proxy();
  put(snapshot(1, {{"blue", {&a}}}));
  Client c(port());
  auto res = c.request(http::verb::get, "/", "", {{"X-Big", std::string(32 * 1024, 'h')}});
  EXPECT_EQ(res.result_int(), 431);
  EXPECT_EQ(a.requests.load(), 0);
}

TEST_F(ProxyTest, RemovedTargetDrainsInFlightRequests) {
  Backend a("task-a");
  Backend b("task-b");
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  std::atomic<int> slow_started{0};
  a.handler = [&](const Request& req, Response&) {
    if (req.target() != "/slow") return;
    slow_started++;
    std::unique_lock lock(mu);
    cv.wait_for(lock, std::chrono::seconds(10), [&] { return release; });
  };
  start_proxy();
  put(snapshot(1, {{"blue", {&a}}}));
  ASSERT_TRUE(wait_state("task-a", "healthy"));
  Response slow;
  std::thread t([&] {
    Client c(port());
    slow = c.get("/slow");
  });
  ASSERT_TRUE(wait_until([&] { return slow_started.load() == 1; }));
  put(snapshot(2, {{"blue", {&b}}}));
  EXPECT_EQ(state_of("task-a"), "draining");
  ASSERT_TRUE(wait_state("task-b", "healthy"));
  Client c(port());
  EXPECT_EQ(c.get("/").body(), "task-b");
  {
    std::lock_guard lock(mu);
    release = true;
  }
  cv.notify_all();
  t.join();
  EXPECT_EQ(slow.result_int(), 200);
  EXPECT_EQ(slow.body(), "task-a");
  EXPECT_TRUE(wait_state("task-a", "absent"));
}

TEST_F(ProxyTest, RoutingOptionsAreAppliedAndTargetsShowPassiveEjection) {
  Backend a("task-a");
  start_proxy();
  auto s = snapshot(1, {{"blue", {&a}}});
  s.listeners[0].sticky_cookie = "cutover_cohort";
  s.target_groups[0].algorithm = Algorithm::LeastOutstandingRequests;
  s.target_groups[0].passive_ejection = kDefaultPassiveEjection;
  put(s);
  auto got = admin().get_snapshot();
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(*got, s);
  ASSERT_TRUE(wait_state("task-a", "healthy"));
  auto targets = nlohmann::json::parse(admin().get("/targets").value());
  auto t = targets["target_groups"][0]["targets"][0];
  EXPECT_EQ(t["ejected"], false);
  EXPECT_TRUE(t["ejected_until"].is_null());
  EXPECT_EQ(t["ejections"], 0);
  EXPECT_EQ(t["consecutive_5xx"], 0);
  EXPECT_EQ(t["consecutive_connect_failures"], 0);
  auto metrics = admin().get("/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_NE(
      metrics->find("cutover_proxy_target_ejected{target_group=\"blue\",target=\"task-a\"} 0"),
      std::string::npos)
      << *metrics;
  EXPECT_NE(
      metrics->find("cutover_proxy_target_healthy{target_group=\"blue\",target=\"task-a\"} 1"),
      std::string::npos);
}

TEST_F(ProxyTest, MetricsAndStats) {
  Backend a("task-a");
  start_proxy();
  put(snapshot(1, {{"blue", {&a}}}));
  ASSERT_TRUE(wait_state("task-a", "healthy"));
  Client c(port());
  for (int i = 0; i < 5; ++i) ASSERT_EQ(c.get("/").result_int(), 200);
  auto metrics = admin().get("/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_NE(metrics->find("cutover_proxy_requests_total{target_group=\"blue\",target=\"task-a\","
                          "code=\"2xx\"} 5"),
            std::string::npos)
      << *metrics;
  EXPECT_NE(metrics->find("cutover_proxy_target_latency_ms_count{target_group=\"blue\",target="
                          "\"task-a\"} 5"),
            std::string::npos);
  auto stats = nlohmann::json::parse(admin().get("/stats").value());
  auto t = stats["target_groups"][0]["targets"][0];
  EXPECT_EQ(t["latency_ms"]["buckets"].back()["count"].get<uint64_t>(), 5u);
}

}  // namespace
}  // namespace cutover::proxy
