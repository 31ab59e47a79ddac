// The socket handoff between two `cutover proxy` processes: the wire protocol and the blocking
// socket helpers both sides use (the new process in Proxy::start(), the old one on a short-lived
// session thread). Not a public header of the proxy module; see proxy.hpp for the whole story.
//
// A running proxy listens on `<admin_socket>.handoff` (Unix stream socket, mode 0600). Messages
// are frames: a 4-byte big-endian length, then that many bytes of JSON (at most kMaxFrameBytes).
// Every message carries "protocol": kProtocol and "op". Listening sockets travel as SCM_RIGHTS
// ancillary data on one-byte messages after the "offer" frame, at most kMaxFdsPerMessage each.
//
//   new                                          old
//    │── takeover {pid} ───────────────────────▶ │ busy?  ──▶ error {message}, close
//    │                                           │ freeze snapshots (PUT /snapshot -> 503)
//    │◀── offer {pid, snapshot, targets,  ────── │
//    │          listeners:[{address, sockets}]}  │
//    │◀── fds (sum of sockets, in order) ─────── │
//    │ adopt fds, apply snapshot, start workers, │
//    │ bind admin + handoff sockets at temporary │
//    │ paths                                     │
//    │── ready {admin_socket, handoff_socket} ─▶ │ rename(tmp admin, admin)   ◀── commit point
//    │                                           │ rename(tmp handoff, handoff)
//    │◀── committed ──────────────────────────── │ stop accepting, drain, exit 0
//
// Who owns the admin socket is decided by one atomic file system operation on the temporary
// admin path: the old process commits with rename(tmp, admin); a new process that gives up
// (timeout, error, lost connection) first unlink(tmp)s. Exactly one of the two succeeds, so
// the processes can never disagree about who serves, whatever times out where.
//
// Thread-safety: free functions without shared state.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/result.hpp"

namespace cutover::proxy::handoff {

inline constexpr int kProtocol = 1;
inline constexpr std::size_t kMaxFrameBytes = 64 * 1024 * 1024;
inline constexpr std::size_t kMaxFdsPerMessage = 64;  // the kernel's SCM_MAX_FD is 253

// Every wait of the protocol has one of these.
inline constexpr std::chrono::seconds kConnectTimeout{5};  // connect + takeover -> offer
inline constexpr std::chrono::seconds kReadyTimeout{15};   // offer -> ready (the new one starts)
inline constexpr std::chrono::seconds kCommitTimeout{15};  // ready -> committed

using Deadline = std::chrono::steady_clock::time_point;

std::filesystem::path socket_path(const std::filesystem::path& admin_socket);

// Connects to a Unix stream socket. kind NotFound: nobody listens there (no such file, or a
// socket file left by a dead process); anything else is another error.
core::Result<int> connect_unix(const std::filesystem::path& path, Deadline deadline);

core::Result<void> send_frame(int fd, const nlohmann::json& message, Deadline deadline);
// One frame; an "error" message from the peer becomes an Error carrying its message.
core::Result<nlohmann::json> read_frame(int fd, Deadline deadline);

core::Result<void> send_fds(int fd, const std::vector<int>& fds, Deadline deadline);
// Exactly `count` descriptors (close-on-exec); on error the ones received are closed.
core::Result<std::vector<int>> receive_fds(int fd, std::size_t count, Deadline deadline);

// The inode a path names, 0 if none: tells whether a socket path still belongs to us.
ino_t inode_of(const std::filesystem::path& path);

nlohmann::json message(std::string_view op);  // {"protocol": kProtocol, "op": op}
nlohmann::json error_message(std::string_view text);

}  // namespace cutover::proxy::handoff
