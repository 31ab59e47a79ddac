#include "registry/registry.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <optional>

#include <openssl/evp.h>
#include <nlohmann/json.hpp>

#include "core/fs.hpp"
#include "core/id.hpp"

namespace cutover::registry {

namespace fs = std::filesystem;
using core::Error;
using core::Result;

namespace {

constexpr std::string_view kDigestPrefix = "sha256:";
constexpr size_t kChunk = 64 * 1024;

Error sys_error(const std::string& what, const fs::path& p) {
  return Error(what + " " + p.string() + ": " + std::strerror(errno));
}

std::string to_hex(const unsigned char* data, size_t n) {
  static const char* kHex = "0123456789abcdef";
  std::string out(n * 2, '0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = kHex[data[i] >> 4];
    out[2 * i + 1] = kHex[data[i] & 0xf];
  }
  return out;
}

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, size_t n) { EVP_DigestUpdate(ctx_, data, n); }
  std::string hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_, md, &len);
    return to_hex(md, len);
  }

 private:
  EVP_MD_CTX* ctx_;
};

enum class EntryType { Dir, File, Symlink };

struct Entry {
  EntryType type = EntryType::File;
  bool exec = false;
  std::string sha256;  // files
  uint64_t size = 0;   // files
  std::string target;  // symlinks
  bool operator==(const Entry&) const = default;
};

using Manifest = std::map<std::string, Entry>;  // sorted by relative path (bytes)

std::string netstring(const std::string& s) { return std::to_string(s.size()) + ":" + s; }

// The text whose SHA-256 is the digest. Length-prefixed paths, so no file name can forge a line.
std::string canonical(const Manifest& m) {
  std::string out = "cutover-manifest v1\n";
  for (const auto& [path, e] : m) {
    switch (e.type) {
      case EntryType::Dir:
        out += "d " + netstring(path) + "\n";
        break;
      case EntryType::File:
        out += std::string("f ") + (e.exec ? "x " : "- ") + e.sha256 + " " +
               std::to_string(e.size) + " " + netstring(path) + "\n";
        break;
      case EntryType::Symlink:
        out += "l " + netstring(path) + " " + netstring(e.target) + "\n";
        break;
    }
  }
  return out;
}

std::string digest_of(const Manifest& m) {
  std::string text = canonical(m);
  Sha256 h;
  h.update(text.data(), text.size());
  return std::string(kDigestPrefix) + h.hex();
}

nlohmann::json to_json(const Manifest& m, const std::string& digest) {
  nlohmann::json entries = nlohmann::json::array();
  for (const auto& [path, e] : m) {
    nlohmann::json j;
    j["path"] = path;
    switch (e.type) {
      case EntryType::Dir:
        j["type"] = "dir";
        break;
      case EntryType::File:
        j["type"] = "file";
        j["sha256"] = e.sha256;
        j["size"] = e.size;
        j["exec"] = e.exec;
        break;
      case EntryType::Symlink:
        j["type"] = "symlink";
        j["target"] = e.target;
        break;
    }
    entries.push_back(std::move(j));
  }
  return nlohmann::json{{"version", 1}, {"digest", digest}, {"entries", std::move(entries)}};
}

std::optional<Manifest> from_json(const std::string& text) {
  try {
    auto j = nlohmann::json::parse(text);
    Manifest m;
    for (const auto& je : j.at("entries")) {
      Entry e;
      auto type = je.at("type").get<std::string>();
      if (type == "dir") {
        e.type = EntryType::Dir;
      } else if (type == "file") {
        e.type = EntryType::File;
        e.sha256 = je.at("sha256").get<std::string>();
        e.size = je.at("size").get<uint64_t>();
        e.exec = je.at("exec").get<bool>();
      } else {
        e.type = EntryType::Symlink;
        e.target = je.at("target").get<std::string>();
      }
      m[je.at("path").get<std::string>()] = std::move(e);
    }
    return m;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::string join(const std::string& a, const std::string& b) { return a.empty() ? b : a + "/" + b; }

// Walks a source tree without following symlinks, recording a Manifest; when dst is set, copies
// every entry there at the same relative path (files hashed from the bytes actually copied, so a
// file changing under us cannot make the digest disagree with the stored content).
class Collector {
 public:
  Collector(fs::path src, std::optional<fs::path> dst)
      : src_(std::move(src)), dst_(std::move(dst)) {}

  Manifest& manifest() { return manifest_; }

  // Adds one include (normalised relative path; "" = everything).
  Result<void> add_include(const std::string& rel) {
    // Every directory leading to the include must be a real directory inside src.
    std::string prefix;
    fs::path relp(rel);
    std::vector<std::string> parts;
    for (const auto& part : relp) parts.push_back(part.string());
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      prefix = join(prefix, parts[i]);
      struct stat st {};
      if (::lstat((src_ / prefix).c_str(), &st) != 0) {
        return Error("artifact path " + rel + " does not exist in " + src_.string());
      }
      if (!S_ISDIR(st.st_mode)) {
        return Error("artifact path " + rel + ": " + prefix + " is not a directory (symlinks " +
                     "cannot lead to artifacts)");
      }
      if (auto r = add_dir_entry(prefix); !r) return r;
    }
    return add_path(rel, /*top=*/true);
  }

  // Adds the stored tree's entries as found (used to verify).
  Result<void> add_all() { return add_dir_contents(""); }

 private:
  Result<void> add_dir_entry(const std::string& rel) {
    if (manifest_.count(rel) != 0) return core::ok();
    manifest_[rel] = Entry{EntryType::Dir};
    if (dst_) {
      fs::path d = *dst_ / rel;
      if (::mkdir(d.c_str(), 0755) != 0 && errno != EEXIST) return sys_error("cannot create", d);
    }
    return core::ok();
  }

  Result<void> add_path(const std::string& rel, bool top) {
    // Overlapping includes ("dist", "dist/x"): each entry is taken once.
    if (auto it = manifest_.find(rel); it != manifest_.end() && it->second.type != EntryType::Dir) {
      return core::ok();
    }
    fs::path p = rel.empty() ? src_ : src_ / rel;
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0) {
      if (errno == ENOENT && top) {
        return Error("artifact path " + rel + " does not exist in " + src_.string());
      }
      return sys_error("cannot read", p);
    }
    if (S_ISDIR(st.st_mode)) {
      if (!rel.empty()) {
        if (auto r = add_dir_entry(rel); !r) return r;
      }
      return add_dir_contents(rel);
    }
    if (S_ISREG(st.st_mode)) return add_file(rel, p);
    if (S_ISLNK(st.st_mode)) return add_symlink(rel, p);
    return Error("artifact path " + rel + " is not a regular file, directory or symlink");
  }

  Result<void> add_dir_contents(const std::string& rel) {
    fs::path p = rel.empty() ? src_ : src_ / rel;
    DIR* dir = ::opendir(p.c_str());
    if (dir == nullptr) return sys_error("cannot list", p);
    std::vector<std::string> names;
    while (dirent* d = ::readdir(dir)) {
      std::string name = d->d_name;
      if (name != "." && name != "..") names.push_back(std::move(name));
    }
    ::closedir(dir);
    for (const auto& name : names) {
      if (auto r = add_path(join(rel, name), false); !r) return r;
    }
    return core::ok();
  }

  Result<void> add_file(const std::string& rel, const fs::path& p) {
    int in = ::open(p.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (in < 0) return sys_error("cannot open", p);
    struct stat st {};
    ::fstat(in, &st);
    Entry e{EntryType::File};
    e.exec = (st.st_mode & S_IXUSR) != 0;
    int out = -1;
    fs::path d;
    if (dst_) {
      d = *dst_ / rel;
      out = ::open(d.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
      if (out < 0) {
        Error err = sys_error("cannot create", d);
        ::close(in);
        return err;
      }
    }
    Sha256 h;
    std::string buf(kChunk, '\0');
    Result<void> result = core::ok();
    while (true) {
      ssize_t n = ::read(in, buf.data(), buf.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        result = sys_error("cannot read", p);
        break;
      }
      if (n == 0) break;
      h.update(buf.data(), static_cast<size_t>(n));
      e.size += static_cast<uint64_t>(n);
      size_t off = 0;
      while (out >= 0 && off < static_cast<size_t>(n)) {
        ssize_t w = ::write(out, buf.data() + off, static_cast<size_t>(n) - off);
        if (w < 0) {
          if (errno == EINTR) continue;
          result = sys_error("cannot write", d);
          break;
        }
        off += static_cast<size_t>(w);
      }
      if (!result) break;
    }
    ::close(in);
    if (out >= 0 && ::close(out) != 0 && result) result = sys_error("cannot write", d);
    if (!result) return result;
    e.sha256 = h.hex();
    manifest_[rel] = std::move(e);
    return core::ok();
  }

  Result<void> add_symlink(const std::string& rel, const fs::path& p) {
    std::string target(4096, '\0');
    ssize_t n = ::readlink(p.c_str(), target.data(), target.size());
    if (n < 0) return sys_error("cannot read symlink", p);
    target.resize(static_cast<size_t>(n));
    if (target.empty() || target[0] == '/') {
      return Error("artifact symlink " + rel + " -> " + target +
                   " points outside the artifact (absolute target)");
    }
    fs::path resolved = (fs::path(rel).parent_path() / target).lexically_normal();
    if (!resolved.empty() && *resolved.begin() == "..") {
      return Error("artifact symlink " + rel + " -> " + target + " points outside the artifact");
    }
    if (dst_) {
      fs::path d = *dst_ / rel;
      if (::symlink(target.c_str(), d.c_str()) != 0) return sys_error("cannot create symlink", d);
    }
    Entry e{EntryType::Symlink};
    e.target = std::move(target);
    manifest_[rel] = std::move(e);
    return core::ok();
  }

  fs::path src_;
  std::optional<fs::path> dst_;
  Manifest manifest_;
};

// "dist/" -> "dist"; "." or "" -> "" (everything); refuses absolute paths and "..".
Result<std::string> normalise_include(const std::string& include) {
  if (include.empty()) return Error("artifact path must not be empty");
  fs::path p(include);
  if (p.is_absolute())
    return Error("artifact path " + include + " must be relative to the workspace");
  fs::path n = p.lexically_normal();
  for (const auto& part : n) {
    if (part == "..") return Error("artifact path " + include + " leaves the workspace");
  }
  std::string s = n.string();
  while (!s.empty() && s.back() == '/') s.pop_back();
  if (s == ".") s.clear();
  return s;
}

// Makes a read-only tree writable again and removes it (staging leftovers).
void remove_tree(const fs::path& p) {
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(p, ec))) return;
  for (auto it = fs::recursive_directory_iterator(p, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (it->is_directory(ec) && !it->is_symlink(ec)) ::chmod(it->path().c_str(), 0755);
  }
  ::chmod(p.c_str(), 0755);
  fs::remove_all(p, ec);
}

// Makes the staged tree read-only: files 0444/0555, directories 0555 (children first).
Result<void> seal(const fs::path& tree, const Manifest& m) {
  for (auto it = m.rbegin(); it != m.rend(); ++it) {
    const auto& [rel, e] = *it;
    fs::path p = tree / rel;
    mode_t mode = 0;
    if (e.type == EntryType::Dir)
      mode = 0555;
    else if (e.type == EntryType::File)
      mode = e.exec ? 0555 : 0444;
    else
      continue;
    if (::chmod(p.c_str(), mode) != 0) return sys_error("cannot seal", p);
  }
  if (::chmod(tree.c_str(), 0555) != 0) return sys_error("cannot seal", tree);
  return core::ok();
}

Artifact artifact_of(const fs::path& dir, const std::string& digest, const Manifest& m) {
  Artifact a;
  a.digest = digest;
  a.path = dir / "tree";
  for (const auto& [rel, e] : m) {
    if (e.type == EntryType::File) {
      a.size_bytes += e.size;
      ++a.file_count;
    } else if (e.type == EntryType::Symlink) {
      ++a.file_count;
    }
  }
  return a;
}

Result<std::string> hex_of(const std::string& digest) {
  if (digest.rfind(kDigestPrefix, 0) != 0 || digest.size() != kDigestPrefix.size() + 64) {
    return Error("'" + digest + "' is not an artifact digest (expected sha256:<64 hex>)");
  }
  std::string hex = digest.substr(kDigestPrefix.size());
  for (char c : hex) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return Error("'" + digest + "' is not an artifact digest (expected sha256:<64 hex>)");
    }
  }
  return hex;
}

bool valid_repo(const std::string& repo) {
  if (repo.empty() || repo.size() > 255) return false;
  size_t start = 0;
  while (true) {
    size_t end = repo.find('/', start);
    std::string part =
        repo.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (part.empty() || part == "." || part == "..") return false;
    if (part[0] == '.' || part[0] == '-') return false;
    for (char c : part) {
      bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '.' || c == '_' || c == '-';
      if (!ok) return false;
    }
    if (end == std::string::npos) return true;
    start = end + 1;
  }
}

bool valid_tag(const std::string& tag) {
  if (tag.empty() || tag.size() > 128 || tag[0] == '.' || tag[0] == '-') return false;
  for (char c : tag) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

Result<std::unique_ptr<Registry>> Registry::open(fs::path root) {
  for (const char* sub : {"sha256", "tags", "tmp"}) {
    if (auto r = core::ensure_dir(root / sub); !r) return r.error().wrap("registry");
  }
  // Staging leftovers of a crash are garbage: nothing refers to them.
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root / "tmp", ec)) remove_tree(e.path());
  return std::unique_ptr<Registry>(new Registry(std::move(root)));
}

Result<Artifact> Registry::put_directory(const fs::path& src,
                                         const std::vector<std::string>& include) {
  std::error_code ec;
  if (!fs::is_directory(src, ec))
    return Error("artifact source " + src.string() + " is not a directory");
  std::vector<std::string> rels;
  for (const auto& inc : include) {
    auto n = normalise_include(inc);
    if (!n) return n.error();
    rels.push_back(std::move(n).value());
  }
  if (rels.empty()) rels.emplace_back();

  fs::path staging = root_ / "tmp" / core::random_hex(8);
  fs::path tree = staging / "tree";
  if (::mkdir(staging.c_str(), 0755) != 0 || ::mkdir(tree.c_str(), 0755) != 0) {
    return sys_error("cannot create staging directory", staging);
  }
  Collector collector(src, tree);
  for (const auto& rel : rels) {
    if (auto r = collector.add_include(rel); !r) {
      remove_tree(staging);
      return r.error();
    }
  }
  const Manifest& m = collector.manifest();
  std::string digest = digest_of(m);
  fs::path final_dir = root_ / "sha256" / digest.substr(kDigestPrefix.size());
  {
    // Identical content is stored once. Its put time is refreshed (under the lock remove takes),
    // so that a gc planned before this put does not remove what this build now uses.
    std::lock_guard lock(put_remove_mu_);
    if (fs::exists(final_dir, ec)) {
      remove_tree(staging);
      ::utimensat(AT_FDCWD, final_dir.c_str(), nullptr, 0);
      return artifact_of(final_dir, digest, m);
    }
  }
  std::string json =
      to_json(m, digest).dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
  if (auto r = core::write_file_atomic(staging / "manifest.json", json + "\n", 0444); !r) {
    remove_tree(staging);
    return r.error();
  }
  if (auto r = seal(tree, m); !r) {
    remove_tree(staging);
    return r.error();
  }
  std::lock_guard lock(put_remove_mu_);
  if (::rename(staging.c_str(), final_dir.c_str()) != 0) {
    int err = errno;
    remove_tree(staging);
    if (err != EEXIST && err != ENOTEMPTY) {
      errno = err;
      return sys_error("cannot store artifact", final_dir);
    }
    // A concurrent put of the same content won the race; its tree is the same.
  }
  return artifact_of(final_dir, digest, m);
}

Result<Artifact> Registry::get(const std::string& digest) {
  auto hex = hex_of(digest);
  if (!hex) return hex.error();
  fs::path dir = root_ / "sha256" / *hex;
  std::error_code ec;
  if (!fs::is_directory(dir / "tree", ec))
    return Error("artifact " + digest + " not found in registry");
  Collector collector(dir / "tree", std::nullopt);
  if (auto r = collector.add_all(); !r) return r.error().wrap("artifact " + digest);
  const Manifest& m = collector.manifest();
  std::string actual = digest_of(m);
  if (actual != digest) {
    std::string detail;
    auto recorded_text = core::read_file(dir / "manifest.json");
    auto recorded = recorded_text ? from_json(*recorded_text) : std::nullopt;
    if (recorded) {
      for (const auto& [rel, e] : *recorded) {
        auto it = m.find(rel);
        if (it == m.end()) {
          detail = rel + " was removed";
          break;
        }
        if (!(it->second == e)) {
          detail = rel + " was modified";
          break;
        }
      }
      if (detail.empty()) {
        for (const auto& [rel, e] : m) {
          if (recorded->count(rel) == 0) {
            detail = rel + " was added";
            break;
          }
        }
      }
    }
    return Error("artifact " + digest + " was tampered with" +
                 (detail.empty() ? "" : ": " + detail) + " (content now hashes to " + actual +
                 "); refusing to use it");
  }
  return artifact_of(dir, digest, m);
}

Result<void> Registry::tag(const std::string& repo, const std::string& tag,
                           const std::string& digest) {
  if (!valid_repo(repo)) return Error("invalid repository name '" + repo + "'");
  if (!valid_tag(tag)) return Error("invalid tag '" + tag + "'");
  auto hex = hex_of(digest);
  if (!hex) return hex.error();
  std::error_code ec;
  if (!fs::is_directory(root_ / "sha256" / *hex, ec)) {
    return Error("cannot tag " + repo + ":" + tag + ": artifact " + digest +
                 " not found in registry");
  }
  fs::path dir = root_ / "tags" / repo;
  fs::create_directories(dir, ec);
  if (ec) return Error("cannot create " + dir.string() + ": " + ec.message());
  fs::path final_path = dir / tag;
  fs::path tmp = dir / (".tmp-" + core::random_hex(6));
  if (auto r = core::write_file_atomic(tmp, digest + "\n", 0444); !r) return r;
  // link(2) never replaces an existing name: the first tag wins, atomically.
  int rc = ::link(tmp.c_str(), final_path.c_str());
  int err = errno;
  ::unlink(tmp.c_str());
  if (rc == 0) return core::ok();
  if (err != EEXIST) {
    errno = err;
    return sys_error("cannot write tag", final_path);
  }
  auto existing = core::read_file(final_path);
  if (!existing) return existing.error();
  std::string current = trim(*existing);
  if (current == digest) return core::ok();
  return Error("tag " + repo + ":" + tag + " already points to " + current +
               "; tags are immutable, refusing to move it to " + digest);
}

namespace {

uint64_t bytes_under(const fs::path& p) {
  uint64_t total = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(p, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
      total += static_cast<uint64_t>(st.st_size);
    }
  }
  return total;
}

int64_t mtime_ms(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000 + st.st_mtim.tv_nsec / 1000000;
}

}  // namespace

Result<std::vector<ArtifactEntry>> Registry::list() {
  std::map<std::string, ArtifactEntry> by_digest;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root_ / "sha256", ec)) {
    const std::string digest = std::string(kDigestPrefix) + e.path().filename().string();
    if (!hex_of(digest)) continue;
    struct stat st {};
    if (::stat(e.path().c_str(), &st) != 0) continue;  // removed meanwhile
    ArtifactEntry a;
    a.digest = digest;
    a.put_unix_ms = mtime_ms(st);
    a.size_bytes = bytes_under(e.path());
    by_digest[digest] = std::move(a);
  }
  if (ec) return Error("cannot list " + (root_ / "sha256").string() + ": " + ec.message());
  const fs::path tags = root_ / "tags";
  for (auto it = fs::recursive_directory_iterator(tags, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    const std::string name = it->path().filename().string();
    if (name.rfind(".tmp-", 0) == 0) continue;
    auto content = core::read_file(it->path());
    if (!content) continue;
    auto found = by_digest.find(trim(*content));
    if (found == by_digest.end()) continue;  // the tag of a removed artifact
    const std::string repo = it->path().parent_path().lexically_relative(tags).string();
    found->second.tags.push_back(repo + ":" + name);
  }
  std::vector<ArtifactEntry> out;
  for (auto& [digest, a] : by_digest) {
    std::sort(a.tags.begin(), a.tags.end());
    out.push_back(std::move(a));
  }
  return out;
}

Result<uint64_t> Registry::remove(const std::string& digest, int64_t not_put_since_unix_ms) {
  auto hex = hex_of(digest);
  if (!hex) return hex.error();
  const fs::path dir = root_ / "sha256" / *hex;
  std::lock_guard lock(put_remove_mu_);
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) return Error("artifact " + digest + " not found in registry");
    return sys_error("cannot read", dir);
  }
  if (mtime_ms(st) >= not_put_since_unix_ms) {
    return Error("artifact " + digest + " was put again since gc planned its removal; kept");
  }
  const uint64_t bytes = bytes_under(dir);
  // Out of sha256/ first by one rename, so that no reader ever sees a half-removed tree.
  const fs::path doomed = root_ / "tmp" / ("gc-" + *hex);
  remove_tree(doomed);  // the leftover of an earlier removal that failed half-way
  if (::rename(dir.c_str(), doomed.c_str()) != 0) return sys_error("cannot remove", dir);
  remove_tree(doomed);
  std::error_code ec;
  if (fs::exists(doomed, ec)) {
    return Error("artifact " + digest + " moved to " + doomed.string() +
                 " but could not be deleted there; the next start of the registry deletes it");
  }
  return bytes;
}

Result<std::string> Registry::resolve(const std::string& repo, const std::string& tag) {
  if (!valid_repo(repo)) return Error("invalid repository name '" + repo + "'");
  if (!valid_tag(tag)) return Error("invalid tag '" + tag + "'");
  fs::path p = root_ / "tags" / repo / tag;
  std::error_code ec;
  if (!fs::exists(p, ec)) return Error("tag " + repo + ":" + tag + " not found in registry");
  auto content = core::read_file(p);
  if (!content) return content.error();
  std::string digest = trim(*content);
  auto hex = hex_of(digest);
  if (!hex) return Error("tag " + repo + ":" + tag + " is corrupt");
  if (!fs::is_directory(root_ / "sha256" / *hex, ec)) {
    return Error("tag " + repo + ":" + tag + " names " + digest +
                 ", which the registry's gc removed");
  }
  return digest;
}

}  // namespace cutover::registry
