// Every default rule with a true-positive and a false-positive sample. The credentials below are
// random strings in the right format, not real keys.
#include <gtest/gtest.h>

#include <set>

#include "scan/scan.hpp"

namespace cutover::scan {
namespace {

struct Sample {
  std::string rule;
  std::string text;      // contains the secret
  std::string secret;    // what the finding must report
  std::string negative;  // looks close, must not be reported by this rule
};

const std::vector<Sample>& samples() {
  static const std::vector<Sample> s = {
      {"aws-access-key-id", "aws_access_key_id = AKIAS5E4RYNNEFJQXIRH\n", "AKIAS5E4RYNNEFJQXIRH",
       "example: AKIAIOSFODNN7EXAMPLE and AKIAS5E4RYNNEFJQXIRHX (too long)\n"},
      {"aws-secret-access-key",
       "aws_secret_access_key = \"L5wIScGebcy8F5n3+YNBDRzrZSgqbjG3uhkWKFLf\"\n",
       "L5wIScGebcy8F5n3+YNBDRzrZSgqbjG3uhkWKFLf",
       "aws_secret_access_key = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\n"},
      {"github-pat", "token: ghp_u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d\n",
       "ghp_u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d", "ghp_short123 and xghp_u8jzPde0IgxLd6Gnc\n"},
      {"github-fine-grained-pat",
       "GH=github_pat_KLzdocJ2isAjIhKtJ0RlgL_KOmxgJTeKdNnFRIBXuDL7DxtpYlSXpfKtHF4vUCsMehGAkWvj7FAc9"
       "QeWJK\n",
       "github_pat_KLzdocJ2isAjIhKtJ0RlgL_KOmxgJTeKdNnFRIBXuDL7DxtpYlSXpfKtHF4vUCsMehGAkWvj7FAc9QeW"
       "JK",
       "see https://github.com/settings/tokens for github_pat_ tokens\n"},
      {"github-app-token", "x-access-token:gho_Y40uvSwMFLZDe1f8rESQedUStPKR0CsTy4Qw@github.com\n",
       "gho_Y40uvSwMFLZDe1f8rESQedUStPKR0CsTy4Qw", "the gho_ prefix marks OAuth tokens\n"},
      {"gitlab-pat", "GITLAB_TOKEN=glpat-b8DwkNhFdnXsiVpzz63F\n", "glpat-b8DwkNhFdnXsiVpzz63F",
       "GITLAB_TOKEN=glpat-xxxx (shortened)\n"},
      {"slack-token", "SLACK=xoxb-1234567890123-1234567890123-fkCzJr4i0B3JrTAwR4y9ojfl\n",
       "xoxb-1234567890123-1234567890123-fkCzJr4i0B3JrTAwR4y9ojfl",
       "bot tokens start with xoxb- followed by numbers\n"},
      {"slack-webhook",
       "url: https://hooks.slack.com/services/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\n",
       "https://hooks.slack.com/services/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",
       "url: https://hooks.slack.com/services/T000/B000/XXXX\n"},
      {"discord-webhook",
       "https://discord.com/api/webhooks/123456789012345678/"
       "UdjAWtGSU8po_799NksnRH9ucAUsdMlHUvTCQCyEZDz-TddJ8HyS5SUkCnD8zRA9a9Sk\n",
       "https://discord.com/api/webhooks/123456789012345678/"
       "UdjAWtGSU8po_799NksnRH9ucAUsdMlHUvTCQCyEZDz-TddJ8HyS5SUkCnD8zRA9a9Sk",
       "https://discord.com/api/webhooks/{id}/{token}\n"},
      {"teams-webhook",
       "https://contoso.webhook.office.com/webhookb2/e4c717fd-fe48-ef63-1e56-3408c4653cde@"
       "fa6672cd-4fc9-e918-3302-0ccd8c90473e/IncomingWebhook/28767efc2f91624a8940f1f836f99eee/"
       "047b2c10-7912-ef4a-efae-5d4e15fa8b65\n",
       "https://contoso.webhook.office.com/webhookb2/e4c717fd-fe48-ef63-1e56-3408c4653cde@"
       "fa6672cd-4fc9-e918-3302-0ccd8c90473e/IncomingWebhook/28767efc2f91624a8940f1f836f99eee/"
       "047b2c10-7912-ef4a-efae-5d4e15fa8b65",
       "https://contoso.webhook.office.com/webhookb2/<group>@<tenant>/IncomingWebhook/<id>\n"},
      {"stripe-secret-key", "STRIPE_KEY = 'sk_live_1Qh6yYTWmE4lBYOvfZ8UzDzV'\n",
       "sk_live_1Qh6yYTWmE4lBYOvfZ8UzDzV", "publishable: pk_live_1Qh6yYTWmE4lBYOvfZ8UzDzV\n"},
      {"square-access-token", "square: EAAAofbciOx9gy1CJdObOIRpFqaDZeV7G5IfQHeVVEqZ\n",
       "EAAAofbciOx9gy1CJdObOIRpFqaDZeV7G5IfQHeVVEqZ",
       "EAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"},
      {"private-key",
       "-----BEGIN RSA PRIVATE KEY-----\n"
       "MIIEowIBAAKCAQEAu8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8dKLzdocJ2isAj\n"
       "IhKtJ0RlgLKOmxgJTeKdNnFRIBXuDL7DxtpYlSXpfKtHF4vUCsMehGAkWvj7FAc9\n"
       "-----END RSA PRIVATE KEY-----\n",
       "-----BEGIN RSA PRIVATE KEY-----\n"
       "MIIEowIBAAKCAQEAu8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8dKLzdocJ2isAj\n"
       "IhKtJ0RlgLKOmxgJTeKdNnFRIBXuDL7DxtpYlSXpfKtHF4vUCsMehGAkWvj7FAc9\n"
       "-----END RSA PRIVATE KEY-----",
       "if (line == \"-----BEGIN RSA PRIVATE KEY-----\") parse_key();\n"},
      {"jwt",
       "Authorization: Bearer "
       "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZS"
       "I6IkpvaG4ifQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c\n",
       "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ."
       "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
       "a JWT looks like eyJhbGciOi.eyJzdWIi.signature\n"},
      {"google-api-key", "key=AIza8fUkkibjL5DZPjN0MEQ7wjJJibaZUPgHV7i&q=x\n",
       "AIza8fUkkibjL5DZPjN0MEQ7wjJJibaZUPgHV7i",
       "AIzaSyShort and AIza8fUkkibjL5DZPjN0MEQ7wjJJibaZUPgHV7iXX\n"},
      {"npm-token", "//npm.internal.example/:_authToken=npm_B3m03nbqnsGpWLuqIA1id6Vw5DQL05HA064G\n",
       "npm_B3m03nbqnsGpWLuqIA1id6Vw5DQL05HA064G",
       "npm_config_cache=/tmp/npm_cache_directory_here\n"},
      {"pypi-token",
       "password = "
       "pypi-AgEIcHlwaS5vcmcttOofL9H2WjQ5TY4MyWuUFjsUNPjc01T5GOBUSZGi6HWGK10Zb0RLZ5TR9SP\n",
       "pypi-AgEIcHlwaS5vcmcttOofL9H2WjQ5TY4MyWuUFjsUNPjc01T5GOBUSZGi6HWGK10Zb0RLZ5TR9SP",
       "tokens begin with pypi-AgEIcHlwaS5vcmc\n"},
      {"sendgrid-api-key",
       "SENDGRID_API_KEY=SG.iIjHGb3CXlMaXZjljENUhJ.duRHHJEYXg4JdpmrcXgGCJbW56eCuNGMGmSrCGIZEG8\n",
       "SG.iIjHGb3CXlMaXZjljENUhJ.duRHHJEYXg4JdpmrcXgGCJbW56eCuNGMGmSrCGIZEG8",
       "SG.short.value and SG.version\n"},
      {"shopify-token", "X-Shopify-Access-Token: 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\n",
       "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", "shpat_<your token>\n"},
      {"digitalocean-token",
       "DO_TOKEN=dop_v1_ad6ba2b0aee0ca923732881584d8c4fa2815d2802827283e0ad8417358156996\n",
       "dop_v1_ad6ba2b0aee0ca923732881584d8c4fa2815d2802827283e0ad8417358156996",
       "dop_v1_ad6ba2b0 (truncated)\n"},
      {"telegram-bot-token", "TELEGRAM_BOT_TOKEN=123456789:AA6xuI5aHUQPFeNBTxaQWk8JzFalHlsZfYc\n",
       "123456789:AA6xuI5aHUQPFeNBTxaQWk8JzFalHlsZfYc", "bot_id = 123456789\n"},
      {"url-credentials", "DATABASE_URL=postgres://app:Zq8w2LmX9v@db.internal:5432/app\n",
       "Zq8w2LmX9v", "DATABASE_URL=postgres://user:password@localhost/app\n"},
      {"generic-api-key", "api_secret = \"9f2Kx7Qw3Lz8Vb1Nc6Ty4Hm\"\n", "9f2Kx7Qw3Lz8Vb1Nc6Ty4Hm",
       "secret_key = get_secret_key_from_environment\npassword: ${DB_PASSWORD}\n"
       "token = \"xxxxxxxxxxxxxxxxxxxxxxxxxxxx\"\nauth_header = request_headers_authorization\n"},
  };
  return s;
}

class DefaultRulesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto s = Scanner::create(default_rules());
    ASSERT_TRUE(s) << s.error().message;
    scanner_ = std::move(*s).release();
  }
  static void TearDownTestSuite() {
    delete scanner_;
    scanner_ = nullptr;
  }
  static Scanner* scanner_;
};
Scanner* DefaultRulesTest::scanner_ = nullptr;

TEST_F(DefaultRulesTest, EveryRuleHasSamples) {
  std::set<std::string> sampled;
  for (const auto& s : samples()) sampled.insert(s.rule);
  for (const auto& r : default_rules().rules) {
    EXPECT_TRUE(sampled.count(r.id)) << "default rule " << r.id << " has no samples";
  }
}

TEST_F(DefaultRulesTest, TruePositives) {
  for (const auto& s : samples()) {
    auto findings = scanner_->scan_text(s.text, "app/settings.txt");
    bool found = false;
    for (const auto& f : findings) {
      if (f.rule_id == s.rule) {
        found = true;
        EXPECT_EQ(f.secret, s.secret) << s.rule;
        EXPECT_EQ(f.start_line, 1) << s.rule;
      }
    }
    EXPECT_TRUE(found) << s.rule << " missed its sample: " << s.text;
    // A specific rule wins over generic-api-key on the same secret (dedupe).
    if (s.rule != "generic-api-key") {
      for (const auto& f : findings) {
        EXPECT_NE(f.rule_id, "generic-api-key") << s.rule << ": generic duplicate " << f.secret;
      }
    }
  }
}

TEST_F(DefaultRulesTest, FalsePositives) {
  for (const auto& s : samples()) {
    for (const auto& f : scanner_->scan_text(s.negative, "app/settings.txt")) {
      EXPECT_NE(f.rule_id, s.rule)
          << s.rule << " reported \"" << f.secret << "\" in: " << s.negative;
    }
  }
}

TEST_F(DefaultRulesTest, SamplesEmbeddedInLargerTextKeepTheirLines) {
  std::string text;
  std::vector<std::pair<std::string, int>> expected;
  int line = 1;
  for (const auto& s : samples()) {
    for (int i = 0; i < 3; ++i) {
      text += "int filler_" + std::to_string(line) + " = compute(x, y);\n";
      ++line;
    }
    expected.emplace_back(s.rule, line);
    text += s.text;
    for (char c : s.text) line += c == '\n';
  }
  auto findings = scanner_->scan_text(text, "big.c");
  for (const auto& [rule, at] : expected) {
    bool found = false;
    for (const auto& f : findings) found = found || (f.rule_id == rule && f.start_line == at);
    EXPECT_TRUE(found) << rule << " at line " << at;
  }
  EXPECT_EQ(findings.size(), expected.size());
}

// Base64url secrets may end in '-' or '_', where a trailing \b would not match (bench/scan found
// a planted SendGrid key missed this way).
TEST_F(DefaultRulesTest, SecretsEndingInDashOrUnderscore) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"sendgrid-api-key", "SG.iIjHGb3CXlMaXZjljENUhJ.duRHHJEYXg4JdpmrcXgGCJbW56eCuNGMGmSrCGIZEG-"},
      {"sendgrid-api-key", "SG.iIjHGb3CXlMaXZjljENUh_.duRHHJEYXg4JdpmrcXgGCJbW56eCuNGMGmSrCGIZE__"},
      {"telegram-bot-token", "123456789:AA6xuI5aHUQPFeNBTxaQWk8JzFalHlsZfY-"},
      {"gitlab-pat", "glpat-b8DwkNhFdnXsiVpzz63-"},
  };
  for (const auto& [rule, secret] : cases) {
    const std::string text = "TELEGRAM_BOT_TOKEN = \"" + secret + "\"\nX=" + secret + "\n";
    size_t hits = 0;
    for (const auto& f : scanner_->scan_text(text, "a")) {
      if (f.rule_id == rule && f.secret == secret) ++hits;
    }
    EXPECT_GE(hits, 1u) << rule << " " << secret;
  }
}

}  // namespace
}  // namespace cutover::scan
