#include "proxy/snapshot.hpp"

#include <charconv>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace cutover::proxy {
namespace {

using core::Error;
using core::Result;
using nlohmann::json;

// Strict field readers: a missing required key, a wrong type or an unknown key is an error that
// names the JSON path.
class ObjectReader {
 public:
  ObjectReader(const json& j, std::string path) : j_(j), path_(std::move(path)) {}

  Result<void> check_object() const {
    if (!j_.is_object()) return Error(fmt::format("{}: expected an object", where()));
    return core::ok();
  }
  Result<void> check_keys(std::initializer_list<std::string_view> known) const {
    for (const auto& [key, _] : j_.items()) {
      bool found = false;
      for (auto k : known) found = found || k == key;
      if (!found) return Error(fmt::format("{}: unknown key \"{}\"", where(), key));
    }
    return core::ok();
  }
  bool has(const char* key) const { return j_.contains(key); }
  std::string field(const char* key) const {
    return path_.empty() ? key : fmt::format("{}.{}", path_, key);
  }

  Result<std::string> string(const char* key) const {
    auto it = j_.find(key);
    if (it == j_.end()) return Error(fmt::format("{}: is required", field(key)));
    if (!it->is_string()) return Error(fmt::format("{}: expected a string", field(key)));
    return it->get<std::string>();
  }
  Result<int64_t> integer(const char* key, int64_t min, int64_t max) const {
    auto it = j_.find(key);
    if (it == j_.end()) return Error(fmt::format("{}: is required", field(key)));
    if (!it->is_number_integer()) return Error(fmt::format("{}: expected an integer", field(key)));
    int64_t v = 0;
    if (it->is_number_unsigned()) {
      auto u = it->get<uint64_t>();
      if (u > static_cast<uint64_t>(max))
        return Error(fmt::format("{}: must be {}..{}, got {}", field(key), min, max, u));
      v = static_cast<int64_t>(u);
    } else {
      v = it->get<int64_t>();
    }
    if (v < min || v > max)
      return Error(fmt::format("{}: must be {}..{}, got {}", field(key), min, max, v));
    return v;
  }
  Result<const json*> array(const char* key) const {
    auto it = j_.find(key);
    if (it == j_.end()) return Error(fmt::format("{}: is required", field(key)));
    if (!it->is_array()) return Error(fmt::format("{}: expected an array", field(key)));
    return &*it;
  }

 private:
  std::string where() const { return path_.empty() ? "snapshot" : path_; }
  const json& j_;
  std::string path_;
};

#define CUTOVER_TRY(var, expr)               \
  auto var##_r = (expr);                     \
  if (!var##_r.ok()) return var##_r.error(); \
  auto var = std::move(var##_r).value()

#define CUTOVER_CHECK(expr)          \
  do {                               \
    auto r_ = (expr);                \
    if (!r_.ok()) return r_.error(); \
  } while (0)

Result<Route> parse_route(const json& j, const std::string& path) {
  ObjectReader r(j, path);
  CUTOVER_CHECK(r.check_object());
  CUTOVER_CHECK(r.check_keys({"target_group", "weight"}));
  Route route;
  CUTOVER_TRY(group, r.string("target_group"));
  CUTOVER_TRY(weight, r.integer("weight", 0, kWeightTotal));
  route.target_group = std::move(group);
  route.weight = static_cast<int>(weight);
  return route;
}

Result<Listener> parse_listener(const json& j, const std::string& path) {
  ObjectReader r(j, path);
  CUTOVER_CHECK(r.check_object());
  CUTOVER_CHECK(
      r.check_keys({"name", "address", "routes", "sticky", "tls", "redirect_https_port"}));
  Listener l;
  CUTOVER_TRY(name, r.string("name"));
  CUTOVER_TRY(address, r.string("address"));
  l.name = std::move(name);
  l.address = std::move(address);
  if (r.has("routes")) {
    CUTOVER_TRY(routes, r.array("routes"));
    for (size_t i = 0; i < routes->size(); ++i) {
      CUTOVER_TRY(route, parse_route((*routes)[i], fmt::format("{}.routes[{}]", path, i)));
      l.routes.push_back(std::move(route));
    }
  }
  if (r.has("sticky")) {
    ObjectReader sr(j.at("sticky"), path + ".sticky");
    CUTOVER_CHECK(sr.check_object());
    CUTOVER_CHECK(sr.check_keys({"cookie"}));
    CUTOVER_TRY(cookie, sr.string("cookie"));
    if (cookie.empty()) return Error(path + ".sticky.cookie: must not be empty");
    l.sticky_cookie = std::move(cookie);
  }
  if (r.has("tls")) {
    ObjectReader tr(j.at("tls"), path + ".tls");
    CUTOVER_CHECK(tr.check_object());
    CUTOVER_CHECK(tr.check_keys({"cert", "key"}));
    CUTOVER_TRY(cert, tr.string("cert"));
    CUTOVER_TRY(key, tr.string("key"));
    if (cert.empty() || key.empty())
      return Error(path + ".tls: cert and key must both be file paths");
    l.tls_cert = std::move(cert);
    l.tls_key = std::move(key);
  }
  if (r.has("redirect_https_port")) {
    CUTOVER_TRY(port, r.integer("redirect_https_port", 1, 65535));
    l.redirect_https_port = static_cast<int>(port);
  }
  return l;
}

Result<PassiveEjection> parse_passive_ejection(const json& j, const std::string& path) {
  ObjectReader r(j, path);
  CUTOVER_CHECK(r.check_object());
  CUTOVER_CHECK(r.check_keys(
      {"consecutive_5xx", "consecutive_connect_failures", "ejection_ms", "max_ejection_percent"}));
  PassiveEjection p = kDefaultPassiveEjection;
  auto read_int = [&](const char* key, int64_t min, int64_t max, int& out) -> Result<void> {
    if (!r.has(key)) return core::ok();
    auto v = r.integer(key, min, max);
    if (!v.ok()) return v.error();
    out = static_cast<int>(*v);
    return core::ok();
  };
  CUTOVER_CHECK(read_int("consecutive_5xx", 0, 1000, p.consecutive_5xx));
  CUTOVER_CHECK(read_int("consecutive_connect_failures", 0, 1000, p.consecutive_connect_failures));
  CUTOVER_CHECK(read_int("ejection_ms", 1, 3'600'000, p.ejection_ms));
  CUTOVER_CHECK(read_int("max_ejection_percent", 1, 100, p.max_ejection_percent));
  return p;
}

Result<HealthCheck> parse_health(const json& j, const std::string& path) {
  ObjectReader r(j, path);
  CUTOVER_CHECK(r.check_object());
  CUTOVER_CHECK(r.check_keys({"path", "interval_ms", "timeout_ms", "healthy_threshold",
                              "unhealthy_threshold", "matcher"}));
  HealthCheck h;
  if (r.has("path")) {
    CUTOVER_TRY(p, r.string("path"));
    h.path = std::move(p);
  }
  if (r.has("matcher")) {
    CUTOVER_TRY(m, r.string("matcher"));
    h.matcher = std::move(m);
  }
  auto read_int = [&](const char* key, int64_t min, int64_t max, int& out) -> Result<void> {
    if (!r.has(key)) return core::ok();
    auto v = r.integer(key, min, max);
    if (!v.ok()) return v.error();
    out = static_cast<int>(*v);
    return core::ok();
  };
  CUTOVER_CHECK(read_int("interval_ms", 10, 3'600'000, h.interval_ms));
  CUTOVER_CHECK(read_int("timeout_ms", 1, 3'600'000, h.timeout_ms));
  CUTOVER_CHECK(read_int("healthy_threshold", 1, 100, h.healthy_threshold));
  CUTOVER_CHECK(read_int("unhealthy_threshold", 1, 100, h.unhealthy_threshold));
  return h;
}

Result<TargetGroup> parse_group(const json& j, const std::string& path) {
  ObjectReader r(j, path);
  CUTOVER_CHECK(r.check_object());
  CUTOVER_CHECK(r.check_keys(
      {"name", "targets", "algorithm", "health", "passive_ejection", "drain_timeout_ms"}));
  TargetGroup g;
  CUTOVER_TRY(name, r.string("name"));
  g.name = std::move(name);
  if (r.has("targets")) {
    CUTOVER_TRY(targets, r.array("targets"));
    for (size_t i = 0; i < targets->size(); ++i) {
      std::string tpath = fmt::format("{}.targets[{}]", path, i);
      ObjectReader tr((*targets)[i], tpath);
      CUTOVER_CHECK(tr.check_object());
      CUTOVER_CHECK(tr.check_keys({"id", "address"}));
      CUTOVER_TRY(id, tr.string("id"));
      CUTOVER_TRY(address, tr.string("address"));
      g.targets.push_back(Target{std::move(id), std::move(address)});
    }
  }
  if (r.has("algorithm")) {
    CUTOVER_TRY(algorithm, r.string("algorithm"));
    if (algorithm == to_string(Algorithm::RoundRobin)) {
      g.algorithm = Algorithm::RoundRobin;
    } else if (algorithm == to_string(Algorithm::LeastOutstandingRequests)) {
      g.algorithm = Algorithm::LeastOutstandingRequests;
    } else {
      return Error(fmt::format(
          "{}.algorithm: must be \"round_robin\" or \"least_outstanding_requests\", got \"{}\"",
          path, algorithm));
    }
  }
  if (r.has("health")) {
    CUTOVER_TRY(h, parse_health(j.at("health"), path + ".health"));
    g.health = std::move(h);
  }
  if (r.has("passive_ejection")) {
    CUTOVER_TRY(p, parse_passive_ejection(j.at("passive_ejection"), path + ".passive_ejection"));
    g.passive_ejection = p;
  }
  if (r.has("drain_timeout_ms")) {
    CUTOVER_TRY(d, r.integer("drain_timeout_ms", 0, 24LL * 3'600'000));
    g.drain_timeout_ms = static_cast<int>(d);
  }
  return g;
}

}  // namespace

const char* to_string(Algorithm a) {
  switch (a) {
    case Algorithm::RoundRobin:
      return "round_robin";
    case Algorithm::LeastOutstandingRequests:
      return "least_outstanding_requests";
  }
  return "unknown";
}

bool is_cookie_name(std::string_view name) {
  // RFC 9110 §5.6.2 tchar.
  constexpr std::string_view kSpecials = "!#$%&'*+-.^_`|~";
  if (name.empty()) return false;
  for (unsigned char c : name) {
    bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              kSpecials.find(static_cast<char>(c)) != std::string_view::npos;
    if (!ok) return false;
  }
  return true;
}

bool is_cookie_value(std::string_view value) {
  // RFC 6265 §4.1.1 cookie-octet: visible US-ASCII except DQUOTE, comma, semicolon, backslash.
  for (unsigned char c : value)
    if (c < 0x21 || c > 0x7e || c == '"' || c == ',' || c == ';' || c == '\\') return false;
  return true;
}

const TargetGroup* RouteSnapshot::find_group(std::string_view name) const {
  for (const auto& g : target_groups)
    if (g.name == name) return &g;
  return nullptr;
}

Result<HostPort> parse_host_port(std::string_view address) {
  std::string_view host;
  std::string_view port;
  if (!address.empty() && address.front() == '[') {
    auto close = address.find(']');
    if (close == std::string_view::npos || close + 1 >= address.size() || address[close + 1] != ':')
      return Error(fmt::format("\"{}\" is not host:port (IPv6 as [::1]:8000)", address));
    host = address.substr(1, close - 1);
    port = address.substr(close + 2);
  } else {
    auto colon = address.rfind(':');
    if (colon == std::string_view::npos)
      return Error(fmt::format("\"{}\" is not host:port", address));
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
    if (host.find(':') != std::string_view::npos)
      return Error(fmt::format("\"{}\": write IPv6 addresses as [::1]:8000", address));
  }
  if (host.empty()) return Error(fmt::format("\"{}\" has no host", address));
  unsigned value = 0;
  auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || ptr != port.data() + port.size() || value > 65535)
    return Error(fmt::format("\"{}\" has an invalid port (0-65535)", address));
  return HostPort{std::string(host), static_cast<std::uint16_t>(value)};
}

Result<StatusMatcher> StatusMatcher::parse(std::string_view text) {
  StatusMatcher m;
  auto parse_code = [](std::string_view s, int& out) {
    while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
    while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return !s.empty() && ec == std::errc() && ptr == s.data() + s.size() && out >= 100 &&
           out <= 599;
  };
  size_t start = 0;
  while (start <= text.size()) {
    auto comma = text.find(',', start);
    auto part = text.substr(start, comma == std::string_view::npos ? text.npos : comma - start);
    int lo = 0;
    int hi = 0;
    auto dash = part.find('-');
    bool ok = dash == std::string_view::npos
                  ? (parse_code(part, lo) && (hi = lo, true))
                  : parse_code(part.substr(0, dash), lo) && parse_code(part.substr(dash + 1), hi);
    if (!ok || lo > hi)
      return Error(fmt::format(
          "matcher \"{}\": expected status codes 100-599 as \"200\", \"200-299\" or \"200,302\"",
          text));
    m.ranges_.emplace_back(lo, hi);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return m;
}

bool StatusMatcher::matches(int status) const {
  for (auto [lo, hi] : ranges_)
    if (status >= lo && status <= hi) return true;
  return false;
}

Result<void> validate(const RouteSnapshot& s) {
  std::set<std::string, std::less<>> group_names;
  for (size_t i = 0; i < s.target_groups.size(); ++i) {
    const auto& g = s.target_groups[i];
    std::string path = fmt::format("target_groups[{}]", i);
    if (g.name.empty()) return Error(path + ".name: must not be empty");
    if (!group_names.insert(g.name).second)
      return Error(fmt::format("{}.name: duplicate target group \"{}\"", path, g.name));
    std::set<std::string, std::less<>> ids;
    for (size_t t = 0; t < g.targets.size(); ++t) {
      const auto& target = g.targets[t];
      std::string tpath = fmt::format("{}.targets[{}]", path, t);
      if (target.id.empty()) return Error(tpath + ".id: must not be empty");
      if (!ids.insert(target.id).second)
        return Error(fmt::format("{}.id: duplicate target \"{}\" in group \"{}\"", tpath, target.id,
                                 g.name));
      auto hp = parse_host_port(target.address);
      if (!hp.ok()) return hp.error().wrap(tpath + ".address");
      if (hp->port == 0) return Error(tpath + ".address: port 0 is not a target port");
    }
    if (g.health.path.empty() || g.health.path.front() != '/')
      return Error(
          fmt::format("{}.health.path: must start with '/', got \"{}\"", path, g.health.path));
    auto m = StatusMatcher::parse(g.health.matcher);
    if (!m.ok()) return m.error().wrap(path + ".health");
    const auto& p = g.passive_ejection;
    auto in_range = [&](const char* key, int v, int min, int max) -> Result<void> {
      if (v < min || v > max)
        return Error(
            fmt::format("{}.passive_ejection.{}: must be {}..{}, got {}", path, key, min, max, v));
      return core::ok();
    };
    CUTOVER_CHECK(in_range("consecutive_5xx", p.consecutive_5xx, 0, 1000));
    CUTOVER_CHECK(
        in_range("consecutive_connect_failures", p.consecutive_connect_failures, 0, 1000));
    CUTOVER_CHECK(in_range("ejection_ms", p.ejection_ms, 1, 3'600'000));
    CUTOVER_CHECK(in_range("max_ejection_percent", p.max_ejection_percent, 1, 100));
  }
  std::set<std::string, std::less<>> names;
  std::set<std::string, std::less<>> addresses;
  for (size_t i = 0; i < s.listeners.size(); ++i) {
    const auto& l = s.listeners[i];
    std::string path = fmt::format("listeners[{}]", i);
    if (l.name.empty()) return Error(path + ".name: must not be empty");
    if (!names.insert(l.name).second)
      return Error(fmt::format("{}.name: duplicate listener \"{}\"", path, l.name));
    auto hp = parse_host_port(l.address);
    if (!hp.ok()) return hp.error().wrap(path + ".address");
    if (!addresses.insert(l.address).second)
      return Error(fmt::format("{}.address: {} is used by two listeners", path, l.address));
    int sum = 0;
    std::set<std::string, std::less<>> routed;
    for (size_t r = 0; r < l.routes.size(); ++r) {
      const auto& route = l.routes[r];
      std::string rpath = fmt::format("{}.routes[{}]", path, r);
      if (!group_names.count(route.target_group))
        return Error(
            fmt::format("{}.target_group: unknown target group \"{}\"", rpath, route.target_group));
      if (!routed.insert(route.target_group).second)
        return Error(
            fmt::format("{}.target_group: \"{}\" is routed twice", rpath, route.target_group));
      if (route.weight < 0 || route.weight > kWeightTotal)
        return Error(
            fmt::format("{}.weight: must be 0..{}, got {}", rpath, kWeightTotal, route.weight));
      sum += route.weight;
    }
    if (sum != 0 && sum != kWeightTotal)
      return Error(fmt::format(
          "{}.routes: weights of listener \"{}\" sum to {}; they must sum to {} (100%) or all be 0",
          path, l.name, sum, kWeightTotal));
    if (!l.sticky_cookie.empty()) {
      if (l.sticky_cookie.size() > 64 || !is_cookie_name(l.sticky_cookie))
        return Error(
            fmt::format("{}.sticky.cookie: \"{}\" is not a cookie name (1-64 letters, digits or "
                        "!#$%&'*+-.^_`|~)",
                        path, l.sticky_cookie));
      for (size_t r = 0; r < l.routes.size(); ++r)
        if (!is_cookie_value(l.routes[r].target_group))
          return Error(fmt::format(
              "{}.routes[{}].target_group: \"{}\" cannot be a sticky cookie value (no spaces, "
              "quotes, commas, semicolons or backslashes)",
              path, r, l.routes[r].target_group));
    }
  }
  return core::ok();
}

Result<RouteSnapshot> parse_snapshot(std::string_view text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Error("snapshot is not valid JSON");
  try {
    ObjectReader r(j, "");
    CUTOVER_CHECK(r.check_object());
    CUTOVER_CHECK(r.check_keys({"version", "listeners", "target_groups"}));
    RouteSnapshot s;
    CUTOVER_TRY(version, r.integer("version", 0, INT64_MAX));
    s.version = static_cast<uint64_t>(version);
    if (r.has("listeners")) {
      CUTOVER_TRY(listeners, r.array("listeners"));
      for (size_t i = 0; i < listeners->size(); ++i) {
        CUTOVER_TRY(l, parse_listener((*listeners)[i], fmt::format("listeners[{}]", i)));
        s.listeners.push_back(std::move(l));
      }
    }
    if (r.has("target_groups")) {
      CUTOVER_TRY(groups, r.array("target_groups"));
      for (size_t i = 0; i < groups->size(); ++i) {
        CUTOVER_TRY(g, parse_group((*groups)[i], fmt::format("target_groups[{}]", i)));
        s.target_groups.push_back(std::move(g));
      }
    }
    CUTOVER_CHECK(validate(s));
    return s;
  } catch (const std::exception& e) {  // nlohmann type errors we did not foresee
    return Error(std::string("snapshot: ") + e.what());
  }
}

std::string to_json(const RouteSnapshot& s) {
  json j;
  j["version"] = s.version;
  j["listeners"] = json::array();
  for (const auto& l : s.listeners) {
    json routes = json::array();
    for (const auto& r : l.routes)
      routes.push_back({{"target_group", r.target_group}, {"weight", r.weight}});
    json lj = {{"name", l.name}, {"address", l.address}, {"routes", routes}};
    if (!l.sticky_cookie.empty()) lj["sticky"] = {{"cookie", l.sticky_cookie}};
    if (!l.tls_cert.empty()) lj["tls"] = {{"cert", l.tls_cert}, {"key", l.tls_key}};
    if (l.redirect_https_port > 0) lj["redirect_https_port"] = l.redirect_https_port;
    j["listeners"].push_back(std::move(lj));
  }
  j["target_groups"] = json::array();
  for (const auto& g : s.target_groups) {
    json targets = json::array();
    for (const auto& t : g.targets) targets.push_back({{"id", t.id}, {"address", t.address}});
    const auto& h = g.health;
    const auto& p = g.passive_ejection;
    json gj = {{"name", g.name},
               {"targets", targets},
               {"algorithm", to_string(g.algorithm)},
               {"health",
                {{"path", h.path},
                 {"interval_ms", h.interval_ms},
                 {"timeout_ms", h.timeout_ms},
                 {"healthy_threshold", h.healthy_threshold},
                 {"unhealthy_threshold", h.unhealthy_threshold},
                 {"matcher", h.matcher}}},
               // Always written, so that to_json() and parse_snapshot() round-trip exactly; both
               // thresholds 0 = off.
               {"passive_ejection",
                {{"consecutive_5xx", p.consecutive_5xx},
                 {"consecutive_connect_failures", p.consecutive_connect_failures},
                 {"ejection_ms", p.ejection_ms},
                 {"max_ejection_percent", p.max_ejection_percent}}},
               {"drain_timeout_ms", g.drain_timeout_ms}};
    j["target_groups"].push_back(std::move(gj));
  }
  return j.dump();
}

}  // namespace cutover::proxy
