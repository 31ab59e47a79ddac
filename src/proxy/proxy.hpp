// The data plane: `cutover proxy`, a separate process that outlives the controller (DESIGN.md §4).
// It serves HTTP/1.1 on the listeners of its current RouteSnapshot, chooses a target group per
// request by smooth weighted round robin (or the client's sticky cohort) and a healthy target
// inside it by round robin or least outstanding requests, skipping passively ejected targets
// (routing.hpp), runs the active health checks of every target itself, and is driven through an
// admin API (HTTP/1.1 on a Unix socket, mode 0600):
//   PUT /snapshot   body = snapshot JSON. 200 applied (or same version + same content: no-op),
//                   400 invalid, 409 older version / same version with other content,
//                   422 a listener cannot be bound (the old snapshot stays), 500 not persisted.
//                   The snapshot is persisted to state_file before the 200.
//   GET /snapshot   the current snapshot ({"version":0,...} before the first one)
//   GET /health     {"status":"ok","version":N,"pid":P}
//   GET /targets    {"version":N,"target_groups":[{"name":..,"targets":[{"id","address",
//                   "state":"initial|healthy|unhealthy|draining","consecutive_successes",
//                   "consecutive_failures","last_error","in_flight",
//                   "ejected":bool,"ejected_until":"2026-11-22T10:00:10.000Z"|null,"ejections",
//                   "consecutive_5xx","consecutive_connect_failures"}]}]}
//                   (health checks are counted in consecutive_successes/_failures, proxied
//                   requests for passive ejection in consecutive_5xx/_connect_failures)
//   GET /stats      {"version":N,"target_groups":[{"name":..,"targets":[{"id","address",
//                   "requests":{"2xx","3xx","4xx","5xx"},"upstream_errors","in_flight",
//                   "latency_ms":{"buckets":[{"le":5,"count":n},..,{"le":"+Inf",..}],
//                   "sum","count"}}]}]}      counters are cumulative (cumulative histogram)
//   GET /stats/series[?since=<unix seconds>][&group=<name, percent-encoded>]
//                   per-second datapoints (series.hpp, series_recorder.hpp), oldest first:
//                   {"version":N,"resolution_s":1,"capacity":300,
//                    "last":1700000041|null,            newest sampled second; final up to it
//                    "latency_buckets_ms":[1,2,5,10,25,50,100,250,500,1000,2500,5000,10000],
//                    "target_groups":[{"name":"web-green","datapoints":[D,..],
//                      "targets":[{"id":"task-1","address":"127.0.0.1:41234",
//                                  "datapoints":[D,..]}]}]}
//                   D = {"time":1700000041,                  Unix seconds: [time, time+1)
//                        "requests":{"2xx":n,"3xx":n,"4xx":n,"5xx":n},
//                        "upstream_errors":n,
//                        "latency_ms":{"buckets":[n,..],     per bucket, NOT cumulative: one per
//                                                            bound and a last one for +Inf
//                                      "sum":ms,"count":n,   count = sum of buckets
//                                      "p50":ms|null,"p90":ms|null,"p99":ms|null}}
//                   A group's datapoint sums its targets', including targets that left the group
//                   in that second or are still draining. Every group of the snapshot gets a
//                   datapoint every second (zeros without traffic); a group or target that left
//                   stays listed until its datapoints are older than `capacity` seconds.
//                   since: datapoints with time >= since. group: one group (also one that left).
//                   400 {"error":"GET /stats/series: since: expected Unix seconds ..."} for an
//                   unknown, repeated or malformed parameter; 404 for an unknown group.
//                   Percentiles interpolate linearly inside the histogram bucket that holds the
//                   rank (Prometheus histogram_quantile; core/stats.hpp); a rank in +Inf gives
//                   10000; null without responses.
//                   Sampling: on the control thread right after each whole second of the clock
//                   (ProxyOptions::clock), the counts gained since the previous sample become the
//                   datapoint of the second that ended. A late sample (a stalled control thread,
//                   a clock jumping ahead) puts the skipped seconds' counts in its datapoint and
//                   leaves them without one; nothing is lost or counted twice. A request counts
//                   when its response header arrives or its exchange with the target fails.
//   GET /metrics    Prometheus text: the counters of /stats per target
//                   (cutover_proxy_requests_total{target_group,target,code="2xx"},
//                   cutover_proxy_upstream_errors_total, cutover_proxy_target_latency_ms
//                   histogram), the same per group from the per-second samples
//                   (cutover_proxy_target_group_*; monotonic when targets leave, up to 1 s
//                   behind), health, ejection and the snapshot version
//
// Health state per target (kept per target id across snapshots; DESIGN.md §3.1: traffic only in
// state healthy):
//
//      new target ──▶ initial ──healthy_threshold OK──▶ healthy ◀──healthy_threshold OK──┐
//                        │                                 │                             │
//                        └──unhealthy_threshold failed──▶ unhealthy ◀─unhealthy_threshold┘
//                                                            failed
//      removed from the snapshot ──▶ draining (no new requests; in-flight ones finish, pooled
//                                    connections close) ──▶ gone after drain_timeout_ms or when
//                                    idle
//
// Restart and upgrade without dropping connections (socket handoff, handoff.hpp): a running proxy
// also listens on `<admin_socket>.handoff` (mode 0600). A new `cutover proxy` started with the
// same admin socket connects there and takes over:
//   1. the old process freezes its snapshot (PUT /snapshot -> 503) and sends it, the health of
//      its targets and, with SCM_RIGHTS, every listening socket of every listener (all the
//      SO_REUSEPORT sockets: closing one would reset the connections queued on it);
//   2. the new process adopts them (one per worker; more workers bind more sockets of the same
//      group; fewer workers run one worker per socket anyway unless net.ipv4.tcp_migrate_req=1),
//      persists the snapshot, starts, binds its admin and handoff sockets at temporary paths and
//      says "ready"; both processes accept connections meanwhile;
//   3. the old process renames the new sockets over its own (the commit point: the admin path
//      always names exactly one listening socket), answers "committed", serves what was queued on
//      its admin socket, stops accepting (its fds are pointed at a non-listening socket, so no
//      accepted connection is dropped), answers every further request with Connection: close,
//      and exits 0 when its connections are done, at most shutdown_grace after the handover.
// A new process that fails before step 3 (bad state file, timeout, crash) leaves the old one
// serving as before; a second takeover while one is in progress is refused. Every wait has a
// timeout (handoff.hpp). Counters in /stats start from zero in the new process.
//
//     old:  serving ──takeover──▶ offered ──ready + rename──▶ handed over ──drained──▶ exit 0
//                ▲                   │
//                └──error/timeout/EOF┘
//
// Threads: `workers` threads each run one event loop with their own SO_REUSEPORT listening
// sockets, upstream connection pools and round-robin state; one control thread runs the admin API
// and the health checks. Routes reach workers as shared_ptr<const> tables posted to each loop; the
// request path takes no lock.
//
// Threads (handoff): the old process runs each takeover session on a short-lived thread of its
// own (blocking socket I/O with deadlines); its outcome is posted to the control thread.
//
// Thread-safety: Proxy's methods may be called from any thread, but start()/stop() not
// concurrently with each other.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string_view>

#include "core/result.hpp"

namespace cutover::core {
class Clock;
}

namespace cutover::proxy {

struct ProxyOptions {
  std::filesystem::path admin_socket;  // Unix socket of the admin API (created, mode 0600)
  std::filesystem::path state_file;    // persisted snapshot; empty = no persistence
  int workers = 1;                     // event-loop threads serving listeners

  // Limits and timeouts (every wait has one; STYLE.md).
  std::size_t max_header_bytes = 16 * 1024;   // request or response header; more -> 431 / 502
  std::uint64_t max_body_bytes = 1ULL << 30;  // per request; more -> 413
  std::chrono::milliseconds header_timeout{10'000};        // first request header -> 408
  std::chrono::milliseconds idle_timeout{60'000};          // client keep-alive between requests
  std::chrono::milliseconds body_timeout{60'000};          // between body reads/writes
  std::chrono::milliseconds connect_timeout{3'000};        // upstream connect -> 504
  std::chrono::milliseconds response_timeout{60'000};      // upstream response header -> 504
  std::chrono::milliseconds total_timeout{300'000};        // whole request (not tunnels); 0 = none
  std::chrono::milliseconds upstream_idle_timeout{4'000};  // pooled keep-alive connection
  // Pooled connections per target per worker: as many as requests run at once, or targets see
  // a connect per request beyond it (HAProxy keeps them all by default).
  std::size_t max_idle_per_target = 1024;
  std::chrono::milliseconds shutdown_grace{5'000};  // in-flight requests at stop(); connections
                                                    // of the old process after a handover

  // Socket handoff (see above): take over a proxy already running on admin_socket; if false,
  // start() fails when one answers.
  bool takeover = true;
  // Called once, on the control thread, when another process has taken this one over; the owner
  // then calls stop(), which returns when the connections are done, at most shutdown_grace after
  // the handover.
  std::function<void()> on_handed_over;
  // The clock of latencies, drain and ejection deadlines, the shutdown grace and the per-second
  // datapoints; nullptr = the real clock. Tests pass a core::SimulatedClock (it must outlive the
  // Proxy) to step the datapoints' seconds. Socket timeouts always use the real monotonic clock,
  // so with a simulated clock stop() still ends: when the workers have closed every connection.
  core::Clock* clock = nullptr;
};

class Proxy {
 public:
  explicit Proxy(ProxyOptions options);
  ~Proxy();  // stop()
  Proxy(const Proxy&) = delete;
  Proxy& operator=(const Proxy&) = delete;

  // Takes over the proxy running on admin_socket if there is one (see above; fails if that
  // fails, or if takeover is off). Otherwise loads state_file if present (a bad file is logged
  // and ignored) and binds its listeners. Then starts the workers, the health checks, the admin
  // API and the handoff socket. Fails if the admin socket cannot be bound.
  core::Result<void> start();
  // Closes listeners and the admin socket, lets in-flight requests finish up to shutdown_grace,
  // then stops all threads. Idempotent.
  void stop();

  std::uint64_t version() const;
  // The port a listener (by name) is bound to; tests use "127.0.0.1:0" listeners.
  std::optional<std::uint16_t> listener_port(std::string_view listener_name) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The blocking entry point of `cutover proxy`: start(), wait for SIGTERM, SIGINT or a handover
// to a new process, stop().
// Returns the process exit code.
int run_proxy(const ProxyOptions& options);

}  // namespace cutover::proxy
