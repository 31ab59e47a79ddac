// ApiClient: the CLI's synchronous client of the controller's API (HTTP/1.1 over TCP on
// loopback, bearer token). Deliberately tiny and free of Boost includes.
//
// Thread-safety: one client per thread.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "core/result.hpp"

namespace cutover::api {

struct ClientResponse {
  int status = 0;
  std::string body;
};

class ApiClient {
 public:
  ApiClient(std::string address, std::string token,
            std::chrono::milliseconds timeout = std::chrono::seconds{10});

  // Any HTTP status is a value; only transport failures (refused, timeout, garbage) are errors.
  core::Result<ClientResponse> request(std::string_view method, std::string_view target,
                                       std::string_view body = {});

 private:
  std::string address_;
  std::string token_;
  std::chrono::milliseconds timeout_;
};

}  // namespace cutover::api
