// The secret store end to end, black-box: `cutover secrets set|list|rm` through the real API, a
// stage and a task that print their secrets, and the bytes of everything cutover wrote — the
// state database, API responses, execution logs, task logs, the controller's own log — searched
// for the values (DESIGN.md invariant 8).
#include <signal.h>

#include <regex>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "harness.hpp"
#include "serve_fixture.hpp"

namespace cutover::e2e {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace std::chrono_literals;

const std::string kBuildToken = "bt-" + std::string("Zq8Xw2Lm9Kp4");
const std::string kDbPassword = "db-" + std::string("Hv7Rt3Ns6Wy1");

class Secrets : public ServeTest {
 protected:
  Secrets() : ServeTest("cutover-e2e-secrets") {}

  void SetUp() override {
    ServeTest::SetUp();  // examples/hello on a free port, committed; serve not started yet
    std::string yaml = read_text(app_ / "cutover.yaml");
    // The build stage and the task print their secrets.
    yaml = std::regex_replace(yaml,
                              std::regex("        - echo \"built \\$\\{COMMIT_SHORT\\} on "
                                         "\\$\\{BRANCH\\}\"\n"),
                              "        - echo \"built with token $BUILD_TOKEN\"\n"
                              "      secrets: { BUILD_TOKEN: build/token }\n");
    yaml = std::regex_replace(
        yaml, std::regex("          command: \\[python3, dist/server.py\\]\n"),
        "          command: [sh, -c, 'echo \"db password is $DB_PASSWORD\"; exec python3 "
        "dist/server.py']\n"
        "          secrets: { DB_PASSWORD: hello/db-password }\n");
    write_text(app_ / "cutover.yaml", yaml);
    ASSERT_NE(yaml.find("build/token"), std::string::npos) << yaml;
    ASSERT_NE(yaml.find("hello/db-password"), std::string::npos) << yaml;
    auto valid = run({CUTOVER_BIN, "validate", (app_ / "cutover.yaml").string()});
    ASSERT_EQ(valid.exit_code, 0) << valid.err << yaml;
    sh(app_, "git commit -q -am 'hello v1 with secrets'");
  }

  CommandResult cli(const std::vector<std::string>& args) {
    std::vector<std::string> argv{CUTOVER_BIN};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--state-dir", state_.string()});
    return run(argv);
  }
  // `printf %s VALUE | cutover secrets set NAME`
  CommandResult set_secret(const std::string& name, const std::string& value) {
    return run({"/bin/sh", "-c",
                "printf '%s\\n' \"$VALUE\" | \"$CUTOVER\" secrets set \"$NAME\" --state-dir "
                "\"$STATE\""},
               {{"VALUE", value}, {"CUTOVER", CUTOVER_BIN}, {"NAME", name}, {"STATE", state_}});
  }

  json latest_execution() {
    json ex = cli_json({"executions"});
    if (!ex.is_object() || ex["executions"].empty()) return json();
    return ex["executions"][0];
  }
};

TEST_F(Secrets, InjectedIntoStagesAndTasksAndNeverWrittenInClear) {
  start_serve();
  // The first execution needs a secret nobody has set yet: it fails and says which, and where.
  json failed;
  ASSERT_TRUE(wait_for(
      [&] {
        failed = latest_execution();
        return failed.is_object() && failed["status"] == "failed";
      },
      kDeployTimeout))
      << serve_log();
  const std::string why = failed["message"];
  EXPECT_NE(why.find("build: secret build/token for BUILD_TOKEN: no secret named \"build/token\""),
            std::string::npos)
      << why;

  auto set1 = set_secret("build/token", kBuildToken);
  ASSERT_EQ(set1.exit_code, 0) << set1.err;
  EXPECT_EQ(set1.out, "secret build/token set (version 1)\n");
  auto set2 = set_secret("hello/db-password", "not-the-final-value");
  ASSERT_EQ(set2.exit_code, 0) << set2.err;
  auto set3 = set_secret("hello/db-password", kDbPassword);
  ASSERT_EQ(set3.exit_code, 0) << set3.err;
  EXPECT_EQ(set3.out, "secret hello/db-password set (version 2)\n");
  auto bad = set_secret("Bad Name", "x");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("invalid secret name"), std::string::npos) << bad.err;

  json list = cli_json({"secrets", "list"});
  ASSERT_TRUE(list.is_object()) << list;
  ASSERT_EQ(list["secrets"].size(), 2u);
  EXPECT_EQ(list["secrets"][0]["name"], "build/token");
  EXPECT_EQ(list["secrets"][1]["name"], "hello/db-password");
  EXPECT_EQ(list["secrets"][1]["version"], 2);

  // The secrets API needs the token like every other resource.
  std::string api = read_text(state_ / "api-address");
  api = api.substr(0, api.find('\n'));
  EXPECT_EQ(http_get(std::stoi(api.substr(api.rfind(':') + 1)), "/v1/secrets").status, 401);

  // Now the pipeline passes and the task starts with its secret.
  sh(app_, "echo v2 > VERSION && git commit -q -am 'hello v2'");
  ASSERT_TRUE(wait_for(
      [&] {
        auto r = http_get(port_, "/");
        return r.status == 200 && r.body.find("hello from v2 ") != std::string::npos;
      },
      kDeployTimeout))
      << serve_log();
  json execution = latest_execution();
  ASSERT_EQ(execution["status"], "succeeded") << execution;
  auto logs = cli({"logs", execution["id"]});
  ASSERT_EQ(logs.exit_code, 0) << logs.err;
  EXPECT_NE(logs.out.find("[build] built with token ***\n"), std::string::npos) << logs.out;

  json st = cli_json({"status"});
  ASSERT_EQ(st["services"][0]["tasks"].size(), 2u) << st;
  std::vector<fs::path> task_logs;
  for (const auto& entry : fs::directory_iterator(state_ / "tasks")) {
    if (entry.path().extension() == ".log") task_logs.push_back(entry.path());
  }
  ASSERT_EQ(task_logs.size(), 2u);
  for (const auto& p : task_logs) {
    ASSERT_TRUE(wait_for([&] { return read_text(p).find("db password is ***\n") == 0; }, 30s))
        << p << ": " << read_text(p);
  }

  // Removing a secret: gone from the list; a task that needed it would now fail to start.
  auto rm = cli({"secrets", "rm", "build/token"});
  ASSERT_EQ(rm.exit_code, 0) << rm.err;
  EXPECT_EQ(rm.out, "secret build/token removed\n");
  auto rm_again = cli({"secrets", "rm", "build/token"});
  EXPECT_NE(rm_again.exit_code, 0);
  EXPECT_NE(rm_again.err.find("no secret named \"build/token\""), std::string::npos)
      << rm_again.err;
  list = cli_json({"secrets", "list"});
  ASSERT_EQ(list["secrets"].size(), 1u);

  // The audit trail names who set and removed which secret (never the value) and verifies.
  const json audit = cli_json({"audit"});
  ASSERT_TRUE(audit.is_object()) << cli({"audit"}).err;
  EXPECT_EQ(audit["chain"]["verified"], true) << audit.dump(2);
  std::vector<std::string> secret_actions;
  for (const auto& e : audit["entries"]) {
    const std::string action = e.value("action", "");
    if (action.rfind("secret.", 0) == 0) {
      secret_actions.push_back(action + " " + e.value("subject", ""));
      EXPECT_EQ(e.value("actor", ""), "api") << e;
    }
  }
  EXPECT_EQ(secret_actions,
            (std::vector<std::string>{
                "secret.set secret:build/token", "secret.set secret:hello/db-password",
                "secret.set secret:hello/db-password", "secret.remove secret:build/token"}))
      << audit.dump(2);

  // Every byte cutover wrote or answered: no value in clear anywhere.
  std::string everything;
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"status"}, {"executions"}, {"history", "hello"}, {"secrets", "list"}, {"audit"}}) {
    everything += cli_json(args).dump();
  }
  const json executions = cli_json({"executions"});
  for (const auto& e : executions["executions"]) {
    everything += cli({"logs", e["id"]}).out;
  }
  for (const auto& entry : fs::recursive_directory_iterator(state_)) {
    if (entry.is_regular_file() && entry.path().extension() != ".sock") {
      everything += read_text(entry.path());
    }
  }
  everything += serve_log();
  ASSERT_NE(everything.find("hello/db-password"), std::string::npos);  // the search sees names
  ASSERT_NE(everything.find("db password is ***"), std::string::npos);
  for (const std::string& value : {kBuildToken, kDbPassword, std::string("not-the-final-value")}) {
    EXPECT_EQ(everything.find(value), std::string::npos) << value << " found in clear";
  }

  // An entry rewritten behind cutover's back (here: who removed the secret) breaks the chain, and
  // `cutover audit` says where and exits 3.
  auto text = cli({"audit"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("chain: verified"), std::string::npos) << text.out;
  const std::string db = (state_ / "state.db").string();
  auto tampered = run({"python3", "-c",
                       "import sqlite3, sys\n"
                       "c = sqlite3.connect(sys.argv[1], timeout=30)\n"
                       "n = c.execute(\"UPDATE audit_log SET actor = 'mallory' WHERE action = "
                       "'secret.remove'\").rowcount\n"
                       "c.commit()\n"
                       "print(n)\n",
                       db});
  ASSERT_EQ(tampered.exit_code, 0) << tampered.err;
  ASSERT_EQ(tampered.out, "1\n");
  text = cli({"audit"});
  EXPECT_EQ(text.exit_code, 3) << text.out;
  EXPECT_NE(text.err.find("audit chain broken at entry"), std::string::npos) << text.err;
  EXPECT_NE(text.err.find("the entry was modified"), std::string::npos) << text.err;
}

}  // namespace
}  // namespace cutover::e2e
