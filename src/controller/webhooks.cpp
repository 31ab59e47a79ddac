// Inbound webhooks: authenticate a git host's push notification with the provider's shared secret
// from the secret store, count it, and wake the loop to fetch. The request body is never parsed
// for a commit: what gets built is whatever the fetch finds on the watched branch.
#include "controller/internal.hpp"
#include "core/log.hpp"
#include "source/webhook.hpp"

namespace cutover::controller {

namespace {

struct Provider {
  std::string_view name;
  std::string_view header;  // where the signature or token travels
  bool token;               // a shared token (GitLab) instead of an HMAC of the body
};

constexpr Provider kProviders[] = {
    {"github", "X-Hub-Signature-256", false},
    {"gitlab", "X-Gitlab-Token", true},
    {"generic", "X-Cutover-Signature", false},
};

const Provider* find_provider(std::string_view name) {
  for (const auto& p : kProviders) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

}  // namespace

nlohmann::json Controller::Impl::webhook_counts_json() const {
  nlohmann::json out = nlohmann::json::object();
  std::lock_guard lock(webhook_mu);
  for (const auto& p : kProviders) {
    auto it = webhook_counts.find(std::string(p.name));
    const WebhookCount c = it == webhook_counts.end() ? WebhookCount{} : it->second;
    out[std::string(p.name)] = {{"accepted", c.accepted}, {"rejected", c.rejected}};
  }
  return out;
}

Controller::WebhookReply Controller::receive_webhook(const WebhookRequest& r) {
  auto& impl = *impl_;
  auto log = core::logger();
  const Provider* p = find_provider(r.provider);
  if (!p) {
    return {WebhookVerdict::UnknownProvider,
            "no webhook provider \"" + r.provider.substr(0, 32) +
                "\"; use /v1/webhooks/github, /v1/webhooks/gitlab or /v1/webhooks/generic"};
  }
  const auto count = [&](bool accepted) {
    std::lock_guard lock(impl.webhook_mu);
    auto& c = impl.webhook_counts[std::string(p->name)];
    ++(accepted ? c.accepted : c.rejected);
  };
  const std::string secret_name = "webhook/" + std::string(p->name);
  const auto reject = [&](WebhookVerdict v, const std::string& why) {
    count(false);
    // Never the signature or token itself: a near miss would help whoever guesses it.
    log->warn("webhook {} from {} rejected: {}", p->name, r.remote, why);
    return WebhookReply{v, why};
  };
  auto secret = impl.secrets->get(secret_name);
  if (!secret) {
    if (secret.error().kind == core::ErrorKind::NotFound) {
      return reject(WebhookVerdict::NotConfigured, "no " + std::string(p->name) +
                                                       " webhook secret is configured; set it with "
                                                       "`cutover secrets set " +
                                                       secret_name + "`");
    }
    return reject(WebhookVerdict::NotConfigured,
                  "the secret " + secret_name + " cannot be read: " + secret.error().message);
  }
  if (r.signature.empty()) {
    return reject(WebhookVerdict::Unauthorized,
                  "missing " + std::string(p->header) + " header" +
                      (p->token ? "" : " (sha256=<hex HMAC-SHA256 of the body>)"));
  }
  const bool ok = p->token ? source::verify_token(*secret, r.signature)
                           : source::verify_signature(*secret, r.body, r.signature);
  if (!ok) {
    return reject(WebhookVerdict::Unauthorized,
                  std::string(p->header) +
                      (p->token ? " does not match the secret "
                                : " is not the HMAC-SHA256 of the body under "
                                  "the secret ") +
                      secret_name);
  }
  count(true);
  if (p->name == "github" && r.event == "ping") {
    log->info("webhook github from {}: ping", r.remote);
    return {WebhookVerdict::Ping, "pong"};
  }
  log->info("webhook {} from {}: fetching now", p->name, r.remote);
  request_poll();
  return {WebhookVerdict::Accepted, "fetching"};
}

}  // namespace cutover::controller
