// Containers area of the Engine API; names follow the API's own (ContainerCreate, HostConfig).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace corral::docker {

// The HostConfig fields corral sets. Zero / empty means "not set": the engine's default.
struct host_config {
  std::vector<std::string> binds;            // "host:container[:ro]"
  std::map<std::string, std::string> tmpfs;  // path -> mount options ("size=64m,uid=1000")
  int64_t memory = 0;                        // bytes
  int64_t memory_swap = 0;                   // bytes; equal to memory: no swap
  int64_t nano_cpus = 0;                     // 1e9 = one CPU
  int64_t cpu_shares = 0;
  int64_t pids_limit = 0;
  std::vector<std::string> cap_drop;
  std::vector<std::string> cap_add;
  std::vector<std::string> security_opt;  // "no-new-privileges"
  bool readonly_rootfs = false;
  std::string network_mode;  // "none"
  bool init = false;         // run docker-init as PID 1
  bool auto_remove = false;
  int oom_score_adj = 0;  // -1000..1000: the container's processes' OOM score adjustment
};

struct container_create_request {
  std::string name;  // optional; sent as ?name=
  std::string image;
  std::vector<std::string> cmd;
  std::vector<std::string> entrypoint;
  std::vector<std::string> env;  // "KEY=value"
  std::string user;              // "1000:1000"
  std::string working_dir;
  std::map<std::string, std::string> labels;
  std::string stop_signal;
  int stop_timeout = -1;  // seconds; -1: not set
  bool tty = false;
  bool open_stdin = false;
  host_config host;
};

struct container_create_response {
  std::string id;
  std::vector<std::string> warnings;
};

// Start and stop answer 304 when there is nothing to do; that is a success.
enum class change_outcome : uint8_t { done, already };

struct container_state {
  std::string status;  // created | running | paused | restarting | removing | exited | dead
  bool running = false;
  bool paused = false;
  bool restarting = false;
  bool oom_killed = false;
  bool dead = false;
  int64_t pid = 0;
  int64_t exit_code = 0;
  std::string error;
  std::string started_at;
  std::string finished_at;
};

struct container_inspect_response {
  std::string id;
  std::string name;
  std::string image;         // image ID
  std::string config_image;  // Config.Image, as asked for at create
  std::string created;
  std::string user;
  std::string working_dir;
  std::vector<std::string> cmd;
  std::vector<std::string> env;
  std::map<std::string, std::string> labels;
  container_state state;
  host_config host;  // read back, to verify what the engine applied
  std::string mount_label;
};

struct container_summary {
  std::string id;
  std::vector<std::string> names;
  std::string image;
  std::string state;
  std::string status;
  int64_t created = 0;  // unix seconds
  std::map<std::string, std::string> labels;
};

struct container_list_options {
  bool all = true;
  // Engine-side filters: {"label": {"corral.managed-by=corral"}, "status": {"running"}}.
  std::map<std::string, std::vector<std::string>> filters;
};

enum class wait_condition : uint8_t { not_running, next_exit, removed };

struct container_wait_response {
  int64_t status_code = 0;
  std::string error;
};

struct container_logs_options {
  bool stdout_stream = true;
  bool stderr_stream = true;
  bool timestamps = false;
  std::string tail = "all";
  std::size_t max_stdout = 1 << 20;  // bytes kept per stream; the rest is read and dropped
  std::size_t max_stderr = 1 << 20;
};

struct container_stats {
  int64_t memory_usage = 0;
  int64_t memory_limit = 0;
  int64_t pids_current = 0;
  int64_t cpu_total_usage = 0;   // ns
  int64_t system_cpu_usage = 0;  // ns
  int64_t online_cpus = 0;
};

}  // namespace corral::docker
