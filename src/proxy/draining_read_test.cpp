// Reads into a DrainingBuffer (draining_read.hpp) over real loopback TCP sockets: after a short
// read the next read waits for epoll instead of trying recv() at once, so what matters is that no
// wake-up is lost: data sent after the short read, data that arrived (and whose epoll event the
// reactor already processed) before the next read started, a read that fills its buffer, EOF and
// a cancelled read all complete as with plain Asio reads.
#include <sys/socket.h>

#include <array>
#include <chrono>
#include <optional>
#include <string>

#include <gtest/gtest.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "proxy/draining_read.hpp"

namespace cutover::proxy::detail {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

// A connected pair on 127.0.0.1: `near` is read with DrainingBuffer, `far` is written with
// blocking send().
struct Pair {
  asio::io_context ioc{1};
  tcp::socket near{ioc};
  tcp::socket far{ioc};

  Pair() {
    tcp::acceptor acceptor(ioc, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
    far.connect(acceptor.local_endpoint());
    acceptor.accept(near);
  }
  void send(const std::string& bytes) {
    ASSERT_EQ(::send(far.native_handle(), bytes.data(), bytes.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(bytes.size()));
  }
};

struct ReadResult {
  boost::system::error_code ec;
  size_t n = 0;
};

// Starts one read into `buf` and runs the loop until it completes or 5 s pass.
std::optional<ReadResult> read_once(Pair& p, char* buf, size_t size) {
  std::optional<ReadResult> result;
  p.near.async_read_some(draining(asio::buffer(buf, size)),
                         [&](boost::system::error_code ec, size_t n) {
                           result = {ec, n};
                         });
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!result && std::chrono::steady_clock::now() < deadline)
    p.ioc.run_one_for(std::chrono::milliseconds(100));
  p.ioc.restart();
  return result;
}

TEST(DrainingReadTest, ReadAfterAShortReadCompletesWhenDataArrivesLater) {
  Pair p;
  std::array<char, 1024> buf{};
  p.send("first");
  auto r1 = read_once(p, buf.data(), buf.size());
  ASSERT_TRUE(r1);
  EXPECT_EQ(std::string(buf.data(), r1->n), "first");
  // The short read marked the socket drained: this read is queued on epoll, and the data sent
  // while it waits must wake it.
  std::optional<ReadResult> r2;
  p.near.async_read_some(draining(asio::buffer(buf)), [&](boost::system::error_code ec, size_t n) {
    r2 = {ec, n};
  });
  p.ioc.poll();
  EXPECT_FALSE(r2) << "nothing was sent yet";
  p.send("second");
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!r2 && std::chrono::steady_clock::now() < deadline)
    p.ioc.run_one_for(std::chrono::milliseconds(100));
  ASSERT_TRUE(r2) << "the read after a short read missed the data sent later";
  EXPECT_FALSE(r2->ec);
  EXPECT_EQ(std::string(buf.data(), r2->n), "second");
}

TEST(DrainingReadTest, DataWhoseEventWasProcessedBeforeTheNextReadIsNotLost) {
  Pair p;
  std::array<char, 1024> buf{};
  p.send("first");
  auto r1 = read_once(p, buf.data(), buf.size());
  ASSERT_TRUE(r1);
  // Data arrives while no read is pending, and the reactor handles its (edge-triggered) epoll
  // event with nothing to complete: the next read must still see it.
  p.send("second");
  for (int i = 0; i < 20; ++i) p.ioc.poll();
  p.ioc.restart();
  auto r2 = read_once(p, buf.data(), buf.size());
  ASSERT_TRUE(r2) << "the data's epoll event was consumed before the read and the read hung";
  EXPECT_FALSE(r2->ec);
  EXPECT_EQ(std::string(buf.data(), r2->n), "second");
}

TEST(DrainingReadTest, AReadThatFillsItsBufferLeavesTheRestForTheNextRead) {
  Pair p;
  std::array<char, 4> buf{};
  p.send("0123456789");
  std::string got;
  while (got.size() < 10) {
    auto r = read_once(p, buf.data(), buf.size());
    ASSERT_TRUE(r) << "read hung after " << got.size() << " bytes";
    ASSERT_FALSE(r->ec) << r->ec.message();
    got.append(buf.data(), r->n);
  }
  EXPECT_EQ(got, "0123456789");
}

TEST(DrainingReadTest, EndOfStreamAfterAShortReadIsReported) {
  Pair p;
  std::array<char, 1024> buf{};
  p.send("last");
  auto r1 = read_once(p, buf.data(), buf.size());
  ASSERT_TRUE(r1);
  EXPECT_EQ(r1->n, 4U);
  p.far.shutdown(tcp::socket::shutdown_send);
  auto r2 = read_once(p, buf.data(), buf.size());
  ASSERT_TRUE(r2) << "EOF after a short read was not reported";
  EXPECT_EQ(r2->ec, asio::error::eof);
}

TEST(DrainingReadTest, CancellingAWaitingReadCompletesItWithOperationAborted) {
  Pair p;
  std::array<char, 1024> buf{};
  p.send("x");
  ASSERT_TRUE(read_once(p, buf.data(), buf.size()));
  std::optional<ReadResult> r;
  p.near.async_read_some(draining(asio::buffer(buf)), [&](boost::system::error_code ec, size_t n) {
    r = {ec, n};
  });
  p.ioc.poll();
  ASSERT_FALSE(r);
  p.near.cancel();  // what the proxy's sweeper does at a deadline
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!r && std::chrono::steady_clock::now() < deadline)
    p.ioc.run_one_for(std::chrono::milliseconds(100));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->ec, asio::error::operation_aborted);
}

}  // namespace
}  // namespace cutover::proxy::detail
