// Unit tests of the proxy's HTTP/1 parsing, framing and rewriting (http1.hpp).
#include "http1/http1.hpp"

#include <gtest/gtest.h>

namespace cutover::http1 {
namespace {

ParseResult req(std::string_view text, RequestHead& out, size_t max_header = 16384) {
  Limits l;
  l.max_header_bytes = max_header;
  return parse_request_head(text, l, out);
}

std::string header(const Head& h, std::string_view name) {
  for (const auto& f : h.headers)
    if (f.name == name) return std::string(f.value);
  return "<none>";
}

TEST(Http1Request, ParsesASimpleGet) {
  RequestHead h;
  std::string_view text = "GET /a?b=c HTTP/1.1\r\nHost: example\r\nX-A:  spaced value \r\n\r\nrest";
  auto r = req(text, h);
  ASSERT_EQ(r.status, Parse::Done) << r.error;
  EXPECT_EQ(r.head_bytes, text.size() - 4);
  EXPECT_EQ(h.method, "GET");
  EXPECT_EQ(h.target, "/a?b=c");
  EXPECT_EQ(h.minor, 1);
  EXPECT_EQ(h.host, "example");
  EXPECT_EQ(header(h, "X-A"), "spaced value");
  EXPECT_TRUE(h.keep_alive);
  EXPECT_EQ(h.framing, Framing::None);
  EXPECT_TRUE(h.idempotent());
}

TEST(Http1Request, IncompleteUntilTheBlankLine) {
  RequestHead h;
  EXPECT_EQ(req("GET / HTTP/1.1\r\nHost: a\r\n", h).status, Parse::Incomplete);
  EXPECT_EQ(req("GET / HTTP/1.1\r\nHost: a\r\n\r", h).status, Parse::Incomplete);
  EXPECT_EQ(req("GET / HTTP/1.1\r\nHost: a\r\n\r\n", h).status, Parse::Done);
}

TEST(Http1Request, IncrementalSearchFindsTheSameEnd) {
  std::string text = "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n";
  for (size_t cut = 1; cut < text.size(); ++cut) {
    RequestHead h;
    Limits l;
    auto r1 = parse_request_head(std::string_view(text).substr(0, cut), l, h);
    ASSERT_EQ(r1.status, Parse::Incomplete) << cut;
    auto r2 = parse_request_head(text, l, h, cut > 3 ? cut - 3 : 0);
    ASSERT_EQ(r2.status, Parse::Done) << cut;
    EXPECT_EQ(r2.head_bytes, text.size());
  }
}

TEST(Http1Request, LeadingEmptyLinesAreSkipped) {
  RequestHead h;
  auto r = req("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", h);
  ASSERT_EQ(r.status, Parse::Done);
  EXPECT_EQ(h.method, "GET");
  EXPECT_EQ(r.head_bytes, 31u);
}

TEST(Http1Request, FramingFromContentLengthAndChunked) {
  RequestHead h;
  ASSERT_EQ(req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n", h).status, Parse::Done);
  EXPECT_EQ(h.framing, Framing::Length);
  EXPECT_EQ(h.content_length, 12u);
  EXPECT_FALSE(h.idempotent());
  ASSERT_EQ(req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7, 7\r\n\r\n", h).status,
            Parse::Done);
  EXPECT_EQ(h.content_length, 7u);
  ASSERT_EQ(req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", h).status,
            Parse::Done);
  EXPECT_EQ(h.framing, Framing::Chunked);
  ASSERT_EQ(req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", h).status, Parse::Done);
  EXPECT_EQ(h.framing, Framing::None);
}

// Each of these lets two parsers disagree about where a message ends: refused.
TEST(Http1Request, SmugglingShapesAreErrors) {
  struct Case {
    const char* text;
    int status;
  } cases[] = {
      {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
       400},
      {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -3\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 501},
      {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 501},
      {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 3\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: a\r\n Folded: x\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nX: y\r\n\r\n", 400},
      {"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505},
      {"GET / FOO/1.1\r\nHost: a\r\n\r\n", 400},
      {"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\n: novalue\r\n\r\n", 400},
  };
  for (const auto& c : cases) {
    RequestHead h;
    auto r = req(c.text, h);
    EXPECT_EQ(r.status, Parse::Error) << c.text;
    EXPECT_EQ(r.error_status, c.status) << c.text << " -> " << r.error;
  }
}

TEST(Http1Request, OversizedHeadIs431EvenBeforeItEnds) {
  RequestHead h;
  std::string big = "GET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(2000, 'x');
  auto r = req(big, h, 1024);
  EXPECT_EQ(r.status, Parse::Error);
  EXPECT_EQ(r.error_status, 431);
  auto r2 = req(big + "\r\n\r\n", h, 1024);
  EXPECT_EQ(r2.error_status, 431);
}

TEST(Http1Request, GarbageIsRejectedBeforeTheHeadEnds) {
  RequestHead h;
  auto r = req(std::string_view("\x16\x03\x01\x02\x00", 5), h);  // a TLS ClientHello
  EXPECT_EQ(r.status, Parse::Error);
  EXPECT_EQ(r.error_status, 400);
}

TEST(Http1Request, ConnectionSemantics) {
  RequestHead h;
  ASSERT_EQ(req("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", h).status, Parse::Done);
  EXPECT_FALSE(h.keep_alive);
  ASSERT_EQ(req("GET / HTTP/1.0\r\n\r\n", h).status, Parse::Done);
  EXPECT_FALSE(h.keep_alive);
  ASSERT_EQ(req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", h).status, Parse::Done);
  EXPECT_TRUE(h.keep_alive);
  ASSERT_EQ(req("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: "
                "websocket\r\n\r\n",
                h)
                .status,
            Parse::Done);
  EXPECT_TRUE(h.wants_upgrade());
  EXPECT_EQ(h.upgrade, "websocket");
}

TEST(Http1Rewrite, ForwardedHeadersAndHopByHopRemoval) {
  RequestHead h;
  ASSERT_EQ(req("GET /x HTTP/1.1\r\nHost: app.example\r\nConnection: keep-alive, X-Secret\r\n"
                "X-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nX-Forwarded-For: "
                "10.0.0.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n"
                "Proxy-Authorization: basic x\r\nAccept: */*\r\n\r\n",
                h)
                .status,
            Parse::Done);
  std::string out;
  write_request_head(h, RequestRewrite{"127.0.0.9", "http", "rid-1", "ignored"}, out);
  RequestHead f;
  Limits l;
  ASSERT_EQ(parse_request_head(out, l, f).status, Parse::Done) << out;
  EXPECT_EQ(f.target, "/x");
  EXPECT_EQ(header(f, "Host"), "app.example");
  EXPECT_EQ(header(f, "Accept"), "*/*");
  EXPECT_EQ(header(f, "X-Forwarded-For"), "10.0.0.1, 127.0.0.9");
  EXPECT_EQ(header(f, "X-Forwarded-Proto"), "http");
  EXPECT_EQ(header(f, "X-Forwarded-Host"), "app.example");
  EXPECT_EQ(header(f, "X-Request-Id"), "rid-1");
  for (const char* gone : {"Connection", "X-Secret", "Keep-Alive", "TE", "Proxy-Authorization"})
    EXPECT_EQ(header(f, gone), "<none>") << gone;
}

TEST(Http1Rewrite, KeepsARequestIdAndMergesForwardedFor) {
  RequestHead h;
  ASSERT_EQ(req("GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: given\r\nX-Forwarded-For: 1.1.1.1\r\n"
                "X-Forwarded-For: 2.2.2.2\r\n\r\n",
                h)
                .status,
            Parse::Done);
  std::string out;
  write_request_head(h, RequestRewrite{"3.3.3.3", "https", "new", ""}, out);
  RequestHead f;
  ASSERT_EQ(parse_request_head(out, Limits{}, f).status, Parse::Done);
  EXPECT_EQ(header(f, "X-Request-Id"), "given");
  EXPECT_EQ(header(f, "X-Forwarded-For"), "1.1.1.1, 2.2.2.2, 3.3.3.3");
  EXPECT_EQ(header(f, "X-Forwarded-Proto"), "https");
}

TEST(Http1Rewrite, Http10GetsHostAndKeepAlive) {
  RequestHead h;
  ASSERT_EQ(req("GET / HTTP/1.0\r\n\r\n", h).status, Parse::Done);
  std::string out;
  write_request_head(h, RequestRewrite{"1.2.3.4", "http", "r", "127.0.0.1:8000"}, out);
  EXPECT_NE(out.find("GET / HTTP/1.0\r\n"), std::string::npos) << out;
  EXPECT_NE(out.find("Host: 127.0.0.1:8000\r\n"), std::string::npos) << out;
  EXPECT_NE(out.find("Connection: keep-alive\r\n"), std::string::npos) << out;
}

TEST(Http1Rewrite, UpgradeIsForwarded) {
  RequestHead h;
  ASSERT_EQ(req("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                "Sec-WebSocket-Key: k\r\n\r\n",
                h)
                .status,
            Parse::Done);
  std::string out;
  write_request_head(h, RequestRewrite{"1.2.3.4", "http", "r", ""}, out);
  RequestHead f;
  ASSERT_EQ(parse_request_head(out, Limits{}, f).status, Parse::Done);
  EXPECT_TRUE(f.wants_upgrade());
  EXPECT_EQ(header(f, "Sec-WebSocket-Key"), "k");
}

TEST(Http1Response, FramingByStatusMethodAndHeaders) {
  ResponseHead r;
  Limits l;
  auto p = parse_response_head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", l, "GET", r);
  ASSERT_EQ(p.status, Parse::Done);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.framing, Framing::Length);
  EXPECT_EQ(r.status_line_rest, "200 OK");
  ASSERT_EQ(
      parse_response_head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", l, "HEAD", r).status,
      Parse::Done);
  EXPECT_EQ(r.framing, Framing::None);
  ASSERT_EQ(parse_response_head("HTTP/1.1 204 No Content\r\n\r\n", l, "GET", r).status,
            Parse::Done);
  EXPECT_EQ(r.framing, Framing::None);
  ASSERT_EQ(
      parse_response_head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", l, "GET", r)
          .status,
      Parse::Done);
  EXPECT_EQ(r.framing, Framing::Chunked);
  ASSERT_EQ(parse_response_head("HTTP/1.0 200 OK\r\n\r\n", l, "GET", r).status, Parse::Done);
  EXPECT_EQ(r.framing, Framing::UntilClose);
  EXPECT_FALSE(r.keep_alive);
  ASSERT_EQ(parse_response_head("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", l, "GET", r).status,
            Parse::Done);
  EXPECT_EQ(r.status_line_rest, "200");
  EXPECT_EQ(parse_response_head("HTTP/1.1 2000 OK\r\n\r\n", l, "GET", r).status, Parse::Error);
  EXPECT_EQ(parse_response_head("SSH-2.0-OpenSSH\r\n", l, "GET", r).status, Parse::Error);
  EXPECT_EQ(
      parse_response_head(
          "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", l, "GET", r)
          .status,
      Parse::Error);
}

TEST(Http1Response, RewriteSetsConnectionAndDropsHopByHop) {
  ResponseHead r;
  ASSERT_EQ(parse_response_head("HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nConnection: "
                                "keep-alive\r\nContent-Length: 0\r\n\r\n",
                                Limits{}, "GET", r)
                .status,
            Parse::Done);
  std::string out;
  write_response_head(r, 1, false, "Set-Cookie: c=1\r\n", out);
  EXPECT_EQ(out,
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nSet-Cookie: c=1\r\nConnection: close\r\n\r\n");
  out.clear();
  write_response_head(r, 0, true, "", out);
  EXPECT_EQ(out, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n");
}

std::pair<size_t, BodyFramer> frame(Framing f, uint64_t len, std::string_view body,
                                    size_t step = 0) {
  BodyFramer b;
  b.reset(f, len);
  size_t used = 0;
  if (step == 0) return {b.feed(body.data(), body.size()), b};
  for (size_t i = 0; i < body.size() && !b.done() && !b.error(); i += step)
    used += b.feed(body.data() + i, std::min(step, body.size() - i));
  return {used, b};
}

TEST(Http1Framer, ContentLengthStopsAtTheEnd) {
  auto [used, b] = frame(Framing::Length, 5, "helloGET /next");
  EXPECT_EQ(used, 5u);
  EXPECT_TRUE(b.done());
  EXPECT_EQ(b.body_bytes(), 5u);
}

TEST(Http1Framer, ChunkedWithExtensionsAndTrailersInAnySplit) {
  std::string body = "5;name=\"v\"\r\nhello\r\nA \r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
  for (size_t step : {0, 1, 2, 3, 7}) {
    auto [used, b] = frame(Framing::Chunked, 0, body, step);
    EXPECT_TRUE(b.done()) << step;
    EXPECT_EQ(used, body.size() - 4) << step;
    EXPECT_EQ(b.body_bytes(), 15u) << step;
  }
}

TEST(Http1Framer, BadChunkingIsAnError) {
  for (std::string_view bad :
       {"x\r\n", "5\r\nhelloXX", "5\nhello\r\n", "\r\n", "ffffffffffffffffff\r\n",
        "0\r\nbad\ntrailer\r\n\r\n", "5\r\nhello\r\n0\r\n\n"}) {
    auto [used, b] = frame(Framing::Chunked, 0, bad);
    EXPECT_TRUE(b.error()) << bad;
  }
}

TEST(Http1Simple, ResponseHasLengthAndReason) {
  std::string out;
  write_simple_response(503, "no healthy target", false, out);
  EXPECT_EQ(out,
            "HTTP/1.1 503 Service Unavailable\r\nServer: cutover\r\nContent-Type: text/plain; "
            "charset=utf-8\r\nContent-Length: 43\r\nConnection: close\r\n\r\n503 Service "
            "Unavailable: no healthy target\n");
}

// Found by http1_fuzz: an empty Host (valid) got a second Host added on the way.
TEST(Http1Rewrite, AnEmptyHostStaysTheOnlyHost) {
  RequestHead h;
  ASSERT_EQ(req("GET / HTTP/1.1\r\nHost:\r\n\r\n", h).status, Parse::Done);
  std::string out;
  write_request_head(h, RequestRewrite{"1.2.3.4", "http", "r", "127.0.0.1:8000"}, out);
  RequestHead f;
  auto r = parse_request_head(out, Limits{}, f);
  ASSERT_EQ(r.status, Parse::Done) << r.error << "\n" << out;
  EXPECT_EQ(f.host, "");
  EXPECT_EQ(out.find("X-Forwarded-Host"), std::string::npos);
}

}  // namespace
}  // namespace cutover::http1
