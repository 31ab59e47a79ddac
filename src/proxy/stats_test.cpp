// Per-second stats: the SeriesRecorder on its own (deltas, removed targets, bounds, queries), the
// wire format, and GET /stats/series and /metrics through real sockets with a simulated clock
// that the test steps second by second (the proxy samples at each whole second of its clock).
// No assertion depends on timing: the test waits for a sample with a deadline, then checks
// exact counts.
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/clock.hpp"
#include "proxy/series.hpp"
#include "proxy/series_recorder.hpp"
#include "proxy/test_support.hpp"

namespace cutover::proxy {
namespace {

using namespace cutover::proxy::test_support;
using detail::kSeriesCapacity;
using detail::SeriesRecorder;
using detail::TargetStats;

// ---- SeriesRecorder ----

std::shared_ptr<TargetStats> counted(int ok, int server_errors, int upstream_errors = 0) {
  auto s = std::make_shared<TargetStats>();
  for (int i = 0; i < ok; ++i) s->record_status(200);
  for (int i = 0; i < server_errors; ++i) s->record_status(500);
  s->upstream_errors.fetch_add(static_cast<uint64_t>(upstream_errors));
  return s;
}

const core::Datapoint* at(const std::vector<core::Datapoint>& points, int64_t time) {
  for (const auto& p : points)
    if (p.time == time) return &p;
  return nullptr;
}

const TargetSeries* target(const GroupSeries& g, std::string_view id) {
  for (const auto& t : g.targets)
    if (t.id == id) return &t;
  return nullptr;
}

TEST(SeriesRecorder, RecordsWhatEachCounterGainedPerSecond) {
  SeriesRecorder r;
  auto a = counted(3, 1);
  auto b = counted(2, 0, 4);
  std::vector<SeriesRecorder::Live> live = {{"blue", "a", "127.0.0.1:1", a},
                                            {"blue", "b", "127.0.0.1:2", b}};
  r.sample(100, {"blue", "empty"}, live);
  a->record_status(404);
  a->record_latency(std::chrono::milliseconds(7));
  r.sample(101, {"blue", "empty"}, live);
  r.sample(102, {"blue", "empty"}, live);

  auto s = r.query({}, 9, {"blue", "empty"});
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->version, 9u);
  EXPECT_EQ(s->last, 102);
  EXPECT_EQ(s->capacity, kSeriesCapacity);
  const auto* blue = s->find_group("blue");
  ASSERT_NE(blue, nullptr);
  ASSERT_EQ(blue->datapoints.size(), 3u);
  EXPECT_EQ(blue->datapoints[0].time, 100);
  EXPECT_EQ(blue->datapoints[0].requests_2xx, 5u);
  EXPECT_EQ(blue->datapoints[0].requests_5xx, 1u);
  EXPECT_EQ(blue->datapoints[0].upstream_errors, 4u);
  EXPECT_EQ(blue->datapoints[1].requests_2xx, 0u);
  EXPECT_EQ(blue->datapoints[1].requests_4xx, 1u);
  EXPECT_EQ(blue->datapoints[1].latency.count, 1u);
  EXPECT_EQ(blue->datapoints[1].latency.sum_ms, 7u);
  EXPECT_EQ(blue->datapoints[2].requests(), 0u) << "a second without traffic is a zero datapoint";
  ASSERT_EQ(blue->targets.size(), 2u);
  EXPECT_EQ(blue->targets[0].id, "a");
  EXPECT_EQ(blue->targets[0].address, "127.0.0.1:1");
  EXPECT_EQ(blue->targets[0].datapoints[0].requests_2xx, 3u);
  EXPECT_EQ(blue->targets[1].datapoints[0].upstream_errors, 4u);
  const auto* empty = s->find_group("empty");
  ASSERT_NE(empty, nullptr) << "a group without targets has zero datapoints";
  EXPECT_EQ(empty->datapoints.size(), 3u);
  EXPECT_TRUE(empty->targets.empty());
}

TEST(SeriesRecorder, ARemovedTargetCountsUntilItsLastReferenceGoesThenStops) {
  SeriesRecorder r;
  auto a = counted(1, 0);
  auto b = counted(0, 0);
  r.sample(10, {"blue"}, {{"blue", "a", "x:1", a}, {"blue", "b", "x:2", b}});
  // b leaves the snapshot; a request in flight on it (a worker's reference) still completes.
  std::shared_ptr<TargetStats> in_flight = b;
  b->record_status(200);
  r.sample(11, {"blue"}, {{"blue", "a", "x:1", a}});
  b->record_status(503);
  in_flight.reset();
  b.reset();
  r.sample(12, {"blue"}, {{"blue", "a", "x:1", a}});  // the last read
  r.sample(13, {"blue"}, {{"blue", "a", "x:1", a}});

  auto s = r.query({}, 1, {"blue"});
  ASSERT_TRUE(s.ok());
  const auto& blue = *s->find_group("blue");
  ASSERT_EQ(blue.datapoints.size(), 4u);
  EXPECT_EQ(at(blue.datapoints, 11)->requests_2xx, 1u);
  EXPECT_EQ(at(blue.datapoints, 12)->requests_5xx, 1u) << "counted after leaving the snapshot";
  const auto* gone = target(blue, "b");
  ASSERT_NE(gone, nullptr);
  EXPECT_EQ(gone->datapoints.size(), 3u) << "10, 11, 12; nothing once nobody can count";
  EXPECT_EQ(gone->datapoints.back().time, 12);
}

TEST(SeriesRecorder, ATargetAddedAndRemovedBetweenTwoSamplesIsCounted) {
  SeriesRecorder r;
  r.sample(1, {"g"}, {});
  auto brief = counted(3, 1);
  r.retire({"g", "brief", "x:9", brief});
  brief.reset();
  r.sample(2, {"g"}, {});
  r.sample(3, {"g"}, {});
  auto s = r.query({}, 1, {"g"});
  ASSERT_TRUE(s.ok());
  const auto& g = *s->find_group("g");
  EXPECT_EQ(at(g.datapoints, 2)->requests(), 4u);
  ASSERT_NE(target(g, "brief"), nullptr);
  EXPECT_EQ(target(g, "brief")->datapoints.size(), 1u);
  EXPECT_EQ(target(g, "brief")->address, "x:9");
}

TEST(SeriesRecorder, ATargetBackInItsGroupStartsFromZeroNeverBelow) {
  SeriesRecorder r;
  auto first = counted(50, 0);
  r.sample(1, {"g"}, {{"g", "t", "x:1", first}});
  first.reset();  // removed; comes back as a new object with fewer counts
  auto second = counted(2, 0);
  r.sample(2, {"g"}, {{"g", "t", "x:1", second}});
  auto s = r.query({}, 1, {"g"});
  ASSERT_TRUE(s.ok());
  const auto& g = *s->find_group("g");
  EXPECT_EQ(at(g.datapoints, 1)->requests_2xx, 50u);
  EXPECT_EQ(at(g.datapoints, 2)->requests_2xx, 2u);
  EXPECT_EQ(r.group_totals().at("g").by_class[0], 52u) << "group totals never go back";
}

TEST(SeriesRecorder, KeepsAtMostCapacityDatapointsAndForgetsStaleSeries) {
  SeriesRecorder r;
  auto a = counted(0, 0);
  for (int64_t t = 1; t <= kSeriesCapacity + 50; ++t) {
    a->record_status(200);
    r.sample(t, {"g"}, {{"g", "a", "x:1", a}});
  }
  auto s = r.query({}, 1, {"g"});
  ASSERT_TRUE(s.ok());
  const auto& g = *s->find_group("g");
  ASSERT_EQ(g.datapoints.size(), static_cast<size_t>(kSeriesCapacity));
  EXPECT_EQ(g.datapoints.front().time, 51);
  EXPECT_EQ(g.datapoints.back().time, kSeriesCapacity + 50);
  EXPECT_EQ(g.targets.at(0).datapoints.size(), static_cast<size_t>(kSeriesCapacity));

  // The group leaves the snapshot: listed while it has datapoints younger than the capacity.
  const int64_t end = kSeriesCapacity + 50;
  a.reset();
  r.sample(end + 1, {}, {});
  EXPECT_TRUE(r.query({}, 1, {})->find_group("g") != nullptr);
  r.sample(end + kSeriesCapacity, {}, {});
  EXPECT_TRUE(r.query({}, 1, {})->find_group("g") != nullptr);
  r.sample(end + kSeriesCapacity + 1, {}, {});
  EXPECT_EQ(r.query({}, 1, {})->find_group("g"), nullptr);
  EXPECT_TRUE(r.group_totals().empty());
}

TEST(SeriesRecorder, QueryFiltersBySinceAndGroup) {
  SeriesRecorder r;
  auto a = counted(0, 0);
  auto b = counted(0, 0);
  for (int64_t t = 1; t <= 5; ++t)
    r.sample(t, {"blue", "green"}, {{"blue", "a", "x:1", a}, {"green", "b", "x:2", b}});
  SeriesQuery q;
  q.since = 4;
  auto s = r.query(q, 1, {"blue", "green"});
  ASSERT_TRUE(s.ok());
  ASSERT_EQ(s->target_groups.size(), 2u);
  for (const auto& g : s->target_groups) {
    ASSERT_EQ(g.datapoints.size(), 2u);
    EXPECT_EQ(g.datapoints[0].time, 4);
    EXPECT_EQ(g.targets.at(0).datapoints.size(), 2u);
  }
  q.group = "green";
  s = r.query(q, 1, {"blue", "green"});
  ASSERT_TRUE(s.ok());
  ASSERT_EQ(s->target_groups.size(), 1u);
  EXPECT_EQ(s->target_groups[0].name, "green");
  q.since = 6;
  s = r.query(q, 1, {"blue", "green"});
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(s->target_groups.at(0).datapoints.empty());

  q.group = "new";  // in the snapshot, not sampled yet: listed, empty
  s = r.query(q, 1, {"blue", "green", "new"});
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(s->target_groups.at(0).datapoints.empty());
  q.group = "nope";
  s = r.query(q, 1, {"blue", "green"});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().kind, core::ErrorKind::NotFound);
  EXPECT_NE(s.error().message.find("no target group \"nope\""), std::string::npos);
  EXPECT_NE(s.error().message.find("blue, green"), std::string::npos) << s.error().message;
}

// ---- wire format ----

TEST(SeriesWire, QueryParsingNamesWhatIsWrong) {
  auto ok = parse_series_query("since=1700000000&group=web%2Dgreen");
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_EQ(ok->since, 1700000000);
  EXPECT_EQ(ok->group, "web-green");
  EXPECT_TRUE(parse_series_query("").ok());
  struct Case {
    const char* query;
    const char* error;
  } cases[] = {
      {"since=abc", "since: expected Unix seconds (a non-negative integer), got \"abc\""},
      {"since=-5", "since: expected Unix seconds"},
      {"since=", "since: expected Unix seconds"},
      {"since=12x", "since: expected Unix seconds"},
      {"since=99999999999999999999", "since: expected Unix seconds"},
      {"since=1&since=2", "since: given more than once"},
      {"group=", "group: expected a target group name"},
      {"group=a%zz", "group: bad percent-encoding at offset 1"},
      {"group=a&group=b", "group: given more than once"},
      {"limit=5", "unknown query parameter \"limit\" (expected since, group)"},
  };
  for (const auto& c : cases) {
    auto r = parse_series_query(c.query);
    ASSERT_FALSE(r.ok()) << c.query;
    EXPECT_NE(r.error().message.find(c.error), std::string::npos)
        << c.query << ": " << r.error().message;
  }
  SeriesQuery q;
  EXPECT_EQ(series_path(q), "/stats/series");
  q.since = 5;
  q.group = "a b/c";
  EXPECT_EQ(series_path(q), "/stats/series?since=5&group=a%20b%2Fc");
  auto back = parse_series_query(series_path(q).substr(std::string("/stats/series?").size()));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->group, "a b/c");
}

TEST(SeriesWire, RoundTripsThroughJson) {
  SeriesRecorder r;
  auto a = counted(4, 1, 2);
  a->record_latency(std::chrono::milliseconds(3));
  a->record_latency(std::chrono::milliseconds(20000));
  r.sample(7, {"g"}, {{"g", "a", "x:1", a}});
  auto s = r.query({}, 3, {"g"});
  ASSERT_TRUE(s.ok());
  auto text = to_json(*s);
  auto back = parse_stats_series(text);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->version, 3u);
  EXPECT_EQ(back->last, 7);
  EXPECT_EQ(back->latency_buckets_ms, s->latency_buckets_ms);
  const auto& d = back->find_group("g")->datapoints.at(0);
  const auto& orig = s->find_group("g")->datapoints.at(0);
  EXPECT_EQ(d.requests_2xx, 4u);
  EXPECT_EQ(d.requests_5xx, 1u);
  EXPECT_EQ(d.upstream_errors, 2u);
  EXPECT_EQ(d.latency.counts, orig.latency.counts);
  EXPECT_EQ(d.latency.bounds_ms, orig.latency.bounds_ms);
  EXPECT_EQ(d.latency.sum_ms, 20003u);
  EXPECT_EQ(d.p50_ms(), 5.0) << "rank 1 of 2: the top of the (2, 5] bucket";
  EXPECT_EQ(d.p99_ms(), 10000.0) << "in +Inf: the last finite bound";
  auto j = nlohmann::json::parse(text);
  EXPECT_EQ(j["resolution_s"], 1);
  EXPECT_EQ(j["target_groups"][0]["datapoints"][0]["latency_ms"]["p50"], 5.0);
  EXPECT_FALSE(parse_stats_series("{\"version\":1}").ok());
  EXPECT_FALSE(parse_stats_series("not json").ok());
}

// ---- through the proxy, with a simulated clock ----

class StatsSeriesTest : public ProxyTest {
 protected:
  void SetUp() override {
    ProxyTest::SetUp();
    options_.clock = &clock_;
  }
  // Health checked once (healthy_threshold 1) and then not for a minute: a target stopped after
  // that stays "healthy", so requests to it fail to connect, deterministically.
  static RouteSnapshot checked_once(RouteSnapshot s) {
    for (auto& g : s.target_groups) {
      g.health.interval_ms = 60'000;
      g.health.healthy_threshold = 1;
    }
    return s;
  }
  int64_t second() const { return core::to_unix_ms(clock_.wall()) / 1000; }
  // Moves the clock to the start of second `to` in one step and waits until the proxy has
  // sampled the second before (the sampler polls the clock at least every 100 ms).
  StatsSeries advance_to(int64_t to) {
    const int64_t ended = to - 1;
    clock_.advance(std::chrono::milliseconds(to * 1000 - core::to_unix_ms(clock_.wall())));
    StatsSeries s;
    EXPECT_TRUE(wait_until([&] {
      auto r = admin().stats_series();
      if (r.ok()) s = std::move(*r);
      return r.ok() && s.last == ended;
    })) << "no datapoint for second "
        << ended;
    return s;
  }
  StatsSeries next_second() { return advance_to(second() + 1); }

  core::SimulatedClock clock_;
};

TEST_F(StatsSeriesTest, CountsEveryRequestOnceInTheSecondItHappened) {
  Backend a("task-a");
  Backend dead("task-dead");
  // Every third request of task-a is answered 500 after 30 ms, the others 200 after 7 ms (of the
  // proxy's simulated clock).
  std::atomic<int> n{0};
  a.handler = [&](const Request&, Response& res) {
    if (++n % 3 == 0) {
      clock_.advance(std::chrono::milliseconds(30));
      res.result(http::status::internal_server_error);
    } else {
      clock_.advance(std::chrono::milliseconds(7));
    }
  };
  start_proxy();
  const int64_t t0 = second();
  put(checked_once(snapshot(1, {{"blue", {&a}, 7500}, {"red", {&dead}, 2500}})));
  ASSERT_TRUE(wait_state("task-a", "healthy"));
  ASSERT_TRUE(wait_state("task-dead", "healthy"));
  dead.stop();

  // Second t0: 40 requests, 30 to blue (10 of them 500), 10 to red (502, upstream errors).
  Client c(port());
  std::map<int, int> statuses;
  for (int i = 0; i < 40; ++i) statuses[c.get("/").result_int()]++;
  EXPECT_EQ(statuses[200], 20);
  EXPECT_EQ(statuses[500], 10);
  EXPECT_EQ(statuses[502], 10);
  ASSERT_EQ(second(), t0) << "the handlers moved the clock by 440 ms";
  auto s = next_second();

  const auto* blue = s.find_group("blue");
  const auto* red = s.find_group("red");
  ASSERT_NE(blue, nullptr);
  ASSERT_NE(red, nullptr);
  ASSERT_EQ(blue->datapoints.size(), 1u);
  const auto& b0 = blue->datapoints[0];
  EXPECT_EQ(b0.time, t0);
  EXPECT_EQ(b0.requests_2xx, 20u);
  EXPECT_EQ(b0.requests_3xx, 0u);
  EXPECT_EQ(b0.requests_4xx, 0u);
  EXPECT_EQ(b0.requests_5xx, 10u);
  EXPECT_EQ(b0.upstream_errors, 0u);
  EXPECT_EQ(b0.latency.count, 30u);
  EXPECT_EQ(b0.latency.sum_ms, 20u * 7 + 10u * 30);
  // 20 in (5, 10], 10 in (25, 50]: p50 = 5 + 5 * 15/20, p90 = 25 + 25 * 7/10, p99 = 25 + 25
  // * 9.7/10
  EXPECT_DOUBLE_EQ(b0.p50_ms().value(), 8.75);
  EXPECT_DOUBLE_EQ(b0.p90_ms().value(), 42.5);
  EXPECT_DOUBLE_EQ(b0.p99_ms().value(), 49.25);
  ASSERT_EQ(blue->targets.size(), 1u);
  EXPECT_EQ(blue->targets[0].id, "task-a");
  EXPECT_EQ(blue->targets[0].address, a.address());
  EXPECT_EQ(blue->targets[0].datapoints.at(0).requests_5xx, 10u);
  const auto& r0 = red->datapoints.at(0);
  EXPECT_EQ(r0.requests_5xx, 10u);
  EXPECT_EQ(r0.upstream_errors, 10u);
  EXPECT_EQ(r0.latency.count, 0u) << "no response header, no latency";
  EXPECT_FALSE(r0.p99_ms().has_value());

  // Second t0+1: 8 more (6 blue: 2 of them 500; 2 red). t0 keeps its counts.
  for (int i = 0; i < 8; ++i) c.get("/");
  s = next_second();
  blue = s.find_group("blue");
  red = s.find_group("red");
  ASSERT_EQ(blue->datapoints.size(), 2u);
  EXPECT_EQ(at(blue->datapoints, t0)->requests(), 30u);
  const auto* b1 = at(blue->datapoints, t0 + 1);
  ASSERT_NE(b1, nullptr);
  EXPECT_EQ(b1->requests_2xx, 4u);
  EXPECT_EQ(b1->requests_5xx, 2u);
  EXPECT_EQ(at(red->datapoints, t0 + 1)->upstream_errors, 2u);

  // The clock jumps 3 s: one datapoint (the last second) holds what the skipped ones got.
  c.get("/");
  s = advance_to(t0 + 5);
  blue = s.find_group("blue");
  red = s.find_group("red");
  EXPECT_EQ(at(blue->datapoints, t0 + 2), nullptr);
  EXPECT_EQ(at(blue->datapoints, t0 + 3), nullptr);
  ASSERT_NE(at(blue->datapoints, t0 + 4), nullptr);
  EXPECT_EQ(at(blue->datapoints, t0 + 4)->requests() + at(red->datapoints, t0 + 4)->requests(), 1u);

  // The sums of the datapoints are the cumulative counters of GET /stats.
  auto stats = nlohmann::json::parse(admin().get("/stats").value());
  for (const auto& g : stats["target_groups"]) {
    const auto* gs = s.find_group(g["name"].get<std::string>());
    ASSERT_NE(gs, nullptr);
    core::Datapoint sum;
    for (const auto& d : gs->datapoints) ASSERT_TRUE(sum.add(d).ok());
    const auto& t = g["targets"][0];
    EXPECT_EQ(sum.requests_2xx, t["requests"]["2xx"].get<uint64_t>());
    EXPECT_EQ(sum.requests_5xx, t["requests"]["5xx"].get<uint64_t>());
    EXPECT_EQ(sum.upstream_errors, t["upstream_errors"].get<uint64_t>());
    EXPECT_EQ(sum.latency.count, t["latency_ms"]["count"].get<uint64_t>());
  }
  EXPECT_EQ(statuses[200] + statuses[500] + statuses[502], 40);
}

TEST_F(StatsSeriesTest, QueryFiltersAndBadQueries) {
  Backend a("task-a");
  Backend b("task-b");
  start_proxy();
  put(checked_once(snapshot(1, {{"blue", {&a}, 5000}, {"green", {&b}, 5000}})));
  ASSERT_TRUE(wait_state("task-a", "healthy"));
  ASSERT_TRUE(wait_state("task-b", "healthy"));
  const int64_t t0 = second();
  Client c(port());
  for (int i = 0; i < 4; ++i) ASSERT_EQ(c.get("/").result_int(), 200);
  next_second();
  for (int i = 0; i < 2; ++i) ASSERT_EQ(c.get("/").result_int(), 200);
  next_second();

  SeriesQuery q;
  q.since = t0 + 1;
  auto s = admin().stats_series(q);
  ASSERT_TRUE(s.ok()) << s.error().message;
  ASSERT_EQ(s->target_groups.size(), 2u);
  for (const auto& g : s->target_groups) {
    ASSERT_EQ(g.datapoints.size(), 1u) << g.name;
    EXPECT_EQ(g.datapoints[0].time, t0 + 1);
    EXPECT_EQ(g.datapoints[0].requests_2xx, 1u) << g.name;
  }
  q.since.reset();
  q.group = "green";
  s = admin().stats_series(q);
  ASSERT_TRUE(s.ok()) << s.error().message;
  ASSERT_EQ(s->target_groups.size(), 1u);
  EXPECT_EQ(s->target_groups[0].name, "green");
  EXPECT_EQ(s->target_groups[0].datapoints.size(), 2u);
  EXPECT_EQ(s->target_groups[0].targets.at(0).id, "task-b");

  q.group = "nope";
  auto missing = admin().stats_series(q);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().kind, core::ErrorKind::NotFound);
  EXPECT_NE(missing.error().message.find("404"), std::string::npos) << missing.error().message;

  auto not_utf8 = admin().get("/stats/series?group=%FF%FE");
  ASSERT_FALSE(not_utf8.ok());
  EXPECT_NE(not_utf8.error().message.find("404"), std::string::npos) << not_utf8.error().message;
  for (const char* bad :
       {"/stats/series?since=yesterday", "/stats/series?since=-1",
        "/stats/series?group=", "/stats/series?bogus=1", "/stats/series?group=%G1"}) {
    auto r = admin().get(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.error().message.find("400: GET /stats/series: "), std::string::npos)
        << bad << ": " << r.error().message;
  }
  auto raw = admin().get("/stats/series?since=" + std::to_string(t0));
  ASSERT_TRUE(raw.ok());
  auto j = nlohmann::json::parse(*raw);
  EXPECT_EQ(j["version"], 1);
  EXPECT_EQ(j["capacity"], kSeriesCapacity);
  EXPECT_EQ(j["latency_buckets_ms"].size() + 1,
            j["target_groups"][0]["datapoints"][0]["latency_ms"]["buckets"].size());
}

TEST_F(StatsSeriesTest, ATargetThatLeavesItsGroupStillCountsInIt) {
  Backend a("task-a");
  Backend b("task-b");
  start_proxy();
  put(checked_once(snapshot(1, {{"blue", {&a, &b}}})));
  ASSERT_TRUE(wait_state("task-a", "healthy"));
  ASSERT_TRUE(wait_state("task-b", "healthy"));
  const int64_t t0 = second();
  Client c(port());
  for (int i = 0; i < 10; ++i) ASSERT_EQ(c.get("/").result_int(), 200);
  put(checked_once(snapshot(2, {{"blue", {&a}}})));  // b leaves within the same second
  for (int i = 0; i < 3; ++i) ASSERT_EQ(c.get("/").body(), "task-a");
  auto s = next_second();
  const auto* blue = s.find_group("blue");
  ASSERT_NE(blue, nullptr);
  EXPECT_EQ(at(blue->datapoints, t0)->requests_2xx, 13u);
  const auto* gone = target(*blue, "task-b");
  ASSERT_NE(gone, nullptr);
  EXPECT_EQ(at(gone->datapoints, t0)->requests_2xx, static_cast<uint64_t>(b.requests.load()));
  EXPECT_EQ(at(target(*blue, "task-a")->datapoints, t0)->requests_2xx,
            static_cast<uint64_t>(a.requests.load()));
  // Nobody holds task-b's counters any more: its series stops (its datapoints stay).
  int64_t last_b = 0;
  for (int i = 0; i < 5; ++i) {
    s = next_second();
    last_b = target(*s.find_group("blue"), "task-b")->datapoints.back().time;
    if (last_b < *s.last) break;
  }
  EXPECT_LT(last_b, *s.last);
}

// ---- Prometheus ----

struct Sample {
  std::string name;
  std::string labels;
  double value = 0;
};

std::vector<Sample> samples(const std::string& text) {
  std::vector<Sample> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    Sample s;
    auto brace = line.find('{');
    auto space = line.rfind(' ');
    if (brace != std::string::npos && brace < space) {
      s.name = line.substr(0, brace);
      s.labels = line.substr(brace + 1, line.rfind('}') - brace - 1);
    } else {
      s.name = line.substr(0, space);
    }
    s.value = std::stod(line.substr(space + 1));
    out.push_back(s);
  }
  return out;
}

// Labels without `le`, for grouping the buckets of one histogram.
std::string without_le(const std::string& labels) {
  auto at = labels.find(",le=\"");
  return at == std::string::npos ? labels : labels.substr(0, at);
}

TEST_F(StatsSeriesTest, PrometheusHistogramsAreCumulativeAndEndWithInfEqualToCount) {
  Backend a("task-a");
  Backend dead("task-dead");
  std::atomic<int> n{0};
  a.handler = [&](const Request&, Response& res) {
    const int i = ++n;
    clock_.advance(std::chrono::milliseconds(i % 2 ? 3 : 300));
    if (i % 4 == 0) res.result(http::status::not_found);
  };
  start_proxy();
  put(checked_once(snapshot(1, {{"blue", {&a}, 7500}, {"red", {&dead}, 2500}})));
  ASSERT_TRUE(wait_state("task-a", "healthy"));
  ASSERT_TRUE(wait_state("task-dead", "healthy"));
  dead.stop();
  Client c(port());
  for (int i = 0; i < 8; ++i) c.get("/");  // 6 blue (3 fast, 3 slow, 1 404), 2 red
  next_second();

  auto text = admin().get("/metrics");
  ASSERT_TRUE(text.ok()) << text.error().message;
  for (const char* family :
       {"cutover_proxy_requests_total counter", "cutover_proxy_upstream_errors_total counter",
        "cutover_proxy_target_latency_ms histogram",
        "cutover_proxy_target_group_requests_total counter",
        "cutover_proxy_target_group_upstream_errors_total counter",
        "cutover_proxy_target_group_latency_ms histogram"}) {
    std::string name(family, std::string_view(family).find(' '));
    EXPECT_NE(text->find("# TYPE " + std::string(family) + "\n"), std::string::npos) << family;
    EXPECT_NE(text->find("# HELP " + name + " "), std::string::npos) << family;
  }
  auto all = samples(*text);
  std::map<std::string, double> value;
  for (const auto& s : all) value[s.name + "{" + s.labels + "}"] = s.value;
  EXPECT_EQ(value["cutover_proxy_requests_total{target_group=\"blue\",target=\"task-a\",code="
                  "\"4xx\"}"],
            1);
  EXPECT_EQ(value["cutover_proxy_target_group_requests_total{target_group=\"blue\",code=\"2xx\"}"],
            5);
  EXPECT_EQ(value["cutover_proxy_target_group_requests_total{target_group=\"red\",code=\"5xx\"}"],
            2);
  EXPECT_EQ(value["cutover_proxy_target_group_upstream_errors_total{target_group=\"red\"}"], 2);
  EXPECT_EQ(value["cutover_proxy_upstream_errors_total{target_group=\"red\",target=\"task-"
                  "dead\"}"],
            2);

  int histograms = 0;
  for (const std::string base :
       {"cutover_proxy_target_latency_ms", "cutover_proxy_target_group_latency_ms"}) {
    std::map<std::string, std::vector<std::pair<std::string, double>>> buckets;
    for (const auto& s : all)
      if (s.name == base + "_bucket") {
        auto le = s.labels.substr(s.labels.find("le=\"") + 4);
        buckets[without_le(s.labels)].push_back({le.substr(0, le.size() - 1), s.value});
      }
    for (const auto& [labels, bs] : buckets) {
      ++histograms;
      ASSERT_EQ(bs.size(), 14u) << labels;
      for (size_t i = 1; i < bs.size(); ++i) {
        EXPECT_LE(bs[i - 1].second, bs[i].second) << base << "{" << labels << "} is cumulative";
        if (i < bs.size() - 1) EXPECT_LT(std::stod(bs[i - 1].first), std::stod(bs[i].first));
      }
      EXPECT_EQ(bs.back().first, "+Inf");
      EXPECT_EQ(bs.back().second, value[base + "_count{" + labels + "}"]) << base << labels;
      EXPECT_TRUE(value.count(base + "_sum{" + labels + "}")) << base << labels;
    }
    const std::string blue = base == "cutover_proxy_target_latency_ms"
                                 ? "target_group=\"blue\",target=\"task-a\""
                                 : "target_group=\"blue\"";
    ASSERT_TRUE(buckets.count(blue)) << base;
    const auto& bs = buckets[blue];
    EXPECT_EQ(bs[2].first, "5");
    EXPECT_EQ(bs[2].second, 3) << "3 ms: le=5";
    EXPECT_EQ(bs[8].first, "500");
    EXPECT_EQ(bs[8].second, 6) << "300 ms: le=500";
    EXPECT_EQ(value[base + "_sum{" + blue + "}"], 3 * 3 + 3 * 300);
  }
  EXPECT_EQ(histograms, 4) << "blue and red, per target and per group";
}

}  // namespace
}  // namespace cutover::proxy
