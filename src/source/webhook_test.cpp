#include "source/webhook.hpp"

#include <gtest/gtest.h>

using namespace cutover::source;

TEST(Webhook, HmacMatchesKnownVector) {
  // RFC 4231 test case 2.
  EXPECT_EQ(hmac_sha256_hex("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(Webhook, VerifiesGithubAndGiteaSignatures) {
  const std::string body = R"({"ref":"refs/heads/main"})";
  const std::string sig = hmac_sha256_hex("s3cret", body);
  EXPECT_TRUE(verify_signature("s3cret", body, "sha256=" + sig));
  EXPECT_TRUE(verify_signature("s3cret", body, sig));
  std::string upper = sig;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_TRUE(verify_signature("s3cret", body, upper));

  EXPECT_FALSE(verify_signature("other", body, "sha256=" + sig));
  EXPECT_FALSE(verify_signature("s3cret", body + " ", "sha256=" + sig));
  EXPECT_FALSE(verify_signature("s3cret", body, "sha1=" + sig));
  EXPECT_FALSE(verify_signature("s3cret", body, ""));
  EXPECT_FALSE(verify_signature("", body, hmac_sha256_hex("", body)));
}

TEST(Webhook, VerifiesTokens) {
  EXPECT_TRUE(verify_token("tok", "tok"));
  EXPECT_FALSE(verify_token("tok", "tok2"));
  EXPECT_FALSE(verify_token("", ""));
}
