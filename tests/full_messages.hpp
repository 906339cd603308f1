// Protocol values with every field set (and edge values: a NUL byte, non-ASCII text, a long
// string), for the round trips of the unit suite (binary format, tests/unit/messages_test.cpp)
// and of the node suite (over a loopback connection, tests/node/types_test.cpp). One copy, so
// a field added to a message is set in both.
#pragma once

#include <chrono>
#include <string>

#include "messages/exec.hpp"
#include "messages/runtime_stats.hpp"
#include "messages/sandbox.hpp"

namespace corral::test {

inline messages::workspace_mount some_workspace() {
  return {"/home/u/project", "/src", messages::access_mode::rw};
}

inline messages::tmpfs_mount some_tmpfs() {
  return {"/cache", 128LL << 20, "mode=1777"};
}

inline messages::sandbox_spec full_spec() {
  using namespace std::chrono_literals;
  messages::sandbox_spec s;
  s.image = "ghcr.io/org/tool:1";
  s.command = {"sh", "-c", "echo 'hi' \"there\"; exit 3", "ünïcødé", std::string("nul\0byte", 8)};
  s.env = {{"A", "1"},
           {"EMPTY", ""},
           {"UNICODE", "gr\xc3\xbc\xc3\x9f"},
           {"LONG", std::string(70000, 'x')}};
  s.workdir = "/src/sub";
  s.user = "1234:5678";
  s.workspace = some_workspace();
  s.tmpfs = {some_tmpfs(), {"/tmp", 1 << 20, ""}};
  s.memory_bytes = 1LL << 30;
  s.memory_swap_bytes = 2LL << 30;
  s.nano_cpus = 1'500'000'000;
  s.pids_limit = 77;
  s.network_mode = "bridge";
  s.writable_root = true;
  s.cap_add = {"NET_BIND_SERVICE", "CHOWN"};
  s.labels = {{"team", "a"}, {"purpose", "round trip"}};
  s.setup_command = {"mkdir", "-p", "/src/out"};
  s.exec_timeout = 12345ms;
  s.max_stdout = 4096;
  s.max_stderr = 8192;
  s.lifetime = 2h;
  s.idle_limit = 5min;
  s.one_shot = true;
  s.allow_hosts = {"api.example.com", "*.pypi.org"};
  return s;
}

inline messages::sandbox_info full_info(const std::string& key = "agent-7.session_2") {
  messages::sandbox_info i;
  i.key = key;
  i.container_id = std::string(64, 'f');
  i.image = "corral/sandbox:busybox";
  i.status = messages::sandbox_status::oom_killed;
  i.created_ms = 1'700'000'000'123;
  i.last_used_ms = 1'700'000'100'456;
  i.execs_run = 42;
  i.execs_in_flight = 3;
  i.memory_bytes = 1LL << 33;
  i.nano_cpus = 1'000'000'000;
  i.pids_limit = 4096;
  i.detail = "killed by the kernel's OOM killer";
  i.warnings = {"env HTTP_PROXY is reserved and was stripped", "network bridge (loosened)"};
  return i;
}

inline messages::exec_request full_exec_request() {
  using namespace std::chrono_literals;
  messages::exec_request r;
  r.argv = {"python3", "-c", "print(1)"};
  r.env = {{"TOKEN", "secret"}, {"LANG", "C.UTF-8"}};
  r.workdir = "/workspace/x";
  r.timeout = 1500ms;
  r.max_stdout = 100;
  r.max_stderr = 200;
  r.has_stdin = true;
  r.stdin_data = std::string("binary\0data\xff", 12);
  return r;  // subscriber stays empty: a handle only makes sense with a live actor
}

inline messages::output_chunk full_chunk() {
  return {9, messages::output_stream::stderr_stream, std::string("\x01\x02\0\xfe", 4)};
}

inline messages::exec_result full_result() {
  using namespace std::chrono_literals;
  messages::exec_result r;
  r.exit_code = -9;
  r.stdout_data = std::string("partial\0out", 11);
  r.stderr_data = std::string(100000, 'e');
  r.stdout_truncated = true;
  r.stderr_truncated = true;
  r.stdout_bytes = 1ULL << 40;
  r.stderr_bytes = 2'000'000;
  r.duration = 987654321ns;
  r.end = messages::exec_end::timed_out;
  r.warnings = {"env LD_PRELOAD is reserved and was stripped", "w2"};
  return r;
}

inline messages::runtime_stats full_stats(const std::string& runtime_name = "ci-runner") {
  messages::runtime_stats s;
  s.runtime_name = runtime_name;
  s.live_sandboxes = 1;
  s.capacity = 2;
  s.created_total = 3;
  s.released_total = 4;
  s.pruned_total = 5;
  s.lost_total = 6;
  s.adopted_total = 7;
  s.execs_total = 8;
  s.execs_in_flight = 9;
  s.pool_ready = 10;
  s.pool_warming = 11;
  s.pool_target = 12;
  s.pool_hits = 13;
  s.pool_misses = 14;
  s.pool_claim_us_total = 15;
  s.pool_refills = 16;
  s.pool_refill_us_total = 17;
  return s;
}

}  // namespace corral::test
