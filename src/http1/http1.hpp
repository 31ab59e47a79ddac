// HTTP/1.x on the proxy's request path: message heads and body framing, without allocation per
// message and without Asio (so the fuzz target and the micro-benchmark call it directly).
//
//   parse_request_head / parse_response_head  find the end of a head in the bytes read so far
//       and fill a head whose string_views point into those bytes.
//   BodyFramer  follows a body's framing (Content-Length, chunked, until close) over the raw
//       bytes, so the proxy forwards them unchanged — chunk framing included — and knows exactly
//       where the message ends (the next pipelined request starts there).
//   write_request_head / write_response_head  the rewritten heads the proxy sends on.
//
// Strict where leniency lets two parsers disagree about message boundaries (request smuggling,
// RFC 9112 §6.3, §11.2): bare LF line ends, whitespace before a colon, obs-fold, control
// characters, Transfer-Encoding together with Content-Length, differing Content-Length values,
// Transfer-Encoding in HTTP/1.0 and codings other than a final "chunked" are errors, never
// guesses. docs/dependencies.md says why this is hand-written (Beast's parser measured slower on
// the hot path; the C http-parser in Debian is no longer maintained).
//
// Thread-safety: pure functions and value types.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace cutover::http1 {

struct Header {
  std::string_view name;
  std::string_view value;
};

enum class Framing {
  None,        // no body (or: a response that has none by its status / the request method)
  Length,      // Content-Length bytes
  Chunked,     // Transfer-Encoding: chunked, up to and including the trailer section
  UntilClose,  // a response delimited by the connection's end
};

enum class Parse { Incomplete, Done, Error };

struct ParseResult {
  Parse status = Parse::Incomplete;
  std::size_t head_bytes = 0;  // with the final CRLF CRLF (Done)
  int error_status = 0;        // 400, 431, 501, 505 for requests; 502 for responses
  const char* error = "";      // what was wrong, for the error body and the log
};

// Fields common to requests and responses.
struct Head {
  int minor = 1;  // HTTP/1.minor
  std::vector<Header> headers;
  Framing framing = Framing::None;
  std::uint64_t content_length = 0;
  bool keep_alive = true;
  bool connection_upgrade = false;  // "upgrade" in Connection
  std::string_view upgrade;         // the Upgrade header
  // Header names listed in Connection (hop-by-hop for this message), besides close/keep-alive.
  std::array<std::string_view, 8> connection_names{};
  std::size_t connection_names_count = 0;
  void clear();
};

struct RequestHead : Head {
  std::string_view method;
  std::string_view target;
  std::string_view host;
  bool expect_continue = false;
  // Method is GET/HEAD/OPTIONS/PUT/DELETE/TRACE (RFC 9110 §9.2.2): safe to send twice.
  bool idempotent() const;
  bool is_head() const { return method == "HEAD"; }
  bool wants_upgrade() const { return connection_upgrade && !upgrade.empty(); }
};

struct ResponseHead : Head {
  int status = 0;
  std::string_view status_line_rest;  // "200 OK" (code and reason as the server sent them)
};

struct Limits {
  std::size_t max_header_bytes = 16 * 1024;  // whole head, request line included
  std::size_t max_headers = 128;
};

// `search_from`: bytes already known not to contain the end of the head (pass the previous
// size minus 3 when more bytes arrive; 0 is always correct). Leading empty lines before a
// request line are skipped (RFC 9112 §2.2) and counted in head_bytes.
ParseResult parse_request_head(std::string_view data, const Limits& limits, RequestHead& out,
                               std::size_t search_from = 0);
// `request_method` decides whether the response has a body (HEAD: none).
ParseResult parse_response_head(std::string_view data, const Limits& limits,
                                std::string_view request_method, ResponseHead& out,
                                std::size_t search_from = 0);

// Follows a body over raw bytes. feed() returns how many of the n bytes belong to the message;
// once done(), the rest belongs to the next message. error() is sticky.
class BodyFramer {
 public:
  void reset(Framing framing, std::uint64_t content_length);
  std::size_t feed(const char* p, std::size_t n);
  bool done() const { return state_ == State::Done; }
  bool error() const { return state_ == State::Error; }
  Framing framing() const { return framing_; }
  std::uint64_t body_bytes() const { return body_bytes_; }  // payload bytes seen (no framing)

 private:
  enum class State {
    Done,
    Error,
    Length,
    Until,
    Size,
    SizeWs,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    FinalLf
  };
  Framing framing_ = Framing::None;
  State state_ = State::Done;
  std::uint64_t remaining_ = 0;
  std::uint64_t body_bytes_ = 0;
  int size_digits_ = 0;
};

// What the proxy adds to a request it forwards.
struct RequestRewrite {
  std::string_view client_ip;
  std::string_view proto = "http";  // X-Forwarded-Proto
  std::string_view request_id;      // used when the request has no X-Request-Id
  std::string_view default_host;    // used when an HTTP/1.0 request has no Host
};

// Appends the forwarded request head to `out`: the request line (HTTP/1.1, or HTTP/1.0 with
// Connection: keep-alive for a 1.0 client so the target frames its answer for 1.0), the headers
// without hop-by-hop ones (RFC 9110 §7.6.1) — except Upgrade/Connection: upgrade when the
// request asks for one — X-Forwarded-For appended to, X-Forwarded-Proto and X-Forwarded-Host set,
// X-Request-Id kept or added.
void write_request_head(const RequestHead& req, const RequestRewrite& rw, std::string& out);

// Appends the response head for the client: the status line as HTTP/1.1, headers without
// hop-by-hop ones, then `extra` (complete "Name: value\r\n" lines, may be empty) and the
// connection header: "Connection: close" when !keep_alive, "Connection: keep-alive" for an
// HTTP/1.0 client that keeps it, "Connection: upgrade" with Upgrade for a 101.
void write_response_head(const ResponseHead& res, int client_minor, bool keep_alive,
                         std::string_view extra, std::string& out);

// A complete answer generated by the proxy itself (errors, redirects): text/plain body
// "<status> <reason phrase>: <detail>\n". `location` adds a Location header when not empty.
void write_simple_response(int status, std::string_view detail, bool keep_alive, std::string& out,
                           std::string_view location = {});

std::string_view reason_phrase(int status);

}  // namespace cutover::http1
