// Result<T> and Error: how failures that a user, a file or the network can cause travel between
// modules. No exception crosses a module boundary (STYLE.md, "Errors").
//
// Thread-safety: value types; no shared state.
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace cutover::core {

// An error a person can act on: "cutover.yaml:14:7: traffic.percent must be 1-100, got 140".
// What kind of failure it is, for callers that answer differently (the API maps it to a status).
enum class ErrorKind { Invalid, NotFound, Conflict, Unavailable, Internal };

struct Error {
  std::string message;
  ErrorKind kind = ErrorKind::Invalid;

  Error() = default;
  explicit Error(std::string msg, ErrorKind k = ErrorKind::Invalid)
      : message(std::move(msg)), kind(k) {}
  // Prefixes context: Error("bad port").wrap("listeners.production") -> "listeners.production: bad
  // port"
  Error wrap(const std::string& context) const { return Error(context + ": " + message, kind); }
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    assert(ok() && "Result::value() on an error");
    return std::get<0>(v_);
  }
  const T& value() const& {
    assert(ok() && "Result::value() on an error");
    return std::get<0>(v_);
  }
  T&& value() && {
    assert(ok() && "Result::value() on an error");
    return std::get<0>(std::move(v_));
  }
  const Error& error() const {
    assert(!ok() && "Result::error() on a value");
    return std::get<1>(v_);
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const {
    assert(!ok_ && "Result::error() on success");
    return error_;
  }

 private:
  Error error_;
  bool ok_ = true;
};

inline Result<void> ok() { return {}; }

}  // namespace cutover::core
