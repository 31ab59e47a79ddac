// Lifecycle: which artifacts gc keeps. Pure; the controller gathers the inputs from the store.
#include <algorithm>

#include "registry/registry.hpp"

namespace cutover::registry {

std::string_view to_string(Retention r) {
  switch (r) {
    case Retention::Live:
      return "live";
    case Retention::RollbackTarget:
      return "rollback-target";
    case Retention::InProgress:
      return "in-progress";
    case Retention::Kept:
      return "kept";
    case Retention::Recent:
      return "recent";
    case Retention::Removable:
      return "removable";
  }
  return "removable";
}

std::map<std::string, Retention> plan_retention(const std::vector<ArtifactEntry>& artifacts,
                                                const RetentionInput& in) {
  // The strongest reason for each digest, over every release that uses it.
  std::map<std::string, Retention> reason;
  const auto keep_for = [&](const std::string& digest, Retention r) {
    if (digest.empty()) return;
    auto [it, fresh] = reason.try_emplace(digest, r);
    if (!fresh && static_cast<int>(r) < static_cast<int>(it->second)) it->second = r;
  };
  std::map<std::string, std::vector<const ReleaseRef*>> by_service;
  for (const auto& rel : in.releases) {
    by_service[rel.service].push_back(&rel);
    if (in.live.count(rel.id)) keep_for(rel.digest, Retention::Live);
    if (in.rollback_targets.count(rel.id)) keep_for(rel.digest, Retention::RollbackTarget);
    if (in.in_progress.count(rel.id)) keep_for(rel.digest, Retention::InProgress);
  }
  for (auto& [service, rels] : by_service) {
    // Newest first; ids break ties between releases of the same millisecond.
    std::sort(rels.begin(), rels.end(), [](const ReleaseRef* a, const ReleaseRef* b) {
      return a->created_at != b->created_at ? a->created_at > b->created_at : a->id > b->id;
    });
    const size_t n = static_cast<size_t>(std::max(0, in.keep));
    for (size_t i = 0; i < rels.size() && i < n; ++i) keep_for(rels[i]->digest, Retention::Kept);
  }
  std::map<std::string, Retention> out;
  for (const auto& a : artifacts) {
    Retention r = Retention::Removable;
    if (auto it = reason.find(a.digest); it != reason.end()) r = it->second;
    if (r == Retention::Removable && in.protect_since_unix_ms &&
        a.put_unix_ms >= *in.protect_since_unix_ms) {
      r = Retention::Recent;
    }
    out[a.digest] = r;
  }
  return out;
}

}  // namespace cutover::registry
