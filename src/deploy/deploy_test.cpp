#include "deploy/deploy.hpp"

#include <gtest/gtest.h>

#include <random>

using namespace cutover::deploy;
using cutover::core::TimePoint;
using namespace std::chrono_literals;

namespace {

Deployment fresh(bool has_blue) {
  Deployment d;
  d.id = "dep-1";
  d.service = "web";
  d.release_id = "rel-2";
  if (has_blue) d.previous_release_id = "rel-1";
  d.green = Color::Green;
  d.install_timeout = 60s;
  d.stop_timeout = 10s;
  return d;
}

std::vector<CommandKind> kinds(const Decision& dec) {
  std::vector<CommandKind> out;
  for (const auto& c : dec.commands) out.push_back(c.kind);
  return out;
}

const TimePoint t0 = TimePoint{} + 1000s;

}  // namespace

TEST(Decide, HappyPathWithBlue) {
  auto d = fresh(true);
  auto s = decide(d, {EventKind::Start, ""}, t0);
  EXPECT_EQ(s.next.phase, Phase::Install);
  EXPECT_EQ(kinds(s), (std::vector{CommandKind::StartTaskSet, CommandKind::ArmTimer}));
  EXPECT_EQ(s.commands[0].color, Color::Green);

  s = decide(s.next, {EventKind::TaskSetStarted, ""}, t0 + 1s);
  EXPECT_EQ(kinds(s), (std::vector{CommandKind::WatchHealth}));

  s = decide(s.next, {EventKind::TargetsHealthy, ""}, t0 + 3s);
  EXPECT_EQ(s.next.phase, Phase::AllowTraffic);
  EXPECT_EQ(kinds(s), (std::vector{CommandKind::RouteAllTo, CommandKind::ArmTimer}));
  EXPECT_EQ(s.commands[0].color, Color::Green);

  s = decide(s.next, {EventKind::WeightsApplied, ""}, t0 + 3s);
  EXPECT_EQ(s.next.phase, Phase::TerminationWait);
  ASSERT_EQ(kinds(s), (std::vector{CommandKind::StopTaskSet, CommandKind::ArmTimer}));
  EXPECT_EQ(s.commands[0].color, Color::Blue);

  s = decide(s.next, {EventKind::TaskSetStopped, ""}, t0 + 4s);
  EXPECT_EQ(s.next.phase, Phase::Succeeded);
  EXPECT_EQ(kinds(s), (std::vector{CommandKind::Finish}));
}

TEST(Decide, FirstDeploySkipsTermination) {
  auto s = decide(fresh(false), {EventKind::Start, ""}, t0);
  s = decide(s.next, {EventKind::TaskSetStarted, ""}, t0);
  s = decide(s.next, {EventKind::TargetsHealthy, ""}, t0);
  s = decide(s.next, {EventKind::WeightsApplied, ""}, t0);
  EXPECT_EQ(s.next.phase, Phase::Succeeded);
}

TEST(Decide, NeverHealthyRollsBackWithoutRouting) {
  auto s = decide(fresh(true), {EventKind::Start, ""}, t0);
  s = decide(s.next, {EventKind::TaskSetStarted, ""}, t0);
  // A timer that fires early (before the deadline) changes nothing.
  auto early = decide(s.next, {EventKind::Timer, ""}, t0 + 59s);
  EXPECT_EQ(early.next.phase, Phase::Install);
  EXPECT_TRUE(early.commands.empty());
  s = decide(s.next, {EventKind::Timer, ""}, t0 + 60s);
  EXPECT_EQ(s.next.phase, Phase::RollingBack);
  EXPECT_EQ(kinds(s), (std::vector{CommandKind::StopTaskSet, CommandKind::ArmTimer}));
  EXPECT_EQ(s.commands[0].color, Color::Green);
  EXPECT_NE(s.next.reason.find("health"), std::string::npos);
  s = decide(s.next, {EventKind::TaskSetStopped, ""}, t0 + 61s);
  EXPECT_EQ(s.next.phase, Phase::Failed);
}

TEST(Decide, StartFailureFailsAtOnce) {
  auto s = decide(fresh(true), {EventKind::Start, ""}, t0);
  s = decide(s.next, {EventKind::TaskSetFailed, "exec: no such file"}, t0);
  EXPECT_EQ(s.next.phase, Phase::Failed);
  EXPECT_NE(s.next.reason.find("no such file"), std::string::npos);
  EXPECT_EQ(kinds(s), (std::vector{CommandKind::Finish}));
}

TEST(Decide, ProxyRefusalRollsBack) {
  auto s = decide(fresh(true), {EventKind::Start, ""}, t0);
  s = decide(s.next, {EventKind::TaskSetStarted, ""}, t0);
  s = decide(s.next, {EventKind::TargetsHealthy, ""}, t0);
  s = decide(s.next, {EventKind::WeightsFailed, "bind: address in use"}, t0);
  EXPECT_EQ(s.next.phase, Phase::RollingBack);
}

TEST(Decide, PhaseNamesRoundTrip) {
  for (Phase p : {Phase::Pending, Phase::Install, Phase::AllowTraffic, Phase::TerminationWait,
                  Phase::RollingBack, Phase::Succeeded, Phase::Failed}) {
    auto back = parse_phase(to_string(p));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, p);
  }
  EXPECT_FALSE(parse_phase("Nope").ok());
}

// Randomized event sequences in simulated time, checking DESIGN.md §3 invariants after every
// event: traffic moves to green only after green was healthy (1), every non-terminal phase after
// Start has a deadline and the deployment ends once time passes its deadlines (4).
TEST(Decide, RandomizedSequencesKeepInvariants) {
  std::mt19937 rng(12345);
  const EventKind kEvents[] = {EventKind::TaskSetStarted, EventKind::TaskSetFailed,
                               EventKind::TargetsHealthy, EventKind::WeightsApplied,
                               EventKind::WeightsFailed,  EventKind::TaskSetStopped,
                               EventKind::Timer};
  int succeeded = 0;
  int failed = 0;
  for (int run = 0; run < 10000; ++run) {
    auto d = fresh(rng() % 2 == 0);
    TimePoint now = t0;
    auto s = decide(d, {EventKind::Start, ""}, now);
    d = s.next;
    int steps = 0;
    while (!is_terminal(d.phase)) {
      ASSERT_TRUE(d.deadline.has_value()) << "phase " << to_string(d.phase) << " has no deadline";
      now += std::chrono::milliseconds(rng() % 20'000);
      EventKind k = kEvents[rng() % std::size(kEvents)];
      auto dec = decide(d, {k, "fault"}, now);
      for (const auto& c : dec.commands) {
        if (c.kind == CommandKind::RouteAllTo) {
          ASSERT_TRUE(dec.next.green_healthy) << "routed to green before it was healthy";
          ASSERT_EQ(c.color, d.green);
        }
        if (c.kind == CommandKind::StopTaskSet && c.color != d.green) {
          ASSERT_EQ(dec.next.phase, Phase::TerminationWait) << "blue stopped outside termination";
        }
      }
      d = dec.next;
      // Bounded: deadlines are at most 60 s and time advances, so the run must end.
      ASSERT_LT(++steps, 10'000) << "deployment never ended";
    }
    (d.phase == Phase::Succeeded ? succeeded : failed)++;
  }
  EXPECT_GT(succeeded, 0);
  EXPECT_GT(failed, 0);
}
