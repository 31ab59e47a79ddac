#include "api/client.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/fd.hpp"

namespace cutover::api {

ApiClient::ApiClient(std::string address, std::string token, std::chrono::milliseconds timeout)
    : address_(std::move(address)), token_(std::move(token)), timeout_(timeout) {}

core::Result<ClientResponse> ApiClient::request(std::string_view method, std::string_view target,
                                                std::string_view body) {
  const auto colon = address_.rfind(':');
  if (colon == std::string::npos) {
    return core::Error("invalid API address \"" + address_ + "\" (expected host:port)");
  }
  const std::string host = address_.substr(0, colon);
  const std::string port = address_.substr(colon + 1);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0) {
    return core::Error("cannot resolve API address " + address_ + ": " + gai_strerror(rc));
  }
  core::UniqueFd fd(::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  int rc = ::connect(fd.get(), res->ai_addr, res->ai_addrlen);
  ::freeaddrinfo(res);
  const std::string where = "the cutover API at " + address_;
  if (rc != 0 && errno != EINPROGRESS) {
    return core::Error("cannot connect to " + where + ": " + std::strerror(errno) +
                       " (is `cutover serve` running?)");
  }
  if (!core::wait_ready(fd.get(), POLLOUT, deadline)) {
    return core::Error("timed out connecting to " + where);
  }
  int soerr = 0;
  socklen_t len = sizeof soerr;
  ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &soerr, &len);
  if (soerr != 0) {
    return core::Error("cannot connect to " + where + ": " + std::strerror(soerr) +
                       " (is `cutover serve` running?)");
  }

  std::string req;
  req.append(method).append(" ").append(target).append(" HTTP/1.1\r\n");
  req.append("Host: ").append(address_).append("\r\n");
  req.append("Authorization: Bearer ").append(token_).append("\r\n");
  req.append("Connection: close\r\n");
  if (!body.empty() || method == "POST" || method == "PUT") {
    req.append("Content-Type: application/json\r\n");
    req.append("Content-Length: ").append(std::to_string(body.size())).append("\r\n");
  }
  req.append("\r\n").append(body);
  size_t off = 0;
  while (off < req.size()) {
    if (!core::wait_ready(fd.get(), POLLOUT, deadline))
      return core::Error("timed out writing to " + where);
    ssize_t n = ::send(fd.get(), req.data() + off, req.size() - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return core::Error("cannot write to " + where + ": " + std::strerror(errno));
    }
    off += static_cast<size_t>(n);
  }

  // The server answers with Content-Length and closes (we asked for Connection: close).
  std::string raw;
  char buf[65536];
  while (true) {
    if (!core::wait_ready(fd.get(), POLLIN, deadline))
      return core::Error("timed out reading from " + where);
    ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return core::Error("cannot read from " + where + ": " + std::strerror(errno));
    }
    if (n == 0) break;
    raw.append(buf, static_cast<size_t>(n));
    if (raw.size() > (64u << 20)) return core::Error("response from " + where + " is too large");
  }
  const auto head_end = raw.find("\r\n\r\n");
  if (raw.rfind("HTTP/1.", 0) != 0 || head_end == std::string::npos || raw.size() < 12) {
    return core::Error("malformed HTTP response from " + where);
  }
  ClientResponse out;
  out.status = std::atoi(raw.c_str() + 9);
  out.body = raw.substr(head_end + 4);
  return out;
}

}  // namespace cutover::api
