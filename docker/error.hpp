// The adapter's one error type: what went wrong, classified from HTTP status and transport,
// with the engine's own message.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <variant>

namespace corral::docker {

enum class errc : uint8_t {
  not_found = 1,       // 404
  conflict,            // 409
  invalid_request,     // 400, or a request we refuse to send
  engine_error,        // 5xx and any other unexpected status
  engine_unavailable,  // no socket, connection refused, engine went away
  api_too_old,         // engine older than API 1.41
  timeout,             // the request's deadline passed
  cancelled,           // cancelled by the caller or by shutdown
  protocol,            // malformed HTTP, JSON or stream framing
  too_large,           // a response over its cap
};

const char* to_string(errc code) noexcept;

struct error {
  errc code;
  std::string message;  // the engine's message, or ours naming what failed
  int http_status = 0;  // 0 when the error did not come from an HTTP response

  std::string describe() const;  // "not_found (404): No such container: x"
};

// Maps an HTTP status plus the (already capped) error body to an error. The body may be
// Docker's {"message": "..."} or anything else; anything else is kept as text.
error error_from_response(int http_status, std::string_view body);

// A value or an error. Deliberately small: the adapter needs nothing more.
template <class T>
class [[nodiscard]] result {
 public:
  result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  result(error err) : v_(std::in_place_index<1>, std::move(err)) {}  // NOLINT

  bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }

  T* get() noexcept { return std::get_if<0>(&v_); }  // null on error
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const docker::error& err() const& { return std::get<1>(v_); }
  docker::error&& err() && { return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, docker::error> v_;
};

template <>
class [[nodiscard]] result<void> {
 public:
  result() = default;
  result(error err) : err_(std::move(err)), failed_(true) {}  // NOLINT

  bool ok() const noexcept { return !failed_; }
  explicit operator bool() const noexcept { return ok(); }
  const docker::error& err() const& { return err_; }
  docker::error&& err() && { return std::move(err_); }

 private:
  docker::error err_{errc::engine_error, {}, 0};
  bool failed_ = false;
};

}  // namespace corral::docker
