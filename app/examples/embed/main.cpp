// A host application with its own actors and message types embeds corral: it registers
// corral's types next to its own, spawns a supervisor in its own actor system, and runs one
// sandboxed command through the typed interface.
#include <cstdio>
#include <string>

#include <caf/all.hpp>

#include "actors/supervisor.hpp"
#include "messages/errors.hpp"
#include "messages/registration.hpp"
#include "messages/type_ids.hpp"

// The host's own type ID block starts at first_custom_type_id; corral's sits 1000 above it.
namespace host {
struct job {
  std::string name;
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, job& x) {
  return f(caf::meta::type_name("host.job"), x.name);
}
}  // namespace host

CAF_BEGIN_TYPE_ID_BLOCK(host, caf::first_custom_type_id)
CAF_ADD_TYPE_ID(host, (host::job))
CAF_END_TYPE_ID_BLOCK(host)

int main() {
  caf::actor_system_config cfg;
  cfg.add_message_types<caf::id_block::host>();
  corral::messages::add_message_types(cfg);
  caf::actor_system sys{cfg};

  corral::actors::runtime_config runtime;
  runtime.name = "embed-example";
  auto supervisor = corral::actors::spawn_supervisor(sys, runtime);

  using namespace corral::messages;
  int code = 1;
  caf::scoped_actor self{sys};
  auto fail = [&](const caf::error& err) {
    std::fprintf(stderr, "embed_example: %s\n", describe(err).c_str());
  };
  self->request(supervisor, std::chrono::minutes(2), acquire_atom_v, std::string("host-job-1"),
                sandbox_spec{})
      .receive(
          [&](const sandbox_info& info) {
            std::printf("sandbox %s is %s\n", info.key.c_str(), to_string(info.status));
            exec_request req;
            req.argv = {"sh", "-c", "echo embedded in $(hostname) as uid $(id -u)"};
            self->request(supervisor, std::chrono::minutes(2), exec_atom_v, info.key, req)
                .receive(
                    [&](const exec_result& result) {
                      std::printf("%s", result.stdout_data.c_str());
                      code = result.exit_code;
                    },
                    fail);
          },
          fail);
  // The supervisor releases its sandboxes when it stops.
  self->send_exit(supervisor, caf::exit_reason::user_shutdown);
  self->wait_for(supervisor);
  std::printf("embed_example: exit %d\n", code);
  return code;
}
