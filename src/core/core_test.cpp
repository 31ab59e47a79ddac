#include <gtest/gtest.h>

#include <filesystem>

#include "core/clock.hpp"
#include "core/duration.hpp"
#include "core/fs.hpp"
#include "core/id.hpp"
#include "core/result.hpp"

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
