// The request path: one Worker per event-loop thread. See internal.hpp, proxy.hpp and
// docs/life-of-a-request.md.
//
// Per client connection one coroutine reads a request head into the connection's buffer,
// parses it in place (http1.hpp), picks a target, writes the rewritten head and the body bytes
// it already has in one gathered write to a pooled upstream connection, streams the rest of the
// body by its framing, then does the same with the response. No exceptions and no locks here:
// Asio calls use as_tuple error codes. Timeouts: each connection has one deadline, re-armed by
// each wait; a sweeper every 100 ms cancels the sockets of connections past theirs (the
// coroutine then sees operation_aborted with `timed_out` set).
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include <optional>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "core/id.hpp"
#include "core/log.hpp"
#include "http1/http1.hpp"
#include "proxy/draining_read.hpp"
#include "proxy/internal.hpp"

namespace cutover::proxy::detail {

using Executor = Worker::Executor;
using Socket = Worker::Socket;
template <class T>
using Task = Worker::Task<T>;

namespace {

constexpr auto kTok = asio::as_tuple(asio::use_awaitable_t<Executor>{});
constexpr size_t kClientBufferBytes = 2048;     // grows up to max_header_bytes / kBodyChunk
constexpr size_t kUpstreamBufferBytes = 32768;  // per request in flight, from a free list
constexpr size_t kBodyChunkBytes = 32768;
constexpr size_t kJoinBodyBytes = 1024;  // a body this small is copied after its head
constexpr int64_t kNever = std::numeric_limits<int64_t>::max();
constexpr auto kSweepInterval = std::chrono::milliseconds(100);

// Deadlines only need the sweeper's 100 ms granularity: the coarse clock (a few ms resolution)
// costs a fraction of a precise read, and the request path reads it several times per request.
int64_t now_ms() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1'000'000;
}

void set_nodelay(Socket& s) {
  boost::system::error_code ec;
  s.set_option(tcp::no_delay(true), ec);
}

// A pooled upstream connection is reusable if the peer has not closed it and sent nothing.
bool still_open(Socket& s) {
  char c;
  ssize_t n = ::recv(s.native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

bool is_aborted(const boost::system::error_code& ec) {
  return ec == asio::error::operation_aborted;
}

// Guards a count for the duration of a scope.
struct CountGuard {
  std::atomic<int64_t>& n;
  explicit CountGuard(std::atomic<int64_t>& c) : n(c) { n.fetch_add(1, std::memory_order_relaxed); }
  ~CountGuard() { n.fetch_sub(1, std::memory_order_relaxed); }
  CountGuard(const CountGuard&) = delete;
  CountGuard& operator=(const CountGuard&) = delete;
};

}  // namespace

const char* to_string(HealthState s) {
  switch (s) {
    case HealthState::Initial:
      return "initial";
    case HealthState::Healthy:
      return "healthy";
    case HealthState::Unhealthy:
      return "unhealthy";
    case HealthState::Draining:
      return "draining";
  }
  return "unknown";
}

void TargetStats::record_status(int status) {
  int cls = status / 100;
  size_t i = cls <= 2 ? 0 : cls >= 5 ? 3 : static_cast<size_t>(cls - 2);
  by_class[i].fetch_add(1, std::memory_order_relaxed);
}

void TargetStats::record_latency(core::Duration d) {
  auto ms = d.count() < 0 ? 0 : d.count();
  size_t i = 0;
  while (i < kLatencyBucketsMs.size() && ms > kLatencyBucketsMs[i]) ++i;
  latency[i].fetch_add(1, std::memory_order_relaxed);
  latency_sum_ms.fetch_add(static_cast<uint64_t>(ms), std::memory_order_relaxed);
  latency_count.fetch_add(1, std::memory_order_relaxed);
}

// Bytes read but not yet consumed: [begin, end) of a heap block that grows on demand and
// shrinks back when empty (idle keep-alive connections hold kClientBufferBytes).
struct Worker::Buffer {
  std::unique_ptr<char[]> block;
  size_t cap = 0;
  size_t begin = 0;
  size_t end = 0;

  std::string_view view() const { return {block.get() + begin, end - begin}; }
  size_t size() const { return end - begin; }
  const char* data() const { return block.get() + begin; }
  void consume(size_t n) {
    begin += n;
    if (begin == end) begin = end = 0;
  }
  // At least `want` writable bytes (fewer if `limit` caps the block), compacting first.
  asio::mutable_buffer prepare(size_t want, size_t limit) {
    if (begin > 0 && cap - end < want) {
      std::memmove(block.get(), block.get() + begin, end - begin);
      end -= begin;
      begin = 0;
    }
    if (cap - end < want && cap < limit) {
      size_t next = std::min(limit, std::max(cap * 2, end + want));
      auto grown = std::make_unique<char[]>(next);
      if (end > 0) std::memcpy(grown.get(), block.get(), end);
      block = std::move(grown);
      cap = next;
    }
    return asio::buffer(block.get() + end, cap - end);
  }
  void commit(size_t n) { end += n; }
  void shrink(size_t to) {
    if (size() == 0 && cap > to) {
      block = std::make_unique<char[]>(to);
      cap = to;
      begin = end = 0;
    }
  }
};

// One client connection: its socket, buffer, deadline and the upstream it currently uses.
struct Worker::Conn {
  explicit Conn(Socket s) : client(std::move(s)) {}
  Socket client;
  Socket* upstream = nullptr;  // while a request uses one (the sweeper cancels it too)
  Buffer in;
  std::string out;  // rewritten heads, reused
  std::string client_ip;
  std::string local_address;  // "127.0.0.1:8000": Host for HTTP/1.0 requests without one
  // The listener's address as the client reached it, looked up on first use (a syscall most
  // connections never need).
  const std::string& local_addr() {
    if (local_address.empty()) {
      boost::system::error_code ec;
      auto local = client.local_endpoint(ec);
      if (!ec) {
        local_address = local.address().is_v6() ? "[" + local.address().to_string() + "]"
                                                : local.address().to_string();
        local_address += ':' + std::to_string(local.port());
      }
    }
    return local_address;
  }
  std::string request_id;
  http1::RequestHead req;
  http1::ResponseHead res;
  int64_t deadline = kNever;        // steady ms; the sweeper cancels past it
  int64_t total_deadline = kNever;  // the request's total_timeout
  bool timed_out = false;
  bool idle = true;  // between requests
  // The last request was read to its end and answered in full (not an error close): closing
  // cannot reset a response the client has not read.
  bool exchange_complete = false;
  const TargetHealth* tunnel_target = nullptr;
  std::list<Conn*>::iterator self;
  // TLS listeners: the session over `client` (null on plain HTTP listeners).
  std::unique_ptr<asio::ssl::stream<Socket&>> tls;
};

namespace {

using IoResult = std::tuple<boost::system::error_code, size_t>;

// Client I/O through TLS when the listener terminates it. Not coroutines: each returns the
// operation's awaitable (the same type either way), so no frame is added per call.
Task<IoResult> client_read(Worker::Conn& c, asio::mutable_buffer b) {
  return c.tls ? c.tls->async_read_some(b, kTok) : c.client.async_read_some(draining(b), kTok);
}
template <class Buffers>
Task<IoResult> client_write(Worker::Conn& c, const Buffers& b) {
  return c.tls ? asio::async_write(*c.tls, b, kTok) : asio::async_write(c.client, b, kTok);
}

// Writes on the request path first try one non-blocking send()/sendmsg() on the plain socket:
// a head with a small body almost always fits the send buffer, and writing at once spares the
// coroutine a suspension and a trip of the completion through the io_context. What the socket
// did not take (a full send buffer) is left in `bufs` for async_write. A null socket (TLS) sends
// nothing here. Returns an error other than a full send buffer.
template <size_t N>
boost::system::error_code send_now(Socket* s, std::array<asio::const_buffer, N>& bufs) {
  if (!s) return {};
  std::array<iovec, N> iov;
  size_t count = 0;
  for (const auto& b : bufs)
    if (b.size() > 0) iov[count++] = iovec{const_cast<void*>(b.data()), b.size()};
  if (count == 0) return {};
  ssize_t n;
  do {
    if (count == 1) {
      n = ::send(s->native_handle(), iov[0].iov_base, iov[0].iov_len, MSG_DONTWAIT | MSG_NOSIGNAL);
    } else {
      msghdr msg{};
      msg.msg_iov = iov.data();
      msg.msg_iovlen = count;
      n = ::sendmsg(s->native_handle(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    }
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return {};
    return {errno, boost::system::system_category()};
  }
  auto sent = static_cast<size_t>(n);
  for (auto& b : bufs) {
    size_t k = std::min(sent, b.size());
    b += k;
    sent -= k;
  }
  return {};
}

template <size_t N>
bool all_sent(const std::array<asio::const_buffer, N>& bufs) {
  for (const auto& b : bufs)
    if (b.size() > 0) return false;
  return true;
}

}  // namespace

struct Worker::Upstream {
  explicit Upstream(asio::io_context& ioc) : socket(ioc.get_executor()) {}
  Socket socket;
  int64_t idle_since = 0;
};

void Worker::arm(Conn& c, std::chrono::milliseconds timeout) {
  c.deadline = std::min(now_ms() + timeout.count(), c.total_deadline);
}
void Worker::disarm(Conn& c) { c.deadline = kNever; }

Worker::Worker(Shared& shared, int index)
    : shared_(shared),
      index_(index),
      router_(*shared.clock),
      request_id_prefix_(core::random_hex(6)) {
  request_id_prefix_ += '-';
  request_id_prefix_ += std::to_string(index_);
  request_id_prefix_ += '-';
}

Worker::~Worker() {
  // Sockets outside coroutine frames go first, while the io_context still exists.
  pools_.clear();
  for (auto& [_, acceptor] : acceptors_) {
    boost::system::error_code ec;
    acceptor->close(ec);
  }
  acceptors_.clear();
}

void Worker::start() {
  asio::co_spawn(ioc_, sweep_loop(), asio::detached);
  thread_ = std::thread([this] {
    auto guard = asio::make_work_guard(ioc_);
    ioc_.run();
  });
}

void Worker::join() {
  ioc_.stop();
  if (thread_.joinable()) thread_.join();
}

void Worker::apply(std::shared_ptr<const RouteTable> table, std::vector<NewListener> add,
                   std::vector<std::string> remove) {
  for (const auto& address : remove) {
    auto it = acceptors_.find(address);
    if (it == acceptors_.end()) continue;
    boost::system::error_code ec;
    it->second->close(ec);
    acceptors_.erase(it);
  }
  for (auto& l : add) {
    if (shutting_down_) {
      ::close(l.fd);
      continue;
    }
    auto acceptor = std::make_shared<Acceptor>(ioc_.get_executor());
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    ::getsockname(l.fd, reinterpret_cast<sockaddr*>(&ss), &len);
    boost::system::error_code ec;
    acceptor->assign(ss.ss_family == AF_INET6 ? tcp::v6() : tcp::v4(), l.fd, ec);
    if (ec) {
      core::logger()->error("[proxy] worker {}: cannot adopt listener {}: {}", index_, l.address,
                            ec.message());
      ::close(l.fd);
      continue;
    }
    acceptors_[l.address] = acceptor;
    asio::co_spawn(ioc_, accept_loop(acceptor, l.address), asio::detached);
  }
  table_ = std::move(table);
  router_.reset(table_);
  // Pooled connections to targets that are gone (or draining) close now.
  std::unordered_map<const TargetHealth*, bool> live;
  for (const auto& g : table_->groups)
    for (const auto& t : g.targets) live[t.health.get()] = true;
  for (auto it = pools_.begin(); it != pools_.end();) {
    if (!live.count(it->first) || it->first->state.load() == HealthState::Draining)
      it = pools_.erase(it);
    else
      ++it;
  }
}

void Worker::begin_shutdown() {
  shutting_down_ = true;
  shutdown_deadline_ms_ =
      now_ms() + std::max<int64_t>(0, shared_.options.shutdown_grace.count() - 200);
  for (auto& [_, acceptor] : acceptors_) {
    boost::system::error_code ec;
    acceptor->close(ec);
  }
  acceptors_.clear();
  pools_.clear();
  // Idle connections: their next request is answered with Connection: close; the sweeper
  // closes those still idle at the deadline.
  for (auto* c : conns_)
    if (c->idle) c->deadline = std::min(c->deadline, shutdown_deadline_ms_);
}

Task<void> Worker::sweep_loop() {
  asio::steady_timer timer(ioc_.get_executor());
  for (;;) {
    timer.expires_after(kSweepInterval);
    auto [ec] = co_await timer.async_wait(kTok);
    if (ec) co_return;
    int64_t now = now_ms();
    int64_t clock_now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                            shared_.clock->now().time_since_epoch())
                            .count();
    for (auto* c : conns_) {
      bool expire = c->deadline <= now;
      // WebSocket tunnels to a draining target end at its drain deadline.
      if (c->tunnel_target &&
          c->tunnel_target->state.load(std::memory_order_relaxed) == HealthState::Draining &&
          c->tunnel_target->drain_deadline_ns.load(std::memory_order_relaxed) <= clock_now)
        expire = true;
      if (!expire) continue;
      c->timed_out = true;
      boost::system::error_code ignored;
      c->client.cancel(ignored);
      if (c->upstream) c->upstream->cancel(ignored);
    }
    // Pooled connections idle for too long close (the target would close them anyway).
    for (auto& [_, idle] : pools_) {
      std::erase_if(idle, [&](const std::unique_ptr<Upstream>& u) {
        return now - u->idle_since >= shared_.options.upstream_idle_timeout.count();
      });
    }
  }
}

Task<void> Worker::accept_loop(std::shared_ptr<Acceptor> acceptor, std::string address) {
  for (;;) {
    Socket socket(ioc_.get_executor());
    tcp::endpoint peer;  // from accept4 itself: no getpeername per connection
    auto [ec] = co_await acceptor->async_accept(socket, peer, kTok);
    if (!ec) {
      // Served even if the acceptor closed meanwhile (a completion posted before the close):
      // the client is connected and expects an answer.
      set_nodelay(socket);
      std::shared_ptr<asio::ssl::context> tls;
      if (table_) {
        auto it = table_->listener_by_address.find(address);
        if (it != table_->listener_by_address.end()) tls = table_->listeners[it->second].tls;
      }
      asio::co_spawn(ioc_, serve(std::move(socket), address, std::move(tls), peer), asio::detached);
      if (!acceptor->is_open()) co_return;
      continue;
    }
    if (ec == asio::error::operation_aborted || ec == asio::error::invalid_argument ||
        ec == asio::error::bad_descriptor || !acceptor->is_open())
      co_return;
    // EMFILE and friends: back off briefly instead of spinning.
    core::logger()->warn("[proxy] accept on {}: {}", address, ec.message());
    asio::steady_timer t(ioc_.get_executor(), std::chrono::milliseconds(50));
    co_await t.async_wait(kTok);
  }
}

void Worker::next_request_id(std::string& out) {
  out = request_id_prefix_;
  char hex[17];
  uint64_t n = ++request_counter_;
  int i = 16;
  do {
    hex[--i] = "0123456789abcdef"[n & 15];
    n >>= 4;
  } while (n);
  out.append(hex + i, static_cast<size_t>(16 - i));
}

std::unique_ptr<Worker::Upstream> Worker::take_pooled(const TargetEntry& target, bool check_open) {
  auto it = pools_.find(target.health.get());
  if (it == pools_.end()) return nullptr;
  auto& idle = it->second;
  int64_t now = now_ms();
  while (!idle.empty()) {
    auto u = std::move(idle.back());
    idle.pop_back();
    if (now - u->idle_since >= shared_.options.upstream_idle_timeout.count()) continue;
    // A request that cannot be retried checks first that the target has not closed the
    // connection meanwhile (one recv syscall); others rely on the retry on a fresh connection.
    if (check_open && !still_open(u->socket)) continue;
    return u;
  }
  return nullptr;
}

void Worker::give_back(const TargetEntry& target, std::unique_ptr<Upstream> up) {
  if (shutting_down_ || shared_.stopping.load(std::memory_order_relaxed)) return;
  if (target.health->state.load(std::memory_order_relaxed) == HealthState::Draining) return;
  // Only targets of the current table are pooled (a removed target's pool is gone).
  bool current = false;
  for (const auto& g : table_->groups) {
    for (const auto& t : g.targets) {
      if (t.health == target.health) {
        current = true;
        break;
      }
    }
    if (current) break;
  }
  if (!current) return;
  auto& idle = pools_[target.health.get()];
  if (idle.size() >= shared_.options.max_idle_per_target) idle.erase(idle.begin());
  up->idle_since = now_ms();
  idle.push_back(std::move(up));
}

std::unique_ptr<char[]> Worker::take_buffer() {
  if (spare_buffers_.empty()) return std::make_unique<char[]>(kUpstreamBufferBytes);
  auto b = std::move(spare_buffers_.back());
  spare_buffers_.pop_back();
  return b;
}

void Worker::give_buffer(std::unique_ptr<char[]> b) {
  if (b && spare_buffers_.size() < 64) spare_buffers_.push_back(std::move(b));
}

Task<bool> Worker::answer(Conn& c, int status, std::string_view detail, bool keep_alive,
                          std::string_view location) {
  c.out.clear();
  http1::write_simple_response(status, detail, keep_alive, c.out, location);
  arm(c, std::chrono::seconds(10));
  std::array<asio::const_buffer, 1> out{asio::buffer(c.out)};
  auto ec = send_now(c.tls ? nullptr : &c.client, out);
  if (!ec && !all_sent(out)) std::tie(ec, std::ignore) = co_await client_write(c, out);
  co_return !ec && keep_alive;
}

Task<void> Worker::serve(Socket socket, std::string address,
                         std::shared_ptr<asio::ssl::context> tls, tcp::endpoint peer) {
  const auto& opt = shared_.options;
  auto conn = std::make_unique<Conn>(std::move(socket));
  Conn& c = *conn;
  c.client_ip = peer.address().to_string();
  c.in.prepare(kClientBufferBytes, kClientBufferBytes);
  c.self = conns_.insert(conns_.end(), &c);
  CountGuard open(shared_.open_connections);
  if (tls) {
    c.tls = std::make_unique<asio::ssl::stream<Socket&>>(c.client, *tls);
    arm(c, opt.header_timeout);
    auto [hec] = co_await c.tls->async_handshake(asio::ssl::stream_base::server, kTok);
    if (hec) {
      core::logger()->debug("[proxy] TLS handshake with {} on {}: {}", c.client_ip, address,
                            c.timed_out ? std::string("timed out") : hec.message());
      conns_.erase(c.self);
      boost::system::error_code ignored;
      c.client.close(ignored);
      co_return;
    }
  }
  const http1::Limits limits{opt.max_header_bytes, 128};
  bool first = true;
  for (;;) {
    // Idle until the first byte of a request, then header_timeout for the whole head
    // (slowloris: a head sent one byte at a time still times out).
    c.idle = true;
    c.exchange_complete = false;
    c.total_deadline = kNever;
    if (c.in.size() == 0) {
      arm(c, first ? opt.header_timeout : opt.idle_timeout);
      if (shutting_down_) c.deadline = std::min(c.deadline, shutdown_deadline_ms_);
    } else {
      arm(c, opt.header_timeout);
    }
    c.timed_out = false;
    size_t searched = 0;
    http1::ParseResult parsed;
    bool closed = false;
    for (;;) {
      if (c.in.size() > 0) {
        parsed = http1::parse_request_head(c.in.view(), limits, c.req, searched);
        if (parsed.status != http1::Parse::Incomplete) break;
        searched = c.in.size() > 3 ? c.in.size() - 3 : 0;
      }
      auto space = c.in.prepare(1024, opt.max_header_bytes + 1024);
      auto [ec, n] = co_await client_read(c, space);
      if (ec) {
        if (c.timed_out && c.in.size() > 0) {
          co_await answer(c, 408, "request header not received in time", false);
        } else if (!c.timed_out && c.in.size() > 0 && ec != asio::error::eof &&
                   ec != asio::error::connection_reset && !is_aborted(ec)) {
          co_await answer(c, 400, "connection error while reading the request header", false);
        }
        closed = true;
        break;
      }
      if (c.in.size() == 0) {
        c.idle = false;
        arm(c, opt.header_timeout);
      }
      c.in.commit(n);
    }
    if (closed) break;
    c.idle = false;
    if (parsed.status == http1::Parse::Error) {
      co_await answer(c, parsed.error_status, parsed.error, false);
      break;
    }
    first = false;
    // Route with one table for the whole request.
    std::shared_ptr<const RouteTable> table = table_;
    size_t listener = 0;
    bool listener_known = false;  // false: the listener left the snapshot after this accept
    bool routed = false;
    int redirect_port = 0;
    if (table) {
      auto lit = table->listener_by_address.find(address);
      if (lit != table->listener_by_address.end()) {
        listener = lit->second;
        listener_known = true;
        routed = table->listeners[listener].total_weight > 0;
        redirect_port = table->listeners[listener].redirect_https_port;
      }
    }
    bool again;
    {
      CountGuard active(shared_.active_requests);
      if (redirect_port > 0) {
        // HTTP -> HTTPS: same host (without its port) and target.
        std::string_view host = c.req.host.empty() ? std::string_view(c.local_addr()) : c.req.host;
        if (!host.empty() && host.front() == '[') {
          host = host.substr(0, host.find(']') + 1);
        } else if (auto colon = host.rfind(':'); colon != std::string_view::npos) {
          host = host.substr(0, colon);
        }
        std::string location = "https://" + std::string(host);
        if (redirect_port != 443) location += ":" + std::to_string(redirect_port);
        location += c.req.target.empty() || c.req.target.front() != '/' ? "/" : "";
        location += c.req.target;
        bool keep = c.req.framing == http1::Framing::None && c.req.keep_alive && !shutting_down_;
        c.in.consume(parsed.head_bytes);
        again = co_await answer(c, 308, "use https", keep, location);
      } else if (!routed) {
        // The head is consumed; a body is not read, so the connection cannot continue.
        bool keep = c.req.framing == http1::Framing::None && c.req.keep_alive && !shutting_down_ &&
                    listener_known;
        c.in.consume(parsed.head_bytes);
        again = co_await answer(c, 503, "no route for this listener", keep);
      } else {
        c.in.consume(parsed.head_bytes);
        c.total_deadline =
            opt.total_timeout.count() > 0 ? now_ms() + opt.total_timeout.count() : kNever;
        again = co_await handle(c, listener, std::move(table));
      }
    }
    c.upstream = nullptr;
    c.tunnel_target = nullptr;
    // `again` already says whether the answer kept the connection (Connection: close was sent
    // otherwise); a shutdown that began since then closes it only after its next request.
    if (!again) break;
    c.in.shrink(kClientBufferBytes);
  }
  conns_.erase(c.self);
  // Lingering close: closing with unread request bytes would send a reset that can destroy the
  // error response (431, 413, ...) before the client reads it. Drain briefly first.
  boost::system::error_code ec;
  if (c.tls) {
    // close_notify, waiting up to a second for the client's.
    c.self = conns_.insert(conns_.end(), &c);
    c.total_deadline = kNever;
    arm(c, std::chrono::seconds(1));
    auto [sec] = co_await c.tls->async_shutdown(kTok);
    conns_.erase(c.self);
    c.client.close(ec);
    co_return;
  }
  // Nothing unread (the usual case, e.g. after Connection: close): no reset can happen, so the
  // socket closes at once without the shutdown and drain round trip.
  int unread = 0;
  if (c.exchange_complete && c.in.size() == 0 &&
      ::ioctl(c.client.native_handle(), FIONREAD, &unread) == 0 && unread == 0) {
    c.client.close(ec);
    co_return;
  }
  c.client.shutdown(tcp::socket::shutdown_send, ec);
  if (!ec && c.client.is_open()) {
    c.self = conns_.insert(conns_.end(), &c);
    c.total_deadline = kNever;
    arm(c, std::chrono::seconds(2));
    c.timed_out = false;
    // The connection's own buffer is the sink (no second buffer in every coroutine frame).
    c.in.begin = c.in.end = 0;
    auto sink = c.in.prepare(kClientBufferBytes, kClientBufferBytes);
    size_t drained = 0;
    while (drained < (1u << 20)) {
      auto [dec, dn] = co_await c.client.async_read_some(sink, kTok);
      if (dec) break;
      drained += dn;
    }
    conns_.erase(c.self);
  }
  c.client.close(ec);
}

Task<bool> Worker::handle(Conn& c, size_t listener, std::shared_ptr<const RouteTable> table) {
  const auto& opt = shared_.options;
  auto& req = c.req;
  const int client_minor = req.minor;
  const bool upgrade = req.wants_upgrade();
  // The client connection continues only if this request's body is read to its end.
  bool body_done = req.framing == http1::Framing::None;
  auto reusable = [&] {
    return req.keep_alive && body_done && !upgrade && !shutting_down_ &&
           !shared_.stopping.load(std::memory_order_relaxed);
  };
  if (req.framing == http1::Framing::Length && req.content_length > opt.max_body_bytes) {
    co_return co_await answer(c, 413, "request body too large", false);
  }
  // The Cookie view points into the head, still intact in the client buffer here.
  const Pick pick = router_.pick(*table, listener, cookie_field(req.headers));
  if (!pick.target) {
    std::string why = pick.group < 0
                          ? std::string("no route for this listener")
                          : "no healthy target in target group " + table->groups[pick.group].name;
    bool keep = reusable();
    co_return co_await answer(c, 503, why, keep);
  }
  const int group_index = pick.group;
  const TargetEntry* target = pick.target;

  // 100-continue is answered here: the body is then read from the client and streamed on.
  if (req.expect_continue && req.framing != http1::Framing::None && c.in.size() == 0 &&
      client_minor == 1) {
    static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
    arm(c, opt.body_timeout);
    auto cont = asio::buffer(kContinue);
    auto [ec, n] = co_await client_write(c, cont);
    if (ec) co_return false;
  }

  // The rewritten head, kept for a retry on another target or a fresh connection.
  c.request_id.clear();
  next_request_id(c.request_id);
  c.out.clear();
  http1::RequestRewrite rw{c.client_ip, c.tls ? "https" : "http", c.request_id, c.local_addr()};
  http1::write_request_head(req, rw, c.out);
  const size_t head_size = c.out.size();
  const bool idempotent = req.idempotent();
  const std::string method(req.method);
  http1::BodyFramer framer;
  framer.reset(req.framing, req.content_length);
  // Body bytes already read with the head.
  size_t body_prefix = framer.feed(c.in.data(), c.in.size());
  if (framer.error()) co_return co_await answer(c, 400, "invalid chunked request body", false);
  if (framer.body_bytes() > opt.max_body_bytes)
    co_return co_await answer(c, 413, "request body too large", false);
  body_done = framer.done();
  const bool whole_request_in_hand = framer.done();

  bool target_retried = false;
  bool fresh_retried = false;
  bool force_fresh = false;
  for (;;) {
    CountGuard in_flight(target->health->in_flight);
    auto started = shared_.clock->now();
    std::unique_ptr<Upstream> up;
    if (!force_fresh) up = take_pooled(*target, !(idempotent && whole_request_in_hand));
    const bool reused = up != nullptr;
    if (!up) {
      up = std::make_unique<Upstream>(ioc_);
      c.upstream = &up->socket;
      arm(c, opt.connect_timeout);
      auto [cec] = co_await up->socket.async_connect(target->endpoint, kTok);
      if (cec) {
        const bool timeout = c.timed_out;
        c.timed_out = false;
        c.upstream = nullptr;
        target->stats->upstream_errors.fetch_add(1, std::memory_order_relaxed);
        core::logger()->debug("[proxy] connect to {} ({}): {}", target->id,
                              target->endpoint.address().to_string(),
                              timeout ? "timed out" : cec.message());
        router_.report(*table, group_index, *target, Outcome::ConnectFailure);
        // Nothing was sent: another target may take the request, whatever its method.
        if (!target_retried) {
          target_retried = true;
          const TargetEntry* other = router_.pick_in_group(*table, group_index, target);
          if (other) {
            target = other;
            continue;
          }
        }
        target->stats->record_status(timeout ? 504 : 502);
        std::string why = "cannot connect to target " + target->id + ": " +
                          (timeout ? std::string("timed out") : cec.message());
        bool keep = reusable();
        co_return co_await answer(c, timeout ? 504 : 502, why, keep);
      }
      set_nodelay(up->socket);
    }
    c.upstream = &up->socket;

    // Request: head and the body bytes in hand in one write, then the rest of the body.
    bool upstream_failed = false;
    {
      std::array<asio::const_buffer, 2> bufs{asio::buffer(c.out.data(), head_size),
                                             asio::buffer(c.in.data(), body_prefix)};
      arm(c, opt.body_timeout);
      auto ec = send_now(&up->socket, bufs);
      if (!ec && !all_sent(bufs))
        std::tie(ec, std::ignore) = co_await asio::async_write(up->socket, bufs, kTok);
      upstream_failed = static_cast<bool>(ec);
    }
    if (!upstream_failed && !framer.done()) {
      // Past this point the body is consumed from the client: no retry is possible.
      c.in.consume(body_prefix);
      body_prefix = 0;
      while (!framer.done()) {
        auto space = c.in.prepare(kBodyChunkBytes, kBodyChunkBytes);
        arm(c, opt.body_timeout);
        auto [rec, rn] = co_await client_read(c, space);
        if (rec) co_return false;  // client gone or too slow: nothing to answer
        c.in.commit(rn);
        size_t k = framer.feed(c.in.data(), c.in.size());
        if (framer.error())
          co_return co_await answer(c, 400, "invalid chunked request body", false);
        if (framer.body_bytes() > opt.max_body_bytes)
          co_return co_await answer(c, 413, "request body too large", false);
        arm(c, opt.body_timeout);
        auto [wec, wn] = co_await asio::async_write(up->socket, asio::buffer(c.in.data(), k), kTok);
        c.in.consume(k);
        if (wec) {
          upstream_failed = true;
          break;
        }
      }
      body_done = framer.done();
    }

    // Response head, skipping interim 1xx answers (forwarded to HTTP/1.1 clients).
    auto ublock = take_buffer();
    size_t uend = 0;
    http1::ParseResult rp;
    auto& res = c.res;
    bool got_any = false;
    boost::system::error_code rec;
    bool timed_out = false;
    if (!upstream_failed) {
      arm(c, opt.response_timeout);
      size_t searched = 0;
      for (;;) {
        if (uend > 0) {
          rp = http1::parse_response_head(std::string_view(ublock.get(), uend),
                                          http1::Limits{opt.max_header_bytes, 128}, method, res,
                                          searched);
          if (rp.status == http1::Parse::Done && res.status < 200 && res.status != 101) {
            if (client_minor == 1) {
              arm(c, opt.body_timeout);
              auto interim = asio::buffer(ublock.get(), rp.head_bytes);
              auto [wec, wn] = co_await client_write(c, interim);
              if (wec) {
                give_buffer(std::move(ublock));
                co_return false;
              }
            }
            std::memmove(ublock.get(), ublock.get() + rp.head_bytes, uend - rp.head_bytes);
            uend -= rp.head_bytes;
            searched = 0;
            arm(c, opt.response_timeout);
            continue;
          }
          if (rp.status != http1::Parse::Incomplete) break;
          searched = uend > 3 ? uend - 3 : 0;
        }
        if (uend == kUpstreamBufferBytes) {
          rp.status = http1::Parse::Error;
          rp.error = "response header too large";
          break;
        }
        auto [ec, n] = co_await up->socket.async_read_some(
            draining(asio::buffer(ublock.get() + uend, kUpstreamBufferBytes - uend)), kTok);
        if (ec) {
          rec = ec;
          timed_out = c.timed_out;
          break;
        }
        got_any = true;
        uend += n;
      }
    }
    if (upstream_failed || rec) {
      give_buffer(std::move(ublock));
      // A pooled connection the target closed meanwhile: retry once on a fresh connection if
      // the whole request is still in hand.
      if (reused && !fresh_retried && !got_any && !timed_out && whole_request_in_hand &&
          idempotent) {
        fresh_retried = true;
        force_fresh = true;
        c.timed_out = false;
        continue;
      }
      target->stats->upstream_errors.fetch_add(1, std::memory_order_relaxed);
      target->stats->record_status(timed_out ? 504 : 502);
      router_.report(*table, group_index, *target, Outcome::Status5xx);
      std::string why = "target " + target->id + " " +
                        (timed_out         ? std::string("did not respond in time")
                         : upstream_failed ? std::string("closed the connection")
                                           : "closed the connection: " + rec.message());
      bool keep = reusable();
      co_return co_await answer(c, timed_out ? 504 : 502, why, keep);
    }
    if (rp.status == http1::Parse::Error) {
      give_buffer(std::move(ublock));
      target->stats->upstream_errors.fetch_add(1, std::memory_order_relaxed);
      target->stats->record_status(502);
      router_.report(*table, group_index, *target, Outcome::Status5xx);
      std::string why =
          std::string("target ") + target->id + " sent an invalid response: " + rp.error;
      bool keep = reusable();
      co_return co_await answer(c, 502, why, keep);
    }
    // The request is consumed from the client buffer once its answer starts.
    c.in.consume(body_prefix);
    body_prefix = 0;

    const int status = res.status;
    target->stats->record_latency(
        std::chrono::duration_cast<core::Duration>(shared_.clock->now() - started));
    target->stats->record_status(status);
    router_.report(*table, group_index, *target,
                   status >= 500 ? Outcome::Status5xx : Outcome::Success);

    if (status == 101) {
      if (!upgrade) {
        give_buffer(std::move(ublock));
        co_return co_await answer(c, 502, "target switched protocols without an upgrade request",
                                  false);
      }
      c.out.clear();
      http1::write_response_head(res, client_minor, true, pick.set_cookie_line, c.out);
      std::array<asio::const_buffer, 2> bufs{
          asio::buffer(c.out), asio::buffer(ublock.get() + rp.head_bytes, uend - rp.head_bytes)};
      arm(c, opt.body_timeout);
      auto [wec, wn] = co_await client_write(c, bufs);
      give_buffer(std::move(ublock));
      if (wec) co_return false;
      co_await tunnel(c, *up, *target);
      co_return false;
    }

    const bool upstream_keep_alive = res.keep_alive;
    const bool until_close = res.framing == http1::Framing::UntilClose;
    const bool keep = reusable() && !until_close;
    c.out.clear();
    http1::write_response_head(res, client_minor, keep, pick.set_cookie_line, c.out);
    http1::BodyFramer rframer;
    rframer.reset(res.framing, res.content_length);
    size_t have = uend - rp.head_bytes;
    size_t k = rframer.feed(ublock.get() + rp.head_bytes, have);
    size_t extra = have - k;  // bytes after the response: the connection is not reused
    {
      // A small body joins the head: one plain send() instead of a sendmsg() of two pieces.
      size_t body_in_hand = k;
      if (body_in_hand > 0 && body_in_hand <= kJoinBodyBytes) {
        c.out.append(ublock.get() + rp.head_bytes, body_in_hand);
        body_in_hand = 0;
      }
      std::array<asio::const_buffer, 2> bufs{
          asio::buffer(c.out), asio::buffer(ublock.get() + rp.head_bytes, body_in_hand)};
      arm(c, opt.body_timeout);
      auto wec = send_now(c.tls ? nullptr : &c.client, bufs);
      if (!wec && !all_sent(bufs)) std::tie(wec, std::ignore) = co_await client_write(c, bufs);
      if (wec) {
        give_buffer(std::move(ublock));
        co_return false;
      }
    }
    bool failed = rframer.error();
    while (!failed && !rframer.done()) {
      arm(c, opt.body_timeout);
      auto [ec, n] = co_await up->socket.async_read_some(
          draining(asio::buffer(ublock.get(), kUpstreamBufferBytes)), kTok);
      if (ec) {
        if (until_close && (ec == asio::error::eof)) break;
        target->stats->upstream_errors.fetch_add(1, std::memory_order_relaxed);
        failed = true;
        break;
      }
      size_t m = rframer.feed(ublock.get(), n);
      if (rframer.error()) {
        target->stats->upstream_errors.fetch_add(1, std::memory_order_relaxed);
        failed = true;
        break;
      }
      extra += n - m;
      arm(c, opt.body_timeout);
      std::array<asio::const_buffer, 1> piece{asio::buffer(ublock.get(), m)};
      auto wec = send_now(c.tls ? nullptr : &c.client, piece);
      if (!wec && !all_sent(piece)) std::tie(wec, std::ignore) = co_await client_write(c, piece);
      if (wec) {
        failed = true;
        break;
      }
    }
    give_buffer(std::move(ublock));
    c.upstream = nullptr;
    if (failed) co_return false;
    if (upstream_keep_alive && !until_close && extra == 0 && rframer.done())
      give_back(*target, std::move(up));
    c.exchange_complete = body_done;
    co_return keep;
  }
}

// Copies bytes both ways until both sides are done, the connection is idle for idle_timeout,
// or the target drains past its drain timeout (the sweeper cancels the sockets).
Task<void> Worker::tunnel(Conn& c, Upstream& up, const TargetEntry& target) {
  using namespace asio::experimental::awaitable_operators;
  const auto idle = shared_.options.idle_timeout;
  c.total_deadline = kNever;
  c.tunnel_target = target.health.get();
  c.upstream = &up.socket;
  // Bytes the client sent after its upgrade request belong to the tunnel.
  if (c.in.size() > 0) {
    arm(c, idle);
    auto [ec, n] =
        co_await asio::async_write(up.socket, asio::buffer(c.in.data(), c.in.size()), kTok);
    c.in.consume(c.in.size());
    if (ec) co_return;
  }
  // Each direction copies until its source ends. A clean end of the client's stream half-closes
  // the target's; anything else (reset, timeout, drain, the target's end on TLS, which cannot be
  // half-closed) ends both directions.
  auto end_both = [&c, &up] {
    boost::system::error_code ignored;
    c.client.cancel(ignored);
    up.socket.cancel(ignored);
  };
  auto client_to_target = [this, &c, &up, idle, &end_both]() -> Task<void> {
    auto block = take_buffer();
    for (;;) {
      arm(c, idle);
      auto space = asio::buffer(block.get(), kUpstreamBufferBytes);
      auto [ec, n] = co_await client_read(c, space);
      if (ec) {
        boost::system::error_code ignored;
        if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated)
          up.socket.shutdown(tcp::socket::shutdown_send, ignored);
        else
          end_both();
        break;
      }
      arm(c, idle);
      auto [wec, wn] = co_await asio::async_write(up.socket, asio::buffer(block.get(), n), kTok);
      if (wec) {
        end_both();
        break;
      }
    }
    give_buffer(std::move(block));
  };
  auto target_to_client = [this, &c, &up, idle, &end_both]() -> Task<void> {
    auto block = take_buffer();
    for (;;) {
      arm(c, idle);
      auto [ec, n] = co_await up.socket.async_read_some(
          draining(asio::buffer(block.get(), kUpstreamBufferBytes)), kTok);
      if (ec) {
        boost::system::error_code ignored;
        if (ec == asio::error::eof && !c.tls)
          c.client.shutdown(tcp::socket::shutdown_send, ignored);
        else
          end_both();
        break;
      }
      arm(c, idle);
      auto piece = asio::buffer(block.get(), n);
      auto [wec, wn] = co_await client_write(c, piece);
      if (wec) {
        end_both();
        break;
      }
    }
    give_buffer(std::move(block));
  };
  co_await (client_to_target() && target_to_client());
  boost::system::error_code ignored;
  up.socket.close(ignored);
}

}  // namespace cutover::proxy::detail
