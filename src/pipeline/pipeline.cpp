#include "pipeline/pipeline.hpp"

#include <utility>

#include "core/duration.hpp"
#include "core/id.hpp"
#include "core/log.hpp"
#include "core/process.hpp"
#include "core/redact.hpp"
#include "scan/scan.hpp"

namespace cutover::pipeline {

namespace fs = std::filesystem;
using core::Error;
using core::Result;

const char* to_string(StageStatus status) {
  switch (status) {
    case StageStatus::Succeeded:
      return "succeeded";
    case StageStatus::Failed:
      return "failed";
    case StageStatus::TimedOut:
      return "timed_out";
    case StageStatus::Cancelled:
      return "cancelled";
    case StageStatus::Skipped:
      return "skipped";
  }
  return "unknown";
}

namespace {

bool cancelled(const std::atomic<bool>* cancel) {
  return cancel != nullptr && cancel->load(std::memory_order_relaxed);
}

// Runs one stage; owns the log masking and the deadline of that stage.
class StageRunner {
 public:
  StageRunner(const StageSpec& stage, int index, const ExecutionContext& ctx,
              registry::Registry& registry, const Observer& observer,
              const std::atomic<bool>* cancel)
      : stage_(stage),
        index_(index),
        ctx_(ctx),
        registry_(registry),
        observer_(observer),
        cancel_(cancel) {
    clock_ = ctx.clock != nullptr ? ctx.clock : &core::RealClock::instance();
  }

  StageOutcome run() {
    if (cancelled(cancel_)) return {StageStatus::Cancelled, "cancelled before it started", {}};
    switch (stage_.kind) {
      case config::StageKind::Run:
        return run_commands();
      case config::StageKind::Scan:
        return run_scan();
      case config::StageKind::Approval:
        return run_approval();
    }
    return {StageStatus::Failed, "unknown stage kind", {}};
  }

 private:
  void log(std::string_view line) {
    if (!observer_.on_log) return;
    if (redactor_.empty()) {
      observer_.on_log(stage_.name, line);
      return;
    }
    observer_.on_log(stage_.name, redactor_.redact(line));
  }
  void note(const std::string& text) { log("[cutover] " + text); }

  StageOutcome run_approval() {
    if (!ctx_.await_approval) {
      return {StageStatus::Failed,
              "approval stage: nothing can approve it here (no approval callback)",
              {}};
    }
    const core::Duration timeout = stage_.approval_timeout;
    note("waiting for approval (`cutover approve|reject " + ctx_.execution_id + "`), at most " +
         core::format_duration(timeout));
    const ApprovalDecision d =
        ctx_.await_approval(index_, stage_.name, clock_->now() + timeout, timeout);
    const std::string by = d.who.empty() ? "" : " by " + d.who;
    const std::string comment = d.comment.empty() ? "" : ": " + d.comment;
    switch (d.kind) {
      case ApprovalDecision::Kind::Approved:
        note("approved" + by + comment);
        return {StageStatus::Succeeded, "", {}};
      case ApprovalDecision::Kind::Rejected:
        return {StageStatus::Failed, "rejected" + by + comment, {}};
      case ApprovalDecision::Kind::TimedOut:
        return {
            StageStatus::Failed, "approval timed out after " + core::format_duration(timeout), {}};
      case ApprovalDecision::Kind::Cancelled:
        return {StageStatus::Cancelled, "cancelled while waiting for approval" + by, {}};
    }
    return {StageStatus::Failed, "unknown approval decision", {}};
  }

  StageOutcome run_scan() {
    scan::Gate gate =
        stage_.scan == config::ScanKind::Secrets ? scan::Gate::Secrets : scan::Gate::Config;
    const char* gate_name = gate == scan::Gate::Secrets ? "secrets" : "config";
    note(std::string("running the ") + gate_name + " gate");
    scan::GateOptions options{.cache_dir = ctx_.scan_cache_dir,
                              .repository = ctx_.repository,
                              .commit = ctx_.commit_sha,
                              .since = ctx_.scan_since,
                              .log = [this](const std::string& line) { note(line); }};
    auto r = scan::run_gate(gate, ctx_.workspace, options);
    if (r) {
      note("gate passed");
      return {StageStatus::Succeeded, "", {}};
    }
    note("gate: " + r.error().message);
    if (stage_.mode == config::ScanMode::Report) {
      note("mode report: recorded, not blocking");
      return {StageStatus::Succeeded, "", {}};
    }
    return {StageStatus::Failed, std::string(gate_name) + " gate: " + r.error().message, {}};
  }

  // `gate:` on a run stage: the SARIF log its commands wrote decides it, like a scan stage.
  std::optional<StageOutcome> run_sarif_gate() {
    const auto& g = *stage_.gate;
    const scan::SarifLevel level = g.fail_on == "none"      ? scan::SarifLevel::None
                                   : g.fail_on == "note"    ? scan::SarifLevel::Note
                                   : g.fail_on == "warning" ? scan::SarifLevel::Warning
                                                            : scan::SarifLevel::Error;
    note("gate: reading " + g.sarif + " (fail_on " + g.fail_on + ")");
    auto r = scan::run_sarif_gate(ctx_.workspace, g.sarif, level);
    if (r) {
      note("gate passed");
      return std::nullopt;
    }
    note(r.error().message);
    if (g.mode == config::ScanMode::Report) {
      note("mode report: recorded, not blocking");
      return std::nullopt;
    }
    return StageOutcome{StageStatus::Failed, r.error().message, {}};
  }

  Result<std::map<std::string, std::string>> build_env() {
    std::map<std::string, std::string> vars = {{"COMMIT_SHA", ctx_.commit_sha},
                                               {"COMMIT_SHORT", ctx_.commit_short},
                                               {"BRANCH", ctx_.branch},
                                               {"EXECUTION_ID", ctx_.execution_id},
                                               {"WORKSPACE", ctx_.workspace.string()}};
    auto env = core::minimal_environment();
    for (const auto& [k, v] : ctx_.base_env) env[k] = v;
    for (const auto& [k, v] : stage_.env) env[k] = config::expand_variables(v, vars);
    std::vector<std::string> secret_values;
    for (const auto& [k, secret_name] : stage_.secrets) {
      if (!ctx_.resolve_secret) {
        return Error("secret " + secret_name + " for " + k +
                     " cannot be resolved (no secret store)");
      }
      auto value = ctx_.resolve_secret(secret_name);
      if (!value) {
        return Error("secret " + secret_name + " for " + k + ": " + value.error().message);
      }
      secret_values.push_back(*value);
      env[k] = std::move(value).value();
    }
    redactor_ = core::Redactor(secret_values);
    for (const auto& [k, v] : vars) env[k] = v;
    return env;
  }

  fs::path cache_dir() const {
    std::string key;
    for (char c : stage_.name) {
      bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '-' || c == '_' || c == '.';
      key += ok ? c : '_';
    }
    if (key.empty() || key == "." || key == "..") key = "_" + key;
    return ctx_.cache_root / key;
  }

  static Result<fs::path> cache_rel(const std::string& path) {
    fs::path rel = fs::path(path).lexically_normal();
    std::string s = rel.string();
    while (!s.empty() && s.back() == '/') s.pop_back();
    rel = s;
    if (s.empty() || s == "." || rel.is_absolute() || *rel.begin() == "..") {
      return Error("cache path " + path + " must be inside the workspace");
    }
    return rel;
  }

  // Copies from -> to, replacing to (via a temporary sibling, so a crash leaves old or new).
  static Result<void> replace_copy(const fs::path& from, const fs::path& to) {
    std::error_code ec;
    fs::create_directories(to.parent_path(), ec);
    fs::path tmp = to;
    tmp += ".tmp-" + core::random_hex(4);
    fs::copy(from, tmp,
             fs::copy_options::recursive | fs::copy_options::copy_symlinks |
                 fs::copy_options::overwrite_existing,
             ec);
    if (ec) {
      fs::remove_all(tmp, ec);
      return Error("cannot copy " + from.string() + " to " + to.string());
    }
    fs::remove_all(to, ec);
    fs::rename(tmp, to, ec);
    if (ec)
      return Error("cannot move " + tmp.string() + " to " + to.string() + ": " + ec.message());
    return core::ok();
  }

  void restore_cache() {
    if (stage_.cache.empty() || ctx_.cache_root.empty()) return;
    for (const auto& path : stage_.cache) {
      auto rel = cache_rel(path);
      if (!rel) {
        note(rel.error().message);
        continue;
      }
      std::error_code ec;
      fs::path saved = cache_dir() / *rel;
      if (!fs::exists(fs::symlink_status(saved, ec))) continue;
      if (auto r = replace_copy(saved, ctx_.workspace / *rel); !r) {
        note("cache " + path + " not restored: " + r.error().message);
      } else {
        note("cache " + path + " restored");
      }
    }
  }

  void save_cache() {
    if (stage_.cache.empty() || ctx_.cache_root.empty()) return;
    for (const auto& path : stage_.cache) {
      auto rel = cache_rel(path);
      if (!rel) continue;
      std::error_code ec;
      fs::path live = ctx_.workspace / *rel;
      if (!fs::exists(fs::symlink_status(live, ec))) continue;
      if (auto r = replace_copy(live, cache_dir() / *rel); !r) {
        note("cache " + path + " not saved: " + r.error().message);
      }
    }
  }

  // Runs the commands of one phase. Returns an outcome when the phase did not succeed.
  std::optional<StageOutcome> run_phase(const char* phase, const std::vector<std::string>& cmds,
                                        const std::map<std::string, std::string>& env) {
    if (cmds.empty()) return std::nullopt;
    note("phase " + std::string(phase));
    for (const auto& cmd : cmds) {
      if (cancelled(cancel_)) {
        return StageOutcome{StageStatus::Cancelled, std::string(phase) + ": cancelled", {}};
      }
      auto left = std::chrono::duration_cast<core::Duration>(deadline_ - clock_->now());
      if (left.count() <= 0) {
        return StageOutcome{StageStatus::TimedOut,
                            std::string(phase) + ": stage timed out after " +
                                core::format_duration(stage_.effective_timeout()),
                            {}};
      }
      // Multi-line commands are echoed line by line, so each log line stays one line.
      size_t start = 0;
      for (bool first = true; start <= cmd.size(); first = false) {
        size_t end = cmd.find('\n', start);
        if (end == std::string::npos) end = cmd.size();
        note((first ? "$ " : "> ") + cmd.substr(start, end - start));
        start = end + 1;
      }
      core::SpawnSpec spec;
      spec.argv = {"/bin/sh", "-e", "-c", cmd};
      spec.env = env;
      spec.cwd = ctx_.workspace;
      auto r = core::run_command(
          spec, left, [this](std::string_view line) { log(line); }, cancel_);
      if (!r) {
        return StageOutcome{
            StageStatus::Failed,
            std::string(phase) + ": `" + cmd + "` could not start: " + r.error().message,
            {}};
      }
      if (r->timed_out) {
        return StageOutcome{StageStatus::TimedOut,
                            std::string(phase) + ": `" + cmd + "` killed, stage timed out after " +
                                core::format_duration(stage_.effective_timeout()),
                            {}};
      }
      if (r->cancelled) {
        return StageOutcome{StageStatus::Cancelled,
                            std::string(phase) + ": `" + cmd + "` killed, execution cancelled",
                            {}};
      }
      if (!r->status.success()) {
        return StageOutcome{StageStatus::Failed,
                            std::string(phase) + ": `" + cmd + "` " + r->status.to_string(),
                            {}};
      }
    }
    return std::nullopt;
  }

  StageOutcome run_commands() {
    deadline_ = clock_->now() + stage_.effective_timeout();
    auto env = build_env();
    if (!env) return {StageStatus::Failed, env.error().message, {}};
    restore_cache();

    const auto& ph = stage_.phases;
    for (auto [name, cmds] :
         {std::pair{"install", &ph.install}, std::pair{"pre_build", &ph.pre_build}}) {
      if (auto bad = run_phase(name, *cmds, *env)) return *bad;
    }
    std::optional<StageOutcome> build_failure = run_phase("build", ph.build, *env);
    if (build_failure && build_failure->status != StageStatus::Failed) return *build_failure;
    if (build_failure) note("build failed; running post_build anyway");
    if (auto bad = run_phase("post_build", ph.post_build, *env)) {
      if (build_failure && bad->status == StageStatus::Failed) {
        build_failure->message += "; then " + bad->message;
        return *build_failure;
      }
      return *bad;
    }
    if (build_failure) return *build_failure;

    if (stage_.gate) {
      if (auto bad = run_sarif_gate()) return *bad;
    }
    save_cache();
    StageOutcome ok{StageStatus::Succeeded, "", {}};
    if (!stage_.artifacts.empty()) {
      auto artifact = registry_.put_directory(ctx_.workspace, stage_.artifacts);
      if (!artifact) return {StageStatus::Failed, "artifacts: " + artifact.error().message, {}};
      note("artifact " + artifact->digest + " (" + std::to_string(artifact->file_count) +
           " files, " + std::to_string(artifact->size_bytes) + " bytes)");
      ok.artifact = std::move(artifact).value();
    }
    return ok;
  }

  const StageSpec& stage_;
  int index_;
  const ExecutionContext& ctx_;
  registry::Registry& registry_;
  const Observer& observer_;
  const std::atomic<bool>* cancel_;
  const core::Clock* clock_;
  core::TimePoint deadline_{};
  core::Redactor redactor_;  // the stage's secret values, masked in every line it logs
};

}  // namespace

Result<ExecutionResult> run_execution(const std::vector<StageSpec>& stages,
                                      const ExecutionContext& ctx, registry::Registry& registry,
                                      const Observer& observer, const std::atomic<bool>* cancel) {
  std::error_code ec;
  if (!fs::is_directory(ctx.workspace, ec)) {
    return Error("execution " + ctx.execution_id + ": workspace " + ctx.workspace.string() +
                 " is not a directory");
  }
  ExecutionResult result;
  result.succeeded = true;
  for (size_t i = 0; i < stages.size(); ++i) {
    const StageSpec& stage = stages[i];
    StageResult sr{stage.name, {}};
    int index = static_cast<int>(i);
    if (!result.succeeded) {
      sr.outcome.message = "skipped: an earlier stage did not succeed";
      if (observer.on_stage_end) observer.on_stage_end(index, stage.name, sr.outcome);
      result.stages.push_back(std::move(sr));
      continue;
    }
    if (observer.on_stage_start) observer.on_stage_start(index, stage.name);
    sr.outcome = StageRunner(stage, index, ctx, registry, observer, cancel).run();
    if (observer.on_log) {
      std::string end = "[cutover] stage " + std::string(to_string(sr.outcome.status));
      if (!sr.outcome.message.empty()) end += ": " + sr.outcome.message;
      observer.on_log(stage.name, end);
    }
    if (observer.on_stage_end) observer.on_stage_end(index, stage.name, sr.outcome);
    if (sr.outcome.status != StageStatus::Succeeded) {
      result.succeeded = false;
      result.message = stage.name + ": " + sr.outcome.message;
      core::logger()->info("[pipeline] execution {} stage {} {}: {}", ctx.execution_id, stage.name,
                           to_string(sr.outcome.status), sr.outcome.message);
    }
    result.stages.push_back(std::move(sr));
  }
  return result;
}

}  // namespace cutover::pipeline
