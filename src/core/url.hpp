// http:// and https:// URLs of outbound requests (notification webhooks): just enough parsing to
// connect (host, port, TLS) and to send the request target, with an error that says what is wrong.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/result.hpp"

namespace cutover::core {

struct HttpUrl {
  bool tls = false;      // https
  std::string host;      // name or address, IPv6 without brackets
  std::uint16_t port{};  // 80/443 when the URL has none
  std::string target;    // path and query, "/" when empty
};

// Accepts http://HOST[:PORT][/PATH][?QUERY] and https://...; HOST is a DNS name, an IPv4 address
// or a bracketed IPv6 address. Refuses other schemes, user info, fragments, spaces and control
// characters, and ports outside 1-65535. The error message never repeats the URL (it may carry a
// token in its path).
Result<HttpUrl> parse_http_url(std::string_view url);

}  // namespace cutover::core
