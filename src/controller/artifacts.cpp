// The registry's lifecycle and provenance as the controller runs them: statements signed when an
// execution puts an artifact, verification before any task of a release starts, `registry ls`,
// `registry gc` and `registry key`.
//
// Serialization: gc (any API thread) and the start of a task set (the deployment's thread) both
// hold registry_mu, so an artifact is either removed before a deployment verifies it (which then
// fails, naming the artifact) or its tasks are running and recorded before gc plans (and gc keeps
// it as live). Deployments in progress and executions in progress are read under the same lock.
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "controller/internal.hpp"
#include "core/log.hpp"

namespace cutover::controller {

using nlohmann::json;

namespace {

core::Error internal_error(const core::Error& e) {
  return core::Error(e.message, core::ErrorKind::Internal);
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "unknown-host";
  return buf;
}

std::string human_bytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

}  // namespace

core::Result<void> Controller::Impl::attest_artifact(const std::string& digest,
                                                     const std::string& execution_id,
                                                     const std::string& commit_sha,
                                                     const std::string& stage,
                                                     int64_t started_unix_ms) {
  registry::BuildFacts facts;
  facts.repository = opts.repo;
  facts.branch = opts.branch;
  facts.commit_sha = commit_sha;
  facts.execution_id = execution_id;
  facts.stage = stage;
  facts.builder = std::string("cutover ") + kCutoverVersion + " on " + host_name();
  facts.started_unix_ms = started_unix_ms;
  facts.finished_unix_ms = core::to_unix_ms(clock.wall());
  auto file = registry->attest(digest, facts, *provenance_key);
  if (!file) return file.error().wrap("provenance of stage " + stage);
  return {};
}

core::Result<void> Controller::Impl::verify_artifact(const store::Release& release) {
  if (release.artifact_digest.empty()) return {};  // an image-only release has no artifact
  auto p =
      registry->verify(release.artifact_digest, provenance_key->public_key(), release.execution_id);
  if (!p) {
    return core::Error("release " + release.id + " of " + release.service +
                       " not deployed: " + p.error().message);
  }
  core::logger()->info("registry: {} verified: built from {} by execution {} (stage {}), key {}",
                       release.artifact_digest, p->commit_sha.substr(0, 7), p->execution_id,
                       p->stage, p->key_id);
  return {};
}

core::Result<Controller::Impl::RegistryPlan> Controller::Impl::plan_registry() {
  RegistryPlan plan;
  plan.planned_at_ms = core::to_unix_ms(clock.wall());
  auto listed = registry->list();
  if (!listed) return listed.error();
  plan.artifacts = std::move(*listed);
  registry::RetentionInput in;
  in.keep = opts.registry_keep;
  std::vector<std::string> services;
  if (auto m = store->get_meta("services"); m && m->has_value()) {
    json n = json::parse(**m, nullptr, false);
    if (n.is_array()) {
      for (const auto& s : n) {
        if (s.is_string()) services.push_back(s.get<std::string>());
      }
    }
  }
  auto tasks = store->list_running_tasks();
  if (!tasks) return tasks.error();
  for (const auto& t : *tasks) in.live.insert(t.release_id);
  for (const auto& service : services) {
    auto rels = store->list_releases(service, 0);
    if (!rels) return rels.error();
    for (const auto& r : *rels) {
      in.releases.push_back({r.id, r.service, r.artifact_digest, r.created_at});
      plan.release_of[r.artifact_digest].push_back(r);
    }
    auto live = store->live(service);
    if (!live) return live.error();
    if (live->has_value()) {
      in.live.insert((**live).release_id);
      // The rollback target: what `cutover rollback` would redeploy (Controller::operate).
      auto deps = store->list_deployments(service, 50);
      if (!deps) return deps.error();
      for (const auto& d : *deps) {
        if (d.release_id == (**live).release_id && d.status == store::DeploymentStatus::Succeeded) {
          if (d.previous_release_id) in.rollback_targets.insert(*d.previous_release_id);
          break;
        }
      }
    }
    auto active = store->active_deployment(service);
    if (!active) return active.error();
    if (active->has_value()) {
      in.in_progress.insert((**active).release_id);
      if ((**active).previous_release_id) in.in_progress.insert(*(**active).previous_release_id);
    }
  }
  // An execution in progress may have put artifacts it has not tagged or released yet.
  auto execs = store->list_executions(100);
  if (!execs) return execs.error();
  for (const auto& e : *execs) {
    if (store::is_terminal(e.status)) continue;
    const int64_t since = e.started_at.value_or(e.created_at);
    if (!in.protect_since_unix_ms || since < *in.protect_since_unix_ms) {
      in.protect_since_unix_ms = since;
    }
  }
  plan.retention = registry::plan_retention(plan.artifacts, in);
  return plan;
}

namespace {

json artifact_json(const registry::ArtifactEntry& a, registry::Retention r,
                   const std::vector<store::Release>& releases) {
  json rels = json::array();
  for (const auto& rel : releases) {
    rels.push_back(json{{"release", rel.id},
                        {"service", rel.service},
                        {"commit", rel.commit_sha.substr(0, 7)},
                        {"execution", rel.execution_id}});
  }
  return json{{"digest", a.digest},
              {"tags", a.tags},
              {"size_bytes", a.size_bytes},
              {"size", human_bytes(a.size_bytes)},
              {"created", core::format_rfc3339(core::from_unix_ms(a.put_unix_ms))},
              {"retention", std::string(registry::to_string(r))},
              {"releases", std::move(rels)}};
}

bool belongs_to(const registry::ArtifactEntry& a, const std::vector<store::Release>& releases,
                const std::string& service) {
  if (service.empty()) return true;
  for (const auto& r : releases) {
    if (r.service == service) return true;
  }
  for (const auto& t : a.tags) {
    if (t.rfind(service + ":", 0) == 0) return true;
  }
  return false;
}

}  // namespace

core::Result<json> Controller::registry_list(const std::string& service) {
  Impl& impl = *impl_;
  std::lock_guard lock(impl.registry_mu);
  auto plan = impl.plan_registry();
  if (!plan) return internal_error(plan.error());
  json out{{"keep", impl.opts.registry_keep}, {"artifacts", json::array()}};
  uint64_t total = 0;
  for (const auto& a : plan->artifacts) {
    const auto& rels = plan->release_of[a.digest];
    if (!belongs_to(a, rels, service)) continue;
    total += a.size_bytes;
    out["artifacts"].push_back(artifact_json(a, plan->retention.at(a.digest), rels));
  }
  out["total_bytes"] = total;
  return out;
}

core::Result<json> Controller::registry_gc(bool dry_run, const std::string& who) {
  Impl& impl = *impl_;
  std::lock_guard lock(impl.registry_mu);
  return impl.run_registry_gc(dry_run, who.empty() ? "operator" : who);
}

core::Result<json> Controller::Impl::run_registry_gc(bool dry_run, const std::string& who) {
  auto plan = plan_registry();
  if (!plan) return internal_error(plan.error());
  json removed = json::array();
  json kept = json::array();
  json errors = json::array();
  uint64_t freed = 0;
  for (const auto& a : plan->artifacts) {
    const registry::Retention r = plan->retention.at(a.digest);
    const auto& rels = plan->release_of[a.digest];
    if (r != registry::Retention::Removable) {
      kept.push_back(artifact_json(a, r, rels));
      continue;
    }
    if (dry_run) {
      removed.push_back(artifact_json(a, r, rels));
      freed += a.size_bytes;
      continue;
    }
    auto bytes = registry->remove(a.digest, plan->planned_at_ms);
    if (!bytes) {
      errors.push_back(json{{"digest", a.digest}, {"error", bytes.error().message}});
      continue;
    }
    freed += *bytes;
    json j = artifact_json(a, r, rels);
    j["size_bytes"] = *bytes;
    removed.push_back(std::move(j));
  }
  json out{{"dry_run", dry_run},         {"keep", opts.registry_keep},
           {"removed", removed},         {"kept", kept},
           {"errors", errors},           {"freed_bytes", freed},
           {"freed", human_bytes(freed)}};
  if (!dry_run) {
    json audit{{"removed", json::array()}, {"freed_bytes", freed}, {"keep", opts.registry_keep}};
    for (const auto& r : removed) audit["removed"].push_back(r["digest"]);
    (void)store->append_audit(who, "registry.gc", "registry", audit.dump());
    core::logger()->info("registry: gc by {} removed {} artifact(s), {} freed, {} kept", who,
                         removed.size(), human_bytes(freed), kept.size());
  }
  return out;
}

core::Result<json> Controller::registry_key() const {
  const auto& key = *impl_->provenance_key;
  return json{{"algorithm", "ed25519"},
              {"key_id", key.key_id()},
              {"public_key_hex", key.public_key_hex()},
              {"public_key_pem", key.public_key_pem()},
              {"file", (impl_->opts.state_dir / registry::SigningKey::kPublicFile).string()}};
}

}  // namespace cutover::controller
