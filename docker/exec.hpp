// Exec area of the Engine API: ExecCreate, ExecStart (attached, multiplexed), ExecInspect.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "docker/stream_demux.hpp"

namespace corral::docker {

struct exec_create_request {
  std::vector<std::string> cmd;
  std::vector<std::string> env;  // "KEY=value", for this exec only
  std::string user;
  std::string working_dir;
  bool attach_stdin = false;
  bool attach_stdout = true;
  bool attach_stderr = true;
  bool tty = false;
};

struct exec_create_response {
  std::string id;
};

struct exec_start_options {
  std::optional<std::string> stdin_data;  // written, then stdin is closed (needs attach_stdin)
  std::size_t max_stdout = 1 << 20;       // bytes kept per stream; the rest is read and dropped
  std::size_t max_stderr = 1 << 20;
  std::chrono::milliseconds timeout{0};  // zero: the client's default
  // Sees every piece of output as it arrives, before the cap applies: for live streaming.
  std::function<void(stream_kind, std::string_view)> on_output;
};

struct exec_output {
  capped_buffer stdout_data;
  capped_buffer stderr_data;
};

struct exec_inspect_response {
  std::string id;
  std::string container_id;
  bool running = false;
  std::optional<int64_t> exit_code;  // none while running
  int64_t pid = 0;
};

}  // namespace corral::docker
