// Per-second traffic datapoints: the vocabulary shared by the proxy, which produces them
// (GET /stats/series on its admin socket, proxy.hpp), and the alarm evaluation, which consumes
// them (alarm.hpp). They live in core because the proxy and alarm may not depend on each other
// (DESIGN.md §3): the controller fetches them with proxy::AdminClient and hands the very same
// values to alarm.
//
// A datapoint covers one second of one target group or one target: the responses counted in it
// by status class, the failed exchanges with the target, and a latency histogram from which
// percentiles are estimated (LatencyHistogram::quantile, below).
//
// Thread-safety: value types; no shared state.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "core/result.hpp"

namespace cutover::core {

// Time to the target's response header, as a histogram with Prometheus `le` semantics: bucket i
// counts the values v with bounds_ms[i-1] < v <= bounds_ms[i] (0 < v for i = 0); one more bucket
// at the end counts the values above the last bound (+Inf).
struct LatencyHistogram {
  std::vector<int64_t> bounds_ms;  // upper bounds, strictly increasing
  std::vector<uint64_t> counts;    // bounds_ms.size() + 1 entries, per bucket (not cumulative)
  uint64_t sum_ms = 0;
  uint64_t count = 0;  // == the sum of counts

  // Estimates the q-quantile (0 < q <= 1) by linear interpolation inside the bucket that holds
  // the rank q*count, as Prometheus' histogram_quantile() does: with c the count of the values
  // below that bucket, n its count and (lo, hi] its bounds (lo = 0 for the first one),
  //     estimate = lo + (hi - lo) * (q*count - c) / n.
  // The values are assumed evenly spread inside a bucket, so the error is at most the bucket's
  // width. A rank in the +Inf bucket answers the last finite bound (an underestimate: nothing is
  // known above it). No values: nullopt.
  std::optional<double> quantile(double q) const;

  // Adds another histogram's counts; both must have the same bounds (or one of them none yet).
  Result<void> add(const LatencyHistogram& other);
};

struct Datapoint {
  int64_t time = 0;  // Unix seconds: the datapoint counts what was recorded in [time, time + 1)
  // Responses sent to clients by status class. A failed exchange with the target counts as the
  // 502 or 504 the client got; 1xx counts as 2xx.
  uint64_t requests_2xx = 0;
  uint64_t requests_3xx = 0;
  uint64_t requests_4xx = 0;
  uint64_t requests_5xx = 0;
  // Failed connects, resets, timeouts and invalid responses of the target (a connect retried on
  // another target counts here but is one request).
  uint64_t upstream_errors = 0;
  // Only requests that got a response header from the target: latency.count <= requests().
  LatencyHistogram latency;

  uint64_t requests() const { return requests_2xx + requests_3xx + requests_4xx + requests_5xx; }
  std::optional<double> p50_ms() const { return latency.quantile(0.50); }
  std::optional<double> p90_ms() const { return latency.quantile(0.90); }
  std::optional<double> p99_ms() const { return latency.quantile(0.99); }

  // Adds another datapoint's counts (a group's datapoint is the sum of its targets'); `time` is
  // kept. Fails if the latency bounds differ.
  Result<void> add(const Datapoint& other);
};

}  // namespace cutover::core
