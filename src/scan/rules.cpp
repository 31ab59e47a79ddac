// The gitleaks TOML rule loader (toml++). Unknown keys are errors, like in cutover.yaml: a typo in
// an allowlist must not silently let a secret through.
#include <re2/re2.h>

#include <toml++/toml.h>
#include <algorithm>
#include <map>

#include "core/fs.hpp"
#include "scan/scan.hpp"

namespace cutover::scan {

namespace fs = std::filesystem;
using core::Error;
using core::Result;

namespace {

constexpr int kMaxExtendDepth = 2;  // as gitleaks: a config may extend one that extends one more

class Loader {
 public:
  explicit Loader(std::string origin) : origin_(std::move(origin)) {}

  Error error_at(const toml::node& node, const std::string& what) const {
    const auto& src = node.source();
    if (src.begin.line == 0) return Error(origin_ + ": " + what);
    return Error(origin_ + ":" + std::to_string(src.begin.line) + ":" +
                 std::to_string(src.begin.column) + ": " + what);
  }

  Result<std::string> string(const toml::node& node, const std::string& where) const {
    if (auto v = node.value<std::string>(); v && node.is_string()) return *v;
    return error_at(node, where + " must be a string");
  }

  Result<std::vector<std::string>> strings(const toml::node& node, const std::string& where) const {
    const auto* arr = node.as_array();
    if (arr == nullptr) return error_at(node, where + " must be an array of strings");
    std::vector<std::string> out;
    for (const auto& item : *arr) {
      auto s = string(item, where + "[]");
      if (!s) return s.error();
      out.push_back(std::move(*s));
    }
    return out;
  }

  Result<void> check_regex(const toml::node& node, const std::string& where,
                           const std::string& pattern) const {
    RE2::Options opts;
    opts.set_log_errors(false);
    RE2 re(pattern, opts);
    if (!re.ok()) return error_at(node, where + ": invalid regex: " + re.error());
    return {};
  }

  Result<Allowlist> allowlist(const toml::node& node, const std::string& where,
                              std::vector<std::string>* target_rules) const {
    const auto* t = node.as_table();
    if (t == nullptr) return error_at(node, where + " must be a table");
    Allowlist a;
    for (const auto& [key, value] : *t) {
      const std::string k(key.str());
      const std::string w = where + "." + k;
      if (k == "description") {
        auto s = string(value, w);
        if (!s) return s.error();
        a.description = *s;
      } else if (k == "condition") {
        auto s = string(value, w);
        if (!s) return s.error();
        std::string u = *s;
        std::transform(u.begin(), u.end(), u.begin(), ::toupper);
        if (u == "OR") {
          a.condition = AllowlistCondition::Or;
        } else if (u == "AND" || u == "&&") {
          a.condition = AllowlistCondition::And;
        } else {
          return error_at(value, w + " must be \"OR\" or \"AND\", got \"" + *s + "\"");
        }
      } else if (k == "regexTarget") {
        auto s = string(value, w);
        if (!s) return s.error();
        if (*s == "secret" || s->empty()) {
          a.regex_target = RegexTarget::Secret;
        } else if (*s == "match") {
          a.regex_target = RegexTarget::Match;
        } else if (*s == "line") {
          a.regex_target = RegexTarget::Line;
        } else {
          return error_at(value, w + " must be secret, match or line, got \"" + *s + "\"");
        }
      } else if (k == "regexes" || k == "paths" || k == "stopwords" || k == "commits" ||
                 (k == "targetRules" && target_rules != nullptr)) {
        auto list = strings(value, w);
        if (!list) return list.error();
        if (k == "regexes" || k == "paths") {
          const auto* arr = value.as_array();
          for (size_t i = 0; i < list->size(); ++i) {
            if (auto r = check_regex(*arr->get(i), w, (*list)[i]); !r) return r.error();
          }
        }
        if (k == "regexes") a.regexes = std::move(*list);
        if (k == "paths") a.paths = std::move(*list);
        if (k == "stopwords") a.stopwords = std::move(*list);
        if (k == "commits") a.commits = std::move(*list);
        if (k == "targetRules") *target_rules = std::move(*list);
      } else {
        return error_at(value, w +
                                   ": unknown key (expected description, condition, regexTarget, "
                                   "regexes, paths, stopwords, commits" +
                                   std::string(target_rules ? ", targetRules" : "") + ")");
      }
    }
    if (a.regexes.empty() && a.paths.empty() && a.stopwords.empty() && a.commits.empty()) {
      return error_at(node,
                      where + " must list at least one of regexes, paths, stopwords, commits");
    }
    return a;
  }

  Result<Rule> rule(const toml::node& node, const std::string& where) const {
    const auto* t = node.as_table();
    if (t == nullptr) return error_at(node, where + " must be a table");
    Rule r;
    for (const auto& [key, value] : *t) {
      const std::string k(key.str());
      const std::string w = where + "." + k;
      if (k == "id" || k == "description" || k == "regex" || k == "path") {
        auto s = string(value, w);
        if (!s) return s.error();
        if (k == "regex" || k == "path") {
          if (auto c = check_regex(value, w, *s); !c) return c.error();
        }
        (k == "id"            ? r.id
         : k == "description" ? r.description
         : k == "regex"       ? r.regex
                              : r.path) = *s;
      } else if (k == "secretGroup") {
        auto v = value.value<int64_t>();
        if (!v || !value.is_integer() || *v < 0 || *v > 100) {
          return error_at(value, w + " must be an integer 0-100");
        }
        r.secret_group = static_cast<int>(*v);
      } else if (k == "entropy") {
        auto v = value.value<double>();
        if (!v || !(value.is_integer() || value.is_floating_point()) || *v < 0 || *v > 8) {
          return error_at(value, w + " must be a number 0-8 (bits per byte)");
        }
        r.entropy = *v;
      } else if (k == "keywords" || k == "tags") {
        auto list = strings(value, w);
        if (!list) return list.error();
        if (k == "keywords") {
          for (auto& kw : *list) {
            if (kw.empty()) return error_at(value, w + ": a keyword must not be empty");
            std::transform(kw.begin(), kw.end(), kw.begin(), ::tolower);
          }
          r.keywords = std::move(*list);
        } else {
          r.tags = std::move(*list);
        }
      } else if (k == "allowlist") {
        auto a = allowlist(value, w, nullptr);
        if (!a) return a.error();
        r.allowlists.push_back(std::move(*a));
      } else if (k == "allowlists") {
        const auto* arr = value.as_array();
        if (arr == nullptr) return error_at(value, w + " must be an array of tables");
        for (const auto& item : *arr) {
          auto a = allowlist(item, w + "[]", nullptr);
          if (!a) return a.error();
          r.allowlists.push_back(std::move(*a));
        }
      } else {
        return error_at(value, w + ": unknown key (expected id, description, regex, secretGroup, "
                                   "entropy, keywords, path, tags, allowlist, allowlists)");
      }
    }
    if (r.id.empty()) return error_at(node, where + ": id is required");
    if (r.secret_group > 0) {
      RE2 re(r.regex);
      if (r.secret_group > re.NumberOfCapturingGroups()) {
        return error_at(node, where + " (" + r.id + "): secretGroup " +
                                  std::to_string(r.secret_group) + " but the regex has " +
                                  std::to_string(re.NumberOfCapturingGroups()) + " groups");
      }
    }
    return r;
  }

  Result<RuleSet> parse(std::string_view text, const fs::path& base_dir, int depth) const {
    toml::table root;
    try {
      root = toml::parse(text, origin_);
    } catch (const toml::parse_error& e) {
      return Error(origin_ + ":" + std::to_string(e.source().begin.line) + ":" +
                   std::to_string(e.source().begin.column) + ": " + std::string(e.description()));
    }
    RuleSet set;
    std::optional<RuleSet> base;
    std::vector<std::string> disabled;
    std::map<std::string, std::vector<Allowlist>> targeted;
    std::map<std::string, Error> incomplete;
    for (const auto& [key, value] : root) {
      const std::string k(key.str());
      if (k == "title" || k == "description" || k == "minVersion") {
        if (auto s = string(value, k); !s) return s.error();
      } else if (k == "extend") {
        const auto* t = value.as_table();
        if (t == nullptr) return error_at(value, "extend must be a table");
        bool use_default = false;
        std::string path;
        for (const auto& [ek, ev] : *t) {
          const std::string e(ek.str());
          if (e == "useDefault") {
            if (!ev.is_boolean()) return error_at(ev, "extend.useDefault must be true or false");
            use_default = *ev.value<bool>();
          } else if (e == "path") {
            auto s = string(ev, "extend.path");
            if (!s) return s.error();
            path = *s;
          } else if (e == "disabledRules") {
            auto list = strings(ev, "extend.disabledRules");
            if (!list) return list.error();
            disabled = std::move(*list);
          } else {
            return error_at(
                ev, "extend." + e + ": unknown key (expected useDefault, path, disabledRules)");
          }
        }
        if (use_default && !path.empty()) {
          return error_at(value, "extend: useDefault and path cannot both be set");
        }
        if (use_default) base = default_rules();
        if (!path.empty()) {
          if (depth >= kMaxExtendDepth) {
            return error_at(value, "extend.path: configurations extend each other more than " +
                                       std::to_string(kMaxExtendDepth) + " levels deep");
          }
          fs::path p = fs::path(path).is_absolute() ? fs::path(path) : base_dir / path;
          auto content = core::read_file(p);
          if (!content) return error_at(value, "extend.path: " + content.error().message);
          auto parsed = Loader(p.string()).parse(*content, p.parent_path(), depth + 1);
          if (!parsed) return parsed.error();
          base = std::move(*parsed);
        }
      } else if (k == "rules") {
        const auto* arr = value.as_array();
        if (arr == nullptr) return error_at(value, "rules must be an array of tables ([[rules]])");
        for (size_t i = 0; i < arr->size(); ++i) {
          auto r = rule(*arr->get(i), "rules[" + std::to_string(i) + "]");
          if (!r) return r.error();
          for (const auto& other : set.rules) {
            if (other.id == r->id) {
              return error_at(*arr->get(i),
                              "rules[" + std::to_string(i) + "]: duplicate id \"" + r->id + "\"");
            }
          }
          if (r->regex.empty() && r->path.empty()) {
            // Only an override of an extended rule may leave both out: checked after the merge.
            incomplete[r->id] =
                error_at(*arr->get(i), "rules[" + std::to_string(i) + "] (" + r->id +
                                           "): needs a regex, a path or both");
          }
          set.rules.push_back(std::move(*r));
        }
      } else if (k == "allowlist") {
        auto a = allowlist(value, "allowlist", nullptr);
        if (!a) return a.error();
        set.allowlists.push_back(std::move(*a));
      } else if (k == "allowlists") {
        const auto* arr = value.as_array();
        if (arr == nullptr) return error_at(value, "allowlists must be an array of tables");
        for (const auto& item : *arr) {
          std::vector<std::string> targets;
          auto a = allowlist(item, "allowlists[]", &targets);
          if (!a) return a.error();
          if (targets.empty()) {
            set.allowlists.push_back(std::move(*a));
          } else {
            for (const auto& id : targets) targeted[id].push_back(*a);
          }
        }
      } else {
        return error_at(value, k + ": unknown key (expected title, extend, rules, allowlist, "
                                   "allowlists)");
      }
    }
    if (base) {
      for (const auto& b : base->rules) incomplete.erase(b.id);
      set = merge(std::move(*base), std::move(set));
    }
    if (!incomplete.empty()) return incomplete.begin()->second;
    for (const auto& id : disabled) {
      std::erase_if(set.rules, [&](const Rule& r) { return r.id == id; });
    }
    for (auto& target : targeted) {
      const std::string& id = target.first;  // not a binding: clang 14 cannot capture one
      auto& lists = target.second;
      auto it = std::find_if(set.rules.begin(), set.rules.end(),
                             [&](const Rule& r) { return r.id == id; });
      if (it == set.rules.end()) {
        return Error(origin_ + ": allowlists: targetRules names unknown rule \"" + id + "\"");
      }
      for (auto& a : lists) it->allowlists.push_back(std::move(a));
    }
    return set;
  }

  // gitleaks' extend: the base's rules stay; a rule of the extending file with the same id
  // overrides what it sets and adds its keywords, tags and allowlists.
  static RuleSet merge(RuleSet base, RuleSet own) {
    for (auto& r : own.rules) {
      auto it = std::find_if(base.rules.begin(), base.rules.end(),
                             [&](const Rule& b) { return b.id == r.id; });
      if (it == base.rules.end()) {
        base.rules.push_back(std::move(r));
        continue;
      }
      if (!r.description.empty()) it->description = r.description;
      if (!r.regex.empty()) {
        it->regex = r.regex;
        it->secret_group = r.secret_group;
      }
      if (!r.path.empty()) it->path = r.path;
      if (r.entropy != 0) it->entropy = r.entropy;
      for (auto& kw : r.keywords) it->keywords.push_back(std::move(kw));
      for (auto& t : r.tags) it->tags.push_back(std::move(t));
      for (auto& a : r.allowlists) it->allowlists.push_back(std::move(a));
    }
    for (auto& a : own.allowlists) base.allowlists.push_back(std::move(a));
    return base;
  }

 private:
  std::string origin_;
};

}  // namespace

Result<RuleSet> parse_rules(std::string_view toml, std::string_view origin,
                            const fs::path& base_dir) {
  return Loader(std::string(origin)).parse(toml, base_dir, 0);
}

Result<RuleSet> load_rules(const fs::path& file) {
  auto content = core::read_file(file);
  if (!content) return content.error();
  return parse_rules(*content, file.string(), file.parent_path());
}

}  // namespace cutover::scan
