#include "proxy/handoff.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "core/fd.hpp"

namespace cutover::proxy::handoff {
namespace {

std::string errno_text(const char* what) {
  return fmt::format("{}: {}", what, std::strerror(errno));
}

// Writes all of data; the first message may carry descriptors.
core::Result<void> send_all(int fd, const char* data, std::size_t size, Deadline deadline) {
  std::size_t sent = 0;
  while (sent < size) {
    ssize_t n = ::send(fd, data + sent, size - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      sent += static_cast<std::size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (!core::wait_ready(fd, POLLOUT, deadline)) return core::Error("send timed out");
    } else {
      return core::Error(errno_text("send"));
    }
  }
  return core::ok();
}

// Reads exactly `size` bytes (never more: what follows may carry descriptors).
core::Result<void> read_exact(int fd, char* data, std::size_t size, Deadline deadline) {
  std::size_t got = 0;
  while (got < size) {
    ssize_t n = ::recv(fd, data + got, size - got, MSG_DONTWAIT);
    if (n > 0) {
      got += static_cast<std::size_t>(n);
    } else if (n == 0) {
      return core::Error("the peer closed the connection", core::ErrorKind::Unavailable);
    } else if (errno == EAGAIN || errno == EINTR) {
      if (!core::wait_ready(fd, POLLIN, deadline))
        return core::Error("timed out waiting for the peer", core::ErrorKind::Unavailable);
    } else {
      return core::Error(errno_text("recv"), core::ErrorKind::Unavailable);
    }
  }
  return core::ok();
}

}  // namespace

std::filesystem::path socket_path(const std::filesystem::path& admin_socket) {
  return admin_socket.string() + ".handoff";
}

core::Result<int> connect_unix(const std::filesystem::path& path, Deadline deadline) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string p = path.string();
  if (p.size() >= sizeof(addr.sun_path))
    return core::Error(
        fmt::format("{}: socket path longer than {} bytes", p, sizeof(addr.sun_path) - 1));
  std::memcpy(addr.sun_path, p.c_str(), p.size() + 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return core::Error(errno_text("socket"));
  auto fail = [fd](core::Error e) {
    ::close(fd);
    return e;
  };
  for (;;) {
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) break;
    if (errno == ENOENT || errno == ECONNREFUSED)
      return fail(
          core::Error(fmt::format("{}: {}", p, std::strerror(errno)), core::ErrorKind::NotFound));
    if (errno != EAGAIN && errno != EINTR)
      return fail(core::Error(fmt::format("connect to {}: {}", p, std::strerror(errno))));
    // A full backlog (a Unix socket does not connect in the background): alive but slow.
    if (std::chrono::steady_clock::now() >= deadline)
      return fail(core::Error(fmt::format("connect to {}: timed out", p)));
    ::usleep(10'000);
  }
  return fd;
}

core::Result<void> send_frame(int fd, const nlohmann::json& msg, Deadline deadline) {
  const std::string body = msg.dump();
  if (body.size() > kMaxFrameBytes)
    return core::Error(
        fmt::format("message of {} bytes exceeds the limit of {}", body.size(), kMaxFrameBytes));
  std::string frame(4, '\0');
  const auto n = static_cast<uint32_t>(body.size());
  frame[0] = static_cast<char>(n >> 24);
  frame[1] = static_cast<char>(n >> 16);
  frame[2] = static_cast<char>(n >> 8);
  frame[3] = static_cast<char>(n);
  frame += body;
  return send_all(fd, frame.data(), frame.size(), deadline);
}

core::Result<nlohmann::json> read_frame(int fd, Deadline deadline) {
  unsigned char header[4];
  if (auto r = read_exact(fd, reinterpret_cast<char*>(header), 4, deadline); !r) return r.error();
  const uint32_t n = (uint32_t{header[0]} << 24) | (uint32_t{header[1]} << 16) |
                     (uint32_t{header[2]} << 8) | uint32_t{header[3]};
  if (n > kMaxFrameBytes)
    return core::Error(
        fmt::format("message of {} bytes exceeds the limit of {}", n, kMaxFrameBytes));
  std::string body(n, '\0');
  if (auto r = read_exact(fd, body.data(), n, deadline); !r) return r.error();
  auto msg = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (msg.is_discarded() || !msg.is_object() || !msg.contains("op") || !msg["op"].is_string())
    return core::Error("malformed message (not a JSON object with \"op\")");
  if (!msg.contains("protocol") || msg["protocol"] != kProtocol)
    return core::Error(fmt::format("handoff protocol {} is not supported (this binary speaks {})",
                                   msg.value("protocol", nlohmann::json()).dump(), kProtocol));
  if (msg["op"] == "error")
    return core::Error(msg.value("message", std::string("unspecified error")));
  return msg;
}

core::Result<void> send_fds(int fd, const std::vector<int>& fds, Deadline deadline) {
  for (std::size_t i = 0; i < fds.size(); i += kMaxFdsPerMessage) {
    const std::size_t count = std::min(kMaxFdsPerMessage, fds.size() - i);
    char byte = 'F';
    iovec iov{&byte, 1};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * count);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * count);
    std::memcpy(CMSG_DATA(c), fds.data() + i, sizeof(int) * count);
    for (;;) {
      ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n == 1) break;
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        if (!core::wait_ready(fd, POLLOUT, deadline)) return core::Error("sendmsg timed out");
        continue;
      }
      return core::Error(errno_text("sendmsg"));
    }
  }
  return core::ok();
}

core::Result<std::vector<int>> receive_fds(int fd, std::size_t count, Deadline deadline) {
  std::vector<int> out;
  auto fail = [&](std::string why, core::ErrorKind kind = core::ErrorKind::Invalid) {
    for (int f : out) ::close(f);
    return core::Error(std::move(why), kind);
  };
  while (out.size() < count) {
    char byte = 0;
    iovec iov{&byte, 1};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (!core::wait_ready(fd, POLLIN, deadline))
        return fail("timed out waiting for the listening sockets", core::ErrorKind::Unavailable);
      continue;
    }
    if (n < 0) return fail(errno_text("recvmsg"), core::ErrorKind::Unavailable);
    if (n == 0)
      return fail("the peer closed the connection before sending every listening socket",
                  core::ErrorKind::Unavailable);
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const std::size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t j = 0; j < k; ++j) {
        int f = -1;
        std::memcpy(&f, CMSG_DATA(c) + j * sizeof(int), sizeof(int));
        out.push_back(f);
      }
    }
    if (msg.msg_flags & MSG_CTRUNC) return fail("descriptors truncated (MSG_CTRUNC)");
    if (byte != 'F') return fail("unexpected byte in the descriptor stream");
  }
  if (out.size() != count)
    return fail(fmt::format("expected {} listening sockets, got {}", count, out.size()));
  return out;
}

ino_t inode_of(const std::filesystem::path& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return 0;
  return st.st_ino;
}

nlohmann::json message(std::string_view op) {
  return nlohmann::json{{"protocol", kProtocol}, {"op", op}};
}

nlohmann::json error_message(std::string_view text) {
  auto m = message("error");
  m["message"] = text;
  return m;
}

}  // namespace cutover::proxy::handoff
