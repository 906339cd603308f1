#include "app/cli_output.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>

#include <caf/all.hpp>

#include "app/exit_codes.hpp"
#include "docker/json.hpp"
#include "messages/interfaces.hpp"

namespace corral::app {

using namespace messages;

namespace {

std::string age(int64_t since_ms) {
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  const int64_t s = std::max<int64_t>(0, (now - since_ms) / 1000);
  if (s < 120) return std::to_string(s) + "s";
  if (s < 7200) return std::to_string(s / 60) + "m";
  return std::to_string(s / 3600) + "h";
}

void write_info(docker::json_writer& w, const sandbox_info& info) {
  w.begin_object();
  w.field("key", info.key).field("container_id", info.container_id).field("image", info.image);
  w.field("status", to_string(info.status)).field("created_ms", info.created_ms);
  w.field("last_used_ms", info.last_used_ms).field("execs_run", info.execs_run);
  w.field("execs_in_flight", info.execs_in_flight).field("memory_bytes", info.memory_bytes);
  w.field("nano_cpus", info.nano_cpus).field("pids_limit", info.pids_limit);
  if (!info.detail.empty()) w.field("detail", info.detail);
  w.key("warnings").begin_array();
  for (const auto& x : info.warnings) w.value(x);
  w.end_array();
  w.end_object();
}

}  // namespace

void print_warnings(const std::vector<std::string>& warnings) {
  for (const auto& w : warnings) std::fprintf(stderr, "corral: note: %s\n", w.c_str());
}

void print_sandbox(const sandbox_info& info, bool json) {
  if (json) {
    docker::json_writer w;
    write_info(w, info);
    std::printf("%s\n", w.str().c_str());
  } else {
    std::printf("%s %s\n", info.key.c_str(), info.container_id.substr(0, 12).c_str());
  }
}

void print_sandboxes(const std::vector<sandbox_info>& list, bool json) {
  if (json) {
    docker::json_writer w;
    w.begin_array();
    for (const auto& info : list) write_info(w, info);
    w.end_array();
    std::printf("%s\n", w.str().c_str());
    return;
  }
  std::printf("%-24s %-10s %-12s %-26s %-6s %-6s %s\n", "KEY", "STATUS", "CONTAINER", "IMAGE",
              "AGE", "IDLE", "EXECS");
  for (const auto& info : list) {
    std::printf("%-24s %-10s %-12s %-26s %-6s %-6s %llu\n", info.key.c_str(),
                to_string(info.status), info.container_id.substr(0, 12).c_str(), info.image.c_str(),
                age(info.created_ms).c_str(), age(info.last_used_ms).c_str(),
                static_cast<unsigned long long>(info.execs_run));
  }
}

void print_stats(const runtime_stats& s, bool json) {
  const std::pair<const char*, uint64_t> rows[] = {
      {"live_sandboxes", s.live_sandboxes},
      {"capacity", s.capacity},
      {"created_total", s.created_total},
      {"released_total", s.released_total},
      {"pruned_total", s.pruned_total},
      {"lost_total", s.lost_total},
      {"adopted_total", s.adopted_total},
      {"execs_total", s.execs_total},
      {"execs_in_flight", s.execs_in_flight},
      {"pool_ready", s.pool_ready},
      {"pool_warming", s.pool_warming},
      {"pool_target", s.pool_target},
      {"pool_hits", s.pool_hits},
      {"pool_misses", s.pool_misses},
      {"pool_claim_ms_mean", s.pool_hits ? s.pool_claim_us_total / s.pool_hits / 1000 : 0},
      {"pool_refills", s.pool_refills},
      {"pool_refill_ms_mean", s.pool_refills ? s.pool_refill_us_total / s.pool_refills / 1000 : 0},
  };
  if (json) {
    docker::json_writer w;
    w.begin_object();
    w.field("runtime", s.runtime_name);
    for (const auto& [name, value] : rows) w.field(name, static_cast<int64_t>(value));
    w.end_object();
    std::printf("%s\n", w.str().c_str());
    return;
  }
  std::printf("%-20s %s\n", "runtime", s.runtime_name.c_str());
  for (const auto& [name, value] : rows)
    std::printf("%-20s %llu\n", name, static_cast<unsigned long long>(value));
}

void print_result(const exec_result& result, bool json) {
  if (json) {
    docker::json_writer w;
    w.begin_object();
    w.field("exit_code", result.exit_code).field("end", to_string(result.end));
    w.field("stdout", result.stdout_data).field("stderr", result.stderr_data);
    w.field("stdout_truncated", result.stdout_truncated)
        .field("stderr_truncated", result.stderr_truncated);
    w.field("stdout_bytes", result.stdout_bytes).field("stderr_bytes", result.stderr_bytes);
    w.field("duration_ms",
            static_cast<int64_t>(
                std::chrono::duration_cast<std::chrono::milliseconds>(result.duration).count()));
    w.end_object();
    std::printf("%s\n", w.str().c_str());
    return;
  }
  if (result.stdout_truncated) {
    std::fprintf(stderr, "corral: note: stdout truncated: kept %zu of %llu bytes\n",
                 result.stdout_data.size(), static_cast<unsigned long long>(result.stdout_bytes));
  }
  if (result.stderr_truncated) {
    std::fprintf(stderr, "corral: note: stderr truncated: kept %zu of %llu bytes\n",
                 result.stderr_data.size(), static_cast<unsigned long long>(result.stderr_bytes));
  }
  if (result.end == exec_end::timed_out)
    std::fprintf(stderr, "corral: command timed out and was killed\n");
  if (result.end == exec_end::oom_killed)
    std::fprintf(stderr, "corral: command was killed: out of memory\n");
  if (result.end == exec_end::sandbox_lost)
    std::fprintf(stderr, "corral: the sandbox was lost while the command ran\n");
}

int exit_code_of(const exec_result& r) {
  switch (r.end) {
    case exec_end::timed_out:
      return exit_code::timed_out;
    case exec_end::killed:
    case exec_end::oom_killed:
      return exit_code::killed;
    case exec_end::sandbox_lost:
      return exit_code::error;
    case exec_end::exited:
      break;
  }
  return r.exit_code < 0 || r.exit_code > 255 ? exit_code::error : static_cast<int>(r.exit_code);
}

caf::behavior terminal_writer(caf::event_based_actor*) {
  return {
      [](output_atom, const output_chunk& chunk) {
        FILE* out = chunk.stream == output_stream::stderr_stream ? stderr : stdout;
        const bool written =
            std::fwrite(chunk.bytes.data(), 1, chunk.bytes.size(), out) == chunk.bytes.size() &&
            std::fflush(out) == 0;
        // Nobody reads any more (SIGPIPE is blocked, so the write failed with EPIPE): say so
        // to the process, whose `corral run` releases its sandbox on it.
        if (!written && errno == EPIPE) ::kill(::getpid(), SIGPIPE);
      },
      [](caf::flush_atom) { return caf::flush_atom_v; },
  };
}

std::optional<std::string> read_stdin(std::size_t limit) {
  std::string data;
  char buf[65536];
  for (;;) {
    // Never more than one byte past the limit: an endless producer costs nothing.
    const auto want = std::min(sizeof buf, limit + 1 - data.size());
    const auto n = ::read(0, buf, want);
    if (n <= 0) break;
    data.append(buf, static_cast<std::size_t>(n));
    if (data.size() > limit) return std::nullopt;
  }
  return data;
}

}  // namespace corral::app
