// The proxy's HTTP/1 head parsing (src/proxy/http1.hpp) against Boost.Beast's parser, on the
// same request heads: the measurement behind hand-writing it (docs/dependencies.md).
// Both parse a complete head from a buffer, with header fields made available to the caller;
// Beast's copies them into its basic_fields (one allocation per field), ours points into the
// buffer.
#include <benchmark/benchmark.h>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include "http1/http1.hpp"

namespace {

// A browser-like request (15 fields, ~700 bytes) and wrk's minimal one.
const std::string kBrowser =
    "GET /api/v1/orders?page=2&sort=desc HTTP/1.1\r\n"
    "Host: shop.example.com\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\n"
    "Accept: application/json, text/plain, */*\r\n"
    "Accept-Language: en-US,en;q=0.5\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "Referer: https://shop.example.com/orders\r\n"
    "Connection: keep-alive\r\n"
    "Cookie: session=0123456789abcdef0123456789abcdef; cutover_cohort=shop-green.1a2b3c4d\r\n"
    "Sec-Fetch-Dest: empty\r\n"
    "Sec-Fetch-Mode: cors\r\n"
    "Sec-Fetch-Site: same-origin\r\n"
    "X-Forwarded-For: 203.0.113.7\r\n"
    "X-Request-Id: 4f9c2a1e-8b7d-4c3a-9e2f-1a2b3c4d5e6f\r\n"
    "Pragma: no-cache\r\n"
    "Cache-Control: no-cache\r\n\r\n";
const std::string kMinimal = "GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";

void BM_Cutover(benchmark::State& state, const std::string& text) {
  cutover::http1::RequestHead head;
  cutover::http1::Limits limits;
  for (auto _ : state) {
    auto r = cutover::http1::parse_request_head(text, limits, head);
    benchmark::DoNotOptimize(r);
    benchmark::DoNotOptimize(head.headers.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}

void BM_Beast(benchmark::State& state, const std::string& text) {
  namespace http = boost::beast::http;
  for (auto _ : state) {
    http::request_parser<http::empty_body> parser;
    boost::beast::error_code ec;
    parser.eager(false);
    parser.put(boost::asio::buffer(text), ec);
    benchmark::DoNotOptimize(parser.get());
    if (ec) state.SkipWithError(ec.message().c_str());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}

// The proxy's full head work per request: parse plus the rewritten head it forwards.
void BM_CutoverParseAndRewrite(benchmark::State& state, const std::string& text) {
  using namespace cutover::http1;
  RequestHead head;
  Limits limits;
  std::string out;
  for (auto _ : state) {
    parse_request_head(text, limits, head);
    out.clear();
    write_request_head(head, RequestRewrite{"127.0.0.1", "http", "abc-0-1", ""}, out);
    benchmark::DoNotOptimize(out.data());
  }
}

void BM_BeastParseAndRewrite(benchmark::State& state, const std::string& text) {
  namespace http = boost::beast::http;
  for (auto _ : state) {
    http::request_parser<http::empty_body> parser;
    boost::beast::error_code ec;
    parser.put(boost::asio::buffer(text), ec);
    auto& req = parser.get();
    req.erase(http::field::connection);
    req.set("X-Forwarded-For", "127.0.0.1");
    req.set("X-Forwarded-Proto", "http");
    req.set("X-Request-Id", "abc-0-1");
    http::request_serializer<http::empty_body> sr{req};
    std::string out;
    sr.split(true);
    sr.next(ec, [&](boost::beast::error_code&, const auto& buffers) {
      for (auto b : boost::beast::buffers_range_ref(buffers))
        out.append(static_cast<const char*>(b.data()), b.size());
      sr.consume(boost::beast::buffer_bytes(buffers));
    });
    benchmark::DoNotOptimize(out.data());
  }
}

BENCHMARK_CAPTURE(BM_Cutover, minimal, kMinimal);
BENCHMARK_CAPTURE(BM_Beast, minimal, kMinimal);
BENCHMARK_CAPTURE(BM_Cutover, browser, kBrowser);
BENCHMARK_CAPTURE(BM_Beast, browser, kBrowser);
BENCHMARK_CAPTURE(BM_CutoverParseAndRewrite, browser, kBrowser);
BENCHMARK_CAPTURE(BM_BeastParseAndRewrite, browser, kBrowser);

}  // namespace

BENCHMARK_MAIN();
