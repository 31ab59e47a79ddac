// `scan: config`: policy checks on cutover.yaml. The config module decides whether the file is
// valid; these checks decide whether a valid file is a safe one. scan depends on core only
// (DESIGN.md §3), so this reads the YAML tree itself with yaml-cpp and is lenient about shapes
// the validator rejects anyway: a check that does not find what it looks for stays silent.
#include <yaml-cpp/yaml.h>

#include <sstream>

#include "core/fs.hpp"
#include "scan/scan.hpp"

namespace cutover::scan {

namespace fs = std::filesystem;
using core::Error;
using core::Result;

namespace {

class Checker {
 public:
  explicit Checker(const Scanner& secrets) : secrets_(secrets) {}

  void add(const YAML::Node& at, std::string id, std::string severity, std::string where,
           std::string message, std::string fix) {
    ConfigFinding f;
    f.id = std::move(id);
    f.severity = std::move(severity);
    f.where = std::move(where);
    f.line = at.Mark().line + 1;
    f.column = at.Mark().column + 1;
    f.message = std::move(message);
    f.fix = std::move(fix);
    out.push_back(std::move(f));
  }

  static std::string str(const YAML::Node& n) {
    return n && n.IsScalar() ? n.Scalar() : std::string();
  }

  // An address that other hosts can reach: not loopback, not a Unix socket.
  static bool is_public(const std::string& address) {
    std::string host = address;
    if (auto colon = host.rfind(':'); colon != std::string::npos) host = host.substr(0, colon);
    if (!host.empty() && host.front() == '[') host = host.substr(1, host.size() - 2);
    return !(host.rfind("127.", 0) == 0 || host == "localhost" || host == "::1");
  }

  void env(const YAML::Node& env, const std::string& where) {
    if (!env || !env.IsMap()) return;
    for (const auto& kv : env) {
      const std::string name = str(kv.first);
      const std::string value = str(kv.second);
      if (value.empty() || value.find("${") != std::string::npos) continue;
      // The secret scanner's rules on "NAME=value", as if it were a line of a .env file.
      auto found = secrets_.scan_text(name + "=" + value + "\n", "cutover.yaml");
      std::string upper = name;
      for (auto& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
      const bool named = upper.find("PASSWORD") != std::string::npos ||
                         upper.find("SECRET") != std::string::npos ||
                         upper.find("TOKEN") != std::string::npos ||
                         upper.find("API_KEY") != std::string::npos ||
                         upper.find("PRIVATE_KEY") != std::string::npos;
      if (!found.empty() || named) {
        add(kv.second, "CFG001", "high", where + "." + name,
            "env " + name + " holds a literal " +
                (found.empty() ? std::string("and is named like a secret")
                               : "that looks like a secret (" + found[0].rule_id + ")") +
                ": it ends up in the repository, the logs of `cutover validate` and every task",
            "move it to `secrets: { " + name + ": <name in the secret store> }`");
      }
    }
  }

  void container(const YAML::Node& c, const std::string& where) {
    env(c["env"], where + ".env");
    if (const auto image = c["image"]; image && image.IsScalar()) {
      const std::string ref = image.Scalar();
      const size_t slash = ref.rfind('/');
      const std::string last = slash == std::string::npos ? ref : ref.substr(slash + 1);
      if (ref.find("@sha256:") == std::string::npos) {
        if (last.find(':') == std::string::npos) {
          add(image, "CFG002", "medium", where + ".image",
              "image " + ref + " has no tag: it runs whatever :latest is at start time",
              "pin a tag that never moves (${COMMIT_SHORT}) or a digest (@sha256:...)");
        } else if (last.substr(last.find(':') + 1) == "latest") {
          add(image, "CFG002", "medium", where + ".image",
              "image " + ref + " uses the mutable tag latest",
              "pin a tag that never moves (${COMMIT_SHORT}) or a digest (@sha256:...)");
        }
      }
    }
    if (!c["health"]) {
      add(c, "CFG003", "medium", where,
          "container " + str(c["name"]) + " has no health check: a hung process keeps its traffic",
          "add `health: { http: /health }` (or command/tcp)");
    }
  }

  void service(const std::string& name, const YAML::Node& s) {
    const std::string where = "services." + name;
    if (const auto containers = s["task"]["containers"]; containers && containers.IsSequence()) {
      for (size_t i = 0; i < containers.size(); ++i) {
        container(containers[i], where + ".task.containers[" + std::to_string(i) + "]");
      }
    }
    if (const auto listeners = s["listeners"]; listeners && listeners.IsMap()) {
      const auto prod = listeners["production"];
      if (prod && prod.IsScalar() && is_public(prod.Scalar())) {
        add(prod, "CFG004", "high", where + ".listeners.production",
            "production listener " + prod.Scalar() + " is reachable from other hosts without TLS",
            "terminate TLS: `production: { address: ..., tls: { cert: ..., key: ... } }`, or "
            "listen on 127.0.0.1 behind another TLS terminator");
      }
      const auto test = listeners["test"];
      const std::string test_addr = test && test.IsMap() ? str(test["address"]) : str(test);
      if (!test_addr.empty() && is_public(test_addr)) {
        add(test, "CFG006", "high", where + ".listeners.test",
            "test listener " + test_addr +
                " is reachable from other hosts: users can reach a version before it is approved",
            "bind it to 127.0.0.1");
      }
    }
    const auto deployment = s["deployment"];
    if (deployment && deployment.IsMap()) {
      const auto rollback = deployment["auto_rollback"];
      bool on_alarm = false;
      if (rollback && rollback.IsSequence()) {
        for (const auto& r : rollback) on_alarm = on_alarm || str(r) == "alarm";
      }
      const auto alarms = deployment["alarms"];
      if (on_alarm && (!alarms || !alarms.IsSequence() || alarms.size() == 0)) {
        add(rollback, "CFG005", "medium", where + ".deployment.auto_rollback",
            "auto_rollback lists alarm but the service has no alarms: nothing can trigger it",
            "add `alarms:` (e.g. http_5xx on green) or remove alarm from auto_rollback");
      }
    }
  }

  std::vector<ConfigFinding> out;

 private:
  const Scanner& secrets_;
};

}  // namespace

Result<std::vector<ConfigFinding>> check_config(std::string_view yaml, std::string_view origin) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    return Error(std::string(origin) + ":" + std::to_string(e.mark.line + 1) + ":" +
                 std::to_string(e.mark.column + 1) + ": " + e.msg);
  }
  static const auto secrets = Scanner::create(default_rules());
  if (!secrets) return secrets.error();
  Checker c(**secrets);
  try {
    if (const auto stages = root["pipeline"]["stages"]; stages && stages.IsSequence()) {
      for (size_t i = 0; i < stages.size(); ++i) {
        c.env(stages[i]["env"], "pipeline.stages[" + std::to_string(i) + "].env");
      }
    }
    if (const auto services = root["services"]; services && services.IsMap()) {
      for (const auto& kv : services) c.service(Checker::str(kv.first), kv.second);
    }
  } catch (const YAML::Exception& e) {
    // Shapes the validator rejects (a sequence where a map belongs...): report, do not guess.
    return Error(std::string(origin) + ":" + std::to_string(e.mark.line + 1) + ":" +
                 std::to_string(e.mark.column + 1) + ": " + e.msg +
                 " (run `cutover validate` for the details)");
  }
  return c.out;
}

std::string format_config_findings(const std::vector<ConfigFinding>& findings,
                                   std::string_view origin) {
  std::ostringstream out;
  for (const auto& f : findings) {
    out << origin << ":" << f.line << ":" << f.column << ": " << f.id << " " << f.severity << ": "
        << f.where << ": " << f.message << "\n  fix: " << f.fix << "\n";
  }
  return out.str();
}

}  // namespace cutover::scan
