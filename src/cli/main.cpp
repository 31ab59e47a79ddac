// cutover: parses the command line and dispatches to cli/commands.hpp. Nothing else lives here.
#include <map>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "cli/commands.hpp"

int main(int argc, char** argv) {
  using namespace cutover::cli;
  CLI::App app{
      "cutover: a self-hosted GitOps delivery engine (pipeline, artifacts, blue/green "
      "and canary deployments through its own proxy)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "cutover 0.1.0");

  ClientOptions client;
  const auto add_client = [&](CLI::App* sub) {
    sub->add_option("--state-dir", client.state_dir, "State directory of `cutover serve`")
        ->envname("CUTOVER_STATE_DIR");
    sub->add_option("--api", client.api, "API address (default: the one serve recorded)")
        ->envname("CUTOVER_API");
  };

  ServeOptions serve;
  auto* s = app.add_subcommand("serve", "Watch a repository and run pipelines and deployments");
  s->add_option("--repo", serve.repo, "Path or URL of the application's git repository")
      ->required();
  s->add_option("--branch", serve.branch, "Branch to watch")->capture_default_str();
  s->add_option("--state-dir", serve.state_dir, "Where state, artifacts and logs live")
      ->envname("CUTOVER_STATE_DIR");
  s->add_option("--api", serve.api, "Address of the JSON API (loopback)")->capture_default_str();
  s->add_option("--poll", serve.poll, "Poll interval (250ms, 2s, 1m)")->capture_default_str();
  s->add_option("--registry-keep", serve.registry_keep,
                "registry gc keeps the last N releases of each service (plus live and rollback "
                "targets)")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  s->add_option("--log-level", serve.log_level, "debug | info | warn | error")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}))
      ->capture_default_str();

  ProxyCommandOptions proxy;
  auto* p = app.add_subcommand("proxy", "Run the data-plane proxy (started by serve)");
  p->add_option("--admin-socket", proxy.admin_socket, "Unix socket of the admin API")->required();
  p->add_option("--state-file", proxy.state_file, "Persisted route snapshot");
  p->add_option("--workers", proxy.workers, "Event-loop threads")->check(CLI::Range(1, 64));
  p->add_option("--log-file", proxy.log_file, "Also log to this file");
  p->add_option("--shutdown-grace", proxy.shutdown_grace,
                "How long in-flight requests (and, after a handover, open connections) get at "
                "shutdown")
      ->capture_default_str();
  p->add_flag("--no-takeover", proxy.no_takeover,
              "Fail if a proxy already runs on the admin socket instead of taking over its "
              "listening sockets");

  std::string validate_file = "cutover.yaml";
  auto* v = app.add_subcommand("validate", "Check a cutover.yaml without running anything");
  v->add_option("file", validate_file, "The file to check")->capture_default_str();
  bool validate_no_file_checks = false;
  v->add_flag("--no-file-checks", validate_no_file_checks,
              "Do not check that TLS certificate and key files exist and are readable (for "
              "machines other than the one that serves)");

  auto* schema = app.add_subcommand("schema", "Print the JSON Schema of cutover.yaml");

  ScanCommandOptions scan;
  auto* sc = app.add_subcommand("scan", "Scan files or git history for secrets (gitleaks rules)");
  sc->add_option("path", scan.path, "Directory, file or repository to scan")->capture_default_str();
  sc->add_flag("--history", scan.history, "Scan the lines each commit added, not the files");
  sc->add_option("--since", scan.since, "With --history: only commits after REV (REV..HEAD)");
  sc->add_option("--config", scan.config, "Rules in the gitleaks TOML format");
  sc->add_option("--baseline", scan.baseline, "Ignore findings of this earlier JSON report");
  sc->add_option("--format", scan.format, "text | json | sarif")
      ->check(CLI::IsMember({"text", "json", "sarif"}))
      ->capture_default_str();
  sc->add_flag("--redact,!--no-redact", scan.redact,
               "Replace secrets by REDACTED in the output (the default)");
  sc->add_option("--mode", scan.mode, "block: exit 1 on findings | report: exit 0")
      ->check(CLI::IsMember({"block", "report"}))
      ->capture_default_str();
  sc->add_option("--threads", scan.threads, "Worker threads (0 = all cores)");

  std::string service;
  auto* st = app.add_subcommand("status", "What runs where, traffic, deployment phase");
  st->add_option("service", service, "Only this service");
  std::string output = "text";
  st->add_option("-o,--output", output, "text | json")->check(CLI::IsMember({"text", "json"}));
  add_client(st);

  auto* h = app.add_subcommand("history", "Deployments of a service, newest first");
  h->add_option("service", service, "The service")->required();
  h->add_option("-o,--output", output, "text | json")->check(CLI::IsMember({"text", "json"}));
  add_client(h);

  int limit = 20;
  auto* ex = app.add_subcommand("executions", "Pipeline executions, newest first");
  ex->add_option("-n,--limit", limit, "How many")->check(CLI::Range(1, 1000));
  ex->add_option("-o,--output", output, "text | json")->check(CLI::IsMember({"text", "json"}));
  add_client(ex);

  int64_t audit_after = 0;
  int audit_limit = 100;
  auto* au = app.add_subcommand(
      "audit", "The audit trail (who did what), oldest first, and a check of its hash chain");
  au->add_option("--after", audit_after, "Only entries after this sequence number")
      ->check(CLI::NonNegativeNumber);
  au->add_option("-n,--limit", audit_limit, "How many")->check(CLI::Range(1, 10000));
  au->add_option("-o,--output", output, "text | json")->check(CLI::IsMember({"text", "json"}));
  add_client(au);

  std::string execution;
  std::string task_id;
  bool follow = false;
  auto* l = app.add_subcommand("logs", "Logs of a pipeline execution, or of a service's tasks");
  l->add_option("target", execution, "Execution id (ex-...) or service name")->required();
  l->add_option("--task", task_id, "Only this task of the service (any status)");
  l->add_flag("-f,--follow", follow,
              "Keep printing new lines (until the execution ends; for tasks, until interrupted)");
  add_client(l);

  std::map<std::string, CLI::App*> operations;
  for (const auto& [name, what] : std::vector<std::pair<std::string, std::string>>{
           {"rollback",
            "Production back to the previous version now (one snapshot while blue is warm; "
            "else redeploys the previous release all at once)"},
           {"abort", "Stop the deployment in progress: traffic back to blue, green stopped"},
           {"promote", "Skip the remaining traffic steps and waits of the deployment"},
           {"retry",
            "Deploy again the release of the latest deployment, which failed, rolled back or "
            "was stopped"}}) {
    auto* op = app.add_subcommand(name, what);
    op->add_option("service", service, "The service")->required();
    op->add_option("-o,--output", output, "text | json")->check(CLI::IsMember({"text", "json"}));
    add_client(op);
    operations[name] = op;
  }

  std::string comment;
  std::map<std::string, CLI::App*> execution_actions;
  for (const auto& [name, what] : std::vector<std::pair<std::string, std::string>>{
           {"cancel", "Cancel a queued or running execution (its commands are killed)"},
           {"approve", "Approve the approval stage an execution waits in"},
           {"reject", "Reject the approval stage an execution waits in (the execution fails)"}}) {
    auto* act = app.add_subcommand(name, what);
    act->add_option("execution", execution, "Execution id (ex-...)")->required();
    if (name != "cancel") act->add_option("--comment", comment, "Why (kept in the audit trail)");
    act->add_option("-o,--output", output, "text | json")->check(CLI::IsMember({"text", "json"}));
    add_client(act);
    execution_actions[name] = act;
  }

  std::string secret_name;
  bool keep_newline = false;
  auto* sec =
      app.add_subcommand("secrets", "The secret store: set, list, rm (values are never shown)");
  sec->require_subcommand(1);
  auto* sec_set = sec->add_subcommand(
      "set", "Set a secret from stdin (one trailing newline is removed, so `echo VALUE |` works)");
  sec_set->add_option("name", secret_name, "Secret name, e.g. web/database-url")->required();
  sec_set->add_flag("--keep-newline", keep_newline, "Keep a trailing newline in the value");
  add_client(sec_set);
  auto* sec_list = sec->add_subcommand("list", "Names and versions of the secrets");
  sec_list->add_option("-o,--output", output, "text | json")
      ->check(CLI::IsMember({"text", "json"}));
  add_client(sec_list);
  auto* sec_rm = sec->add_subcommand("rm", "Remove a secret");
  sec_rm->add_option("name", secret_name, "Secret name")->required();
  add_client(sec_rm);

  bool gc_dry_run = false;
  auto* reg = app.add_subcommand(
      "registry", "The artifact registry: ls, gc (lifecycle) and key (provenance public key)");
  reg->require_subcommand(1);
  auto* reg_ls = reg->add_subcommand("ls", "Artifacts with tags, size, time and retention");
  reg_ls->add_option("service", service, "Only the artifacts of this service");
  reg_ls->add_option("-o,--output", output, "text | json")->check(CLI::IsMember({"text", "json"}));
  add_client(reg_ls);
  auto* reg_gc = reg->add_subcommand(
      "gc", "Remove artifacts that are not live, a rollback target or among the last N releases");
  reg_gc->add_flag("--dry-run", gc_dry_run, "Only print what would be removed");
  reg_gc->add_option("-o,--output", output, "text | json")->check(CLI::IsMember({"text", "json"}));
  add_client(reg_gc);
  auto* reg_key = reg->add_subcommand("key", "The public key that verifies provenance statements");
  reg_key->add_option("-o,--output", output, "text | json")->check(CLI::IsMember({"text", "json"}));
  add_client(reg_key);

  std::string task_log_file;
  auto* tl = app.add_subcommand("task-log", "");  // internal: the log copier of a task (no help)
  tl->add_option("--log", task_log_file, "Log file to append to")->required();
  std::string task_log_format = "raw";
  tl->add_option("--format", task_log_format, "raw | k8s-file")
      ->check(CLI::IsMember({"raw", "k8s-file"}));
  tl->group("");
  std::vector<std::string> diff;
  auto* td = app.add_subcommand("task-defs", "Task definition revisions of a service");
  td->add_option("service", service, "The service")->required();
  td->add_option("--diff", diff, "Two revisions to compare: --diff 3 7 (or web:3 web:7)")
      ->expected(2);
  td->add_option("-o,--output", output, "text | json")->check(CLI::IsMember({"text", "json"}));
  add_client(td);

  CLI11_PARSE(app, argc, argv);
  client.json = output == "json";

  if (s->parsed()) return cmd_serve(serve);
  if (p->parsed()) return cmd_proxy(proxy);
  if (v->parsed()) return cmd_validate(validate_file, !validate_no_file_checks);
  if (schema->parsed()) return cmd_schema();
  if (sc->parsed()) {
    scan.history = scan.history || !scan.since.empty();
    return cmd_scan(scan);
  }
  if (st->parsed()) return cmd_status(client, service);
  if (h->parsed()) return cmd_history(client, service);
  if (ex->parsed()) return cmd_executions(client, limit);
  if (au->parsed()) return cmd_audit(client, audit_after, audit_limit);
  for (const auto& [name, op] : operations) {
    if (op->parsed()) return cmd_operate(client, name, service);
  }
  for (const auto& [name, act] : execution_actions) {
    if (act->parsed()) return cmd_execution_action(client, name, execution, comment);
  }
  if (tl->parsed()) return cmd_task_log(task_log_file, task_log_format == "k8s-file");
  if (sec_set->parsed()) return cmd_secrets_set(client, secret_name, keep_newline);
  if (sec_list->parsed()) return cmd_secrets_list(client);
  if (sec_rm->parsed()) return cmd_secrets_rm(client, secret_name);
  if (reg_ls->parsed()) return cmd_registry_ls(client, service);
  if (reg_gc->parsed()) return cmd_registry_gc(client, gc_dry_run);
  if (reg_key->parsed()) return cmd_registry_key(client);
  if (l->parsed()) return cmd_logs(client, execution, task_id, follow);
  if (td->parsed()) {
    return cmd_task_defs(client, service, diff.empty() ? "" : diff[0],
                         diff.size() < 2 ? "" : diff[1]);
  }
  return 2;
}
