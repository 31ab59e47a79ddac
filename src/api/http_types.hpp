// Plain request/response values that the API's routes work on, free of Boost.Beast so that the
// routes and their tests compile fast. The server (server.cpp) converts to and from Beast.
#pragma once

#include <map>
#include <string>

namespace cutover::api {

struct Request {
  std::string method;  // "GET", "POST", ...
  std::string path;    // without the query: "/v1/executions/ex-1/logs"
  std::map<std::string, std::string> query;
  std::string body;
  std::map<std::string, std::string> headers;  // names in lower case
  std::string remote;                          // peer address, for logs
};

struct Response {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
};

// {"error": message} with the given status.
Response error_response(int status, const std::string& message);

}  // namespace cutover::api
