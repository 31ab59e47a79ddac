// The socket handoff between two Proxy objects in one process (the e2e tests run it between
// processes under load): the port of a "127.0.0.1:0" listener, the snapshot and target health
// carry over, the old proxy is told, and socket files end up with the new one.
#include <atomic>

#include "proxy/handoff.hpp"
#include "proxy/test_support.hpp"

namespace cutover::proxy::test_support {
namespace {

TEST_F(ProxyTest, AnotherProxyTakesOverListenersSnapshotAndHealth) {
  Backend a("task-a");
  std::atomic<int> handed_over{0};
  options_.on_handed_over = [&] { handed_over++; };
  start_proxy();
  put(snapshot(4, {{"blue", {&a}}}));
  ASSERT_TRUE(wait_state("task-a", "healthy"));
  const uint16_t old_port = port();
  auto before = std::make_unique<Client>(old_port);
  EXPECT_EQ(before->get("/").body(), "task-a");

  ProxyOptions next = options_;
  next.on_handed_over = nullptr;
  next.workers = 3;  // one more socket per listener, bound to the same port
  Proxy taker(next);
  auto started = taker.start();
  ASSERT_TRUE(started.ok()) << started.error().message;
  EXPECT_EQ(taker.version(), 4u);
  EXPECT_EQ(taker.listener_port("web/production"), old_port);
  ASSERT_TRUE(wait_until([&] { return handed_over.load() == 1; }));
  // The old proxy answers its open connection once more, with Connection: close.
  auto last = before->get("/");
  EXPECT_EQ(last.body(), "task-a");
  EXPECT_FALSE(last.keep_alive());
  before.reset();
  proxy_->stop();  // returns once its last connection is closed

  // Healthy from the start (inherited), on the same port, with the admin socket in place.
  Client after(old_port);
  EXPECT_EQ(after.get("/").body(), "task-a");
  EXPECT_EQ(state_of("task-a"), "healthy");
  EXPECT_TRUE(std::filesystem::is_socket(options_.admin_socket));
  EXPECT_TRUE(std::filesystem::is_socket(handoff::socket_path(options_.admin_socket)));
  put(snapshot(5, {{"blue", {&a}}}, "127.0.0.1:" + std::to_string(old_port)));
  EXPECT_EQ(taker.version(), 5u);
  taker.stop();
  EXPECT_FALSE(std::filesystem::exists(options_.admin_socket));
  EXPECT_FALSE(std::filesystem::exists(handoff::socket_path(options_.admin_socket)));
}

TEST_F(ProxyTest, NoTakeoverRefusesToStartNextToARunningProxy) {
  start_proxy();
  ProxyOptions next = options_;
  next.takeover = false;
  Proxy second(next);
  auto started = second.start();
  ASSERT_FALSE(started.ok());
  EXPECT_NE(started.error().message.find("already running"), std::string::npos)
      << started.error().message;
  EXPECT_TRUE(admin().health().ok());
}

}  // namespace
}  // namespace cutover::proxy::test_support
