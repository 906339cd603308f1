// One command run in a sandbox: the request, its live output, its result.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/timespan.hpp>

namespace corral::messages {

enum class exec_end : uint8_t { exited, timed_out, killed, oom_killed, sandbox_lost };
enum class output_stream : uint8_t { stdout_stream = 1, stderr_stream = 2 };

const char* to_string(exec_end x) noexcept;
const char* to_string(output_stream x) noexcept;

struct exec_request {
  std::vector<std::string> argv;           // run as is: no shell unless argv asks for one
  std::map<std::string, std::string> env;  // this call only (credentials live here)
  std::string workdir;
  caf::timespan timeout{0};  // zero: the sandbox's default
  uint64_t max_stdout = 0;   // zero: the sandbox's default
  uint64_t max_stderr = 0;
  bool has_stdin = false;
  std::string stdin_data;
  // Receives (output_atom, output_chunk) as output arrives, before the result.
  caf::actor subscriber;

  // Every field, in declaration order (tests check that what crossed the network arrived equal).
  bool operator==(const exec_request&) const = default;
};

struct output_chunk {
  uint64_t exec_seq = 0;  // which exec of the sandbox
  output_stream stream = output_stream::stdout_stream;
  std::string bytes;

  // Every field, in declaration order (tests check that what crossed the network arrived equal).
  bool operator==(const output_chunk&) const = default;
};

struct exec_result {
  int32_t exit_code = 0;
  std::string stdout_data;
  std::string stderr_data;
  bool stdout_truncated = false;
  bool stderr_truncated = false;
  uint64_t stdout_bytes = 0;  // all produced, kept or not
  uint64_t stderr_bytes = 0;
  caf::timespan duration{0};
  exec_end end = exec_end::exited;
  std::vector<std::string> warnings;  // e.g. reserved env keys stripped from this call

  // Every field, in declaration order (tests check that what crossed the network arrived equal).
  bool operator==(const exec_result&) const = default;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, exec_request& x) {
  return f(caf::meta::type_name("exec_request"), x.argv, x.env, x.workdir, x.timeout, x.max_stdout,
           x.max_stderr, x.has_stdin, x.stdin_data, x.subscriber);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, output_chunk& x) {
  return f(caf::meta::type_name("output_chunk"), x.exec_seq, x.stream, x.bytes);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, exec_result& x) {
  return f(caf::meta::type_name("exec_result"), x.exit_code, x.stdout_data, x.stderr_data,
           x.stdout_truncated, x.stderr_truncated, x.stdout_bytes, x.stderr_bytes, x.duration,
           x.end, x.warnings);
}

}  // namespace corral::messages
