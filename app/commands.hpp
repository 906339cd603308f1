// What each `corral` command does, given the command line app/corral.cpp parsed. Each
// returns the process's exit code (app/exit_codes.hpp).
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "app/node.hpp"
#include "app/session.hpp"
#include "messages/exec.hpp"
#include "messages/sandbox.hpp"

namespace corral::app {

// The parsed command line. Each command binds only the flags it has (app/corral.cpp).
struct command_line {
  runtime_target target;      // global flags: --runtime, --node, --tls-*
  std::string policy_file;    // global flag --policy (embedded runtime, `corral node`)
  std::string policy_action;  // `corral policy ACTION FILE`
  std::string policy_path;
  std::vector<std::string> keys;  // the command's KEY or KEY...
  std::vector<std::string> argv;  // the command after `--` (run, exec)
  messages::sandbox_spec spec;
  messages::exec_request exec;
  bool json = false;
  bool all = false;
  bool use_stdin = false;
  std::chrono::milliseconds idle{0};     // prune
  std::chrono::milliseconds max_age{0};  // prune
  node_options serve;
};

// A usage error of `command` (empty: of none) on stderr; returns exit_code::error.
int usage_error(const std::string& command, const std::string& message);

int cmd_run(command_line& cl);
int cmd_create(command_line& cl);
int cmd_exec(command_line& cl);
int cmd_ls(command_line& cl);
int cmd_stats(command_line& cl);
int cmd_rm(command_line& cl);
int cmd_prune(command_line& cl);
int cmd_version(command_line& cl);
int cmd_node(command_line& cl);
int cmd_policy(command_line& cl);

}  // namespace corral::app
