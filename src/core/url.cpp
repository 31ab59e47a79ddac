#include "core/url.hpp"

#include <cctype>

#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>

namespace cutover::core {

namespace urls = boost::urls;

Result<HttpUrl> parse_http_url(std::string_view text) {
  // RFC 3986 syntax (spaces, control characters, bad ports) is Boost.URL's; the rest is what an
  // outbound HTTP request needs. Errors never repeat the URL (it may carry a token in its path).
  auto parsed = urls::parse_absolute_uri(text);
  if (!parsed) {
    return Error("is not a valid absolute URL (" + parsed.error().message() +
                 "; spaces and other special characters must be percent-encoded)");
  }
  const urls::url_view& u = *parsed;
  HttpUrl out;
  if (u.scheme_id() == urls::scheme::https) {
    out.tls = true;
  } else if (u.scheme_id() != urls::scheme::http) {
    return Error("must start with http:// or https://");
  }
  if (!u.has_authority()) return Error("has no host (expected http://HOST/...)");
  if (u.has_userinfo()) {
    return Error("must not carry user:password@ (use a secret and the signature instead)");
  }
  if (u.has_fragment()) return Error("must not have a #fragment");
  switch (u.host_type()) {
    case urls::host_type::ipv4:
    case urls::host_type::ipv6:
      out.host = std::string(u.host_address());
      break;
    case urls::host_type::name:
      // Percent-encoded names are not resolvable as written: refused rather than decoded.
      for (char c : u.encoded_host()) {
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_')) {
          return Error("has an invalid host name");
        }
      }
      out.host = std::string(u.encoded_host());
      break;
    default:
      return Error("has an invalid host");
  }
  if (out.host.empty()) return Error("has no host");
  out.port = out.tls ? 443 : 80;
  if (u.has_port()) {
    if (u.port().empty()) return Error("has an empty port");
    // Range-checked here: Boost.URL 1.81's port_number() wraps ports above 65535.
    const std::string_view digits(u.port().data(), u.port().size());
    bool ok = digits.size() <= 5;
    unsigned value = 0;
    for (char c : digits) {
      ok = ok && std::isdigit(static_cast<unsigned char>(c)) != 0;
      value = value * 10 + static_cast<unsigned>(c - '0');
    }
    if (!ok || value < 1 || value > 65535) return Error("has an invalid port (expected 1-65535)");
    out.port = static_cast<std::uint16_t>(value);
  }
  out.target = std::string(u.encoded_target());
  // Boost.URL 1.81 reads "h:8x/" as port 8 and path "x/": a path after an authority must begin
  // with '/', so anything else means the authority was malformed.
  if (!out.target.empty() && out.target.front() != '/' && out.target.front() != '?') {
    return Error("has an invalid port (expected 1-65535) or host");
  }
  if (out.target.empty() || out.target.front() == '?') out.target.insert(0, "/");
  return out;
}

}  // namespace cutover::core
