// alarm: metric windows and alarm evaluation over the proxy's per-second datapoints. Pure: no I/O,
// no clock (DESIGN.md §3). The controller fetches the datapoints (proxy::AdminClient::
// stats_series), sums blue's and green's for a `production` alarm, and asks evaluate() for a
// verdict once a second; the deployment state machine acts on the verdicts.
//
// Windows trail `now` instead of being aligned to the wall clock: with period 10s and 2 evaluation
// periods, an evaluation at second t looks at [t-20, t-10) and [t-10, t). So a verdict can change
// every second, from every request the proxy saw, not once per period (CloudWatch's one-minute
// alarm periods are what this replaces).
//
// Verdicts, per alarm:
//   - a period with fewer than min_requests requests is *missing*: low traffic is neither a
//     breach nor a pass;
//   - ALARM when at least datapoints_to_alarm of the evaluation_periods periods breach;
//   - OK when every period has data and fewer than datapoints_to_alarm breach;
//   - INSUFFICIENT_DATA otherwise (some periods missing and not enough breaching ones).
//
// Statistics over a period's seconds:
//   - counts (http_requests, http_2xx/4xx/5xx, upstream_errors): sum = the period's total,
//     avg = total / seconds of the period, max = the largest one-second count;
//   - error_rate (percent of requests answered 5xx, failed exchanges included): sum and avg = the
//     period's 5xx / the period's requests (a request-weighted rate, not an average of per-second
//     rates), max = the largest rate of a second that had requests;
//   - latency_pNN (milliseconds): sum and avg = the percentile of the period's summed histogram,
//     max = the largest one-second percentile.
//
// Thread-safety: value types and pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"
#include "core/stats.hpp"

namespace cutover::alarm {

enum class Verdict { Ok, Alarm, InsufficientData };

std::string_view to_string(Verdict v);

// One second of one target group (or target), exactly as the proxy reports it: the controller
// gets them from proxy::AdminClient::stats_series() and passes them on unchanged. A period's
// datapoint is the sum of its seconds (Datapoint::add); its percentiles come from the summed
// histogram (LatencyHistogram::quantile), not from averaging per-second percentiles.
using Datapoint = core::Datapoint;

enum class Metric {
  HttpRequests,
  Http2xx,
  Http4xx,
  Http5xx,
  ErrorRate,
  LatencyP50,
  LatencyP90,
  LatencyP99,
  UpstreamErrors,
};
enum class Statistic { Sum, Avg, Max };
enum class Comparison { Greater, GreaterOrEqual, Less, LessOrEqual };

std::string_view to_string(Metric m);
std::string_view to_string(Statistic s);
std::string_view to_string(Comparison c);

// One alarm as the deployment evaluates it (the controller maps config::Alarm to this).
struct Rule {
  std::string name;
  Metric metric = Metric::Http5xx;
  Statistic statistic = Statistic::Sum;
  int64_t period_seconds = 60;  // >= 1
  int evaluation_periods = 1;   // >= 1
  int datapoints_to_alarm = 1;  // 1 .. evaluation_periods
  Comparison comparison = Comparison::Greater;
  double threshold = 0;
  uint64_t min_requests = 0;
};

// Checks the ranges above; the config layer reports the same errors with file positions.
core::Result<void> validate(const Rule& rule);

// One period of an evaluation, oldest first in Evaluation::periods.
struct PeriodResult {
  int64_t start = 0;  // Unix seconds; the period is [start, start + period_seconds)
  uint64_t requests = 0;
  std::optional<double> value;  // none when the period is missing (too few requests, no data)
  bool breaching = false;
};

struct Evaluation {
  Verdict verdict = Verdict::InsufficientData;
  int breaching = 0;  // periods that breach
  int missing = 0;    // periods with fewer than min_requests requests (or no value)
  std::vector<PeriodResult> periods;
  // For logs, events and `cutover status`: e.g. "http_5xx sum 14 > 10 in 2 of 2 periods of 10s".
  std::string summary;
};

// Evaluates rule over the datapoints of the seconds before `now` (Unix seconds; the newest period
// is [now - period, now)). `series` may come in any order and may miss seconds (a second without
// a datapoint had no traffic); datapoints at or after `now`, or older than the windows, are
// ignored. A datapoint whose latency bounds differ from the others' is ignored for latency.
Evaluation evaluate(const Rule& rule, std::span<const Datapoint> series, int64_t now);

// The metric value of one second (or one summed period) alone; none when it has no requests
// (rates) or no latency samples (percentiles).
std::optional<double> metric_value(Metric metric, const Datapoint& d);

bool compare(Comparison c, double value, double threshold);

}  // namespace cutover::alarm
