// Shared by the policy's unit tests (tests/unit/policy_*_test.cpp), one definition each: a
// plan from a spec under a runtime, a throw-away directory, the loosened runtime, and
// CHECK_REFUSED (a refusal's code and what its text names).
#pragma once

#include <catch2/catch.hpp>

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "actors/policy.hpp"
#include "actors/runtime_config.hpp"
#include "messages/errors.hpp"
#include "messages/exec.hpp"
#include "messages/sandbox.hpp"

namespace fs = std::filesystem;
namespace pol = corral::actors;
namespace msg = corral::messages;
using msg::corral_errc;
using namespace std::chrono_literals;
using namespace std::string_literals;

namespace corral::unit_tests::policy_testing {

inline constexpr int64_t now_ms = 1'700'000'000'000;
inline const std::string engine_socket = "/var/run/docker.sock";
inline const std::string digest = "sha256:" + std::string(64, 'a');

template <class T>
caf::error error_of(const caf::expected<T>& x) {
  return x ? caf::error{} : x.error();
}

inline caf::error error_of(const caf::error& x) {
  return x;
}

inline caf::expected<pol::sandbox_plan> plan(const msg::sandbox_spec& spec,
                                             const pol::runtime_config& cfg = {},
                                             const std::string& key = "k1") {
  return pol::plan_sandbox(cfg, key, spec, engine_socket, now_ms);
}

inline bool has_warning(const std::vector<std::string>& warnings, const std::string& part) {
  for (const auto& w : warnings) {
    if (w.find(part) != std::string::npos) return true;
  }
  return false;
}

// A fresh directory under the system's temp directory, removed with everything in it.
struct temp_dir {
  fs::path path;
  temp_dir() {
    std::string pattern = (fs::temp_directory_path() / "corral-policy-XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path = fs::canonical(pattern);
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
};

inline msg::sandbox_spec with_workspace(std::string host_path,
                                        msg::access_mode access = msg::access_mode::ro) {
  msg::sandbox_spec spec;
  spec.workspace.host_path = std::move(host_path);
  spec.workspace.access = access;
  return spec;
}

inline pol::sandbox_plan sandbox_for_exec() {
  msg::sandbox_spec spec;
  spec.user = "1234:1234";
  spec.exec_timeout = 90s;
  spec.max_stdout = 1000;
  spec.max_stderr = 2000;
  auto p = plan(spec);
  REQUIRE(p);
  return *p;
}

// A runtime whose policy allows each loosening the tests ask for.
inline pol::runtime_config loose() {
  pol::runtime_config cfg;
  cfg.policy.networks = {"none", "bridge"};
  cfg.policy.writable_root = true;
  cfg.policy.capabilities = {"NET_BIND_SERVICE", "CHOWN", "NET_RAW"};
  return cfg;
}

inline msg::exec_request request(std::vector<std::string> argv) {
  msg::exec_request r;
  r.argv = std::move(argv);
  return r;
}

}  // namespace corral::unit_tests::policy_testing

// The error's code and that its text names the offending value.
#define CHECK_REFUSED(expr, code, mention)                                      \
  do {                                                                          \
    const caf::error refused_ = error_of(expr);                                 \
    INFO("error: " << msg::describe(refused_));                                 \
    CHECK(refused_ == corral_errc::code);                                       \
    CHECK_THAT(msg::describe(refused_), Catch::Contains(std::string(mention))); \
  } while (false)
