// The proxy against bad and unusual clients and targets, over real sockets on 127.0.0.1:
// slowloris, bad chunking, smuggling shapes, pipelining, HTTP/1.0, 100-continue, invalid
// responses, and WebSocket echo (real WebSocket framing with Beast on both ends) including the
// drain of a tunnel to a removed target.
#include <gtest/gtest.h>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/websocket.hpp>

#include "proxy/test_support.hpp"

namespace cutover::proxy {
namespace {

using namespace cutover::proxy::test_support;
namespace websocket = beast::websocket;

// A raw client connection: exact bytes in, bytes out.
class Raw {
 public:
  explicit Raw(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    EXPECT_EQ(::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    set_timeouts(fd_);
  }
  ~Raw() { ::close(fd_); }
  bool send(std::string_view bytes) {
    return ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
           static_cast<ssize_t>(bytes.size());
  }
  // Everything until the peer closes (or the 10 s receive timeout).
  std::string read_all() {
    std::string out;
    char buf[4096];
    for (;;) {
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return out;
      out.append(buf, static_cast<size_t>(n));
    }
  }
  // Reads until `needle` has been seen `count` times.
  std::string read_until(std::string_view needle, int count = 1) {
    std::string out;
    char buf[4096];
    for (;;) {
      int seen = 0;
      for (size_t p = out.find(needle); p != std::string::npos; p = out.find(needle, p + 1)) ++seen;
      if (seen >= count) return out;
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return out;
      out.append(buf, static_cast<size_t>(n));
    }
  }

 private:
  int fd_ = -1;
};

// A backend that speaks WebSocket (echo) on any path and answers 200 to /health.
class WsBackend {
 public:
  WsBackend() : acceptor_(ioc_, tcp::endpoint(asio::ip::address_v4::loopback(), 0)) {
    thread_ = std::thread([this] { accept_loop(); });
  }
  ~WsBackend() {
    stopped_ = true;
    ::shutdown(acceptor_.native_handle(), SHUT_RDWR);  // wakes the blocked accept()
    thread_.join();
    {
      std::lock_guard lock(mu_);
      for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
    }
    for (auto& t : conns_) t.join();
    boost::system::error_code ec;
    acceptor_.close(ec);
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  std::atomic<int> upgrades{0};
  std::atomic<int> closed{0};

 private:
  void accept_loop() {
    port_ = acceptor_.local_endpoint().port();
    ready_ = true;
    for (;;) {
      boost::system::error_code ec;
      tcp::socket s(ioc_);
      acceptor_.accept(s, ec);
      if (ec || stopped_) return;
      std::lock_guard lock(mu_);
      fds_.push_back(s.native_handle());
      conns_.emplace_back([this, s = std::move(s)]() mutable { serve(std::move(s)); });
    }
  }
  void serve(tcp::socket s) {
    int fd = s.native_handle();
    struct Forget {
      WsBackend* self;
      int fd;
      ~Forget() {
        std::lock_guard lock(self->mu_);
        std::erase(self->fds_, fd);
      }
    } forget{this, fd};
    set_timeouts(s.native_handle());
    boost::system::error_code ec;
    beast::flat_buffer buf;
    for (;;) {
      http::request<http::string_body> req;
      http::read(s, buf, req, ec);
      if (ec) return;
      if (websocket::is_upgrade(req)) {
        upgrades++;
        websocket::stream<tcp::socket> ws(std::move(s));
        ws.accept(req, ec);
        if (ec) return;
        for (;;) {
          beast::flat_buffer msg;
          ws.read(msg, ec);
          if (ec) break;
          ws.text(ws.got_text());
          ws.write(msg.data(), ec);
          if (ec) break;
        }
        closed++;
        return;
      }
      http::response<http::string_body> res{http::status::ok, 11};
      res.body() = "ok";
      res.keep_alive(req.keep_alive());
      res.prepare_payload();
      http::write(s, res, ec);
      if (ec || !req.keep_alive()) return;
    }
  }

  asio::io_context ioc_;
  tcp::acceptor acceptor_;
  uint16_t port_ = 0;
  std::atomic<bool> ready_{false};
  std::atomic<bool> stopped_{false};
  std::thread thread_;
  std::mutex mu_;
  std::vector<std::thread> conns_;
  std::vector<int> fds_;

 public:
  bool ready() const { return ready_; }
};

class ProxyEdgeTest : public ProxyTest {
 protected:
  void start_with(Backend& b) {
    start_proxy();
    put(snapshot(1, {{"blue", {&b}}}));
    ASSERT_TRUE(wait_state(b.name(), "healthy"));
  }
};

TEST_F(ProxyEdgeTest, SlowlorisGets408) {
  options_.header_timeout = milliseconds(300);
  Backend a("task-a");
  start_with(a);
  Raw c(port());
  ASSERT_TRUE(c.send("GET / HTTP/1.1\r\nHo"));
  // One byte every 50 ms: the head would take far longer than the header timeout.
  std::atomic<bool> done{false};
  std::thread trickle([&] {
    std::string rest = "st: a\r\nX-Slow: " + std::string(200, 'z');
    for (char ch : rest) {
      if (done || !c.send(std::string_view(&ch, 1))) return;
      std::this_thread::sleep_for(milliseconds(50));
    }
  });
  auto answer = c.read_all();
  done = true;
  trickle.join();
  EXPECT_EQ(answer.rfind("HTTP/1.1 408 ", 0), 0u) << answer;
  EXPECT_EQ(a.requests.load(), 0);
}

TEST_F(ProxyEdgeTest, IdleClientBeforeAnyRequestIsClosedWithoutAnAnswer) {
  options_.header_timeout = milliseconds(200);
  Backend a("task-a");
  start_with(a);
  Raw c(port());
  EXPECT_EQ(c.read_all(), "");
}

TEST_F(ProxyEdgeTest, BadChunkingGets400) {
  Backend a("task-a");
  start_with(a);
  {
    Raw c(port());
    ASSERT_TRUE(c.send("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"));
    auto answer = c.read_all();
    EXPECT_EQ(answer.rfind("HTTP/1.1 400 ", 0), 0u) << answer;
  }
  {
    // The bad chunk comes in a later write, normally after the good one was streamed on to the
    // target (the mid-stream path); if both arrive together the head-time check answers. The
    // assertions hold either way: they do not depend on the pause.
    Raw c(port());
    ASSERT_TRUE(
        c.send("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"));
    std::this_thread::sleep_for(milliseconds(50));
    ASSERT_TRUE(c.send("4\r\nabcdXX"));
    auto answer = c.read_all();
    EXPECT_EQ(answer.rfind("HTTP/1.1 400 ", 0), 0u) << answer;
  }
  EXPECT_EQ(a.requests.load(), 0);  // never a complete request
}

TEST_F(ProxyEdgeTest, SmugglingShapesGet400AndNeverReachTheTarget) {
  Backend a("task-a");
  start_with(a);
  for (std::string_view bad :
       {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        "0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        "GET / HTTP/1.1\r\nHost: a\r\nX: y\nZ: w\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n X: folded\r\n\r\n"}) {
    Raw c(port());
    ASSERT_TRUE(c.send(bad));
    auto answer = c.read_all();
    EXPECT_EQ(answer.rfind("HTTP/1.1 400 ", 0), 0u) << bad << " -> " << answer;
  }
  EXPECT_EQ(a.requests.load(), 0);
}

TEST_F(ProxyEdgeTest, ContentLengthOverTheLimitGets413) {
  options_.max_body_bytes = 1000;
  Backend a("task-a");
  start_with(a);
  Raw c(port());
  ASSERT_TRUE(c.send("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n"));
  auto answer = c.read_all();
  EXPECT_EQ(answer.rfind("HTTP/1.1 413 ", 0), 0u) << answer;
  EXPECT_EQ(a.requests.load(), 0);
}

TEST_F(ProxyEdgeTest, PipelinedRequestsAreAnsweredInOrder) {
  Backend a("task-a");
  a.handler = [](const Request& req, Response& res) { res.body() = std::string(req.target()); };
  start_with(a);
  Raw c(port());
  ASSERT_TRUE(
      c.send("GET /one HTTP/1.1\r\nHost: a\r\n\r\nPOST /two HTTP/1.1\r\nHost: a\r\n"
             "Content-Length: 3\r\n\r\nabcGET /three HTTP/1.1\r\nHost: a\r\n"
             "Connection: close\r\n\r\n"));
  auto all = c.read_all();
  auto one = all.find("/one"), two = all.find("/two"), three = all.find("/three");
  ASSERT_NE(one, std::string::npos) << all;
  ASSERT_NE(two, std::string::npos) << all;
  ASSERT_NE(three, std::string::npos) << all;
  EXPECT_LT(one, two);
  EXPECT_LT(two, three);
  EXPECT_EQ(a.requests.load(), 3);
}

// The proxy writes at once what the client's socket takes and the rest asynchronously: a
// response far larger than the socket buffers, to a client that reads it in small pieces, must
// arrive whole and in order, followed by the pipelined request's answer on the same connection.
TEST_F(ProxyEdgeTest, ALargeResponseToASlowReaderArrivesWholeBeforeThePipelinedOne) {
  std::string big(8 * 1024 * 1024 + 13, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + (i * 7 + i / 4096) % 26);
  Backend a("task-a");
  a.handler = [&big](const Request& req, Response& res) {
    res.body() = req.target() == "/big" ? big : std::string("small");
  };
  start_with(a);
  Raw c(port());
  ASSERT_TRUE(
      c.send("GET /big HTTP/1.1\r\nHost: a\r\n\r\nGET /small HTTP/1.1\r\nHost: a\r\n"
             "Connection: close\r\n\r\n"));
  auto all = c.read_all();
  auto first_body = all.find("\r\n\r\n");
  ASSERT_NE(first_body, std::string::npos);
  EXPECT_EQ(all.substr(0, 15), "HTTP/1.1 200 OK");
  ASSERT_GE(all.size(), first_body + 4 + big.size());
  EXPECT_TRUE(all.compare(first_body + 4, big.size(), big) == 0) << "the large body was altered";
  auto rest = all.substr(first_body + 4 + big.size());
  EXPECT_EQ(rest.substr(0, 15), "HTTP/1.1 200 OK") << rest.substr(0, 200);
  EXPECT_EQ(rest.substr(rest.size() - 5), "small");
  EXPECT_EQ(a.requests.load(), 2);
}

TEST_F(ProxyEdgeTest, Http10ClientsGetAnHttp10Exchange) {
  Backend a("task-a");
  start_with(a);
  Raw c(port());
  ASSERT_TRUE(c.send("GET / HTTP/1.0\r\n\r\n"));
  auto answer = c.read_all();  // the proxy closes: HTTP/1.0 without keep-alive
  EXPECT_EQ(answer.rfind("HTTP/1.1 200 ", 0), 0u) << answer;
  EXPECT_NE(answer.find("Connection: close"), std::string::npos) << answer;
  EXPECT_NE(answer.find("task-a"), std::string::npos);
  EXPECT_EQ(a.last_headers()["Host"], "127.0.0.1:" + std::to_string(port()));
}

TEST_F(ProxyEdgeTest, ExpectContinueIsAnsweredThenTheBodyFlows) {
  Backend a("task-a");
  a.handler = [](const Request& req, Response& res) { res.body() = "got " + req.body(); };
  start_with(a);
  Raw c(port());
  ASSERT_TRUE(
      c.send("PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"));
  auto interim = c.read_until("\r\n\r\n");
  EXPECT_EQ(interim.rfind("HTTP/1.1 100 Continue\r\n\r\n", 0), 0u) << interim;
  ASSERT_TRUE(c.send("hello"));
  auto answer = c.read_until("got hello");
  EXPECT_NE(answer.find("HTTP/1.1 200 "), std::string::npos) << answer;
  EXPECT_EQ(a.last_headers().count("Expect"), 0u);
}

// A target that answers garbage: 502, counted as an upstream error.
TEST_F(ProxyEdgeTest, InvalidResponseGets502) {
  Backend a("task-a");
  start_with(a);
  int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(lfd, 16), 0);
  socklen_t len = sizeof addr;
  ::getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &len);
  std::atomic<bool> stop{false};
  std::thread garbage([&] {
    while (!stop) {
      int fd = ::accept(lfd, nullptr, nullptr);
      if (fd < 0) return;
      char buf[4096];
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      std::string_view req(buf, n > 0 ? static_cast<size_t>(n) : 0);
      std::string_view reply = req.find("/health") != std::string_view::npos
                                   ? "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
                                   : "SSH-2.0-not-http\r\n\r\n";
      (void)!::send(fd, reply.data(), reply.size(), MSG_NOSIGNAL);
      ::close(fd);
    }
  });
  auto s = snapshot(2, {{"blue", {}}});
  s.target_groups[0].targets.push_back(
      Target{"garbage", "127.0.0.1:" + std::to_string(ntohs(addr.sin_port))});
  put(s);
  ASSERT_TRUE(wait_state("garbage", "healthy"));
  Client c(port());
  auto res = c.get("/");
  EXPECT_EQ(res.result_int(), 502);
  EXPECT_NE(res.body().find("invalid response"), std::string::npos) << res.body();
  stop = true;
  ::shutdown(lfd, SHUT_RDWR);
  ::close(lfd);
  garbage.join();
}

RouteSnapshot ws_snapshot(uint64_t version,
                          const std::vector<std::pair<std::string, std::string>>& targets,
                          int drain_ms) {
  RouteSnapshot s;
  s.version = version;
  TargetGroup g;
  g.name = "blue";
  for (const auto& [id, address] : targets) g.targets.push_back(Target{id, address});
  g.health.interval_ms = 20;
  g.health.healthy_threshold = 1;
  g.drain_timeout_ms = drain_ms;
  s.target_groups.push_back(g);
  s.listeners.push_back(Listener{"web/production", "127.0.0.1:0", {Route{"blue", kWeightTotal}}});
  return s;
}

std::string ws_roundtrip(websocket::stream<tcp::socket>& ws, const std::string& text) {
  ws.write(asio::buffer(text));
  beast::flat_buffer b;
  ws.read(b);
  return beast::buffers_to_string(b.data());
}

TEST_F(ProxyEdgeTest, WebSocketEchoThroughTheProxy) {
  WsBackend w;
  ASSERT_TRUE(wait_until([&] { return w.ready(); }));
  start_proxy();
  put(ws_snapshot(1, {{"ws-1", w.address()}}, 10000));
  ASSERT_TRUE(wait_state("ws-1", "healthy"));
  asio::io_context ioc;
  websocket::stream<tcp::socket> ws(ioc);
  ws.next_layer().connect(tcp::endpoint(asio::ip::address_v4::loopback(), port()));
  set_timeouts(ws.next_layer().native_handle());
  ws.handshake("test", "/chat");
  for (int i = 0; i < 20; ++i) {
    std::string msg = "message " + std::to_string(i) + std::string(i * 500, 'w');
    EXPECT_EQ(ws_roundtrip(ws, msg), msg);
  }
  ws.close(websocket::close_code::normal);
  EXPECT_EQ(w.upgrades.load(), 1);
  EXPECT_TRUE(wait_until([&] { return w.closed.load() == 1; }));
}

// kamal-proxy cancels WebSockets of a removed target at once; here they live until the drain
// timeout, then close.
TEST_F(ProxyEdgeTest, WebSocketToARemovedTargetLivesUntilTheDrainTimeout) {
  WsBackend w1, w2;
  ASSERT_TRUE(wait_until([&] { return w1.ready() && w2.ready(); }));
  start_proxy();
  put(ws_snapshot(1, {{"ws-1", w1.address()}}, 1500));
  ASSERT_TRUE(wait_state("ws-1", "healthy"));
  asio::io_context ioc;
  websocket::stream<tcp::socket> ws(ioc);
  ws.next_layer().connect(tcp::endpoint(asio::ip::address_v4::loopback(), port()));
  set_timeouts(ws.next_layer().native_handle());
  ws.handshake("test", "/chat");
  EXPECT_EQ(ws_roundtrip(ws, "before"), "before");
  put(ws_snapshot(2, {{"ws-2", w2.address()}}, 1500));
  EXPECT_EQ(state_of("ws-1"), "draining");
  // Still connected while draining.
  EXPECT_EQ(ws_roundtrip(ws, "while draining"), "while draining");
  // Then the proxy ends the tunnel: a read fails once the drain timeout has passed.
  beast::flat_buffer b;
  boost::system::error_code ec;
  ws.read(b, ec);
  EXPECT_TRUE(ec) << "the tunnel should close at the drain timeout";
  EXPECT_TRUE(wait_until([&] { return w1.closed.load() == 1; }));
  EXPECT_EQ(w2.upgrades.load(), 0);
}

// The split through real sockets: 100,000 requests at 10/90 over pipelined keep-alive
// connections land exactly (smooth weighted round robin), and 0.01/99.99 sends 10 ± 3.
TEST_F(ProxyEdgeTest, WeightedSplitIsExactOverOneHundredThousandRequests) {
  options_.workers = 1;  // one weighted-choice state: the split is exact, not just close
  Backend blue("blue-1"), green("green-1");
  start_proxy();
  auto run = [&](uint64_t version, int green_weight) {
    blue.requests = 0;
    green.requests = 0;
    put(snapshot(version, {{"blue", {&blue}, kWeightTotal - green_weight},
                           {"green", {&green}, green_weight}}));
    EXPECT_TRUE(wait_state("blue-1", "healthy"));
    EXPECT_TRUE(wait_state("green-1", "healthy"));
    constexpr int kConns = 4, kPerConn = 25000, kBatch = 500;
    std::vector<std::thread> clients;
    std::atomic<int> answered{0};
    for (int t = 0; t < kConns; ++t) {
      clients.emplace_back([&] {
        Raw c(port());
        std::string batch;
        for (int i = 0; i < kBatch; ++i) batch += "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
        for (int sent = 0; sent < kPerConn; sent += kBatch) {
          if (!c.send(batch)) return;
          auto got = c.read_until("HTTP/1.1 200 OK", kBatch);
          int n = 0;
          for (size_t p = got.find("HTTP/1.1 200 OK"); p != std::string::npos;
               p = got.find("HTTP/1.1 200 OK", p + 1))
            ++n;
          answered += n;
          if (n != kBatch) return;
        }
      });
    }
    for (auto& t : clients) t.join();
    EXPECT_EQ(answered.load(), kConns * kPerConn);
    return std::pair<int, int>(blue.requests.load(), green.requests.load());
  };
  auto [b1, g1] = run(1, 1000);
  EXPECT_EQ(b1 + g1, 100000);
  EXPECT_NEAR(g1, 10000, 100) << "10% of 100,000 within ±0.1%";
  auto [b2, g2] = run(2, 1);
  EXPECT_EQ(b2 + g2, 100000);
  EXPECT_NEAR(g2, 10, 3);
}

TEST_F(ProxyEdgeTest, StickyCohortPinsAClientToItsGroup) {
  Backend blue("blue-1"), green("green-1");
  start_proxy();
  auto s = snapshot(1, {{"blue", {&blue}, 5000}, {"green", {&green}, 5000}});
  s.listeners[0].sticky_cookie = "cutover_cohort";
  put(s);
  ASSERT_TRUE(wait_state("blue-1", "healthy"));
  ASSERT_TRUE(wait_state("green-1", "healthy"));
  for (int client = 0; client < 6; ++client) {
    Client c(port());
    auto first = c.get("/");
    ASSERT_EQ(first.result_int(), 200);
    std::string set_cookie(first[http::field::set_cookie]);
    ASSERT_EQ(set_cookie.rfind("cutover_cohort=", 0), 0u) << set_cookie;
    std::string cookie = set_cookie.substr(0, set_cookie.find(';'));
    for (int i = 0; i < 20; ++i) {
      auto res = c.request(http::verb::get, "/", "", {{"Cookie", "a=1; " + cookie}});
      ASSERT_EQ(res.body(), first.body()) << "request " << i << " of client " << client;
      EXPECT_TRUE(res[http::field::set_cookie].empty());
    }
  }
  // The split ends (green at 100%): a blue pin is dropped and a new cookie set.
  put(snapshot(2, {{"blue", {&blue}, 0}, {"green", {&green}, kWeightTotal}}));
  Client c(port());
  auto res = c.request(http::verb::get, "/", "", {{"Cookie", "cutover_cohort=blue.00000000"}});
  EXPECT_EQ(res.body(), "green-1");
}

TEST_F(ProxyEdgeTest, PassiveEjectionTakesA5xxTargetOutOfRotation) {
  Backend good("good"), bad("bad");
  bad.handler = [](const Request&, Response& res) {
    res.result(http::status::internal_server_error);
  };
  start_proxy();
  auto s = snapshot(1, {{"blue", {&good, &bad}}});
  s.target_groups[0].passive_ejection = PassiveEjection{3, 3, 60000, 50};
  put(s);
  ASSERT_TRUE(wait_state("good", "healthy"));
  ASSERT_TRUE(wait_state("bad", "healthy"));
  Client c(port());
  int errors = 0;
  for (int i = 0; i < 200; ++i)
    if (c.get("/").result_int() == 500) ++errors;
  // Round robin over two targets sends every other request to "bad" until it is ejected after
  // its third 5xx in a row (per worker: two workers may each see three).
  EXPECT_GE(errors, 3);
  EXPECT_LE(errors, 6);
  auto targets = nlohmann::json::parse(admin().get("/targets").value());
  bool ejected = false;
  for (const auto& t : targets["target_groups"][0]["targets"])
    if (t["id"] == "bad") ejected = t["ejected"].get<bool>();
  EXPECT_TRUE(ejected) << targets.dump();
}

// A self-signed certificate for "localhost", made with the openssl CLI.
struct TestCert {
  std::string cert, key;
};
TestCert make_cert(const std::filesystem::path& dir) {
  TestCert t{(dir / "cert.pem").string(), (dir / "key.pem").string()};
  std::string cmd =
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout '" + t.key +
      "' -out '" + t.cert +
      "' -subj /CN=localhost -addext subjectAltName=DNS:localhost -days 2 "
      ">/dev/null 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  return t;
}

TEST_F(ProxyEdgeTest, TlsTerminationForwardsPlainHttpWithProtoHttps) {
  Backend a("task-a");
  auto cert = make_cert(dir_);
  start_proxy();
  auto s = snapshot(1, {{"blue", {&a}}});
  s.listeners[0].tls_cert = cert.cert;
  s.listeners[0].tls_key = cert.key;
  put(s);
  ASSERT_TRUE(wait_state("task-a", "healthy"));
  asio::io_context ioc;
  asio::ssl::context ctx(asio::ssl::context::tls_client);
  ctx.load_verify_file(cert.cert);
  asio::ssl::stream<tcp::socket> tls(ioc, ctx);
  tls.set_verify_mode(asio::ssl::verify_peer);
  tls.set_verify_callback(asio::ssl::host_name_verification("localhost"));
  SSL_set_tlsext_host_name(tls.native_handle(), "localhost");
  tls.next_layer().connect(tcp::endpoint(asio::ip::address_v4::loopback(), port()));
  set_timeouts(tls.next_layer().native_handle());
  tls.handshake(asio::ssl::stream_base::client);
  beast::flat_buffer buf;
  for (int i = 0; i < 3; ++i) {  // keep-alive inside the TLS session
    Request req{http::verb::get, "/secure", 11};
    req.set(http::field::host, "localhost");
    http::write(tls, req);
    Response res;
    http::read(tls, buf, res);
    EXPECT_EQ(res.result_int(), 200);
    EXPECT_EQ(res.body(), "task-a");
  }
  auto h = a.last_headers();
  EXPECT_EQ(h["X-Forwarded-Proto"], "https");
  EXPECT_EQ(h["X-Forwarded-Host"], "localhost");
  EXPECT_EQ(a.requests.load(), 3);
  // Plain HTTP on the TLS port: no answer, and TLS clients are still served afterwards.
  {
    Raw plain(port());
    ASSERT_TRUE(plain.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    EXPECT_EQ(plain.read_all().find("HTTP/1.1 200"), std::string::npos);
  }
  Request req{http::verb::get, "/again", 11};
  req.set(http::field::host, "localhost");
  http::write(tls, req);
  Response res;
  http::read(tls, buf, res);
  EXPECT_EQ(res.result_int(), 200);
}

TEST_F(ProxyEdgeTest, RedirectListenerSendsHttpToHttps) {
  Backend a("task-a");
  start_proxy();
  auto s = snapshot(1, {{"blue", {&a}}});
  uint16_t redirect_port = free_port();
  s.listeners.push_back(
      Listener{"web/redirect", "127.0.0.1:" + std::to_string(redirect_port), {}, "", "", "", 8443});
  put(s);
  Raw c(redirect_port);
  ASSERT_TRUE(
      c.send("GET /path?q=1 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n"
             "GET / HTTP/1.1\r\nHost: [::1]:80\r\nConnection: close\r\n\r\n"));
  auto answer = c.read_all();
  EXPECT_EQ(answer.rfind("HTTP/1.1 308 Permanent Redirect\r\n", 0), 0u) << answer;
  EXPECT_NE(answer.find("Location: https://example.com:8443/path?q=1\r\n"), std::string::npos)
      << answer;
  EXPECT_NE(answer.find("Location: https://[::1]:8443/\r\n"), std::string::npos) << answer;
  EXPECT_EQ(a.requests.load(), 0);
}

TEST_F(ProxyEdgeTest, UnreadableCertificateRejectsTheSnapshotAndKeepsTheOldOne) {
  Backend a("task-a");
  start_with(a);
  auto s = snapshot(2, {{"blue", {&a}}});
  s.listeners[0].tls_cert = (dir_ / "missing.pem").string();
  s.listeners[0].tls_key = (dir_ / "missing-key.pem").string();
  auto r = admin().put_snapshot(s);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("missing.pem"), std::string::npos) << r.error().message;
  EXPECT_EQ(proxy_->version(), 1u);
  Client c(port());
  EXPECT_EQ(c.get("/").result_int(), 200);
}

}  // namespace
}  // namespace cutover::proxy
