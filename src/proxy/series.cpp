#include "proxy/series.hpp"

#include <charconv>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace cutover::proxy {
namespace {

using nlohmann::json;

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

core::Result<std::string> percent_decode(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out += in[i];
      continue;
    }
    int hi = i + 2 < in.size() ? hex_value(in[i + 1]) : -1;
    int lo = i + 2 < in.size() ? hex_value(in[i + 2]) : -1;
    if (hi < 0 || lo < 0) return core::Error(fmt::format("bad percent-encoding at offset {}", i));
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

std::string percent_encode(std::string_view in) {
  std::string out;
  for (unsigned char c : in) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_' || c == '.' || c == '~')
      out += static_cast<char>(c);
    else
      out += fmt::format("%{:02X}", c);
  }
  return out;
}

json optional_number(std::optional<double> v) { return v ? json(*v) : json(nullptr); }

json datapoint_json(const core::Datapoint& d) {
  return json{{"time", d.time},
              {"requests",
               {{"2xx", d.requests_2xx},
                {"3xx", d.requests_3xx},
                {"4xx", d.requests_4xx},
                {"5xx", d.requests_5xx}}},
              {"upstream_errors", d.upstream_errors},
              {"latency_ms",
               {{"buckets", d.latency.counts},
                {"sum", d.latency.sum_ms},
                {"count", d.latency.count},
                {"p50", optional_number(d.p50_ms())},
                {"p90", optional_number(d.p90_ms())},
                {"p99", optional_number(d.p99_ms())}}}};
}

json datapoints_json(const std::vector<core::Datapoint>& points) {
  json out = json::array();
  for (const auto& d : points) out.push_back(datapoint_json(d));
  return out;
}

// Throws nlohmann::json exceptions on a wrong shape; parse_stats_series() turns them into an
// Error (no exception leaves this file).
core::Datapoint parse_datapoint(const json& j, const std::vector<int64_t>& bounds) {
  core::Datapoint d;
  d.time = j.at("time").get<int64_t>();
  const auto& r = j.at("requests");
  d.requests_2xx = r.at("2xx").get<uint64_t>();
  d.requests_3xx = r.at("3xx").get<uint64_t>();
  d.requests_4xx = r.at("4xx").get<uint64_t>();
  d.requests_5xx = r.at("5xx").get<uint64_t>();
  d.upstream_errors = j.at("upstream_errors").get<uint64_t>();
  const auto& l = j.at("latency_ms");
  d.latency.bounds_ms = bounds;
  d.latency.counts = l.at("buckets").get<std::vector<uint64_t>>();
  if (d.latency.counts.size() != bounds.size() + 1)
    throw std::runtime_error(fmt::format("datapoint {}: {} latency buckets, expected {}", d.time,
                                         d.latency.counts.size(), bounds.size() + 1));
  d.latency.sum_ms = l.at("sum").get<uint64_t>();
  d.latency.count = l.at("count").get<uint64_t>();
  return d;
}

std::vector<core::Datapoint> parse_datapoints(const json& j, const std::vector<int64_t>& bounds) {
  std::vector<core::Datapoint> out;
  for (const auto& d : j) out.push_back(parse_datapoint(d, bounds));
  return out;
}

}  // namespace

const GroupSeries* StatsSeries::find_group(std::string_view name) const {
  for (const auto& g : target_groups)
    if (g.name == name) return &g;
  return nullptr;
}

core::Result<SeriesQuery> parse_series_query(std::string_view query) {
  SeriesQuery q;
  while (!query.empty()) {
    auto amp = query.find('&');
    std::string_view param = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (param.empty()) continue;
    auto eq = param.find('=');
    std::string_view name = param.substr(0, eq);
    std::string_view value =
        eq == std::string_view::npos ? std::string_view() : param.substr(eq + 1);
    if (name == "since") {
      if (q.since) return core::Error("since: given more than once");
      int64_t v = 0;
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
      if (value.empty() || ec != std::errc() || end != value.data() + value.size() || v < 0)
        return core::Error(fmt::format(
            "since: expected Unix seconds (a non-negative integer), got \"{}\"", value));
      q.since = v;
    } else if (name == "group") {
      if (q.group) return core::Error("group: given more than once");
      auto decoded = percent_decode(value);
      if (!decoded.ok()) return decoded.error().wrap("group");
      if (decoded->empty()) return core::Error("group: expected a target group name, got \"\"");
      q.group = std::move(*decoded);
    } else {
      return core::Error(
          fmt::format("unknown query parameter \"{}\" (expected since, group)", name));
    }
  }
  return q;
}

std::string series_path(const SeriesQuery& query) {
  std::string out = "/stats/series";
  char sep = '?';
  if (query.since) {
    out += fmt::format("{}since={}", sep, *query.since);
    sep = '&';
  }
  if (query.group) out += fmt::format("{}group={}", sep, percent_encode(*query.group));
  return out;
}

std::string to_json(const StatsSeries& series) {
  json groups = json::array();
  for (const auto& g : series.target_groups) {
    json targets = json::array();
    for (const auto& t : g.targets)
      targets.push_back(
          {{"id", t.id}, {"address", t.address}, {"datapoints", datapoints_json(t.datapoints)}});
    groups.push_back(
        {{"name", g.name}, {"datapoints", datapoints_json(g.datapoints)}, {"targets", targets}});
  }
  return json{{"version", series.version},
              {"resolution_s", 1},
              {"capacity", series.capacity},
              {"last", series.last ? json(*series.last) : json(nullptr)},
              {"latency_buckets_ms", series.latency_buckets_ms},
              {"target_groups", groups}}
      .dump(-1, ' ', false, json::error_handler_t::replace);
}

core::Result<StatsSeries> parse_stats_series(std::string_view text) {
  auto j = json::parse(text, nullptr, false);
  if (j.is_discarded()) return core::Error("stats series: not JSON");
  StatsSeries s;
  try {
    s.version = j.at("version").get<uint64_t>();
    if (!j.at("last").is_null()) s.last = j.at("last").get<int64_t>();
    s.capacity = j.at("capacity").get<int>();
    s.latency_buckets_ms = j.at("latency_buckets_ms").get<std::vector<int64_t>>();
    for (const auto& g : j.at("target_groups")) {
      GroupSeries gs;
      gs.name = g.at("name").get<std::string>();
      gs.datapoints = parse_datapoints(g.at("datapoints"), s.latency_buckets_ms);
      for (const auto& t : g.at("targets"))
        gs.targets.push_back(
            TargetSeries{t.at("id").get<std::string>(), t.at("address").get<std::string>(),
                         parse_datapoints(t.at("datapoints"), s.latency_buckets_ms)});
      s.target_groups.push_back(std::move(gs));
    }
  } catch (const std::exception& e) {
    return core::Error(std::string("stats series: unexpected JSON: ") + e.what());
  }
  return s;
}

}  // namespace cutover::proxy
