// Test support for the proxy's tests: a threaded HTTP/1.1 Backend, a blocking keep-alive Client,
// wait_until, and the ProxyTest fixture (a Proxy with its admin socket in a temporary directory).
// Real sockets on 127.0.0.1 only. Test-only header: include it from *_test.cpp files.
#pragma once
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

namespace cutover::proxy::test_support {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;
using std::chrono::milliseconds;

inline bool wait_until(const std::function<bool()>& condition,
                       milliseconds limit = milliseconds(10000)) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(milliseconds(5));
  }
  return condition();
}

// A loopback port free at the time of the call (for listeners that need a fixed address).
inline uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

inline void set_timeouts(int fd) {
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
    killed = true;
    for (auto& t : threads_) t.join();
  }

  std::atomic<bool> healthy{true};
  // Set by stop() once the listener is closed and every connection is shut down, before it
  // joins the connection threads: a handler that waits for it never gets its answer out, as in
  // a target killed in the middle of a request.
  std::atomic<bool> killed{false};
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
    Listener l{"web/production", std::move(listener_address), {}, /*sticky_cookie=*/""};
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

}  // namespace cutover::proxy::test_support
