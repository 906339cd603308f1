// The fake engine's state model: a container, an exec, a waiter on /wait, an /events
// subscriber, and a request's route. The engine (engine.hpp) owns them, on its one thread.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "app/fake_engine/agent.hpp"
#include "app/fake_engine/http_core.hpp"
#include "app/fake_engine/programs.hpp"

namespace corral::app::fake {

struct exec_rec {
  std::string id;
  std::string container_id;
  std::vector<std::string> cmd;
  std::vector<std::string> env;
  std::string user;
  bool attach_stdin = false;
  bool attach_stdout = true;
  bool attach_stderr = true;
  bool started = false;
  bool running = false;
  std::optional<int64_t> exit_code;
  int64_t pid = 0;
  program prog;
  std::size_t next_step = 0;
  std::shared_ptr<session> stream;  // while attached
  std::unique_ptr<asio::steady_timer> timer;
  std::string stdin_data;
  bool stdin_done = false;
  bool waiting_for_stdin = false;

  bool has_env(std::string_view entry) const {
    return std::find(env.begin(), env.end(), entry) != env.end();
  }
};

struct waiter {
  std::shared_ptr<session> s;
  std::string condition;  // not-running | next-exit | removed
};

struct container_rec {
  std::string id;
  std::string name;
  std::string image;
  std::vector<std::string> cmd;
  std::vector<std::string> entrypoint;
  std::vector<std::string> env;
  std::string user;
  std::string working_dir;
  std::map<std::string, std::string> labels;
  std::string host_config_json = "{}";
  std::string state = "created";
  int64_t exit_code = 0;
  bool oom_killed = false;
  int64_t pid = 0;
  int64_t created_unix = 0;
  std::string created;
  std::string started_at = "0001-01-01T00:00:00Z";
  std::string finished_at = "0001-01-01T00:00:00Z";
  std::vector<std::string> execs;
  std::unique_ptr<asio::steady_timer> main_timer;
  std::vector<waiter> waiters;
  std::shared_ptr<fake_agent_state> agent;  // while running with corral's agent as entrypoint

  bool running() const { return state == "running" || state == "paused"; }
};

struct subscriber {
  std::shared_ptr<session> s;
  std::map<std::string, std::vector<std::string>> filters;
};

struct route {
  std::string cls = "unknown";
  http::verb method = http::verb::get;
  std::vector<std::string> parts;  // decoded path segments after the version prefix
  std::string raw_path;            // without the version prefix, not decoded
  std::map<std::string, std::string> query;
};

// The route of a request (routing.cpp): "/v1.41/containers/x/json?all=1" -> class "inspect",
// parts {containers, x, json}, query {all: 1}. Path segments keep '+'; the query reads it as a
// space (http_core.hpp, plus_sign).
route make_route(const http::request<http::string_body>& req);

// `docker ps`'s Status column for a container.
std::string status_text(const container_rec& c);

}  // namespace corral::app::fake
