#include "cli/commands.hpp"

#include <signal.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <optional>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "api/client.hpp"
#include "api/server.hpp"
#include "config/config.hpp"
#include "controller/controller.hpp"
#include "core/duration.hpp"
#include "core/fs.hpp"
#include "core/log.hpp"
#include "proxy/proxy.hpp"
#include "runtime/log_copier.hpp"
#include "scan/scan.hpp"

namespace cutover::cli {

namespace fs = std::filesystem;
using nlohmann::json;

std::string default_state_dir() {
  if (const char* env = std::getenv("CUTOVER_STATE_DIR"); env && *env) return env;
  if (::geteuid() == 0) return "/var/lib/cutover";
  const char* home = std::getenv("HOME");
  return std::string(home ? home : ".") + "/.local/state/cutover";
}

namespace {

core::LogLevel parse_level(const std::string& s) {
  if (s == "debug") return core::LogLevel::Debug;
  if (s == "warn") return core::LogLevel::Warn;
  if (s == "error") return core::LogLevel::Error;
  return core::LogLevel::Info;
}

// Blocks SIGINT/SIGTERM in every thread (call before starting any) and returns the set to wait on.
sigset_t block_stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

fs::path self_exe() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path("cutover") : p;
}

// A connected client for the read commands, or an error printed for the user.
core::Result<api::ApiClient> make_client(const ClientOptions& c) {
  const std::string dir = c.state_dir.empty() ? default_state_dir() : c.state_dir;
  auto token = core::read_file(fs::path(dir) / "api-token");
  if (!token) {
    return core::Error("cannot read the API token: " + token.error().message +
                       " (is `cutover serve` running with --state-dir " + dir + "?)");
  }
  std::string t = *token;
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r')) t.pop_back();
  std::string address = c.api;
  if (address.empty()) {
    auto recorded = core::read_file(fs::path(dir) / "api-address");
    address = recorded ? *recorded : "127.0.0.1:7070";
    while (!address.empty() && (address.back() == '\n' || address.back() == ' '))
      address.pop_back();
  }
  return api::ApiClient(address, t);
}

// method path; prints transport and API errors and returns nullopt on failure.
std::optional<json> call_json(const ClientOptions& c, std::string_view method,
                              const std::string& path, std::string_view request_body = {}) {
  auto client = make_client(c);
  if (!client) {
    std::cerr << "cutover: " << client.error().message << "\n";
    return std::nullopt;
  }
  auto res = client->request(method, path, request_body);
  if (!res) {
    std::cerr << "cutover: " << res.error().message << "\n";
    return std::nullopt;
  }
  json answer = json::parse(res->body, nullptr, false);
  if (res->status != 200 && res->status != 202) {
    std::string msg = answer.is_object() && answer.contains("error")
                          ? answer["error"].get<std::string>()
                          : res->body;
    std::cerr << "cutover: " << msg << " (HTTP " << res->status << ")\n";
    return std::nullopt;
  }
  if (answer.is_discarded()) {
    std::cerr << "cutover: the API answered with invalid JSON\n";
    return std::nullopt;
  }
  return answer;
}

std::optional<json> get_json(const ClientOptions& c, const std::string& path) {
  return call_json(c, "GET", path);
}

// Percent-encodes a path segment (keeping '/', which separates a secret name's segments).
std::string encode_path(std::string_view s) {
  std::string out;
  for (unsigned char ch : s) {
    if (std::isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~' || ch == '/') {
      out.push_back(static_cast<char>(ch));
    } else {
      out += fmt::format("%{:02X}", ch);
    }
  }
  return out;
}

std::string str(const json& j, const char* key, const char* fallback = "-") {
  if (!j.is_object() || !j.contains(key) || j[key].is_null()) return fallback;
  if (j[key].is_string()) return j[key].get<std::string>();
  return j[key].dump();
}

}  // namespace

int cmd_serve(const ServeOptions& o) {
  sigset_t stop_set = block_stop_signals();
  core::setup_logging(parse_level(o.log_level));
  auto poll = core::parse_duration(o.poll);
  if (!poll) {
    std::cerr << "cutover serve: --poll: " << poll.error().message << "\n";
    return 2;
  }
  controller::Options opts;
  opts.repo = o.repo;
  opts.branch = o.branch;
  opts.state_dir = fs::absolute(o.state_dir.empty() ? default_state_dir() : o.state_dir);
  opts.poll_interval = *poll;
  opts.registry_keep = o.registry_keep;
  opts.self_exe = self_exe();
  if (auto d = core::ensure_dir(opts.state_dir, 0700); !d) {
    std::cerr << "cutover serve: " << d.error().message << "\n";
    return 1;
  }
  auto token = api::load_or_create_token(opts.state_dir.string());
  if (!token) {
    std::cerr << "cutover serve: " << token.error().message << "\n";
    return 1;
  }
  auto ctl = controller::Controller::create(opts, core::RealClock::instance());
  if (!ctl) {
    std::cerr << "cutover serve: " << ctl.error().message << "\n";
    return 1;
  }
  api::ApiServer server(**ctl, api::ApiOptions{o.api, *token});
  if (auto r = server.start(); !r) {
    std::cerr << "cutover serve: " << r.error().message << "\n";
    return 1;
  }
  if (auto w =
          core::write_file_atomic(opts.state_dir / "api-address", server.bound_address() + "\n");
      !w) {
    core::logger()->warn("cannot record the API address: {}", w.error().message);
  }
  if (auto r = (*ctl)->start(); !r) {
    std::cerr << "cutover serve: " << r.error().message << "\n";
    server.stop();
    return 1;
  }
  core::logger()->info("serve: watching {} (branch {}), state in {}", o.repo, o.branch,
                       opts.state_dir.string());
  int sig = 0;
  sigwait(&stop_set, &sig);
  core::logger()->info("serve: {} received; stopping (tasks and the proxy keep running)",
                       sig == SIGINT ? "SIGINT" : "SIGTERM");
  server.stop();
  (*ctl)->stop();
  return 0;
}

int cmd_proxy(const ProxyCommandOptions& o) {
  core::setup_logging(core::LogLevel::Info, o.log_file);
  proxy::ProxyOptions opts;
  opts.admin_socket = o.admin_socket;
  opts.state_file = o.state_file;
  opts.workers = o.workers;
  opts.takeover = !o.no_takeover;
  auto grace = core::parse_duration(o.shutdown_grace);
  if (!grace) {
    std::cerr << "cutover proxy: --shutdown-grace: " << grace.error().message << "\n";
    return 2;
  }
  opts.shutdown_grace = std::chrono::duration_cast<std::chrono::milliseconds>(*grace);
  return proxy::run_proxy(opts);
}

int cmd_validate(const std::string& file, bool check_files) {
  auto cfg = config::load_config(file, config::ParseOptions{.check_files = check_files});
  if (!cfg) {
    std::cerr << cfg.error().message;
    if (cfg.error().message.empty() || cfg.error().message.back() != '\n') std::cerr << "\n";
    return 1;
  }
  std::size_t stages = (*cfg)->pipeline.stages.size();
  std::cout << file << ": valid (" << stages << " stage" << (stages == 1 ? "" : "s") << ", "
            << (*cfg)->services.size() << " service" << ((*cfg)->services.size() == 1 ? "" : "s")
            << ")\n";
  return 0;
}

int cmd_schema() {
  std::cout << config::json_schema();
  return 0;
}

int cmd_scan(const ScanCommandOptions& o) {
  const fs::path root(o.path);
  std::error_code ec;
  scan::RuleSet rules;
  if (!o.config.empty()) {
    auto loaded = scan::load_rules(o.config);
    if (!loaded) {
      std::cerr << "cutover scan: " << loaded.error().message << "\n";
      return 2;
    }
    rules = std::move(*loaded);
  } else if (fs::is_directory(root, ec) && fs::exists(root / ".gitleaks.toml", ec)) {
    auto loaded = scan::load_rules(root / ".gitleaks.toml");
    if (!loaded) {
      std::cerr << "cutover scan: " << loaded.error().message << "\n";
      return 2;
    }
    rules = std::move(*loaded);
  } else {
    rules = scan::default_rules();
  }
  std::set<std::string> ignored;
  if (fs::is_directory(root, ec) && fs::exists(root / ".gitleaksignore", ec)) {
    auto loaded = scan::load_ignore_file(root / ".gitleaksignore");
    if (!loaded) {
      std::cerr << "cutover scan: " << loaded.error().message << "\n";
      return 2;
    }
    ignored = std::move(*loaded);
  }
  std::optional<scan::Baseline> baseline;
  if (!o.baseline.empty()) {
    auto loaded = scan::load_baseline(o.baseline);
    if (!loaded) {
      std::cerr << "cutover scan: " << loaded.error().message << "\n";
      return 2;
    }
    baseline = std::move(*loaded);
  }
  // Compiled rule databases are cached by rule hash, like ccache: $XDG_CACHE_HOME/cutover/scan.
  fs::path cache_dir;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && *xdg != '\0') {
    cache_dir = fs::path(xdg) / "cutover" / "scan";
  } else if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
    cache_dir = fs::path(home) / ".cache" / "cutover" / "scan";
  }
  auto scanner = scan::Scanner::create(
      std::move(rules), scan::ScanOptions{.threads = o.threads, .cache_dir = cache_dir});
  if (!scanner) {
    std::cerr << "cutover scan: " << scanner.error().message << "\n";
    return 2;
  }
  auto report = o.history ? (*scanner)->scan_history(
                                root, o.since.empty() ? std::nullopt : std::optional(o.since))
                          : (*scanner)->scan_directory(root);
  if (!report) {
    std::cerr << "cutover scan: " << report.error().message << "\n";
    return 2;
  }
  scan::suppress(report->findings, ignored, baseline ? &*baseline : nullptr);
  const auto format = o.format == "json"    ? scan::Format::Json
                      : o.format == "sarif" ? scan::Format::Sarif
                                            : scan::Format::Text;
  std::cout << scan::format_report(*report, (*scanner)->rules(), format, o.redact);
  std::cout.flush();
  if (report->findings.empty() || o.mode == "report") return 0;
  return 1;
}

int cmd_status(const ClientOptions& c, const std::string& service) {
  auto j = get_json(c, service.empty() ? "/v1/status" : "/v1/status?service=" + service);
  if (!j) return 1;
  if (c.json) {
    std::cout << j->dump(2) << "\n";
    return 0;
  }
  const json& px = (*j)["proxy"];
  std::cout << fmt::format("proxy: {} (snapshot v{})\n", str(px, "status"), str(px, "version"));
  const json& last = (*j)["last_execution"];
  if (last.is_object()) {
    std::cout << fmt::format("last execution: {} {} {}{}\n", str(last, "id"), str(last, "commit"),
                             str(last, "status"),
                             last.contains("message") && last["message"].is_string() &&
                                     !last["message"].get<std::string>().empty()
                                 ? " — " + last["message"].get<std::string>()
                                 : "");
  }
  for (const auto& s : (*j)["services"]) {
    std::cout << "\n"
              << fmt::format("service {}  production {}\n", str(s, "name"),
                             str(s["listeners"], "production"));
    const json& live = s["live"];
    if (live.is_object()) {
      std::cout << fmt::format("  live:       {} ({}) as {} since {}\n", str(live, "commit"),
                               str(live, "release"), str(live, "color"), str(live, "since"));
    } else {
      std::cout << "  live:       nothing deployed yet\n";
    }
    std::cout << "  traffic:   ";
    bool any = false;
    for (const auto& [color, pct] : s["traffic"].items()) {
      std::cout << fmt::format(" {} {}%", color, pct.get<double>());
      any = true;
    }
    std::cout << (any ? "\n" : " none\n");
    const json& dep = s["deployment"];
    if (dep.is_object()) {
      std::cout << fmt::format("  deployment: {} {} {} ({}){}\n", str(dep, "id"),
                               str(dep, "commit"), str(dep, "phase"), str(dep, "status"),
                               str(dep, "reason", "").empty() ? "" : " — " + str(dep, "reason"));
      const json& state = dep["state"];
      if (str(dep, "status") == "in_progress" && state.is_object()) {
        std::string left = "-";
        if (state.contains("deadline_unix_ms") && state["deadline_unix_ms"].is_number()) {
          const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                  std::chrono::system_clock::now().time_since_epoch())
                                  .count();
          const int64_t ms =
              std::max<int64_t>(0, state["deadline_unix_ms"].get<int64_t>() - now_ms);
          left = core::format_duration(std::chrono::milliseconds(ms / 1000 * 1000));
        }
        if (str(state, "strategy", "") == "rolling") {
          std::cout << fmt::format(
              "              rolling — {}, green {}% of production, alarms "
              "{}, {} to the next deadline\n",
              str(state, "progress"), state.value("weight", 0) / 100.0, str(state, "alarms"), left);
        } else {
          std::cout << fmt::format(
              "              {} — green {}% (step {} of {}), alarms {}, {} left in this wait\n",
              str(state, "wait"), state.value("weight", 0) / 100.0, state.value("step", 0) + 1,
              str(state, "steps"), str(state, "alarms"), left);
        }
      }
    }
    std::cout << "  tasks:\n";
    for (const auto& t : s["tasks"]) {
      const int restarts = t.value("restarts", 0);
      std::cout << fmt::format(
          "    {:<16} {:<6} pid {:<8} port {:<6} {:<10} liveness {}{}\n", str(t, "id"),
          str(t, "color"), str(t, "pid"), str(t, "port"), str(t, "health"), str(t, "liveness"),
          restarts == 0
              ? ""
              : fmt::format("  restarts {} (last: {})", restarts, str(t, "last_exit", "-")));
    }
  }
  if (j->contains("webhooks") && (*j)["webhooks"].is_object()) {
    std::string line;
    for (const auto& [provider, c] : (*j)["webhooks"].items()) {
      line += fmt::format("  {} {} accepted, {} rejected", provider, str(c, "accepted"),
                          str(c, "rejected"));
    }
    std::cout << "\nwebhooks:" << line << "\n";
  }
  if (j->contains("notifications") && (*j)["notifications"].is_object()) {
    const json& n = (*j)["notifications"];
    std::cout << fmt::format("notifications: {} delivered, {} failed, {} dropped, {} pending\n",
                             str(n, "delivered"), str(n, "failed"), str(n, "dropped"),
                             str(n, "pending"));
  }
  if (j->contains("unaccounted_tasks") && !(*j)["unaccounted_tasks"].empty()) {
    std::cout << "unaccounted task processes (not started by this state's tasks; left running):\n";
    for (const auto& p : (*j)["unaccounted_tasks"]) {
      std::cout << fmt::format("  pid {:<8} claims {}\n", str(p, "pid"), str(p, "task_id"));
    }
  }
  return 0;
}

int cmd_history(const ClientOptions& c, const std::string& service) {
  auto j = get_json(c, "/v1/services/" + service + "/history");
  if (!j) return 1;
  if (c.json) {
    std::cout << j->dump(2) << "\n";
    return 0;
  }
  std::cout << fmt::format("{:<14} {:<8} {:<12} {:<16} {:<25} {}\n", "DEPLOYMENT", "COMMIT",
                           "STATUS", "PHASE", "STARTED", "REASON");
  for (const auto& d : (*j)["deployments"]) {
    std::cout << fmt::format("{:<14} {:<8} {:<12} {:<16} {:<25} {}\n", str(d, "id"),
                             str(d, "commit"), str(d, "status"), str(d, "phase"),
                             str(d, "created_at"), str(d, "reason", ""));
  }
  return 0;
}

int cmd_executions(const ClientOptions& c, int limit) {
  auto j = get_json(c, "/v1/executions?limit=" + std::to_string(limit));
  if (!j) return 1;
  if (c.json) {
    std::cout << j->dump(2) << "\n";
    return 0;
  }
  std::cout << fmt::format("{:<14} {:<8} {:<11} {:<25} {}\n", "EXECUTION", "COMMIT", "STATUS",
                           "STARTED", "MESSAGE");
  for (const auto& e : (*j)["executions"]) {
    std::string msg = str(e, "message", "");
    if (auto nl = msg.find('\n'); nl != std::string::npos) msg = msg.substr(0, nl) + " …";
    std::cout << fmt::format("{:<14} {:<8} {:<11} {:<25} {}\n", str(e, "id"), str(e, "commit"),
                             str(e, "status"), str(e, "created_at"), msg);
  }
  return 0;
}

int cmd_audit(const ClientOptions& c, int64_t after_seq, int limit) {
  auto j = get_json(c, fmt::format("/v1/audit?after={}&limit={}", after_seq, limit));
  if (!j) return 1;
  const json& chain = (*j)["chain"];
  const bool verified = chain.is_object() && chain.value("verified", false);
  if (c.json) {
    std::cout << j->dump(2) << "\n";
  } else {
    std::cout << fmt::format("{:<6} {:<25} {:<20} {:<26} {:<28} {}\n", "SEQ", "TIME", "ACTOR",
                             "ACTION", "SUBJECT", "DETAIL");
    int64_t last = after_seq;
    size_t n = 0;
    for (const auto& e : (*j)["entries"]) {
      const json& d = e["detail"];
      std::cout << fmt::format(
          "{:<6} {:<25} {:<20} {:<26} {:<28} {}\n", str(e, "seq"), str(e, "time"), str(e, "actor"),
          str(e, "action"), str(e, "subject"),
          d.is_null() ? "" : (d.is_string() ? d.get<std::string>() : d.dump()));
      last = e.value("seq", last);
      ++n;
    }
    if (n == static_cast<size_t>(limit)) {
      std::cout << fmt::format("(more may follow: cutover audit --after {})\n", last);
    }
    if (verified) std::cout << "chain: verified (every entry's hash follows from the one before)\n";
  }
  if (!verified) {
    std::cerr << "cutover audit: the audit chain does not verify: "
              << (chain.is_object() ? chain.value("error", "no verdict") : "no verdict") << "\n";
    return 3;
  }
  return 0;
}

namespace {

int execution_logs(const ClientOptions& c, const std::string& execution, bool follow) {
  int64_t after = 0;
  while (true) {
    auto j = get_json(
        c, "/v1/executions/" + execution + "/logs?limit=10000&after=" + std::to_string(after));
    if (!j) return 1;
    for (const auto& line : (*j)["lines"]) {
      std::cout << fmt::format("[{}] {}\n", str(line, "stage"), str(line, "text", ""));
      after = std::max<int64_t>(after, line["seq"].get<int64_t>());
    }
    std::cout.flush();
    // Pages of lines until there are no more; with -f, until the execution has ended too.
    const bool done = (*j).value("finished", true);
    if ((*j)["lines"].empty()) {
      if (!follow || done) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  }
  return 0;
}

int task_logs(const ClientOptions& c, const std::string& service, const std::string& task_id,
              bool follow) {
  const std::string base = "/v1/services/" + service + "/logs";
  auto j = get_json(c, base + (task_id.empty() ? "" : "?task=" + task_id));
  if (!j) return 1;
  const auto& tasks = (*j)["tasks"];
  if (tasks.empty()) {
    std::cerr << "cutover: service " << service << " has no running task\n";
    return 1;
  }
  // Several tasks: each line says which task printed it.
  const bool prefix = tasks.size() > 1;
  for (const auto& t : tasks) {
    for (const auto& line : t["lines"]) {
      if (prefix) std::cout << "[" << str(t, "id") << "] ";
      std::cout << line.get<std::string>() << "\n";
    }
  }
  std::cout.flush();
  if (!follow) return 0;
  if (prefix) {
    std::cerr << "cutover: -f follows one task: add --task ID\n";
    return 2;
  }
  const std::string id = str(tasks[0], "id");
  int64_t offset = tasks[0].value("offset", int64_t{0});
  while (true) {
    auto next = get_json(c, base + "?task=" + id + "&offset=" + std::to_string(offset));
    if (!next) return 1;
    const auto& t = (*next)["tasks"][0];
    const std::string text = t.value("text", "");
    std::cout << text;
    std::cout.flush();
    offset = t.value("offset", offset);
    if (text.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

// "7" or "web:7" -> 7; 0 when it is neither.
int64_t parse_revision(const std::string& service, std::string text) {
  if (text.rfind(service + ":", 0) == 0) text = text.substr(service.size() + 1);
  if (text.empty() || text.size() > 12 ||
      text.find_first_not_of("0123456789") != std::string::npos) {
    return 0;
  }
  return std::stoll(text);
}

}  // namespace

int cmd_logs(const ClientOptions& c, const std::string& target, const std::string& task_id,
             bool follow) {
  if (target.rfind("ex-", 0) == 0) {
    if (!task_id.empty()) {
      std::cerr << "cutover: --task is for a service's tasks, not for execution " << target << "\n";
      return 2;
    }
    return execution_logs(c, target, follow);
  }
  return task_logs(c, target, task_id, follow);
}

int cmd_task_defs(const ClientOptions& c, const std::string& service, const std::string& diff_from,
                  const std::string& diff_to) {
  if (!diff_from.empty()) {
    const int64_t a = parse_revision(service, diff_from);
    const int64_t b = parse_revision(service, diff_to);
    if (a < 1 || b < 1) {
      std::cerr << "cutover: --diff takes two revisions of " << service << ", such as 3 7 or "
                << service << ":3 " << service << ":7; got " << diff_from << " " << diff_to << "\n";
      return 2;
    }
    auto j =
        get_json(c, "/v1/services/" + service + "/task-definitions/diff?from=" + std::to_string(a) +
                        "&to=" + std::to_string(b));
    if (!j) return 1;
    if (c.json) {
      std::cout << j->dump(2) << "\n";
      return 0;
    }
    std::cout << "--- " << str(*j, "from") << "\n+++ " << str(*j, "to") << "\n";
    if ((*j)["changes"].empty()) std::cout << "(no changes)\n";
    for (const auto& line : (*j)["changes"]) std::cout << line.get<std::string>() << "\n";
    return 0;
  }
  auto j = get_json(c, "/v1/services/" + service + "/task-definitions");
  if (!j) return 1;
  if (c.json) {
    std::cout << j->dump(2) << "\n";
    return 0;
  }
  std::cout << fmt::format("{:<14} {:<8} {:<25} {:<14} {:<6} {}\n", "REVISION", "COMMIT", "CREATED",
                           "DIGEST", "COUNT", "COMMAND");
  for (const auto& r : (*j)["revisions"]) {
    const json& def = r["definition"];
    std::string command;
    if (def.contains("containers") && !def["containers"].empty()) {
      const json& first = def["containers"][0];
      const json& argv = first.contains("image") ? first["image"] : first["command"];
      command = argv.is_array() ? [&] {
        std::string joined;
        for (const auto& a : argv) joined += (joined.empty() ? "" : " ") + a.get<std::string>();
        return joined;
      }()
                                : argv.dump();
    }
    std::cout << fmt::format("{:<14} {:<8} {:<25} {:<14} {:<6} {}\n", str(r, "name"),
                             str(r, "commit"), str(r, "created_at"), str(r, "digest").substr(0, 14),
                             str(def, "count"), command);
  }
  return 0;
}

int cmd_operate(const ClientOptions& c, const std::string& action, const std::string& service) {
  const char* user = std::getenv("USER");
  const json body{{"user", std::string("cli:") + (user ? user : "unknown")}};
  auto j = call_json(c, "POST", "/v1/services/" + service + "/" + action, body.dump());
  if (!j) return 1;
  if (c.json) {
    std::cout << j->dump(2) << "\n";
    return 0;
  }
  if (j->contains("deployment")) {
    std::cout << fmt::format("{}: {} of deployment {} accepted; `cutover status {}` shows it\n",
                             service, action, str(*j, "deployment"), service);
  } else if (action == "retry") {
    std::cout << fmt::format(
        "{}: retrying {}: redeploying release {} with its traffic schedule; `cutover status {}` "
        "shows it\n",
        service, str(*j, "retries"), str(*j, "release"), service);
  } else {
    std::cout << fmt::format("{}: no deployment in progress; redeploying release {} all at once\n",
                             service, str(*j, "release"));
  }
  return 0;
}

int cmd_execution_action(const ClientOptions& c, const std::string& action,
                         const std::string& execution, const std::string& comment) {
  const char* user = std::getenv("USER");
  json body{{"user", std::string("cli:") + (user ? user : "unknown")}};
  if (!comment.empty()) body["comment"] = comment;
  auto j =
      call_json(c, "POST", "/v1/executions/" + encode_path(execution) + "/" + action, body.dump());
  if (!j) return 1;
  if (c.json) {
    std::cout << j->dump(2) << "\n";
    return 0;
  }
  if (action == "cancel") {
    std::cout << fmt::format("execution {} ({}): {}\n", execution, str(*j, "commit"),
                             str(*j, "was") == "queued"
                                 ? "cancelled before it started"
                                 : "cancelling: its commands are being stopped");
  } else {
    std::cout << fmt::format("execution {} ({}): stage {} {} by {}\n", execution, str(*j, "commit"),
                             str(*j, "stage"), str(*j, "decision"), str(*j, "user"));
  }
  return 0;
}

namespace {

// The value of `secrets set`: all of stdin, or one line typed without echo at a terminal.
// Reads at most limit + 1 bytes, so the caller can tell a value that is too long.
std::optional<std::string> read_secret_value(const std::string& name, size_t limit) {
  std::string value;
  if (::isatty(STDIN_FILENO) != 0) {
    termios saved{};
    const bool echo_off = ::tcgetattr(STDIN_FILENO, &saved) == 0;
    if (echo_off) {
      termios quiet = saved;
      quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
      ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    std::cerr << "value of " << name << " (not shown): " << std::flush;
    std::getline(std::cin, value);
    if (echo_off) ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
    std::cerr << "\n";
    return value;
  }
  char buf[4096];
  while (value.size() <= limit) {
    ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      std::cerr << "cutover secrets set: cannot read the value from stdin\n";
      return std::nullopt;
    }
    if (n == 0) break;
    value.append(buf, static_cast<size_t>(n));
  }
  return value;
}

}  // namespace

int cmd_secrets_set(const ClientOptions& c, const std::string& name, bool keep_newline) {
  constexpr size_t kLimit = 64 * 1024;  // the store's limit; it says so too
  auto value = read_secret_value(name, kLimit + 2);
  if (!value) return 1;
  if (!keep_newline && !value->empty() && value->back() == '\n') {
    value->pop_back();
    if (!value->empty() && value->back() == '\r') value->pop_back();
  }
  if (value->empty()) {
    std::cerr << "cutover secrets set: the value is empty (pipe it on stdin: "
                 "`printf %s \"$VALUE\" | cutover secrets set "
              << name << "`)\n";
    return 2;
  }
  auto j = call_json(c, "PUT", "/v1/secrets/" + encode_path(name), *value);
  std::fill(value->begin(), value->end(), '\0');
  if (!j) return 1;
  std::cout << fmt::format("secret {} set (version {})\n", str(*j, "name"), str(*j, "version"));
  return 0;
}

int cmd_secrets_list(const ClientOptions& c) {
  auto j = get_json(c, "/v1/secrets");
  if (!j) return 1;
  if (c.json) {
    std::cout << j->dump(2) << "\n";
    return 0;
  }
  std::cout << fmt::format("{:<40} {:<8} {}\n", "NAME", "VERSION", "UPDATED");
  for (const auto& s : (*j)["secrets"]) {
    std::cout << fmt::format("{:<40} {:<8} {}\n", str(s, "name"), str(s, "version"),
                             str(s, "updated_at"));
  }
  return 0;
}

int cmd_secrets_rm(const ClientOptions& c, const std::string& name) {
  auto j = call_json(c, "DELETE", "/v1/secrets/" + encode_path(name));
  if (!j) return 1;
  std::cout << fmt::format("secret {} removed\n", str(*j, "name"));
  return 0;
}

int cmd_task_log(const std::string& log_file, bool k8s_file) {
  return runtime::run_log_copier(log_file, 0,
                                 k8s_file ? runtime::LogFormat::K8sFile : runtime::LogFormat::Raw);
}

}  // namespace cutover::cli

namespace cutover::cli {

namespace {

std::string short_digest(const std::string& digest) {
  return digest.size() > 19 ? digest.substr(0, 19) : digest;  // "sha256:" + 12 hex
}

std::string joined_tags(const json& a) {
  std::string out;
  for (const auto& t : a["tags"]) out += (out.empty() ? "" : ",") + t.get<std::string>();
  return out.empty() ? "-" : out;
}

}  // namespace

int cmd_registry_ls(const ClientOptions& c, const std::string& service) {
  auto j = get_json(c, "/v1/registry" + (service.empty() ? "" : "?service=" + service));
  if (!j) return 1;
  if (c.json) {
    std::cout << j->dump(2) << "\n";
    return 0;
  }
  std::cout << fmt::format("{:<20} {:<16} {:>10} {:<21} {}\n", "DIGEST", "RETENTION", "SIZE",
                           "CREATED", "TAGS");
  for (const auto& a : (*j)["artifacts"]) {
    std::cout << fmt::format("{:<20} {:<16} {:>10} {:<21} {}\n", short_digest(str(a, "digest")),
                             str(a, "retention"), str(a, "size"), str(a, "created"),
                             joined_tags(a));
  }
  std::cout << fmt::format(
      "{} artifact(s); gc keeps the last {} release(s) of each service, "
      "live and rollback targets\n",
      (*j)["artifacts"].size(), str(*j, "keep"));
  return 0;
}

int cmd_registry_gc(const ClientOptions& c, bool dry_run) {
  const char* user = std::getenv("USER");
  const json body{{"user", std::string("cli:") + (user ? user : "unknown")}, {"dry_run", dry_run}};
  auto j = call_json(c, "POST", "/v1/registry/gc", body.dump());
  if (!j) return 1;
  if (c.json) {
    std::cout << j->dump(2) << "\n";
    return 0;
  }
  for (const auto& a : (*j)["removed"]) {
    std::cout << fmt::format("{} {} ({}, {})\n", dry_run ? "would remove" : "removed",
                             str(a, "digest"), str(a, "size"), joined_tags(a));
  }
  for (const auto& e : (*j)["errors"]) {
    std::cerr << fmt::format("not removed {}: {}\n", str(e, "digest"), str(e, "error"));
  }
  std::cout << fmt::format("{} {} artifact(s), {} {}; {} kept\n",
                           dry_run ? "would remove" : "removed", (*j)["removed"].size(),
                           str(*j, "freed"), dry_run ? "would be freed" : "freed",
                           (*j)["kept"].size());
  return (*j)["errors"].empty() ? 0 : 1;
}

int cmd_registry_key(const ClientOptions& c) {
  auto j = get_json(c, "/v1/registry/key");
  if (!j) return 1;
  if (c.json) {
    std::cout << j->dump(2) << "\n";
    return 0;
  }
  std::cout << fmt::format("ed25519 key {} ({})\n{}", str(*j, "key_id"), str(*j, "file"),
                           str(*j, "public_key_pem"));
  return 0;
}

}  // namespace cutover::cli
