#include "runtime/task_definition.hpp"

#include <algorithm>

namespace cutover::runtime {

namespace {

using nlohmann::json;

int64_t ms(core::Duration d) { return d.count(); }

std::string_view health_kind(config::HealthKind k) {
  switch (k) {
    case config::HealthKind::None:
      return "none";
    case config::HealthKind::Command:
      return "command";
    case config::HealthKind::Http:
      return "http";
    case config::HealthKind::Tcp:
      return "tcp";
  }
  return "?";
}

json container_json(const config::Container& c) {
  json health = json::object();
  if (c.health.kind != config::HealthKind::None) {
    health = json{{"kind", health_kind(c.health.kind)},
                  {"interval_ms", ms(c.health.interval)},
                  {"timeout_ms", ms(c.health.timeout)},
                  {"retries", c.health.retries},
                  {"start_period_ms", ms(c.health.start_period)}};
    if (c.health.kind == config::HealthKind::Command) health["command"] = c.health.command;
    if (c.health.kind == config::HealthKind::Http) health["path"] = c.health.path;
  }
  json limits = json::object();
  if (c.limits.open_files) limits["open_files"] = *c.limits.open_files;
  if (c.limits.processes) limits["processes"] = *c.limits.processes;
  if (c.limits.memory) limits["memory"] = *c.limits.memory;
  if (c.limits.file_size) limits["file_size"] = *c.limits.file_size;
  if (c.limits.cpu_time) limits["cpu_time_ms"] = ms(*c.limits.cpu_time);
  json out{{"command", c.command},
           {"env", c.env},
           {"secrets", c.secrets},  // env var name -> secret name; never a value
           {"health", health},
           {"stop_signal", c.stop_signal},
           {"stop_timeout_ms", ms(c.stop_timeout)},
           {"limits", limits}};
  if (!c.image.empty()) out["image"] = c.image;
  if (c.port) out["port"] = *c.port;
  return out;
}

std::string show(const json* v) { return v ? v->dump() : "(none)"; }

void diff(const json* a, const json* b, const std::string& path, std::vector<std::string>& out) {
  if (a && b && a->is_object() && b->is_object()) {
    // Keys of both, in order (objects are sorted maps).
    std::vector<std::string> keys;
    for (auto it = a->begin(); it != a->end(); ++it) keys.push_back(it.key());
    for (auto it = b->begin(); it != b->end(); ++it) {
      if (!a->contains(it.key())) keys.push_back(it.key());
    }
    std::sort(keys.begin(), keys.end());
    for (const auto& k : keys) {
      const json* av = a->contains(k) ? &(*a)[k] : nullptr;
      const json* bv = b->contains(k) ? &(*b)[k] : nullptr;
      diff(av, bv, path.empty() ? k : path + "." + k, out);
    }
    return;
  }
  if (a && b && *a == *b) return;
  out.push_back(path + ": " + show(a) + " -> " + show(b));
}

// Containers as an object keyed by name, so that they are matched by name, not position.
json by_name(const json& def) {
  json copy = def;
  if (copy.contains("containers") && copy["containers"].is_array()) {
    json named = json::object();
    for (const auto& c : copy["containers"]) {
      json rest = c;
      const std::string name = rest.value("name", "");
      rest.erase("name");
      named["[" + name + "]"] = rest;
    }
    copy["containers"] = named;
  }
  return copy;
}

}  // namespace

json task_definition(const config::Service& service) {
  json containers = json::array();
  for (const auto& c : service.task.containers) {
    json j = container_json(c);
    j["name"] = c.name;
    containers.push_back(std::move(j));
  }
  return json{{"driver", config::to_string(service.driver)},
              {"count", service.task.count},
              {"containers", containers}};
}

std::vector<std::string> diff_task_definitions(const json& from, const json& to) {
  std::vector<std::string> out;
  const json a = by_name(from);
  const json b = by_name(to);
  diff(&a, &b, "", out);
  // "containers.[app].env" reads better as "containers[app].env".
  for (auto& line : out) {
    const size_t end = line.find(": ");
    size_t at = line.find(".[");
    if (at != std::string::npos && at < end) line.erase(at, 1);
  }
  return out;
}

}  // namespace cutover::runtime
