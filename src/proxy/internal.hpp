// Internals of the proxy shared by its translation units (not a public header: it includes
// Boost.Asio/Beast). See proxy.hpp for the architecture.
//
// Ownership and threads:
//   - Impl (proxy.cpp) owns everything; its control thread runs the admin API, applies snapshots
//     and runs health checks. Control-thread-only state is guarded by Impl::mu_ for readers on
//     other threads (version(), listener_port()).
//   - TargetHealth and TargetStats are shared between the control thread and workers; workers only
//     read `state` and update atomics.
//   - Routing decisions (group/target choice, sticky cohorts, passive ejection) are routing.hpp's;
//     the Router state is per worker, its ejection counters are TargetHealth atomics.
//   - RouteTable is immutable once built; each Worker holds its own shared_ptr<const RouteTable>,
//     replaced by a task posted to the worker's loop, so a request reads it without a lock.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/basic_socket_acceptor.hpp>
#include <boost/asio/basic_stream_socket.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "core/clock.hpp"
#include "proxy/proxy.hpp"
#include "proxy/routing.hpp"
#include "proxy/snapshot.hpp"

namespace boost::asio::ssl {
class context;
}

namespace cutover::proxy::detail {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

enum class HealthState : int { Initial, Healthy, Unhealthy, Draining };
const char* to_string(HealthState s);

// Latency histogram upper bounds in milliseconds; one more bucket for +Inf.
inline constexpr std::array<int64_t, 13> kLatencyBucketsMs = {1,   2,   5,    10,   25,   50,   100,
                                                              250, 500, 1000, 2500, 5000, 10000};

// Counters of one target in one target group. Workers update them with relaxed atomics.
struct TargetStats {
  std::array<std::atomic<uint64_t>, 4> by_class{};  // 2xx, 3xx, 4xx, 5xx (1xx counts as 2xx)
  std::atomic<uint64_t> upstream_errors{0};
  std::array<std::atomic<uint64_t>, kLatencyBucketsMs.size() + 1> latency{};  // not cumulative
  std::atomic<uint64_t> latency_sum_ms{0};
  std::atomic<uint64_t> latency_count{0};

  void record_status(int status);
  void record_latency(core::Duration d);
};

// Health of one target id. `state` and `in_flight` are read by workers, the passive ejection
// atomics are read and written by workers (routing.hpp); the rest belongs to the control thread.
struct TargetHealth {
  std::string id;
  std::string address;
  std::atomic<HealthState> state{HealthState::Initial};
  std::atomic<int64_t> in_flight{0};  // requests being proxied to this target
  // When Draining: the end of the drain (core::Clock time since epoch, ns); WebSocket tunnels to
  // the target close then.
  std::atomic<int64_t> drain_deadline_ns{0};
  // Passive ejection (Router::report): failures in a row, and the end of the current ejection in
  // core::TimePoint ticks since the clock's epoch (0 = not ejected).
  std::atomic<int> consecutive_5xx{0};
  std::atomic<int> consecutive_connect_failures{0};
  std::atomic<int64_t> ejected_until{0};
  std::atomic<uint64_t> ejections{0};  // since the target appeared
  // Control thread only:
  HealthCheck check;
  std::string group;  // the group whose health check settings apply
  int consecutive_successes = 0;
  int consecutive_failures = 0;
  std::string last_error;
  bool stopped = false;  // health checks end
  core::TimePoint drain_deadline{};
};

struct TargetEntry {
  std::string id;
  tcp::endpoint endpoint;
  std::shared_ptr<TargetHealth> health;
  std::shared_ptr<TargetStats> stats;
};

struct GroupEntry {
  std::string name;
  std::vector<TargetEntry> targets;
  Algorithm algorithm = Algorithm::RoundRobin;
  PassiveEjection ejection;  // off by default
};

struct ListenerEntry {
  std::string name;
  std::vector<int> weights;  // per group index in RouteTable::groups; 0 = not routed
  int total_weight = 0;
  int routed_groups = 0;  // groups with weight > 0
  // Sticky cohorts (routing.hpp), built by build_listeners(): the cookie name (empty = off), and
  // per group index the cookie value "<group>.<epoch>", the Set-Cookie header value and header
  // line (empty for groups with weight 0).
  std::string sticky_cookie;
  std::vector<std::string> cohort;
  std::vector<std::string> set_cookie;
  std::vector<std::string> set_cookie_line;  // "Set-Cookie: <set_cookie>\r\n"
  // TLS termination (tls.hpp); null = plain HTTP. Set by the control thread after
  // build_listeners().
  std::shared_ptr<asio::ssl::context> tls;
  int redirect_https_port = 0;  // > 0: every request gets a 308 to https on this port
};

// Everything a worker needs to route one request, built once per snapshot.
struct RouteTable {
  uint64_t version = 0;
  std::vector<GroupEntry> groups;
  std::vector<ListenerEntry> listeners;
  std::unordered_map<std::string, size_t> listener_by_address;
};

// State every thread shares.
struct Shared {
  ProxyOptions options;
  core::Clock* clock = nullptr;
  std::atomic<int64_t> active_requests{0};
  std::atomic<int64_t> open_connections{0};  // client connections (stop() waits for them)
  std::atomic<bool> stopping{false};
};

// One event-loop thread: listening sockets, client connections, upstream pools, round-robin state.
// The request path (worker.cpp) uses the io_context's own executor type (no type erasure) and
// one coarse deadline per connection checked by a sweeper every 100 ms instead of a timer per
// operation; HTTP/1 parsing and rewriting are http1/http1.hpp's.
class Worker {
 public:
  using Executor = asio::io_context::executor_type;
  using Socket = asio::basic_stream_socket<tcp, Executor>;
  using Acceptor = asio::basic_socket_acceptor<tcp, Executor>;
  template <class T>
  using Task = asio::awaitable<T, Executor>;

  Worker(Shared& shared, int index);
  ~Worker();

  void start();
  void join();
  asio::io_context& io_context() { return ioc_; }

  // Called on the worker's own thread (post them): replaces the route table, adopts listening
  // sockets (fds bound by the control thread) and closes listeners no longer in the snapshot.
  struct NewListener {
    std::string address;
    int fd = -1;
  };
  void apply(std::shared_ptr<const RouteTable> table, std::vector<NewListener> add,
             std::vector<std::string> remove);
  // Stop accepting. Busy client connections close after their current response; idle ones
  // stay open until shutdown_grace so a request already on its way is still answered (with
  // Connection: close), then close.
  void begin_shutdown();

  struct Conn;
  struct Buffer;
  struct Upstream;

 private:
  Task<void> accept_loop(std::shared_ptr<Acceptor> acceptor, std::string address);
  Task<void> serve(Socket socket, std::string address, std::shared_ptr<asio::ssl::context> tls,
                   tcp::endpoint peer);
  Task<void> sweep_loop();
  // Proxies one request whose head is parsed; returns whether the client connection may carry
  // another request.
  Task<bool> handle(Conn& c, size_t listener, std::shared_ptr<const RouteTable> table);
  Task<void> tunnel(Conn& c, Upstream& up, const TargetEntry& target);
  Task<bool> answer(Conn& c, int status, std::string_view detail, bool keep_alive,
                    std::string_view location = {});
  void arm(Conn& c, std::chrono::milliseconds timeout);
  void disarm(Conn& c);

  std::unique_ptr<Upstream> take_pooled(const TargetEntry& target, bool check_open);
  void give_back(const TargetEntry& target, std::unique_ptr<Upstream> up);
  std::unique_ptr<char[]> take_buffer();
  void give_buffer(std::unique_ptr<char[]> b);
  void next_request_id(std::string& out);

  Shared& shared_;
  int index_;
  std::thread thread_;
  std::shared_ptr<const RouteTable> table_;
  std::unordered_map<std::string, std::shared_ptr<Acceptor>> acceptors_;
  std::unordered_map<const TargetHealth*, std::vector<std::unique_ptr<Upstream>>> pools_;
  std::vector<std::unique_ptr<char[]>> spare_buffers_;  // upstream read buffers
  Router router_;
  std::list<Conn*> conns_;
  bool shutting_down_ = false;
  int64_t shutdown_deadline_ms_ = 0;
  std::string request_id_prefix_;
  uint64_t request_counter_ = 0;
  // Declared last: destroyed first, while the members above still exist for the coroutine frames
  // it destroys (the destructor clears sockets held outside frames before that).
  // Only this worker's thread does I/O on its sockets (others only post to it), so the reactor
  // needs no locking per operation.
  asio::io_context ioc_{BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO};
};

}  // namespace cutover::proxy::detail
