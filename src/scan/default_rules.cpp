// The default rule set, written for cutover (not copied from gitleaks' config). Each rule has
// true- and false-positive samples in default_rules_test.cpp. Conventions:
//  - A rule for a format with a fixed prefix keeps the prefix as a keyword, so Hyperscan's
//    literal pass decides most files without touching the regex.
//  - The secret is group 1; \b or an explicit delimiter bounds it so a longer random string
//    containing a token-like run is not reported.
#include "scan/scan.hpp"

namespace cutover::scan {

namespace {

Rule make(std::string id, std::string description, std::string regex,
          std::vector<std::string> keywords, std::vector<std::string> tags, double entropy = 0) {
  Rule r;
  r.id = std::move(id);
  r.description = std::move(description);
  r.regex = std::move(regex);
  r.keywords = std::move(keywords);
  r.tags = std::move(tags);
  r.entropy = entropy;
  return r;
}

RuleSet build() {
  RuleSet s;
  auto& r = s.rules;
  r.push_back(make("aws-access-key-id", "AWS access key ID",
                   R"(\b((?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z2-7]{16})\b)",
                   {"akia", "asia", "abia", "acca", "agpa", "aida", "aroa", "anpa", "anva", "aipa"},
                   {"key", "aws"}));
  r.back().allowlists.push_back(
      Allowlist{.description = "AWS documentation example keys", .regexes = {R"(EXAMPLE$)"}});
  r.push_back(make(
      "aws-secret-access-key", "AWS secret access key next to an AWS name",
      R"((?i)aws[\w.-]{0,20}(?:secret|private)?[\w.-]{0,20}(?:key|token)[\w.-]{0,10}[ \t'"]{0,3}(?:=|:|:=|=>)[ \t'"]{0,5}([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$))",
      {"aws"}, {"key", "aws"}, 3.0));
  r.push_back(make("github-pat", "GitHub personal access token (classic)",
                   R"(\b(ghp_[A-Za-z0-9]{36})\b)", {"ghp_"}, {"key", "github"}));
  r.push_back(make("github-fine-grained-pat", "GitHub fine-grained personal access token",
                   R"(\b(github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59})\b)", {"github_pat_"},
                   {"key", "github"}));
  r.push_back(make("github-app-token",
                   "GitHub OAuth, user-to-server, server-to-server or refresh "
                   "token",
                   R"(\b((?:gho|ghu|ghs|ghr)_[A-Za-z0-9]{36})\b)", {"gho_", "ghu_", "ghs_", "ghr_"},
                   {"key", "github"}));
  r.push_back(make("gitlab-pat", "GitLab personal access token",
                   R"(\b(glpat-[A-Za-z0-9_-]{20})(?:[^A-Za-z0-9_-]|$))", {"glpat-"},
                   {"key", "gitlab"}));
  r.push_back(make("slack-token", "Slack bot, user, app or configuration token",
                   R"(\b(xox[abpors]-(?:[0-9]{8,13}-){1,2}[A-Za-z0-9-]{10,64})\b)",
                   {"xoxa-", "xoxb-", "xoxp-", "xoxo-", "xoxr-", "xoxs-"}, {"key", "slack"}));
  r.push_back(make(
      "slack-webhook", "Slack incoming webhook URL",
      R"((https://hooks\.slack\.com/(?:services|workflows)/T[A-Z0-9]{6,12}/[AB][A-Z0-9]{6,12}/[A-Za-z0-9]{20,32}))",
      {"hooks.slack.com"}, {"webhook", "slack"}));
  r.push_back(make(
      "discord-webhook", "Discord webhook URL",
      R"((https://(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/[0-9]{17,20}/[A-Za-z0-9_-]{60,72}))",
      {"discord"}, {"webhook", "discord"}));
  r.push_back(make(
      "teams-webhook", "Microsoft Teams incoming webhook URL",
      R"((https://[a-z0-9-]+\.webhook\.office\.com/webhookb2/[0-9a-f-]{36}@[0-9a-f-]{36}/IncomingWebhook/[0-9a-f]{32}/[0-9a-f-]{36}))",
      {"webhook.office.com"}, {"webhook", "teams"}));
  r.push_back(make("stripe-secret-key", "Stripe secret or restricted key",
                   R"(\b((?:sk|rk)_(?:live|test)_[A-Za-z0-9]{20,99})\b)",
                   {"sk_live_", "sk_test_", "rk_live_", "rk_test_"}, {"key", "stripe", "payment"}));
  r.push_back(make("square-access-token", "Square access token",
                   R"(\b((?:EAAA|sq0atp-)[A-Za-z0-9_-]{22,60})\b)", {"eaaa", "sq0atp-"},
                   {"key", "square", "payment"}, 3.0));
  r.push_back(make(
      "private-key", "Private key (PEM)",
      R"((-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----[\s\S]{64,}?-----END[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----))",
      {"private key"}, {"key", "private-key"}));
  r.push_back(make(
      "jwt", "JSON Web Token",
      R"(\b(eyJ[A-Za-z0-9_-]{15,}\.eyJ[A-Za-z0-9_-]{15,}\.[A-Za-z0-9_-]{20,})(?:[^A-Za-z0-9_.-]|$))",
      {"eyj"}, {"token", "jwt"}));
  r.push_back(make("google-api-key", "Google API key",
                   R"(\b(AIza[0-9A-Za-z_-]{35})(?:[^0-9A-Za-z_-]|$))", {"aiza"},
                   {"key", "google"}));
  r.push_back(make("npm-token", "npm access token", R"(\b(npm_[A-Za-z0-9]{36})\b)", {"npm_"},
                   {"key", "npm"}));
  r.push_back(make("pypi-token", "PyPI upload token",
                   R"(\b(pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,})\b)", {"pypi-ageichlwas5vcmc"},
                   {"key", "pypi"}));
  r.push_back(make("sendgrid-api-key", "SendGrid API key",
                   R"(\b(SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43})(?:[^A-Za-z0-9_-]|$))", {"sg."},
                   {"key", "sendgrid"}));
  r.push_back(make("shopify-token", "Shopify access token or shared secret",
                   R"(\b(shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32})\b)",
                   {"shpat_", "shpca_", "shppa_", "shpss_"}, {"key", "shopify"}));
  r.push_back(make("digitalocean-token", "DigitalOcean token", R"(\b(do[opr]_v1_[a-f0-9]{64})\b)",
                   {"dop_v1_", "doo_v1_", "dor_v1_"}, {"key", "digitalocean"}));
  r.push_back(make(
      "telegram-bot-token", "Telegram bot token",
      R"((?i)(?:telegram|tg|bot)[\w.-]{0,20}[ \t'"]{0,3}(?:=|:|:=|=>)[ \t'"]{0,5}([0-9]{8,10}:AA[0-9A-Za-z_-]{33})(?:[^0-9A-Za-z_-]|$))",
      {"telegram", "tg", "bot"}, {"key", "telegram"}));
  r.push_back(make(
      "url-credentials", "Password in a URL (scheme://user:password@host)",
      R"(\b[a-zA-Z][a-zA-Z0-9+.-]{1,20}://[^\s:/@'"<>]{1,64}:([^\s:/@'"<>$%{}]{4,128})@[a-zA-Z0-9.-]+)",
      {"://"}, {"password", "url"}, 2.0));
  r.back().allowlists.push_back(Allowlist{
      .description = "placeholders",
      .regexes = {
          R"((?i)^(?:password|passwd|pass|secret|changeme|example|xxx+|\*+|user|pwd|test)$)"}});
  r.push_back(make(
      "generic-api-key",
      "Secret-looking value assigned to a key, token, secret or "
      "password",
      R"((?i)(?:key|token|secret|passw(?:or)?d|pwd|credential|auth)[\w.-]{0,25}[ \t'"]{0,3}(?:=|:|:=|=>|\?=)[ \t'"]{0,5}([A-Za-z0-9_.+/=~@-]{16,150})(?:['"\x60 \t;,]|$))",
      {"key", "token", "secret", "passw", "pwd", "credential", "auth"}, {"generic"}, 3.5));
  r.back().allowlists.push_back(Allowlist{
      .description = "identifiers, paths and placeholders are not secrets",
      .regexes =
          {R"(^[a-z_.]+$)", R"(^[A-Z_.]+$)", R"(^(?:[a-z0-9]+[._-])+[a-z0-9]+$)",
           R"((?i)^(?:x{4,}|\*{4,}|(?:your|my|some)[_-].*|.*(?:example|placeholder|dummy|changeme).*)$)",
           // File paths: `key: /etc/tls/key.pem`, `secret_file = ./certs/Ab3xZ9.key` (a file
           // name with an extension; base64 has no '.'), or all-lowercase directory paths.
           R"(^(?:~|\.{1,2})?/(?:[\w@-][\w.@-]*/)*[\w@-][\w.@-]*\.[A-Za-z0-9]{1,8}$)",
           R"(^(?:~|\.{1,2})?(?:/[a-z0-9_.@-]+)+/?$)"},
  });
  s.allowlists.push_back(Allowlist{
      .description = "lock files and vendored dependency trees",
      .paths = {R"((?:^|/)(?:package-lock\.json|yarn\.lock|pnpm-lock\.yaml|Cargo\.lock|go\.sum)$)",
                R"((?:^|/)node_modules/)"},
  });
  return s;
}

}  // namespace

const RuleSet& default_rules() {
  static const RuleSet rules = build();
  return rules;
}

}  // namespace cutover::scan
