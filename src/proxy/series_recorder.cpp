#include "proxy/series_recorder.hpp"

#include <atomic>
#include <cassert>
#include <set>

#include <fmt/format.h>

namespace cutover::proxy::detail {

SeriesRecorder::Counts SeriesRecorder::Counts::read(const TargetStats& s) {
  Counts c;
  for (size_t i = 0; i < c.by_class.size(); ++i)
    c.by_class[i] = s.by_class[i].load(std::memory_order_relaxed);
  c.upstream_errors = s.upstream_errors.load(std::memory_order_relaxed);
  for (size_t i = 0; i < c.latency.size(); ++i)
    c.latency[i] = s.latency[i].load(std::memory_order_relaxed);
  c.latency_sum_ms = s.latency_sum_ms.load(std::memory_order_relaxed);
  for (uint64_t n : c.latency) c.latency_count += n;
  return c;
}

// Every counter of one object only grows, so each difference is >= 0. The fields are read one by
// one while workers count: a request may show in latency before by_class; it is then in the next
// datapoint's by_class, and the sums stay exact.
SeriesRecorder::Counts SeriesRecorder::Counts::minus(const Counts& earlier) const {
  auto diff = [](uint64_t now, uint64_t then) {
    assert(now >= then && "a TargetStats counter went back");
    return now >= then ? now - then : 0;
  };
  Counts d;
  for (size_t i = 0; i < d.by_class.size(); ++i)
    d.by_class[i] = diff(by_class[i], earlier.by_class[i]);
  d.upstream_errors = diff(upstream_errors, earlier.upstream_errors);
  for (size_t i = 0; i < d.latency.size(); ++i) d.latency[i] = diff(latency[i], earlier.latency[i]);
  d.latency_sum_ms = diff(latency_sum_ms, earlier.latency_sum_ms);
  d.latency_count = diff(latency_count, earlier.latency_count);
  return d;
}

void SeriesRecorder::Counts::add(const Counts& o) {
  for (size_t i = 0; i < by_class.size(); ++i) by_class[i] += o.by_class[i];
  upstream_errors += o.upstream_errors;
  for (size_t i = 0; i < latency.size(); ++i) latency[i] += o.latency[i];
  latency_sum_ms += o.latency_sum_ms;
  latency_count += o.latency_count;
}

void SeriesRecorder::push(std::deque<Point>& ring, Point p) {
  ring.push_back(std::move(p));
  while (ring.size() > static_cast<size_t>(kSeriesCapacity)) ring.pop_front();
}

void SeriesRecorder::sample(int64_t second, const std::vector<std::string>& groups,
                            const std::vector<Live>& live) {
  assert((!last_ || second > *last_) && "SeriesRecorder::sample: seconds must increase");
  last_ = second;
  std::set<const TargetStats*> live_objects;
  for (const auto& l : live) {
    live_objects.insert(l.stats.get());
    auto [it, added] = tracked_.try_emplace(l.stats.get());
    if (added) it->second = Tracked{l.group, l.target, l.address, l.stats, Counts{}};
    it->second.address = l.address;
  }

  // What every object counted since the previous sample, summed per (group, target): a target
  // that left a group and came back has two objects for a while.
  std::map<std::string, Point> group_points;
  std::map<std::pair<std::string, std::string>, std::pair<std::string, Point>> target_points;
  for (const auto& g : groups) group_points[g].time = second;
  for (auto it = tracked_.begin(); it != tracked_.end();) {
    Tracked& t = it->second;
    // Alone with a removed target's counters: nobody can count anything more, and the fence
    // makes the workers' last increments (before they dropped their references) visible.
    const bool last_read = !live_objects.count(it->first) && t.stats.use_count() == 1;
    if (last_read) std::atomic_thread_fence(std::memory_order_acquire);
    Counts now = Counts::read(*t.stats);
    Counts delta = now.minus(t.seen);
    t.seen = now;
    auto& gp = group_points[t.group];
    gp.time = second;
    gp.counts.add(delta);
    auto& [address, tp] = target_points[{t.group, t.target}];
    address = t.address;
    tp.time = second;
    tp.counts.add(delta);
    it = last_read ? tracked_.erase(it) : std::next(it);
  }

  for (auto& [name, p] : group_points) {
    totals_[name].add(p.counts);
    push(groups_[name].points, std::move(p));
  }
  for (auto& [key, ap] : target_points) {
    auto& ring = groups_[key.first].targets[key.second];
    ring.address = ap.first;
    push(ring.points, std::move(ap.second));
  }

  // Series that got nothing for kSeriesCapacity seconds are gone for good.
  const int64_t oldest = second - kSeriesCapacity;
  for (auto g = groups_.begin(); g != groups_.end();) {
    std::erase_if(g->second.targets, [&](const auto& kv) {
      return kv.second.points.empty() || kv.second.points.back().time <= oldest;
    });
    const bool stale = g->second.points.empty() || g->second.points.back().time <= oldest;
    if (stale && g->second.targets.empty()) {
      totals_.erase(g->first);
      g = groups_.erase(g);
    } else {
      ++g;
    }
  }
}

void SeriesRecorder::retire(Live removed) {
  auto [it, added] = tracked_.try_emplace(removed.stats.get());
  if (added)
    it->second = Tracked{std::move(removed.group), std::move(removed.target),
                         std::move(removed.address), std::move(removed.stats), Counts{}};
}

core::Datapoint SeriesRecorder::to_datapoint(const Point& p) {
  core::Datapoint d;
  d.time = p.time;
  d.requests_2xx = p.counts.by_class[0];
  d.requests_3xx = p.counts.by_class[1];
  d.requests_4xx = p.counts.by_class[2];
  d.requests_5xx = p.counts.by_class[3];
  d.upstream_errors = p.counts.upstream_errors;
  d.latency.bounds_ms.assign(kLatencyBucketsMs.begin(), kLatencyBucketsMs.end());
  d.latency.counts.assign(p.counts.latency.begin(), p.counts.latency.end());
  d.latency.sum_ms = p.counts.latency_sum_ms;
  d.latency.count = p.counts.latency_count;
  return d;
}

core::Result<StatsSeries> SeriesRecorder::query(const SeriesQuery& q, std::uint64_t version,
                                                const std::vector<std::string>& groups) const {
  StatsSeries out;
  out.version = version;
  out.last = last_;
  out.capacity = kSeriesCapacity;
  out.latency_buckets_ms.assign(kLatencyBucketsMs.begin(), kLatencyBucketsMs.end());
  std::set<std::string> names(groups.begin(), groups.end());
  for (const auto& [name, _] : groups_) names.insert(name);
  if (q.group && !names.count(*q.group)) {
    std::string known;
    for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
    return core::Error(fmt::format("no target group \"{}\" in the stats series (groups: {})",
                                   *q.group, known.empty() ? "none" : known),
                       core::ErrorKind::NotFound);
  }
  auto select = [&](const std::deque<Point>& ring) {
    std::vector<core::Datapoint> points;
    for (const auto& p : ring)
      if (!q.since || p.time >= *q.since) points.push_back(to_datapoint(p));
    return points;
  };
  for (const auto& name : names) {
    if (q.group && name != *q.group) continue;
    GroupSeries gs;
    gs.name = name;
    if (auto it = groups_.find(name); it != groups_.end()) {
      gs.datapoints = select(it->second.points);
      for (const auto& [id, ring] : it->second.targets)
        gs.targets.push_back(TargetSeries{id, ring.address, select(ring.points)});
    }
    out.target_groups.push_back(std::move(gs));
  }
  return out;
}

}  // namespace cutover::proxy::detail
