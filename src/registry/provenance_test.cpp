#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/fs.hpp"
#include "core/id.hpp"
#include "registry/registry.hpp"

namespace fs = std::filesystem;
using cutover::registry::BuildFacts;
using cutover::registry::Registry;
using cutover::registry::SigningKey;
using nlohmann::json;

namespace {

void make_writable(const fs::path& p) {
  std::error_code ec;
  ::chmod(p.c_str(), 0755);
  for (auto it = fs::recursive_directory_iterator(p, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (!it->is_symlink(ec)) ::chmod(it->path().c_str(), 0755);
  }
}

std::string base64_of(const std::string& raw) {
  static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < raw.size(); i += 3) {
    const unsigned v = (static_cast<unsigned char>(raw[i]) << 16) |
                       (static_cast<unsigned char>(raw[i + 1]) << 8) |
                       static_cast<unsigned char>(raw[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out += k[(v >> s) & 63];
  }
  if (i + 1 == raw.size()) {
    const unsigned v = static_cast<unsigned char>(raw[i]) << 16;
    out += k[(v >> 18) & 63];
    out += k[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == raw.size()) {
    const unsigned v =
        (static_cast<unsigned char>(raw[i]) << 16) | (static_cast<unsigned char>(raw[i + 1]) << 8);
    out += k[(v >> 18) & 63];
    out += k[(v >> 12) & 63];
    out += k[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

class ProvenanceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("cutover-provenance-" + cutover::core::random_hex(6));
    fs::create_directories(root_ / "workspace" / "dist");
    ASSERT_TRUE(
        cutover::core::write_file_atomic(root_ / "workspace" / "dist" / "app", "v1\n", 0755).ok());
    auto r = Registry::open(root_ / "registry");
    ASSERT_TRUE(r.ok()) << r.error().message;
    reg_ = std::move(r).value();
    auto a = reg_->put_directory(root_ / "workspace", {"dist/"});
    ASSERT_TRUE(a.ok()) << a.error().message;
    digest_ = a->digest;
    dir_ = a->path.parent_path();
    facts_.repository = "https://bot:hunter2@git.example.com/app.git";
    facts_.branch = "main";
    facts_.commit_sha = std::string(40, 'a');
    facts_.execution_id = "ex-1";
    facts_.stage = "build";
    facts_.builder = "cutover 0.1.0 on test";
    facts_.started_unix_ms = 1'700'000'000'000;
    facts_.finished_unix_ms = 1'700'000'001'000;
  }
  void TearDown() override {
    make_writable(root_);
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  fs::path statement_file() const { return dir_ / "provenance" / "ex-1.json"; }
  // Replaces the statement file's content (it is 0444 like everything in the registry).
  void overwrite_statement(const std::string& text) {
    ASSERT_TRUE(cutover::core::write_file_atomic(statement_file(), text, 0444).ok());
  }

  fs::path root_;
  std::unique_ptr<Registry> reg_;
  std::string digest_;
  fs::path dir_;
  BuildFacts facts_;
  SigningKey key_ = SigningKey::generate();
};

TEST_F(ProvenanceTest, SignedStatementVerifiesAndRecordsTheBuild) {
  auto file = reg_->attest(digest_, facts_, key_);
  ASSERT_TRUE(file.ok()) << file.error().message;
  EXPECT_EQ(*file, statement_file());
  auto p = reg_->verify(digest_, key_.public_key(), "ex-1");
  ASSERT_TRUE(p.ok()) << p.error().message;
  EXPECT_EQ(p->digest, digest_);
  EXPECT_EQ(p->commit_sha, facts_.commit_sha);
  EXPECT_EQ(p->execution_id, "ex-1");
  EXPECT_EQ(p->stage, "build");
  EXPECT_EQ(p->builder, "cutover 0.1.0 on test");
  EXPECT_EQ(p->finished_at, "2023-11-14T22:13:21.000Z");
  EXPECT_EQ(p->key_id, key_.key_id());
  // Any statement (none named) also verifies.
  EXPECT_TRUE(reg_->verify(digest_, key_.public_key()).ok());
  // The envelope is DSSE around an in-toto statement; credentials never reach it.
  auto text = cutover::core::read_file(statement_file());
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(text->find("hunter2"), std::string::npos);
  json env = json::parse(*text);
  EXPECT_EQ(env["payloadType"], "application/vnd.in-toto+json");
  EXPECT_EQ(env["signatures"][0]["keyid"], key_.key_id());
}

TEST_F(ProvenanceTest, StatementIsCanonical) {
  const std::string a = cutover::registry::provenance_statement(digest_, "ab", facts_);
  const std::string b = cutover::registry::provenance_statement(digest_, "ab", facts_);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a, json::parse(a).dump());  // sorted keys, no whitespace
  EXPECT_EQ(a.find('\n'), std::string::npos);
  json st = json::parse(a);
  EXPECT_EQ(st["_type"], "https://in-toto.io/Statement/v1");
  EXPECT_EQ(st["subject"][0]["digest"]["sha256"], digest_.substr(7));
  EXPECT_EQ(st["predicate"]["buildDefinition"]["externalParameters"]["repository"],
            "https://git.example.com/app.git");
  EXPECT_EQ(cutover::registry::dsse_pae("t", "body"), "DSSEv1 1 t 4 body");
}

TEST_F(ProvenanceTest, MissingStatementIsRefused) {
  auto p = reg_->verify(digest_, key_.public_key(), "ex-1");
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.error().message.find(digest_), std::string::npos) << p.error().message;
  EXPECT_NE(p.error().message.find("no provenance statement"), std::string::npos)
      << p.error().message;
  EXPECT_FALSE(reg_->verify(digest_, key_.public_key()).ok());
}

TEST_F(ProvenanceTest, TamperedStatementIsRefused) {
  ASSERT_TRUE(reg_->attest(digest_, facts_, key_).ok());
  json env = json::parse(*cutover::core::read_file(statement_file()));
  // Another commit, same signature.
  auto forged = facts_;
  forged.commit_sha = std::string(40, 'b');
  env["payload"] = base64_of(cutover::registry::provenance_statement(digest_, "x", forged));
  overwrite_statement(env.dump());
  auto p = reg_->verify(digest_, key_.public_key(), "ex-1");
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.error().message.find("does not verify"), std::string::npos) << p.error().message;
  EXPECT_NE(p.error().message.find(digest_), std::string::npos);
}

TEST_F(ProvenanceTest, TamperedSignatureIsRefused) {
  ASSERT_TRUE(reg_->attest(digest_, facts_, key_).ok());
  json env = json::parse(*cutover::core::read_file(statement_file()));
  std::string sig = env["signatures"][0]["sig"];
  sig[3] = sig[3] == 'A' ? 'B' : 'A';
  env["signatures"][0]["sig"] = sig;
  overwrite_statement(env.dump());
  auto p = reg_->verify(digest_, key_.public_key(), "ex-1");
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.error().message.find("does not verify"), std::string::npos) << p.error().message;
  // Garbage instead of an envelope is refused too, with the file named.
  overwrite_statement("not json");
  p = reg_->verify(digest_, key_.public_key(), "ex-1");
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.error().message.find(statement_file().string()), std::string::npos);
}

TEST_F(ProvenanceTest, WrongKeyIsRefused) {
  ASSERT_TRUE(reg_->attest(digest_, facts_, key_).ok());
  SigningKey other = SigningKey::generate();
  auto p = reg_->verify(digest_, other.public_key(), "ex-1");
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.error().message.find(other.key_id()), std::string::npos) << p.error().message;
  // A statement signed by another key is as bad as a modified one.
  ASSERT_TRUE(reg_->attest(digest_, facts_, other).ok());
  EXPECT_FALSE(reg_->verify(digest_, key_.public_key(), "ex-1").ok());
  EXPECT_TRUE(reg_->verify(digest_, other.public_key(), "ex-1").ok());
}

TEST_F(ProvenanceTest, SubjectMismatchIsRefused) {
  // A validly signed statement about another artifact, copied beside this one.
  ASSERT_TRUE(
      cutover::core::write_file_atomic(root_ / "workspace" / "dist" / "app", "v2\n", 0755).ok());
  auto other = reg_->put_directory(root_ / "workspace", {"dist/"});
  ASSERT_TRUE(other.ok());
  ASSERT_NE(other->digest, digest_);
  auto file = reg_->attest(other->digest, facts_, key_);
  ASSERT_TRUE(file.ok());
  fs::create_directories(dir_ / "provenance");
  overwrite_statement(*cutover::core::read_file(*file));
  auto p = reg_->verify(digest_, key_.public_key(), "ex-1");
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.error().message.find("not this artifact"), std::string::npos) << p.error().message;
}

TEST_F(ProvenanceTest, TamperedTreeIsRefusedAndNeverSigned) {
  ASSERT_TRUE(reg_->attest(digest_, facts_, key_).ok());
  const fs::path app = dir_ / "tree" / "dist" / "app";
  ::chmod((dir_ / "tree" / "dist").c_str(), 0755);
  ::chmod(app.c_str(), 0755);
  ASSERT_TRUE(cutover::core::write_file_atomic(app, "evil\n", 0555).ok());
  auto p = reg_->verify(digest_, key_.public_key(), "ex-1");
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.error().message.find("tampered"), std::string::npos) << p.error().message;
  EXPECT_NE(p.error().message.find("dist/app was modified"), std::string::npos);
  auto again = facts_;
  again.execution_id = "ex-2";
  EXPECT_FALSE(reg_->attest(digest_, again, key_).ok());
}

TEST_F(ProvenanceTest, TamperedManifestIsRefused) {
  ASSERT_TRUE(reg_->attest(digest_, facts_, key_).ok());
  auto manifest = cutover::core::read_file(dir_ / "manifest.json");
  ASSERT_TRUE(manifest.ok());
  ASSERT_TRUE(cutover::core::write_file_atomic(dir_ / "manifest.json", *manifest + " ", 0444).ok());
  auto p = reg_->verify(digest_, key_.public_key(), "ex-1");
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.error().message.find("manifest.json was modified"), std::string::npos)
      << p.error().message;
}

TEST_F(ProvenanceTest, KeyFileIsCreatedPrivateAndReloaded) {
  const fs::path state = root_ / "state";
  auto k1 = SigningKey::load_or_create(state);
  ASSERT_TRUE(k1.ok()) << k1.error().message;
  struct stat st {};
  ASSERT_EQ(::stat((state / SigningKey::kKeyFile).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto pub = cutover::core::read_file(state / SigningKey::kPublicFile);
  ASSERT_TRUE(pub.ok());
  EXPECT_EQ(*pub, k1->public_key_pem());
  EXPECT_EQ(pub->rfind("-----BEGIN PUBLIC KEY-----\n", 0), 0u);
  auto k2 = SigningKey::load_or_create(state);
  ASSERT_TRUE(k2.ok());
  EXPECT_EQ(k1->public_key(), k2->public_key());
  EXPECT_EQ(k1->key_id(), k2->key_id());
  EXPECT_EQ(k1->public_key_hex().size(), 64u);
}

TEST_F(ProvenanceTest, KeyFileReadableByOthersIsRefused) {
  const fs::path state = root_ / "state";
  ASSERT_TRUE(SigningKey::load_or_create(state).ok());
  ASSERT_EQ(::chmod((state / SigningKey::kKeyFile).c_str(), 0640), 0);
  auto k = SigningKey::load_or_create(state);
  ASSERT_FALSE(k.ok());
  EXPECT_NE(k.error().message.find("chmod 600"), std::string::npos) << k.error().message;
  EXPECT_NE(k.error().message.find("0640"), std::string::npos) << k.error().message;
  // A corrupt key file is an error, never silently replaced.
  ASSERT_TRUE(cutover::core::write_file_atomic(state / SigningKey::kKeyFile, "xyz\n", 0600).ok());
  k = SigningKey::load_or_create(state);
  ASSERT_FALSE(k.ok());
  EXPECT_NE(k.error().message.find("64 hexadecimal"), std::string::npos) << k.error().message;
}

}  // namespace
