// A test fixture around the real `cutover serve`: a copy of examples/hello in a git repository
// made by the test (production listener on a free port), the controller started on it with a
// 250 ms poll, and helpers to commit, query `cutover status` and fetch from production.
#pragma once

#include <signal.h>

#include <memory>
#include <regex>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "harness.hpp"

namespace cutover::e2e {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace std::chrono_literals;

constexpr auto kDeployTimeout = 180s;  // build + health checks under ASan on a busy 2-core box

class ServeTest : public ::testing::Test {
 protected:
  explicit ServeTest(const std::string& prefix) : dir_(prefix) {}

  void SetUp() override {
    app_ = dir_.path() / "app";
    state_ = dir_.path() / "state";
    port_ = free_port();
    fs::copy(fs::path(CUTOVER_SOURCE_DIR) / "examples" / "hello", app_,
             fs::copy_options::recursive);
    std::string yaml = read_text(app_ / "cutover.yaml");
    yaml = std::regex_replace(yaml, std::regex("127\\.0\\.0\\.1:8000"),
                              "127.0.0.1:" + std::to_string(port_));
    write_text(app_ / "cutover.yaml", yaml);
    sh(app_, "git init -q -b main && git add -A && git commit -q -m 'hello v1'");
  }

  void TearDown() override {
    // Tasks and the proxy outlive the controller by design; end them here.
    auto st = status();
    serve_.reset();
    if (st.is_object()) {
      for (const auto& s : st["services"]) {
        for (const auto& t : s["tasks"]) ::kill(-t["pid"].get<int>(), SIGKILL);
      }
    }
    auto health = run({"/bin/sh", "-c",
                       "pkill -KILL -f -- '--admin-socket " + (state_ / "proxy").string() + "'"});
    (void)health;
  }

  // poll: how often serve fetches; webhook tests use a long one so that only a webhook triggers.
  void start_serve(const std::string& poll = "250ms") {
    serve_ = std::make_unique<Child>(
        std::vector<std::string>{CUTOVER_BIN, "serve", "--repo", app_.string(), "--state-dir",
                                 state_.string(), "--api", "127.0.0.1:0", "--poll", poll},
        dir_.path() / "serve.log");
  }

  json cli_json(const std::vector<std::string>& args) {
    std::vector<std::string> argv{CUTOVER_BIN};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--state-dir", state_.string(), "-o", "json"});
    auto r = run(argv);
    if (r.exit_code != 0) return json();
    return json::parse(r.out, nullptr, false);
  }
  json status() { return cli_json({"status"}); }

  std::string serve_log() { return read_text(dir_.path() / "serve.log"); }

  bool serves(const std::string& version) {
    auto r = http_get(port_, "/");
    return r.status == 200 && r.body.find("hello from " + version + " ") != std::string::npos;
  }

  void commit(const std::string& message, const std::string& script) {
    sh(app_, script + " && git commit -q -am '" + message + "'");
  }

  TempDir dir_;
  fs::path app_;
  fs::path state_;
  int port_ = 0;
  std::unique_ptr<Child> serve_;
};

}  // namespace cutover::e2e
