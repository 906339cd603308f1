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

bool is_terminal(sandbox_status x) noexcept {
  switch (x) {
    case sandbox_status::creating:
    case sandbox_status::starting:
    case sandbox_status::ready:
    case sandbox_status::stopping:
      return false;
    case sandbox_status::removed:
    case sandbox_status::exited:
    case sandbox_status::failed:
    case sandbox_status::timed_out:
    case sandbox_status::oom_killed:
    case sandbox_status::killed:
    case sandbox_status::lost:
      return true;
  }
  return true;
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
