// The controller's side of the data plane: start or adopt the `cutover proxy` process and publish
// route snapshots built from the store's view of tasks and live releases.
#include <signal.h>

#include <thread>

#include "controller/internal.hpp"
#include "core/log.hpp"
#include "core/process.hpp"

namespace cutover::controller {

core::Result<void> Controller::Impl::ensure_proxy() {
  if (auto h = proxy_admin->health(); h) {
    core::logger()->info("proxy: adopted the running proxy on {}", admin_socket().string());
    return {};
  }
  if (proxy_pid > 0) {
    (void)core::wait_for_exit(proxy_pid, std::chrono::milliseconds(0));  // reap a dead child
    proxy_pid = 0;
  }
  core::SpawnSpec spec;
  spec.argv = {opts.self_exe.string(), "proxy",
               "--admin-socket",       admin_socket().string(),
               "--state-file",         (proxy_dir() / "snapshot.json").string(),
               "--log-file",           (proxy_dir() / "proxy.log").string()};
  spec.env = core::minimal_environment();
  spec.cwd = proxy_dir();
  spec.stdout_file = proxy_dir() / "proxy.out";
  spec.new_session = true;  // outlives the controller; a controller crash never stops traffic
  auto pid = core::spawn(spec);
  if (!pid) return pid.error().wrap("cannot start the proxy");
  const auto deadline = clock.now() + std::chrono::seconds(15);
  while (clock.now() < deadline) {
    if (proxy_admin->health()) {
      proxy_pid = *pid;
      core::logger()->info("proxy: started (pid {}), admin socket {}", *pid,
                           admin_socket().string());
      return {};
    }
    // Our child: if it already exited, say why instead of waiting out the deadline.
    if (auto st = core::wait_for_exit(*pid, std::chrono::milliseconds(100)); st) {
      return core::Error("the proxy exited at start (" + st->to_string() + "); see " +
                         (proxy_dir() / "proxy.log").string());
    }
  }
  ::kill(*pid, SIGKILL);
  return core::Error("the proxy did not answer on " + admin_socket().string() + " within 15s");
}

core::Result<void> Controller::Impl::publish_routes() {
  proxy::RouteSnapshot snap;
  uint64_t version = 0;
  if (auto v = store->get_meta("proxy.snapshot_version"); v && v->has_value()) {
    version = std::stoull(**v);
  }
  if (auto h = proxy_admin->health(); h) version = std::max<uint64_t>(version, h->version);
  snap.version = version + 1;

  for (const auto& [name, r] : routing) {
    if (!r.config) continue;
    const config::Service* svc = r.config->find_service(name);
    if (!svc) continue;
    auto tasks = store->list_running_tasks(name);
    if (!tasks) return tasks.error();
    add_service_routes(*svc, r, *tasks, snap);
  }
  if (auto r = proxy_admin->put_snapshot(snap); !r) {
    return r.error().wrap("the proxy refused route snapshot v" + std::to_string(snap.version));
  }
  if (auto r = store->set_meta("proxy.snapshot_version", std::to_string(snap.version)); !r) {
    return r.error();
  }
  core::logger()->debug("proxy: route snapshot v{} applied", snap.version);
  return {};
}

core::Result<std::map<std::string, std::string>> Controller::Impl::target_states() {
  return proxy_admin->target_health();
}

core::Result<std::shared_ptr<const config::Config>> Controller::Impl::config_at(
    const std::string& commit_sha) const {
  auto text = store->get_meta("config/" + commit_sha);
  if (!text) return text.error();
  if (!text->has_value()) {
    return core::Error("no cutover.yaml recorded for commit " + commit_sha.substr(0, 7),
                       core::ErrorKind::NotFound);
  }
  return config::parse_config(**text, "cutover.yaml");
}

}  // namespace cutover::controller
