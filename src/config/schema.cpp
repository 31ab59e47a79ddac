// json_schema(): the JSON Schema of cutover.yaml, built with nlohmann::json. Kept next to the
// parser so that a new key is added to both in one change (config_test checks the top-level keys).
#include <nlohmann/json.hpp>

#include "config/config.hpp"

namespace cutover::config {
namespace {

using Json = nlohmann::ordered_json;

constexpr const char* kDurationPattern = "^([0-9]+(ms|s|m|h))+$";
constexpr const char* kNamePattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$";
constexpr const char* kEnvPattern = "^[A-Za-z_][A-Za-z0-9_]*$";
constexpr const char* kSecretPattern = "^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$";
constexpr const char* kAddressPattern = "^(\\[[0-9A-Fa-f:.]+\\]|[0-9.]+|localhost):[0-9]{1,5}$";

Json object(Json properties, std::vector<std::string> required = {}) {
  Json j = {
      {"type", "object"}, {"properties", std::move(properties)}, {"additionalProperties", false}};
  if (!required.empty()) j["required"] = required;
  return j;
}

Json duration(const std::string& description) {
  return {{"type", "string"}, {"pattern", kDurationPattern}, {"description", description}};
}

Json integer(int lo, int hi, const std::string& description) {
  return {{"type", "integer"}, {"minimum", lo}, {"maximum", hi}, {"description", description}};
}

Json enumeration(std::vector<std::string> values, const std::string& description) {
  return {{"enum", values}, {"description", description}};
}

Json string_or_list(const std::string& description) {
  return {{"description", description},
          {"oneOf", Json::array({{{"type", "string"}},
                                 {{"type", "array"}, {"items", {{"type", "string"}}}}})}};
}

Json string_list(const std::string& description) {
  return {{"type", "array"}, {"items", {{"type", "string"}}}, {"description", description}};
}

Json env_map() {
  return {{"type", "object"},
          {"propertyNames", {{"pattern", kEnvPattern}}},
          {"additionalProperties", {{"type", Json::array({"string", "number", "boolean"})}}},
          {"description", "environment variables"}};
}

Json secret_map() {
  return {{"type", "object"},
          {"propertyNames", {{"pattern", kEnvPattern}}},
          {"additionalProperties", {{"type", "string"}, {"pattern", kSecretPattern}}},
          {"description", "environment variable name -> secret-store name"}};
}

Json stage() {
  return object(
      {{"name", {{"type", "string"}, {"pattern", kNamePattern}}},
       {"run", string_or_list("shorthand for phases.build; /bin/sh -e in a clean checkout")},
       {"phases", object({{"install", string_or_list("commands")},
                          {"pre_build", string_or_list("commands")},
                          {"build", string_or_list("commands")},
                          {"post_build", string_or_list("commands")}})},
       {"env", env_map()},
       {"secrets", secret_map()},
       {"cache", string_or_list("paths kept between executions of this stage")},
       {"artifacts", string_or_list("paths that become the release artifact")},
       {"timeout", duration("default 1h")},
       {"scan", enumeration({"secrets", "config"}, "built-in gate")},
       {"mode", enumeration({"block", "report"}, "default block")},
       {"approval", object({{"timeout", duration("default 24h; timeout = rejected")}})},
       {"gate",
        object({{"sarif", {{"type", "string"}, {"description", "SARIF 2.1.0 log the stage wrote"}}},
                {"fail_on", enumeration({"error", "warning", "note", "none"}, "default error")},
                {"mode", enumeration({"block", "report"}, "default block")}},
               {"sarif"})}},
      {"name"});
}

Json health() {
  return object({{"command", string_list("exit 0 = healthy")},
                 {"http", {{"type", "string"}, {"pattern", "^/"}}},
                 {"tcp", {{"const", true}}},
                 {"interval", duration("default 30s")},
                 {"timeout", duration("default 5s")},
                 {"retries", integer(1, 10, "default 3")},
                 {"start_period", duration("default 0s")}});
}

Json container() {
  return object(
      {{"name", {{"type", "string"}, {"pattern", kNamePattern}}},
       {"command", string_list("argv; required with the process driver")},
       {"image", {{"type", "string"}, {"description", "required with driver podman"}}},
       {"port", integer(1, 65535, "container port")},
       {"env", env_map()},
       {"secrets", secret_map()},
       {"health", health()},
       {"stop_signal",
        enumeration({"SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGKILL", "SIGUSR1", "SIGUSR2",
                     "SIGWINCH", "TERM", "INT", "QUIT", "HUP", "KILL", "USR1", "USR2", "WINCH"},
                    "default SIGTERM")},
       {"stop_timeout", duration("default 30s")},
       {"limits",
        object({{"open_files", integer(16, 1048576, "RLIMIT_NOFILE")},
                {"processes", integer(1, 1048576, "RLIMIT_NPROC")},
                {"memory", {{"type", "string"}, {"description", "address space, e.g. 512MiB"}}},
                {"file_size", {{"type", "string"}, {"description", "largest file, e.g. 1GiB"}}},
                {"cpu_time", duration("RLIMIT_CPU")}})}},
      {"name"});
}

Json traffic() {
  Json presets = enumeration({"all_at_once", "CodeDeployDefault.ECSAllAtOnce",
                              "CodeDeployDefault.ECSCanary10Percent5Minutes",
                              "CodeDeployDefault.ECSCanary10Percent15Minutes",
                              "CodeDeployDefault.ECSLinear10PercentEvery1Minutes",
                              "CodeDeployDefault.ECSLinear10PercentEvery3Minutes"},
                             "a preset name");
  Json steps = {{"type", "array"},
                {"minItems", 1},
                {"items", object({{"weight", integer(1, 100, "percent on the new version")},
                                  {"pause", duration("default 0s")}},
                                 {"weight"})}};
  Json custom = object({{"type", enumeration({"all_at_once", "canary", "linear", "steps"}, "")},
                        {"percent", integer(1, 100, "default 10")},
                        {"interval", duration("default 1m")},
                        {"steps", steps}},
                       {"type"});
  return {{"oneOf", Json::array({presets, custom})}};
}

Json alarm() {
  return object(
      {{"name", {{"type", "string"}, {"pattern", kNamePattern}}},
       {"metric", enumeration({"http_requests", "http_2xx", "http_4xx", "http_5xx", "error_rate",
                               "latency_p50", "latency_p90", "latency_p99", "upstream_errors"},
                              "")},
       {"target", enumeration({"green", "production"}, "default green")},
       {"statistic", enumeration({"sum", "avg", "max"}, "default sum for counts, avg otherwise")},
       {"period", duration("default 1m")},
       {"evaluation_periods", integer(1, 100, "default 1")},
       {"datapoints_to_alarm", integer(1, 100, "default evaluation_periods")},
       {"comparison", enumeration({">", ">=", "<", "<="}, "default >")},
       {"threshold",
        {{"oneOf", Json::array({{{"type", "number"}, {"minimum", 0}},
                                {{"type", "string"}, {"pattern", kDurationPattern}}})}}},
       {"min_requests", integer(0, 1'000'000'000, "default 0")}},
      {"name", "metric", "threshold"});
}

Json deployment() {
  Json hooks = object({{"before_install", string_or_list("commands")},
                       {"after_install", string_or_list("commands")},
                       {"after_allow_test_traffic", string_or_list("commands")},
                       {"before_allow_traffic", string_or_list("commands")},
                       {"after_allow_traffic", string_or_list("commands")}});
  return object(
      {{"strategy", enumeration({"blue_green", "rolling"}, "default blue_green")},
       {"traffic", traffic()},
       {"hooks", hooks},
       {"hook_timeout", duration("default 5m")},
       {"alarms", {{"type", "array"}, {"items", alarm()}}},
       {"auto_rollback",
        {{"type", "array"},
         {"items", enumeration({"failure", "alarm"}, "")},
         {"description", "default [failure, alarm]"}}},
       {"termination_wait", duration("default 1h")},
       {"drain_timeout", duration("default 30s")},
       {"min_healthy_percent", integer(0, 100, "rolling; default 100")},
       {"max_percent", integer(100, 400, "rolling; default 200")},
       {"circuit_breaker", object({{"threshold", integer(1, 100, "default 3")}})},
       {"insufficient_data",
        object({{"timeout", duration("default 5m")},
                {"then", enumeration({"rollback", "continue"}, "default rollback")}})},
       {"sticky",
        {{"description",
          "sticky cohorts on the production listener while traffic is split; true = "
          "cookie cutover_cohort; default off (blue_green only)"},
         {"oneOf", Json::array({{{"type", "boolean"}},
                                object({{"cookie",
                                         {{"type", "string"},
                                          {"pattern", "^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$"}}}},
                                       {"cookie"})})}}}});
}

Json listener() {
  Json address = {{"type", "string"}, {"pattern", kAddressPattern}};
  Json file = {{"type", "string"}, {"pattern", "^/"}, {"description", "absolute path"}};
  Json full = object({{"address", address},
                      {"tls", object({{"cert", file}, {"key", file}}, {"cert", "key"})},
                      {"redirect_http", address}},
                     {"address"});
  full["dependentRequired"] = {{"redirect_http", Json::array({"tls"})}};
  full["description"] =
      "tls: the proxy terminates TLS with these PEM files; redirect_http: a plain-HTTP address "
      "that answers 308 to https on this listener's port";
  return {{"oneOf", Json::array({address, full})}};
}

Json passive_health() {
  Json j = object({{"consecutive_5xx", integer(0, 1000, "default 5; 0 = off")},
                   {"consecutive_connect_failures", integer(0, 1000, "default 3; 0 = off")},
                   {"ejection", duration("default 10s")},
                   {"max_ejection_percent", integer(1, 100, "default 50")}});
  j["description"] = "passive ejection on live traffic; absent = off";
  return j;
}

Json service() {
  return object(
      {{"artifact", {{"type", "string"}, {"description", "a stage with artifacts"}}},
       {"driver", enumeration({"process", "podman"}, "default process")},
       {"task",
        object({{"containers", {{"type", "array"}, {"minItems", 1}, {"items", container()}}},
                {"count", integer(1, 100, "default 1")}},
               {"containers"})},
       {"listeners", object({{"production", listener()}, {"test", listener()}}, {"production"})},
       {"load_balancing",
        enumeration({"round_robin", "least_outstanding_requests"}, "default round_robin")},
       {"target_health",
        object(
            {{"path", {{"type", "string"}, {"pattern", "^/"}, {"description", "default /health"}}},
             {"interval", duration("default 5s")},
             {"timeout", duration("default 2s or the interval if shorter")},
             {"healthy_threshold", integer(1, 10, "default 3")},
             {"unhealthy_threshold", integer(1, 10, "default 2")},
             {"matcher",
              {{"type", Json::array({"string", "integer"})}, {"description", "default 200-299"}}},
             {"passive", passive_health()}})},
       {"deployment", deployment()}},
      {"task", "listeners"});
}

Json notifications() {
  std::vector<std::string> events(std::begin(kNotificationEvents), std::end(kNotificationEvents));
  Json item = object(
      {{"url",
        {{"type", "string"},
         {"pattern", "^https?://[^\\s@#]+$"},
         {"description", "http:// or https:// endpoint that receives a POST per event"}}},
       {"url_secret",
        {{"type", "string"},
         {"pattern", kSecretPattern},
         {"description", "secret-store name holding the URL, instead of url"}}},
       {"format", enumeration({"json", "slack"}, "payload format, default json")},
       {"events",
        {{"type", "array"},
         {"minItems", 1},
         {"items", {{"enum", events}}},
         {"description", "events to send; default all"}}},
       {"secret",
        {{"type", "string"},
         {"pattern", kSecretPattern},
         {"description", "secret-store name of the HMAC-SHA256 key for X-Cutover-Signature"}}}});
  item["oneOf"] = Json::array({{{"required", {"url"}}}, {{"required", {"url_secret"}}}});
  return {{"type", "array"},
          {"items", item},
          {"description", "outbound webhooks on execution and deployment state changes"}};
}

}  // namespace

std::string json_schema() {
  Json pipeline = object(
      {{"trigger", object({{"branch", {{"type", "string"}, {"description", "default main"}}}})},
       {"stages", {{"type", "array"}, {"minItems", 1}, {"items", stage()}}}},
      {"stages"});
  Json root = object({{"version", {{"const", 1}}},
                      {"pipeline", pipeline},
                      {"services",
                       {{"type", "object"},
                        {"propertyNames", {{"pattern", kNamePattern}}},
                        {"additionalProperties", service()}}},
                      {"notifications", notifications()}},
                     {"version", "pipeline"});
  Json schema = {{"$schema", "https://json-schema.org/draft/2020-12/schema"},
                 {"$id", "https://cutover.dev/schema/cutover.yaml.json"},
                 {"title", "cutover.yaml"},
                 {"description", "cutover configuration, see docs/configuration.md"}};
  for (auto& [k, v] : root.items()) schema[k] = v;
  return schema.dump(2);
}

}  // namespace cutover::config
