// Outbound notifications (notify::Notifier) on execution and deployment state changes: the
// receivers come from the `notifications:` of the commit being built, with their URL and HMAC
// key resolved from the secret store. Sending happens on the notifier's thread; these calls only
// queue.
#include "controller/internal.hpp"
#include "core/log.hpp"

namespace cutover::controller {

void Controller::Impl::configure_notifications(const config::Config& cfg) {
  auto log = core::logger();
  std::vector<notify::Target> targets;
  for (size_t i = 0; i < cfg.notifications.size(); ++i) {
    const auto& n = cfg.notifications[i];
    notify::Target t;
    t.format = n.format == config::NotificationFormat::Slack ? notify::Format::Slack
                                                             : notify::Format::Json;
    t.events = n.events;
    t.url = n.url;
    const auto resolve = [&](const std::string& name, std::string& out, const char* what) {
      auto v = secrets->get(name);
      if (!v) {
        log->warn("notifications[{}]: {} secret {}: {}; this receiver is left out", i, what, name,
                  v.error().message);
        return false;
      }
      out = *v;
      while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
      return true;
    };
    if (!n.url_secret.empty() && !resolve(n.url_secret, t.url, "url")) continue;
    if (!n.secret.empty() && !resolve(n.secret, t.hmac_key, "HMAC")) continue;
    targets.push_back(std::move(t));
  }
  // Only a url_secret can hold a bad URL here (the parser checked `url:`); never log the URL.
  if (auto r = notifier->configure(std::move(targets)); !r) {
    log->warn("notifications: {}; those receivers are left out", r.error().message);
  }
}

void Controller::Impl::notify_execution(const std::string& event, const std::string& execution_id,
                                        const std::string& commit_sha, const std::string& status,
                                        const std::string& reason) {
  notify::Event e;
  e.event = event;
  e.execution_id = execution_id;
  e.commit = commit_sha;
  e.status = status;
  e.reason = reason;
  e.time = clock.wall();
  notifier->notify(e);
}

void Controller::Impl::notify_deployment(const std::string& event, const deploy::Deployment& d,
                                         const store::Release& release, const std::string& status) {
  notify::Event e;
  e.event = event;
  e.service = d.service;
  e.deployment_id = d.id;
  e.execution_id = release.execution_id;
  e.commit = release.commit_sha;
  e.status = status;
  e.reason = d.reason;
  e.time = clock.wall();
  notifier->notify(e);
}

}  // namespace cutover::controller
