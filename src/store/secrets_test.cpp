#include "store/secrets.hpp"

#include <sqlite3.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/fs.hpp"
#include "core/id.hpp"

namespace cutover::store {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
namespace fs = std::filesystem;

std::string file_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Unsets CUTOVER_SECRET_KEY for the test and restores it after.
class ScopedKeyEnv {
 public:
  explicit ScopedKeyEnv(const char* value) {
    if (const char* old = std::getenv(kName)) old_ = old;
    if (value != nullptr) {
      ::setenv(kName, value, 1);
    } else {
      ::unsetenv(kName);
    }
  }
  ~ScopedKeyEnv() {
    if (old_) {
      ::setenv(kName, old_->c_str(), 1);
    } else {
      ::unsetenv(kName);
    }
  }

 private:
  static constexpr const char* kName = "CUTOVER_SECRET_KEY";
  std::optional<std::string> old_;
};

class SecretsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("cutover-secrets-test-" + core::random_hex(6));
    ASSERT_TRUE(core::ensure_dir(dir_, 0700));
    db_file_ = dir_ / "state.db";
    auto s = Store::open(db_file_, clock_);
    ASSERT_TRUE(s.ok()) << s.error().message;
    store_ = std::move(s.value());
  }
  void TearDown() override {
    store_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  void raw_exec(const std::string& sql) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(db_file_.c_str(), &db), SQLITE_OK);
    char* err = nullptr;
    EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK)
        << (err != nullptr ? err : "");
    sqlite3_free(err);
    sqlite3_close(db);
  }

  // Every byte SQLite has written for the database: the file, its WAL and shared memory.
  std::string database_bytes() {
    std::string all;
    for (const char* suffix : {"", "-wal", "-shm"}) {
      fs::path p = db_file_;
      p += suffix;
      if (fs::exists(p)) all += file_bytes(p);
    }
    return all;
  }

  fs::path dir_;
  fs::path db_file_;
  core::SimulatedClock clock_;
  std::unique_ptr<Store> store_;
};

TEST_F(SecretsTest, SetGetListRemove) {
  SecretStore secrets(*store_, SecretKey::generate());
  auto first = secrets.set("web/database-url", "postgres://u:p@db/web");
  ASSERT_TRUE(first.ok()) << first.error().message;
  EXPECT_EQ(first->version, 1);
  clock_.advance(std::chrono::seconds(5));
  auto second = secrets.set("web/database-url", "postgres://u:rotated@db/web");
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->version, 2);
  EXPECT_EQ(second->created_at, first->created_at);
  EXPECT_EQ(second->updated_at, first->updated_at + 5000);
  ASSERT_TRUE(secrets.set("npm-token", "npm_abc"));

  auto value = secrets.get("web/database-url");
  ASSERT_TRUE(value.ok()) << value.error().message;
  EXPECT_EQ(*value, "postgres://u:rotated@db/web");

  auto list = secrets.list();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].name, "npm-token");
  EXPECT_EQ((*list)[1].name, "web/database-url");
  EXPECT_EQ((*list)[1].version, 2);

  auto removed = secrets.remove("npm-token");
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ(removed->name, "npm-token");
  auto gone = secrets.get("npm-token");
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().kind, core::ErrorKind::NotFound);
  EXPECT_THAT(gone.error().message, HasSubstr("cutover secrets set npm-token"));
  auto again = secrets.remove("npm-token");
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().kind, core::ErrorKind::NotFound);
}

TEST_F(SecretsTest, ValuesNeverReachTheDatabaseFileInClear) {
  SecretStore secrets(*store_, SecretKey::generate());
  const std::string v1 = "first-value-" + core::random_hex(8);
  const std::string v2 = "second-value-" + core::random_hex(8) + std::string(3000, 'Q');
  ASSERT_TRUE(secrets.set("a", v1));
  ASSERT_TRUE(secrets.set("a", v2));  // the old ciphertext may linger in a free page: still sealed
  ASSERT_TRUE(secrets.set("b/c", v1));
  ASSERT_TRUE(secrets.remove("b/c"));
  ASSERT_EQ(*secrets.get("a"), v2);
  std::string bytes = database_bytes();
  ASSERT_THAT(bytes, HasSubstr("b/c"));  // names are stored in clear: the grep does see the file
  EXPECT_EQ(bytes.find(v1), std::string::npos);
  EXPECT_EQ(bytes.find(v2.substr(0, 30)), std::string::npos);
  EXPECT_EQ(bytes.find(std::string(100, 'Q')), std::string::npos);
  store_.reset();  // checkpoint the WAL into the main file, then look again
  bytes = database_bytes();
  EXPECT_EQ(bytes.find(v1), std::string::npos);
  EXPECT_EQ(bytes.find(v2.substr(0, 30)), std::string::npos);
}

TEST_F(SecretsTest, AnotherKeyIsReportedAsSuch) {
  const SecretKey key = SecretKey::generate();
  ASSERT_TRUE(SecretStore(*store_, key).set("db", "value-1"));
  const SecretKey other = SecretKey::generate();
  ASSERT_NE(key.id(), other.id());
  auto r = SecretStore(*store_, other).get("db");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, core::ErrorKind::Internal);
  EXPECT_THAT(r.error().message, HasSubstr("sealed with key " + key.id()));
  EXPECT_THAT(r.error().message, HasSubstr(other.id()));
}

TEST_F(SecretsTest, ModifiedOrMovedCiphertextDoesNotOpen) {
  SecretStore secrets(*store_, SecretKey::generate());
  ASSERT_TRUE(secrets.set("one", "value-one"));
  ASSERT_TRUE(secrets.set("two", "value-two"));
  // A row's ciphertext copied under another name: the name is bound as associated data.
  raw_exec(
      "UPDATE secrets SET nonce = (SELECT nonce FROM secrets WHERE name = 'one'), ciphertext = "
      "(SELECT ciphertext FROM secrets WHERE name = 'one') WHERE name = 'two'");
  auto moved = secrets.get("two");
  ASSERT_FALSE(moved.ok());
  EXPECT_THAT(moved.error().message, HasSubstr("do not authenticate"));
  // One flipped bit.
  raw_exec(
      "UPDATE secrets SET ciphertext = (CASE substr(ciphertext, 1, 1) WHEN '0' THEN '1' ELSE '0' "
      "END) || substr(ciphertext, 2) WHERE name = 'one'");
  auto flipped = secrets.get("one");
  ASSERT_FALSE(flipped.ok());
  EXPECT_THAT(flipped.error().message, HasSubstr("do not authenticate"));
  raw_exec("UPDATE secrets SET nonce = 'zz' WHERE name = 'one'");
  auto damaged = secrets.get("one");
  ASSERT_FALSE(damaged.ok());
  EXPECT_THAT(damaged.error().message, HasSubstr("damaged"));
}

TEST_F(SecretsTest, BadNamesAndValuesAreRefusedWithoutQuotingTheValue) {
  SecretStore secrets(*store_, SecretKey::generate());
  for (const char* name : {"", "/a", "a/", "a//b", "-a", "a b", "a/.b"}) {
    auto r = secrets.set(name, "v");
    ASSERT_FALSE(r.ok()) << name;
    EXPECT_THAT(r.error().message, HasSubstr("invalid secret name")) << name;
  }
  EXPECT_FALSE(secrets.set(std::string(129, 'a'), "v").ok());
  EXPECT_TRUE(secrets.set(std::string(128, 'a'), "v").ok());
  EXPECT_TRUE(secrets.set("Web.1/db_URL-2", "v").ok());

  const std::string nul_value = std::string("sensitive") + '\0' + "tail";
  auto nul = secrets.set("x", nul_value);
  ASSERT_FALSE(nul.ok());
  EXPECT_THAT(nul.error().message, HasSubstr("NUL byte"));
  EXPECT_THAT(nul.error().message, Not(HasSubstr("sensitive")));
  auto empty = secrets.set("x", "");
  ASSERT_FALSE(empty.ok());
  EXPECT_THAT(empty.error().message, HasSubstr("empty"));
  auto big = secrets.set("x", std::string(kMaxSecretValueBytes + 1, 'z'));
  ASSERT_FALSE(big.ok());
  EXPECT_THAT(big.error().message, HasSubstr("65537 bytes"));
  EXPECT_TRUE(secrets.set("x", std::string(kMaxSecretValueBytes, 'z')).ok());
}

TEST_F(SecretsTest, KeyFileIsCreatedOnceWithMode0600) {
  ScopedKeyEnv no_env(nullptr);
  const fs::path state = dir_ / "state";
  auto first = SecretKey::load(state);
  ASSERT_TRUE(first.ok()) << first.error().message;
  struct stat sb;
  ASSERT_EQ(::stat((state / "secret.key").c_str(), &sb), 0);
  EXPECT_EQ(sb.st_mode & 0777, 0600u);
  EXPECT_EQ(file_bytes(state / "secret.key").size(), 65u);  // 64 hex + newline
  auto second = SecretKey::load(state);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->id(), first->id());
  // A value sealed with the first load opens with the second.
  ASSERT_TRUE(SecretStore(*store_, *first).set("k", "v"));
  EXPECT_EQ(*SecretStore(*store_, *second).get("k"), "v");

  ASSERT_EQ(::chmod((state / "secret.key").c_str(), 0640), 0);
  auto loose = SecretKey::load(state);
  ASSERT_FALSE(loose.ok());
  EXPECT_THAT(loose.error().message, HasSubstr("chmod 600"));
}

TEST_F(SecretsTest, KeyFromTheEnvironmentWins) {
  const std::string hex(64, 'a');
  ScopedKeyEnv env(hex.c_str());
  auto key = SecretKey::load(dir_ / "state");
  ASSERT_TRUE(key.ok()) << key.error().message;
  EXPECT_EQ(key->source(), "CUTOVER_SECRET_KEY");
  EXPECT_EQ(key->id(), SecretKey::from_hex(hex, "test")->id());
  EXPECT_FALSE(fs::exists(dir_ / "state" / "secret.key"));

  ScopedKeyEnv bad("not-hex-at-all-but-a-secret-anyway");
  auto r = SecretKey::load(dir_ / "state");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message, HasSubstr("CUTOVER_SECRET_KEY"));
  EXPECT_THAT(r.error().message, HasSubstr("64 hexadecimal characters"));
  EXPECT_THAT(r.error().message, Not(HasSubstr("not-hex")));
}

TEST_F(SecretsTest, MigratesADatabaseWrittenBeforeTheSecretStore) {
  store_.reset();
  raw_exec("DROP TABLE secrets; DROP TABLE task_definitions; PRAGMA user_version = 1;");
  auto s = Store::open(db_file_, clock_);
  ASSERT_TRUE(s.ok()) << s.error().message;
  SecretStore secrets(**s, SecretKey::generate());
  ASSERT_TRUE(secrets.set("after-upgrade", "v"));
  EXPECT_EQ(*secrets.get("after-upgrade"), "v");
}

}  // namespace
}  // namespace cutover::store
