// The mapping from a service's configuration and routing state to the proxy's route snapshot:
// listeners (TLS, redirects, sticky cohorts) and target groups (health checks, algorithm,
// passive ejection). A pure function, so that the mapping is tested without a proxy.
#include <algorithm>

#include "controller/internal.hpp"

namespace cutover::controller {

namespace {

std::string matcher_text(const config::TargetHealth& th) {
  std::string out;
  for (const auto& r : th.matcher) {
    if (!out.empty()) out += ",";
    out += r.low == r.high ? std::to_string(r.low)
                           : std::to_string(r.low) + "-" + std::to_string(r.high);
  }
  return out.empty() ? "200-299" : out;
}

int ms(core::Duration d) { return static_cast<int>(d.count()); }

// A listener and, with redirect_http, its HTTP -> HTTPS redirect listener ("<name>-redirect").
void add_listener(const config::Listener& l, const std::string& name,
                  std::vector<proxy::Route> routes, const std::string& sticky_cookie,
                  proxy::RouteSnapshot& snap) {
  proxy::Listener out;
  out.name = name;
  out.address = l.address;
  out.routes = std::move(routes);
  out.sticky_cookie = sticky_cookie;
  if (l.tls) {
    out.tls_cert = l.tls->cert;
    out.tls_key = l.tls->key;
  }
  snap.listeners.push_back(std::move(out));
  if (l.redirect_http) {
    proxy::Listener redirect;
    redirect.name = name + "-redirect";
    redirect.address = l.redirect_http->address;
    redirect.redirect_https_port = l.port;
    snap.listeners.push_back(std::move(redirect));
  }
}

}  // namespace

void add_service_routes(const config::Service& svc, const Controller::Impl::Routing& routing,
                        const std::vector<store::TaskRecord>& tasks, proxy::RouteSnapshot& snap) {
  const std::string& name = svc.name;
  std::vector<proxy::Route> production;
  std::set<std::string> colors(routing.registered.begin(), routing.registered.end());
  std::string heaviest;  // the color with the most production weight
  int heaviest_weight = 0;
  for (const auto& [color, weight] : routing.weights) {
    colors.insert(color);
    if (weight > 0) production.push_back({group_name(name, color), weight});
    if (weight > heaviest_weight) {
      heaviest = color;
      heaviest_weight = weight;
    }
  }
  add_listener(svc.listeners.production, name + "/production", std::move(production),
               svc.deployment.sticky_cookie, snap);
  if (svc.listeners.test) {
    // The test listener is never split: it reaches the color a deployment sent it to (the new
    // version from AllowTestTraffic on), else the version that serves most of production.
    std::vector<proxy::Route> test;
    const std::string& color = routing.test_color.empty() ? heaviest : routing.test_color;
    if (!color.empty()) test.push_back({group_name(name, color), proxy::kWeightTotal});
    add_listener(*svc.listeners.test, name + "/test", std::move(test), "", snap);
  }

  const auto& th = svc.target_health;
  for (const auto& color : colors) {
    proxy::TargetGroup g;
    g.name = group_name(name, color);
    g.algorithm = svc.load_balancing == config::LoadBalancing::LeastOutstandingRequests
                      ? proxy::Algorithm::LeastOutstandingRequests
                      : proxy::Algorithm::RoundRobin;
    g.health.path = th.path;
    g.health.interval_ms = ms(th.interval);
    g.health.timeout_ms = ms(th.timeout);
    g.health.healthy_threshold = th.healthy_threshold;
    g.health.unhealthy_threshold = th.unhealthy_threshold;
    g.health.matcher = matcher_text(th);
    if (th.passive) {
      g.passive_ejection.consecutive_5xx = th.passive->consecutive_5xx;
      g.passive_ejection.consecutive_connect_failures = th.passive->consecutive_connect_failures;
      g.passive_ejection.ejection_ms = ms(th.passive->ejection);
      g.passive_ejection.max_ejection_percent = th.passive->max_ejection_percent;
    }
    g.drain_timeout_ms = ms(svc.deployment.drain_timeout);
    for (const auto& t : tasks) {
      if (t.color != color || routing.draining.count(t.task_id)) continue;
      g.targets.push_back({t.task_id, "127.0.0.1:" + std::to_string(t.port)});
    }
    snap.target_groups.push_back(std::move(g));
  }
}

}  // namespace cutover::controller
