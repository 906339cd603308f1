// How a node stops: SIGTERM lets running commands finish within the grace period, then
// releases (or, with --keep-sandboxes, keeps for the next start) its sandboxes; a second
// signal exits at once.
#include <catch2/catch.hpp>

#include "tests/node/node_process.hpp"

using namespace corral::node_tests;

TEST_CASE("SIGTERM lets a running exec finish, then removes the node's sandboxes",
          "[node][shutdown]") {
  node_fixture f;
  auto& node = f.start(f.name("n"), {"--grace", "10s"});
  const auto created = node_cli(node, {"create", "long"});
  INFO(created);
  REQUIRE(created.code == 0);
  REQUIRE(node_cli(node, {"create", "idle"}).code == 0);

  auto exec = start_cli({"--node", node.address(), "exec", "long", "--", "sh", "-c",
                         "echo started; sleep 3; echo done"});
  REQUIRE(exec->wait_for_stdout("started", 15s));
  node.signal(SIGTERM);
  const auto signalled = steady::now();

  // No new clients once it stops: refused while the node still runs the exec (it has ~3 s
  // left), not only once the node has gone.
  cli_result late;
  CHECK(eventually(2s, [&] {
    late = node_cli(node, {"ls"});
    return late.code == 125;
  }));
  INFO(late);
  CHECK(exec->running());
  CHECK(node.running());

  const auto code = exec->finish(20s);
  INFO("exec stdout: " << exec->out() << "\nexec stderr: " << exec->err() << "\nnode log:\n"
                       << node.log());
  REQUIRE(code);
  CHECK(*code == 0);
  CHECK(exec->out() == "started\ndone\n");
  CHECK(node.wait(20s) == 0);
  CHECK(since(signalled) < 8s);
  CHECK(contains(node.log(), "received SIGTERM"));
  CHECK(f.engine.containers(node.name()).empty());
}

TEST_CASE("SIGTERM with a run in flight: the command completes", "[node][shutdown]") {
  node_fixture f;
  auto& node = f.start(f.name("n"), {"--grace", "10s"});
  auto run = start_cli(
      {"--node", node.address(), "run", "--", "sh", "-c", "echo started; sleep 3; echo done"});
  REQUIRE(run->wait_for_stdout("started", 15s));
  node.signal(SIGTERM);
  const auto code = run->finish(20s);
  INFO("run stdout: " << run->out() << "\nrun stderr: " << run->err() << "\nnode log:\n"
                      << node.log());
  REQUIRE(code);
  CHECK(run->out() == "started\ndone\n");
  // The run's own release may meet a node that is already releasing everything: the command
  // completed, so the run exits with its code.
  CHECK(*code == 0);
  CHECK(node.wait(20s) == 0);
  CHECK(f.engine.containers(node.name()).empty());
}

TEST_CASE(
    "with --keep-sandboxes, SIGTERM keeps the sandboxes and the next node of that name adopts them",
    "[node][shutdown]") {
  node_fixture f;
  const auto name = f.name("n");
  {
    auto& first = f.start(name, {"--keep-sandboxes"});
    REQUIRE(node_cli(first, {"create", "k1"}).code == 0);
    REQUIRE(node_cli(first, {"create", "k2"}).code == 0);
    REQUIRE(node_cli(first, {"exec", "k1", "--", "sh", "-c", "echo kept > /tmp/f"}).code == 0);
    CHECK(first.stop(30s) == 0);
    const auto left = f.engine.containers(name);
    REQUIRE(left.size() == 2);
    for (const auto& c : left) CHECK(c.state == "running");
  }
  auto& second = f.start(name, {"--keep-sandboxes"});
  const auto listed = node_cli(second, {"ls"});
  INFO(listed);
  CHECK(listed.code == 0);
  CHECK(contains(listed.out, "k1"));
  CHECK(contains(listed.out, "k2"));
  const auto json = node_cli(second, {"ls", "--json"});
  CHECK(contains(json.out, R"("key":"k1","container_id")"));
  CHECK(std::count(json.out.begin(), json.out.end(), '{') == 2);
  CHECK(!contains(json.out, "\"status\":\"lost\""));
  CHECK(contains(json.out, "\"status\":\"ready\""));
  const auto read = node_cli(second, {"exec", "k1", "--", "cat", "/tmp/f"});
  INFO(read);
  CHECK(read.code == 0);
  CHECK(read.out == "kept\n");
  CHECK(node_cli(second, {"exec", "k2", "--", "true"}).code == 0);

  const auto removed = node_cli(second, {"rm", "--all"});
  INFO(removed);
  CHECK(removed.code == 0);
  CHECK(contains(removed.out, "released 2 sandboxes"));
  CHECK(eventually(5s, [&] { return f.engine.containers(name).empty(); }));
  CHECK(second.stop() == 0);
}

TEST_CASE("a second signal during the grace period exits at once", "[node][shutdown]") {
  node_fixture f;
  auto& node = f.start(f.name("n"), {"--grace", "60s"});
  REQUIRE(node_cli(node, {"create", "busy"}).code == 0);
  auto exec = start_cli(
      {"--node", node.address(), "exec", "busy", "--", "sh", "-c", "echo started; exec sleep 30"});
  REQUIRE(exec->wait_for_stdout("started", 15s));
  node.signal(SIGTERM);
  REQUIRE(eventually(5s, [&] { return contains(node.log(), "received SIGTERM"); }));
  REQUIRE(node.running());  // waiting for the exec, up to 60 s
  node.signal(SIGINT);
  const auto interrupted = steady::now();
  CHECK(node.wait(5s) == 130);
  CHECK(since(interrupted) < 2s);
  const auto code = exec->finish(10s);
  INFO("exec stderr: " << exec->err());
  CHECK(code == 125);
  // It left at once: its sandbox is still there, ours to remove.
  CHECK(f.engine.remove_all(node.name()) == 1);
}
