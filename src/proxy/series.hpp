// The per-second stats series of the admin API (GET /stats/series, proxy.hpp has the JSON): the
// typed value both sides use. The proxy builds a StatsSeries and serializes it with to_json();
// AdminClient::stats_series() parses it back with parse_stats_series(), so the controller gets
// core::Datapoint values that alarm evaluates as they are.
//
// Thread-safety: value types and pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"
#include "core/stats.hpp"

namespace cutover::proxy {

struct TargetSeries {
  std::string id;
  std::string address;
  std::vector<core::Datapoint> datapoints;  // oldest first, one per sampled second
};

struct GroupSeries {
  std::string name;
  // The sum over the group's targets, including targets that left the group meanwhile (their
  // draining requests still count).
  std::vector<core::Datapoint> datapoints;
  std::vector<TargetSeries> targets;  // by id
};

struct StatsSeries {
  std::uint64_t version = 0;  // of the route snapshot the proxy serves
  // The newest second sampled so far: every datapoint up to it is final. nullopt before the
  // first sample (within a second of the proxy's start).
  std::optional<int64_t> last;
  int capacity = 0;                         // datapoints kept per series (kSeriesCapacity)
  std::vector<int64_t> latency_buckets_ms;  // the bounds of every datapoint's histogram
  std::vector<GroupSeries> target_groups;   // by name

  const GroupSeries* find_group(std::string_view name) const;
};

// The query of GET /stats/series: `since=<unix seconds>` keeps the datapoints of that second and
// later; `group=<name>` (percent-encoded) keeps one target group. Both optional.
struct SeriesQuery {
  std::optional<int64_t> since;
  std::optional<std::string> group;
};
// Parses the query string (without '?'). Errors name the parameter and the problem: unknown or
// repeated parameters, a since that is not a non-negative integer, an empty or badly encoded
// group.
core::Result<SeriesQuery> parse_series_query(std::string_view query);
// The request target for a query, with the group percent-encoded: "/stats/series?since=..".
std::string series_path(const SeriesQuery& query);

std::string to_json(const StatsSeries& series);
core::Result<StatsSeries> parse_stats_series(std::string_view json);

}  // namespace cutover::proxy
