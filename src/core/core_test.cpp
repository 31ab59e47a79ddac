#include <gtest/gtest.h>

#include <filesystem>

#include "core/clock.hpp"
#include "core/duration.hpp"
#include "core/fs.hpp"
#include "core/id.hpp"
#include "core/result.hpp"
#include "core/stats.hpp"
#include "core/url.hpp"

using namespace cutover::core;
using namespace std::chrono_literals;

TEST(Duration, ParsesUnitsAndCombinations) {
  struct Case {
    const char* text;
    int64_t ms;
  } cases[] = {{"250ms", 250},    {"10s", 10'000}, {"5m", 300'000},         {"1h", 3'600'000},
               {"1m30s", 90'000}, {"0s", 0},       {"1h1m1s1ms", 3'661'001}};
  for (const auto& c : cases) {
    auto r = parse_duration(c.text);
    ASSERT_TRUE(r.ok()) << c.text << ": " << r.error().message;
    EXPECT_EQ(r->count(), c.ms) << c.text;
  }
}

TEST(Duration, RejectsBadInput) {
  for (const char* text : {"", "10", "s", "-5s", "10 s", "5d", "1.5s", "99999999999999h", "m5"}) {
    auto r = parse_duration(text);
    EXPECT_FALSE(r.ok()) << text;
    if (!r.ok()) {
      EXPECT_NE(r.error().message.find("invalid duration"), std::string::npos);
    }
  }
}

TEST(Duration, FormatsRoundTrip) {
  for (int64_t ms : {0LL, 250LL, 1000LL, 90'000LL, 3'661'001LL}) {
    auto text = format_duration(Duration{ms});
    auto back = parse_duration(text);
    ASSERT_TRUE(back.ok()) << text;
    EXPECT_EQ(back->count(), ms);
  }
}

TEST(SimulatedClock, AdvancesOnlyWhenTold) {
  SimulatedClock clock;
  auto t0 = clock.now();
  auto w0 = clock.wall();
  EXPECT_EQ(clock.now(), t0);
  clock.advance(1500ms);
  EXPECT_EQ(clock.now() - t0, 1500ms);
  EXPECT_EQ(clock.wall() - w0, 1500ms);
}

TEST(Clock, FormatsRfc3339) {
  EXPECT_EQ(format_rfc3339(from_unix_ms(1'700'000'000'123)), "2023-11-14T22:13:20.123Z");
}

TEST(Result, CarriesValueOrError) {
  Result<int> a = 5;
  Result<int> b = Error("nope");
  EXPECT_TRUE(a.ok());
  EXPECT_EQ(*a, 5);
  EXPECT_FALSE(b.ok());
  EXPECT_EQ(b.error().wrap("ctx").message, "ctx: nope");
  Result<void> c = ok();
  EXPECT_TRUE(c.ok());
}

TEST(Id, IsPrefixedAndUnique) {
  auto a = new_id("ex");
  auto b = new_id("ex");
  EXPECT_EQ(a.rfind("ex-", 0), 0u);
  EXPECT_EQ(a.size(), 13u);
  EXPECT_NE(a, b);
}

TEST(Fs, AtomicWriteReplacesContent) {
  auto dir = std::filesystem::temp_directory_path() / ("cutover-fs-" + random_hex(4));
  ASSERT_TRUE(ensure_dir(dir).ok());
  auto p = dir / "f";
  ASSERT_TRUE(write_file_atomic(p, "one", 0600).ok());
  ASSERT_TRUE(write_file_atomic(p, "two", 0600).ok());
  auto r = read_file(p);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, "two");
  EXPECT_EQ(std::filesystem::status(p).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  EXPECT_FALSE(read_file(dir / "missing").ok());
  std::filesystem::remove_all(dir);
}

TEST(LatencyHistogram, QuantilesInterpolateInsideTheBucket) {
  LatencyHistogram h{{10, 20, 40}, {0, 0, 0, 0}, 0, 0};
  EXPECT_FALSE(h.quantile(0.5).has_value()) << "no values";
  h.counts = {10, 0, 10, 0};  // 10 in (0, 10], 10 in (20, 40]
  h.count = 20;
  EXPECT_DOUBLE_EQ(h.quantile(0.25).value(), 5.0);   // rank 5 of the first 10
  EXPECT_DOUBLE_EQ(h.quantile(0.5).value(), 10.0);   // rank 10: the top of the first bucket
  EXPECT_DOUBLE_EQ(h.quantile(0.75).value(), 30.0);  // rank 15: half way through (20, 40]
  EXPECT_DOUBLE_EQ(h.quantile(1.0).value(), 40.0);
  EXPECT_FALSE(h.quantile(0).has_value());
  EXPECT_FALSE(h.quantile(1.5).has_value());
  h.counts = {0, 0, 0, 3};  // only above the last bound
  h.count = 3;
  EXPECT_DOUBLE_EQ(h.quantile(0.5).value(), 40.0) << "+Inf answers the last finite bound";
}

TEST(LatencyHistogram, DatapointsAddUpOnlyWithTheSameBuckets) {
  Datapoint a;
  a.requests_2xx = 3;
  a.latency = LatencyHistogram{{10, 20}, {1, 1, 0}, 25, 2};
  Datapoint b;
  b.requests_5xx = 1;
  b.upstream_errors = 1;
  b.latency = LatencyHistogram{{10, 20}, {0, 0, 2}, 90, 2};
  Datapoint sum;
  ASSERT_TRUE(sum.add(a).ok());
  ASSERT_TRUE(sum.add(b).ok());
  EXPECT_EQ(sum.requests(), 4u);
  EXPECT_EQ(sum.upstream_errors, 1u);
  EXPECT_EQ(sum.latency.counts, (std::vector<uint64_t>{1, 1, 2}));
  EXPECT_EQ(sum.latency.count, 4u);
  EXPECT_EQ(sum.latency.sum_ms, 115u);
  EXPECT_DOUBLE_EQ(sum.p50_ms().value(), 20.0);
  Datapoint other;
  other.latency = LatencyHistogram{{5}, {1, 0}, 1, 1};
  auto r = sum.add(other);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("different buckets"), std::string::npos);
  EXPECT_EQ(sum.requests(), 4u) << "unchanged on error";
}

TEST(HttpUrl, ParsesHostPortTargetAndScheme) {
  auto a = cutover::core::parse_http_url("http://127.0.0.1:8080/hook?x=1");
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_FALSE(a->tls);
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 8080);
  EXPECT_EQ(a->target, "/hook?x=1");
  auto b = cutover::core::parse_http_url("https://hooks.example.com");
  ASSERT_TRUE(b.ok());
  EXPECT_TRUE(b->tls);
  EXPECT_EQ(b->port, 443);
  EXPECT_EQ(b->target, "/");
  auto c = cutover::core::parse_http_url("http://[::1]:9/x");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->host, "::1");
  EXPECT_EQ(c->port, 9);
}

TEST(HttpUrl, RejectsWhatCannotBeSentWithAReason) {
  for (const char* bad : {"ftp://x/", "x", "http://", "http://:80/", "http://h:0/",
                          "http://h:65536/", "http://h:/", "http://u:p@h/", "http://h/a b",
                          "http://h/#f", "http://[::1/", "http://h%2f/", "https://h:8x/"}) {
    auto r = cutover::core::parse_http_url(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_FALSE(r.error().message.empty()) << bad;
    }
  }
}
