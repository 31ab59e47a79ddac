// source: the Git side of cutover. Keeps a bare mirror of the application's repository, tells the
// controller which commit the watched branch points to, and materialises exact commits: a build
// always uses the tree of the SHA that triggered it, never "whatever the branch is now".
//
// Remotes: a local path (relative paths are made absolute at open), a file:// URL, or any URL the
// installed libgit2 handles (https://, git://, ssh:// when libgit2 was built with it). No
// credentials are configured yet: private remotes need a URL the transport can use as is.
//
// Thread-safety: a GitSource may be used from several threads; calls are serialised by an internal
// mutex (libgit2 repository handles are not thread-safe). Two GitSource objects must not share one
// cache_dir at the same time.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.hpp"
#include "core/result.hpp"

namespace cutover::source {

struct Commit {
  std::string sha;        // 40 hex characters
  std::string short_sha;  // first 7 characters (COMMIT_SHORT)
  std::string message;    // first line of the commit message
  std::string author;     // "Name <email>"
  core::WallTime time;    // author time
};

class GitSource {
 public:
  // cache_dir holds the bare mirror; it is created (git init --bare) when missing or empty and
  // reused afterwards, so a restarted controller only fetches what is new. Opening does no network
  // I/O; a local path that does not exist is an error right away.
  static core::Result<std::unique_ptr<GitSource>> open(std::string url_or_path, std::string branch,
                                                       std::filesystem::path cache_dir);
  ~GitSource();
  GitSource(const GitSource&) = delete;
  GitSource& operator=(const GitSource&) = delete;

  // Fetches the remote (all branches, pruned, force-updates allowed) and returns the head of the
  // watched branch. A branch that does not exist (yet, or any more) is std::nullopt, with the
  // reason logged; a force-push simply yields the new head. Errors: unreachable remote, bad URL.
  core::Result<std::optional<Commit>> fetch_head();

  // Writes exactly the tree of commit sha into dest: regular files with their executable bit,
  // symlinks as symlinks, directories; no .git. dest must not exist or be an empty directory.
  // Submodules become empty directories (logged). sha must be a full or unambiguous abbreviated
  // hex commit id already fetched; branch names are refused on purpose.
  core::Result<void> checkout(const std::string& sha, const std::filesystem::path& dest);

  // The content of path (e.g. "cutover.yaml") at commit sha. A missing file is an error whose
  // message says "<path> not found at commit <short>".
  core::Result<std::string> read_file(const std::string& sha, const std::string& path);

  // Commits reachable from new_sha but not from old_sha, newest first, at most limit of them.
  // old_sha empty = the history of new_sha. Works across force-pushes (old_sha needs to still be in
  // the mirror; an unknown old_sha is an error).
  core::Result<std::vector<Commit>> commits_between(const std::string& old_sha,
                                                    const std::string& new_sha, size_t limit = 100);

  const std::string& url() const;
  const std::string& branch() const;

 private:
  struct Impl;
  explicit GitSource(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cutover::source
