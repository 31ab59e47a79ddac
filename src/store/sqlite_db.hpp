// Private to the store module: a thin RAII layer over the SQLite C API (one connection, a cache of
// prepared statements, bind/column helpers) and the transaction/savepoint bookkeeping behind
// Store. Nothing outside src/store includes this file.
//
// Thread-safety: none by itself; Store::Impl::mutex serialises every use.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "core/clock.hpp"
#include "core/result.hpp"
#include "store/store.hpp"

// Propagates an error Result from an expression; evaluates to nothing. Private to the module.
#define STORE_TRY(expr)                                            \
  do {                                                             \
    auto&& store_try_result_ = (expr);                             \
    if (!store_try_result_.ok()) return store_try_result_.error(); \
  } while (0)

namespace cutover::store::detail {

// A prepared statement borrowed from the connection's cache; reset and unbound when destroyed.
class Stmt {
 public:
  Stmt(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  Stmt(Stmt&& other) noexcept : db_(other.db_), stmt_(other.stmt_) { other.stmt_ = nullptr; }
  Stmt& operator=(Stmt&&) = delete;
  Stmt(const Stmt&) = delete;
  ~Stmt();

  // Binding, 1-based. Strings are copied (SQLITE_TRANSIENT).
  void bind(int i, std::string_view v);
  void bind(int i, const std::string& v) { bind(i, std::string_view(v)); }
  void bind(int i, const char* v) { bind(i, std::string_view(v)); }
  void bind(int i, int64_t v);
  void bind(int i, int v) { bind(i, static_cast<int64_t>(v)); }
  void bind(int i, std::nullptr_t);
  template <typename T>
  void bind(int i, const std::optional<T>& v) {
    if (v) {
      bind(i, *v);
    } else {
      bind(i, nullptr);
    }
  }
  template <typename... Args>
  void bind_all(const Args&... args) {
    [[maybe_unused]] int i = 0;
    (bind(++i, args), ...);
  }

  // Steps once: true = a row is available, false = done.
  core::Result<bool> step();
  // Steps to completion (for statements without rows).
  core::Result<void> run();

  std::string text(int col) const;  // NULL reads as ""
  std::optional<std::string> opt_text(int col) const;
  int64_t int64(int col) const;
  std::optional<int64_t> opt_int64(int col) const;
  bool is_null(int col) const;

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_;
};

// "store: what: sqlite says" for the last error on db ("store: sqlite says" if what is empty).
core::Error sqlite_error(sqlite3* db, std::string_view what);
// Adds context to a store error: "store: UNIQUE ..." -> "store: insert task t1: UNIQUE ...".
core::Error in_context(const core::Error& e, std::string_view what);

}  // namespace cutover::store::detail

namespace cutover::store {

struct Store::Impl {
  Impl(sqlite3* db, core::Clock& clock) : db(db), clock(clock) {}
  ~Impl();

  // Runs body in a transaction (depth 0) or a savepoint (nested). write = BEGIN IMMEDIATE, so a
  // writer never has to upgrade a read lock (which could fail with SQLITE_BUSY).
  template <typename F>
  auto in_tx(bool write, F&& body) -> decltype(body());

  // A cached statement with args bound, or the prepare error.
  template <typename... Args>
  core::Result<detail::Stmt> query(std::string_view sql, const Args&... args) {
    auto st = prepare(sql);
    if (!st.ok()) return st.error();
    st->bind_all(args...);
    return st;
  }
  core::Result<detail::Stmt> prepare(std::string_view sql);
  core::Result<void> exec(const char* sql);  // one or more statements, no rows

  int64_t now_ms() const { return core::to_unix_ms(clock.wall()); }

  core::Result<void> begin(bool write);
  core::Result<void> end(bool commit);

  sqlite3* db;
  core::Clock& clock;
  std::recursive_mutex mutex;
  int depth = 0;  // open transaction levels on the connection (guarded by mutex)
  std::unordered_map<std::string, sqlite3_stmt*> cache;
};

template <typename F>
auto Store::Impl::in_tx(bool write, F&& body) -> decltype(body()) {
  using R = decltype(body());
  std::lock_guard lock(mutex);
  STORE_TRY(begin(write));
  std::optional<R> result;
  try {
    result.emplace(body());
  } catch (const std::exception& e) {
    result.emplace(core::Error(std::string("store: unexpected exception: ") + e.what()));
  } catch (...) {
    result.emplace(core::Error("store: unexpected exception"));
  }
  if (result->ok()) {
    auto committed = end(true);
    if (!committed.ok()) return committed.error();
  } else {
    (void)end(false);
  }
  return std::move(*result);
}

}  // namespace cutover::store
