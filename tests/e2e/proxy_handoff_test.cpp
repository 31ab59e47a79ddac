// Restarting the proxy binary through the socket handoff, black-box: real `cutover proxy`
// processes on one admin socket, a real backend, client threads on 127.0.0.1 (proxy.hpp and
// src/proxy/handoff.hpp describe the protocol).
//
//   #1 serves ── #2 takes over, #1 drains and exits 0 ── #3 takes over from #2 ... zero failures
//   a new process that fails before "ready" leaves the old one serving, snapshots unfrozen
//   a second takeover while one is in progress is refused; --no-takeover refuses to start
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <atomic>
#include <iostream>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>

#include "core/fd.hpp"
#include "harness.hpp"
#include "proxy/admin_client.hpp"
#include "proxy/handoff.hpp"
#include "proxy/test_support.hpp"

namespace cutover::e2e {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using proxy::test_support::Backend;

constexpr auto kTimeout = 20s;  // any single wait; a slow start under ASan on a busy box

bool exited_zero(const std::optional<int>& status) {
  return status && WIFEXITED(*status) && WEXITSTATUS(*status) == 0;
}

// Request load on the proxy from client threads, counting what a client would see.
//   keep-alive clients reuse their connection; one the server closed cleanly while the client
//   was not sending (EOF seen before writing) is reopened without counting a failure, because
//   no request was lost; anything that goes wrong after a request was sent is a failure.
//   per-request clients open a new connection for every request.
class Load {
 public:
  Load(int port, int keep_alive_clients, int per_request_clients) : port_(port) {
    for (int i = 0; i < keep_alive_clients; ++i) threads_.emplace_back([this] { keep_alive(); });
    for (int i = 0; i < per_request_clients; ++i) threads_.emplace_back([this] { per_request(); });
  }
  ~Load() { stop(); }
  void stop() {
    stop_ = true;
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }
  int ok() const { return ok_.load(); }
  int failed() const { return failed_.load(); }
  int reconnects() const { return reconnects_.load(); }
  std::vector<std::string> failures() {
    std::lock_guard lock(mu_);
    return failures_;
  }
  // Waits until `n` more requests succeeded.
  bool serves(int n) {
    const int target = ok() + n;
    return wait_for([&] { return ok() >= target; }, kTimeout);
  }

 private:
  using Response = proxy::test_support::Response;

  int connect_client() {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    proxy::test_support::set_timeouts(fd);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port_));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      fail(std::string("connect: ") + std::strerror(errno));
      ::close(fd);
      return -1;
    }
    return fd;
  }

  // The server closed an idle connection: EOF (or a reset) is waiting and nothing else.
  static bool closed_by_peer(int fd) {
    pollfd p{fd, POLLIN | POLLRDHUP, 0};
    if (::poll(&p, 1, 0) <= 0) return false;
    char c;
    ssize_t n = ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN);
  }

  // One request on fd; false if the connection cannot carry another.
  bool exchange(int fd, bool keep_alive, const std::string& path) {
    const std::string req = "GET " + path + " HTTP/1.1\r\nHost: test\r\nConnection: " +
                            (keep_alive ? "keep-alive" : "close") + "\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
      fail(path + ": send: " + std::strerror(errno));
      return false;
    }
    boost::asio::io_context ioc;
    boost::asio::ip::tcp::socket socket(ioc);
    boost::system::error_code ec;
    socket.assign(boost::asio::ip::tcp::v4(), ::dup(fd), ec);
    boost::beast::flat_buffer buffer;
    boost::beast::http::response_parser<boost::beast::http::string_body> parser;
    boost::beast::http::read(socket, buffer, parser, ec);
    if (ec) {
      fail(path + ": " + ec.message() + " (after " + std::to_string(buffer.size()) +
           " bytes of response)");
      return false;
    }
    const auto& res = parser.get();
    if (res.result_int() != 200 || res.body() != "backend") {
      fail(path + ": status " + std::to_string(res.result_int()) + ": " + res.body());
      return false;
    }
    ok_++;
    return res.keep_alive() && buffer.size() == 0;
  }

  void keep_alive() {
    int fd = -1;
    int n = 0;
    while (!stop_) {
      if (fd >= 0 && closed_by_peer(fd)) {
        ::close(fd);
        fd = -1;
        reconnects_++;
      }
      if (fd < 0 && (fd = connect_client()) < 0) continue;
      if (!exchange(fd, true, "/keep-alive/" + std::to_string(n++))) {
        ::close(fd);
        fd = -1;
      }
    }
    if (fd >= 0) ::close(fd);
  }

  void per_request() {
    int n = 0;
    while (!stop_) {
      int fd = connect_client();
      if (fd < 0) continue;
      exchange(fd, false, "/per-request/" + std::to_string(n++));
      ::close(fd);
    }
  }

  void fail(std::string what) {
    failed_++;
    std::lock_guard lock(mu_);
    if (failures_.size() < 20) failures_.push_back(std::move(what));
  }

  int port_;
  std::atomic<bool> stop_{false};
  std::atomic<int> ok_{0};
  std::atomic<int> failed_{0};
  std::atomic<int> reconnects_{0};
  std::mutex mu_;
  std::vector<std::string> failures_;
  std::vector<std::thread> threads_;
};

class ProxyHandoff : public ::testing::Test {
 protected:
  void SetUp() override {
    port_ = free_port();
    backend_.handler = [](const proxy::test_support::Request&, proxy::test_support::Response& r) {
      r.body() = "backend";
    };
    fs::create_directories(dir_.path() / "state");
    write_text(state_file(), one_target_snapshot_json(5, backend_.address(), port_));
  }

  fs::path admin_socket() const { return dir_.path() / "admin.sock"; }
  fs::path state_file() const { return dir_.path() / "state" / "snapshot.json"; }
  std::vector<std::string> args(int workers, std::vector<std::string> extra = {}) const {
    std::vector<std::string> a = {CUTOVER_BIN,        "proxy",
                                  "--admin-socket",   admin_socket().string(),
                                  "--state-file",     state_file().string(),
                                  "--workers",        std::to_string(workers),
                                  "--shutdown-grace", "1s"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }
  std::unique_ptr<Child> start(const std::string& name, std::vector<std::string> argv) {
    return std::make_unique<Child>(argv, dir_.path() / (name + ".log"));
  }
  std::string log(const std::string& name) const {
    return read_text(dir_.path() / (name + ".log"));
  }
  int admin_pid() {
    auto h = proxy::AdminClient(admin_socket(), 2s).health();
    return h ? h->pid : 0;
  }
  bool serving(pid_t pid) {
    return wait_for([&] { return admin_pid() == pid && http_get(port_, "/").status == 200; },
                    kTimeout);
  }
  core::Result<void> put_version(uint64_t version) {
    auto s = proxy::AdminClient(admin_socket()).get_snapshot();
    if (!s) return s.error();
    s->version = version;
    return proxy::AdminClient(admin_socket()).put_snapshot(*s);
  }

  TempDir dir_{"cutover-e2e-handoff"};
  Backend backend_{"task-1"};
  int port_ = 0;
};

TEST_F(ProxyHandoff, ZeroFailedRequestsWhileTheBinaryIsReplacedTwice) {
  auto p1 = start("p1", args(2));
  ASSERT_TRUE(serving(p1->pid())) << log("p1");

  Load load(port_, /*keep_alive_clients=*/2, /*per_request_clients=*/2);
  ASSERT_TRUE(load.serves(100)) << log("p1");

  // #2 (more workers) takes over from #1.
  const int before_first = load.ok();
  auto p2 = start("p2", args(3));
  EXPECT_TRUE(exited_zero(p1->wait(kTimeout))) << log("p1") << log("p2");
  const int during_first = load.ok() - before_first;
  ASSERT_TRUE(serving(p2->pid())) << log("p2");
  ASSERT_TRUE(load.serves(100)) << log("p2");

  // #3 (fewer workers) takes over from #2.
  const int before_second = load.ok();
  auto p3 = start("p3", args(1));
  EXPECT_TRUE(exited_zero(p2->wait(kTimeout))) << log("p2") << log("p3");
  const int during_second = load.ok() - before_second;
  ASSERT_TRUE(serving(p3->pid())) << log("p3");
  ASSERT_TRUE(load.serves(100)) << log("p3");
  load.stop();

  std::string failures;
  for (const auto& f : load.failures()) failures += "\n  " + f;
  EXPECT_EQ(load.failed(), 0) << "failed requests:" << failures << "\n"
                              << log("p1") << log("p2") << log("p3");
  EXPECT_GT(during_first, 0) << "requests were served while #2 took over";
  EXPECT_GT(during_second, 0) << "requests were served while #3 took over";
  std::cout << "handoff load: " << load.ok() << " requests, " << load.reconnects()
            << " clean reconnects of keep-alive clients\n";
  EXPECT_NE(log("p2").find("took over 2 listening socket(s)"), std::string::npos) << log("p2");
  EXPECT_NE(log("p1").find("handed over 2 listening socket(s) to pid " + std::to_string(p2->pid())),
            std::string::npos)
      << log("p1");
  // #3 runs one worker per socket it received rather than reset connections queued on them.
  EXPECT_NE(log("p3").find("took over 3 listening socket(s)"), std::string::npos) << log("p3");
  // The state survives: #3 serves version 5 and accepts the next one.
  EXPECT_TRUE(put_version(6)) << log("p3");

  p3->kill(SIGTERM);
  EXPECT_TRUE(exited_zero(p3->wait(kTimeout))) << log("p3");
  EXPECT_FALSE(fs::exists(admin_socket()));
  EXPECT_FALSE(fs::exists(proxy::handoff::socket_path(admin_socket())));
}

TEST_F(ProxyHandoff, ANewProcessThatFailsBeforeReadyLeavesTheOldOneServing) {
  auto p1 = start("p1", args(2));
  ASSERT_TRUE(serving(p1->pid())) << log("p1");
  Load load(port_, 1, 1);
  ASSERT_TRUE(load.serves(20));

  // #2 cannot persist the snapshot it is offered: it gives up before ready.
  write_text(dir_.path() / "not-a-dir", "");
  auto bad = args(2);
  bad[5] = (dir_.path() / "not-a-dir" / "snapshot.json").string();
  auto p2 = start("p2", bad);
  auto status = p2->wait(kTimeout);
  ASSERT_TRUE(status && WIFEXITED(*status)) << log("p2");
  EXPECT_EQ(WEXITSTATUS(*status), 1) << log("p2");
  EXPECT_NE(
      log("p2").find("cannot take over snapshot version 5 from pid " + std::to_string(p1->pid())),
      std::string::npos)
      << log("p2");

  // #1 is still the proxy, serves, and takes snapshots again.
  EXPECT_TRUE(p1->alive());
  EXPECT_TRUE(
      wait_for([&] { return log("p1").find("still serving") != std::string::npos; }, kTimeout))
      << log("p1");
  EXPECT_EQ(admin_pid(), p1->pid());
  EXPECT_TRUE(load.serves(20));
  EXPECT_TRUE(put_version(6)) << log("p1");

  // --no-takeover refuses to start next to it.
  auto refused = run(args(1, {"--no-takeover"}));
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE((refused.out + refused.err).find("already running"), std::string::npos)
      << refused.out << refused.err;

  // And a good process still takes over afterwards.
  auto p3 = start("p3", args(2));
  EXPECT_TRUE(exited_zero(p1->wait(kTimeout))) << log("p1") << log("p3");
  EXPECT_TRUE(serving(p3->pid())) << log("p3");
  EXPECT_EQ(proxy::AdminClient(admin_socket()).health()->version, 6u);
  load.stop();
  EXPECT_EQ(load.failed(), 0) << (load.failures().empty() ? "" : load.failures()[0]);
}

TEST_F(ProxyHandoff, ASecondTakeoverIsRefusedWhileOneIsInProgress) {
  auto p1 = start("p1", args(2));
  ASSERT_TRUE(serving(p1->pid())) << log("p1");

  // A taker that speaks the protocol, receives the sockets, and then stalls.
  namespace handoff = proxy::handoff;
  const auto deadline = std::chrono::steady_clock::now() + kTimeout;
  auto fd = handoff::connect_unix(handoff::socket_path(admin_socket()), deadline);
  ASSERT_TRUE(fd) << fd.error().message;
  core::UniqueFd taker(*fd);
  auto hello = handoff::message("takeover");
  hello["pid"] = 4242;
  ASSERT_TRUE(handoff::send_frame(taker.get(), hello, deadline));
  auto offer = handoff::read_frame(taker.get(), deadline);
  ASSERT_TRUE(offer) << offer.error().message;
  EXPECT_EQ((*offer)["op"], "offer");
  EXPECT_EQ((*offer)["pid"], p1->pid());
  ASSERT_EQ((*offer)["listeners"].size(), 1u);
  EXPECT_EQ((*offer)["listeners"][0]["sockets"], 2);
  auto fds = handoff::receive_fds(taker.get(), 2, deadline);
  ASSERT_TRUE(fds) << fds.error().message;
  for (int f : *fds) ::close(f);

  // Meanwhile snapshots are frozen and another process is turned away.
  auto frozen = put_version(6);
  ASSERT_FALSE(frozen);
  EXPECT_NE(frozen.error().message.find("503"), std::string::npos) << frozen.error().message;
  auto second = run(args(1));
  EXPECT_EQ(second.exit_code, 1);
  EXPECT_NE((second.out + second.err).find("pid 4242 is already taking over"), std::string::npos)
      << second.out << second.err;
  EXPECT_EQ(http_get(port_, "/").status, 200);

  // The stalled taker goes away: #1 carries on as before.
  taker = core::UniqueFd();
  EXPECT_TRUE(
      wait_for([&] { return log("p1").find("still serving") != std::string::npos; }, kTimeout))
      << log("p1");
  EXPECT_TRUE(put_version(6)) << log("p1");
  EXPECT_EQ(admin_pid(), p1->pid());
  EXPECT_EQ(http_get(port_, "/").status, 200);
}

}  // namespace
}  // namespace cutover::e2e
