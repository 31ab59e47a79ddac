#include "core/stats.hpp"

#include <fmt/format.h>

namespace cutover::core {

std::optional<double> LatencyHistogram::quantile(double q) const {
  if (!(q > 0 && q <= 1) || count == 0 || counts.size() != bounds_ms.size() + 1)
    return std::nullopt;
  const double rank = q * static_cast<double>(count);
  uint64_t below = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    const uint64_t n = counts[i];
    if (n == 0 || static_cast<double>(below + n) < rank) {
      below += n;
      continue;
    }
    if (i == bounds_ms.size()) {  // +Inf
      if (bounds_ms.empty()) return std::nullopt;
      return static_cast<double>(bounds_ms.back());
    }
    const double lo = i == 0 ? 0.0 : static_cast<double>(bounds_ms[i - 1]);
    const double hi = static_cast<double>(bounds_ms[i]);
    return lo + (hi - lo) * (rank - static_cast<double>(below)) / static_cast<double>(n);
  }
  // The counts sum to less than `count` (an inconsistent histogram): the last bucket seen.
  return bounds_ms.empty() ? std::nullopt : std::optional<double>(bounds_ms.back());
}

Result<void> LatencyHistogram::add(const LatencyHistogram& other) {
  if (other.counts.empty()) return ok();
  if (counts.empty()) {
    *this = other;
    return ok();
  }
  if (bounds_ms != other.bounds_ms || counts.size() != other.counts.size())
    return Error(fmt::format("latency histograms with different buckets ({} and {} bounds)",
                             bounds_ms.size(), other.bounds_ms.size()));
  for (size_t i = 0; i < counts.size(); ++i) counts[i] += other.counts[i];
  sum_ms += other.sum_ms;
  count += other.count;
  return ok();
}

Result<void> Datapoint::add(const Datapoint& other) {
  if (auto r = latency.add(other.latency); !r.ok()) return r;
  requests_2xx += other.requests_2xx;
  requests_3xx += other.requests_3xx;
  requests_4xx += other.requests_4xx;
  requests_5xx += other.requests_5xx;
  upstream_errors += other.upstream_errors;
  return ok();
}

}  // namespace cutover::core
