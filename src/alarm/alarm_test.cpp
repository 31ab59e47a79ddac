#include "alarm/alarm.hpp"

#include <gtest/gtest.h>

#include <random>

namespace cutover::alarm {
namespace {

// One second with the given counts; latency samples all fall in the bucket of `latency_ms`.
Datapoint second(int64_t t, uint64_t ok, uint64_t err5xx, int64_t latency_ms = 0,
                 uint64_t upstream_errors = 0) {
  Datapoint d;
  d.time = t;
  d.requests_2xx = ok;
  d.requests_5xx = err5xx;
  d.upstream_errors = upstream_errors;
  if (latency_ms > 0) {
    d.latency.bounds_ms = {1, 5, 10, 50, 100, 500, 1000};
    d.latency.counts.assign(d.latency.bounds_ms.size() + 1, 0);
    size_t i = 0;
    while (i < d.latency.bounds_ms.size() && d.latency.bounds_ms[i] < latency_ms) ++i;
    d.latency.counts[i] = ok + err5xx;
    d.latency.count = ok + err5xx;
    d.latency.sum_ms = static_cast<uint64_t>(latency_ms) * (ok + err5xx);
  }
  return d;
}

Rule rule_5xx(int64_t period, int n, int m, double threshold, uint64_t min_requests = 0) {
  Rule r;
  r.name = "5xx";
  r.metric = Metric::Http5xx;
  r.statistic = Statistic::Sum;
  r.period_seconds = period;
  r.evaluation_periods = n;
  r.datapoints_to_alarm = m;
  r.comparison = Comparison::Greater;
  r.threshold = threshold;
  r.min_requests = min_requests;
  return r;
}

TEST(AlarmEvaluate, VerdictTable) {
  struct Case {
    const char* what;
    Rule rule;
    std::vector<Datapoint> series;
    int64_t now;
    Verdict want;
    int breaching;
    int missing;
  };
  const int64_t t = 1000;
  std::vector<Case> cases = {
      {"no data at all and min_requests 1: insufficient",
       rule_5xx(10, 1, 1, 0, 1),
       {},
       t,
       Verdict::InsufficientData,
       0,
       1},
      {"no data and min_requests 0: a count of 0 is a value, OK",
       rule_5xx(10, 1, 1, 0, 0),
       {},
       t,
       Verdict::Ok,
       0,
       0},
      {"5xx over threshold in the one period: ALARM",
       rule_5xx(10, 1, 1, 10),
       {second(t - 3, 100, 6), second(t - 1, 100, 6)},
       t,
       Verdict::Alarm,
       1,
       0},
      {"exactly at threshold with >: OK",
       rule_5xx(10, 1, 1, 12),
       {second(t - 3, 100, 6), second(t - 1, 100, 6)},
       t,
       Verdict::Ok,
       0,
       0},
      {"a second at `now` is not counted yet",
       rule_5xx(10, 1, 1, 10),
       {second(t - 1, 100, 6), second(t, 100, 6)},
       t,
       Verdict::Ok,
       0,
       0},
      {"a second older than the windows is not counted",
       rule_5xx(10, 1, 1, 10),
       {second(t - 11, 100, 6), second(t - 10, 100, 6)},
       t,
       Verdict::Ok,
       0,
       0},
      {"2 of 2: only the newest period breaches: OK",
       rule_5xx(10, 2, 2, 10),
       {second(t - 15, 100, 1), second(t - 5, 100, 20)},
       t,
       Verdict::Ok,
       1,
       0},
      {"2 of 2: both breach: ALARM",
       rule_5xx(10, 2, 2, 10),
       {second(t - 15, 100, 11), second(t - 5, 100, 20)},
       t,
       Verdict::Alarm,
       2,
       0},
      {"1 of 2: one breach is enough",
       rule_5xx(10, 2, 1, 10),
       {second(t - 15, 100, 11), second(t - 5, 100, 0)},
       t,
       Verdict::Alarm,
       1,
       0},
      {"low traffic is not a breach: 50 5xx in a period under min_requests",
       rule_5xx(10, 1, 1, 10, 100),
       {second(t - 2, 0, 50)},
       t,
       Verdict::InsufficientData,
       0,
       1},
      {"low traffic is not a pass either: one period missing, one fine",
       rule_5xx(10, 2, 2, 10, 20),
       {second(t - 15, 5, 0), second(t - 5, 100, 0)},
       t,
       Verdict::InsufficientData,
       0,
       1},
      {"a breach among missing periods still alarms when it reaches M",
       rule_5xx(10, 3, 1, 10, 20),
       {second(t - 5, 100, 30)},
       t,
       Verdict::Alarm,
       1,
       2},
  };
  for (const auto& c : cases) {
    auto ev = evaluate(c.rule, c.series, c.now);
    EXPECT_EQ(ev.verdict, c.want) << c.what << ": " << ev.summary;
    EXPECT_EQ(ev.breaching, c.breaching) << c.what;
    EXPECT_EQ(ev.missing, c.missing) << c.what;
    EXPECT_EQ(ev.periods.size(), static_cast<size_t>(c.rule.evaluation_periods)) << c.what;
  }
}

TEST(AlarmEvaluate, StatisticsOverCounts) {
  const int64_t t = 500;
  std::vector<Datapoint> s = {second(t - 4, 10, 2), second(t - 3, 10, 8), second(t - 2, 10, 0),
                              second(t - 1, 10, 0)};
  Rule r = rule_5xx(4, 1, 1, 0);
  r.statistic = Statistic::Sum;
  EXPECT_DOUBLE_EQ(*evaluate(r, s, t).periods[0].value, 10.0);
  r.statistic = Statistic::Avg;  // per second over the whole period
  EXPECT_DOUBLE_EQ(*evaluate(r, s, t).periods[0].value, 2.5);
  r.statistic = Statistic::Max;
  EXPECT_DOUBLE_EQ(*evaluate(r, s, t).periods[0].value, 8.0);
}

TEST(AlarmEvaluate, ErrorRateIsWeightedByRequests) {
  const int64_t t = 500;
  // Second 1: 1 of 1 failed (100%); second 2: 0 of 99 (0%). The period's rate is 1%, not the
  // 50% an average of per-second rates would give.
  std::vector<Datapoint> s = {second(t - 2, 0, 1), second(t - 1, 99, 0)};
  Rule r = rule_5xx(2, 1, 1, 5);
  r.metric = Metric::ErrorRate;
  r.statistic = Statistic::Avg;
  auto ev = evaluate(r, s, t);
  EXPECT_DOUBLE_EQ(*ev.periods[0].value, 1.0);
  EXPECT_EQ(ev.verdict, Verdict::Ok);
  r.statistic = Statistic::Max;  // the worst second
  ev = evaluate(r, s, t);
  EXPECT_DOUBLE_EQ(*ev.periods[0].value, 100.0);
  EXPECT_EQ(ev.verdict, Verdict::Alarm);
}

TEST(AlarmEvaluate, ErrorRateWithoutRequestsIsMissing) {
  Rule r = rule_5xx(5, 1, 1, 5);
  r.metric = Metric::ErrorRate;
  auto ev = evaluate(r, {}, 100);
  EXPECT_EQ(ev.verdict, Verdict::InsufficientData);
  EXPECT_EQ(ev.missing, 1);
}

TEST(AlarmEvaluate, LatencyPercentileComesFromTheSummedHistogram) {
  const int64_t t = 500;
  // 90 fast requests (<= 1 ms) in one second, 10 slow ones (in (100, 500]) in the next.
  std::vector<Datapoint> s = {second(t - 2, 90, 0, 1), second(t - 1, 10, 0, 400)};
  Rule r = rule_5xx(2, 1, 1, 100);
  r.metric = Metric::LatencyP50;
  r.statistic = Statistic::Avg;
  auto ev = evaluate(r, s, t);
  ASSERT_TRUE(ev.periods[0].value);
  EXPECT_LE(*ev.periods[0].value, 1.0);  // the median request was fast
  EXPECT_EQ(ev.verdict, Verdict::Ok);
  r.metric = Metric::LatencyP99;
  ev = evaluate(r, s, t);
  ASSERT_TRUE(ev.periods[0].value);
  EXPECT_GT(*ev.periods[0].value, 100.0);
  EXPECT_LE(*ev.periods[0].value, 500.0);
  EXPECT_EQ(ev.verdict, Verdict::Alarm);
  r.statistic = Statistic::Max;  // the slow second's own p99
  ev = evaluate(r, s, t);
  EXPECT_GT(*ev.periods[0].value, 100.0);
}

TEST(AlarmEvaluate, LessThanComparisonsAlarmOnLowValues) {
  const int64_t t = 500;
  Rule r = rule_5xx(3, 1, 1, 50);
  r.metric = Metric::Http2xx;
  r.comparison = Comparison::Less;
  EXPECT_EQ(evaluate(r, std::vector{second(t - 1, 10, 0)}, t).verdict, Verdict::Alarm);
  r.comparison = Comparison::LessOrEqual;
  r.threshold = 10;
  EXPECT_EQ(evaluate(r, std::vector{second(t - 1, 10, 0)}, t).verdict, Verdict::Alarm);
  r.comparison = Comparison::GreaterOrEqual;
  EXPECT_EQ(evaluate(r, std::vector{second(t - 1, 10, 0)}, t).verdict, Verdict::Alarm);
  r.comparison = Comparison::Greater;
  EXPECT_EQ(evaluate(r, std::vector{second(t - 1, 10, 0)}, t).verdict, Verdict::Ok);
}

TEST(AlarmEvaluate, MismatchedLatencyBoundsKeepTheCounts) {
  const int64_t t = 500;
  Datapoint a = second(t - 2, 10, 5, 3);
  Datapoint b = second(t - 1, 10, 7, 3);
  b.latency.bounds_ms = {2, 4};
  b.latency.counts = {0, 17, 0};
  Rule r = rule_5xx(2, 1, 1, 11);
  auto ev = evaluate(r, std::vector{a, b}, t);
  EXPECT_EQ(ev.periods[0].requests, 32u);
  EXPECT_DOUBLE_EQ(*ev.periods[0].value, 12.0);
  EXPECT_EQ(ev.verdict, Verdict::Alarm);
}

TEST(AlarmEvaluate, SummaryNamesTheMetricTheValueAndTheVerdict) {
  const int64_t t = 1000;
  auto ev = evaluate(rule_5xx(10, 2, 2, 10, 20),
                     std::vector{second(t - 15, 100, 11), second(t - 5, 100, 14)}, t);
  EXPECT_EQ(ev.summary, "http_5xx sum 14 > 10: 2 of 2 periods of 10s breaching -> ALARM");
  ev = evaluate(rule_5xx(10, 2, 2, 10, 20), std::vector{second(t - 5, 100, 14)}, t);
  EXPECT_EQ(ev.summary,
            "http_5xx sum 14 > 10: 1 of 2 periods of 10s breaching, 1 with fewer than 20 "
            "requests -> INSUFFICIENT_DATA");
}

TEST(AlarmEvaluate, ValidateRejectsImpossibleRules) {
  EXPECT_TRUE(validate(rule_5xx(10, 2, 2, 1)).ok());
  EXPECT_FALSE(validate(rule_5xx(0, 1, 1, 1)).ok());
  EXPECT_FALSE(validate(rule_5xx(10, 0, 1, 1)).ok());
  EXPECT_FALSE(validate(rule_5xx(10, 2, 3, 1)).ok());
  EXPECT_FALSE(validate(rule_5xx(10, 2, 0, 1)).ok());
}

// Invariants over random series: the verdict agrees with the per-period results, the order of the
// datapoints does not matter, and every period is accounted for exactly once.
TEST(AlarmEvaluate, RandomSeriesInvariants) {
  std::mt19937_64 rng(42);
  for (int iter = 0; iter < 2000; ++iter) {
    Rule r = rule_5xx(1 + static_cast<int64_t>(rng() % 10), 1 + static_cast<int>(rng() % 5), 1,
                      static_cast<double>(rng() % 20), rng() % 30);
    r.datapoints_to_alarm = 1 + static_cast<int>(rng() % r.evaluation_periods);
    r.metric = static_cast<Metric>(rng() % 9);
    r.statistic = static_cast<Statistic>(rng() % 3);
    r.comparison = static_cast<Comparison>(rng() % 4);
    const int64_t now = 10'000;
    std::vector<Datapoint> s;
    for (int64_t sec = now - 60; sec <= now + 2; ++sec) {
      if (rng() % 3 == 0) continue;  // a second without traffic
      s.push_back(second(sec, rng() % 20, rng() % 5, 1 + static_cast<int64_t>(rng() % 700)));
    }
    auto ev = evaluate(r, s, now);
    int breaching = 0, missing = 0;
    for (const auto& p : ev.periods) {
      if (!p.value) ++missing;
      if (p.breaching) {
        ++breaching;
        EXPECT_TRUE(compare(r.comparison, *p.value, r.threshold));
      }
      if (p.requests < r.min_requests) {
        EXPECT_FALSE(p.value);
      }
    }
    EXPECT_EQ(breaching, ev.breaching);
    EXPECT_EQ(missing, ev.missing);
    if (breaching >= r.datapoints_to_alarm) {
      EXPECT_EQ(ev.verdict, Verdict::Alarm);
    } else if (missing == 0) {
      EXPECT_EQ(ev.verdict, Verdict::Ok);
    } else {
      EXPECT_EQ(ev.verdict, Verdict::InsufficientData);
    }
    std::shuffle(s.begin(), s.end(), rng);
    auto again = evaluate(r, s, now);
    EXPECT_EQ(again.verdict, ev.verdict);
    EXPECT_EQ(again.breaching, ev.breaching);
  }
}

}  // namespace
}  // namespace cutover::alarm
