// Status and Result<T>: the error type for expected failures (bad YAML, unknown preset,
// impossible layout). Messages name the field, the value and what would be valid; only
// main() turns a failed Status into an exit code. Modelled on absl::Status / StatusOr.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>

#include <fmt/format.h>

namespace loom::core {

enum class ErrorCode {
  kOk = 0,
  kInvalidArgument,  // a value the user gave is not allowed
  kNotFound,         // a preset, profile or file does not exist
  kParse,            // a file could not be parsed (YAML/JSON syntax)
  kInfeasible,       // a layout that cannot run (does not divide, does not fit)
  kIo,               // reading or writing failed
  kInternal,         // a bug in Loom
};

const char* error_code_name(ErrorCode code);

class Status {
 public:
  Status() = default;
  Status(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  bool ok() const { return code_ == ErrorCode::kOk; }
  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // Prefixes context ("while loading models/llama-7b.yaml: ...") and keeps the code.
  Status with_context(const std::string& context) const {
    if (ok()) return *this;
    return Status(code_, context + ": " + message_);
  }

 private:
  ErrorCode code_ = ErrorCode::kOk;
  std::string message_;
};

inline Status ok_status() { return Status(); }

template <typename... Args>
Status error(ErrorCode code, fmt::format_string<Args...> format, Args&&... args) {
  return Status(code, fmt::format(format, std::forward<Args>(args)...));
}

// Thrown only by Result<T>::value() on misuse (reading the value of a failed result).
class BadResultAccess : public std::logic_error {
 public:
  explicit BadResultAccess(const Status& status)
      : std::logic_error("value() of a failed Result: " + status.message()) {}
};

template <typename T>
class Result {
 public:
  Result(T value) : state_(std::move(value)) {}  // NOLINT: implicit like absl::StatusOr
  Result(Status status) : state_(std::move(status)) {
    if (std::get<Status>(state_).ok()) {
      state_ = Status(ErrorCode::kInternal, "Result constructed from an OK status without a value");
    }
  }

  bool ok() const { return std::holds_alternative<T>(state_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(state_);
  }
  const T& value() const& {
    if (!ok()) throw BadResultAccess(std::get<Status>(state_));
    return std::get<T>(state_);
  }
  T& value() & {
    if (!ok()) throw BadResultAccess(std::get<Status>(state_));
    return std::get<T>(state_);
  }
  T&& value() && {
    if (!ok()) throw BadResultAccess(std::get<Status>(state_));
    return std::get<T>(std::move(state_));
  }
  const T& operator*() const& { return value(); }
  T& operator*() & { return value(); }
  const T* operator->() const { return &value(); }
  T* operator->() { return &value(); }

 private:
  std::variant<T, Status> state_;
};

}  // namespace loom::core

// Propagates a failed Status from an expression returning Status.
#define LOOM_RETURN_IF_ERROR(expr)                  \
  do {                                              \
    ::loom::core::Status loom_status_ = (expr);     \
    if (!loom_status_.ok()) return loom_status_;    \
  } while (0)

#define LOOM_CONCAT_INNER_(a, b) a##b
#define LOOM_CONCAT_(a, b) LOOM_CONCAT_INNER_(a, b)
// Assigns the value of a Result<T> expression to `lhs`, or returns its Status.
#define LOOM_ASSIGN_OR_RETURN(lhs, expr) \
  LOOM_ASSIGN_OR_RETURN_IMPL_(LOOM_CONCAT_(loom_result_, __LINE__), lhs, expr)
#define LOOM_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()
