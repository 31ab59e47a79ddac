// `cutover validate` and `cutover schema`, black-box, over the checked-in config corpus:
// tests/config/invalid/NAME.yaml with NAME.expected (the exact first error line) and
// tests/config/valid/*.yaml.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "harness.hpp"

namespace cutover::e2e {
namespace {

namespace fs = std::filesystem;

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

TEST(Validate, EveryInvalidFileGetsItsLocationAndMessage) {
  const fs::path dir = fs::path(CUTOVER_SOURCE_DIR) / "tests" / "config" / "invalid";
  int checked = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".yaml") continue;
    fs::path expected_file = entry.path();
    expected_file.replace_extension(".expected");
    ASSERT_TRUE(fs::exists(expected_file)) << expected_file;
    const std::string expected = first_line(read_text(expected_file));
    // Run from the corpus directory so that messages name the file as given.
    auto r = run({"/bin/sh", "-c",
                  "cd '" + dir.string() + "' && exec '" + CUTOVER_BIN + "' validate '" +
                      entry.path().filename().string() + "'"});
    EXPECT_EQ(r.exit_code, 1) << entry.path();
    EXPECT_EQ(first_line(r.err), expected) << entry.path();
    ++checked;
  }
  EXPECT_GE(checked, 30);
}

TEST(Validate, ValidFilesPass) {
  const fs::path dir = fs::path(CUTOVER_SOURCE_DIR) / "tests" / "config" / "valid";
  int checked = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".yaml") continue;
    // The corpus is about the format: its TLS files exist only on a serving host.
    auto r = run({CUTOVER_BIN, "validate", "--no-file-checks", entry.path().string()});
    EXPECT_EQ(r.exit_code, 0) << entry.path() << "\n" << r.err;
    EXPECT_NE(r.out.find("valid"), std::string::npos);
    ++checked;
  }
  EXPECT_GE(checked, 1);
  auto example = run({CUTOVER_BIN, "validate",
                      (fs::path(CUTOVER_SOURCE_DIR) / "examples/hello/cutover.yaml").string()});
  EXPECT_EQ(example.exit_code, 0) << example.err;
}

// Certificate and key files are checked where they will be read: on this host, by `validate`.
TEST(Validate, TlsFilesMustBeReadableUnlessNoFileChecks) {
  TempDir dir("cutover-e2e-validate-tls");
  const fs::path cert = dir.path() / "cert.pem";
  const fs::path key = dir.path() / "key.pem";
  sh(dir.path(), "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout '" +
                     key.string() + "' -out '" + cert.string() +
                     "' -subj /CN=localhost -days 2 >/dev/null 2>&1");
  const fs::path file = dir.path() / "cutover.yaml";
  write_text(file,
             "version: 1\n"
             "pipeline:\n"
             "  stages: [{ name: build, run: make, artifacts: dist }]\n"
             "services:\n"
             "  web:\n"
             "    artifact: build\n"
             "    task: { containers: [{ name: app, command: [dist/server] }] }\n"
             "    listeners:\n"
             "      production:\n"
             "        address: 127.0.0.1:8443\n"
             "        tls:\n"
             "          cert: " +
                 cert.string() +
                 "\n"
                 "          key: " +
                 key.string() +
                 "\n"
                 "        redirect_http: 127.0.0.1:8080\n");
  auto ok = run({CUTOVER_BIN, "validate", file.string()});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;

  fs::remove(key);
  auto missing = run({CUTOVER_BIN, "validate", file.string()});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_EQ(first_line(missing.err),
            file.string() + ":13:16: services.web.listeners.production.tls.key: cannot read \"" +
                key.string() + "\": No such file or directory");
  auto skipped = run({CUTOVER_BIN, "validate", "--no-file-checks", file.string()});
  EXPECT_EQ(skipped.exit_code, 0) << skipped.err;
}

TEST(Validate, MissingFileIsAClearError) {
  auto r = run({CUTOVER_BIN, "validate", "/nonexistent/cutover.yaml"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("/nonexistent/cutover.yaml"), std::string::npos) << r.err;
}

TEST(Schema, IsJsonWithEveryTopLevelKey) {
  auto r = run({CUTOVER_BIN, "schema"});
  ASSERT_EQ(r.exit_code, 0);
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded());
  for (const char* key : {"version", "pipeline", "services"}) {
    EXPECT_TRUE(j["properties"].contains(key)) << key;
  }
}

TEST(Cli, BadArgumentsExitNonZeroWithUsage) {
  auto r = run({CUTOVER_BIN, "serve"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--repo"), std::string::npos) << r.err;
  auto r2 = run({CUTOVER_BIN, "serve", "--repo", "/tmp/x", "--poll", "fast", "--state-dir",
                 "/tmp/cutover-e2e-badpoll"});
  EXPECT_EQ(r2.exit_code, 2);
  EXPECT_NE(r2.err.find("invalid duration"), std::string::npos) << r2.err;
  auto r3 = run({CUTOVER_BIN, "status", "--state-dir", "/nonexistent-state"});
  EXPECT_EQ(r3.exit_code, 1);
  EXPECT_NE(r3.err.find("api-token"), std::string::npos) << r3.err;
}

}  // namespace
}  // namespace cutover::e2e
