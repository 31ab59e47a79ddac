// The controller's side of the secret store: the API's set/list/remove (audited without values)
// and resolution of `secrets:` maps for tasks. Stages resolve through ExecutionContext.
#include <nlohmann/json.hpp>

#include "controller/internal.hpp"
#include "core/log.hpp"

namespace cutover::controller {

using nlohmann::json;

namespace {

json info_json(const store::SecretInfo& s) {
  return json{{"name", s.name},
              {"version", s.version},
              {"created_at", core::format_rfc3339(core::from_unix_ms(s.created_at))},
              {"updated_at", core::format_rfc3339(core::from_unix_ms(s.updated_at))}};
}

}  // namespace

core::Result<std::map<std::string, std::string>> Controller::Impl::resolve_secrets(
    const std::map<std::string, std::string>& env_to_name, const std::string& where) const {
  std::map<std::string, std::string> out;
  for (const auto& [env, name] : env_to_name) {
    auto value = secrets->get(name);
    if (!value) {
      return core::Error(
          where + ": secret " + name + " (for " + env + "): " + value.error().message,
          value.error().kind);
    }
    out[env] = std::move(*value);
  }
  return out;
}

core::Result<json> Controller::set_secret(const std::string& name, std::string_view value) {
  auto info = impl_->secrets->set(name, value);
  if (!info) return info.error();
  (void)impl_->store->append_audit("api", "secret.set", "secret:" + name,
                                   json{{"version", info->version}}.dump());
  core::logger()->info("secrets: {} set (version {})", name, info->version);
  return info_json(*info);
}

core::Result<json> Controller::list_secrets() const {
  auto list = impl_->secrets->list();
  if (!list) return core::Error(list.error().message, core::ErrorKind::Internal);
  json out{{"secrets", json::array()}};
  for (const auto& s : *list) out["secrets"].push_back(info_json(s));
  return out;
}

core::Result<json> Controller::remove_secret(const std::string& name) {
  auto info = impl_->secrets->remove(name);
  if (!info) return info.error();
  (void)impl_->store->append_audit("api", "secret.remove", "secret:" + name,
                                   json{{"version", info->version}}.dump());
  core::logger()->info("secrets: {} removed", name);
  json out = info_json(*info);
  out["removed"] = true;
  return out;
}

}  // namespace cutover::controller
