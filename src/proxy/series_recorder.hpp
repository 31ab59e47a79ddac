// SeriesRecorder: turns the cumulative per-target counters that workers update (TargetStats,
// internal.hpp) into per-second datapoints, kept in a bounded ring per target group and per
// target, for GET /stats/series (proxy.hpp) and the alarms of the deployment engine.
//
// Once a second the control thread calls sample(): the recorder reads every TargetStats it
// tracks and records what each counter gained since the previous sample as the datapoint of that
// second. The request path is untouched (it keeps incrementing relaxed atomics), and every
// counted request lands in exactly one datapoint: the sums of the datapoints equal the counters.
//
// Counters never go back, because a TargetStats is never reset: a (group, target) pair that
// leaves the snapshot and comes back gets a new object. The recorder keeps a reference to every
// object it tracks, so that
//   - a new object starts from zero (all its counts are new), never below the previous one;
//   - a target that left its group (removed from the snapshot, draining) keeps being sampled
//     while anyone else still holds its TargetStats (a worker's route table, a request still
//     in flight), so its last requests are counted in its group too; once the recorder holds the
//     only reference nobody can count anything more and it reads it one last time and lets go;
//   - no address is reused for another object while the recorder remembers it.
//
// Bounds: kSeriesCapacity datapoints per series (5 minutes at one a second; about 190 bytes
// each, so 100 targets cost about 6 MB). A series that got no datapoint for kSeriesCapacity
// seconds (its group or target is gone) is deleted.
//
// Thread-safety: none; control thread only (sample() and query() both run there).
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/result.hpp"
#include "proxy/internal.hpp"
#include "proxy/series.hpp"

namespace cutover::proxy::detail {

inline constexpr int kSeriesCapacity = 300;

class SeriesRecorder {
 public:
  // One (group, target) of the current snapshot.
  struct Live {
    std::string group;
    std::string target;
    std::string address;
    std::shared_ptr<TargetStats> stats;
  };

  // Records the datapoint of `second` (Unix seconds; strictly increasing from call to call) for
  // every group in `groups` (the current snapshot's, even without targets), every live target,
  // and every group and target that left but is still being drained.
  void sample(int64_t second, const std::vector<std::string>& groups,
              const std::vector<Live>& live);

  // A (group, target) leaving the snapshot between two samples: its counts since the previous
  // sample (all of them if it was never sampled) go into the next datapoints, and so does what
  // its requests still in flight count.
  void retire(Live removed);

  // The datapoints of `since` and later, of one group or of all. `groups` are the current
  // snapshot's: they are listed even before their first datapoint. A group in neither is an
  // Error of kind NotFound.
  core::Result<StatsSeries> query(const SeriesQuery& q, std::uint64_t version,
                                  const std::vector<std::string>& groups) const;

  std::optional<int64_t> last() const { return last_; }

  // What a TargetStats counted so far (or in one second): plain numbers.
  struct Counts {
    std::array<uint64_t, 4> by_class{};
    uint64_t upstream_errors = 0;
    std::array<uint64_t, kLatencyBucketsMs.size() + 1> latency{};
    uint64_t latency_sum_ms = 0;
    uint64_t latency_count = 0;

    // latency_count is the sum of the buckets (not the separate atomic, which a concurrent
    // request may not have reached yet), so that +Inf == count always holds.
    static Counts read(const TargetStats& s);
    Counts minus(const Counts& earlier) const;
    void add(const Counts& other);
  };

  // What each group counted since the recorder started, as of the last sample: monotonic even
  // when targets leave (/metrics exposes them as the group's counters).
  const std::map<std::string, Counts>& group_totals() const { return totals_; }

 private:
  struct Point {
    int64_t time = 0;
    Counts counts;
  };
  struct TargetRing {
    std::string address;
    std::deque<Point> points;
  };
  struct GroupRing {
    std::deque<Point> points;
    std::map<std::string, TargetRing> targets;  // by target id
  };
  struct Tracked {
    std::string group;
    std::string target;
    std::string address;
    std::shared_ptr<TargetStats> stats;
    Counts seen;  // at the previous sample
  };

  static void push(std::deque<Point>& ring, Point p);
  static core::Datapoint to_datapoint(const Point& p);

  std::map<const TargetStats*, Tracked> tracked_;
  std::map<std::string, GroupRing> groups_;  // by group name
  std::map<std::string, Counts> totals_;     // by group name, while its ring exists
  std::optional<int64_t> last_;
};

}  // namespace cutover::proxy::detail
