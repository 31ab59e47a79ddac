// Parser and validator of cutover.yaml. Walks the yaml-cpp tree along the schema (never
// generically, so aliases that form cycles cannot recurse), collects every error with its position
// and reports them sorted. yaml-cpp exceptions are caught here and never leave the module.
#include <arpa/inet.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <sstream>
#include <utility>

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include "config/config.hpp"
#include "core/duration.hpp"
#include "core/fs.hpp"
#include "core/url.hpp"

namespace cutover::config {
namespace {

using core::Duration;
using core::format_duration;

// ----------------------------------------------------------------------------- diagnostics ---

struct Diag {
  int line;
  int column;
  std::string message;
};

class Ctx {
 public:
  void error(const YAML::Mark& m, std::string message) {
    diags.push_back(
        {m.line < 0 ? 1 : m.line + 1, m.column < 0 ? 1 : m.column + 1, std::move(message)});
  }
  void error(const YAML::Node& n, std::string message) { error(n.Mark(), std::move(message)); }
  size_t count() const { return diags.size(); }

  std::vector<Diag> diags;
  bool check_files = false;  // ParseOptions::check_files
};

std::string quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s.substr(0, 80)) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += '?';
    } else {
      out += c;
    }
  }
  if (s.size() > 80) out += "...";
  return out + "\"";
}

std::string describe(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null:
      return "nothing";
    case YAML::NodeType::Scalar:
      return quote(n.Scalar());
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a mapping";
    default:
      return "nothing";
  }
}

std::string join(const std::vector<std::string_view>& items, std::string_view sep = ", ") {
  std::string out;
  for (const auto& i : items) {
    if (!out.empty()) out += sep;
    out += i;
  }
  return out;
}

std::string join(const std::vector<std::string>& items, std::string_view sep = ", ") {
  std::vector<std::string_view> v(items.begin(), items.end());
  return join(v, sep);
}

// A mapping node seen as its entries, with the unknown/duplicate key checks done once.
class Map {
 public:
  struct Entry {
    std::string key;
    YAML::Node key_node;
    YAML::Node value;
  };

  // Reports (and becomes empty) when node is not a mapping; null counts as an empty mapping when
  // null_ok. Reports duplicate keys and non-string keys.
  Map(Ctx& ctx, const YAML::Node& node, std::string path, bool null_ok = false)
      : ctx_(ctx), node_(node), path_(std::move(path)) {
    if (node.IsNull() && null_ok) return;
    if (!node.IsMap()) {
      ctx.error(node, (path_.empty() ? std::string("the file") : path_) +
                          " must be a mapping, got " + describe(node));
      return;
    }
    valid_ = true;
    for (auto it = node.begin(); it != node.end(); ++it) {
      const YAML::Node k = it->first;  // a copy: it-> yields a temporary
      if (!k.IsScalar()) {
        ctx.error(k, where() + "keys must be strings, got " + describe(k));
        continue;
      }
      const std::string& key = k.Scalar();
      if (const Entry* prev = find(key)) {
        ctx.error(k, where() + "duplicate key " + quote(key) + " (first at line " +
                         std::to_string(prev->key_node.Mark().line + 1) + ")");
        continue;
      }
      entries_.push_back({key, k, it->second});
    }
  }

  bool valid() const { return valid_; }
  const std::vector<Entry>& entries() const { return entries_; }
  const YAML::Node& node() const { return node_; }
  const std::string& path() const { return path_; }
  std::string sub(std::string_view key) const {
    return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
  }

  // Reports every key not in allowed, naming the allowed ones. Returns false if any was unknown.
  bool allow(std::initializer_list<std::string_view> allowed, std::string_view what = {}) {
    bool ok = true;
    for (const auto& e : entries_) {
      if (std::find(allowed.begin(), allowed.end(), e.key) != allowed.end()) continue;
      ok = false;
      std::string msg = where() + "unknown key " + quote(e.key);
      if (!what.empty()) msg += " in " + std::string(what);
      msg += "; allowed keys: " + join(std::vector<std::string_view>(allowed));
      ctx_.error(e.key_node, std::move(msg));
    }
    return ok;
  }

  const Entry* find(std::string_view key) const {
    for (const auto& e : entries_) {
      if (e.key == key) return &e;
    }
    return nullptr;
  }
  const YAML::Node* get(std::string_view key) const {
    const Entry* e = find(key);
    return e ? &e->value : nullptr;
  }
  const YAML::Node* require(std::string_view key, std::string_view hint = {}) {
    const YAML::Node* v = get(key);
    if (!v && valid_) {
      std::string msg = sub(key) + " is required";
      if (!hint.empty()) msg += " (" + std::string(hint) + ")";
      ctx_.error(node_, std::move(msg));
    }
    return v;
  }

 private:
  std::string where() const { return path_.empty() ? std::string() : path_ + ": "; }

  Ctx& ctx_;
  YAML::Node node_;
  std::string path_;
  bool valid_ = false;
  std::vector<Entry> entries_;
};

// ---------------------------------------------------------------------------- scalar readers ---

std::optional<std::string> read_string(Ctx& ctx, const YAML::Node& n, const std::string& path) {
  if (!n.IsScalar()) {
    ctx.error(n, path + " must be a string, got " + describe(n));
    return std::nullopt;
  }
  return n.Scalar();
}

std::optional<std::string> read_nonempty(Ctx& ctx, const YAML::Node& n, const std::string& path) {
  auto s = read_string(ctx, n, path);
  if (s && s->empty()) {
    ctx.error(n, path + " must not be empty");
    return std::nullopt;
  }
  return s;
}

std::optional<int64_t> parse_int(std::string_view s) {
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

std::optional<int> read_int(Ctx& ctx, const YAML::Node& n, const std::string& path, int lo,
                            int hi) {
  const std::string range = std::to_string(lo) + "-" + std::to_string(hi);
  std::optional<int64_t> v;
  if (n.IsScalar()) v = parse_int(n.Scalar());
  if (!v) {
    ctx.error(n, path + " must be an integer " + range + ", got " + describe(n));
    return std::nullopt;
  }
  if (*v < lo || *v > hi) {
    ctx.error(n, path + " must be " + range + ", got " + n.Scalar());
    return std::nullopt;
  }
  return static_cast<int>(*v);
}

std::optional<double> read_number(Ctx& ctx, const YAML::Node& n, const std::string& path) {
  if (n.IsScalar() && !n.Scalar().empty()) {
    const std::string& s = n.Scalar();
    char* end = nullptr;
    double v = std::strtod(s.c_str(), &end);
    if (end == s.c_str() + s.size() && std::isfinite(v)) return v;
  }
  ctx.error(n, path + " must be a number, got " + describe(n));
  return std::nullopt;
}

std::optional<Duration> read_duration(Ctx& ctx, const YAML::Node& n, const std::string& path,
                                      Duration lo, Duration hi) {
  if (!n.IsScalar()) {
    ctx.error(n, path + " must be a duration such as 250ms, 10s, 5m or 1h, got " + describe(n));
    return std::nullopt;
  }
  auto d = core::parse_duration(n.Scalar());
  if (!d) {
    ctx.error(n, path + ": " + d.error().message);
    return std::nullopt;
  }
  if (*d < lo || *d > hi) {
    ctx.error(n, path + " must be between " + format_duration(lo) + " and " + format_duration(hi) +
                     ", got " + n.Scalar());
    return std::nullopt;
  }
  return *d;
}

template <typename T>
using EnumTable = std::initializer_list<std::pair<std::string_view, T>>;

template <typename T>
std::optional<T> read_enum(Ctx& ctx, const YAML::Node& n, const std::string& path,
                           EnumTable<T> table) {
  if (n.IsScalar()) {
    for (const auto& [name, value] : table) {
      if (n.Scalar() == name) return value;
    }
  }
  std::vector<std::string_view> names;
  for (const auto& [name, value] : table) names.push_back(name);
  ctx.error(n, path + " must be one of " + join(names, " | ") + ", got " + describe(n));
  return std::nullopt;
}

// A list of strings; a single string is accepted as a one-element list when scalar_ok.
std::vector<std::string> read_string_list(Ctx& ctx, const YAML::Node& n, const std::string& path,
                                          bool scalar_ok) {
  std::vector<std::string> out;
  if (n.IsNull()) return out;
  if (n.IsScalar() && scalar_ok) {
    out.push_back(n.Scalar());
    return out;
  }
  if (!n.IsSequence()) {
    ctx.error(n, path + " must be " + (scalar_ok ? "a string or " : "") +
                     "a list of strings, got " + describe(n));
    return out;
  }
  for (size_t i = 0; i < n.size(); ++i) {
    const YAML::Node item = n[i];
    if (!item.IsScalar()) {
      ctx.error(item, path + "[" + std::to_string(i) + "] must be a string, got " + describe(item));
      continue;
    }
    out.push_back(item.Scalar());
  }
  return out;
}

// -------------------------------------------------------------------------------- name rules ---

bool is_env_name(std::string_view s) {
  if (s.empty() || s.size() > 128) return false;
  if (!(std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_')) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
  });
}

// Stage, service, container and alarm names: 1-63 of [A-Za-z0-9._-], starting with a letter or
// digit (they appear in URLs, file names and CLI arguments).
bool is_object_name(std::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  if (!std::isalnum(static_cast<unsigned char>(s[0]))) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  });
}

// Secret-store names: 1-128 of [A-Za-z0-9._/-], segments separated by single '/', each starting
// with a letter or digit ("web/database-url", "npm-token").
bool is_secret_name(std::string_view s) {
  if (s.empty() || s.size() > 128) return false;
  size_t start = 0;
  while (true) {
    size_t slash = s.find('/', start);
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

constexpr std::string_view kNameRule =
    "1-63 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit";
constexpr std::string_view kEnvRule = "letters, digits and _, not starting with a digit";
constexpr std::string_view kSecretRule =
    "segments of A-Z a-z 0-9 . _ - separated by /, each starting with a letter or digit, at most "
    "128 characters";

std::optional<std::string> read_name(Ctx& ctx, const YAML::Node& n, const std::string& path) {
  auto s = read_string(ctx, n, path);
  if (!s) return s;
  if (!is_object_name(*s)) {
    ctx.error(n, path + " must be " + std::string(kNameRule) + ", got " + quote(*s));
    return std::nullopt;
  }
  return s;
}

// A path relative to the checkout that stays inside it.
std::vector<std::string> read_paths(Ctx& ctx, const YAML::Node& n, const std::string& path) {
  std::vector<std::string> out;
  if (n.IsNull()) return out;
  const size_t before = ctx.count();
  auto items = read_string_list(ctx, n, path, true);
  if (ctx.count() != before) return out;
  for (size_t i = 0; i < items.size(); ++i) {
    const std::string& p = items[i];
    const YAML::Node at = n.IsSequence() ? n[i] : n;
    bool ok = !p.empty() && p.front() != '/';
    size_t start = 0;
    while (ok && start <= p.size()) {
      size_t slash = p.find('/', start);
      std::string_view seg(p.data() + start,
                           (slash == std::string::npos ? p.size() : slash) - start);
      if (seg == "..") ok = false;
      if (slash == std::string::npos) break;
      start = slash + 1;
    }
    if (!ok) {
      ctx.error(at, path + " must be a relative path inside the checkout, got " + quote(p));
      continue;
    }
    out.push_back(p);
  }
  return out;
}

// ---------------------------------------------------------------------------------- variables ---

// Variables a shell provides in every context where cutover runs /bin/sh (stages and hooks).
const std::vector<std::string> kShellVariables = {"PATH",   "HOME",  "USER", "PWD",
                                                  "TMPDIR", "SHELL", "LANG"};

// Checks every ${NAME} in text against available; context names the place for the message.
void check_references(Ctx& ctx, const YAML::Node& at, const std::string& path,
                      std::string_view text, const std::set<std::string>& available,
                      std::string_view context) {
  for (size_t i = 0; i + 1 < text.size(); ++i) {
    if (text[i] != '$') continue;
    if (text[i + 1] == '$' && i + 2 < text.size() && text[i + 2] == '{') {
      i += 2;  // "$${" is a literal "${"
      continue;
    }
    if (text[i + 1] != '{') continue;
    size_t close = text.find('}', i + 2);
    if (close == std::string_view::npos) {
      ctx.error(at, path + ": unterminated ${ in " + quote(text) + " (write $${ for a literal ${)");
      return;
    }
    std::string name(text.substr(i + 2, close - i - 2));
    if (!is_env_name(name)) {
      ctx.error(at, path + ": invalid variable reference ${" + name + "} (" +
                        std::string(kEnvRule) + "; write $${ for a literal ${)");
    } else if (!available.count(name)) {
      std::vector<std::string> names(available.begin(), available.end());
      ctx.error(at, path + ": unknown variable ${" + name + "} in " + std::string(context) +
                        "; available: " + join(names, " "));
    }
    i = close;
  }
}

void check_list_references(Ctx& ctx, const YAML::Node& n, const std::string& path,
                           const std::vector<std::string>& items,
                           const std::set<std::string>& available, std::string_view context) {
  for (size_t i = 0; i < items.size(); ++i) {
    const YAML::Node at = n.IsSequence() && i < n.size() ? n[i] : n;
    check_references(ctx, at, path, items[i], available, context);
  }
}

struct EnvWithNodes {
  EnvMap values;
  std::map<std::string, YAML::Node> nodes;
};

// env: { NAME: value } — names checked; values are strings (numbers and booleans as written).
EnvWithNodes read_env(Ctx& ctx, const YAML::Node& n, const std::string& path) {
  EnvWithNodes out;
  Map m(ctx, n, path, true);
  for (const auto& e : m.entries()) {
    if (!is_env_name(e.key)) {
      ctx.error(e.key_node, path + ": invalid variable name " + quote(e.key) + " (" +
                                std::string(kEnvRule) + ")");
      continue;
    }
    std::string value;
    if (e.value.IsScalar()) {
      value = e.value.Scalar();
    } else if (!e.value.IsNull()) {
      ctx.error(e.value, m.sub(e.key) + " must be a string, got " + describe(e.value));
      continue;
    }
    out.values[e.key] = value;
    out.nodes[e.key] = e.value;
  }
  return out;
}

// secrets: { ENV_NAME: secret-store-name }
SecretMap read_secrets(Ctx& ctx, const YAML::Node& n, const std::string& path, const EnvMap& env) {
  SecretMap out;
  Map m(ctx, n, path, true);
  for (const auto& e : m.entries()) {
    if (!is_env_name(e.key)) {
      ctx.error(e.key_node, path + ": invalid variable name " + quote(e.key) + " (" +
                                std::string(kEnvRule) + ")");
      continue;
    }
    if (env.count(e.key)) {
      ctx.error(e.key_node, path + ": " + e.key +
                                " is also set in env; a variable comes from env "
                                "or from a secret, not both");
      continue;
    }
    auto v = read_string(ctx, e.value, m.sub(e.key));
    if (!v) continue;
    if (!is_secret_name(*v)) {
      ctx.error(e.value, m.sub(e.key) + " must be a secret name (" + std::string(kSecretRule) +
                             "), got " + quote(*v));
      continue;
    }
    out[e.key] = *v;
  }
  return out;
}

std::set<std::string> available_set(const std::vector<std::string>& base,
                                    const std::vector<std::string>& extra, const EnvMap& env,
                                    const SecretMap& secrets) {
  std::set<std::string> s(base.begin(), base.end());
  s.insert(extra.begin(), extra.end());
  for (const auto& [k, v] : env) s.insert(k);
  for (const auto& [k, v] : secrets) s.insert(k);
  return s;
}

// ---------------------------------------------------------------------------------- pipeline ---

std::string label_of(const YAML::Node& n, const std::string& list_path, size_t index) {
  if (n.IsMap()) {
    for (auto it = n.begin(); it != n.end(); ++it) {
      if (it->first.IsScalar() && it->first.Scalar() == "name" && it->second.IsScalar() &&
          is_object_name(it->second.Scalar())) {
        return list_path + "[" + it->second.Scalar() + "]";
      }
    }
  }
  return list_path + "[" + std::to_string(index) + "]";
}

constexpr Duration kDay = 24h;

std::optional<Stage> parse_stage(Ctx& ctx, const YAML::Node& n, const std::string& path) {
  Map m(ctx, n, path);
  if (!m.valid()) return std::nullopt;
  m.allow({"name", "run", "phases", "env", "secrets", "cache", "artifacts", "timeout", "scan",
           "mode", "approval", "gate"});
  Stage s;
  if (const auto* v = m.require("name")) {
    if (auto name = read_name(ctx, *v, m.sub("name"))) s.name = *name;
  }

  // Exactly one of run/phases, scan, approval decides the kind.
  const Map::Entry* kind_key = nullptr;
  for (const auto& e : m.entries()) {
    if (e.key != "run" && e.key != "phases" && e.key != "scan" && e.key != "approval") continue;
    if (!kind_key) {
      kind_key = &e;
    } else {
      ctx.error(e.key_node, path + ": " + quote(e.key) + " cannot be combined with " +
                                quote(kind_key->key) +
                                " (a stage is one of run/phases, scan or "
                                "approval)");
    }
  }
  if (!kind_key) {
    ctx.error(n, path + " needs one of run, phases, scan or approval");
    return std::nullopt;
  }
  const std::string& kind = kind_key->key;
  s.kind = kind == "scan"       ? StageKind::Scan
           : kind == "approval" ? StageKind::Approval
                                : StageKind::Run;

  // Keys that only some kinds take.
  for (const auto& e : m.entries()) {
    static const std::set<std::string, std::less<>> kRunOnly = {"env", "secrets", "cache",
                                                                "artifacts", "gate"};
    bool misplaced = (e.key == "mode" && s.kind != StageKind::Scan) ||
                     (kRunOnly.count(e.key) && s.kind != StageKind::Run) ||
                     (e.key == "timeout" && s.kind == StageKind::Approval);
    if (misplaced) {
      std::string_view allowed = s.kind == StageKind::Scan ? "name, scan, mode, timeout"
                                 : s.kind == StageKind::Approval
                                     ? "name, approval (timeout goes inside approval)"
                                     : "name, run, phases, env, secrets, cache, artifacts, "
                                       "gate, timeout";
      ctx.error(e.key_node, path + ": key " + quote(e.key) + " is not allowed in a " +
                                std::string(to_string(s.kind)) +
                                " stage; allowed keys: " + std::string(allowed));
    }
  }

  if (const auto* v = m.get("timeout"); v && s.kind != StageKind::Approval) {
    s.timeout = read_duration(ctx, *v, m.sub("timeout"), 1s, 48h);
  }

  switch (s.kind) {
    case StageKind::Scan: {
      if (auto k =
              read_enum<ScanKind>(ctx, kind_key->value, m.sub("scan"),
                                  {{"secrets", ScanKind::Secrets}, {"config", ScanKind::Config}})) {
        s.scan = *k;
      }
      if (const auto* v = m.get("mode")) {
        if (auto k =
                read_enum<ScanMode>(ctx, *v, m.sub("mode"),
                                    {{"block", ScanMode::Block}, {"report", ScanMode::Report}})) {
          s.mode = *k;
        }
      }
      break;
    }
    case StageKind::Approval: {
      Map a(ctx, kind_key->value, m.sub("approval"), true);
      a.allow({"timeout"});
      if (const auto* v = a.get("timeout")) {
        if (auto d = read_duration(ctx, *v, a.sub("timeout"), 1s, 7 * kDay)) {
          s.approval_timeout = *d;
        }
      }
      break;
    }
    case StageKind::Run: {
      EnvWithNodes env;
      if (const auto* v = m.get("env")) env = read_env(ctx, *v, m.sub("env"));
      s.env = env.values;
      if (const auto* v = m.get("secrets"))
        s.secrets = read_secrets(ctx, *v, m.sub("secrets"), s.env);
      const auto available = available_set(stage_variables(), kShellVariables, s.env, s.secrets);
      constexpr std::string_view kContext = "a pipeline stage";
      for (const auto& [k, node] : env.nodes) {
        check_references(ctx, node, m.sub("env") + "." + k, s.env[k], available, kContext);
      }
      auto phase = [&](const YAML::Node& node, const std::string& p,
                       std::vector<std::string>& out) {
        out = read_string_list(ctx, node, p, true);
        check_list_references(ctx, node, p, out, available, kContext);
      };
      if (const auto* v = m.get("run")) phase(*v, m.sub("run"), s.phases.build);
      if (const auto* v = m.get("phases")) {
        Map ph(ctx, *v, m.sub("phases"), true);
        ph.allow({"install", "pre_build", "build", "post_build"});
        if (const auto* p = ph.get("install")) phase(*p, ph.sub("install"), s.phases.install);
        if (const auto* p = ph.get("pre_build")) phase(*p, ph.sub("pre_build"), s.phases.pre_build);
        if (const auto* p = ph.get("build")) phase(*p, ph.sub("build"), s.phases.build);
        if (const auto* p = ph.get("post_build")) {
          phase(*p, ph.sub("post_build"), s.phases.post_build);
        }
      }
      if (const auto* v = m.get("cache")) s.cache = read_paths(ctx, *v, m.sub("cache"));
      if (const auto* v = m.get("artifacts")) s.artifacts = read_paths(ctx, *v, m.sub("artifacts"));
      if (const auto* v = m.get("gate")) {
        Map g(ctx, *v, m.sub("gate"));
        g.allow({"sarif", "fail_on", "mode"});
        Stage::SarifGate gate;
        if (const auto* p = g.require("sarif")) {
          if (p->IsScalar()) {
            auto paths = read_paths(ctx, *p, g.sub("sarif"));
            if (!paths.empty()) gate.sarif = paths.front();
          } else {
            ctx.error(*p, g.sub("sarif") + " must be a path to a SARIF file");
          }
        }
        if (const auto* f = g.get("fail_on")) {
          if (auto k = read_enum<std::string>(ctx, *f, g.sub("fail_on"),
                                              {{"error", "error"},
                                               {"warning", "warning"},
                                               {"note", "note"},
                                               {"none", "none"}})) {
            gate.fail_on = *k;
          }
        }
        if (const auto* md = g.get("mode")) {
          if (auto k =
                  read_enum<ScanMode>(ctx, *md, g.sub("mode"),
                                      {{"block", ScanMode::Block}, {"report", ScanMode::Report}})) {
            gate.mode = *k;
          }
        }
        if (g.valid()) s.gate = gate;
      }
      break;
    }
  }
  return s;
}

std::optional<Pipeline> parse_pipeline(Ctx& ctx, const YAML::Node& n) {
  Map m(ctx, n, "pipeline");
  if (!m.valid()) return std::nullopt;
  m.allow({"trigger", "stages"});
  Pipeline p;
  if (const auto* v = m.get("trigger")) {
    Map t(ctx, *v, "pipeline.trigger", true);
    t.allow({"branch"});
    if (const auto* b = t.get("branch")) {
      if (auto s = read_nonempty(ctx, *b, "pipeline.trigger.branch")) {
        const bool bad = s->find_first_of(" \t~^:?*[\\") != std::string::npos ||
                         s->find("..") != std::string::npos || s->front() == '-' ||
                         s->front() == '/' || s->back() == '/';
        if (bad) {
          ctx.error(*b,
                    "pipeline.trigger.branch must be a branch name such as main, got " + quote(*s));
        } else {
          p.branch = *s;
        }
      }
    }
  }
  const auto* stages = m.require("stages", "a list of stages, run in order");
  if (!stages) return p;
  if (!stages->IsSequence() || stages->size() == 0) {
    ctx.error(*stages,
              "pipeline.stages must be a non-empty list of stages, got " +
                  (stages->IsSequence() ? std::string("an empty list") : describe(*stages)));
    return p;
  }
  std::map<std::string, YAML::Node> seen;
  for (size_t i = 0; i < stages->size(); ++i) {
    const YAML::Node item = (*stages)[i];
    auto s = parse_stage(ctx, item, label_of(item, "pipeline.stages", i));
    if (!s) continue;
    if (!s->name.empty()) {
      auto [it, inserted] = seen.emplace(s->name, item);
      if (!inserted) {
        ctx.error(item, "pipeline.stages[" + std::to_string(i) + "]: duplicate stage name " +
                            quote(s->name) + " (first at line " +
                            std::to_string(it->second.Mark().line + 1) + ")");
        continue;
      }
    }
    p.stages.push_back(std::move(*s));
  }
  return p;
}

// ---------------------------------------------------------------------------------- services ---

std::optional<Endpoint> parse_endpoint(Ctx& ctx, const YAML::Node& n, const std::string& path) {
  auto s = read_string(ctx, n, path);
  if (!s) return std::nullopt;
  const auto bad = [&](std::string_view why) {
    ctx.error(n, path + " must be host:port such as 127.0.0.1:8000, 0.0.0.0:8000 or [::1]:8000 (" +
                     std::string(why) + "), got " + quote(*s));
    return std::nullopt;
  };
  Endpoint l;
  l.address = *s;
  std::string port_text;
  if (!s->empty() && s->front() == '[') {
    size_t close = s->find(']');
    if (close == std::string::npos || close + 1 >= s->size() || (*s)[close + 1] != ':') {
      return bad("IPv6 addresses go in brackets");
    }
    l.host = s->substr(1, close - 1);
    port_text = s->substr(close + 2);
    in6_addr a6{};
    if (inet_pton(AF_INET6, l.host.c_str(), &a6) != 1) return bad("invalid IPv6 address");
  } else {
    size_t colon = s->rfind(':');
    if (colon == std::string::npos) return bad("missing port");
    l.host = s->substr(0, colon);
    port_text = s->substr(colon + 1);
    in_addr a4{};
    if (l.host != "localhost" && inet_pton(AF_INET, l.host.c_str(), &a4) != 1) {
      return bad("the host must be an IPv4 address, [IPv6] or localhost");
    }
  }
  auto port = parse_int(port_text);
  if (!port || *port < 1 || *port > 65535) return bad("the port must be 1-65535");
  l.port = static_cast<uint16_t>(*port);
  return l;
}

// Two addresses that cannot both be bound: the same port on the same host or on a wildcard.
bool conflicts(const Endpoint& a, const Endpoint& b) {
  if (a.port != b.port) return false;
  auto wildcard = [](const std::string& h) { return h == "0.0.0.0" || h == "::"; };
  auto norm = [](const std::string& h) { return h == "localhost" ? std::string("127.0.0.1") : h; };
  return wildcard(a.host) || wildcard(b.host) || norm(a.host) == norm(b.host);
}

// A file the proxy reads (certificates, keys): an absolute path, because the proxy runs neither
// in the repository nor in the directory of cutover.yaml. With check_files, it must be readable;
// that is reported but leaves the path in place, so that the checks that follow still run.
std::optional<std::string> read_file_path(Ctx& ctx, const YAML::Node& n, const std::string& path) {
  auto s = read_nonempty(ctx, n, path);
  if (!s) return s;
  if (s->front() != '/') {
    ctx.error(n, path +
                     " must be an absolute path (the proxy reads it on the host it runs on), got " +
                     quote(*s));
    return std::nullopt;
  }
  if (ctx.check_files) {
    std::error_code ec;
    if (std::filesystem::is_directory(*s, ec)) {
      ctx.error(n, path + ": " + quote(*s) + " is a directory, not a PEM file");
    } else if (const int fd = ::open(s->c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY); fd < 0) {
      ctx.error(n, path + ": cannot read " + quote(*s) + ": " + std::strerror(errno));
    } else {
      ::close(fd);
    }
  }
  return s;
}

Listener to_listener(const Endpoint& e) {
  Listener l;
  l.address = e.address;
  l.host = e.host;
  l.port = e.port;
  return l;
}

// "ADDR:PORT", or {address: ADDR:PORT, tls: {cert, key}, redirect_http: ADDR:PORT}.
std::optional<Listener> parse_listener(Ctx& ctx, const YAML::Node& n, const std::string& path) {
  if (!n.IsMap()) {
    if (!n.IsScalar()) {
      ctx.error(n, path +
                       " must be host:port or a mapping with address, tls and redirect_http, got " +
                       describe(n));
      return std::nullopt;
    }
    auto e = parse_endpoint(ctx, n, path);
    if (!e) return std::nullopt;
    return to_listener(*e);
  }
  Map m(ctx, n, path);
  m.allow({"address", "tls", "redirect_http"});
  bool ok = false;
  Listener l;
  if (const auto* v = m.require("address", "host:port such as 0.0.0.0:8443")) {
    if (auto e = parse_endpoint(ctx, *v, m.sub("address"))) {
      l = to_listener(*e);
      ok = true;
    }
  }
  const bool address_ok = ok;
  if (const auto* v = m.get("tls")) {
    Map t(ctx, *v, m.sub("tls"));
    t.allow({"cert", "key"});
    const auto* cert = t.require("cert", "the PEM certificate chain file");
    const auto* key = t.require("key", "the PEM private key file");
    std::optional<std::string> c, k;
    if (cert) c = read_file_path(ctx, *cert, t.sub("cert"));
    if (key) k = read_file_path(ctx, *key, t.sub("key"));
    if (c && k) {
      l.tls = Tls{*c, *k};
    } else {
      ok = false;
    }
  }
  if (const auto* v = m.get("redirect_http")) {
    auto e = parse_endpoint(ctx, *v, m.sub("redirect_http"));
    if (!e) {
      ok = false;
    } else if (!m.get("tls")) {
      ctx.error(m.find("redirect_http")->key_node,
                m.sub("redirect_http") +
                    " needs tls: it redirects plain HTTP to this listener's https address");
      ok = false;
    } else if (address_ok && conflicts(*e, l.endpoint())) {
      ctx.error(*v, m.sub("redirect_http") + ": address " + e->address +
                        " conflicts with the listener's own address " + l.address);
      ok = false;
    } else {
      l.redirect_http = *e;
    }
  }
  if (!ok) return std::nullopt;
  return l;
}

std::optional<int> signal_number(std::string_view name) {
  static constexpr std::pair<std::string_view, int> kSignals[] = {
      {"SIGTERM", SIGTERM}, {"SIGINT", SIGINT},   {"SIGQUIT", SIGQUIT}, {"SIGHUP", SIGHUP},
      {"SIGKILL", SIGKILL}, {"SIGUSR1", SIGUSR1}, {"SIGUSR2", SIGUSR2}, {"SIGWINCH", SIGWINCH},
  };
  for (const auto& [n, v] : kSignals) {
    if (n == name || n.substr(3) == name) return v;
  }
  return std::nullopt;
}

Health parse_health(Ctx& ctx, const YAML::Node& n, const std::string& path,
                    const std::set<std::string>& available) {
  Health h;
  Map m(ctx, n, path);
  if (!m.valid()) return h;
  m.allow({"command", "http", "tcp", "interval", "timeout", "retries", "start_period"});
  const Map::Entry* kind = nullptr;
  for (const auto& e : m.entries()) {
    if (e.key != "command" && e.key != "http" && e.key != "tcp") continue;
    if (kind) {
      ctx.error(e.key_node, path + ": " + quote(e.key) + " cannot be combined with " +
                                quote(kind->key) + " (one of command, http or tcp)");
      continue;
    }
    kind = &e;
  }
  if (!kind) {
    ctx.error(n, path + " needs one of command, http or tcp");
  } else if (kind->key == "command") {
    h.kind = HealthKind::Command;
    if (!kind->value.IsSequence() || kind->value.size() == 0) {
      ctx.error(kind->value, m.sub("command") + " must be a non-empty list of arguments, got " +
                                 describe(kind->value));
    } else {
      h.command = read_string_list(ctx, kind->value, m.sub("command"), false);
      check_list_references(ctx, kind->value, m.sub("command"), h.command, available, "a task");
    }
  } else if (kind->key == "http") {
    h.kind = HealthKind::Http;
    if (auto p = read_string(ctx, kind->value, m.sub("http"))) {
      if (p->empty() || p->front() != '/') {
        ctx.error(kind->value, m.sub("http") + " must be a path starting with /, got " + quote(*p));
      } else {
        h.path = *p;
      }
    }
  } else {
    h.kind = HealthKind::Tcp;
    if (!kind->value.IsScalar() || kind->value.Scalar() != "true") {
      ctx.error(kind->value, m.sub("tcp") + " must be true, got " + describe(kind->value));
    }
  }
  if (const auto* v = m.get("interval")) {
    if (auto d = read_duration(ctx, *v, m.sub("interval"), 100ms, 5min)) h.interval = *d;
  }
  if (const auto* v = m.get("timeout")) {
    if (auto d = read_duration(ctx, *v, m.sub("timeout"), 100ms, 1min)) h.timeout = *d;
  }
  if (const auto* v = m.get("retries")) {
    if (auto i = read_int(ctx, *v, m.sub("retries"), 1, 10)) h.retries = *i;
  }
  if (const auto* v = m.get("start_period")) {
    if (auto d = read_duration(ctx, *v, m.sub("start_period"), 0s, 5min)) h.start_period = *d;
  }
  return h;
}

// "512MiB", "1G", "4096" (bytes). Binary and decimal suffixes: K M G T, Ki Mi Gi Ti, optional B.
std::optional<uint64_t> read_bytes(Ctx& ctx, const YAML::Node& n, const std::string& path) {
  auto bad = [&] {
    ctx.error(n, path + " must be a size such as 512MiB, 1G or 4096 (bytes), got " + describe(n));
    return std::nullopt;
  };
  if (!n.IsScalar() || n.Scalar().empty()) return bad();
  std::string_view s = n.Scalar();
  size_t digits = 0;
  while (digits < s.size() && s[digits] >= '0' && s[digits] <= '9') ++digits;
  auto number = parse_int(s.substr(0, digits));
  if (!number || *number <= 0) return bad();
  std::string_view unit = s.substr(digits);
  if (!unit.empty() && unit.back() == 'B') unit.remove_suffix(1);
  static constexpr std::pair<std::string_view, uint64_t> kUnits[] = {
      {"", 1},
      {"K", 1000ULL},
      {"M", 1000ULL * 1000},
      {"G", 1000ULL * 1000 * 1000},
      {"T", 1000ULL * 1000 * 1000 * 1000},
      {"Ki", 1ULL << 10},
      {"Mi", 1ULL << 20},
      {"Gi", 1ULL << 30},
      {"Ti", 1ULL << 40}};
  for (const auto& [name, factor] : kUnits) {
    if (unit != name) continue;
    const auto value = static_cast<uint64_t>(*number);
    if (value > UINT64_MAX / factor) return bad();
    return value * factor;
  }
  return bad();
}

Limits parse_limits(Ctx& ctx, const YAML::Node& n, const std::string& path) {
  Limits l;
  Map m(ctx, n, path);
  if (!m.valid()) return l;
  m.allow({"open_files", "processes", "memory", "file_size", "cpu_time"});
  if (const auto* v = m.get("open_files")) {
    if (auto i = read_int(ctx, *v, m.sub("open_files"), 16, 1048576)) l.open_files = *i;
  }
  if (const auto* v = m.get("processes")) {
    if (auto i = read_int(ctx, *v, m.sub("processes"), 1, 1048576)) l.processes = *i;
  }
  if (const auto* v = m.get("memory")) {
    if (auto b = read_bytes(ctx, *v, m.sub("memory"))) {
      if (*b < (16ULL << 20)) {
        ctx.error(*v, m.sub("memory") + " must be at least 16MiB, got " + v->Scalar());
      } else {
        l.memory = *b;
      }
    }
  }
  if (const auto* v = m.get("file_size")) {
    if (auto b = read_bytes(ctx, *v, m.sub("file_size"))) l.file_size = *b;
  }
  if (const auto* v = m.get("cpu_time")) {
    if (auto d = read_duration(ctx, *v, m.sub("cpu_time"), 1s, 8760h)) l.cpu_time = *d;
  }
  return l;
}

std::optional<Container> parse_container(Ctx& ctx, const YAML::Node& n, const std::string& path,
                                         Driver driver) {
  Map m(ctx, n, path);
  if (!m.valid()) return std::nullopt;
  m.allow({"name", "command", "image", "port", "env", "secrets", "health", "stop_signal",
           "stop_timeout", "limits"});
  Container c;
  if (const auto* v = m.require("name")) {
    if (auto s = read_name(ctx, *v, m.sub("name"))) c.name = *s;
  }
  EnvWithNodes env;
  if (const auto* v = m.get("env")) env = read_env(ctx, *v, m.sub("env"));
  c.env = env.values;
  if (const auto* v = m.get("secrets")) c.secrets = read_secrets(ctx, *v, m.sub("secrets"), c.env);
  const auto available = available_set(task_variables(), {}, c.env, c.secrets);
  constexpr std::string_view kContext = "a task";
  for (const auto& [k, node] : env.nodes) {
    check_references(ctx, node, m.sub("env") + "." + k, c.env[k], available, kContext);
  }

  const auto* command = m.get("command");
  const auto* image = m.get("image");
  if (command) {
    if (!command->IsSequence() || command->size() == 0) {
      ctx.error(*command, m.sub("command") +
                              " must be a non-empty list of arguments such as [dist/server, "
                              "--port, \"${PORT}\"], got " +
                              describe(*command));
    } else {
      c.command = read_string_list(ctx, *command, m.sub("command"), false);
      check_list_references(ctx, *command, m.sub("command"), c.command, available, kContext);
    }
  }
  if (driver == Driver::Process) {
    if (image) {
      ctx.error(m.find("image")->key_node,
                m.sub("image") + " needs driver: podman (the process driver runs command)");
    } else if (!command) {
      m.require("command", "the process driver runs a command from the artifact");
    }
  } else {
    if (!image) {
      m.require("image", "the podman driver runs an image");
    } else if (auto s = read_nonempty(ctx, *image, m.sub("image"))) {
      c.image = *s;
      check_references(ctx, *image, m.sub("image"), c.image, available, kContext);
    }
  }
  if (const auto* v = m.get("port")) {
    if (auto p = read_int(ctx, *v, m.sub("port"), 1, 65535)) c.port = static_cast<uint16_t>(*p);
  }
  if (const auto* v = m.get("health")) c.health = parse_health(ctx, *v, m.sub("health"), available);
  if (const auto* v = m.get("stop_signal")) {
    if (auto s = read_string(ctx, *v, m.sub("stop_signal"))) {
      if (auto num = signal_number(*s)) {
        c.stop_signal = s->rfind("SIG", 0) == 0 ? *s : "SIG" + *s;
        c.stop_signal_number = *num;
      } else {
        ctx.error(*v, m.sub("stop_signal") +
                          " must be one of SIGTERM | SIGINT | SIGQUIT | SIGHUP | SIGKILL | SIGUSR1 "
                          "| SIGUSR2 | SIGWINCH, got " +
                          quote(*s));
      }
    }
  }
  if (const auto* v = m.get("stop_timeout")) {
    if (auto d = read_duration(ctx, *v, m.sub("stop_timeout"), 0s, 10min)) c.stop_timeout = *d;
  }
  if (const auto* v = m.get("limits")) c.limits = parse_limits(ctx, *v, m.sub("limits"));
  return c;
}

Task parse_task(Ctx& ctx, const YAML::Node& n, const std::string& path, Driver driver) {
  Task t;
  Map m(ctx, n, path);
  if (!m.valid()) return t;
  m.allow({"containers", "count"});
  if (const auto* v = m.get("count")) {
    if (auto i = read_int(ctx, *v, m.sub("count"), 1, 100)) t.count = *i;
  }
  const auto* cs = m.require("containers", "a list of containers, each with a name");
  if (!cs) return t;
  if (!cs->IsSequence() || cs->size() == 0) {
    ctx.error(*cs, m.sub("containers") + " must be a non-empty list of containers, got " +
                       (cs->IsSequence() ? std::string("an empty list") : describe(*cs)));
    return t;
  }
  std::map<std::string, int> seen;
  for (size_t i = 0; i < cs->size(); ++i) {
    const YAML::Node item = (*cs)[i];
    auto c = parse_container(ctx, item, label_of(item, m.sub("containers"), i), driver);
    if (!c) continue;
    if (!c->name.empty()) {
      auto [it, inserted] = seen.emplace(c->name, item.Mark().line + 1);
      if (!inserted) {
        ctx.error(item, m.sub("containers") + "[" + std::to_string(i) +
                            "]: duplicate container name " + quote(c->name) + " (first at line " +
                            std::to_string(it->second) + ")");
        continue;
      }
    }
    t.containers.push_back(std::move(*c));
  }
  return t;
}

std::optional<std::vector<StatusRange>> parse_matcher(std::string_view text) {
  std::vector<StatusRange> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    std::string_view part =
        text.substr(start, comma == std::string_view::npos ? text.npos : comma - start);
    while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
    while (!part.empty() && part.back() == ' ') part.remove_suffix(1);
    size_t dash = part.find('-');
    auto lo = parse_int(part.substr(0, dash));
    auto hi = dash == std::string_view::npos ? lo : parse_int(part.substr(dash + 1));
    if (!lo || !hi || *lo < 100 || *hi > 599 || *lo > *hi) return std::nullopt;
    out.push_back({static_cast<int>(*lo), static_cast<int>(*hi)});
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

// `passive: {}` (or empty) turns passive ejection on with the defaults of PassiveHealth.
std::optional<PassiveHealth> parse_passive_health(Ctx& ctx, const YAML::Node& n,
                                                  const std::string& path) {
  PassiveHealth p;
  Map m(ctx, n, path, true);
  if (!m.valid() && !n.IsNull()) return std::nullopt;
  m.allow({"consecutive_5xx", "consecutive_connect_failures", "ejection", "max_ejection_percent"});
  if (const auto* v = m.get("consecutive_5xx")) {
    if (auto i = read_int(ctx, *v, m.sub("consecutive_5xx"), 0, 1000)) p.consecutive_5xx = *i;
  }
  if (const auto* v = m.get("consecutive_connect_failures")) {
    if (auto i = read_int(ctx, *v, m.sub("consecutive_connect_failures"), 0, 1000)) {
      p.consecutive_connect_failures = *i;
    }
  }
  if (const auto* v = m.get("ejection")) {
    if (auto d = read_duration(ctx, *v, m.sub("ejection"), 1s, 1h)) p.ejection = *d;
  }
  if (const auto* v = m.get("max_ejection_percent")) {
    if (auto i = read_int(ctx, *v, m.sub("max_ejection_percent"), 1, 100)) {
      p.max_ejection_percent = *i;
    }
  }
  if (p.consecutive_5xx == 0 && p.consecutive_connect_failures == 0) {
    ctx.error(n, path +
                     ": consecutive_5xx and consecutive_connect_failures are both 0, which ejects "
                     "nothing; remove passive to turn passive ejection off");
    return std::nullopt;
  }
  return p;
}

TargetHealth parse_target_health(Ctx& ctx, const YAML::Node& n, const std::string& path) {
  TargetHealth th;
  Map m(ctx, n, path, true);
  m.allow({"path", "interval", "timeout", "healthy_threshold", "unhealthy_threshold", "matcher",
           "passive"});
  if (const auto* v = m.get("path")) {
    if (auto s = read_string(ctx, *v, m.sub("path"))) {
      if (s->empty() || s->front() != '/') {
        ctx.error(*v, m.sub("path") + " must start with /, got " + quote(*s));
      } else {
        th.path = *s;
      }
    }
  }
  if (const auto* v = m.get("interval")) {
    if (auto d = read_duration(ctx, *v, m.sub("interval"), 100ms, 5min)) th.interval = *d;
  }
  th.timeout = std::min<Duration>(2s, th.interval);
  if (const auto* v = m.get("timeout")) {
    if (auto d = read_duration(ctx, *v, m.sub("timeout"), 100ms, 1min)) {
      if (*d > th.interval) {
        ctx.error(*v, m.sub("timeout") + " must not be longer than the interval (" +
                          format_duration(th.interval) + "), got " + v->Scalar());
      } else {
        th.timeout = *d;
      }
    }
  }
  if (const auto* v = m.get("healthy_threshold")) {
    if (auto i = read_int(ctx, *v, m.sub("healthy_threshold"), 1, 10)) th.healthy_threshold = *i;
  }
  if (const auto* v = m.get("unhealthy_threshold")) {
    if (auto i = read_int(ctx, *v, m.sub("unhealthy_threshold"), 1, 10)) {
      th.unhealthy_threshold = *i;
    }
  }
  if (const auto* v = m.get("matcher")) {
    std::optional<std::vector<StatusRange>> r;
    if (v->IsScalar()) r = parse_matcher(v->Scalar());
    if (!r) {
      ctx.error(*v, m.sub("matcher") +
                        " must be HTTP status codes 100-599 as codes and ranges such as 200-299 "
                        "or 200,302, got " +
                        describe(*v));
    } else {
      th.matcher = *r;
    }
  }
  if (const auto* v = m.get("passive"))
    th.passive = parse_passive_health(ctx, *v, m.sub("passive"));
  return th;
}

struct Preset {
  std::string_view name;
  Traffic traffic;
};

const std::vector<Preset>& presets() {
  static const std::vector<Preset> kPresets = [] {
    auto make = [](std::string_view name, TrafficType type, int percent, Duration interval) {
      Traffic t;
      t.type = type;
      t.percent = percent;
      t.interval = interval;
      t.preset = std::string(name);
      return Preset{name, t};
    };
    return std::vector<Preset>{
        make("CodeDeployDefault.ECSAllAtOnce", TrafficType::AllAtOnce, 10, 1min),
        make("CodeDeployDefault.ECSCanary10Percent5Minutes", TrafficType::Canary, 10, 5min),
        make("CodeDeployDefault.ECSCanary10Percent15Minutes", TrafficType::Canary, 10, 15min),
        make("CodeDeployDefault.ECSLinear10PercentEvery1Minutes", TrafficType::Linear, 10, 1min),
        make("CodeDeployDefault.ECSLinear10PercentEvery3Minutes", TrafficType::Linear, 10, 3min),
    };
  }();
  return kPresets;
}

Traffic parse_traffic(Ctx& ctx, const YAML::Node& n, const std::string& path) {
  Traffic t;
  if (n.IsScalar()) {
    if (n.Scalar() == "all_at_once") return t;
    for (const auto& p : presets()) {
      if (p.name == n.Scalar()) return p.traffic;
    }
    std::vector<std::string_view> names{"all_at_once"};
    for (const auto& p : presets()) names.push_back(p.name);
    ctx.error(n, path + " must be a mapping with a type or one of " + join(names, " | ") +
                     ", got " + describe(n));
    return t;
  }
  Map m(ctx, n, path);
  if (!m.valid()) return t;
  m.allow({"type", "percent", "interval", "steps"});
  const auto* type = m.require("type", "all_at_once | canary | linear | steps");
  if (!type) return t;
  auto tt = read_enum<TrafficType>(ctx, *type, m.sub("type"),
                                   {{"all_at_once", TrafficType::AllAtOnce},
                                    {"canary", TrafficType::Canary},
                                    {"linear", TrafficType::Linear},
                                    {"steps", TrafficType::Steps}});
  if (!tt) return t;
  t.type = *tt;
  const bool shifted = t.type == TrafficType::Canary || t.type == TrafficType::Linear;
  for (const auto& e : m.entries()) {
    const bool misplaced = ((e.key == "percent" || e.key == "interval") && !shifted) ||
                           (e.key == "steps" && t.type != TrafficType::Steps);
    if (misplaced) {
      ctx.error(e.key_node, path + ": key " + quote(e.key) + " does not apply to type " +
                                type->Scalar() +
                                " (canary and linear take percent and interval, "
                                "steps takes steps)");
    }
  }
  if (shifted) {
    if (const auto* v = m.get("percent")) {
      if (auto i = read_int(ctx, *v, m.sub("percent"), 1, 100)) t.percent = *i;
    }
    if (const auto* v = m.get("interval")) {
      if (auto d = read_duration(ctx, *v, m.sub("interval"), 1s, 48h)) t.interval = *d;
    }
  }
  if (t.type == TrafficType::Steps) {
    const auto* steps = m.require("steps", "a list of {weight, pause}");
    if (!steps) return t;
    if (!steps->IsSequence() || steps->size() == 0) {
      ctx.error(*steps,
                m.sub("steps") + " must be a non-empty list of {weight, pause}, got " +
                    (steps->IsSequence() ? std::string("an empty list") : describe(*steps)));
      return t;
    }
    int last = 0;
    for (size_t i = 0; i < steps->size(); ++i) {
      const YAML::Node item = (*steps)[i];
      const std::string sp = m.sub("steps") + "[" + std::to_string(i) + "]";
      Map s(ctx, item, sp);
      if (!s.valid()) continue;
      s.allow({"weight", "pause"});
      TrafficStep step;
      if (const auto* w = s.require("weight", "percent of traffic, 1-100")) {
        auto weight = read_int(ctx, *w, s.sub("weight"), 1, 100);
        if (!weight) continue;
        if (*weight <= last) {
          ctx.error(*w, s.sub("weight") + " must be greater than the previous step's weight (" +
                            std::to_string(last) + "), got " + std::to_string(*weight));
          continue;
        }
        step.weight = last = *weight;
      } else {
        continue;
      }
      if (const auto* p = s.get("pause")) {
        if (auto d = read_duration(ctx, *p, s.sub("pause"), 0s, 48h)) step.pause = *d;
      }
      t.steps.push_back(step);
    }
  }
  return t;
}

bool is_count_metric(Metric m) {
  return m == Metric::HttpRequests || m == Metric::Http2xx || m == Metric::Http4xx ||
         m == Metric::Http5xx || m == Metric::UpstreamErrors;
}
bool is_latency_metric(Metric m) {
  return m == Metric::LatencyP50 || m == Metric::LatencyP90 || m == Metric::LatencyP99;
}

std::optional<Alarm> parse_alarm(Ctx& ctx, const YAML::Node& n, const std::string& path) {
  Map m(ctx, n, path);
  if (!m.valid()) return std::nullopt;
  m.allow({"name", "metric", "target", "statistic", "period", "evaluation_periods",
           "datapoints_to_alarm", "comparison", "threshold", "min_requests"});
  Alarm a;
  bool ok = true;
  if (const auto* v = m.require("name")) {
    if (auto s = read_name(ctx, *v, m.sub("name"))) a.name = *s;
  }
  if (const auto* v = m.require("metric")) {
    auto metric = read_enum<Metric>(ctx, *v, m.sub("metric"),
                                    {{"http_requests", Metric::HttpRequests},
                                     {"http_2xx", Metric::Http2xx},
                                     {"http_4xx", Metric::Http4xx},
                                     {"http_5xx", Metric::Http5xx},
                                     {"error_rate", Metric::ErrorRate},
                                     {"latency_p50", Metric::LatencyP50},
                                     {"latency_p90", Metric::LatencyP90},
                                     {"latency_p99", Metric::LatencyP99},
                                     {"upstream_errors", Metric::UpstreamErrors}});
    if (metric) {
      a.metric = *metric;
    } else {
      ok = false;
    }
  } else {
    ok = false;
  }
  a.statistic = is_count_metric(a.metric) ? Statistic::Sum : Statistic::Avg;
  if (const auto* v = m.get("target")) {
    if (auto t = read_enum<AlarmTarget>(
            ctx, *v, m.sub("target"),
            {{"green", AlarmTarget::Green}, {"production", AlarmTarget::Production}})) {
      a.target = *t;
    }
  }
  if (const auto* v = m.get("statistic")) {
    if (auto s = read_enum<Statistic>(
            ctx, *v, m.sub("statistic"),
            {{"sum", Statistic::Sum}, {"avg", Statistic::Avg}, {"max", Statistic::Max}})) {
      a.statistic = *s;
    }
  }
  if (const auto* v = m.get("period")) {
    if (auto d = read_duration(ctx, *v, m.sub("period"), 1s, 1h)) a.period = *d;
  }
  if (const auto* v = m.get("evaluation_periods")) {
    if (auto i = read_int(ctx, *v, m.sub("evaluation_periods"), 1, 100)) a.evaluation_periods = *i;
  }
  a.datapoints_to_alarm = a.evaluation_periods;
  if (const auto* v = m.get("datapoints_to_alarm")) {
    if (auto i = read_int(ctx, *v, m.sub("datapoints_to_alarm"), 1, 100)) {
      if (*i > a.evaluation_periods) {
        ctx.error(*v, m.sub("datapoints_to_alarm") + " must not exceed evaluation_periods (" +
                          std::to_string(a.evaluation_periods) + "), got " + v->Scalar());
      } else {
        a.datapoints_to_alarm = *i;
      }
    }
  }
  if (const auto* v = m.get("comparison")) {
    if (auto c = read_enum<Comparison>(ctx, *v, m.sub("comparison"),
                                       {{">", Comparison::Greater},
                                        {">=", Comparison::GreaterOrEqual},
                                        {"<", Comparison::Less},
                                        {"<=", Comparison::LessOrEqual}})) {
      a.comparison = *c;
    }
  }
  if (const auto* v = m.require("threshold")) {
    std::optional<double> th;
    if (ok && is_latency_metric(a.metric) && v->IsScalar() && !v->Scalar().empty() &&
        std::isalpha(static_cast<unsigned char>(v->Scalar().back()))) {
      if (auto d = read_duration(ctx, *v, m.sub("threshold"), 0s, 1h)) {
        th = static_cast<double>(d->count());
      }
    } else {
      th = read_number(ctx, *v, m.sub("threshold"));
      if (th && *th < 0) {
        ctx.error(*v, m.sub("threshold") + " must not be negative, got " + v->Scalar());
        th.reset();
      } else if (th && ok && a.metric == Metric::ErrorRate && *th > 100) {
        ctx.error(*v, m.sub("threshold") +
                          " is a percentage for error_rate and must be 0-100, got " + v->Scalar());
        th.reset();
      }
    }
    if (th) a.threshold = *th;
  }
  if (const auto* v = m.get("min_requests")) {
    if (auto i = read_int(ctx, *v, m.sub("min_requests"), 0, 1'000'000'000)) a.min_requests = *i;
  }
  return a;
}

// RFC 9110 tchar: what the proxy accepts as a cookie name.
bool is_cookie_name(std::string_view s) {
  constexpr std::string_view kSpecials = "!#$%&'*+-.^_`|~";
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [&](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) ||
           kSpecials.find(c) != std::string_view::npos;
  });
}

// deployment.sticky: true | false | {cookie: NAME}. Returns the cookie name, empty = off.
std::string parse_sticky(Ctx& ctx, const YAML::Node& n, const Map& deployment, Strategy strategy) {
  const std::string path = deployment.sub("sticky");
  std::string cookie;
  if (n.IsScalar() && (n.Scalar() == "true" || n.Scalar() == "false")) {
    if (n.Scalar() == "true") cookie = kDefaultStickyCookie;
  } else if (n.IsMap()) {
    Map m(ctx, n, path);
    m.allow({"cookie"});
    if (const auto* c = m.require("cookie", "the cookie name")) {
      if (auto s = read_string(ctx, *c, m.sub("cookie"))) {
        if (!is_cookie_name(*s)) {
          ctx.error(*c,
                    m.sub("cookie") +
                        " must be a cookie name: 1-64 letters, digits or !#$%&'*+-.^_`|~, got " +
                        quote(*s));
        } else {
          cookie = *s;
        }
      }
    }
  } else {
    ctx.error(n, path + " must be true, false or {cookie: NAME}, got " + describe(n));
    return {};
  }
  if (!cookie.empty() && strategy == Strategy::Rolling) {
    ctx.error(deployment.find("sticky")->key_node,
              path +
                  " only applies to strategy blue_green (rolling replaces tasks in one target "
                  "group, so there is no version to stick to)");
    return {};
  }
  return cookie;
}

Deployment parse_deployment(Ctx& ctx, const YAML::Node& n, const std::string& path) {
  Deployment d;
  Map m(ctx, n, path, true);
  m.allow({"strategy", "traffic", "hooks", "hook_timeout", "alarms", "auto_rollback",
           "termination_wait", "drain_timeout", "min_healthy_percent", "max_percent",
           "circuit_breaker", "sticky", "insufficient_data"});
  if (const auto* v = m.get("strategy")) {
    if (auto s = read_enum<Strategy>(
            ctx, *v, m.sub("strategy"),
            {{"blue_green", Strategy::BlueGreen}, {"rolling", Strategy::Rolling}})) {
      d.strategy = *s;
    }
  }
  if (const auto* v = m.get("traffic")) {
    if (d.strategy == Strategy::Rolling) {
      ctx.error(m.find("traffic")->key_node,
                m.sub("traffic") +
                    " only applies to strategy blue_green (rolling replaces tasks "
                    "in place, see min_healthy_percent and max_percent)");
    } else {
      d.traffic = parse_traffic(ctx, *v, m.sub("traffic"));
    }
  }
  if (const auto* v = m.get("hooks"); v && d.strategy == Strategy::Rolling) {
    ctx.error(m.find("hooks")->key_node,
              m.sub("hooks") +
                  " only applies to strategy blue_green (its hook points are phases of the "
                  "blue/green lifecycle; a rolling update has no test traffic phase or cut-over "
                  "to hook into)");
  } else if (v) {
    Map h(ctx, *v, m.sub("hooks"), true);
    h.allow({"before_install", "after_install", "after_allow_test_traffic", "before_allow_traffic",
             "after_allow_traffic"});
    const auto available = available_set(hook_variables(), kShellVariables, {}, {});
    const std::pair<std::string_view, std::vector<std::string>*> lists[] = {
        {"before_install", &d.hooks.before_install},
        {"after_install", &d.hooks.after_install},
        {"after_allow_test_traffic", &d.hooks.after_allow_test_traffic},
        {"before_allow_traffic", &d.hooks.before_allow_traffic},
        {"after_allow_traffic", &d.hooks.after_allow_traffic},
    };
    for (const auto& [key, out] : lists) {
      if (const auto* l = h.get(key)) {
        *out = read_string_list(ctx, *l, h.sub(key), true);
        check_list_references(ctx, *l, h.sub(key), *out, available, "a hook");
      }
    }
  }
  if (const auto* v = m.get("hook_timeout")) {
    if (auto x = read_duration(ctx, *v, m.sub("hook_timeout"), 1s, 1h)) d.hook_timeout = *x;
  }
  if (const auto* v = m.get("alarms")) {
    if (!v->IsSequence() && !v->IsNull()) {
      ctx.error(*v, m.sub("alarms") + " must be a list of alarms, got " + describe(*v));
    } else if (v->IsSequence()) {
      std::map<std::string, int> seen;
      for (size_t i = 0; i < v->size(); ++i) {
        const YAML::Node item = (*v)[i];
        auto a = parse_alarm(ctx, item, label_of(item, m.sub("alarms"), i));
        if (!a) continue;
        if (!a->name.empty()) {
          auto [it, inserted] = seen.emplace(a->name, item.Mark().line + 1);
          if (!inserted) {
            ctx.error(item, m.sub("alarms") + "[" + std::to_string(i) + "]: duplicate alarm name " +
                                quote(a->name) + " (first at line " + std::to_string(it->second) +
                                ")");
            continue;
          }
        }
        d.alarms.push_back(std::move(*a));
      }
    }
  }
  if (const auto* v = m.get("auto_rollback")) {
    d.auto_rollback.clear();
    if (!v->IsSequence() && !v->IsNull()) {
      ctx.error(*v,
                m.sub("auto_rollback") + " must be a list of failure | alarm, got " + describe(*v));
    } else if (v->IsSequence()) {
      for (size_t i = 0; i < v->size(); ++i) {
        if (auto r = read_enum<RollbackTrigger>(
                ctx, (*v)[i], m.sub("auto_rollback") + "[" + std::to_string(i) + "]",
                {{"failure", RollbackTrigger::Failure}, {"alarm", RollbackTrigger::Alarm}})) {
          d.auto_rollback.insert(*r);
        }
      }
    }
  }
  if (const auto* v = m.get("termination_wait")) {
    if (auto x = read_duration(ctx, *v, m.sub("termination_wait"), 0s, 48h))
      d.termination_wait = *x;
  }
  if (const auto* v = m.get("drain_timeout")) {
    if (auto x = read_duration(ctx, *v, m.sub("drain_timeout"), 0s, 1h)) d.drain_timeout = *x;
  }
  if (const auto* v = m.get("min_healthy_percent")) {
    if (auto i = read_int(ctx, *v, m.sub("min_healthy_percent"), 0, 100))
      d.min_healthy_percent = *i;
  }
  if (const auto* v = m.get("max_percent")) {
    if (auto i = read_int(ctx, *v, m.sub("max_percent"), 100, 400)) d.max_percent = *i;
  }
  if (d.strategy == Strategy::Rolling && d.min_healthy_percent == 100 && d.max_percent == 100) {
    ctx.error(n, path +
                     ": a rolling deployment with min_healthy_percent 100 and max_percent 100 "
                     "can never replace a task; lower min_healthy_percent or raise max_percent");
  }
  if (const auto* v = m.get("circuit_breaker")) {
    Map cb(ctx, *v, m.sub("circuit_breaker"), true);
    cb.allow({"threshold"});
    if (const auto* t = cb.get("threshold")) {
      if (auto i = read_int(ctx, *t, cb.sub("threshold"), 1, 100)) d.circuit_breaker_threshold = *i;
    }
  }
  if (const auto* v = m.get("insufficient_data")) {
    Map id(ctx, *v, m.sub("insufficient_data"), true);
    id.allow({"timeout", "then"});
    if (const auto* t = id.get("timeout")) {
      if (auto x = read_duration(ctx, *t, id.sub("timeout"), 0s, 48h)) {
        d.insufficient_data_timeout = *x;
      }
    }
    if (const auto* t = id.get("then")) {
      if (auto x =
              read_enum<bool>(ctx, *t, id.sub("then"), {{"rollback", false}, {"continue", true}})) {
        d.insufficient_data_continue = *x;
      }
    }
  }
  if (const auto* v = m.get("sticky")) d.sticky_cookie = parse_sticky(ctx, *v, m, d.strategy);
  return d;
}

struct ListenerUse {
  Endpoint endpoint;
  std::string path;
  int line;
};

std::optional<Service> parse_service(Ctx& ctx, const std::string& name, const YAML::Node& n,
                                     const std::string& path, const Pipeline& pipeline,
                                     std::vector<ListenerUse>& listeners) {
  Map m(ctx, n, path);
  if (!m.valid()) return std::nullopt;
  m.allow(
      {"artifact", "driver", "task", "listeners", "load_balancing", "target_health", "deployment"});
  Service s;
  s.name = name;
  if (const auto* v = m.get("driver")) {
    if (auto d = read_enum<Driver>(ctx, *v, m.sub("driver"),
                                   {{"process", Driver::Process}, {"podman", Driver::Podman}})) {
      s.driver = *d;
    }
  }
  const auto* artifact = s.driver == Driver::Process
                             ? m.require("artifact", "the stage whose artifacts the tasks run from")
                             : m.get("artifact");
  if (artifact) {
    if (auto a = read_nonempty(ctx, *artifact, m.sub("artifact"))) {
      auto it = std::find_if(pipeline.stages.begin(), pipeline.stages.end(),
                             [&](const Stage& st) { return st.name == *a; });
      if (it == pipeline.stages.end()) {
        std::vector<std::string> with;
        for (const auto& st : pipeline.stages) {
          if (!st.artifacts.empty()) with.push_back(st.name);
        }
        ctx.error(*artifact, m.sub("artifact") + ": no stage named " + quote(*a) +
                                 " (stages with artifacts: " +
                                 (with.empty() ? std::string("none") : join(with)) + ")");
      } else if (it->artifacts.empty()) {
        ctx.error(*artifact, m.sub("artifact") + ": stage " + quote(*a) +
                                 " has no artifacts (add artifacts: [paths] to it)");
      } else {
        s.artifact = *a;
      }
    }
  }
  if (const auto* v = m.require("task", "containers and count")) {
    s.task = parse_task(ctx, *v, m.sub("task"), s.driver);
  }
  if (const auto* v = m.require("listeners", "production: host:port")) {
    Map l(ctx, *v, m.sub("listeners"));
    l.allow({"production", "test"});
    auto use = [&](std::string_view key) -> std::optional<Listener> {
      const auto* node = key == "production" ? l.require(key) : l.get(key);
      if (!node) return std::nullopt;
      auto listener = parse_listener(ctx, *node, l.sub(key));
      if (!listener) return std::nullopt;
      // Every address this listener binds: its own, and its redirect listener's.
      struct Bind {
        ListenerUse use;
        YAML::Node at;
      };
      std::vector<Bind> binds;
      const YAML::Node address_at = node->IsMap() ? (*node)["address"] : *node;
      binds.push_back(
          {{Endpoint{listener->address, listener->host, listener->port},
            node->IsMap() ? l.sub(key) + ".address" : l.sub(key), address_at.Mark().line + 1},
           address_at});
      if (listener->redirect_http) {
        const YAML::Node redirect_at = (*node)["redirect_http"];
        binds.push_back(
            {{*listener->redirect_http, l.sub(key) + ".redirect_http", redirect_at.Mark().line + 1},
             redirect_at});
      }
      for (const auto& b : binds) {
        for (const auto& u : listeners) {
          if (conflicts(u.endpoint, b.use.endpoint)) {
            ctx.error(b.at, b.use.path + ": address " + b.use.endpoint.address +
                                " conflicts with " + u.path + " (" + u.endpoint.address +
                                ", line " + std::to_string(u.line) + ")");
            return std::nullopt;
          }
        }
      }
      for (auto& b : binds) listeners.push_back(std::move(b.use));
      return listener;
    };
    if (auto p = use("production")) s.listeners.production = *p;
    s.listeners.test = use("test");
  }
  if (const auto* v = m.get("load_balancing")) {
    if (auto lb = read_enum<LoadBalancing>(
            ctx, *v, m.sub("load_balancing"),
            {{"round_robin", LoadBalancing::RoundRobin},
             {"least_outstanding_requests", LoadBalancing::LeastOutstandingRequests}})) {
      s.load_balancing = *lb;
    }
  }
  if (const auto* v = m.get("target_health")) {
    s.target_health = parse_target_health(ctx, *v, m.sub("target_health"));
  }
  if (const auto* v = m.get("deployment")) {
    s.deployment = parse_deployment(ctx, *v, m.sub("deployment"));
    const Deployment& d = s.deployment;
    // ECS rounding: at most floor(count * max_percent / 100) tasks run, at least
    // ceil(count * min_healthy_percent / 100) stay healthy; with no room between the two, no
    // task can be replaced (100/100 has its own message in parse_deployment).
    const int most = s.task.count * d.max_percent / 100;
    const int least = (s.task.count * d.min_healthy_percent + 99) / 100;
    if (d.strategy == Strategy::Rolling && most <= least &&
        !(d.min_healthy_percent == 100 && d.max_percent == 100)) {
      ctx.error(*v, m.sub("deployment") + ": with task count " + std::to_string(s.task.count) +
                        ", min_healthy_percent " + std::to_string(d.min_healthy_percent) +
                        " and max_percent " + std::to_string(d.max_percent) +
                        " leave no room to replace a task (at most " + std::to_string(most) +
                        " running, at least " + std::to_string(least) +
                        " healthy); lower min_healthy_percent or raise max_percent");
    }
  }
  return s;
}

// ----------------------------------------------------------------------------- notifications ---

std::vector<Notification> parse_notifications(Ctx& ctx, const YAML::Node& n) {
  std::vector<Notification> out;
  if (n.IsNull()) return out;
  if (!n.IsSequence()) {
    ctx.error(n,
              "notifications must be a list of {url, format, events, secret}, got " + describe(n));
    return out;
  }
  for (size_t i = 0; i < n.size(); ++i) {
    const YAML::Node item = n[i];
    const std::string path = "notifications[" + std::to_string(i) + "]";
    Map m(ctx, item, path);
    if (!m.valid()) continue;
    m.allow({"url", "url_secret", "format", "events", "secret"});
    Notification note;
    const auto* url = m.get("url");
    const auto* url_secret = m.get("url_secret");
    if (url && url_secret) {
      ctx.error(*url_secret, path + ": give url or url_secret, not both");
    } else if (!url && !url_secret) {
      ctx.error(item, path + ".url is required (or url_secret: a secret holding the URL)");
    }
    if (url) {
      if (auto s = read_nonempty(ctx, *url, m.sub("url"))) {
        if (auto u = core::parse_http_url(*s); !u) {
          ctx.error(*url, m.sub("url") + " " + u.error().message);
        } else {
          note.url = *s;
        }
      }
    }
    for (auto [key, field] :
         {std::pair{"url_secret", &note.url_secret}, std::pair{"secret", &note.secret}}) {
      const auto* v = m.get(key);
      if (!v) continue;
      if (auto s = read_string(ctx, *v, m.sub(key))) {
        if (!is_secret_name(*s)) {
          ctx.error(*v, m.sub(key) + " must be a secret name (" + std::string(kSecretRule) +
                            "), got " + quote(*s));
        } else {
          *field = *s;
        }
      }
    }
    if (const auto* v = m.get("format")) {
      if (auto f = read_enum<NotificationFormat>(
              ctx, *v, m.sub("format"),
              {{"json", NotificationFormat::Json}, {"slack", NotificationFormat::Slack}})) {
        note.format = *f;
      }
    }
    if (const auto* v = m.get("events")) {
      auto events = read_string_list(ctx, *v, m.sub("events"), false);
      for (size_t j = 0; j < events.size(); ++j) {
        const auto known =
            std::find(std::begin(kNotificationEvents), std::end(kNotificationEvents), events[j]);
        if (known == std::end(kNotificationEvents)) {
          std::vector<std::string_view> names(std::begin(kNotificationEvents),
                                              std::end(kNotificationEvents));
          ctx.error(v->IsSequence() ? (*v)[j] : *v, m.sub("events") + "[" + std::to_string(j) +
                                                        "] must be one of " + join(names, " | ") +
                                                        ", got " + quote(events[j]));
        } else {
          note.events.push_back(events[j]);
        }
      }
      if (v->IsSequence() && v->size() == 0) {
        ctx.error(*v, m.sub("events") + " is empty; leave it out to receive every event");
      }
    }
    out.push_back(std::move(note));
  }
  return out;
}

// ------------------------------------------------------------------------------------- root ---

std::shared_ptr<Config> parse_root(Ctx& ctx, const YAML::Node& doc) {
  auto config = std::make_shared<Config>();
  if (doc.IsNull()) {
    ctx.error(YAML::Mark(),
              "the file is empty; expected a mapping with version, pipeline and "
              "services");
    return config;
  }
  Map root(ctx, doc, "");
  if (!root.valid()) return config;
  root.allow({"version", "pipeline", "services", "notifications"});
  if (const auto* v = root.get("notifications")) {
    config->notifications = parse_notifications(ctx, *v);
  }
  if (const auto* v = root.require("version", "version: 1")) {
    if (!v->IsScalar() || v->Scalar() != "1") {
      ctx.error(*v, "version must be 1 (the only format this cutover reads), got " + describe(*v));
    }
  }
  if (const auto* v = root.require("pipeline", "trigger and stages")) {
    if (auto p = parse_pipeline(ctx, *v)) config->pipeline = std::move(*p);
  }
  if (const auto* v = root.get("services")) {
    Map services(ctx, *v, "services", true);
    std::vector<ListenerUse> listeners;
    for (const auto& e : services.entries()) {
      if (!is_object_name(e.key)) {
        ctx.error(e.key_node, "services: invalid service name " + quote(e.key) + " (" +
                                  std::string(kNameRule) + ")");
        continue;
      }
      if (auto s = parse_service(ctx, e.key, e.value, "services." + e.key, config->pipeline,
                                 listeners)) {
        config->services.push_back(std::move(*s));
      }
    }
  }
  return config;
}

// Records where each document starts; ignores everything else.
class DocumentStarts final : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark& mark) override { starts.push_back(mark); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}

  std::vector<YAML::Mark> starts;
};

// Where a second document starts, if the text has more than one. At most two documents are
// parsed, so this stays bounded on inputs that make yaml-cpp produce documents without end.
std::optional<YAML::Mark> second_document(const std::string& text) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  DocumentStarts starts;
  if (!parser.HandleNextDocument(starts)) return std::nullopt;
  if (!parser.HandleNextDocument(starts) || starts.starts.size() < 2) return std::nullopt;
  YAML::Mark m = starts.starts[1];
  if (m.pos < 0 || static_cast<size_t>(m.pos) >= text.size()) m.pos = 0;
  return m;
}

constexpr size_t kMaxReportedErrors = 100;

core::Error format_errors(std::vector<Diag> diags, std::string_view file_name) {
  std::stable_sort(diags.begin(), diags.end(), [](const Diag& a, const Diag& b) {
    return std::tie(a.line, a.column) < std::tie(b.line, b.column);
  });
  std::string out;
  const size_t shown = std::min(diags.size(), kMaxReportedErrors);
  for (size_t i = 0; i < shown; ++i) {
    if (!out.empty()) out += '\n';
    out += std::string(file_name) + ":" + std::to_string(diags[i].line) + ":" +
           std::to_string(diags[i].column) + ": " + diags[i].message;
  }
  if (diags.size() > shown) {
    out += "\n" + std::string(file_name) + ": " + std::to_string(diags.size() - shown) +
           " more errors not shown";
  }
  return core::Error(std::move(out));
}

}  // namespace

// ---------------------------------------------------------------------------------- public ---

const std::vector<std::string>& stage_variables() {
  static const std::vector<std::string> kVars = {"COMMIT_SHA", "COMMIT_SHORT", "BRANCH",
                                                 "EXECUTION_ID", "WORKSPACE"};
  return kVars;
}

const std::vector<std::string>& task_variables() {
  // COMMIT_SHA and COMMIT_SHORT too: DESIGN.md §2 tags images with ${COMMIT_SHORT}.
  static const std::vector<std::string> kVars = {"PORT",  "SERVICE",    "REVISION",    "TASK_ID",
                                                 "COLOR", "COMMIT_SHA", "COMMIT_SHORT"};
  return kVars;
}

const std::vector<std::string>& hook_variables() {
  static const std::vector<std::string> kVars = {"TEST_URL", "PRODUCTION_URL", "DEPLOYMENT_ID",
                                                 "SERVICE",  "REVISION",       "PHASE"};
  return kVars;
}

std::string expand_variables(std::string_view text,
                             const std::map<std::string, std::string>& vars) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '$' && i + 2 < text.size() && text[i + 1] == '$' && text[i + 2] == '{') {
      out += "${";
      i += 2;
      continue;
    }
    if (text[i] == '$' && i + 1 < text.size() && text[i + 1] == '{') {
      size_t close = text.find('}', i + 2);
      if (close != std::string_view::npos) {
        auto it = vars.find(std::string(text.substr(i + 2, close - i - 2)));
        if (it != vars.end()) {
          out += it->second;
          i = close;
          continue;
        }
      }
    }
    out += text[i];
  }
  return out;
}

std::vector<TrafficStep> traffic_schedule(const Traffic& traffic) {
  std::vector<TrafficStep> out;
  switch (traffic.type) {
    case TrafficType::AllAtOnce:
      break;
    case TrafficType::Canary:
      if (traffic.percent < 100) out.push_back({traffic.percent, traffic.interval});
      break;
    case TrafficType::Linear:
      for (int w = traffic.percent; w < 100 && traffic.percent > 0; w += traffic.percent) {
        out.push_back({w, traffic.interval});
      }
      break;
    case TrafficType::Steps:
      for (const auto& s : traffic.steps) {
        if (s.weight < 100) out.push_back(s);
      }
      break;
  }
  out.push_back({100, 0s});
  return out;
}

const Service* Config::find_service(std::string_view name) const {
  for (const auto& s : services) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

const Stage* Config::find_stage(std::string_view name) const {
  for (const auto& s : pipeline.stages) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

core::Result<std::shared_ptr<const Config>> parse_config(std::string_view yaml_text,
                                                         std::string_view file_name,
                                                         const ParseOptions& options) {
  Ctx ctx;
  ctx.check_files = options.check_files;
  std::shared_ptr<Config> config;
  try {
    const std::string text(yaml_text);
    // Not YAML::LoadAll: in yaml-cpp 0.7 it loops forever, allocating, on input such as ","
    // (jbeder/yaml-cpp#1040, fixed upstream by #1319). Load reads the first document; a bounded
    // second pass finds out whether anything follows it.
    const YAML::Node doc = YAML::Load(text);
    if (auto second = second_document(text)) {
      if (text.compare(second->pos, 3, "---") == 0) {
        ctx.error(*second, "only one YAML document is allowed in the file");
      } else {
        ctx.error(*second, "invalid YAML: unexpected " +
                               quote(std::string_view(text).substr(second->pos, 1)));
      }
    } else {
      config = parse_root(ctx, doc);
    }
  } catch (const YAML::Exception& e) {
    ctx.diags.clear();
    ctx.error(e.mark, "invalid YAML: " + e.msg);
  } catch (const std::exception& e) {
    ctx.diags.clear();
    ctx.error(YAML::Mark(), std::string("invalid YAML: ") + e.what());
  }
  if (!ctx.diags.empty() || !config) return format_errors(std::move(ctx.diags), file_name);
  return std::shared_ptr<const Config>(std::move(config));
}

core::Result<std::shared_ptr<const Config>> load_config(const std::filesystem::path& path,
                                                        const ParseOptions& options) {
  auto text = core::read_file(path);
  if (!text) return text.error();
  return parse_config(*text, path.string(), options);
}

std::string_view to_string(StageKind v) {
  switch (v) {
    case StageKind::Run:
      return "run";
    case StageKind::Scan:
      return "scan";
    case StageKind::Approval:
      return "approval";
  }
  return "?";
}

std::string_view to_string(Strategy v) { return v == Strategy::Rolling ? "rolling" : "blue_green"; }

std::string_view to_string(TrafficType v) {
  switch (v) {
    case TrafficType::AllAtOnce:
      return "all_at_once";
    case TrafficType::Canary:
      return "canary";
    case TrafficType::Linear:
      return "linear";
    case TrafficType::Steps:
      return "steps";
  }
  return "?";
}

std::string_view to_string(Metric v) {
  switch (v) {
    case Metric::HttpRequests:
      return "http_requests";
    case Metric::Http2xx:
      return "http_2xx";
    case Metric::Http4xx:
      return "http_4xx";
    case Metric::Http5xx:
      return "http_5xx";
    case Metric::ErrorRate:
      return "error_rate";
    case Metric::LatencyP50:
      return "latency_p50";
    case Metric::LatencyP90:
      return "latency_p90";
    case Metric::LatencyP99:
      return "latency_p99";
    case Metric::UpstreamErrors:
      return "upstream_errors";
  }
  return "?";
}

std::string_view to_string(Comparison v) {
  switch (v) {
    case Comparison::Greater:
      return ">";
    case Comparison::GreaterOrEqual:
      return ">=";
    case Comparison::Less:
      return "<";
    case Comparison::LessOrEqual:
      return "<=";
  }
  return "?";
}

std::string_view to_string(Driver v) { return v == Driver::Podman ? "podman" : "process"; }

std::string_view to_string(LoadBalancing v) {
  return v == LoadBalancing::LeastOutstandingRequests ? "least_outstanding_requests"
                                                      : "round_robin";
}

}  // namespace cutover::config
