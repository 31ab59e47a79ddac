#include "source/source.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>

#include <git2.h>

#include "core/log.hpp"

namespace cutover::source {

namespace fs = std::filesystem;
using core::Error;
using core::Result;

namespace {

constexpr const char* kFetchSpec = "+refs/heads/*:refs/remotes/origin/*";

void init_libgit2_once() {
  static std::once_flag once;
  // Never shut down: other GitSource objects may live until process exit.
  std::call_once(once, [] { git_libgit2_init(); });
}

Error lib_error(const std::string& what) {
  const git_error* e = git_error_last();
  return Error(what + ": " +
               (e != nullptr && e->message != nullptr ? e->message : "unknown error"));
}

// RAII for libgit2 handles.
template <typename T, void (*Free)(T*)>
struct Handle {
  T* p = nullptr;
  Handle() = default;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() {
    if (p != nullptr) Free(p);
  }
  T** out() { return &p; }
  T* get() const { return p; }
};
using RepoHandle = Handle<git_repository, git_repository_free>;
using RemoteHandle = Handle<git_remote, git_remote_free>;
using ObjectHandle = Handle<git_object, git_object_free>;
using CommitHandle = Handle<git_commit, git_commit_free>;
using TreeHandle = Handle<git_tree, git_tree_free>;
using BlobHandle = Handle<git_blob, git_blob_free>;
using EntryHandle = Handle<git_tree_entry, git_tree_entry_free>;
using RefHandle = Handle<git_reference, git_reference_free>;
using RevwalkHandle = Handle<git_revwalk, git_revwalk_free>;

bool looks_like_url(const std::string& s) {
  if (s.find("://") != std::string::npos) return true;
  // scp-like ssh: user@host:path (a colon before any slash).
  auto colon = s.find(':');
  auto slash = s.find('/');
  return colon != std::string::npos && (slash == std::string::npos || colon < slash) &&
         s.find('@') != std::string::npos && s.find('@') < colon;
}

bool is_hex(const std::string& s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) return false;
  }
  return true;
}

Commit to_commit(const git_commit* c) {
  Commit out;
  char hex[GIT_OID_HEXSZ + 1] = {};
  git_oid_tostr(hex, sizeof hex, git_commit_id(c));
  out.sha = hex;
  out.short_sha = out.sha.substr(0, 7);
  const char* summary = git_commit_summary(const_cast<git_commit*>(c));
  out.message = summary != nullptr ? summary : "";
  if (const git_signature* a = git_commit_author(c); a != nullptr) {
    out.author = std::string(a->name != nullptr ? a->name : "") + " <" +
                 (a->email != nullptr ? a->email : "") + ">";
    out.time = core::WallTime{std::chrono::seconds{a->when.time}};
  } else {
    out.time = core::WallTime{std::chrono::seconds{git_commit_time(c)}};
  }
  return out;
}

Error sys_error(const std::string& what, const fs::path& p) {
  return Error(what + " " + p.string() + ": " + std::strerror(errno));
}

Result<void> write_all(int fd, const char* data, size_t size, const fs::path& p) {
  size_t off = 0;
  while (off < size) {
    ssize_t n = ::write(fd, data + off, size - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error("cannot write", p);
    }
    off += static_cast<size_t>(n);
  }
  return core::ok();
}

// A tree entry name from an untrusted repository: one path component, nothing that climbs out.
bool safe_entry_name(const char* name) {
  std::string_view n(name);
  return !n.empty() && n != "." && n != ".." && n != ".git" &&
         n.find('/') == std::string_view::npos;
}

}  // namespace

struct GitSource::Impl {
  std::string url;
  std::string branch;
  fs::path cache_dir;
  std::mutex mu;
  RepoHandle repo;

  // Resolves sha (full or abbreviated hex) to a commit. Branch names are refused: builds use SHAs.
  Result<void> lookup_commit(const std::string& sha, CommitHandle& out) {
    if (sha.size() < 4 || sha.size() > GIT_OID_HEXSZ || !is_hex(sha)) {
      return Error("'" + sha + "' is not a commit id (expected 4-40 hex characters)");
    }
    git_oid oid;
    if (git_oid_fromstrn(&oid, sha.data(), sha.size()) != 0) {
      return lib_error("invalid commit id '" + sha + "'");
    }
    ObjectHandle obj;
    if (git_object_lookup_prefix(obj.out(), repo.get(), &oid, sha.size(), GIT_OBJECT_COMMIT) != 0) {
      return lib_error("commit " + sha + " is not in the mirror of " + url);
    }
    out.p = reinterpret_cast<git_commit*>(obj.p);
    obj.p = nullptr;
    return core::ok();
  }

  Result<void> write_tree(const git_tree* tree, const fs::path& dir) {
    size_t n = git_tree_entrycount(tree);
    for (size_t i = 0; i < n; ++i) {
      const git_tree_entry* e = git_tree_entry_byindex(tree, i);
      const char* name = git_tree_entry_name(e);
      if (!safe_entry_name(name)) {
        return Error("refusing unsafe path '" + std::string(name) + "' in " + dir.string());
      }
      fs::path p = dir / name;
      git_filemode_t mode = git_tree_entry_filemode(e);
      switch (mode) {
        case GIT_FILEMODE_TREE: {
          if (::mkdir(p.c_str(), 0755) != 0) return sys_error("cannot create directory", p);
          TreeHandle sub;
          if (git_tree_lookup(sub.out(), repo.get(), git_tree_entry_id(e)) != 0) {
            return lib_error("cannot read tree " + p.string());
          }
          if (auto r = write_tree(sub.get(), p); !r) return r;
          break;
        }
        case GIT_FILEMODE_BLOB:
        case GIT_FILEMODE_BLOB_EXECUTABLE:
        case GIT_FILEMODE_LINK: {
          BlobHandle blob;
          if (git_blob_lookup(blob.out(), repo.get(), git_tree_entry_id(e)) != 0) {
            return lib_error("cannot read blob " + p.string());
          }
          const char* data = static_cast<const char*>(git_blob_rawcontent(blob.get()));
          auto size = static_cast<size_t>(git_blob_rawsize(blob.get()));
          if (mode == GIT_FILEMODE_LINK) {
            std::string target(data, size);
            if (::symlink(target.c_str(), p.c_str()) != 0)
              return sys_error("cannot create symlink", p);
            break;
          }
          mode_t m = mode == GIT_FILEMODE_BLOB_EXECUTABLE ? 0755 : 0644;
          int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, m);
          if (fd < 0) return sys_error("cannot create", p);
          auto w = write_all(fd, data, size, p);
          if (w && ::fchmod(fd, m) != 0) w = sys_error("cannot chmod", p);
          ::close(fd);
          if (!w) return w;
          break;
        }
        case GIT_FILEMODE_COMMIT:
          core::logger()->warn("[source] submodule {} is not checked out (left empty)", p.string());
          if (::mkdir(p.c_str(), 0755) != 0) return sys_error("cannot create directory", p);
          break;
        default:
          return Error("unsupported tree entry mode " + std::to_string(mode) + " for " +
                       p.string());
      }
    }
    return core::ok();
  }
};

GitSource::GitSource(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GitSource::~GitSource() = default;

const std::string& GitSource::url() const { return impl_->url; }
const std::string& GitSource::branch() const { return impl_->branch; }

Result<std::unique_ptr<GitSource>> GitSource::open(std::string url_or_path, std::string branch,
                                                   fs::path cache_dir) {
  init_libgit2_once();
  if (branch.empty()) return Error("source: branch must not be empty");
  if (git_reference_is_valid_name(("refs/heads/" + branch).c_str()) == 0) {
    return Error("source: '" + branch + "' is not a valid branch name");
  }
  auto impl = std::make_unique<Impl>();
  if (looks_like_url(url_or_path)) {
    impl->url = std::move(url_or_path);
  } else {
    std::error_code ec;
    fs::path p = fs::absolute(url_or_path, ec);
    if (ec || !fs::is_directory(p, ec)) {
      return Error("source: repository path " + url_or_path +
                   " does not exist or is not a directory");
    }
    impl->url = p.lexically_normal().string();
  }
  impl->branch = std::move(branch);
  impl->cache_dir = cache_dir;

  std::error_code ec;
  bool exists = fs::exists(cache_dir, ec);
  bool empty = !exists || fs::is_empty(cache_dir, ec);
  if (empty) {
    fs::create_directories(cache_dir, ec);
    if (ec)
      return Error("source: cannot create cache directory " + cache_dir.string() + ": " +
                   ec.message());
    if (git_repository_init(impl->repo.out(), cache_dir.c_str(), /*is_bare=*/1) != 0) {
      return lib_error("source: cannot create mirror in " + cache_dir.string());
    }
  } else if (git_repository_open_bare(impl->repo.out(), cache_dir.c_str()) != 0) {
    return lib_error("source: " + cache_dir.string() +
                     " is not empty and not a cutover mirror (remove it to start over)");
  }

  return std::unique_ptr<GitSource>(new GitSource(std::move(impl)));
}

Result<std::optional<Commit>> GitSource::fetch_head() {
  std::lock_guard lock(impl_->mu);
  // An in-memory remote, nothing stored in the mirror's config: the URL given to open() always
  // wins, and "url.*.insteadOf" lookups are skipped (libgit2 1.5 leaks memory on every regex
  // config iteration that does not match).
  git_remote_create_options create = GIT_REMOTE_CREATE_OPTIONS_INIT;
  create.repository = impl_->repo.get();
  create.name = nullptr;
  create.fetchspec = kFetchSpec;
  create.flags = GIT_REMOTE_CREATE_SKIP_INSTEADOF | GIT_REMOTE_CREATE_SKIP_DEFAULT_FETCHSPEC;
  RemoteHandle remote;
  if (git_remote_create_with_opts(remote.out(), impl_->url.c_str(), &create) != 0) {
    return lib_error("source: invalid remote " + impl_->url);
  }
  git_fetch_options opts = GIT_FETCH_OPTIONS_INIT;
  opts.prune = GIT_FETCH_PRUNE;
  opts.download_tags = GIT_REMOTE_DOWNLOAD_TAGS_NONE;
  std::string spec = kFetchSpec;
  char* specs[] = {spec.data()};
  git_strarray refspecs = {specs, 1};
  if (git_remote_fetch(remote.get(), &refspecs, &opts, "cutover fetch") != 0) {
    return lib_error("source: fetching " + impl_->url + " failed");
  }
  std::string ref = "refs/remotes/origin/" + impl_->branch;
  RefHandle r;
  int rc = git_reference_lookup(r.out(), impl_->repo.get(), ref.c_str());
  if (rc == GIT_ENOTFOUND) {
    core::logger()->warn("[source] branch '{}' does not exist in {}", impl_->branch, impl_->url);
    return std::optional<Commit>{};
  }
  if (rc != 0) return lib_error("source: cannot read " + ref);
  ObjectHandle obj;
  if (git_reference_peel(obj.out(), r.get(), GIT_OBJECT_COMMIT) != 0) {
    return lib_error("source: branch '" + impl_->branch + "' does not point to a commit");
  }
  return std::optional<Commit>(to_commit(reinterpret_cast<git_commit*>(obj.get())));
}

Result<void> GitSource::checkout(const std::string& sha, const fs::path& dest) {
  std::lock_guard lock(impl_->mu);
  CommitHandle commit;
  if (auto r = impl_->lookup_commit(sha, commit); !r) return r.error().wrap("checkout");
  TreeHandle tree;
  if (git_commit_tree(tree.out(), commit.get()) != 0)
    return lib_error("checkout: cannot read tree");

  std::error_code ec;
  if (fs::exists(dest, ec)) {
    if (!fs::is_directory(dest, ec) || !fs::is_empty(dest, ec)) {
      return Error("checkout: destination " + dest.string() +
                   " exists and is not an empty directory");
    }
  } else {
    fs::create_directories(dest, ec);
    if (ec) return Error("checkout: cannot create " + dest.string() + ": " + ec.message());
  }
  if (auto r = impl_->write_tree(tree.get(), dest); !r) {
    return r.error().wrap("checkout of " + sha.substr(0, 7));
  }
  return core::ok();
}

Result<std::string> GitSource::read_file(const std::string& sha, const std::string& path) {
  std::lock_guard lock(impl_->mu);
  CommitHandle commit;
  if (auto r = impl_->lookup_commit(sha, commit); !r) return r.error();
  std::string short_sha = sha.substr(0, 7);
  TreeHandle tree;
  if (git_commit_tree(tree.out(), commit.get()) != 0) return lib_error("cannot read tree");
  EntryHandle entry;
  int rc = git_tree_entry_bypath(entry.out(), tree.get(), path.c_str());
  if (rc == GIT_ENOTFOUND) return Error(path + " not found at commit " + short_sha);
  if (rc != 0) return lib_error("cannot read " + path + " at commit " + short_sha);
  if (git_tree_entry_type(entry.get()) != GIT_OBJECT_BLOB ||
      git_tree_entry_filemode(entry.get()) == GIT_FILEMODE_LINK) {
    return Error(path + " at commit " + short_sha + " is not a regular file");
  }
  BlobHandle blob;
  if (git_blob_lookup(blob.out(), impl_->repo.get(), git_tree_entry_id(entry.get())) != 0) {
    return lib_error("cannot read " + path + " at commit " + short_sha);
  }
  return std::string(static_cast<const char*>(git_blob_rawcontent(blob.get())),
                     static_cast<size_t>(git_blob_rawsize(blob.get())));
}

Result<std::vector<Commit>> GitSource::commits_between(const std::string& old_sha,
                                                       const std::string& new_sha, size_t limit) {
  std::lock_guard lock(impl_->mu);
  CommitHandle newest;
  if (auto r = impl_->lookup_commit(new_sha, newest); !r) return r.error();
  RevwalkHandle walk;
  if (git_revwalk_new(walk.out(), impl_->repo.get()) != 0) return lib_error("cannot walk history");
  git_revwalk_sorting(walk.get(), GIT_SORT_TOPOLOGICAL | GIT_SORT_TIME);
  if (git_revwalk_push(walk.get(), git_commit_id(newest.get())) != 0) {
    return lib_error("cannot walk history");
  }
  if (!old_sha.empty()) {
    CommitHandle oldest;
    if (auto r = impl_->lookup_commit(old_sha, oldest); !r) return r.error();
    if (git_revwalk_hide(walk.get(), git_commit_id(oldest.get())) != 0) {
      return lib_error("cannot walk history");
    }
  }
  std::vector<Commit> out;
  git_oid oid;
  while (out.size() < limit && git_revwalk_next(&oid, walk.get()) == 0) {
    CommitHandle c;
    if (git_commit_lookup(c.out(), impl_->repo.get(), &oid) != 0)
      return lib_error("cannot read commit");
    out.push_back(to_commit(c.get()));
  }
  return out;
}

}  // namespace cutover::source
