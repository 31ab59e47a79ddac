// AdminClient: the synchronous client of the proxy's admin API (a Unix socket, see proxy.hpp),
// used by the controller to push route snapshots, read target health and the per-second stats. One
// request per connection; every call has a deadline.
//
// Thread-safety: an AdminClient holds no connection; its methods may be called from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>

#include "core/result.hpp"
#include "proxy/series.hpp"
#include "proxy/snapshot.hpp"

namespace cutover::proxy {

struct ProxyHealth {
  std::string status;  // "ok"
  std::uint64_t version = 0;
  int pid = 0;
};

class AdminClient {
 public:
  explicit AdminClient(std::filesystem::path socket,
                       std::chrono::milliseconds timeout = std::chrono::seconds(5));

  // The response body on 2xx. Otherwise an Error "PUT /snapshot: 409: snapshot version 3 is
  // older than the applied version 7" (status, then the server's "error" message or body), or
  // a connection error naming the socket.
  core::Result<std::string> get(std::string_view path);
  core::Result<std::string> put(std::string_view path, std::string_view body);

  core::Result<ProxyHealth> health();
  core::Result<void> put_snapshot(const RouteSnapshot& snapshot);
  core::Result<RouteSnapshot> get_snapshot();
  // target id -> "initial" | "healthy" | "unhealthy" | "draining", over all target groups.
  core::Result<std::map<std::string, std::string>> target_health();
  // GET /stats/series: per-second datapoints per target group and target (see proxy.hpp), ready
  // for alarm (alarm::Datapoint is core::Datapoint). An unknown group is an Error of kind
  // NotFound, a bad query one of kind Invalid.
  core::Result<StatsSeries> stats_series(const SeriesQuery& query = {});

 private:
  core::Result<std::string> request(std::string_view method, std::string_view path,
                                    std::string_view body);
  std::filesystem::path socket_;
  std::chrono::milliseconds timeout_;
};

}  // namespace cutover::proxy
