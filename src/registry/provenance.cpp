// Provenance statements: what built an artifact, signed with the installation's Ed25519 key.
//
// File format (sha256/<hex>/provenance/<execution>.json): a DSSE envelope
//   {"payload":"<base64 statement>","payloadType":"application/vnd.in-toto+json",
//    "signatures":[{"keyid":"<16 hex>","sig":"<base64 Ed25519 signature>"}]}
// whose signature covers dsse_pae(payloadType, statement) — the exact statement bytes, so the
// statement's own serialization (canonical: sorted keys, no whitespace) never has to be
// reproduced to verify it. One file per execution that put the artifact: identical content built
// by two commits keeps both statements, and a release verifies the one of its own execution.
#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <nlohmann/json.hpp>

#include "core/clock.hpp"
#include "core/fs.hpp"
#include "core/id.hpp"
#include "registry/registry.hpp"

namespace cutover::registry {

namespace fs = std::filesystem;
using core::Error;
using core::Result;
using nlohmann::json;

namespace {

constexpr std::string_view kPayloadType = "application/vnd.in-toto+json";
constexpr std::string_view kStatementType = "https://in-toto.io/Statement/v1";
constexpr std::string_view kPredicateType = "https://slsa.dev/provenance/v1";
constexpr std::string_view kBuildType = "https://github.com/cutover/cutover/pipeline-stage/v1";
// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32 key bytes follow.
constexpr unsigned char kSpkiPrefix[] = {0x30, 0x2a, 0x30, 0x05, 0x06, 0x03,
                                         0x2b, 0x65, 0x70, 0x03, 0x21, 0x00};

void init_sodium() {
  if (sodium_init() < 0) std::abort();  // no usable randomness: nothing can be signed safely
}

std::string hex(const unsigned char* data, size_t n) {
  std::string out(n * 2 + 1, '\0');
  sodium_bin2hex(out.data(), out.size(), data, n);
  out.pop_back();
  return out;
}

std::string sha256_hex(std::string_view data) {
  unsigned char md[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(md, reinterpret_cast<const unsigned char*>(data.data()), data.size());
  return hex(md, sizeof md);
}

std::string base64(std::string_view data) {
  const size_t len = sodium_base64_encoded_len(data.size(), sodium_base64_VARIANT_ORIGINAL);
  std::string out(len, '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(data.data()),
                    data.size(), sodium_base64_VARIANT_ORIGINAL);
  out.resize(std::strlen(out.c_str()));
  return out;
}

std::optional<std::string> unbase64(const std::string& text) {
  std::string out(text.size(), '\0');
  size_t len = 0;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), text.data(),
                        text.size(), nullptr, &len, nullptr, sodium_base64_VARIANT_ORIGINAL) != 0) {
    return std::nullopt;
  }
  out.resize(len);
  return out;
}

bool valid_execution_id(const std::string& id) {
  if (id.empty() || id.size() > 128) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
  });
}

// "https://user:token@host/x" -> "https://host/x": credentials never go into a statement.
std::string without_userinfo(const std::string& url) {
  const size_t scheme = url.find("://");
  if (scheme == std::string::npos) return url;
  const size_t start = scheme + 3;
  const size_t end = url.find_first_of("/?#", start);
  const size_t at = url.rfind('@', end == std::string::npos ? url.size() : end);
  if (at == std::string::npos || at < start) return url;
  return url.substr(0, start) + url.substr(at + 1);
}

std::string rfc3339(int64_t unix_ms) { return core::format_rfc3339(core::from_unix_ms(unix_ms)); }

Error key_error(const fs::path& file, const std::string& what) {
  return Error("provenance key " + file.string() + ": " + what);
}

// Creates the key file without ever replacing one (temporary + link, like secret.key).
Result<void> create_key_file(const fs::path& file) {
  unsigned char seed[crypto_sign_SEEDBYTES];
  randombytes_buf(seed, sizeof seed);
  const std::string text = hex(seed, sizeof seed) + "\n";
  sodium_memzero(seed, sizeof seed);
  const fs::path tmp = file.parent_path() / (".provenance.key.tmp-" + core::random_hex(6));
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return key_error(file, std::string("cannot create: ") + std::strerror(errno));
  const bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
                       ::fsync(fd) == 0;
  ::close(fd);
  if (!written) {
    ::unlink(tmp.c_str());
    return key_error(file, "cannot write");
  }
  const int linked = ::link(tmp.c_str(), file.c_str());
  const int link_errno = errno;
  ::unlink(tmp.c_str());
  if (linked != 0 && link_errno != EEXIST) {
    return key_error(file, std::string("cannot create: ") + std::strerror(link_errno));
  }
  return core::ok();
}

}  // namespace

// ---- SigningKey
// -----------------------------------------------------------------------------------

SigningKey::SigningKey(SigningKey&& o) noexcept
    : secret_(o.secret_), public_key_(std::move(o.public_key_)) {
  sodium_memzero(o.secret_.data(), o.secret_.size());
}

SigningKey& SigningKey::operator=(SigningKey&& o) noexcept {
  secret_ = o.secret_;
  public_key_ = std::move(o.public_key_);
  sodium_memzero(o.secret_.data(), o.secret_.size());
  return *this;
}

SigningKey::~SigningKey() { sodium_memzero(secret_.data(), secret_.size()); }

SigningKey SigningKey::generate() {
  init_sodium();
  SigningKey key;
  unsigned char pk[crypto_sign_PUBLICKEYBYTES];
  crypto_sign_keypair(pk, key.secret_.data());
  key.public_key_.assign(reinterpret_cast<const char*>(pk), sizeof pk);
  return key;
}

Result<SigningKey> SigningKey::load_or_create(const fs::path& state_dir) {
  init_sodium();
  static_assert(crypto_sign_SECRETKEYBYTES == 64 && crypto_sign_PUBLICKEYBYTES == 32);
  const fs::path file = state_dir / kKeyFile;
  struct stat sb {};
  if (::stat(file.c_str(), &sb) != 0) {
    if (errno != ENOENT)
      return key_error(file, std::string("cannot read: ") + std::strerror(errno));
    if (auto dir = core::ensure_dir(state_dir, 0700); !dir) return dir.error();
    if (auto created = create_key_file(file); !created) return created.error();
    if (::stat(file.c_str(), &sb) != 0) {
      return key_error(file, std::string("cannot read: ") + std::strerror(errno));
    }
  }
  if ((sb.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", sb.st_mode & 07777);
    return key_error(file, std::string("can be read by group or others (mode ") + mode +
                               "); run `chmod 600 " + file.string() + "`");
  }
  auto text = core::read_file(file);
  if (!text) return text.error();
  std::string trimmed = *text;
  sodium_memzero(text->data(), text->size());
  while (!trimmed.empty() && (trimmed.back() == '\n' || trimmed.back() == ' ')) trimmed.pop_back();
  unsigned char seed[crypto_sign_SEEDBYTES];
  size_t len = 0;
  const bool ok = trimmed.size() == 2 * sizeof seed &&
                  sodium_hex2bin(seed, sizeof seed, trimmed.data(), trimmed.size(), nullptr, &len,
                                 nullptr) == 0 &&
                  len == sizeof seed;
  sodium_memzero(trimmed.data(), trimmed.size());
  if (!ok) {
    return key_error(file,
                     "must hold 64 hexadecimal characters (an Ed25519 seed), e.g. from "
                     "`openssl rand -hex 32`");
  }
  SigningKey key;
  unsigned char pk[crypto_sign_PUBLICKEYBYTES];
  crypto_sign_seed_keypair(pk, key.secret_.data(), seed);
  sodium_memzero(seed, sizeof seed);
  key.public_key_.assign(reinterpret_cast<const char*>(pk), sizeof pk);
  // The public half, for people and other tools; rewritten when it does not match the key.
  const fs::path pub = state_dir / kPublicFile;
  const std::string pem = key.public_key_pem();
  auto existing = core::read_file(pub);
  if (!existing || *existing != pem) {
    if (auto r = core::write_file_atomic(pub, pem, 0644); !r) return r.error();
  }
  return key;
}

std::string SigningKey::public_key_hex() const {
  return hex(reinterpret_cast<const unsigned char*>(public_key_.data()), public_key_.size());
}

std::string SigningKey::public_key_pem() const {
  std::string der(reinterpret_cast<const char*>(kSpkiPrefix), sizeof kSpkiPrefix);
  der += public_key_;
  return "-----BEGIN PUBLIC KEY-----\n" + base64(der) + "\n-----END PUBLIC KEY-----\n";
}

std::string SigningKey::key_id() const { return key_id_of(public_key_); }

std::string SigningKey::sign(std::string_view message) const {
  unsigned char sig[crypto_sign_BYTES];
  crypto_sign_detached(sig, nullptr, reinterpret_cast<const unsigned char*>(message.data()),
                       message.size(), secret_.data());
  return std::string(reinterpret_cast<const char*>(sig), sizeof sig);
}

std::string key_id_of(const std::string& public_key) {
  return sha256_hex(public_key).substr(0, 16);
}

// ---- Statements -------------------------------------------------------------------------------

std::string dsse_pae(std::string_view payload_type, std::string_view payload) {
  return "DSSEv1 " + std::to_string(payload_type.size()) + " " + std::string(payload_type) + " " +
         std::to_string(payload.size()) + " " + std::string(payload);
}

std::string provenance_statement(const std::string& digest, const std::string& manifest_sha256,
                                 const BuildFacts& f) {
  const std::string hex_digest = digest.substr(digest.find(':') + 1);
  const std::string repo = without_userinfo(f.repository);
  json predicate{
      {"buildDefinition",
       {{"buildType", kBuildType},
        {"externalParameters", {{"repository", repo}, {"branch", f.branch}, {"stage", f.stage}}},
        {"internalParameters", {{"execution_id", f.execution_id}}},
        {"resolvedDependencies", json::array({{{"uri", "git+" + repo + "@refs/heads/" + f.branch},
                                               {"digest", {{"gitCommit", f.commit_sha}}}}})}}},
      {"runDetails",
       {{"builder", {{"id", f.builder}}},
        {"metadata",
         {{"invocationId", f.execution_id},
          {"startedOn", rfc3339(f.started_unix_ms)},
          {"finishedOn", rfc3339(f.finished_unix_ms)}}},
        {"byproducts",
         json::array({{{"name", "manifest.json"}, {"digest", {{"sha256", manifest_sha256}}}}})}}}};
  json statement{
      {"_type", kStatementType},
      {"subject", json::array({{{"name", f.stage}, {"digest", {{"sha256", hex_digest}}}}})},
      {"predicateType", kPredicateType},
      {"predicate", std::move(predicate)}};
  // nlohmann's objects are sorted maps: dump() without indent is the canonical form.
  return statement.dump(-1, ' ', false, json::error_handler_t::replace);
}

Result<fs::path> Registry::attest(const std::string& digest, const BuildFacts& facts,
                                  const SigningKey& key) {
  if (!valid_execution_id(facts.execution_id)) {
    return Error("cannot attest " + digest + ": execution id '" + facts.execution_id +
                 "' is not [A-Za-z0-9_-]+");
  }
  auto art = get(digest);  // never sign bytes that no longer match their digest
  if (!art) return art.error();
  const fs::path dir = art->path.parent_path();
  auto manifest = core::read_file(dir / "manifest.json");
  if (!manifest) return manifest.error().wrap("cannot attest " + digest);
  const std::string statement = provenance_statement(digest, sha256_hex(*manifest), facts);
  const std::string sig = key.sign(dsse_pae(kPayloadType, statement));
  json envelope{{"payloadType", kPayloadType},
                {"payload", base64(statement)},
                {"signatures", json::array({{{"keyid", key.key_id()}, {"sig", base64(sig)}}})}};
  if (auto r = core::ensure_dir(dir / "provenance"); !r) return r.error();
  const fs::path file = dir / "provenance" / (facts.execution_id + ".json");
  if (auto r = core::write_file_atomic(file, envelope.dump() + "\n", 0444); !r) return r.error();
  return file;
}

namespace {

// Checks one envelope; the error is the reason only (the caller names the artifact).
Result<Provenance> check_envelope(const fs::path& file, const std::string& hex_digest,
                                  const std::string& manifest_sha256,
                                  const std::string& public_key) {
  auto text = core::read_file(file);
  if (!text) return Error("cannot read its provenance statement " + file.string());
  json env = json::parse(*text, nullptr, false);
  if (!env.is_object() || !env.contains("payload") || !env["payload"].is_string() ||
      !env.contains("signatures") || !env["signatures"].is_array() ||
      env.value("payloadType", "") != kPayloadType) {
    return Error("provenance statement " + file.string() + " is not a DSSE envelope of " +
                 std::string(kPayloadType));
  }
  auto payload = unbase64(env["payload"].get<std::string>());
  if (!payload) return Error("provenance statement " + file.string() + ": payload is not base64");
  const std::string pae = dsse_pae(kPayloadType, *payload);
  bool signed_ok = false;
  std::string key_id;
  for (const auto& s : env["signatures"]) {
    if (!s.is_object() || !s.contains("sig") || !s["sig"].is_string()) continue;
    auto sig = unbase64(s["sig"].get<std::string>());
    if (!sig || sig->size() != crypto_sign_BYTES || public_key.size() != crypto_sign_PUBLICKEYBYTES)
      continue;
    if (crypto_sign_verify_detached(reinterpret_cast<const unsigned char*>(sig->data()),
                                    reinterpret_cast<const unsigned char*>(pae.data()), pae.size(),
                                    reinterpret_cast<const unsigned char*>(public_key.data())) ==
        0) {
      signed_ok = true;
      key_id = key_id_of(public_key);
      break;
    }
  }
  if (!signed_ok) {
    return Error("the signature of its provenance statement " + file.string() +
                 " does not verify with this installation's key " + key_id_of(public_key) +
                 " (the statement was modified, or signed by another key)");
  }
  json st = json::parse(*payload, nullptr, false);
  if (!st.is_object() || st.value("_type", "") != kStatementType ||
      st.value("predicateType", "") != kPredicateType || !st.contains("subject") ||
      !st["subject"].is_array()) {
    return Error("provenance statement " + file.string() +
                 " is not an in-toto Statement v1 with a " + std::string(kPredicateType) +
                 " predicate");
  }
  std::string subject;
  for (const auto& s : st["subject"]) {
    if (s.is_object() && s.contains("digest") && s["digest"].is_object() &&
        s["digest"].contains("sha256") && s["digest"]["sha256"].is_string()) {
      subject = s["digest"]["sha256"].get<std::string>();
      if (subject == hex_digest) break;
    }
  }
  if (subject != hex_digest) {
    return Error("its provenance statement " + file.string() + " is about sha256:" +
                 (subject.empty() ? "(nothing)" : subject) + ", not this artifact");
  }
  const json& p = st["predicate"];
  std::string recorded_manifest;
  try {
    for (const auto& b : p.at("runDetails").at("byproducts")) {
      if (b.value("name", "") == "manifest.json") recorded_manifest = b.at("digest").at("sha256");
    }
    Provenance out;
    out.digest = "sha256:" + hex_digest;
    out.commit_sha =
        p.at("buildDefinition").at("resolvedDependencies").at(0).at("digest").at("gitCommit");
    out.execution_id = p.at("buildDefinition").at("internalParameters").at("execution_id");
    out.stage = p.at("buildDefinition").at("externalParameters").at("stage");
    out.builder = p.at("runDetails").at("builder").at("id");
    out.finished_at = p.at("runDetails").at("metadata").at("finishedOn");
    out.key_id = key_id;
    out.file = file;
    if (recorded_manifest != manifest_sha256) {
      return Error("its manifest.json does not match the digest its provenance statement " +
                   file.string() + " records (manifest.json was modified)");
    }
    return out;
  } catch (const std::exception&) {
    return Error("provenance statement " + file.string() +
                 " lacks the commit, execution, stage, builder, time or manifest digest");
  }
}

}  // namespace

Result<Provenance> Registry::verify(const std::string& digest, const std::string& public_key,
                                    const std::string& execution_id) {
  auto art = get(digest);  // the tree still hashes to its digest (else: "was tampered with")
  if (!art) return art.error();
  const fs::path dir = art->path.parent_path();
  const std::string hex_digest = digest.substr(digest.find(':') + 1);
  const auto refuse = [&](const std::string& why) {
    return Error("artifact " + digest + ": " + why + "; refusing to use it");
  };
  auto manifest = core::read_file(dir / "manifest.json");
  if (!manifest) return refuse("its manifest.json cannot be read");
  const std::string manifest_sha256 = sha256_hex(*manifest);
  std::vector<fs::path> candidates;
  if (!execution_id.empty()) {
    if (!valid_execution_id(execution_id)) return refuse("invalid execution id " + execution_id);
    candidates.push_back(dir / "provenance" / (execution_id + ".json"));
    std::error_code ec;
    if (!fs::exists(candidates.back(), ec)) {
      return refuse("it has no provenance statement of execution " + execution_id + " (" +
                    candidates.back().string() + " is missing)");
    }
  } else {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir / "provenance", ec)) {
      if (e.path().extension() == ".json") candidates.push_back(e.path());
    }
    if (candidates.empty()) return refuse("it has no provenance statement");
    std::sort(candidates.begin(), candidates.end());
  }
  std::optional<Error> first_error;
  for (const auto& file : candidates) {
    auto r = check_envelope(file, hex_digest, manifest_sha256, public_key);
    if (r) return r;
    if (!first_error) first_error = r.error();
  }
  return refuse(first_error->message);
}

}  // namespace cutover::registry
