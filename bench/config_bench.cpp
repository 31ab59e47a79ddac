// Micro-benchmarks of the controller's pure parts: parsing cutover.yaml (done once per commit)
// and deploy::decide (done once per deployment event). They guard against regressions; they
// are not a comparison with a peer.
#include <benchmark/benchmark.h>

#include <filesystem>

#include "config/config.hpp"
#include "core/fs.hpp"
#include "deploy/deploy.hpp"

namespace {

std::string design_example() {
  auto text = cutover::core::read_file(std::filesystem::path(CUTOVER_BENCH_SOURCE_DIR) /
                                       "tests/config/valid/design-example.yaml");
  return text.ok() ? *text : std::string();
}

void BM_ParseDesignExample(benchmark::State& state) {
  const std::string yaml = design_example();
  for (auto _ : state) {
    auto cfg = cutover::config::parse_config(yaml, "cutover.yaml");
    benchmark::DoNotOptimize(cfg);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * yaml.size()));
}
BENCHMARK(BM_ParseDesignExample);

void BM_DecideHappyPath(benchmark::State& state) {
  using namespace cutover::deploy;
  const auto t0 = cutover::core::TimePoint{} + std::chrono::seconds(1000);
  for (auto _ : state) {
    Deployment d;
    d.previous_release_id = "rel-1";
    d.green = Color::Green;
    for (EventKind k : {EventKind::Start, EventKind::TaskSetStarted, EventKind::TargetsHealthy,
                        EventKind::WeightsApplied, EventKind::TaskSetStopped}) {
      d = decide(d, {k, ""}, t0).next;
    }
    benchmark::DoNotOptimize(d);
  }
}
BENCHMARK(BM_DecideHappyPath);

}  // namespace

BENCHMARK_MAIN();
