#include "core/url.hpp"

#include <cctype>

namespace cutover::core {

Result<HttpUrl> parse_http_url(std::string_view url) {
  HttpUrl out;
  std::string_view rest;
  if (url.starts_with("http://")) {
    rest = url.substr(7);
  } else if (url.starts_with("https://")) {
    out.tls = true;
    rest = url.substr(8);
  } else {
    return Error("must start with http:// or https://");
  }
  for (char c : url) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
      return Error("must not contain spaces or control characters");
    }
  }
  if (url.find('#') != std::string_view::npos) return Error("must not have a #fragment");
  const auto end = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, end);
  out.target = end == std::string_view::npos ? "/" : std::string(rest.substr(end));
  if (out.target.front() == '?') out.target.insert(0, "/");
  if (authority.find('@') != std::string_view::npos) {
    return Error("must not carry user:password@ (use a secret and the signature instead)");
  }
  std::string_view port;
  if (authority.starts_with("[")) {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) return Error("has an unclosed [IPv6 address");
    out.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return Error("has garbage after the ]");
      port = after.substr(1);
      if (port.empty()) return Error("has an empty port");
    }
  } else {
    const auto colon = authority.rfind(':');
    out.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) {
      port = authority.substr(colon + 1);
      if (port.empty()) return Error("has an empty port");
    }
    for (char c : out.host) {
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_')) {
        return Error("has an invalid host name");
      }
    }
  }
  if (out.host.empty()) return Error("has no host");
  if (port.empty()) {
    out.port = out.tls ? 443 : 80;
    return out;
  }
  unsigned value = 0;
  for (char c : port) {
    if (!std::isdigit(static_cast<unsigned char>(c)) || port.size() > 5) {
      return Error("has an invalid port (expected 1-65535)");
    }
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  if (value < 1 || value > 65535) return Error("has an invalid port (expected 1-65535)");
  out.port = static_cast<std::uint16_t>(value);
  return out;
}

}  // namespace cutover::core
