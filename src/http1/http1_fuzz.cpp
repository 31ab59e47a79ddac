// Fuzz target for the proxy's request path (http1.hpp): request and response head parsing,
// header rewriting and body framing, with invariants checked on every input:
//   - a parsed head is no longer than the input and a rewritten request head parses again to
//     the same method, target, framing and Content-Length (the proxy never forwards a head the
//     next hop would read differently);
//   - the body framer consumes the same bytes and ends in the same state whether the body
//     arrives at once or byte by byte.
// Input: the first byte picks how the rest is read (request or response, split points).
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "http1/http1.hpp"

using namespace cutover::http1;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

void frame_both_ways(Framing framing, uint64_t length, std::string_view body) {
  BodyFramer whole;
  whole.reset(framing, length);
  size_t a = whole.feed(body.data(), body.size());
  BodyFramer bytes;
  bytes.reset(framing, length);
  size_t b = 0;
  for (size_t i = 0; i < body.size() && !bytes.done() && !bytes.error(); ++i)
    b += bytes.feed(body.data() + i, 1);
  check(a <= body.size());
  check(a == b);
  check(whole.done() == bytes.done());
  check(whole.error() == bytes.error());
  check(whole.body_bytes() == bytes.body_bytes());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
  Limits limits;
  limits.max_header_bytes = 4096;
  limits.max_headers = 64;
  if ((mode & 1) == 0) {
    // Pipelined requests, the head found with an incremental search as bytes "arrive".
    size_t pos = 0;
    for (int n = 0; n < 8 && pos < in.size(); ++n) {
      RequestHead req;
      std::string_view rest = in.substr(pos);
      ParseResult r;
      size_t step = 1 + (mode >> 4);
      for (size_t have = std::min(rest.size(), step);; have = std::min(rest.size(), have + step)) {
        size_t from = have > step + 3 ? have - step - 3 : 0;
        r = parse_request_head(rest.substr(0, have), limits, req, from);
        if (r.status != Parse::Incomplete || have == rest.size()) break;
      }
      if (r.status != Parse::Done) return 0;
      check(r.head_bytes <= rest.size());
      // Round trip: the rewritten head parses to the same request.
      std::string out;
      write_request_head(req, RequestRewrite{"192.0.2.1", "http", "fuzz-1", "fuzz:80"}, out);
      RequestHead again;
      Limits big;
      big.max_header_bytes = out.size() + 1;
      big.max_headers = 256;
      ParseResult r2 = parse_request_head(out, big, again);
      check(r2.status == Parse::Done);
      check(r2.head_bytes == out.size());
      check(again.method == req.method && again.target == req.target);
      check(again.framing == req.framing && again.content_length == req.content_length);
      check(again.wants_upgrade() == req.wants_upgrade());
      std::string_view body = rest.substr(r.head_bytes);
      frame_both_ways(req.framing, req.content_length, body);
      BodyFramer f;
      f.reset(req.framing, req.content_length);
      size_t used = f.feed(body.data(), body.size());
      if (!f.done()) return 0;
      pos += r.head_bytes + used;
    }
  } else {
    ResponseHead res;
    const char* method = (mode & 2) ? "HEAD" : "GET";
    ParseResult r = parse_response_head(in, limits, method, res);
    if (r.status != Parse::Done) return 0;
    check(r.head_bytes <= in.size());
    std::string out;
    write_response_head(res, (mode & 4) ? 0 : 1, (mode & 8) != 0, "Set-Cookie: a=b\r\n", out);
    ResponseHead again;
    Limits big;
    big.max_header_bytes = out.size() + 1;
    big.max_headers = 256;
    ParseResult r2 = parse_response_head(out, big, method, again);
    check(r2.status == Parse::Done);
    check(again.status == res.status && again.framing == res.framing);
    frame_both_ways(res.framing, res.content_length, in.substr(r.head_bytes));
  }
  return 0;
}
