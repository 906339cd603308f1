// A node publishes a facade: exactly the supervisor's public interface. A raw CAF peer that
// sends the runtime's internal messages (or exits, errors, garbage) gets nothing from them,
// and every request that changes something lands in the audit log.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <catch2/catch.hpp>

#include "app/remote.hpp"
#include "messages/type_ids.hpp"
#include "tests/node/node_process.hpp"

using namespace corral;
using namespace corral::messages;
using namespace corral::node_tests;

namespace {

// The runtime's internal atoms (actors/internal_messages.hpp), spelled as a peer would.
using resub_atom = caf::atom_constant<caf::atom("resub")>;
using prune_tick_atom = caf::atom_constant<caf::atom("prunetick")>;
using update_atom = caf::atom_constant<caf::atom("update")>;
using mark_atom = caf::atom_constant<caf::atom("mark")>;

}  // namespace

TEST_CASE("a raw peer's internal messages reach nothing and the node keeps serving",
          "[node][facade]") {
  node_fixture f;
  char audit_path[] = "/tmp/corral-audit-XXXXXX";
  const int fd = ::mkstemp(audit_path);
  REQUIRE(fd >= 0);
  ::close(fd);
  auto& node = f.start(f.name("n"), {"--audit-log", audit_path, "--log-level", "debug"});
  net_config cfg;
  caf::actor_system sys{cfg};
  auto transport = tls_client(sys);
  caf::scoped_actor self{sys};
  auto sup = app::connect_node(self, {"127.0.0.1", node.port()}, 2000ms, "tester");
  REQUIRE(what(sup) == "ok");
  auto info = ask<sandbox_info>(self, *sup, caf::timespan{60s}, acquire_atom_v, std::string("k"),
                                sandbox_spec{});
  REQUIRE(what(info) == "ok");
  const auto fds_before = open_fds(node.process().pid());

  // What a hostile peer holding the published handle can send.
  auto untyped = caf::actor_cast<caf::actor>(*sup);
  constexpr int rounds = 64;
  for (int i = 0; i < rounds; ++i) {
    caf::anon_send(untyped, resub_atom::value);  // once opened an engine event stream each
    caf::anon_send(untyped, prune_tick_atom::value);
    sandbox_info forged;
    forged.key = "k";
    forged.status = sandbox_status::removed;
    caf::anon_send(untyped, update_atom::value, forged, caf::actor{});
    caf::anon_send(untyped, mark_atom::value, sandbox_status::lost, std::string("forged"));
    caf::anon_send(untyped, caf::make_error(caf::sec::runtime_error));
  }
  caf::anon_send_exit(untyped, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(untyped, caf::exit_reason::unhandled_exception);

  // A request outside the interface gets an error, not silence.
  auto odd = ask<std::string>(self, untyped, caf::timespan{10s}, resub_atom::value);
  REQUIRE_FALSE(odd);
  CHECK(odd.error() == caf::sec::unexpected_message);

  // The sandbox is untouched and still runs commands; nothing opened an engine stream.
  auto looked = ask<sandbox_info>(self, *sup, caf::timespan{30s}, lookup_atom_v, std::string("k"));
  REQUIRE(what(looked) == "ok");
  CHECK(looked->status == sandbox_status::ready);
  exec_request req;
  req.argv = {"echo", "still"};
  auto ran = ask<exec_result>(self, *sup, caf::timespan{30s}, exec_atom_v, std::string("k"), req);
  REQUIRE(what(ran) == "ok");
  CHECK(ran->stdout_data == "still\n");
  const auto fds_after = open_fds(node.process().pid());
  INFO("node fds before " << fds_before << ", after " << fds_after);
  CHECK(fds_after <= fds_before + 4);

  // A refused request is audited as denied.
  auto bad = ask<sandbox_info>(self, *sup, caf::timespan{30s}, acquire_atom_v,
                               std::string("bad key!"), sandbox_spec{});
  REQUIRE_FALSE(bad);
  auto released = ask<sandbox_info>(self, *sup, caf::timespan{60s}, release_atom_v,
                                    std::string("k"), release_mode::cancel_execs);
  REQUIRE(what(released) == "ok");

  REQUIRE(node.stop() == 0);
  const auto log = node.log();
  INFO("node log:\n" << log);
  CHECK(contains(log, "dropped a message outside the interface"));
  // Four internal messages a round, and the odd request (exits and errors are ignored apart).
  CHECK(contains(log, "(" + std::to_string(4 * rounds + 1) + " messages outside the interface"));

  const auto audit = lines_of(audit_path);
  std::ostringstream all;
  for (const auto& l : audit) all << l << "\n";
  INFO("audit log:\n" << all.str());
  CHECK(count_with(audit, {R"("op":"acquire")", R"("key":"k")", R"("decision":"allowed")",
                           R"("result":"sandbox ready")"}) == 1);
  CHECK(count_with(audit, {R"("op":"exec")", R"("program":"echo")", R"("result":"exited 0")"}) ==
        1);
  CHECK(count_with(audit, {R"("op":"acquire")", R"("key":"bad key!")", R"("decision":"denied")",
                           "invalid_request"}) == 1);
  CHECK(count_with(audit, {R"("op":"release")", R"("key":"k")", R"("decision":"allowed")"}) == 1);
  for (const auto& line : audit) {
    CHECK(contains(line, R"({"time":")"));
    CHECK(contains(line, R"("peer":")"));
    CHECK_FALSE(contains(line, "still"));  // arguments never reach the audit
  }
  // The internal messages changed nothing, so they are not in the audit either.
  CHECK(audit.size() == 4);
  std::remove(audit_path);
}
