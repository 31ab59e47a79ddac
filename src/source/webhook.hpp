// Webhook authentication for push notifications (GitHub, Gitea, Forgejo, GitLab). A verified
// webhook only makes the controller fetch sooner: the commit to build is always read from the
// repository itself, never from the request body.
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>

namespace cutover::source {

// HMAC-SHA256 of body with secret, as lowercase hex.
std::string hmac_sha256_hex(std::string_view secret, std::string_view body);

// True when signature authenticates body under secret. Accepted forms:
//   "sha256=<hex>"  GitHub X-Hub-Signature-256, Gitea/Forgejo with the prefix
//   "<hex>"         Gitea/Forgejo X-Gitea-Signature (HMAC-SHA256, no prefix)
// Comparison is constant-time; an empty secret never verifies anything.
bool verify_signature(std::string_view secret, std::string_view body, std::string_view signature);

// GitLab's X-Gitlab-Token: a shared token compared in constant time. Empty never matches.
bool verify_token(std::string_view expected, std::string_view presented);

}  // namespace cutover::source
