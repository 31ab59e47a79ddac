#include "alarm/alarm.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace cutover::alarm {

std::string_view to_string(Verdict v) {
  switch (v) {
    case Verdict::Ok:
      return "OK";
    case Verdict::Alarm:
      return "ALARM";
    case Verdict::InsufficientData:
      return "INSUFFICIENT_DATA";
  }
  return "?";
}

std::string_view to_string(Metric m) {
  switch (m) {
    case Metric::HttpRequests:
      return "http_requests";
    case Metric::Http2xx:
      return "http_2xx";
    case Metric::Http4xx:
      return "http_4xx";
    case Metric::Http5xx:
      return "http_5xx";
    case Metric::ErrorRate:
      return "error_rate";
    case Metric::LatencyP50:
      return "latency_p50";
    case Metric::LatencyP90:
      return "latency_p90";
    case Metric::LatencyP99:
      return "latency_p99";
    case Metric::UpstreamErrors:
      return "upstream_errors";
  }
  return "?";
}

std::string_view to_string(Statistic s) {
  switch (s) {
    case Statistic::Sum:
      return "sum";
    case Statistic::Avg:
      return "avg";
    case Statistic::Max:
      return "max";
  }
  return "?";
}

std::string_view to_string(Comparison c) {
  switch (c) {
    case Comparison::Greater:
      return ">";
    case Comparison::GreaterOrEqual:
      return ">=";
    case Comparison::Less:
      return "<";
    case Comparison::LessOrEqual:
      return "<=";
  }
  return "?";
}

core::Result<void> validate(const Rule& rule) {
  if (rule.period_seconds < 1) {
    return core::Error("alarm " + rule.name + ": period must be at least 1s");
  }
  if (rule.evaluation_periods < 1) {
    return core::Error("alarm " + rule.name + ": evaluation_periods must be at least 1");
  }
  if (rule.datapoints_to_alarm < 1 || rule.datapoints_to_alarm > rule.evaluation_periods) {
    return core::Error("alarm " + rule.name + ": datapoints_to_alarm must be 1-" +
                       std::to_string(rule.evaluation_periods));
  }
  if (!std::isfinite(rule.threshold)) {
    return core::Error("alarm " + rule.name + ": threshold must be a finite number");
  }
  return {};
}

namespace {

bool is_count(Metric m) {
  switch (m) {
    case Metric::HttpRequests:
    case Metric::Http2xx:
    case Metric::Http4xx:
    case Metric::Http5xx:
    case Metric::UpstreamErrors:
      return true;
    default:
      return false;
  }
}

// Adds b into a. When the latency bounds differ, b's counts are still added and its latency is
// left out (the header documents this).
void accumulate(Datapoint& a, const Datapoint& b) {
  if (a.add(b)) return;
  Datapoint counts_only = b;
  counts_only.latency = {};
  (void)a.add(counts_only);
}

std::string format_value(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

}  // namespace

std::optional<double> metric_value(Metric metric, const Datapoint& d) {
  switch (metric) {
    case Metric::HttpRequests:
      return static_cast<double>(d.requests());
    case Metric::Http2xx:
      return static_cast<double>(d.requests_2xx);
    case Metric::Http4xx:
      return static_cast<double>(d.requests_4xx);
    case Metric::Http5xx:
      return static_cast<double>(d.requests_5xx);
    case Metric::UpstreamErrors:
      return static_cast<double>(d.upstream_errors);
    case Metric::ErrorRate:
      if (d.requests() == 0) return std::nullopt;
      return 100.0 * static_cast<double>(d.requests_5xx) / static_cast<double>(d.requests());
    case Metric::LatencyP50:
      return d.p50_ms();
    case Metric::LatencyP90:
      return d.p90_ms();
    case Metric::LatencyP99:
      return d.p99_ms();
  }
  return std::nullopt;
}

bool compare(Comparison c, double value, double threshold) {
  switch (c) {
    case Comparison::Greater:
      return value > threshold;
    case Comparison::GreaterOrEqual:
      return value >= threshold;
    case Comparison::Less:
      return value < threshold;
    case Comparison::LessOrEqual:
      return value <= threshold;
  }
  return false;
}

Evaluation evaluate(const Rule& rule, std::span<const Datapoint> series, int64_t now) {
  Evaluation ev;
  const int n = std::max(rule.evaluation_periods, 1);
  const int64_t p = std::max<int64_t>(rule.period_seconds, 1);
  const int64_t first = now - p * n;  // start of the oldest period

  struct Window {
    Datapoint total;
    std::optional<double> max_second;
  };
  std::vector<Window> windows(static_cast<size_t>(n));
  for (const auto& d : series) {
    if (d.time < first || d.time >= now) continue;
    auto& w = windows[static_cast<size_t>((d.time - first) / p)];
    accumulate(w.total, d);
    if (rule.statistic == Statistic::Max) {
      if (auto v = metric_value(rule.metric, d)) {
        w.max_second = w.max_second ? std::max(*w.max_second, *v) : *v;
      }
    }
  }

  for (int i = 0; i < n; ++i) {
    const auto& w = windows[static_cast<size_t>(i)];
    PeriodResult pr;
    pr.start = first + p * i;
    pr.requests = w.total.requests();
    if (pr.requests >= rule.min_requests) {
      switch (rule.statistic) {
        case Statistic::Max:
          // A count's max over an empty-but-allowed period (min_requests 0) is 0.
          pr.value = w.max_second
                         ? w.max_second
                         : (is_count(rule.metric) ? std::optional<double>(0.0) : std::nullopt);
          break;
        case Statistic::Sum:
          pr.value = metric_value(rule.metric, w.total);
          break;
        case Statistic::Avg:
          pr.value = metric_value(rule.metric, w.total);
          if (pr.value && is_count(rule.metric)) *pr.value /= static_cast<double>(p);
          break;
      }
    }
    if (pr.value) {
      pr.breaching = compare(rule.comparison, *pr.value, rule.threshold);
      if (pr.breaching) ++ev.breaching;
    } else {
      ++ev.missing;
    }
    ev.periods.push_back(pr);
  }

  const int m = std::clamp(rule.datapoints_to_alarm, 1, n);
  if (ev.breaching >= m) {
    ev.verdict = Verdict::Alarm;
  } else if (ev.missing == 0) {
    ev.verdict = Verdict::Ok;
  } else {
    ev.verdict = Verdict::InsufficientData;
  }

  std::string s(to_string(rule.metric));
  s += ' ';
  s += to_string(rule.statistic);
  const auto& newest = ev.periods.back();
  s += newest.value ? " " + format_value(*newest.value) : " (no data)";
  s += ' ';
  s += to_string(rule.comparison);
  s += ' ' + format_value(rule.threshold) + ": " + std::to_string(ev.breaching) + " of " +
       std::to_string(n) + " periods of " + std::to_string(p) + "s breaching";
  if (ev.missing > 0) {
    s += ", " + std::to_string(ev.missing) + " with fewer than " +
         std::to_string(rule.min_requests) + " requests";
  }
  s += " -> ";
  s += to_string(ev.verdict);
  ev.summary = std::move(s);
  return ev;
}

}  // namespace cutover::alarm
