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

// $CUTOVER_STATE_DIR, else /var/lib/cutover for root, else ~/.local/state/cutover.
std::string default_state_dir();

int cmd_serve(const ServeOptions& o);
int cmd_proxy(const ProxyCommandOptions& o);
// check_files: also check that the files cutover.yaml names (TLS certificates, keys) are readable.
int cmd_validate(const std::string& file, bool check_files);
int cmd_schema();
int cmd_status(const ClientOptions& c, const std::string& service);
int cmd_history(const ClientOptions& c, const std::string& service);
int cmd_executions(const ClientOptions& c, int limit);
// target: an execution id (ex-...) prints its pipeline logs; a service name prints the logs of its
// running tasks (or of task_id). follow: keep printing new lines (until the execution ends; for a
// task, until interrupted).
int cmd_logs(const ClientOptions& c, const std::string& target, const std::string& task_id,
             bool follow);
// Task definition revisions of a service; with diff_from/diff_to ("3" or "web:3"), what changed.
int cmd_task_defs(const ClientOptions& c, const std::string& service, const std::string& diff_from,
                  const std::string& diff_to);

}  // namespace cutover::cli
