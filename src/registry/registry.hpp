// registry: the content-addressed artifact store. A pipeline stage's `artifacts:` become one
// immutable, read-only directory tree named by the SHA-256 of its canonical manifest; tasks run
// from that directory. Tags (repo:tag, e.g. "web:3f9a1c2") name digests and never move
// (DESIGN.md §3 invariant 6).
//
// On disk, under root:
//   sha256/<hex>/tree/           the unpacked artifact (files 0444 or 0555, directories 0555)
//   sha256/<hex>/manifest.json   the manifest, for people and tools
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

#include <cstdint>
#include <filesystem>
#include <memory>
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

  const std::filesystem::path& root() const { return root_; }

 private:
  explicit Registry(std::filesystem::path root) : root_(std::move(root)) {}
  std::filesystem::path root_;
};

}  // namespace cutover::registry
