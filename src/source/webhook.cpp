#include "source/webhook.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

namespace cutover::source {

namespace {

bool equal_constant_time(std::string_view a, std::string_view b) {
  if (a.size() != b.size() || a.empty()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'F') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

}  // namespace

std::string hmac_sha256_hex(std::string_view secret, std::string_view body) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(body.data()), body.size(), md, &len);
  static const char* kHex = "0123456789abcdef";
  std::string out(len * 2, '0');
  for (unsigned int i = 0; i < len; ++i) {
    out[2 * i] = kHex[md[i] >> 4];
    out[2 * i + 1] = kHex[md[i] & 0xf];
  }
  return out;
}

bool verify_signature(std::string_view secret, std::string_view body, std::string_view signature) {
  if (secret.empty()) return false;
  constexpr std::string_view kPrefix = "sha256=";
  if (signature.substr(0, kPrefix.size()) == kPrefix) signature.remove_prefix(kPrefix.size());
  return equal_constant_time(hmac_sha256_hex(secret, body), lower(signature));
}

bool verify_token(std::string_view expected, std::string_view presented) {
  return equal_constant_time(expected, presented);
}

}  // namespace cutover::source
