// Proxy::Impl: the control thread (admin API, snapshot application, health checks) and the
// lifecycle of the workers. The request path lives in worker.cpp.
#include "proxy/proxy.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <latch>
#include <map>
#include <mutex>
#include <set>

#include <fmt/format.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "core/fd.hpp"
#include "core/fs.hpp"
#include "core/log.hpp"
#include "proxy/handoff.hpp"
#include "proxy/internal.hpp"
#include "proxy/series_recorder.hpp"
#include "proxy/tls.hpp"

namespace cutover::proxy {
namespace {

using namespace detail;
namespace beast = boost::beast;
namespace http = beast::http;
using nlohmann::json;
using local = asio::local::stream_protocol;
constexpr auto kTok = asio::as_tuple(asio::use_awaitable);

// A listening socket bound by the control thread and handed to a worker.
core::Result<int> bind_listener(const tcp::endpoint& ep) {
  int fd = ::socket(ep.protocol().family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return core::Error(fmt::format("socket(): {}", std::strerror(errno)));
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (::bind(fd, ep.data(), static_cast<socklen_t>(ep.size())) != 0 || ::listen(fd, 1024) != 0) {
    int err = errno;
    ::close(fd);
    return core::Error(std::strerror(err));
  }
  return fd;
}

uint16_t bound_port(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
}

core::Result<tcp::endpoint> resolve(const std::string& address) {
  auto hp = parse_host_port(address);
  if (!hp.ok()) return hp.error();
  boost::system::error_code ec;
  auto ip = asio::ip::make_address(hp->host, ec);
  if (!ec) return tcp::endpoint(ip, hp->port);
  // A host name: resolved once per snapshot, on the control thread.
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = ::getaddrinfo(hp->host.c_str(), nullptr, &hints, &res);
  if (rc != 0 || !res)
    return core::Error(fmt::format("cannot resolve \"{}\": {}", hp->host, gai_strerror(rc)));
  tcp::endpoint ep;
  if (res->ai_family == AF_INET6) {
    auto* sa = reinterpret_cast<sockaddr_in6*>(res->ai_addr);
    asio::ip::address_v6::bytes_type b;
    std::memcpy(b.data(), &sa->sin6_addr, 16);
    ep = tcp::endpoint(asio::ip::address_v6(b), hp->port);
  } else {
    auto* sa = reinterpret_cast<sockaddr_in*>(res->ai_addr);
    ep = tcp::endpoint(asio::ip::address_v4(ntohl(sa->sin_addr.s_addr)), hp->port);
  }
  ::freeaddrinfo(res);
  return ep;
}

struct AdminResponse {
  http::status status = http::status::ok;
  std::string body;
};

AdminResponse json_error(http::status status, std::string_view message) {
  // Messages may quote bytes a client sent (a percent-decoded group name): never throw on them.
  return {status, json{{"error", message}}.dump(-1, ' ', false, json::error_handler_t::replace)};
}

// With net.ipv4.tcp_migrate_req = 1 the kernel moves the connections queued on a closed
// SO_REUSEPORT socket to another socket of its group instead of resetting them.
bool kernel_migrates_queued_connections() {
  std::ifstream in("/proc/sys/net/ipv4/tcp_migrate_req");
  int value = 0;
  return (in >> value) && value == 1;
}

std::optional<HealthState> parse_health_state(std::string_view s) {
  if (s == "initial") return HealthState::Initial;
  if (s == "healthy") return HealthState::Healthy;
  if (s == "unhealthy") return HealthState::Unhealthy;
  return std::nullopt;
}

// Best effort, without blocking the control thread: the peer reads it or does not.
void refuse_takeover(int fd, std::string_view why) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
  (void)handoff::send_frame(fd, handoff::error_message(why), deadline);
  ::close(fd);
}

// A Prometheus label value: backslash, double quote and newline escaped.
std::string prometheus_label(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace

struct Proxy::Impl {
  explicit Impl(ProxyOptions options) {
    shared.options = std::move(options);
    shared.clock = shared.options.clock ? shared.options.clock : &core::RealClock::instance();
    if (shared.options.workers < 1) shared.options.workers = 1;
  }

  Shared shared;
  std::vector<std::unique_ptr<Worker>> workers;
  std::unique_ptr<asio::io_context> control;
  std::thread control_thread;
  std::shared_ptr<local::acceptor> admin;
  bool started = false;

  mutable std::mutex mu;  // guards the members below for readers outside the control thread
  std::shared_ptr<const RouteSnapshot> snapshot = std::make_shared<RouteSnapshot>();
  std::map<std::string, uint16_t> ports;                        // listener address -> bound port
  std::map<std::string, std::shared_ptr<TargetHealth>> health;  // target id -> health
  std::map<std::pair<std::string, std::string>, std::shared_ptr<TargetStats>> stats;
  std::vector<std::shared_ptr<TargetHealth>> draining;
  std::vector<std::shared_ptr<TargetHealth>> leaving;  // apply(): drain once workers switched
  // TLS contexts by (cert, key) file, reused while neither file changes (snapshots can arrive
  // 100 times a second; certificates rarely change). Control thread only.
  struct CachedTls {
    std::filesystem::file_time_type cert_mtime, key_mtime;
    std::shared_ptr<asio::ssl::context> ctx;
  };
  std::map<std::pair<std::string, std::string>, CachedTls> tls_cache;

  core::Result<std::shared_ptr<asio::ssl::context>> tls_context(const std::string& cert,
                                                                const std::string& key) {
    std::error_code e1, e2;
    auto cm = std::filesystem::last_write_time(cert, e1);
    auto km = std::filesystem::last_write_time(key, e2);
    auto& cached = tls_cache[{cert, key}];
    if (!e1 && !e2 && cached.ctx && cached.cert_mtime == cm && cached.key_mtime == km)
      return cached.ctx;
    auto ctx = make_server_context(cert, key);
    if (!ctx.ok()) {
      tls_cache.erase({cert, key});
      return ctx.error();
    }
    cached = CachedTls{cm, km, *ctx};
    return *ctx;
  }

  // ---- socket handoff (handoff.hpp) ----
  //
  //   Idle ──takeover accepted──▶ Offered ──new process ready, admin path renamed──▶ HandedOver
  //    ▲                             │                                                (drain, exit)
  //    └──error, timeout, EOF────────┘
  enum class HandoffState { Idle, Offered, HandedOver };
  std::filesystem::path handoff_path;               // <admin_socket>.handoff
  std::shared_ptr<local::acceptor> handoff;         // listening on handoff_path
  ino_t admin_ino = 0;                              // inodes of our socket files: a path is
  ino_t handoff_ino = 0;                            // removed at stop() only if still ours
  HandoffState handoff_state = HandoffState::Idle;  // control thread
  int handoff_peer = 0;                             // control thread: pid of the new process
  std::thread handoff_thread;                       // the session with a new process
  std::mutex handoff_mu;                            // guards handoff_fd
  int handoff_fd = -1;                              // the session's socket; stop() shuts it down
  std::atomic<bool> handed_over{false};
  core::TimePoint handed_over_at{};
  // Control thread: the listening fds each address has in the workers (index = worker), for
  // handing them over.
  std::map<std::string, std::vector<int>> listener_fds;
  // Health of the targets of the process we took over, consumed by the first apply().
  struct InheritedHealth {
    std::string address;
    HealthState state = HealthState::Initial;
    int consecutive_successes = 0;
    int consecutive_failures = 0;
    std::string last_error;
  };
  std::map<std::string, InheritedHealth> inherited;

  // ---- snapshot application (control thread) ----

  struct ApplyError {
    http::status status;
    std::string message;
  };

  // `adopted`: listening sockets received from the process we take over, by address; apply()
  // uses them instead of binding (and binds more if there are more workers than sockets).
  std::optional<ApplyError> apply(const RouteSnapshot& next, bool persist,
                                  std::map<std::string, std::vector<int>>* adopted = nullptr) {
    // Resolve every target first: nothing changes if one is bad.
    std::map<std::string, tcp::endpoint> endpoints;
    for (const auto& g : next.target_groups)
      for (const auto& t : g.targets) {
        auto ep = resolve(t.address);
        if (!ep.ok())
          return ApplyError{
              http::status::bad_request,
              fmt::format("target {} of group {}: {}", t.id, g.name, ep.error().message)};
        endpoints[g.name + '\0' + t.id] = *ep;
      }

    // TLS certificates load before anything changes: a bad file rejects the snapshot.
    std::vector<std::shared_ptr<asio::ssl::context>> tls(next.listeners.size());
    for (size_t i = 0; i < next.listeners.size(); ++i) {
      const auto& l = next.listeners[i];
      if (l.tls_cert.empty()) continue;
      auto ctx = tls_context(l.tls_cert, l.tls_key);
      if (!ctx.ok())
        return ApplyError{http::status::bad_request, fmt::format("listeners[{}].tls ({}): {}", i,
                                                                 l.name, ctx.error().message)};
      tls[i] = *ctx;
    }

    std::shared_ptr<const RouteSnapshot> old;
    {
      std::lock_guard lock(mu);
      old = snapshot;
    }
    // Bind new listener addresses, one SO_REUSEPORT socket per worker.
    std::set<std::string> old_addresses;
    for (const auto& l : old->listeners) old_addresses.insert(l.address);
    std::set<std::string> new_addresses;
    std::map<std::string, std::vector<int>> bound;
    std::map<std::string, uint16_t> new_ports;
    auto close_bound = [&] {
      for (auto& [_, fds] : bound)
        for (int fd : fds) ::close(fd);
      if (adopted)
        for (auto& [_, fds] : *adopted)
          for (int fd : fds) ::close(fd);
    };
    for (const auto& l : next.listeners) {
      new_addresses.insert(l.address);
      if (old_addresses.count(l.address)) continue;
      auto ep = resolve(l.address);
      if (!ep.ok()) {
        close_bound();
        return ApplyError{http::status::bad_request,
                          fmt::format("listener {}: {}", l.name, ep.error().message)};
      }
      auto& fds = bound[l.address];
      if (adopted) {
        if (auto it = adopted->find(l.address); it != adopted->end()) {
          fds = std::move(it->second);
          adopted->erase(it);
          assert(fds.size() <= workers.size() && "start() runs a worker per adopted socket");
          if (!fds.empty()) {
            new_ports[l.address] = bound_port(fds[0]);
            ep->port(new_ports[l.address]);
          }
        }
      }
      for (size_t w = fds.size(); w < workers.size(); ++w) {
        auto fd = bind_listener(*ep);
        if (!fd.ok()) {
          close_bound();
          return ApplyError{http::status::unprocessable_entity,
                            fmt::format("cannot bind listener {} on {}: {}", l.name, l.address,
                                        fd.error().message)};
        }
        fds.push_back(*fd);
        // Port 0 (tests): every worker's socket takes the port the first one got.
        if (w == 0) {
          new_ports[l.address] = bound_port(*fd);
          ep->port(new_ports[l.address]);
        }
      }
    }
    std::vector<std::string> removed_addresses;
    for (const auto& a : old_addresses)
      if (!new_addresses.count(a)) removed_addresses.push_back(a);
    if (adopted) {
      for (auto& [address, fds] : *adopted) {
        core::logger()->warn(
            "[proxy] closing {} adopted socket(s) of {}: not a listener of "
            "snapshot version {}",
            fds.size(), address, next.version);
        for (int fd : fds) ::close(fd);
      }
      adopted->clear();
    }

    if (persist && !shared.options.state_file.empty()) {
      auto w = core::write_file_atomic(shared.options.state_file, to_json(next), 0600);
      if (!w.ok()) {
        close_bound();
        return ApplyError{http::status::internal_server_error,
                          "cannot persist the snapshot: " + w.error().message};
      }
    }

    // Health per target id (kept across snapshots), stats per (group, target).
    auto table = std::make_shared<RouteTable>();
    table->version = next.version;
    std::map<std::string, std::shared_ptr<TargetHealth>> next_health;
    std::vector<std::shared_ptr<TargetHealth>> started_checks;
    {
      std::lock_guard lock(mu);
      for (const auto& g : next.target_groups) {
        GroupEntry ge;
        ge.name = g.name;
        ge.algorithm = g.algorithm;
        ge.ejection = g.passive_ejection;
        for (const auto& t : g.targets) {
          std::shared_ptr<TargetHealth> h;
          if (auto it = next_health.find(t.id); it != next_health.end()) {
            h = it->second;
          } else if (auto old_it = health.find(t.id);
                     old_it != health.end() && old_it->second->address == t.address &&
                     old_it->second->state.load() != HealthState::Draining) {
            h = old_it->second;
          } else {
            h = std::make_shared<TargetHealth>();
            h->id = t.id;
            h->address = t.address;
            // Taken over: the old process's verdict stands until our own checks change it.
            if (auto in = inherited.find(t.id);
                in != inherited.end() && in->second.address == t.address) {
              h->state.store(in->second.state);
              h->consecutive_successes = in->second.consecutive_successes;
              h->consecutive_failures = in->second.consecutive_failures;
              h->last_error = in->second.last_error;
            }
            started_checks.push_back(h);
          }
          if (h->group.empty() || h->group == g.name || !next_health.count(t.id)) {
            h->check = g.health;
            h->group = g.name;
          }
          next_health[t.id] = h;
          auto& st = stats[{g.name, t.id}];
          if (!st) st = std::make_shared<TargetStats>();
          ge.targets.push_back(TargetEntry{t.id, endpoints[g.name + '\0' + t.id], h, st});
        }
        table->groups.push_back(std::move(ge));
      }
      // Targets that left the snapshot drain.
      auto now = shared.clock->now();
      leaving.clear();
      for (auto& [id, h] : health) {
        if (next_health.count(id) && next_health[id] == h) continue;
        // Marked draining only once every worker has the new table (below): a worker still on
        // the old table may route to it meanwhile, and must not find its group empty
        // (DESIGN.md §3.2: a request sees one snapshot).
        leaving.push_back(h);
        h->stopped = true;
        const auto* g = old->find_group(h->group);
        h->drain_deadline = now + std::chrono::milliseconds(g ? g->drain_timeout_ms : 0);
        h->drain_deadline_ns.store(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                       h->drain_deadline.time_since_epoch())
                                       .count());
        draining.push_back(h);
      }
      // Stats of targets no longer in any group go away; the series keeps sampling them while
      // requests on them finish.
      for (auto it = stats.begin(); it != stats.end();) {
        const auto* g = next.find_group(it->first.first);
        bool present = false;
        if (g)
          for (const auto& t : g->targets) present = present || t.id == it->first.second;
        if (!present) {
          auto h = health.find(it->first.second);
          series.retire({it->first.first, it->first.second,
                         h != health.end() ? h->second->address : "", it->second});
        }
        it = present ? std::next(it) : stats.erase(it);
      }
      health = std::move(next_health);
    }
    build_listeners(*table, next);
    for (size_t i = 0; i < next.listeners.size() && i < table->listeners.size(); ++i) {
      table->listeners[i].tls = tls[i];
      table->listeners[i].redirect_https_port = next.listeners[i].redirect_https_port;
    }

    // Hand the table and sockets to every worker and wait until each has switched.
    std::shared_ptr<const RouteTable> frozen = table;
    std::latch done(static_cast<std::ptrdiff_t>(workers.size()));
    for (size_t w = 0; w < workers.size(); ++w) {
      std::vector<Worker::NewListener> add;
      for (auto& [address, fds] : bound) add.push_back({address, fds[w]});
      auto* worker = workers[w].get();
      asio::post(worker->io_context(),
                 [worker, frozen, add = std::move(add), removed_addresses, &done]() mutable {
                   worker->apply(frozen, std::move(add), std::move(removed_addresses));
                   done.count_down();
                 });
    }
    done.wait();
    for (auto& h : leaving) h->state.store(HealthState::Draining);
    leaving.clear();
    inherited.clear();
    for (const auto& a : removed_addresses) listener_fds.erase(a);
    for (const auto& [address, fds] : bound) listener_fds[address] = fds;
    {
      std::lock_guard lock(mu);
      snapshot = std::make_shared<const RouteSnapshot>(next);
      for (const auto& a : removed_addresses) ports.erase(a);
      for (const auto& [a, p] : new_ports) ports[a] = p;
    }
    for (auto& h : started_checks) asio::co_spawn(*control, health_loop(h), asio::detached);
    core::logger()->info("[proxy] applied snapshot version {} ({} listeners, {} target groups)",
                         next.version, next.listeners.size(), next.target_groups.size());
    return std::nullopt;
  }

  // ---- health checks (control thread) ----

  asio::awaitable<std::optional<std::string>> probe(const TargetHealth& h) {
    auto ep = resolve(h.address);
    if (!ep.ok()) co_return ep.error().message;
    beast::tcp_stream stream(*control);
    stream.expires_after(std::chrono::milliseconds(h.check.timeout_ms));
    auto [cec] = co_await stream.async_connect(*ep, kTok);
    if (cec) co_return "connect: " + cec.message();
    http::request<http::empty_body> req{http::verb::get, h.check.path, 11};
    req.set(http::field::host, h.address);
    req.set(http::field::user_agent, "cutover-health-check");
    req.keep_alive(false);
    auto [wec, wn] = co_await http::async_write(stream, req, kTok);
    if (wec) co_return "send: " + wec.message();
    beast::flat_buffer buf;
    http::response_parser<http::empty_body> parser;
    parser.header_limit(16 * 1024);
    auto [rec, rn] = co_await http::async_read_header(stream, buf, parser, kTok);
    if (rec) co_return rec == beast::error::timeout ? std::string("timed out") : rec.message();
    boost::system::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    int status = parser.get().result_int();
    auto matcher = StatusMatcher::parse(h.check.matcher);
    if (matcher.ok() && matcher->matches(status)) co_return std::nullopt;
    co_return fmt::format("status {} does not match {}", status, h.check.matcher);
  }

  asio::awaitable<void> health_loop(std::shared_ptr<TargetHealth> h) {
    asio::steady_timer timer(*control);
    while (!h->stopped && !shared.stopping.load()) {
      auto failure = co_await probe(*h);
      if (h->stopped) break;
      int interval_ms = 0;
      {
        std::lock_guard lock(mu);
        auto before = h->state.load();
        if (!failure) {
          h->consecutive_successes++;
          h->consecutive_failures = 0;
          h->last_error.clear();
          if (before != HealthState::Healthy &&
              h->consecutive_successes >= h->check.healthy_threshold)
            h->state.store(HealthState::Healthy);
        } else {
          h->consecutive_failures++;
          h->consecutive_successes = 0;
          h->last_error = *failure;
          if (before != HealthState::Unhealthy &&
              h->consecutive_failures >= h->check.unhealthy_threshold)
            h->state.store(HealthState::Unhealthy);
        }
        if (h->state.load() == HealthState::Healthy && before != HealthState::Healthy) {
          // Back from unhealthy (a restarted task, say): a passive ejection from before is over.
          h->ejected_until.store(0, std::memory_order_relaxed);
          h->consecutive_5xx.store(0, std::memory_order_relaxed);
          h->consecutive_connect_failures.store(0, std::memory_order_relaxed);
        }
        if (h->state.load() != before)
          core::logger()->info("[proxy] target {} ({}) is {}{}", h->id, h->address,
                               to_string(h->state.load()), failure ? ": " + *failure : "");
        interval_ms = h->check.interval_ms;
      }
      timer.expires_after(std::chrono::milliseconds(interval_ms));
      auto [ec] = co_await timer.async_wait(kTok);
      if (ec) break;
    }
  }

  // Forgets draining targets once idle or past their drain timeout.
  asio::awaitable<void> sweep_loop() {
    asio::steady_timer timer(*control);
    while (!shared.stopping.load()) {
      timer.expires_after(std::chrono::milliseconds(100));
      auto [ec] = co_await timer.async_wait(kTok);
      if (ec) co_return;
      std::lock_guard lock(mu);
      auto now = shared.clock->now();
      std::erase_if(draining, [&](const std::shared_ptr<TargetHealth>& h) {
        return h->in_flight.load() == 0 || now >= h->drain_deadline;
      });
    }
  }

  // ---- per-second datapoints (control thread; series_recorder.hpp) ----

  SeriesRecorder series;
  int64_t series_second = 0;  // the clock's whole second at the previous sample

  static int64_t unix_second(core::WallTime t) {
    const int64_t ms = core::to_unix_ms(t);
    return ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
  }

  // Samples right after each whole second of the clock: the counts recorded since the previous
  // sample become the datapoint of the second that just ended. If the loop was late or the clock
  // jumped ahead, that datapoint also holds the seconds skipped, which get none (nothing is
  // lost); if the clock went back, sampling waits until it passes the last sampled second.
  void sample_series() {
    const int64_t second = unix_second(shared.clock->wall());
    if (second <= series_second) return;
    std::vector<std::string> groups;
    std::vector<SeriesRecorder::Live> live;
    {
      std::lock_guard lock(mu);
      for (const auto& g : snapshot->target_groups) groups.push_back(g.name);
      for (const auto& [key, st] : stats) {
        auto h = health.find(key.second);
        live.push_back({key.first, key.second, h != health.end() ? h->second->address : "", st});
      }
    }
    series.sample(second - 1, groups, live);
    series_second = second;
  }

  asio::awaitable<void> series_loop() {
    series_second = unix_second(shared.clock->wall());
    asio::steady_timer timer(*control);
    while (!shared.stopping.load()) {
      // Until the next whole second, but at most 100 ms: a simulated clock (tests) moves without
      // the timer knowing.
      const int64_t ms = core::to_unix_ms(shared.clock->wall());
      const int64_t to_next = 1000 - ((ms % 1000) + 1000) % 1000;
      timer.expires_after(std::chrono::milliseconds(std::min<int64_t>(to_next, 100)));
      auto [ec] = co_await timer.async_wait(kTok);
      if (ec) co_return;
      sample_series();
    }
  }

  AdminResponse series_response(std::string_view query) {
    auto q = parse_series_query(query);
    if (!q.ok())
      return json_error(http::status::bad_request, "GET /stats/series: " + q.error().message);
    std::vector<std::string> groups;
    uint64_t version = 0;
    {
      std::lock_guard lock(mu);
      for (const auto& g : snapshot->target_groups) groups.push_back(g.name);
      version = snapshot->version;
    }
    auto result = series.query(*q, version, groups);
    if (!result.ok())
      return json_error(result.error().kind == core::ErrorKind::NotFound
                            ? http::status::not_found
                            : http::status::bad_request,
                        "GET /stats/series: " + result.error().message);
    return {http::status::ok, to_json(*result)};
  }

  // ---- admin API (control thread) ----

  json targets_json() {
    std::lock_guard lock(mu);
    json groups = json::array();
    const auto now = shared.clock->now();
    const auto wall = shared.clock->wall();
    auto entry = [&](const TargetHealth& h) {
      auto until = ejected_until(h, now);
      return json{
          {"id", h.id},
          {"address", h.address},
          {"state", to_string(h.state.load())},
          {"consecutive_successes", h.consecutive_successes},
          {"consecutive_failures", h.consecutive_failures},
          {"last_error", h.last_error},
          {"in_flight", h.in_flight.load()},
          {"ejected", until.has_value()},
          {"ejected_until",
           until ? json(core::format_rfc3339(
                       wall + std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                  *until - now)))
                 : json(nullptr)},
          {"ejections", h.ejections.load()},
          {"consecutive_5xx", h.consecutive_5xx.load()},
          {"consecutive_connect_failures", h.consecutive_connect_failures.load()}};
    };
    for (const auto& g : snapshot->target_groups) {
      json targets = json::array();
      for (const auto& t : g.targets)
        if (auto it = health.find(t.id); it != health.end()) targets.push_back(entry(*it->second));
      for (const auto& h : draining)
        if (h->group == g.name) targets.push_back(entry(*h));
      groups.push_back({{"name", g.name}, {"targets", targets}});
    }
    // Draining targets whose group is gone entirely.
    std::map<std::string, json> orphans;
    for (const auto& h : draining)
      if (!snapshot->find_group(h->group)) orphans[h->group].push_back(entry(*h));
    for (auto& [name, targets] : orphans) groups.push_back({{"name", name}, {"targets", targets}});
    return json{{"version", snapshot->version}, {"target_groups", groups}};
  }

  json stats_json() {
    std::lock_guard lock(mu);
    std::map<std::string, json> groups;
    for (const auto& g : snapshot->target_groups) groups[g.name] = json::array();
    for (const auto& [key, st] : stats) {
      json buckets = json::array();
      uint64_t cumulative = 0;
      for (size_t i = 0; i < st->latency.size(); ++i) {
        cumulative += st->latency[i].load();
        json le = i < kLatencyBucketsMs.size() ? json(kLatencyBucketsMs[i]) : json("+Inf");
        buckets.push_back({{"le", le}, {"count", cumulative}});
      }
      auto h = health.find(key.second);
      groups[key.first].push_back(
          {{"id", key.second},
           {"address", h != health.end() ? h->second->address : ""},
           {"requests",
            {{"2xx", st->by_class[0].load()},
             {"3xx", st->by_class[1].load()},
             {"4xx", st->by_class[2].load()},
             {"5xx", st->by_class[3].load()}}},
           {"upstream_errors", st->upstream_errors.load()},
           {"in_flight", h != health.end() ? h->second->in_flight.load() : 0},
           {"latency_ms",
            {{"buckets", buckets},
             {"sum", st->latency_sum_ms.load()},
             // The buckets' total, not latency_count: equal to +Inf even while requests count.
             {"count", cumulative}}}});
    }
    json out = json::array();
    for (auto& [name, targets] : groups) out.push_back({{"name", name}, {"targets", targets}});
    return json{{"version", snapshot->version}, {"target_groups", out}};
  }

  // Prometheus text exposition (version 0.0.4). Counters are cumulative since the proxy started
  // (a target that leaves and comes back starts again from zero: a counter reset). The
  // cutover_proxy_target_group_* families are the per-second samples summed since the start, so
  // they never go back when a target leaves, and lag up to a second behind the target families.
  // In every histogram the buckets are cumulative and +Inf equals _count.
  std::string metrics_text() {
    json t = targets_json();
    struct Row {
      std::string labels;
      SeriesRecorder::Counts counts;
    };
    std::vector<Row> targets;
    uint64_t version = 0;
    {
      std::lock_guard lock(mu);
      version = snapshot->version;
      for (const auto& [key, st] : stats)
        targets.push_back({fmt::format("target_group=\"{}\",target=\"{}\"",
                                       prometheus_label(key.first), prometheus_label(key.second)),
                           SeriesRecorder::Counts::read(*st)});
    }
    std::vector<Row> groups;
    for (const auto& [name, counts] : series.group_totals())
      groups.push_back({fmt::format("target_group=\"{}\"", prometheus_label(name)), counts});

    std::string out;
    out += "# HELP cutover_proxy_snapshot_version Version of the applied route snapshot.\n";
    out += "# TYPE cutover_proxy_snapshot_version gauge\n";
    out += fmt::format("cutover_proxy_snapshot_version {}\n", version);
    // requests_total, upstream_errors_total and the latency histogram of targets or groups.
    auto families = [&out](const std::vector<Row>& rows, std::string_view prefix,
                           std::string_view latency, std::string_view scope) {
      out += fmt::format("# HELP {}requests_total Responses of the {} by status class.\n", prefix,
                         scope);
      out += fmt::format("# TYPE {}requests_total counter\n", prefix);
      for (const auto& r : rows)
        for (size_t i = 0; i < 4; ++i)
          out += fmt::format("{}requests_total{{{},code=\"{}xx\"}} {}\n", prefix, r.labels, i + 2,
                             r.counts.by_class[i]);
      out += fmt::format(
          "# HELP {}upstream_errors_total Failed connects, resets, timeouts and invalid "
          "responses of the {}.\n",
          prefix, scope);
      out += fmt::format("# TYPE {}upstream_errors_total counter\n", prefix);
      for (const auto& r : rows)
        out += fmt::format("{}upstream_errors_total{{{}}} {}\n", prefix, r.labels,
                           r.counts.upstream_errors);
      out += fmt::format("# HELP {} Time to the response header of the {}, in milliseconds.\n",
                         latency, scope);
      out += fmt::format("# TYPE {} histogram\n", latency);
      for (const auto& r : rows) {
        uint64_t cumulative = 0;
        for (size_t i = 0; i < r.counts.latency.size(); ++i) {
          cumulative += r.counts.latency[i];
          std::string le =
              i < kLatencyBucketsMs.size() ? std::to_string(kLatencyBucketsMs[i]) : "+Inf";
          out += fmt::format("{}_bucket{{{},le=\"{}\"}} {}\n", latency, r.labels, le, cumulative);
        }
        out += fmt::format("{}_sum{{{}}} {}\n", latency, r.labels, r.counts.latency_sum_ms);
        out += fmt::format("{}_count{{{}}} {}\n", latency, r.labels, cumulative);
      }
    };
    families(targets, "cutover_proxy_", "cutover_proxy_target_latency_ms", "target");
    families(groups, "cutover_proxy_target_group_", "cutover_proxy_target_group_latency_ms",
             "target group (all its targets)");

    out += "# HELP cutover_proxy_target_healthy 1 if the target passes its health checks.\n";
    out += "# TYPE cutover_proxy_target_healthy gauge\n";
    std::string ejected =
        "# HELP cutover_proxy_target_ejected 1 while the target is passively ejected.\n"
        "# TYPE cutover_proxy_target_ejected gauge\n";
    std::string ejections =
        "# HELP cutover_proxy_target_ejections_total Passive ejections of the target.\n"
        "# TYPE cutover_proxy_target_ejections_total counter\n";
    for (const auto& g : t["target_groups"])
      for (const auto& tg : g["targets"]) {
        std::string labels = fmt::format("target_group=\"{}\",target=\"{}\"",
                                         prometheus_label(g["name"].get<std::string>()),
                                         prometheus_label(tg["id"].get<std::string>()));
        out += fmt::format("cutover_proxy_target_healthy{{{}}} {}\n", labels,
                           tg["state"] == "healthy" ? 1 : 0);
        ejected += fmt::format("cutover_proxy_target_ejected{{{}}} {}\n", labels,
                               tg["ejected"].get<bool>() ? 1 : 0);
        ejections += fmt::format("cutover_proxy_target_ejections_total{{{}}} {}\n", labels,
                                 tg["ejections"].get<uint64_t>());
      }
    out += ejected + ejections;
    return out;
  }

  AdminResponse handle_admin(const http::request<http::string_body>& req, bool& prometheus) {
    std::string_view target = req.target();
    if (auto q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);
    if (target == "/snapshot" && req.method() == http::verb::put) {
      // The listeners and the snapshot offered to a new process must stay what it received.
      if (handoff_state == HandoffState::Offered)
        return json_error(
            http::status::service_unavailable,
            fmt::format("pid {} is taking over this proxy; retry in a moment", handoff_peer));
      if (handoff_state == HandoffState::HandedOver)
        return json_error(
            http::status::service_unavailable,
            fmt::format("this proxy handed over to pid {}; connect again", handoff_peer));
      auto parsed = parse_snapshot(req.body());
      if (!parsed.ok()) return json_error(http::status::bad_request, parsed.error().message);
      std::shared_ptr<const RouteSnapshot> current;
      {
        std::lock_guard lock(mu);
        current = snapshot;
      }
      if (parsed->version < current->version)
        return json_error(http::status::conflict,
                          fmt::format("snapshot version {} is older than the applied version {}",
                                      parsed->version, current->version));
      if (parsed->version == current->version) {
        if (*parsed == *current)
          return {http::status::ok, json{{"version", current->version}, {"changed", false}}.dump()};
        return json_error(
            http::status::conflict,
            fmt::format("snapshot version {} is already applied with different content; "
                        "send a higher version",
                        parsed->version));
      }
      if (auto err = apply(*parsed, /*persist=*/true)) return json_error(err->status, err->message);
      return {http::status::ok, json{{"version", parsed->version}, {"changed", true}}.dump()};
    }
    if (req.method() != http::verb::get)
      return json_error(http::status::method_not_allowed,
                        fmt::format("{} {} is not supported", std::string(req.method_string()),
                                    std::string(target)));
    if (target == "/snapshot") {
      std::lock_guard lock(mu);
      return {http::status::ok, to_json(*snapshot)};
    }
    if (target == "/health") {
      std::lock_guard lock(mu);
      return {http::status::ok,
              json{{"status", "ok"}, {"version", snapshot->version}, {"pid", ::getpid()}}.dump()};
    }
    if (target == "/targets") return {http::status::ok, targets_json().dump()};
    if (target == "/stats") return {http::status::ok, stats_json().dump()};
    if (target == "/stats/series") {
      std::string_view full = req.target();
      auto q = full.find('?');
      return series_response(q == std::string_view::npos ? std::string_view() : full.substr(q + 1));
    }
    if (target == "/metrics") {
      prometheus = true;
      return {http::status::ok, metrics_text()};
    }
    return json_error(http::status::not_found, fmt::format("no such endpoint: {}", target));
  }

  asio::awaitable<void> admin_session(local::socket socket) {
    beast::basic_stream<local, asio::any_io_executor, beast::unlimited_rate_policy> stream(
        std::move(socket));
    beast::flat_buffer buffer;
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.header_limit(64 * 1024);
      parser.body_limit(64 * 1024 * 1024);
      stream.expires_after(std::chrono::seconds(30));
      auto [ec, n] = co_await http::async_read(stream, buffer, parser, kTok);
      if (ec) {
        if (ec != http::error::end_of_stream && ec != beast::error::timeout &&
            ec != asio::error::operation_aborted && parser.got_some()) {
          auto r = json_error(http::status::bad_request, ec.message());
          http::response<http::string_body> res{r.status, 11, r.body};
          res.set(http::field::content_type, "application/json");
          res.keep_alive(false);
          res.prepare_payload();
          co_await http::async_write(stream, res, kTok);
        }
        break;
      }
      auto& req = parser.get();
      bool prometheus = false;
      AdminResponse r = handle_admin(req, prometheus);
      http::response<http::string_body> res{r.status, 11, std::move(r.body)};
      res.set(http::field::content_type,
              prometheus ? "text/plain; version=0.0.4" : "application/json");
      res.keep_alive(req.keep_alive());
      res.prepare_payload();
      stream.expires_after(std::chrono::seconds(30));
      auto [wec, wn] = co_await http::async_write(stream, res, kTok);
      if (wec || !req.keep_alive()) break;
    }
    boost::system::error_code ignored;
    stream.socket().shutdown(local::socket::shutdown_send, ignored);
  }

  // The next connection on one of the proxy's Unix sockets; nullopt once it is closed. Other
  // accept errors (EMFILE, ...) back off briefly instead of spinning.
  asio::awaitable<std::optional<local::socket>> accept_local(local::acceptor& acceptor) {
    for (;;) {
      auto [ec, socket] = co_await acceptor.async_accept(kTok);
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return std::nullopt;
      if (!ec) co_return std::move(socket);
      asio::steady_timer t(*control, std::chrono::milliseconds(50));
      co_await t.async_wait(kTok);
    }
  }

  asio::awaitable<void> admin_loop(std::shared_ptr<local::acceptor> acceptor) {
    while (auto socket = co_await accept_local(*acceptor))
      asio::co_spawn(*control, admin_session(std::move(*socket)), asio::detached);
  }

  // ---- socket handoff, old process's side (handoff.hpp) ----

  asio::awaitable<void> handoff_loop(std::shared_ptr<local::acceptor> acceptor) {
    while (auto socket = co_await accept_local(*acceptor)) {
      boost::system::error_code rec;
      const int fd = socket->release(rec);
      if (rec) continue;
      if (handoff_state == HandoffState::Offered) {
        refuse_takeover(fd, fmt::format("pid {} is already taking over the proxy (pid {})",
                                        handoff_peer, ::getpid()));
      } else if (handoff_state == HandoffState::HandedOver || shared.stopping.load()) {
        refuse_takeover(fd, fmt::format("the proxy (pid {}) is shutting down", ::getpid()));
      } else {
        offer(fd);
      }
    }
  }

  // Freezes the snapshot and starts a session with the process on `fd`. The offer is built here,
  // on the control thread, so that it matches what the workers run.
  void offer(int fd) {
    if (handoff_thread.joinable()) handoff_thread.join();  // the previous session has ended
    handoff_state = HandoffState::Offered;
    handoff_peer = 0;
    json msg = handoff::message("offer");
    msg["pid"] = ::getpid();
    json targets = json::array();
    {
      std::lock_guard lock(mu);
      msg["snapshot"] = to_json(*snapshot);
      for (const auto& [id, h] : health)
        targets.push_back({{"id", id},
                           {"address", h->address},
                           {"state", to_string(h->state.load())},
                           {"consecutive_successes", h->consecutive_successes},
                           {"consecutive_failures", h->consecutive_failures},
                           {"last_error", h->last_error}});
    }
    msg["targets"] = std::move(targets);
    json listeners = json::array();
    std::vector<int> fds;
    for (const auto& [address, owned] : listener_fds) {
      listeners.push_back({{"address", address}, {"sockets", owned.size()}});
      fds.insert(fds.end(), owned.begin(), owned.end());
    }
    msg["listeners"] = std::move(listeners);
    {
      std::lock_guard lock(handoff_mu);
      handoff_fd = fd;
    }
    handoff_thread = std::thread(
        [this, fd, msg = std::move(msg), fds = std::move(fds)] { handoff_session(fd, msg, fds); });
  }

  // The session thread: blocking I/O with deadlines; its outcome goes back to the control thread.
  // The fds stay valid throughout: only the control thread closes listeners, and it does not
  // while the state is Offered (stop() ends this thread first).
  void handoff_session(int fd, const json& offer_msg, const std::vector<int>& fds) {
    using SteadyClock = std::chrono::steady_clock;
    int pid = 0;
    bool committed = false;
    std::string failure;
    auto refuse = [&](std::string why) {
      (void)handoff::send_frame(fd, handoff::error_message(why),
                                SteadyClock::now() + std::chrono::seconds(1));
      failure = std::move(why);
    };
    do {
      auto hello = handoff::read_frame(fd, SteadyClock::now() + handoff::kConnectTimeout);
      if (!hello) {
        failure = "no takeover request: " + hello.error().message;
        break;
      }
      if ((*hello)["op"] != "takeover" || !hello->contains("pid") ||
          !(*hello)["pid"].is_number_integer()) {
        refuse(fmt::format("expected a takeover request, got {}", hello->dump()));
        break;
      }
      pid = (*hello)["pid"].get<int>();
      asio::post(*control, [this, pid] { handoff_peer = pid; });
      const auto deadline = SteadyClock::now() + handoff::kConnectTimeout;
      if (auto r = handoff::send_frame(fd, offer_msg, deadline); !r) {
        failure = "sending the offer: " + r.error().message;
        break;
      }
      if (auto r = handoff::send_fds(fd, fds, deadline); !r) {
        failure = "sending the listening sockets: " + r.error().message;
        break;
      }
      auto ready = handoff::read_frame(fd, SteadyClock::now() + handoff::kReadyTimeout);
      if (!ready) {
        failure = "it did not get ready: " + ready.error().message;
        break;
      }
      const auto& admin_path = shared.options.admin_socket;
      const std::string tmp_admin = ready->value("admin_socket", std::string());
      const std::string tmp_handoff = ready->value("handoff_socket", std::string());
      // Only files next to ours, named after ours, may replace them.
      auto acceptable = [&](const std::string& tmp, const std::filesystem::path& ours) {
        std::filesystem::path p(tmp);
        return p.parent_path() == ours.parent_path() &&
               p.filename().string().starts_with(ours.filename().string() + ".takeover-");
      };
      if ((*ready)["op"] != "ready" || !acceptable(tmp_admin, admin_path) ||
          !acceptable(tmp_handoff, handoff_path)) {
        refuse(fmt::format("expected ready with socket paths next to {}, got {}",
                           admin_path.string(), ready->dump()));
        break;
      }
      // The commit point: from here on the admin path names the new process's socket. A new
      // process that gave up has unlinked tmp_admin first, and then this fails.
      if (::rename(tmp_admin.c_str(), admin_path.c_str()) != 0) {
        refuse(fmt::format("cannot rename {} to {}: {}", tmp_admin, admin_path.string(),
                           std::strerror(errno)));
        break;
      }
      committed = true;
      if (::rename(tmp_handoff.c_str(), handoff_path.c_str()) != 0)
        core::logger()->warn("[proxy] cannot rename {} to {}: {}; pid {} cannot be taken over",
                             tmp_handoff, handoff_path.string(), std::strerror(errno), pid);
      (void)handoff::send_frame(fd, handoff::message("committed"),
                                SteadyClock::now() + handoff::kConnectTimeout);
    } while (false);
    {
      std::lock_guard lock(handoff_mu);
      ::close(fd);
      handoff_fd = -1;
    }
    asio::post(*control, [this, pid, committed, failure, sockets = fds.size()] {
      handoff_peer = pid;
      if (committed) {
        handed_over_to(pid, sockets);
        return;
      }
      handoff_state = HandoffState::Idle;
      core::logger()->warn("[proxy] takeover by {} abandoned: {}; still serving",
                           pid ? fmt::format("pid {}", pid) : std::string("a new process"),
                           failure);
    });
  }

  // Control thread, once the new process owns the admin socket.
  void handed_over_to(int pid, size_t sockets) {
    handoff_state = HandoffState::HandedOver;
    boost::system::error_code ec;
    // The admin path names the new process's socket now: serve what was queued here, then close.
    admin->non_blocking(true, ec);
    for (;;) {
      local::socket socket(*control);
      admin->accept(socket, ec);
      if (ec) break;
      asio::co_spawn(*control, admin_session(std::move(socket)), asio::detached);
    }
    admin->close(ec);
    handoff->close(ec);
    // Stop accepting without closing anything: each listening fd of ours now names a socket that
    // does not listen, so the workers' next accept() fails with EINVAL and their accept loops
    // end, while a connection they have already accepted is still served (closing the acceptor
    // could drop one whose accept completed but was not handed to serve() yet). The listening
    // sockets themselves stay open in the new process, and connections queued on them wait for
    // its accept().
    const int dummy = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    for (const auto& [address, fds] : listener_fds)
      for (int fd : fds)
        if (dummy < 0 || ::dup3(dummy, fd, O_CLOEXEC) < 0)
          core::logger()->warn("[proxy] cannot detach listening socket {} of {}: {}", fd, address,
                               std::strerror(errno));
    if (dummy >= 0) ::close(dummy);
    listener_fds.clear();
    handed_over_at = shared.clock->now();
    // From here on every response says Connection: close. A response already being written
    // promised keep-alive, and serve() closes its connection anyway once it sees `stopping` while
    // the client may already be sending the next request; so `stopping` is set at a moment when
    // no request is in progress, if one comes within half the grace period.
    const auto quiet_deadline = handed_over_at + shared.options.shutdown_grace / 2;
    while (shared.active_requests.load() > 0 && shared.clock->now() < quiet_deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    shared.stopping.store(true);
    // Idle keep-alive connections get until the grace to send one more request.
    for (auto& w : workers) {
      auto* worker = w.get();
      asio::post(worker->io_context(), [worker] { worker->begin_shutdown(); });
    }
    handed_over.store(true);
    core::logger()->info(
        "[proxy] handed over {} listening socket(s) to pid {}; draining connections for up to {} "
        "ms",
        sockets, pid, shared.options.shutdown_grace.count());
    if (shared.options.on_handed_over) shared.options.on_handed_over();
  }

  // ---- socket handoff, new process's side ----

  struct Takeover {
    core::UniqueFd peer;
    int pid = 0;
    RouteSnapshot snapshot;
    std::map<std::string, std::vector<int>> fds;  // by listener address; apply() takes them
    size_t sockets = 0;
    std::map<std::string, InheritedHealth> targets;

    Takeover() = default;
    Takeover(Takeover&&) = default;
    ~Takeover() { close_fds(); }
    void close_fds() {
      for (auto& [_, list] : fds)
        for (int fd : list) ::close(fd);
      fds.clear();
    }
  };

  static core::Result<Takeover> request_takeover(core::UniqueFd peer, handoff::Deadline deadline) {
    Takeover t;
    t.peer = std::move(peer);
    json hello = handoff::message("takeover");
    hello["pid"] = ::getpid();
    auto sent = handoff::send_frame(t.peer.get(), hello, deadline);
    // A refusal may have been written (and the connection closed) before our request arrived:
    // its message says more than our broken pipe.
    auto offer = handoff::read_frame(
        t.peer.get(),
        sent ? deadline : std::chrono::steady_clock::now() + std::chrono::milliseconds(500));
    if (!sent) return offer ? sent.error() : offer.error();  // read_frame: "error" -> Error
    if (!offer) return offer.error();
    auto bad = [&](std::string_view what) {
      return core::Error(fmt::format("malformed offer ({}): {}", what, offer->dump()));
    };
    if ((*offer)["op"] != "offer") return bad("op");
    if (!offer->contains("pid") || !(*offer)["pid"].is_number_integer()) return bad("pid");
    t.pid = (*offer)["pid"].get<int>();
    if (!offer->contains("snapshot") || !(*offer)["snapshot"].is_string()) return bad("snapshot");
    auto snap = parse_snapshot((*offer)["snapshot"].get<std::string>());
    if (!snap) return snap.error().wrap("the snapshot offered");
    t.snapshot = std::move(*snap);
    std::vector<std::pair<std::string, size_t>> layout;
    if (!offer->contains("listeners") || !(*offer)["listeners"].is_array()) return bad("listeners");
    for (const auto& l : (*offer)["listeners"]) {
      if (!l.is_object() || !l.contains("address") || !l["address"].is_string() ||
          !l.contains("sockets") || !l["sockets"].is_number_unsigned())
        return bad("listeners");
      layout.emplace_back(l["address"].get<std::string>(), l["sockets"].get<size_t>());
      t.sockets += layout.back().second;
    }
    if (offer->contains("targets") && (*offer)["targets"].is_array()) {
      for (const auto& h : (*offer)["targets"]) {
        if (!h.is_object()) return bad("targets");
        auto state = parse_health_state(h.value("state", std::string()));
        if (!state) continue;  // draining: not inherited
        InheritedHealth in;
        in.address = h.value("address", std::string());
        in.state = *state;
        in.consecutive_successes = h.value("consecutive_successes", 0);
        in.consecutive_failures = h.value("consecutive_failures", 0);
        in.last_error = h.value("last_error", std::string());
        t.targets[h.value("id", std::string())] = std::move(in);
      }
    }
    auto fds = handoff::receive_fds(t.peer.get(), t.sockets, deadline);
    if (!fds) return fds.error();
    size_t next = 0;
    for (const auto& [address, count] : layout)
      for (size_t i = 0; i < count; ++i) t.fds[address].push_back((*fds)[next++]);
    return t;
  }

  // Sends ready and waits for the old process's commit; on failure, whoever acts on the
  // temporary admin path first decides (handoff.hpp).
  core::Result<void> finish_takeover(Takeover& t, const std::string& tmp_admin,
                                     const std::string& tmp_handoff) {
    json ready = handoff::message("ready");
    ready["pid"] = ::getpid();
    ready["admin_socket"] = tmp_admin;
    ready["handoff_socket"] = tmp_handoff;
    const auto now = std::chrono::steady_clock::now();
    auto sent = handoff::send_frame(t.peer.get(), ready, now + handoff::kConnectTimeout);
    auto reply = sent ? handoff::read_frame(t.peer.get(), now + handoff::kCommitTimeout)
                      : core::Result<json>(sent.error());
    if (reply && (*reply)["op"] == "committed") return core::ok();
    const std::string why =
        reply ? fmt::format("unexpected message {}", reply->dump()) : reply.error().message;
    if (::unlink(tmp_admin.c_str()) == 0) {
      ::unlink(tmp_handoff.c_str());
      return core::Error(fmt::format("pid {} did not hand over: {}", t.pid, why));
    }
    core::logger()->warn("[proxy] pid {} put our admin socket in place but did not confirm ({})",
                         t.pid, why);
    return core::ok();
  }

  // ---- lifecycle ----

  core::Result<std::shared_ptr<local::acceptor>> listen_unix(const std::string& p) {
    std::error_code fec;
    if (std::filesystem::is_socket(p, fec)) std::filesystem::remove(p, fec);
    auto acceptor = std::make_shared<local::acceptor>(*control);
    boost::system::error_code ec;
    acceptor->open(local(), ec);
    if (!ec) acceptor->bind(local::endpoint(p), ec);
    if (!ec && ::chmod(p.c_str(), 0600) != 0)
      ec = boost::system::error_code(errno, boost::system::system_category());
    if (!ec) acceptor->listen(64, ec);
    if (ec) return core::Error(fmt::format("cannot listen on {}: {}", p, ec.message()));
    return acceptor;
  }

  core::Result<void> start() {
    if (started) return core::Error("proxy already started");
    const auto& path = shared.options.admin_socket;
    if (path.empty()) return core::Error("no admin socket path given");
    handoff_path = handoff::socket_path(path);
    const std::string suffix = fmt::format(".takeover-{}", ::getpid());
    if (const std::string longest = handoff_path.string() + suffix;
        longest.size() >= sizeof(sockaddr_un::sun_path))
      return core::Error(fmt::format(
          "admin socket path {} is too long: {} (used during a takeover) exceeds {} bytes",
          path.string(), longest, sizeof(sockaddr_un::sun_path) - 1));

    // A proxy already running on this admin socket hands its listening sockets over.
    const auto deadline = std::chrono::steady_clock::now() + handoff::kConnectTimeout;
    std::optional<Takeover> takeover;
    if (auto peer = handoff::connect_unix(handoff_path, deadline); peer) {
      core::UniqueFd peer_fd(*peer);
      if (!shared.options.takeover)
        return core::Error(fmt::format(
            "a proxy is already running on {} (its handoff socket answers); not taking over",
            path.string()));
      auto t = request_takeover(std::move(peer_fd), deadline);
      if (!t) return t.error().wrap("cannot take over the proxy running on " + path.string());
      takeover.emplace(std::move(*t));
    } else if (peer.error().kind != core::ErrorKind::NotFound) {
      return peer.error().wrap("cannot reach the running proxy");
    } else if (auto a = handoff::connect_unix(path, deadline); a) {
      ::close(*a);
      return core::Error(fmt::format(
          "a proxy is running on {} but does not answer on {} (a version without socket "
          "handoff?); stop it first",
          path.string(), handoff_path.string()));
    }

    size_t worker_count = static_cast<size_t>(shared.options.workers);
    if (takeover) {
      size_t most = 0;
      for (const auto& [_, fds] : takeover->fds) most = std::max(most, fds.size());
      if (most > worker_count && kernel_migrates_queued_connections()) {
        for (auto& [address, fds] : takeover->fds)
          while (fds.size() > worker_count) {
            ::close(fds.back());
            fds.pop_back();
          }
      } else if (most > worker_count) {
        core::logger()->warn(
            "[proxy] running {} workers instead of {}: pid {} passed {} sockets per listener and "
            "closing one would reset the connections queued on it (net.ipv4.tcp_migrate_req=1 "
            "lets the kernel move them)",
            most, worker_count, takeover->pid, most);
        worker_count = most;
      }
    }
    control = std::make_unique<asio::io_context>(1);
    for (size_t i = 0; i < worker_count; ++i)
      workers.push_back(std::make_unique<Worker>(shared, static_cast<int>(i)));

    // Admin socket first: without it nobody can drive this proxy. Taking over, both sockets are
    // bound at temporary paths that the old process renames into place when it commits.
    const std::string admin_bind = takeover ? path.string() + suffix : path.string();
    const std::string handoff_bind =
        takeover ? handoff_path.string() + suffix : handoff_path.string();
    auto acceptor = listen_unix(admin_bind);
    auto handoff_acceptor = acceptor ? listen_unix(handoff_bind) : acceptor;
    if (!acceptor || !handoff_acceptor) {
      auto error = !acceptor ? acceptor.error() : handoff_acceptor.error();
      if (acceptor) (*acceptor)->close();
      std::error_code fec;
      if (acceptor) std::filesystem::remove(admin_bind, fec);
      workers.clear();
      control.reset();
      return error.wrap("admin socket");
    }
    admin = *acceptor;
    handoff = *handoff_acceptor;
    admin_ino = handoff::inode_of(admin_bind);
    handoff_ino = handoff::inode_of(handoff_bind);
    if (auto parent = shared.options.state_file.parent_path(); !parent.empty()) {
      auto made = core::ensure_dir(parent, 0700);
      if (!made.ok()) core::logger()->warn("[proxy] state directory: {}", made.error().message);
    }
    for (auto& w : workers) w->start();
    started = true;

    if (takeover) {
      // The old process's snapshot on its sockets, persisted as ours.
      inherited = std::move(takeover->targets);
      if (auto err = apply(takeover->snapshot, /*persist=*/true, &takeover->fds)) {
        stop();
        return core::Error(fmt::format("cannot take over snapshot version {} from pid {}: {}",
                                       takeover->snapshot.version, takeover->pid, err->message));
      }
    } else if (!shared.options.state_file.empty() &&
               std::filesystem::exists(shared.options.state_file)) {
      // Serve the persisted snapshot right away.
      auto text = core::read_file(shared.options.state_file);
      auto parsed = text.ok() ? parse_snapshot(*text) : core::Result<RouteSnapshot>(text.error());
      if (!parsed.ok()) {
        core::logger()->error("[proxy] ignoring state file {}: {}",
                              shared.options.state_file.string(), parsed.error().message);
      } else if (auto err = apply(*parsed, /*persist=*/false)) {
        core::logger()->error("[proxy] cannot serve persisted snapshot version {}: {}",
                              parsed->version, err->message);
      }
    }
    asio::co_spawn(*control, admin_loop(admin), asio::detached);
    asio::co_spawn(*control, handoff_loop(handoff), asio::detached);
    asio::co_spawn(*control, sweep_loop(), asio::detached);
    asio::co_spawn(*control, series_loop(), asio::detached);
    control_thread = std::thread([this] {
      auto guard = asio::make_work_guard(*control);
      control->run();
    });
    if (takeover) {
      if (auto r = finish_takeover(*takeover, admin_bind, handoff_bind); !r) {
        stop();
        return r.error();
      }
      core::logger()->info(
          "[proxy] took over {} listening socket(s) of {} listener(s) and snapshot version {} "
          "from pid {}",
          takeover->sockets, takeover->snapshot.listeners.size(), takeover->snapshot.version,
          takeover->pid);
    }
    core::logger()->info("[proxy] started: admin socket {}, {} worker(s), snapshot version {}",
                         path.string(), workers.size(), version_now());
    return core::ok();
  }

  uint64_t version_now() const {
    std::lock_guard lock(mu);
    return snapshot->version;
  }

  void stop() {
    if (!started) return;
    started = false;
    auto deadline = shared.clock->now() + shared.options.shutdown_grace;
    const bool after_handover = handed_over.load();
    if (after_handover) {
      // The workers stopped accepting at the handover; their connections finish (the admin API
      // still answers what was queued on it meanwhile).
      deadline = handed_over_at + shared.options.shutdown_grace;
      while ((shared.active_requests.load() > 0 || shared.open_connections.load() > 0) &&
             shared.clock->now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    // Admin and health checks stop first; then listeners close and in-flight requests finish.
    shared.stopping.store(true);
    control->stop();
    if (control_thread.joinable()) control_thread.join();
    // No takeover can start now; one in progress ends (the new process then gives up,
    // handoff.hpp) before the workers close the listening sockets it is being sent.
    {
      std::lock_guard lock(handoff_mu);
      if (handoff_fd >= 0) ::shutdown(handoff_fd, SHUT_RDWR);
    }
    if (handoff_thread.joinable()) handoff_thread.join();
    boost::system::error_code ec;
    admin->close(ec);
    handoff->close(ec);
    for (auto& w : workers) {
      auto* worker = w.get();
      if (!after_handover) asio::post(worker->io_context(), [worker] { worker->begin_shutdown(); });
    }
    // Idle keep-alive connections stay open (up to the grace) so that a request already sent on
    // one is still answered; workers close them by then.
    while ((shared.active_requests.load() > 0 || shared.open_connections.load() > 0) &&
           shared.clock->now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    for (auto& w : workers) w->join();
    workers.clear();
    admin.reset();
    handoff.reset();
    control.reset();
    // Socket files that another process has renamed over ours are its own.
    const std::string suffix = fmt::format(".takeover-{}", ::getpid());
    const std::filesystem::path admin_path = shared.options.admin_socket;
    for (const auto& [p, ino] :
         {std::pair{admin_path, admin_ino}, std::pair{handoff_path, handoff_ino},
          std::pair{std::filesystem::path(admin_path.string() + suffix), admin_ino},
          std::pair{std::filesystem::path(handoff_path.string() + suffix), handoff_ino}}) {
      if (ino != 0 && handoff::inode_of(p) == ino) ::unlink(p.c_str());
    }
    core::logger()->info("[proxy] stopped");
  }
};

Proxy::Proxy(ProxyOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Proxy::~Proxy() { stop(); }
core::Result<void> Proxy::start() { return impl_->start(); }
void Proxy::stop() { impl_->stop(); }

std::uint64_t Proxy::version() const {
  std::lock_guard lock(impl_->mu);
  return impl_->snapshot->version;
}

std::optional<std::uint16_t> Proxy::listener_port(std::string_view listener_name) const {
  std::lock_guard lock(impl_->mu);
  for (const auto& l : impl_->snapshot->listeners)
    if (l.name == listener_name) {
      auto it = impl_->ports.find(l.address);
      if (it != impl_->ports.end()) return it->second;
    }
  return std::nullopt;
}

int run_proxy(const ProxyOptions& options) {
  // SIGTERM/SIGINT are blocked before any thread starts, so only the signalfd below sees them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  // Every client connection costs a descriptor (two when proxied): take the hard limit, as
  // nginx (worker_rlimit_nofile) and HAProxy do, instead of the usual soft 1024.
  rlimit nofile{};
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    rlim_t before = nofile.rlim_cur;
    nofile.rlim_cur = nofile.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &nofile) == 0)
      core::logger()->info("[proxy] open files limit raised from {} to {}", before,
                           nofile.rlim_max);
  }
  core::UniqueFd signals(::signalfd(-1, &set, SFD_CLOEXEC));
  core::UniqueFd handed_over(::eventfd(0, EFD_CLOEXEC));
  if (signals.get() < 0 || handed_over.get() < 0) {
    core::logger()->error("[proxy] signalfd/eventfd: {}", std::strerror(errno));
    return 1;
  }
  ProxyOptions opts = options;
  opts.on_handed_over = [fd = handed_over.get()] {
    uint64_t one = 1;
    (void)!::write(fd, &one, sizeof one);
  };
  Proxy proxy(opts);
  auto started = proxy.start();
  if (!started.ok()) {
    core::logger()->error("[proxy] {}", started.error().message);
    return 1;
  }
  pollfd fds[2] = {{signals.get(), POLLIN, 0}, {handed_over.get(), POLLIN, 0}};
  while (::poll(fds, 2, -1) < 0 && errno == EINTR) {
  }
  if (fds[0].revents & POLLIN) {
    signalfd_siginfo info{};
    (void)!::read(signals.get(), &info, sizeof info);
    core::logger()->info("[proxy] received {}, shutting down",
                         info.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
  }
  proxy.stop();
  return 0;
}

}  // namespace cutover::proxy
