#include "proxy/admin_client.hpp"

#include "core/fd.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <nlohmann/json.hpp>

namespace cutover::proxy {
namespace {

namespace http = boost::beast::http;
using Clock = std::chrono::steady_clock;
constexpr size_t kMaxResponseBytes = 64 * 1024 * 1024;

}  // namespace

AdminClient::AdminClient(std::filesystem::path socket, std::chrono::milliseconds timeout)
    : socket_(std::move(socket)), timeout_(timeout) {}

core::Result<std::string> AdminClient::request(std::string_view method, std::string_view path,
                                               std::string_view body) {
  const std::string what = fmt::format("{} {}", method, path);
  auto fail = [&](const std::string& why) {
    return core::Error(fmt::format("proxy admin {} via {}: {}", what, socket_.string(), why));
  };
  const auto deadline = Clock::now() + timeout_;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string p = socket_.string();
  if (p.size() >= sizeof(addr.sun_path)) return fail("socket path too long");
  std::memcpy(addr.sun_path, p.c_str(), p.size() + 1);
  core::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) return fail(std::strerror(errno));
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    if (errno != EINPROGRESS && errno != EAGAIN) return fail(std::strerror(errno));
    if (!core::wait_ready(fd.get(), POLLOUT, deadline)) return fail("connect timed out");
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return fail(std::strerror(err));
  }
  std::string out = fmt::format(
      "{} {} HTTP/1.1\r\nHost: cutover-proxy\r\nConnection: close\r\nContent-Type: "
      "application/json\r\nContent-Length: {}\r\n\r\n",
      method, path, body.size());
  out.append(body);
  size_t sent = 0;
  while (sent < out.size()) {
    ssize_t n = ::send(fd.get(), out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (!core::wait_ready(fd.get(), POLLOUT, deadline)) return fail("send timed out");
    } else {
      return fail(fmt::format("send: {}", std::strerror(errno)));
    }
  }
  std::string in;
  char buf[16 * 1024];
  for (;;) {
    ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n > 0) {
      in.append(buf, static_cast<size_t>(n));
      if (in.size() > kMaxResponseBytes) return fail("response too large");
    } else if (n == 0) {
      break;
    } else if (errno == EAGAIN || errno == EINTR) {
      if (!core::wait_ready(fd.get(), POLLIN, deadline)) return fail("no response in time");
    } else {
      return fail(fmt::format("recv: {}", std::strerror(errno)));
    }
  }
  if (in.empty()) return fail("the proxy closed the connection without answering");
  http::response_parser<http::string_body> parser;
  parser.eager(true);
  parser.body_limit(kMaxResponseBytes);
  boost::system::error_code ec;
  parser.put(boost::asio::buffer(in), ec);
  if (ec == http::error::need_more || (!ec && !parser.is_done())) parser.put_eof(ec);
  if (ec || !parser.is_done())
    return fail(fmt::format("invalid HTTP response: {}", ec ? ec.message() : "incomplete"));
  const auto& res = parser.get();
  int status = res.result_int();
  if (status >= 200 && status < 300) return std::string(res.body());
  std::string message = res.body();
  auto j = nlohmann::json::parse(res.body(), nullptr, false);
  if (j.is_object() && j.contains("error") && j["error"].is_string())
    message = j["error"].get<std::string>();
  auto error = fail(fmt::format("{}: {}", status, message));
  if (status == 404) error.kind = core::ErrorKind::NotFound;
  return error;
}

core::Result<std::string> AdminClient::get(std::string_view path) {
  return request("GET", path, "");
}

core::Result<std::string> AdminClient::put(std::string_view path, std::string_view body) {
  return request("PUT", path, body);
}

core::Result<ProxyHealth> AdminClient::health() {
  auto body = get("/health");
  if (!body.ok()) return body.error();
  auto j = nlohmann::json::parse(*body, nullptr, false);
  if (!j.is_object() || !j.contains("version") || !j["version"].is_number_unsigned())
    return core::Error("proxy admin GET /health: unexpected answer: " + *body);
  ProxyHealth h;
  h.status = j.value("status", "");
  h.version = j["version"].get<std::uint64_t>();
  h.pid = j.value("pid", 0);
  return h;
}

core::Result<void> AdminClient::put_snapshot(const RouteSnapshot& snapshot) {
  auto body = put("/snapshot", to_json(snapshot));
  if (!body.ok()) return body.error();
  return core::ok();
}

core::Result<RouteSnapshot> AdminClient::get_snapshot() {
  auto body = get("/snapshot");
  if (!body.ok()) return body.error();
  return parse_snapshot(*body);
}

core::Result<std::map<std::string, std::string>> AdminClient::target_health() {
  auto body = get("/targets");
  if (!body.ok()) return body.error();
  auto j = nlohmann::json::parse(*body, nullptr, false);
  std::map<std::string, std::string> out;
  try {
    for (const auto& g : j.at("target_groups"))
      for (const auto& t : g.at("targets")) {
        auto id = t.at("id").get<std::string>();
        auto state = t.at("state").get<std::string>();
        // A target both draining (old group) and live (new group): the live state wins.
        if (!out.count(id) || out[id] == "draining") out[id] = state;
      }
  } catch (const std::exception& e) {
    return core::Error(std::string("proxy admin GET /targets: unexpected answer: ") + e.what());
  }
  return out;
}

core::Result<StatsSeries> AdminClient::stats_series(const SeriesQuery& query) {
  const std::string path = series_path(query);
  auto body = get(path);
  if (!body.ok()) return body.error();
  auto parsed = parse_stats_series(*body);
  if (!parsed.ok()) return parsed.error().wrap("proxy admin GET " + path);
  return parsed;
}

}  // namespace cutover::proxy
