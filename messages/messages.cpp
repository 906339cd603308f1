#include <caf/actor_system_config.hpp>
#include <caf/all.hpp>

#include "messages/errors.hpp"
#include "messages/registration.hpp"
#include "messages/type_ids.hpp"

namespace corral::messages {

// -- enum names ----------------------------------------------------------------------------

const char* to_string(access_mode x) noexcept {
  switch (x) {
    case access_mode::none:
      return "none";
    case access_mode::ro:
      return "ro";
    case access_mode::rw:
      return "rw";
  }
  return "?";
}

const char* to_string(sandbox_status x) noexcept {
  switch (x) {
    case sandbox_status::creating:
      return "creating";
    case sandbox_status::starting:
      return "starting";
    case sandbox_status::ready:
      return "ready";
    case sandbox_status::stopping:
      return "stopping";
    case sandbox_status::removed:
      return "removed";
    case sandbox_status::exited:
      return "exited";
    case sandbox_status::failed:
      return "failed";
    case sandbox_status::timed_out:
      return "timed_out";
    case sandbox_status::oom_killed:
      return "oom_killed";
    case sandbox_status::killed:
      return "killed";
    case sandbox_status::lost:
      return "lost";
  }
  return "?";
}

const char* to_string(exec_end x) noexcept {
  switch (x) {
    case exec_end::exited:
      return "exited";
    case exec_end::timed_out:
      return "timed_out";
    case exec_end::killed:
      return "killed";
    case exec_end::oom_killed:
      return "oom_killed";
    case exec_end::sandbox_lost:
      return "sandbox_lost";
  }
  return "?";
}

const char* to_string(output_stream x) noexcept {
  return x == output_stream::stderr_stream ? "stderr" : "stdout";
}

const char* to_string(release_mode x) noexcept {
  switch (x) {
    case release_mode::cancel_execs:
      return "cancel_execs";
    case release_mode::detach:
      return "detach";
    case release_mode::wait_for_execs:
      break;
  }
  return "wait_for_execs";
}

const char* to_string(corral_errc x) noexcept {
  switch (x) {
    case corral_errc::policy_violation:
      return "policy_violation";
    case corral_errc::invalid_request:
      return "invalid_request";
    case corral_errc::not_found:
      return "not_found";
    case corral_errc::capacity:
      return "capacity";
    case corral_errc::timeout:
      return "timeout";
    case corral_errc::sandbox_lost:
      return "sandbox_lost";
    case corral_errc::shutting_down:
      return "shutting_down";
    case corral_errc::engine_unavailable:
      return "engine_unavailable";
    case corral_errc::engine_error:
      return "engine_error";
    case corral_errc::version_mismatch:
      return "version_mismatch";
    case corral_errc::node_unavailable:
      return "node_unavailable";
    case corral_errc::conflict:
      return "conflict";
    case corral_errc::name_in_use:
      return "name_in_use";
    case corral_errc::egress_unavailable:
      return "egress_unavailable";
  }
  return "?";
}

// -- equality (tests check that what crossed the network arrived equal) --------------------

bool operator==(const workspace_mount& a, const workspace_mount& b) {
  return a.host_path == b.host_path && a.container_path == b.container_path && a.access == b.access;
}

bool operator==(const tmpfs_mount& a, const tmpfs_mount& b) {
  return a.path == b.path && a.size_bytes == b.size_bytes && a.options == b.options;
}

bool operator==(const sandbox_spec& a, const sandbox_spec& b) {
  return a.image == b.image && a.command == b.command && a.env == b.env && a.workdir == b.workdir &&
         a.user == b.user && a.workspace == b.workspace && a.tmpfs == b.tmpfs &&
         a.memory_bytes == b.memory_bytes && a.memory_swap_bytes == b.memory_swap_bytes &&
         a.nano_cpus == b.nano_cpus && a.pids_limit == b.pids_limit &&
         a.network_mode == b.network_mode && a.writable_root == b.writable_root &&
         a.cap_add == b.cap_add && a.labels == b.labels && a.setup_command == b.setup_command &&
         a.exec_timeout == b.exec_timeout && a.max_stdout == b.max_stdout &&
         a.max_stderr == b.max_stderr && a.lifetime == b.lifetime && a.idle_limit == b.idle_limit &&
         a.one_shot == b.one_shot && a.allow_hosts == b.allow_hosts;
}

bool operator==(const sandbox_info& a, const sandbox_info& b) {
  return a.key == b.key && a.container_id == b.container_id && a.image == b.image &&
         a.status == b.status && a.created_ms == b.created_ms && a.last_used_ms == b.last_used_ms &&
         a.execs_run == b.execs_run && a.execs_in_flight == b.execs_in_flight &&
         a.memory_bytes == b.memory_bytes && a.nano_cpus == b.nano_cpus &&
         a.pids_limit == b.pids_limit && a.detail == b.detail && a.warnings == b.warnings;
}

bool operator==(const exec_request& a, const exec_request& b) {
  return a.argv == b.argv && a.env == b.env && a.workdir == b.workdir && a.timeout == b.timeout &&
         a.max_stdout == b.max_stdout && a.max_stderr == b.max_stderr &&
         a.has_stdin == b.has_stdin && a.stdin_data == b.stdin_data && a.subscriber == b.subscriber;
}

bool operator==(const output_chunk& a, const output_chunk& b) {
  return a.exec_seq == b.exec_seq && a.stream == b.stream && a.bytes == b.bytes;
}

bool operator==(const exec_result& a, const exec_result& b) {
  return a.exit_code == b.exit_code && a.stdout_data == b.stdout_data &&
         a.stderr_data == b.stderr_data && a.stdout_truncated == b.stdout_truncated &&
         a.stderr_truncated == b.stderr_truncated && a.stdout_bytes == b.stdout_bytes &&
         a.stderr_bytes == b.stderr_bytes && a.duration == b.duration && a.end == b.end &&
         a.warnings == b.warnings;
}

bool operator==(const runtime_stats& a, const runtime_stats& b) {
  return a.runtime_name == b.runtime_name && a.live_sandboxes == b.live_sandboxes &&
         a.capacity == b.capacity && a.created_total == b.created_total &&
         a.released_total == b.released_total && a.pruned_total == b.pruned_total &&
         a.lost_total == b.lost_total && a.adopted_total == b.adopted_total &&
         a.execs_total == b.execs_total && a.execs_in_flight == b.execs_in_flight &&
         a.pool_ready == b.pool_ready && a.pool_warming == b.pool_warming &&
         a.pool_target == b.pool_target && a.pool_hits == b.pool_hits &&
         a.pool_misses == b.pool_misses && a.pool_claim_us_total == b.pool_claim_us_total &&
         a.pool_refills == b.pool_refills && a.pool_refill_us_total == b.pool_refill_us_total;
}

// -- errors --------------------------------------------------------------------------------

caf::error make_error(corral_errc code, std::string message) {
  return caf::error{code, std::move(message)};
}

namespace {

std::string context_text(const caf::message& context) {
  if (context.empty()) return {};
  if (context.match_elements<std::string>()) return context.get_as<std::string>(0);
  return caf::to_string(context);
}

}  // namespace

std::string describe(const caf::error& err) {
  if (!err) return "no error";
  std::string out;
  if (err.category() == caf::atom(error_category_name)) {
    out = to_string(static_cast<corral_errc>(err.code()));
  } else if (err.category() == caf::atom("system")) {
    out = caf::to_string(static_cast<caf::sec>(err.code()));
  } else {
    out = caf::to_string(err.category()) + " error " + std::to_string(err.code());
  }
  if (auto text = context_text(err.context()); !text.empty()) out += ": " + text;
  return out;
}

void add_message_types(caf::actor_system_config& cfg) {
  cfg.add_message_types<caf::id_block::corral>();
  cfg.add_error_category(caf::atom(error_category_name),
                         [](uint8_t code, caf::atom_value, const caf::message& context) {
                           std::string out = to_string(static_cast<corral_errc>(code));
                           if (auto text = context_text(context); !text.empty()) out += ": " + text;
                           return out;
                         });
}

}  // namespace corral::messages
