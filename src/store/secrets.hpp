// The secret store (DESIGN.md §2 `secrets:`, invariant 8): named values that stages and tasks get
// as environment variables, kept in the state database sealed with libsodium's
// XChaCha20-Poly1305 (crypto_aead_xchacha20poly1305_ietf, a random 192-bit nonce per write, the
// secret's name as associated data, so a row copied under another name does not open).
//
// The key (32 random bytes) comes from the environment variable CUTOVER_SECRET_KEY (64 hex
// characters) when it is set, else from <state_dir>/secret.key, which is created (mode 0600, 64 hex
// characters) on first use and refused when group or others can read it. Each row records the id
// of the key that sealed it (a BLAKE2b hash, which does not reveal the key), so a changed key is
// reported as such instead of as corruption. Without the key the database reveals names, versions
// and times, never values: back the key up separately from the database.
//
// Values: 1 byte to 64 KiB, no NUL byte (they become environment variables, which cannot hold one).
// Names: segments of [A-Za-z0-9._-] separated by single '/', each starting with a letter or digit,
// at most 128 characters ("web/database-url") — the same rule as config's `secrets:` values.
//
// Thread-safety: SecretKey is an immutable value. SecretStore's methods may be called from any
// thread (the Store serialises them); decrypted values live in ordinary std::strings, which the
// caller should keep short-lived.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"
#include "store/store.hpp"

namespace cutover::store {

inline constexpr std::string_view kSecretKeyEnv = "CUTOVER_SECRET_KEY";
inline constexpr std::string_view kSecretKeyFile = "secret.key";
inline constexpr size_t kMaxSecretValueBytes = 64 * 1024;

// True for a valid secret name (see the rule above).
bool is_secret_name(std::string_view name);

class SecretKey {
 public:
  static constexpr size_t kSize = 32;

  // $CUTOVER_SECRET_KEY when set (and not empty), else <state_dir>/secret.key, created if missing.
  static core::Result<SecretKey> load(const std::filesystem::path& state_dir);
  // 64 hex characters (surrounding whitespace ignored). source names where the text came from, for
  // messages ("CUTOVER_SECRET_KEY", a file path); the text itself is never quoted.
  static core::Result<SecretKey> from_hex(std::string_view hex, std::string_view source);
  static SecretKey generate();

  SecretKey(const SecretKey& other) = default;
  SecretKey& operator=(const SecretKey& other) = default;
  ~SecretKey();

  // 16 hex characters identifying the key without revealing it.
  const std::string& id() const { return id_; }
  // Where the key came from: "CUTOVER_SECRET_KEY" or the key file's path.
  const std::string& source() const { return source_; }
  const unsigned char* data() const { return bytes_.data(); }

 private:
  SecretKey() = default;
  void compute_id();

  std::array<unsigned char, kSize> bytes_{};
  std::string id_;
  std::string source_;
};

// What may be shown about a secret: everything but its value.
struct SecretInfo {
  std::string name;
  int64_t version = 0;
  int64_t created_at = 0;  // Unix ms
  int64_t updated_at = 0;
};

class SecretStore {
 public:
  // store must outlive the SecretStore.
  SecretStore(Store& store, SecretKey key);

  // Seals and stores value under name (replacing an older value). Invalid name or value: kind
  // Invalid, with a message that never quotes the value.
  core::Result<SecretInfo> set(const std::string& name, std::string_view value);
  // The value. Unknown name: kind NotFound. A row that does not open (other key, modified bytes):
  // kind Internal, saying which.
  core::Result<std::string> get(const std::string& name) const;
  core::Result<std::vector<SecretInfo>> list() const;  // by name
  // Unknown name: kind NotFound.
  core::Result<SecretInfo> remove(const std::string& name);

  const SecretKey& key() const { return key_; }

 private:
  Store& store_;
  SecretKey key_;
};

}  // namespace cutover::store
