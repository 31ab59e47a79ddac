// The secrets table (Store::*_secret) and the sealing around it (SecretKey, SecretStore).
#include "store/secrets.hpp"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

#include "core/fs.hpp"
#include "core/id.hpp"
#include "store/sqlite_db.hpp"

namespace cutover::store {

using core::Error;
using core::ErrorKind;
using core::Result;

namespace {

constexpr const char* kSecretColumns =
    "name, key_id, nonce, ciphertext, version, created_at, updated_at";
// Bound to every ciphertext with the name: changes of format get a new label.
constexpr std::string_view kAdLabel = "cutover-secret-v1";

void init_sodium() {
  // Thread-safe and idempotent; fails only when the system has no entropy source at all.
  if (sodium_init() < 0) std::abort();
}

SecretRow read_secret(const detail::Stmt& st) {
  return SecretRow{st.text(0),  st.text(1),  st.text(2), st.text(3),
                   st.int64(4), st.int64(5), st.int64(6)};
}

std::string to_hex(const unsigned char* data, size_t n) {
  std::string hex(n * 2 + 1, '\0');
  sodium_bin2hex(hex.data(), hex.size(), data, n);
  hex.pop_back();
  return hex;
}

// Decodes exactly `want` bytes of hex (want = 0: any length); false on anything else.
bool from_hex(std::string_view hex, std::string& out, size_t want = 0) {
  if (hex.size() % 2 != 0 || (want != 0 && hex.size() != want * 2)) return false;
  out.assign(hex.size() / 2, '\0');
  size_t len = 0;
  if (sodium_hex2bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), hex.data(),
                     hex.size(), nullptr, &len, nullptr) != 0 ||
      len != out.size()) {
    return false;
  }
  return true;
}

std::string associated_data(const std::string& name) {
  std::string ad(kAdLabel);
  ad.push_back('\0');
  ad += name;
  return ad;
}

Error bad_name(const std::string& name) {
  return Error(fmt::format(
      "invalid secret name \"{:.140}\": expected segments of A-Z a-z 0-9 . _ - separated by single "
      "/, each starting with a letter or digit, at most 128 characters (e.g. web/database-url)",
      name));
}

SecretInfo info_of(const SecretRow& row) {
  return SecretInfo{row.name, row.version, row.created_at, row.updated_at};
}

std::string trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return std::string(s);
}

// Creates the key file without ever replacing one: written to a temporary, then link()ed into
// place, which fails if another process created the file first (then its key is the one read).
Result<void> create_key_file(const std::filesystem::path& file, const SecretKey& key) {
  const std::filesystem::path tmp = file.parent_path() / (".secret.key.tmp-" + core::random_hex(6));
  const std::string text = to_hex(key.data(), SecretKey::kSize) + "\n";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    return Error(fmt::format("cannot create the secret key file {}: {}", tmp.string(),
                             std::strerror(errno)));
  }
  bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
                 ::fsync(fd) == 0;
  ::close(fd);
  if (!written) {
    ::unlink(tmp.c_str());
    return Error(fmt::format("cannot write the secret key file {}", tmp.string()));
  }
  const int linked = ::link(tmp.c_str(), file.c_str());
  const int link_errno = errno;
  ::unlink(tmp.c_str());
  if (linked != 0 && link_errno != EEXIST) {
    return Error(fmt::format("cannot create the secret key file {}: {}", file.string(),
                             std::strerror(link_errno)));
  }
  return core::ok();
}

}  // namespace

// ---- Rows
// ----------------------------------------------------------------------------------------

Result<SecretRow> Store::put_secret(SecretRow row) {
  return impl_->in_tx(true, [&]() -> Result<SecretRow> {
    auto existing =
        impl_->query("SELECT version, created_at FROM secrets WHERE name = ?", row.name);
    if (!existing.ok()) return existing.error();
    auto found = existing->step();
    if (!found.ok()) return found.error();
    row.updated_at = impl_->now_ms();
    row.version = 1;
    row.created_at = row.updated_at;
    if (*found) {
      row.version = existing->int64(0) + 1;
      row.created_at = existing->int64(1);
    }
    auto st = impl_->query("INSERT INTO secrets (" + std::string(kSecretColumns) +
                               ") VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                               "key_id = excluded.key_id, nonce = excluded.nonce, "
                               "ciphertext = excluded.ciphertext, version = excluded.version, "
                               "updated_at = excluded.updated_at",
                           row.name, row.key_id, row.nonce, row.ciphertext, row.version,
                           row.created_at, row.updated_at);
    if (!st.ok()) return st.error();
    auto done = st->run();
    if (!done.ok()) return detail::in_context(done.error(), "put secret " + row.name);
    return row;
  });
}

Result<std::optional<SecretRow>> Store::get_secret(const std::string& name) {
  return impl_->in_tx(false, [&]() -> Result<std::optional<SecretRow>> {
    auto st = impl_->query("SELECT " + std::string(kSecretColumns) + " FROM secrets WHERE name = ?",
                           name);
    if (!st.ok()) return st.error();
    auto row = st->step();
    if (!row.ok()) return row.error();
    if (!*row) return std::optional<SecretRow>();
    return std::optional<SecretRow>(read_secret(*st));
  });
}

Result<std::vector<SecretRow>> Store::list_secrets() {
  return impl_->in_tx(false, [&]() -> Result<std::vector<SecretRow>> {
    auto st = impl_->query("SELECT " + std::string(kSecretColumns) + " FROM secrets ORDER BY name");
    if (!st.ok()) return st.error();
    std::vector<SecretRow> out;
    for (;;) {
      auto row = st->step();
      if (!row.ok()) return row.error();
      if (!*row) return out;
      out.push_back(read_secret(*st));
    }
  });
}

Result<bool> Store::delete_secret(const std::string& name) {
  return impl_->in_tx(true, [&]() -> Result<bool> {
    auto st = impl_->query("DELETE FROM secrets WHERE name = ?", name);
    if (!st.ok()) return st.error();
    auto done = st->run();
    if (!done.ok()) return detail::in_context(done.error(), "delete secret " + name);
    return sqlite3_changes(impl_->db) > 0;
  });
}

// ---- Names and keys
// ------------------------------------------------------------------------------

bool is_secret_name(std::string_view s) {
  if (s.empty() || s.size() > 128) return false;
  size_t start = 0;
  while (true) {
    const size_t slash = s.find('/', start);
    std::string_view seg =
        s.substr(start, slash == std::string_view::npos ? s.npos : slash - start);
    if (seg.empty() || !std::isalnum(static_cast<unsigned char>(seg[0]))) return false;
    for (char c : seg) {
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) {
        return false;
      }
    }
    if (slash == std::string_view::npos) return true;
    start = slash + 1;
  }
}

SecretKey::~SecretKey() { sodium_memzero(bytes_.data(), bytes_.size()); }

void SecretKey::compute_id() {
  unsigned char digest[8];
  static constexpr unsigned char kContext[] = "cutover-secret-key-id";
  crypto_generichash(digest, sizeof digest, bytes_.data(), bytes_.size(), kContext,
                     sizeof kContext - 1);
  id_ = to_hex(digest, sizeof digest);
}

SecretKey SecretKey::generate() {
  init_sodium();
  SecretKey key;
  crypto_aead_xchacha20poly1305_ietf_keygen(key.bytes_.data());
  key.compute_id();
  key.source_ = "generated";
  return key;
}

Result<SecretKey> SecretKey::from_hex(std::string_view hex, std::string_view source) {
  init_sodium();
  const std::string text = trim(hex);
  std::string bytes;
  if (!cutover::store::from_hex(text, bytes, kSize)) {
    return Error(
        fmt::format("{}: the secret key must be {} hexadecimal characters (32 random "
                    "bytes, e.g. from `openssl rand -hex 32`), got {} characters",
                    source, kSize * 2, text.size()));
  }
  SecretKey key;
  std::memcpy(key.bytes_.data(), bytes.data(), kSize);
  sodium_memzero(bytes.data(), bytes.size());
  key.compute_id();
  key.source_ = std::string(source);
  return key;
}

Result<SecretKey> SecretKey::load(const std::filesystem::path& state_dir) {
  const std::string env_name(kSecretKeyEnv);
  if (const char* env = std::getenv(env_name.c_str()); env != nullptr && *env != '\0') {
    return from_hex(env, env_name);
  }
  const std::filesystem::path file = state_dir / kSecretKeyFile;
  struct stat sb;
  if (::stat(file.c_str(), &sb) != 0) {
    if (errno != ENOENT) {
      return Error(fmt::format("cannot read the secret key file {}: {}", file.string(),
                               std::strerror(errno)));
    }
    if (auto dir = core::ensure_dir(state_dir, 0700); !dir) return dir.error();
    if (auto created = create_key_file(file, generate()); !created) return created.error();
    if (::stat(file.c_str(), &sb) != 0) {
      return Error(fmt::format("cannot read the secret key file {}: {}", file.string(),
                               std::strerror(errno)));
    }
  }
  if ((sb.st_mode & 077) != 0) {
    return Error(fmt::format(
        "the secret key file {} can be read by group or others (mode {:04o}); run `chmod 600 {}`",
        file.string(), sb.st_mode & 07777, file.string()));
  }
  auto text = core::read_file(file);
  if (!text) return text.error();
  auto key = from_hex(*text, file.string());
  sodium_memzero(text->data(), text->size());
  return key;
}

// ---- SecretStore
// ---------------------------------------------------------------------------------

SecretStore::SecretStore(Store& store, SecretKey key) : store_(store), key_(std::move(key)) {
  init_sodium();
}

Result<SecretInfo> SecretStore::set(const std::string& name, std::string_view value) {
  if (!is_secret_name(name)) return bad_name(name);
  if (value.empty()) return Error(fmt::format("secret {}: the value is empty", name));
  if (value.size() > kMaxSecretValueBytes) {
    return Error(fmt::format("secret {}: the value has {} bytes, more than the {} allowed", name,
                             value.size(), kMaxSecretValueBytes));
  }
  if (value.find('\0') != std::string_view::npos) {
    return Error(fmt::format(
        "secret {}: the value contains a NUL byte, which an environment variable cannot hold",
        name));
  }
  unsigned char nonce[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES];
  randombytes_buf(nonce, sizeof nonce);
  std::string sealed(value.size() + crypto_aead_xchacha20poly1305_ietf_ABYTES, '\0');
  unsigned long long sealed_len = 0;
  const std::string ad = associated_data(name);
  crypto_aead_xchacha20poly1305_ietf_encrypt(
      reinterpret_cast<unsigned char*>(sealed.data()), &sealed_len,
      reinterpret_cast<const unsigned char*>(value.data()), value.size(),
      reinterpret_cast<const unsigned char*>(ad.data()), ad.size(), nullptr, nonce, key_.data());
  SecretRow row;
  row.name = name;
  row.key_id = key_.id();
  row.nonce = to_hex(nonce, sizeof nonce);
  row.ciphertext = to_hex(reinterpret_cast<const unsigned char*>(sealed.data()), sealed_len);
  auto saved = store_.put_secret(std::move(row));
  if (!saved) return saved.error();
  return info_of(*saved);
}

Result<std::string> SecretStore::get(const std::string& name) const {
  if (!is_secret_name(name)) return bad_name(name);
  auto row = store_.get_secret(name);
  if (!row) return row.error();
  if (!row->has_value()) {
    return Error(
        fmt::format("no secret named \"{}\" (set it with `cutover secrets set {}`)", name, name),
        ErrorKind::NotFound);
  }
  const SecretRow& r = **row;
  const auto fail = [&](std::string_view why) {
    return Error(fmt::format("secret {} cannot be opened: {}", name, why), ErrorKind::Internal);
  };
  if (r.key_id != key_.id()) {
    return fail(
        fmt::format("it was sealed with key {} but the key in use ({}) is {}; restore that "
                    "key or set the secret again",
                    r.key_id, key_.source(), key_.id()));
  }
  std::string nonce;
  std::string sealed;
  if (!from_hex(r.nonce, nonce, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES) ||
      !from_hex(r.ciphertext, sealed) ||
      sealed.size() < crypto_aead_xchacha20poly1305_ietf_ABYTES) {
    return fail("its stored form is damaged");
  }
  std::string value(sealed.size() - crypto_aead_xchacha20poly1305_ietf_ABYTES, '\0');
  unsigned long long value_len = 0;
  const std::string ad = associated_data(name);
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(
          reinterpret_cast<unsigned char*>(value.data()), &value_len, nullptr,
          reinterpret_cast<const unsigned char*>(sealed.data()), sealed.size(),
          reinterpret_cast<const unsigned char*>(ad.data()), ad.size(),
          reinterpret_cast<const unsigned char*>(nonce.data()), key_.data()) != 0) {
    return fail("its stored bytes do not authenticate (modified, or copied from another name)");
  }
  value.resize(value_len);
  return value;
}

Result<std::vector<SecretInfo>> SecretStore::list() const {
  auto rows = store_.list_secrets();
  if (!rows) return rows.error();
  std::vector<SecretInfo> out;
  out.reserve(rows->size());
  for (const auto& r : *rows) out.push_back(info_of(r));
  return out;
}

Result<SecretInfo> SecretStore::remove(const std::string& name) {
  if (!is_secret_name(name)) return bad_name(name);
  std::optional<SecretRow> existing;
  auto done = store_.transaction([&](Store& st) -> Result<void> {
    auto row = st.get_secret(name);
    if (!row) return row.error();
    existing = *row;
    if (!existing) return core::ok();
    auto deleted = st.delete_secret(name);
    if (!deleted) return deleted.error();
    return core::ok();
  });
  if (!done) return done.error();
  if (!existing) {
    return Error(fmt::format("no secret named \"{}\"", name), ErrorKind::NotFound);
  }
  return info_of(*existing);
}

}  // namespace cutover::store
