#include "api/routes.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "controller/controller.hpp"

namespace cutover::api {

namespace {

Response from(const core::Result<nlohmann::json>& r) {
  // Task logs are whatever the tasks printed: invalid UTF-8 becomes U+FFFD instead of throwing.
  if (r.ok())
    return Response{200, r->dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"};
  switch (r.error().kind) {
    case core::ErrorKind::NotFound:
      return error_response(404, r.error().message);
    case core::ErrorKind::Conflict:
      return error_response(409, r.error().message);
    case core::ErrorKind::Unavailable:
      return error_response(503, r.error().message);
    case core::ErrorKind::Internal:
      return error_response(500, r.error().message);
    case core::ErrorKind::Invalid:
      return error_response(400, r.error().message);
  }
  return error_response(500, r.error().message);
}

// Splits "/v1/a/b" into {"v1","a","b"}.
std::vector<std::string> segments(const std::string& path) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < path.size()) {
    if (path[i] == '/') {
      ++i;
      continue;
    }
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    out.push_back(path.substr(i, j - i));
    i = j;
  }
  return out;
}

int64_t int_param(const Request& r, const std::string& name, int64_t fallback) {
  auto it = r.query.find(name);
  if (it == r.query.end()) return fallback;
  try {
    return std::stoll(it->second);
  } catch (...) {
    return fallback;
  }
}

std::string header(const Request& r, const std::string& lower_name) {
  auto it = r.headers.find(lower_name);
  return it == r.headers.end() ? "" : it->second;
}

// POST /v1/webhooks/{github,gitlab,generic}: 202 and a fetch when the signature verifies, 200 for
// GitHub's ping, 401 otherwise (also when no secret is configured: the message says which to set).
Response webhook(controller::Controller& c, const std::string& provider, const Request& r) {
  using V = controller::Controller::WebhookVerdict;
  controller::Controller::WebhookRequest w;
  w.provider = provider;
  w.signature = provider == "github"   ? header(r, "x-hub-signature-256")
                : provider == "gitlab" ? header(r, "x-gitlab-token")
                                       : header(r, "x-cutover-signature");
  w.event = header(r, "x-github-event");
  w.body = r.body;
  w.remote = r.remote;
  auto reply = c.receive_webhook(w);
  switch (reply.verdict) {
    case V::Accepted:
      return Response{202, nlohmann::json{{"status", "fetching"}}.dump() + "\n"};
    case V::Ping:
      return Response{200, nlohmann::json{{"status", "pong"}}.dump() + "\n"};
    case V::UnknownProvider:
      return error_response(404, reply.message);
    case V::Unauthorized:
    case V::NotConfigured:
      break;
  }
  return error_response(401, reply.message);
}

}  // namespace

Response route(controller::Controller& c, const Request& r) {
  const auto s = segments(r.path);
  if (s.empty() || s[0] != "v1") return error_response(404, "no such resource: " + r.path);
  const bool get = r.method == "GET";
  if (s.size() == 2 && s[1] == "health" && get) return Response{200, "{\"status\":\"ok\"}\n"};
  if (s.size() == 2 && s[1] == "status" && get) {
    auto it = r.query.find("service");
    return from(c.status(it == r.query.end() ? "" : it->second));
  }
  if (s.size() == 4 && s[1] == "services" && s[3] == "history" && get) return from(c.history(s[2]));
  if (s.size() == 4 && s[1] == "services" && s[3] == "task-definitions" && get) {
    return from(c.task_definitions(s[2]));
  }
  if (s.size() == 5 && s[1] == "services" && s[3] == "task-definitions" && s[4] == "diff" && get) {
    const int64_t a = int_param(r, "from", 0);
    const int64_t b = int_param(r, "to", 0);
    if (a < 1 || b < 1) {
      return error_response(400, "diff needs ?from=REVISION&to=REVISION (numbers from 1)");
    }
    return from(c.task_definition_diff(s[2], a, b));
  }
  if (s.size() == 4 && s[1] == "services" && s[3] == "logs" && get) {
    auto task = r.query.find("task");
    std::optional<int64_t> offset;
    if (r.query.count("offset")) offset = std::max<int64_t>(0, int_param(r, "offset", 0));
    return from(c.task_logs(s[2], task == r.query.end() ? "" : task->second, offset,
                            static_cast<int>(int_param(r, "lines", 100))));
  }
  if (s.size() == 2 && s[1] == "executions" && get) {
    return from(c.executions(static_cast<int>(int_param(r, "limit", 20))));
  }
  if (s.size() == 3 && s[1] == "executions" && get) return from(c.execution(s[2]));
  if (s.size() == 2 && s[1] == "audit" && get) {
    return from(
        c.audit(std::max<int64_t>(0, int_param(r, "after", 0)),
                static_cast<int>(std::clamp<int64_t>(int_param(r, "limit", 100), 1, 10000))));
  }
  if (s.size() == 4 && s[1] == "executions" && s[3] == "logs" && get) {
    return from(
        c.logs(s[2], int_param(r, "after", 0), static_cast<int>(int_param(r, "limit", 1000))));
  }
  if (s.size() == 4 && s[1] == "executions" && r.method == "POST" &&
      (s[3] == "cancel" || s[3] == "approve" || s[3] == "reject")) {
    auto body = nlohmann::json::parse(r.body.empty() ? "{}" : r.body, nullptr, false);
    if (!body.is_object()) return error_response(400, "the body must be a JSON object");
    const auto text = [&](const char* key, size_t limit) -> std::string {
      return body.contains(key) && body[key].is_string()
                 ? body[key].get<std::string>().substr(0, limit)
                 : "";
    };
    if (s[3] == "cancel") return from(c.cancel(s[2], text("user", 64)));
    return from(
        c.decide_approval(s[2], s[3] == "approve", text("user", 64), text("comment", 1000)));
  }
  if (s.size() == 4 && s[1] == "services" && r.method == "POST" &&
      (s[3] == "rollback" || s[3] == "abort" || s[3] == "promote" || s[3] == "retry")) {
    auto body = nlohmann::json::parse(r.body.empty() ? "{}" : r.body, nullptr, false);
    if (!body.is_object()) return error_response(400, "the body must be a JSON object");
    const std::string who = body.contains("user") && body["user"].is_string()
                                ? body["user"].get<std::string>().substr(0, 64)
                                : "";
    auto res = c.operate(s[2], s[3], who);
    if (res) return Response{202, res->dump(2) + "\n"};
    return from(res);
  }
  // Secrets: the name may contain '/' (web/database-url), so it is the rest of the path. PUT's
  // body is the raw value; no response ever contains a value.
  if (s.size() >= 2 && s[1] == "secrets") {
    std::string name;
    for (size_t i = 2; i < s.size(); ++i) name += (i > 2 ? "/" : "") + s[i];
    if (name.empty() && get) return from(c.list_secrets());
    if (!name.empty() && r.method == "PUT") return from(c.set_secret(name, r.body));
    if (!name.empty() && r.method == "DELETE") return from(c.remove_secret(name));
    return error_response(405, "secrets: use GET /v1/secrets, PUT or DELETE /v1/secrets/NAME");
  }
  if (s.size() == 2 && s[1] == "registry" && get) {
    auto it = r.query.find("service");
    return from(c.registry_list(it == r.query.end() ? "" : it->second));
  }
  if (s.size() == 3 && s[1] == "registry" && s[2] == "key" && get) return from(c.registry_key());
  if (s.size() == 3 && s[1] == "registry" && s[2] == "gc" && r.method == "POST") {
    auto body = nlohmann::json::parse(r.body.empty() ? "{}" : r.body, nullptr, false);
    if (!body.is_object()) return error_response(400, "the body must be a JSON object");
    const bool dry_run =
        body.contains("dry_run") && body["dry_run"].is_boolean() && body["dry_run"].get<bool>();
    const std::string who = body.contains("user") && body["user"].is_string()
                                ? body["user"].get<std::string>().substr(0, 64)
                                : "";
    return from(c.registry_gc(dry_run, who));
  }
  if (s.size() >= 2 && s[1] == "webhooks") return route_webhook(c, r);
  if (s.size() == 2 && s[1] == "poll" && r.method == "POST") {
    c.request_poll();
    return Response{202, "{\"status\":\"polling\"}\n"};
  }
  return error_response(r.method == "GET" || r.method == "POST" ? 404 : 405,
                        "no such resource: " + r.method + " " + r.path);
}

Response route_webhook(controller::Controller& c, const Request& r) {
  const auto s = segments(r.path);
  if (s.size() != 3 || s[0] != "v1" || s[1] != "webhooks") {
    return error_response(404, "no such webhook: " + r.path.substr(0, 100) +
                                   " (use /v1/webhooks/github, gitlab or generic)");
  }
  if (r.method != "POST") return error_response(405, "webhooks: use POST /v1/webhooks/" + s[2]);
  return webhook(c, s[2], r);
}

}  // namespace cutover::api
