// The `cutover` command's subcommands. main.cpp parses arguments with CLI11 and calls one of these;
// each returns the process exit code and prints what a person needs (errors to stderr).
#pragma once

#include <string>

namespace cutover::cli {

struct ClientOptions {
  std::string state_dir;  // where serve keeps its token and address; "" = default
  std::string api;        // "" = read state_dir/api-address, else 127.0.0.1:7070
  bool json = false;      // --output json
};

struct ServeOptions {
  std::string repo;
  std::string branch = "main";
  std::string state_dir;
  std::string api = "127.0.0.1:7070";
  std::string poll = "2s";
  int registry_keep = 10;
  std::string log_level = "info";
};

struct ProxyCommandOptions {
  std::string admin_socket;
  std::string state_file;
  int workers = 1;
  std::string log_file;
  std::string shutdown_grace = "5s";
  bool no_takeover = false;
};

struct ScanCommandOptions {
  std::string path = ".";
  bool history = false;
  std::string since;     // "" = whole history (with --history) or the working tree
  std::string config;    // gitleaks TOML; "" = PATH/.gitleaks.toml if present, else the defaults
  std::string baseline;  // JSON report of an earlier scan
  std::string format = "text";
  bool redact = true;          // --no-redact shows secrets
  std::string mode = "block";  // block: findings exit 1 | report: exit 0
  unsigned threads = 0;
};

// $CUTOVER_STATE_DIR, else /var/lib/cutover for root, else ~/.local/state/cutover.
std::string default_state_dir();

int cmd_serve(const ServeOptions& o);
int cmd_proxy(const ProxyCommandOptions& o);
// check_files: also check that the files cutover.yaml names (TLS certificates, keys) are readable.
int cmd_validate(const std::string& file, bool check_files);
int cmd_schema();
// Exit 0 clean (or mode report), 1 findings, 2 the scan could not run.
int cmd_scan(const ScanCommandOptions& o);
int cmd_status(const ClientOptions& c, const std::string& service);
int cmd_history(const ClientOptions& c, const std::string& service);
int cmd_executions(const ClientOptions& c, int limit);
// `audit [--after SEQ] [-n LIMIT]`: the audit trail, oldest first, and a check of its hash chain.
// Exit 3 when the chain is broken (an entry was modified, removed or inserted), with why on stderr.
int cmd_audit(const ClientOptions& c, int64_t after_seq, int limit);
// rollback | abort | promote SERVICE (Controller::operate).
int cmd_operate(const ClientOptions& c, const std::string& action, const std::string& service);
// cancel EXECUTION; approve|reject EXECUTION [--comment TEXT] (action "cancel", "approve" or
// "reject"). Audited with the OS user ($USER). Exit 1 when the API refuses (unknown id: 404, not
// waiting or already finished: 409), with its message on stderr.
int cmd_execution_action(const ClientOptions& c, const std::string& action,
                         const std::string& execution, const std::string& comment);
// `secrets set NAME`: the value is read from stdin (hidden when it is a terminal).
int cmd_secrets_set(const ClientOptions& c, const std::string& name, bool keep_newline);
int cmd_secrets_list(const ClientOptions& c);
int cmd_secrets_rm(const ClientOptions& c, const std::string& name);
// `registry ls [SERVICE]`, `registry gc [--dry-run]` (exit 1 if an artifact could not be removed),
// `registry key` (the public provenance key).
int cmd_registry_ls(const ClientOptions& c, const std::string& service);
int cmd_registry_gc(const ClientOptions& c, bool dry_run);
int cmd_registry_key(const ClientOptions& c);
// Internal: the log copier between a task and its log file (runtime/log_copier.hpp); stdin is the
// task's output (conmon's k8s-file records when k8s_file, for podman tasks).
int cmd_task_log(const std::string& log_file, bool k8s_file);
// target: an execution id (ex-...) prints its pipeline logs; a service name prints the logs of its
// running tasks (or of task_id). follow: keep printing new lines (until the execution ends; for a
// task, until interrupted).
int cmd_logs(const ClientOptions& c, const std::string& target, const std::string& task_id,
             bool follow);
// Task definition revisions of a service; with diff_from/diff_to ("3" or "web:3"), what changed.
int cmd_task_defs(const ClientOptions& c, const std::string& service, const std::string& diff_from,
                  const std::string& diff_to);

}  // namespace cutover::cli
