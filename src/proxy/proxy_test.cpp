// End-to-end tests of the proxy in-process: real sockets on 127.0.0.1, backends on ephemeral
// ports, the admin API on a Unix socket in a temporary directory.
#include "proxy/proxy.hpp"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "core/fs.hpp"
#include "proxy/admin_client.hpp"
#include "proxy/snapshot.hpp"

namespace cutover::proxy {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;
using std::chrono::milliseconds;

bool wait_until(const std::function<bool()>& condition, milliseconds limit = milliseconds(10000)) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(milliseconds(5));
  }
  return condition();
}

void set_timeouts(int fd) {
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

// A small HTTP/1.1 backend: one thread per connection, keep-alive. /health answers 200 or 503
// depending on `healthy`; everything else goes to `handler` (default: body = name).
class Backend {
 public:
  explicit Backend(std::string name) : name_(std::move(name)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(listen_fd_, 128), 0);
    socklen_t len = sizeof a;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~Backend() { stop(); }

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  const std::string& name() const { return name_; }

  // Closes the listener and every connection: the target is dead.
  void stop() {
    if (stopped_.exchange(true)) return;
    ::shutdown(listen_fd_, SHUT_RDWR);
    acceptor_.join();
    ::close(listen_fd_);
    {
      std::lock_guard lock(mu_);
      for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
    }
    for (auto& t : threads_) t.join();
  }

  std::atomic<bool> healthy{true};
  std::atomic<int> requests{0};       // other than /health
  std::atomic<int> health_checks{0};  // answered /health
  std::atomic<int> ok_in_a_row{0};    // consecutive 200 answers to /health
  std::atomic<int> ok_before_first_request{-1};
  std::atomic<int> connections_with_traffic{0};
  std::function<void(const Request&, Response&)> handler;

  std::map<std::string, std::string> last_headers() {
    std::lock_guard lock(mu_);
    return last_headers_;
  }

 private:
  void accept_loop() {
    for (;;) {
      int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (stopped_) return;
        if (errno == EINTR) continue;
        return;
      }
      std::lock_guard lock(mu_);
      if (stopped_) {
        ::close(fd);
        return;
      }
      fds_.push_back(fd);
      threads_.emplace_back([this, fd] { serve(fd); });
    }
  }

  void serve(int fd) {
    set_timeouts(fd);
    asio::io_context ioc;
    tcp::socket socket(ioc);
    boost::system::error_code ec;
    socket.assign(tcp::v4(), fd, ec);
    beast::flat_buffer buffer;
    bool counted = false;
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(64 * 1024 * 1024);
      http::read(socket, buffer, parser, ec);
      if (ec) break;
      Request req = parser.release();
      Response res{http::status::ok, 11};
      res.set("X-Backend", name_);
      if (req.target() == "/health") {
        health_checks++;
        if (healthy) {
          ok_in_a_row++;
        } else {
          ok_in_a_row = 0;
          res.result(http::status::service_unavailable);
        }
      } else {
        if (requests++ == 0) ok_before_first_request = ok_in_a_row.load();
        if (!counted) {
          counted = true;
          connections_with_traffic++;
        }
        {
          std::lock_guard lock(mu_);
          last_headers_.clear();
          for (const auto& f : req) last_headers_[std::string(f.name_string())] = f.value();
        }
        res.body() = name_;
        if (handler) handler(req, res);
      }
      res.keep_alive(req.keep_alive());
      if (!res.chunked()) res.prepare_payload();
      if (req.method() == http::verb::head) {
        http::response_serializer<http::string_body> sr{res};
        http::write_header(socket, sr, ec);
      } else {
        http::write(socket, res, ec);
      }
      if (ec || !req.keep_alive()) break;
    }
    socket.shutdown(tcp::socket::shutdown_both, ec);
    // The fd number is reused once closed: forget it first so stop() never shuts down a socket
    // that belongs to someone else by then.
    std::lock_guard lock(mu_);
    std::erase(fds_, fd);
    socket.close(ec);
  }

  std::string name_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stopped_{false};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<int> fds_;
  std::vector<std::thread> threads_;
  std::map<std::string, std::string> last_headers_;
};

// A keep-alive HTTP client connection to the proxy.
class Client {
 public:
  explicit Client(uint16_t port) : socket_(ioc_) {
    socket_.connect(tcp::endpoint(asio::ip::address_v4::loopback(), port));
    set_timeouts(socket_.native_handle());
  }
  Response request(http::verb verb, const std::string& target, const std::string& body = "",
                   std::map<std::string, std::string> headers = {}) {
    Request req{verb, target, 11};
    req.set(http::field::host, "test");
    for (const auto& [k, v] : headers) req.set(k, v);
    req.body() = body;
    req.prepare_payload();
    boost::system::error_code ec;
    http::write(socket_, req, ec);
    Response res;
    if (ec) return error_response(ec);
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 * 1024 * 1024);
    if (verb == http::verb::head) parser.skip(true);
    http::read(socket_, buffer_, parser, ec);
    if (ec) return error_response(ec);
    return parser.release();
  }
  Response get(const std::string& target) { return request(http::verb::get, target); }
  tcp::socket& socket() { return socket_; }
  beast::flat_buffer& buffer() { return buffer_; }

 private:
  static Response error_response(const boost::system::error_code& ec) {
    Response r{http::status::unknown, 11};
    r.result(599);
    r.body() = "client error: " + ec.message();
    return r;
  }
  asio::io_context ioc_;
  tcp::socket socket_;
  beast::flat_buffer buffer_;
};

class ProxyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/cutover-proxy-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    options_.admin_socket = dir_ / "admin.sock";
    options_.state_file = dir_ / "state" / "snapshot.json";
    options_.workers = 2;
    options_.connect_timeout = milliseconds(2000);
    options_.response_timeout = milliseconds(5000);
    options_.shutdown_grace = milliseconds(2000);
    ASSERT_TRUE(core::ensure_dir(dir_ / "state").ok());
  }
  void TearDown() override {
    proxy_.reset();
    std::filesystem::remove_all(dir_);
  }

  void start_proxy() {
    proxy_ = std::make_unique<Proxy>(options_);
    auto r = proxy_->start();
    ASSERT_TRUE(r.ok()) << r.error().message;
  }
  AdminClient admin() { return AdminClient(options_.admin_socket); }

  struct GroupSpec {
    std::string name;
    std::vector<Backend*> targets;
    int weight = kWeightTotal;
  };
  static RouteSnapshot snapshot(uint64_t version, const std::vector<GroupSpec>& groups,
                                std::string listener_address = "127.0.0.1:0") {
    RouteSnapshot s;
    s.version = version;
    Listener l{"web/production", std::move(listener_address), {}};
    for (const auto& g : groups) {
      TargetGroup tg;
      tg.name = g.name;
      for (auto* b : g.targets) tg.targets.push_back(Target{b->name(), b->address()});
      tg.health.interval_ms = 20;
      tg.health.timeout_ms = 2000;
      tg.health.healthy_threshold = 3;
      tg.health.unhealthy_threshold = 2;
      tg.drain_timeout_ms = 10000;
      s.target_groups.push_back(tg);
      l.routes.push_back(Route{g.name, g.weight});
    }
    s.listeners.push_back(l);
    return s;
  }
  void put(const RouteSnapshot& s) {
    auto r = admin().put_snapshot(s);
    ASSERT_TRUE(r.ok()) << r.error().message;
  }
  std::string state_of(const std::string& id) {
    auto states = admin().target_health();
    if (!states.ok()) return "error: " + states.error().message;
    auto it = states->find(id);
    return it == states->end() ? "absent" : it->second;
  }
  bool wait_state(const std::string& id, const std::string& state) {
    return wait_until([&] { return state_of(id) == state; });
  }
  uint16_t port() { return proxy_->listener_port("web/production").value_or(0); }

  std::filesystem::path dir_;
  ProxyOptions options_;
  std::unique_ptr<Proxy> proxy_;
};

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
