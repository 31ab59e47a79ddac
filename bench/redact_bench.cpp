// What masking secrets costs on the log path: core::RedactingStream over log-like text in 64 KiB
// pieces (what the log copier reads from a task's pipe), with 0, 1 and 8 secret values.
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "core/redact.hpp"

namespace {

std::string log_text(size_t bytes) {
  const std::string line =
      "2026-11-23T14:00:00.000Z INFO  GET /api/v1/orders/12345 200 3.2ms user=alice@example.com "
      "trace=4bf92f3577b34da6a3ce929d0e0e4736\n";
  std::string out;
  while (out.size() < bytes) out += line;
  return out;
}

void BM_RedactingStream(benchmark::State& state) {
  std::vector<std::string> secrets;
  for (int i = 0; i < state.range(0); ++i) {
    secrets.push_back("s3cr3t-value-" + std::to_string(i) + "-Zq8Xw2Lm9Kp4Hv7Rt3Ns6Wy1");
  }
  const cutover::core::Redactor redactor(secrets);
  const std::string chunk = log_text(64 * 1024);
  for (auto _ : state) {
    cutover::core::RedactingStream stream(redactor);
    std::string out = stream.feed(chunk);
    out += stream.finish();
    benchmark::DoNotOptimize(out);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(chunk.size()));
}
BENCHMARK(BM_RedactingStream)->Arg(0)->Arg(1)->Arg(8);

}  // namespace

BENCHMARK_MAIN();
