#include "http1/http1.hpp"

#include <cstring>

namespace cutover::http1 {
namespace {

// RFC 9110 §5.6.2 tchar.
constexpr std::array<bool, 256> make_tchar() {
  std::array<bool, 256> t{};
  for (int c = '0'; c <= '9'; ++c) t[c] = true;
  for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] = true;
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) t[static_cast<unsigned char>(c)] = true;
  return t;
}
constexpr auto kTchar = make_tchar();

bool is_tchar(char c) { return kTchar[static_cast<unsigned char>(c)]; }
// field-vchar / SP / HTAB, obs-text allowed (RFC 9110 §5.5).
bool is_value_char(char c) {
  auto u = static_cast<unsigned char>(c);
  return u == '\t' || (u >= 0x20 && u != 0x7f);
}

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Calls f(token) for each element of a comma-separated list, skipping empty ones.
template <class F>
void for_each_token(std::string_view list, F&& f) {
  while (!list.empty()) {
    auto comma = list.find(',');
    auto item = trim(list.substr(0, comma));
    if (!item.empty()) f(item);
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
}

ParseResult fail(int status, const char* why) {
  ParseResult r;
  r.status = Parse::Error;
  r.error_status = status;
  r.error = why;
  return r;
}

// Finds CRLF CRLF; returns the head's length or 0.
std::size_t find_head_end(std::string_view data, std::size_t from) {
  if (data.size() < 4) return 0;
  if (from > data.size() - 4) from = data.size() - 4;
  const char* p = data.data() + from;
  const char* end = data.data() + data.size();
  while (p + 3 < end) {
    p = static_cast<const char*>(std::memchr(p, '\r', static_cast<std::size_t>(end - p - 3)));
    if (!p) return 0;
    if (p[1] == '\n' && p[2] == '\r' && p[3] == '\n')
      return static_cast<std::size_t>(p + 4 - data.data());
    ++p;
  }
  return 0;
}

// A LF not preceded by CR (memchr: vectorized, the common case has one LF per line).
bool has_bare_lf(std::string_view s) {
  const char* p = s.data();
  const char* end = p + s.size();
  while (p < end) {
    p = static_cast<const char*>(std::memchr(p, '\n', static_cast<std::size_t>(end - p)));
    if (!p) return false;
    if (p == s.data() || p[-1] != '\r') return true;
    ++p;
  }
  return false;
}

bool parse_version(std::string_view v, int& minor) {
  if (v.size() != 8 || v.substr(0, 7) != "HTTP/1.") return false;
  if (v[7] != '0' && v[7] != '1') return false;
  minor = v[7] - '0';
  return true;
}

bool parse_content_length(std::string_view v, std::uint64_t& out) {
  if (v.empty() || v.size() > 18) return false;
  std::uint64_t n = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return false;
    n = n * 10 + static_cast<std::uint64_t>(c - '0');
  }
  out = n;
  return true;
}

// Parses the header lines in [p, end) (each ending in CRLF; `end` is just past the final empty
// line's CRLF excluded) into `h`. Returns an error message or nullptr.
const char* parse_fields(std::string_view lines, const Limits& limits, Head& h,
                         std::string_view* host, int* host_count, bool* expect_continue,
                         bool& has_te, bool& te_chunked_last, bool& has_cl) {
  has_te = false;
  te_chunked_last = false;
  has_cl = false;
  while (!lines.empty()) {
    auto eol = lines.find("\r\n");
    if (eol == std::string_view::npos) return "header line without CRLF";
    auto line = lines.substr(0, eol);
    lines.remove_prefix(eol + 2);
    if (line.empty()) break;
    if (line.front() == ' ' || line.front() == '\t') return "obsolete line folding in a header";
    auto colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) return "header line without a name";
    auto name = line.substr(0, colon);
    for (char c : name)
      if (!is_tchar(c)) return "invalid character in a header name";
    auto value = line.substr(colon + 1);
    for (char c : value)
      if (!is_value_char(c)) return "invalid character in a header value";
    value = trim(value);
    if (h.headers.size() >= limits.max_headers) return "too many header fields";
    h.headers.push_back(Header{name, value});

    switch (lower(name[0])) {
      case 'c':
        if (iequals(name, "content-length")) {
          // A list of identical values is one value (RFC 9110 §8.6); differing ones are fatal.
          bool bad = false;
          for_each_token(value, [&](std::string_view t) {
            std::uint64_t n = 0;
            if (!parse_content_length(t, n) || (has_cl && n != h.content_length)) bad = true;
            h.content_length = n;
            has_cl = true;
          });
          if (bad || !has_cl) return "invalid or conflicting Content-Length";
        } else if (iequals(name, "connection")) {
          for_each_token(value, [&](std::string_view t) {
            if (iequals(t, "close")) {
              h.keep_alive = false;
            } else if (iequals(t, "keep-alive")) {
              if (h.minor == 0) h.keep_alive = true;
            } else if (iequals(t, "upgrade")) {
              h.connection_upgrade = true;
            } else if (h.connection_names_count < h.connection_names.size()) {
              h.connection_names[h.connection_names_count++] = t;
            }
          });
        }
        break;
      case 't':
        if (iequals(name, "transfer-encoding")) {
          for_each_token(value, [&](std::string_view t) {
            has_te = true;
            te_chunked_last = iequals(t, "chunked");
          });
          if (!has_te) return "empty Transfer-Encoding";
        }
        break;
      case 'h':
        if (host && iequals(name, "host")) {
          *host = value;
          ++*host_count;
        }
        break;
      case 'u':
        if (iequals(name, "upgrade")) h.upgrade = value;
        break;
      case 'e':
        if (expect_continue && iequals(name, "expect") && iequals(value, "100-continue"))
          *expect_continue = true;
        break;
      default:
        break;
    }
  }
  return nullptr;
}

}  // namespace

void Head::clear() {
  minor = 1;
  headers.clear();
  framing = Framing::None;
  content_length = 0;
  keep_alive = true;
  connection_upgrade = false;
  upgrade = {};
  connection_names_count = 0;
}

bool RequestHead::idempotent() const {
  return method == "GET" || method == "HEAD" || method == "OPTIONS" || method == "PUT" ||
         method == "DELETE" || method == "TRACE";
}

ParseResult parse_request_head(std::string_view data, const Limits& limits, RequestHead& out,
                               std::size_t search_from) {
  // Leading empty lines (a client's stray CRLF after a body) are skipped.
  std::size_t skip = 0;
  while (skip + 1 < data.size() && data[skip] == '\r' && data[skip + 1] == '\n') skip += 2;
  if (skip > 64) return fail(400, "too many empty lines before the request line");
  std::string_view rest = data.substr(skip);
  std::size_t from = search_from > skip ? search_from - skip : 0;
  std::size_t end = find_head_end(rest, from);
  if (end == 0) {
    if (rest.size() >= limits.max_header_bytes) return fail(431, "request header too large");
    // Catch garbage early instead of waiting for a head that never ends.
    for (std::size_t i = 0; i < rest.size() && i < 32; ++i) {
      char c = rest[i];
      if (c == ' ') break;
      if (!is_tchar(c)) return fail(400, "invalid request line");
    }
    return {};
  }
  if (end > limits.max_header_bytes) return fail(431, "request header too large");

  out.clear();
  out.host = {};
  out.expect_continue = false;
  std::string_view head = rest.substr(0, end - 2);  // keeps the last header line's CRLF
  auto eol = head.find("\r\n");
  auto line = head.substr(0, eol);
  if (line.find('\n') != std::string_view::npos || line.find('\r') != std::string_view::npos)
    return fail(400, "invalid request line");
  auto sp1 = line.find(' ');
  if (sp1 == std::string_view::npos || sp1 == 0) return fail(400, "invalid request line");
  out.method = line.substr(0, sp1);
  for (char c : out.method)
    if (!is_tchar(c)) return fail(400, "invalid method");
  auto sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || sp2 == sp1 + 1) return fail(400, "invalid request line");
  out.target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  for (char c : out.target) {
    auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) return fail(400, "invalid character in the request target");
  }
  auto version = line.substr(sp2 + 1);
  if (!parse_version(version, out.minor)) {
    if (version.size() == 8 && version.substr(0, 5) == "HTTP/" && version[6] == '.')
      return fail(505, "HTTP version not supported");
    return fail(400, "invalid HTTP version");
  }
  out.keep_alive = out.minor == 1;
  // Bare LF anywhere in the head: two parsers could split it differently.
  auto fields = head.substr(eol + 2);
  if (has_bare_lf(fields)) return fail(400, "bare LF in the request header");
  int host_count = 0;
  bool has_te = false, te_chunked_last = false, has_cl = false;
  const char* why = parse_fields(fields, limits, out, &out.host, &host_count, &out.expect_continue,
                                 has_te, te_chunked_last, has_cl);
  if (why) {
    if (std::strcmp(why, "too many header fields") == 0) return fail(431, why);
    return fail(400, why);
  }
  if (out.minor == 1 && host_count == 0) return fail(400, "missing Host header");
  if (host_count > 1) return fail(400, "more than one Host header");
  if (has_te) {
    if (out.minor == 0) return fail(400, "Transfer-Encoding in an HTTP/1.0 request");
    if (has_cl) return fail(400, "both Transfer-Encoding and Content-Length");
    if (!te_chunked_last) return fail(501, "unsupported Transfer-Encoding");
    out.framing = Framing::Chunked;
  } else if (has_cl && out.content_length > 0) {
    out.framing = Framing::Length;
  } else {
    out.framing = Framing::None;
  }
  ParseResult r;
  r.status = Parse::Done;
  r.head_bytes = skip + end;
  return r;
}

ParseResult parse_response_head(std::string_view data, const Limits& limits,
                                std::string_view request_method, ResponseHead& out,
                                std::size_t search_from) {
  std::size_t end = find_head_end(data, search_from);
  if (end == 0) {
    if (data.size() >= limits.max_header_bytes) return fail(502, "response header too large");
    if (data.size() >= 5 && data.substr(0, 5) != "HTTP/")
      return fail(502, "response is not HTTP/1.x");
    return {};
  }
  if (end > limits.max_header_bytes) return fail(502, "response header too large");
  out.clear();
  std::string_view head = data.substr(0, end - 2);
  auto eol = head.find("\r\n");
  auto line = head.substr(0, eol);
  // "HTTP/1.1 200 OK": version, SP, three digits, SP, optional reason.
  if (line.size() < 12 || !parse_version(line.substr(0, 8), out.minor) || line[8] != ' ')
    return fail(502, "invalid response status line");
  int code = 0;
  for (int i = 9; i < 12; ++i) {
    if (line[i] < '0' || line[i] > '9') return fail(502, "invalid response status code");
    code = code * 10 + (line[i] - '0');
  }
  if (code < 100 || (line.size() > 12 && line[12] != ' '))
    return fail(502, "invalid response status code");
  for (char c : line)
    if (!is_value_char(c)) return fail(502, "invalid character in the response status line");
  out.status = code;
  out.status_line_rest = line.substr(9);
  out.keep_alive = out.minor == 1;
  auto fields = head.substr(eol + 2);
  if (has_bare_lf(fields)) return fail(502, "bare LF in the response header");
  bool has_te = false, te_chunked_last = false, has_cl = false;
  const char* why =
      parse_fields(fields, limits, out, nullptr, nullptr, nullptr, has_te, te_chunked_last, has_cl);
  if (why) return fail(502, why);
  if (has_te && has_cl) return fail(502, "both Transfer-Encoding and Content-Length");
  if (request_method == "HEAD" || code < 200 || code == 204 || code == 304) {
    out.framing = Framing::None;
  } else if (has_te) {
    // A final coding other than chunked is delimited by the connection's end (RFC 9112 §6.3).
    out.framing = te_chunked_last ? Framing::Chunked : Framing::UntilClose;
  } else if (has_cl) {
    out.framing = out.content_length > 0 ? Framing::Length : Framing::None;
  } else {
    out.framing = Framing::UntilClose;
  }
  ParseResult r;
  r.status = Parse::Done;
  r.head_bytes = end;
  return r;
}

void BodyFramer::reset(Framing framing, std::uint64_t content_length) {
  framing_ = framing;
  body_bytes_ = 0;
  size_digits_ = 0;
  remaining_ = 0;
  switch (framing) {
    case Framing::None:
      state_ = State::Done;
      break;
    case Framing::Length:
      remaining_ = content_length;
      state_ = content_length == 0 ? State::Done : State::Length;
      break;
    case Framing::Chunked:
      state_ = State::Size;
      break;
    case Framing::UntilClose:
      state_ = State::Until;
      break;
  }
}

std::size_t BodyFramer::feed(const char* p, std::size_t n) {
  std::size_t i = 0;
  while (i < n) {
    switch (state_) {
      case State::Done:
      case State::Error:
        return i;
      case State::Until:
        body_bytes_ += n - i;
        return n;
      case State::Length:
      case State::Data: {
        std::uint64_t take = std::min<std::uint64_t>(remaining_, n - i);
        i += static_cast<std::size_t>(take);
        remaining_ -= take;
        body_bytes_ += take;
        if (remaining_ == 0) state_ = state_ == State::Length ? State::Done : State::DataCr;
        break;
      }
      case State::Size: {
        char c = p[i];
        int v = (c >= '0' && c <= '9')   ? c - '0'
                : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                         : -1;
        if (v >= 0) {
          if (++size_digits_ > 15) {  // > 2^60 bytes: overflow, not a real chunk
            state_ = State::Error;
            return i;
          }
          remaining_ = remaining_ * 16 + static_cast<std::uint64_t>(v);
          ++i;
        } else if (size_digits_ == 0) {
          state_ = State::Error;
          return i;
        } else if (c == '\r') {
          state_ = State::SizeLf;
          ++i;
        } else if (c == ';') {
          state_ = State::Ext;
          ++i;
        } else if (c == ' ' || c == '\t') {
          state_ = State::SizeWs;
          ++i;
        } else {
          state_ = State::Error;
          return i;
        }
        break;
      }
      case State::SizeWs: {
        char c = p[i];
        if (c == ' ' || c == '\t') {
          ++i;
        } else if (c == ';') {
          state_ = State::Ext;
          ++i;
        } else if (c == '\r') {
          state_ = State::SizeLf;
          ++i;
        } else {
          state_ = State::Error;
          return i;
        }
        break;
      }
      case State::Ext: {
        char c = p[i];
        if (c == '\r') {
          state_ = State::SizeLf;
        } else if (!is_value_char(c)) {
          state_ = State::Error;
          return i;
        }
        ++i;
        break;
      }
      case State::SizeLf:
        if (p[i] != '\n') {
          state_ = State::Error;
          return i;
        }
        ++i;
        size_digits_ = 0;
        state_ = remaining_ == 0 ? State::TrailerStart : State::Data;
        break;
      case State::DataCr:
        if (p[i] != '\r') {
          state_ = State::Error;
          return i;
        }
        ++i;
        state_ = State::DataLf;
        break;
      case State::DataLf:
        if (p[i] != '\n') {
          state_ = State::Error;
          return i;
        }
        ++i;
        state_ = State::Size;
        break;
      case State::TrailerStart:
        if (p[i] == '\r') {
          state_ = State::FinalLf;
        } else if (p[i] == '\n') {
          state_ = State::Error;
          return i;
        } else {
          state_ = State::TrailerLine;
        }
        ++i;
        break;
      case State::TrailerLine: {
        char c = p[i];
        if (c == '\r') {
          state_ = State::TrailerLf;
        } else if (!is_value_char(c)) {
          state_ = State::Error;
          return i;
        }
        ++i;
        break;
      }
      case State::TrailerLf:
        if (p[i] != '\n') {
          state_ = State::Error;
          return i;
        }
        ++i;
        state_ = State::TrailerStart;
        break;
      case State::FinalLf:
        if (p[i] != '\n') {
          state_ = State::Error;
          return i;
        }
        ++i;
        state_ = State::Done;
        return i;
    }
  }
  return i;
}

namespace {

bool is_hop_by_hop(const Head& h, std::string_view name) {
  switch (lower(name[0])) {
    case 'c':
      return iequals(name, "connection");
    case 'k':
      return iequals(name, "keep-alive");
    case 'p':
      return iequals(name, "proxy-connection") || iequals(name, "proxy-authenticate") ||
             iequals(name, "proxy-authorization");
    case 't':
      return iequals(name, "te");
    case 'u':
      return iequals(name, "upgrade");
    default:
      break;
  }
  for (std::size_t i = 0; i < h.connection_names_count; ++i) {
    // Connection must not remove the framing headers: the body is forwarded as framed.
    if (iequals(h.connection_names[i], name) && !iequals(name, "transfer-encoding") &&
        !iequals(name, "content-length"))
      return true;
  }
  return false;
}

void append_header(std::string& out, std::string_view name, std::string_view value) {
  out.append(name);
  out.append(": ");
  out.append(value);
  out.append("\r\n");
}

}  // namespace

void write_request_head(const RequestHead& req, const RequestRewrite& rw, std::string& out) {
  out.append(req.method);
  out.push_back(' ');
  out.append(req.target);
  out.append(req.minor == 0 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n");
  bool has_request_id = false;
  bool has_xff = false;
  bool had_host = false;
  std::string_view host;
  for (const auto& h : req.headers) {
    const auto& n = h.name;
    if (is_hop_by_hop(req, n)) continue;
    if (lower(n[0]) == 'x' && n.size() > 2 && n[1] == '-') {
      if (iequals(n, "x-forwarded-for")) {
        has_xff = true;
        continue;  // merged into one line below
      }
      if (iequals(n, "x-forwarded-proto") || iequals(n, "x-forwarded-host")) continue;
      if (iequals(n, "x-request-id")) has_request_id = true;
    }
    // The proxy answers 100-continue itself (or already has the body): not forwarded.
    if (req.expect_continue && lower(n[0]) == 'e' && iequals(n, "expect")) continue;
    if (lower(n[0]) == 'h' && iequals(n, "host")) {
      host = h.value;
      had_host = true;
    }
    append_header(out, n, h.value);
  }
  out.append("X-Forwarded-For: ");
  if (has_xff) {
    for (const auto& h : req.headers) {
      if (!iequals(h.name, "x-forwarded-for") || h.value.empty()) continue;
      out.append(h.value);
      out.append(", ");
    }
  }
  out.append(rw.client_ip);
  out.append("\r\n");
  append_header(out, "X-Forwarded-Proto", rw.proto);
  // An empty Host is valid (and kept); only a request without one gets the listener's.
  if (!had_host && !rw.default_host.empty()) {
    append_header(out, "Host", rw.default_host);
    host = rw.default_host;
  }
  if (!host.empty()) append_header(out, "X-Forwarded-Host", host);
  if (!has_request_id && !rw.request_id.empty()) append_header(out, "X-Request-Id", rw.request_id);
  if (req.wants_upgrade()) {
    append_header(out, "Upgrade", req.upgrade);
    out.append("Connection: upgrade\r\n");
  } else if (req.minor == 0) {
    out.append("Connection: keep-alive\r\n");
  }
  out.append("\r\n");
}

void write_response_head(const ResponseHead& res, int client_minor, bool keep_alive,
                         std::string_view extra, std::string& out) {
  out.append("HTTP/1.1 ");
  out.append(res.status_line_rest);
  out.append("\r\n");
  for (const auto& h : res.headers) {
    if (is_hop_by_hop(res, h.name)) continue;
    out.append(h.name);
    out.append(": ");
    out.append(h.value);
    out.append("\r\n");
  }
  out.append(extra);
  if (res.status == 101) {
    if (!res.upgrade.empty()) append_header(out, "Upgrade", res.upgrade);
    out.append("Connection: upgrade\r\n");
  } else if (!keep_alive) {
    out.append("Connection: close\r\n");
  } else if (client_minor == 0) {
    out.append("Connection: keep-alive\r\n");
  }
  out.append("\r\n");
}

std::string_view reason_phrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 301:
      return "Moved Permanently";
    case 308:
      return "Permanent Redirect";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 408:
      return "Request Timeout";
    case 413:
      return "Content Too Large";
    case 431:
      return "Request Header Fields Too Large";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

void write_simple_response(int status, std::string_view detail, bool keep_alive, std::string& out,
                           std::string_view location) {
  auto reason = reason_phrase(status);
  std::string code = std::to_string(status);
  std::size_t body_len = code.size() + 1 + reason.size() + 2 + detail.size() + 1;
  out.append("HTTP/1.1 ");
  out.append(code);
  out.push_back(' ');
  out.append(reason);
  out.append("\r\nServer: cutover\r\nContent-Type: text/plain; charset=utf-8\r\n");
  if (!location.empty()) append_header(out, "Location", location);
  out.append("Content-Length: ");
  out.append(std::to_string(body_len));
  out.append(keep_alive ? "\r\n\r\n" : "\r\nConnection: close\r\n\r\n");
  out.append(code);
  out.push_back(' ');
  out.append(reason);
  out.append(": ");
  out.append(detail);
  out.push_back('\n');
}

}  // namespace cutover::http1
