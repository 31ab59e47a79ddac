// registry: the content-addressed artifact store. A pipeline stage's `artifacts:` become one
// immutable, read-only directory tree named by the SHA-256 of its canonical manifest; tasks run
// from that directory. Tags (repo:tag, e.g. "web:3f9a1c2") name digests and never move
// (DESIGN.md §3 invariant 6).
//
// On disk, under root:
//   sha256/<hex>/tree/           the unpacked artifact (files 0444 or 0555, directories 0555)
//   sha256/<hex>/manifest.json   the manifest, for people and tools
//   sha256/<hex>/provenance/<execution>.json
//                                a signed provenance statement of the execution that put it
//                                (a DSSE envelope around an in-toto Statement v1;
//                                docs/operations.md)
//   tags/<repo>/<tag>            a file holding "sha256:<hex>"
//   tmp/                         staging; an artifact appears by one rename(2), so readers see a
//                                complete tree or nothing
//
// Digest: "sha256:" + SHA-256 of the canonical manifest, which lists every entry sorted by relative
// path: directories, regular files (SHA-256 of the content and whether it is executable; other mode
// bits do not matter) and symlinks (their target). Timestamps and owners do not count, so identical
// content always has the same digest and is stored once.
//
// Thread-safety: all methods may be called concurrently from several threads; they rely only on
// atomic filesystem operations (rename, link), not on in-memory state. open() deletes staging
// leftovers of a crash, so only one process at a time should open a given root.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/result.hpp"

namespace cutover::registry {

struct Artifact {
  std::string digest;          // "sha256:<64 hex>"
  std::filesystem::path path;  // the unpacked, read-only tree (tasks' working directory)
  uint64_t size_bytes = 0;     // sum of regular file sizes
  uint64_t file_count = 0;     // regular files and symlinks
};

// ---- Provenance --------------------------------------------------------------------------------
// The installation's Ed25519 signing key (libsodium). load_or_create keeps the 32-byte seed in
// STATE_DIR/provenance.key (hex, created 0600 on first use, refused when group or others can read
// it) and writes the public key to STATE_DIR/provenance.pub (PEM, so that `openssl pkeyutl` can
// verify a statement without cutover). Not copyable; the seed is wiped on destruction.
class SigningKey {
 public:
  static constexpr const char* kKeyFile = "provenance.key";
  static constexpr const char* kPublicFile = "provenance.pub";
  static core::Result<SigningKey> load_or_create(const std::filesystem::path& state_dir);
  static SigningKey generate();  // tests
  SigningKey(SigningKey&&) noexcept;
  SigningKey& operator=(SigningKey&&) noexcept;
  SigningKey(const SigningKey&) = delete;
  SigningKey& operator=(const SigningKey&) = delete;
  ~SigningKey();

  // Raw 32-byte public key, its hex and PEM forms, and a short id (16 hex) that names it.
  const std::string& public_key() const { return public_key_; }
  std::string public_key_hex() const;
  std::string public_key_pem() const;
  std::string key_id() const;
  // Ed25519 detached signature (64 raw bytes) of message.
  std::string sign(std::string_view message) const;

 private:
  SigningKey() = default;
  std::array<unsigned char, 64> secret_{};  // libsodium's seed || public key
  std::string public_key_;
};

// The short id of a raw Ed25519 public key (what SigningKey::key_id returns for its own).
std::string key_id_of(const std::string& public_key);

// What a pipeline stage's provenance statement records besides the artifact's own digests.
struct BuildFacts {
  std::string repository;  // the git repository (any user:password@ is removed)
  std::string branch;
  std::string commit_sha;
  std::string execution_id;  // [A-Za-z0-9_-], names the statement's file
  std::string stage;
  std::string builder;          // "cutover 0.1.0 on HOST"
  int64_t started_unix_ms = 0;  // the execution's start
  int64_t finished_unix_ms = 0;
};

// A statement that verified, as read back.
struct Provenance {
  std::string digest;  // the subject: the artifact's digest
  std::string commit_sha;
  std::string execution_id;
  std::string stage;
  std::string builder;
  std::string finished_at;  // RFC 3339
  std::string key_id;       // of the key that signed it
  std::filesystem::path file;
};

// The in-toto Statement v1 (predicate: SLSA provenance v1 fields) for an artifact, serialized
// canonically: keys sorted, no whitespace, so equal facts give equal bytes. Pure.
std::string provenance_statement(const std::string& digest, const std::string& manifest_sha256,
                                 const BuildFacts& facts);
// DSSE pre-authentication encoding: what is actually signed ("DSSEv1 <len> <type> <len> <body>").
std::string dsse_pae(std::string_view payload_type, std::string_view payload);

// ---- Lifecycle
// ----------------------------------------------------------------------------------- Why gc keeps
// (or may remove) an artifact; the first that applies, in this order.
enum class Retention { Live, RollbackTarget, InProgress, Kept, Recent, Removable };
std::string_view to_string(Retention r);

struct ReleaseRef {
  std::string id;
  std::string service;
  std::string digest;  // "" for image-only releases
  int64_t created_at = 0;
};

struct RetentionInput {
  int keep = 10;                           // the last `keep` releases of each service stay
  std::vector<ReleaseRef> releases;        // every release of every service
  std::set<std::string> live;              // releases with running tasks (blue or green) or serving
  std::set<std::string> rollback_targets;  // the previous release of each service
  std::set<std::string> in_progress;       // releases of deployments in progress
  // Artifacts put at or after this time stay (an execution in progress may be about to tag or
  // release them); nullopt = no execution in progress.
  std::optional<int64_t> protect_since_unix_ms;
};

struct ArtifactEntry {
  std::string digest;
  uint64_t size_bytes = 0;        // on disk: files of the tree + manifest + statements
  int64_t put_unix_ms = 0;        // last put (a put of identical content refreshes it)
  std::vector<std::string> tags;  // "repo:tag"
};

// The retention of each artifact (by digest). Pure: the table-driven tests drive it.
std::map<std::string, Retention> plan_retention(const std::vector<ArtifactEntry>& artifacts,
                                                const RetentionInput& in);

class Registry {
 public:
  static core::Result<std::unique_ptr<Registry>> open(std::filesystem::path root);

  // Copies the listed paths of src into a new artifact and returns it (or the existing one with the
  // same digest). include holds paths relative to src as written in a stage's `artifacts:` list
  // ("dist/", "bin/server"); they keep their relative path inside the artifact, so "dist/server"
  // stays "dist/server". An empty include takes all of src. Refused, with the offending path named:
  // absolute paths or "..", paths missing from src, symlinks in the path leading to an include,
  // symlinks whose target is absolute or leaves the artifact, devices, FIFOs and sockets.
  core::Result<Artifact> put_directory(const std::filesystem::path& src,
                                       const std::vector<std::string>& include);

  // The artifact with this digest, after checking that its tree still matches the digest (every
  // file re-hashed): a modified, added or removed file is an error that says the artifact was
  // tampered with. Unknown digests are an error.
  core::Result<Artifact> get(const std::string& digest);

  // Names digest as repo:tag. Tags are immutable: tagging again with the same digest succeeds,
  // with a different digest fails with an error naming both digests. The digest must exist.
  // repo: [A-Za-z0-9._-] components separated by '/' (service names fit), each not starting with
  // '.' or '-'; tag: [A-Za-z0-9_.-], 1-128 chars, not starting with '.' or '-'.
  core::Result<void> tag(const std::string& repo, const std::string& tag,
                         const std::string& digest);
  // The digest repo:tag names, or an error if there is no such tag.
  core::Result<std::string> resolve(const std::string& repo, const std::string& tag);

  // Writes the signed provenance statement of the execution facts.execution_id for the artifact
  // digest, after checking the stored tree still matches the digest (never signs tampered bytes).
  // Rewriting the statement of the same execution replaces it. Returns the statement's file.
  core::Result<std::filesystem::path> attest(const std::string& digest, const BuildFacts& facts,
                                             const SigningKey& key);
  // The artifact, only if its tree matches its digest and the statement of execution_id (any
  // statement when empty: the newest that verifies) is signed by public_key, is about this digest
  // and matches the stored manifest. The error names the artifact and the reason ("no provenance
  // statement", "signature does not verify", "subject ... is not ...", "was tampered with").
  core::Result<Provenance> verify(const std::string& digest, const std::string& public_key,
                                  const std::string& execution_id = "");

  // Every artifact with its size, last put time and the tags naming it (sorted by digest).
  core::Result<std::vector<ArtifactEntry>> list();
  // Removes an artifact's tree, manifest and statements (read-only files are made writable
  // first), unless it was put at or after not_put_since_unix_ms (a build re-used it since the plan
  // was made). Its tags stay, naming the digest forever (tags never move, invariant 6; resolve
  // then says the artifact was removed). Returns the bytes freed.
  core::Result<uint64_t> remove(const std::string& digest, int64_t not_put_since_unix_ms);

  const std::filesystem::path& root() const { return root_; }

 private:
  explicit Registry(std::filesystem::path root) : root_(std::move(root)) {}
  std::filesystem::path root_;
  // Orders put (which may re-use an existing directory) against remove.
  std::mutex put_remove_mu_;
};

}  // namespace cutover::registry
