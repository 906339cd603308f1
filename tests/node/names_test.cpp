// A node's runtime name is its own on its engine: a second node of that name refuses to
// start while the first lives (naming it), leaves the first and its sandboxes alone, and
// can start as soon as the first is gone, however it went.
#include <catch2/catch.hpp>

#include "tests/node/node_process.hpp"

using namespace corral::node_tests;

TEST_CASE("a second node with a live node's name refuses to start and names the holder",
          "[node][names]") {
  node_fixture f;
  const auto name = f.name("n");
  auto& first = f.start(name);
  REQUIRE(node_cli(first, {"create", "mine"}).code == 0);
  REQUIRE(node_cli(first, {"exec", "mine", "--", "sh", "-c", "echo kept > /tmp/state"}).code == 0);
  const auto before = f.engine.containers(name);
  REQUIRE(before.size() == 1);

  auto second = start_cli({"node", "--listen", "127.0.0.1:0", "--name", name});
  const auto code = second->finish(30s);
  INFO("second node: stdout: " << second->out() << "\nstderr: " << second->err());
  REQUIRE(code);
  CHECK(*code == 125);
  CHECK(contains(second->err(), "name_in_use"));
  CHECK(contains(second->err(), "'" + name + "'"));
  CHECK(contains(second->err(), "pid " + std::to_string(first.process().pid())));
  CHECK(contains(second->err(), "pick another --name"));
  CHECK_FALSE(contains(second->out(), "listening"));

  // The first node still serves, and its sandbox is the same container with its state.
  REQUIRE(first.running());
  const auto listed = node_cli(first, {"ls"});
  INFO(listed);
  CHECK(listed.code == 0);
  CHECK(contains(listed.out, "mine"));
  const auto read = node_cli(first, {"exec", "mine", "--", "cat", "/tmp/state"});
  INFO(read);
  CHECK(read.code == 0);
  CHECK(read.out == "kept\n");
  const auto after = f.engine.containers(name);
  REQUIRE(after.size() == 1);
  CHECK(after[0].id == before[0].id);
  CHECK(after[0].state == "running");
  CHECK(first.stop() == 0);
  CHECK(f.engine.containers(name).empty());
}

TEST_CASE("a node killed with -9 frees its name at once; another engine never shared it",
          "[node][names]") {
  node_fixture f;
  const auto name = f.name("n");
  auto& first = f.start(name, {"--keep-sandboxes"});
  REQUIRE(node_cli(first, {"create", "kept"}).code == 0);

  // The same name on another engine (a socket no engine listens on) is another runtime.
  auto elsewhere = start_cli(
      {"node", "--listen", "127.0.0.1:0", "--name", name},
      {{"DOCKER_HOST", "unix:///tmp/corral-no-engine-" + std::to_string(::getpid()) + ".sock"}});
  INFO("node on another engine: stderr: " << elsewhere->err());
  CHECK(elsewhere->wait_for_stdout("listening 127.0.0.1:", 20s));
  elsewhere->signal(SIGTERM);
  CHECK(elsewhere->finish(30s) == 0);

  first.signal(SIGKILL);
  REQUIRE(first.wait(10s));
  // node_process fails the test unless the new node reports its port.
  auto& again = f.start(name);
  const auto listed = node_cli(again, {"ls"});
  INFO(listed << "\nnode log:\n" << again.log());
  CHECK(listed.code == 0);
  CHECK(contains(listed.out, "kept"));  // adopted, as after any crash
  CHECK(again.stop() == 0);
  CHECK(f.engine.containers(name).empty());
}
