// Request shapes of docker::client's long-lived and streamed calls against the fake engine:
// exec (the upgraded stream), archive (tar bodies), events (a line stream), and the connection
// budgets that keep such calls from starving control calls. Apart from
// client_requests_test.cpp by area.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "app/fake_engine/http_core.hpp"
#include "docker/blocking.hpp"
#include "tests/unit/client_requests_fixture.hpp"

using namespace corral::client_request_tests;

// -- exec ---------------------------------------------------------------------------------

TEST_CASE("exec_create: target and JSON body; Id read", "[client]") {
  engine_and_client f;
  f.answer(reply::json(201, R"({"Id":"exec-1"})"));
  docker::exec_create_request e;
  e.cmd = {"cat", "-"};
  e.env = {"X=1"};
  e.user = "1000";
  e.working_dir = "/w";
  e.attach_stdin = true;
  auto r = docker::blocking<docker::exec_create_response>(
      [&](auto done) { f.client.exec_create("abc", e, done); });
  REQUIRE(r.ok());
  CHECK(r->id == "exec-1");

  const auto req = f.engine.last_request();
  CHECK(req.method == "POST");
  CHECK(req.target == "/v1.41/containers/abc/exec");
  CHECK(req.header("content-type") == "application/json");
  json_body body(req.body);
  CHECK(strings(body.doc["Cmd"]) == std::vector<std::string>{"cat", "-"});
  CHECK(strings(body.doc["Env"]) == std::vector<std::string>{"X=1"});
  CHECK(std::string_view(body.doc["User"]) == "1000");
  CHECK(std::string_view(body.doc["WorkingDir"]) == "/w");
  CHECK(bool(body.doc["AttachStdin"]) == true);
  CHECK(bool(body.doc["AttachStdout"]) == true);
  CHECK(bool(body.doc["AttachStderr"]) == true);
  CHECK(bool(body.doc["Tty"]) == false);

  auto empty = docker::blocking<docker::exec_create_response>(
      [&](auto done) { f.client.exec_create("abc", docker::exec_create_request{}, done); });
  REQUIRE_FALSE(empty.ok());
  CHECK(empty.err().code == errc::invalid_request);
  CHECK(f.engine.request_count() == 1);
}

TEST_CASE("exec_start: upgrade, stdin upload, stdout and stderr separated", "[client]") {
  engine_and_client f;
  auto start = [&](docker::exec_start_options o) {
    return docker::blocking<docker::exec_output>(
        [&](auto done) { f.client.exec_start("exec-1", std::move(o), done); });
  };

  SECTION("output only") {
    f.answer(reply::upgraded(
        [](const std::string&) {
          return mux_frame(1, "hello ") + mux_frame(2, "oops\n") + mux_frame(1, "world\n");
        },
        /*read_stdin=*/false));
    auto r = start({});
    INFO(why(r));
    REQUIRE(r.ok());
    CHECK(r->stdout_data.data == "hello world\n");
    CHECK(r->stderr_data.data == "oops\n");
    const auto req = f.engine.last_request();
    CHECK(req.method == "POST");
    CHECK(req.target == "/v1.41/exec/exec-1/start");
    CHECK(req.header("connection") == "Upgrade");
    CHECK(req.header("upgrade") == "tcp");
    CHECK(req.header("content-type") == "application/json");
    json_body body(req.body);
    CHECK(bool(body.doc["Detach"]) == false);
    CHECK(bool(body.doc["Tty"]) == false);
  }
  SECTION("stdin is uploaded and closed; live output seen") {
    f.answer(reply::upgraded([](const std::string& in) {
      return mux_frame(1, "got " + std::to_string(in.size()) + " bytes: " + in) +
             mux_frame(3, "exec failed? no\n");
    }));
    docker::exec_start_options o;
    o.stdin_data = "line 1\nline 2\n";
    std::string live;
    o.on_output = [&](docker::stream_kind k, std::string_view piece) {
      live += std::to_string(static_cast<int>(k)) + ":" + std::string(piece) + "|";
    };
    auto r = start(std::move(o));
    REQUIRE(r.ok());
    CHECK(r->stdout_data.data == "got 14 bytes: line 1\nline 2\n");
    CHECK(r->stderr_data.data == "exec failed? no\n");  // system errors go with stderr
    CHECK(live.find("1:got 14 bytes") == 0);
    CHECK(live.find("3:exec failed? no") != std::string::npos);
  }
  SECTION("a frame header declaring 4 GiB is a protocol error") {
    f.answer(reply::upgraded(
        [](const std::string&) { return mux_frame(1, "ok\n") + mux_header(1, 0xFFFFFFFFu) + "xx"; },
        false));
    auto r = start({});
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().code == errc::protocol);
  }
  SECTION("output caps") {
    f.answer(reply::upgraded(
        [](const std::string&) { return mux_frame(1, std::string(1000, 'o')) + mux_frame(2, "e"); },
        false));
    docker::exec_start_options o;
    o.max_stdout = 10;
    auto r = start(std::move(o));
    REQUIRE(r.ok());
    CHECK(r->stdout_data.data == std::string(10, 'o'));
    CHECK(r->stdout_data.truncated);
    CHECK(r->stdout_data.total == 1000);
    CHECK(r->stderr_data.data == "e");
  }
  SECTION("the exec's own timeout") {
    f.answer(
        reply::raw(http_head(101, {{"Connection", "Upgrade"}, {"Upgrade", "tcp"}})).then_hang());
    docker::exec_start_options o;
    o.timeout = 150ms;
    auto r = start(std::move(o));
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().code == errc::timeout);
  }
  SECTION("404 for an unknown exec") {
    f.answer(reply::error(404, "No such exec instance: exec-1"));
    auto r = start({});
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().code == errc::not_found);
    CHECK(r.err().message == "No such exec instance: exec-1");
  }
}

TEST_CASE("exec_inspect: exit code present or not", "[client]") {
  engine_and_client f;
  f.answer(reply::json(200, R"({"ID":"exec-1","Running":false,"ExitCode":3,"Pid":42,
                                "ContainerID":"abc"})"));
  auto done_exec = docker::blocking<docker::exec_inspect_response>(
      [&](auto done) { f.client.exec_inspect("exec-1", done); });
  REQUIRE(done_exec.ok());
  CHECK(f.engine.last_request().method == "GET");
  CHECK(f.engine.last_request().target == "/v1.41/exec/exec-1/json");
  CHECK(done_exec->id == "exec-1");
  CHECK(done_exec->container_id == "abc");
  CHECK_FALSE(done_exec->running);
  REQUIRE(done_exec->exit_code.has_value());
  CHECK(*done_exec->exit_code == 3);
  CHECK(done_exec->pid == 42);

  f.answer(reply::json(200, R"({"ID":"exec-1","Running":true,"ExitCode":null,"Pid":42})"));
  auto running = docker::blocking<docker::exec_inspect_response>(
      [&](auto done) { f.client.exec_inspect("exec-1", done); });
  REQUIRE(running.ok());
  CHECK(running->running);
  CHECK_FALSE(running->exit_code.has_value());
}

// -- archive ------------------------------------------------------------------------------

TEST_CASE("put_archive and get_archive: path encoded, tar body, size cap", "[client]") {
  engine_and_client f;
  const std::string tar(3000, 't');
  f.answer(reply::empty(200));
  REQUIRE(docker::blocking<void>([&](auto done) {
            f.client.put_archive("abc", "/work dir", tar, done);
          }).ok());
  auto req = f.engine.last_request();
  CHECK(req.method == "PUT");
  CHECK(req.target == "/v1.41/containers/abc/archive?path=%2Fwork%20dir");
  CHECK(req.header("content-type") == "application/x-tar");
  CHECK(req.body == tar);

  f.answer(reply::response(200, tar, {{"Content-Type", "application/x-tar"}}));
  auto got = docker::blocking<std::string>(
      [&](auto done) { f.client.get_archive("abc", "/out", 1 << 20, done); });
  REQUIRE(got.ok());
  CHECK(*got == tar);
  CHECK(f.engine.last_request().method == "GET");
  CHECK(f.engine.last_request().target == "/v1.41/containers/abc/archive?path=%2Fout");

  auto capped = docker::blocking<std::string>(
      [&](auto done) { f.client.get_archive("abc", "/out", 1000, done); });
  REQUIRE_FALSE(capped.ok());
  CHECK(capped.err().code == errc::too_large);

  f.answer(reply::error(404, "Could not find the file /nope in container abc"));
  auto missing = docker::blocking<std::string>(
      [&](auto done) { f.client.get_archive("abc", "/nope", 1000, done); });
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.err().code == errc::not_found);
}

// -- events -------------------------------------------------------------------------------

namespace {

struct event_log {
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<docker::event_message> events;
  std::vector<result<void>> done;

  bool wait(std::function<bool()> pred, std::chrono::milliseconds timeout = 3s) {
    std::unique_lock<std::mutex> lock(mutex);
    return changed.wait_for(lock, timeout, pred);
  }
};

}  // namespace

TEST_CASE("events: filters in the query; each line delivered; cancel ends it", "[client]") {
  engine_and_client f;
  const std::vector<std::string> lines = {
      R"({"Type":"container","Action":"start","Actor":{"ID":"c1","Attributes":{"name":"x"}},)"
      R"("timeNano":1700000000000000001})"
      "\n",
      R"({"Type":"container","Action":"die","Actor":{"ID":"c1","Attributes":{"exitCode":"3"}},)"
      R"("time":1700000001})"
      "\n",
      R"({"Type":"container","Action":"destroy","Actor":{"ID":"c1"}})"
      "\n"};
  f.answer(reply::chunked_open(200, lines, 20ms).then_hang());

  event_log log;
  docker::events_options options;
  options.filters = {{"type", {"container"}}, {"label", {"corral.managed-by=corral"}}};
  options.since = "1700000000";
  const auto id = f.client.events(
      options,
      [&](const docker::event_message& e) {
        {
          std::lock_guard<std::mutex> guard(log.mutex);
          log.events.push_back(e);
        }
        log.changed.notify_all();
      },
      [&](result<void> r) {
        {
          std::lock_guard<std::mutex> guard(log.mutex);
          log.done.push_back(std::move(r));
        }
        log.changed.notify_all();
      });
  REQUIRE(log.wait([&] { return log.events.size() >= 3; }));
  {
    std::lock_guard<std::mutex> guard(log.mutex);
    CHECK(log.done.empty());  // the stream is still open
    CHECK(log.events[0].action == "start");
    CHECK(log.events[0].id == "c1");
    CHECK(log.events[0].attributes.at("name") == "x");
    CHECK(log.events[0].time_nano == 1700000000000000001);
    CHECK(log.events[1].action == "die");
    CHECK(log.events[1].attributes.at("exitCode") == "3");
    CHECK(log.events[1].time_nano == 1700000001000000000);
    CHECK(log.events[2].action == "destroy");
  }
  const auto req = f.engine.last_request();
  CHECK(req.method == "GET");
  CHECK(req.path() == "/v1.41/events");
  CHECK(req.query("since") == "1700000000");
  json_body decoded(url_decode(*req.query("filters")));
  CHECK(strings(decoded.doc["type"]) == std::vector<std::string>{"container"});
  CHECK(strings(decoded.doc["label"]) == std::vector<std::string>{"corral.managed-by=corral"});

  f.client.cancel(id);
  REQUIRE(log.wait([&] { return !log.done.empty(); }));
  f.client.shutdown();
  std::lock_guard<std::mutex> guard(log.mutex);
  REQUIRE(log.done.size() == 1);
  CHECK(log.done[0].err().code == errc::cancelled);
  CHECK(log.events.size() == 3);
}

TEST_CASE("events: the engine ending the stream is engine_unavailable", "[client]") {
  engine_and_client f;
  f.answer(reply::chunked(200, {R"({"Type":"container","Action":"start"})"
                                "\n"}));
  std::atomic<int> events{0};
  auto r = docker::blocking<void>([&](auto done) {
    f.client.events(
        {}, [&](const docker::event_message&) { ++events; }, done);
  });
  REQUIRE_FALSE(r.ok());
  CHECK(r.err().code == errc::engine_unavailable);
  CHECK(events == 1);
  CHECK(f.engine.last_request().target == "/v1.41/events");
}

// -- connection budgets -------------------------------------------------------------------

TEST_CASE("long-lived calls (exec streams, events, waits) cannot starve control calls",
          "[client]") {
  engine_and_client f;
  f.engine.set_handler([](const received_request& r) {
    const auto path = r.path();
    if (path.ends_with("/start") && path.starts_with("/v1.41/exec/")) return reply::hang();
    if (path == "/v1.41/events" || path.ends_with("/wait")) return reply::hang();
    if (path == "/v1.41/containers/create") return reply::json(201, R"({"Id":"c1"})");
    if (path == "/v1.41/containers/json") return reply::json(200, "[]");
    if (path == "/v1.41/containers/c1/json")
      return reply::json(200, R"({"Id":"c1","State":{"Status":"running","Running":true}})");
    if (path == "/v1.41/containers/c1/exec") return reply::json(201, R"({"Id":"e2"})");
    if (path == "/v1.41/exec/e2/json") return reply::json(200, R"({"ID":"e2","Running":true})");
    return reply::empty(204);  // start, stop, remove
  });
  // A pool of 4 with 3 for streams; the old single pool let 4 streams take all 4.
  docker::client_options options = engine_and_client::options(f.engine);
  options.http.max_connections = 4;
  options.http.max_stream_connections = 3;
  docker::client client(options);

  std::atomic<int> ended{0};
  auto count_end = [&ended](auto) { ++ended; };
  docker::exec_start_options long_exec;
  long_exec.timeout = 60s;
  client.exec_start("e0", long_exec, count_end);
  client.exec_start("e1", long_exec, count_end);
  client.events(
      {}, [](const docker::event_message&) {}, count_end);
  client.container_wait("c0", docker::wait_condition::not_running, 60s, count_end);
  REQUIRE(f.engine.wait_for_requests(3));
  REQUIRE(eventually([&] { return client.http().stats().queued_requests == 1; }));

  // Each control call completes (before its 5 s deadline) while the streams hang.
  docker::container_create_request create;
  create.image = "corral/sandbox:busybox";
  auto created = docker::blocking<docker::container_create_response>(
      [&](auto done) { client.container_create(create, done); });
  INFO(why(created));
  REQUIRE(created.ok());
  auto started = docker::blocking<docker::change_outcome>(
      [&](auto done) { client.container_start("c1", done); });
  CHECK(started.ok());
  auto listed = docker::blocking<std::vector<docker::container_summary>>(
      [&](auto done) { client.container_list({}, done); });
  CHECK(listed.ok());
  auto inspected = docker::blocking<docker::container_inspect_response>(
      [&](auto done) { client.container_inspect("c1", done); });
  CHECK(inspected.ok());
  docker::exec_create_request exec;
  exec.cmd = {"true"};
  auto exec_created = docker::blocking<docker::exec_create_response>(
      [&](auto done) { client.exec_create("c1", exec, done); });
  CHECK(exec_created.ok());
  auto exec_inspected = docker::blocking<docker::exec_inspect_response>(
      [&](auto done) { client.exec_inspect("e2", done); });
  CHECK(exec_inspected.ok());
  auto stopped = docker::blocking<docker::change_outcome>(
      [&](auto done) { client.container_stop("c1", 1s, done); });
  CHECK(stopped.ok());
  auto removed =
      docker::blocking<void>([&](auto done) { client.container_remove("c1", true, done); });
  CHECK(removed.ok());
  CHECK(ended == 0);  // the streams still run
  CHECK(client.http().stats().stream_connections == 3);

  client.shutdown();
  CHECK(ended == 4);
}
