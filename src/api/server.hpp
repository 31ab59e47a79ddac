// ApiServer: the controller's HTTP/1.1 JSON API on a loopback address. Every request must carry
// `Authorization: Bearer <token>`; the token is generated into the state directory (mode 0600) on
// the first start and read from there by the CLI.
//
// Thread-safety: start() and stop() from one thread; requests are served on the server's own
// thread (one io_context), never on the controller's loop.
#pragma once

#include <memory>
#include <string>

#include "core/result.hpp"

namespace cutover::controller {
class Controller;
}

namespace cutover::api {

struct ApiOptions {
  std::string address = "127.0.0.1:7070";  // host:port; port 0 picks a free one
  std::string token;
};

class ApiServer {
 public:
  ApiServer(controller::Controller& controller, ApiOptions options);
  ~ApiServer();
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  // Binds and starts serving. Fails with a clear error when the address is taken or invalid.
  core::Result<void> start();
  void stop();
  // "127.0.0.1:7070" as bound (the real port when 0 was asked).
  std::string bound_address() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Reads the token file in state_dir, creating it (32 random bytes, hex, mode 0600) if missing.
core::Result<std::string> load_or_create_token(const std::string& state_dir);

}  // namespace cutover::api
