// Request shapes of docker::client's container endpoints against the fake engine (create,
// start, stop, kill, wait, inspect, list, rename, remove, pause, logs, stats): the method,
// target, headers and body each sends, and how it reads the replies. Apart from
// client_requests_test.cpp by area: containers are the most endpoints.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "app/fake_engine/http_core.hpp"
#include "docker/blocking.hpp"
#include "tests/unit/client_requests_fixture.hpp"

using namespace corral::client_request_tests;

// -- containers ---------------------------------------------------------------------------

TEST_CASE("container_create: query, Content-Type, JSON body with HostConfig; reply read",
          "[client]") {
  engine_and_client f;
  f.answer(reply::json(201, R"({"Id":"abc123","Warnings":["low memory"]})"));

  docker::container_create_request c;
  c.name = "corral sandbox/1";
  c.image = "corral/sandbox:busybox";
  c.cmd = {"sh", "-c", "echo \"hi\" && exit 3"};
  c.entrypoint = {"/bin/init"};
  c.env = {"A=1", "B=two words"};
  c.user = "1000:1000";
  c.working_dir = "/work";
  c.labels = {{"corral.managed-by", "corral"}, {"corral.job", "j-1"}};
  c.stop_signal = "SIGTERM";
  c.stop_timeout = 7;
  c.open_stdin = true;
  c.host.binds = {"/host/in:/in:ro"};
  c.host.tmpfs = {{"/tmp", "size=64m,uid=1000"}};
  c.host.memory = 256 << 20;
  c.host.memory_swap = 256 << 20;
  c.host.nano_cpus = 500000000;
  c.host.cpu_shares = 512;
  c.host.pids_limit = 64;
  c.host.cap_drop = {"ALL"};
  c.host.cap_add = {"CHOWN"};
  c.host.security_opt = {"no-new-privileges"};
  c.host.readonly_rootfs = true;
  c.host.network_mode = "none";
  c.host.init = true;
  c.host.auto_remove = false;

  auto r = docker::blocking<docker::container_create_response>(
      [&](auto done) { f.client.container_create(c, done); });
  INFO(why(r));
  REQUIRE(r.ok());
  CHECK(r->id == "abc123");
  CHECK(r->warnings == std::vector<std::string>{"low memory"});

  const auto req = f.engine.last_request();
  CHECK(req.method == "POST");
  CHECK(req.target == "/v1.41/containers/create?name=corral%20sandbox%2F1");
  CHECK(url_decode(*req.query("name")) == "corral sandbox/1");
  CHECK(req.header("content-type") == "application/json");

  json_body body(req.body);
  auto doc = body.doc;
  CHECK(std::string_view(doc["Image"]) == "corral/sandbox:busybox");
  CHECK(strings(doc["Cmd"]) == c.cmd);
  CHECK(strings(doc["Entrypoint"]) == c.entrypoint);
  CHECK(strings(doc["Env"]) == c.env);
  CHECK(std::string_view(doc["User"]) == "1000:1000");
  CHECK(std::string_view(doc["WorkingDir"]) == "/work");
  CHECK(std::string_view(doc["Labels"]["corral.managed-by"]) == "corral");
  CHECK(std::string_view(doc["Labels"]["corral.job"]) == "j-1");
  CHECK(std::string_view(doc["StopSignal"]) == "SIGTERM");
  CHECK(int64_t(doc["StopTimeout"]) == 7);
  CHECK(bool(doc["Tty"]) == false);
  CHECK(bool(doc["OpenStdin"]) == true);
  CHECK(bool(doc["AttachStdin"]) == false);
  CHECK(bool(doc["AttachStdout"]) == false);
  CHECK(bool(doc["AttachStderr"]) == false);

  auto host = doc["HostConfig"];
  CHECK(strings(host["Binds"]) == c.host.binds);
  CHECK(std::string_view(host["Tmpfs"]["/tmp"]) == "size=64m,uid=1000");
  CHECK(int64_t(host["Memory"]) == 256 << 20);
  CHECK(int64_t(host["MemorySwap"]) == 256 << 20);
  CHECK(int64_t(host["NanoCpus"]) == 500000000);
  CHECK(int64_t(host["CpuShares"]) == 512);
  CHECK(int64_t(host["PidsLimit"]) == 64);
  CHECK(strings(host["CapDrop"]) == std::vector<std::string>{"ALL"});
  CHECK(strings(host["CapAdd"]) == std::vector<std::string>{"CHOWN"});
  CHECK(strings(host["SecurityOpt"]) == std::vector<std::string>{"no-new-privileges"});
  CHECK(bool(host["ReadonlyRootfs"]) == true);
  CHECK(std::string_view(host["NetworkMode"]) == "none");
  CHECK(bool(host["Init"]) == true);
  CHECK(bool(host["AutoRemove"]) == false);
}

TEST_CASE("a '+' in a name is sent as %2B, which the engine reads back as '+'", "[client]") {
  // dockerd reads a query with Go's url.ParseQuery, where a bare '+' is a space: a name with
  // '+' must travel escaped. The fake decodes queries the same way (and paths literally).
  engine_and_client f;
  f.answer(reply::json(201, R"({"Id":"abc123","Warnings":[]})"));
  docker::container_create_request c;
  c.name = "a+b";
  c.image = "corral/sandbox:busybox";
  auto r = docker::blocking<docker::container_create_response>(
      [&](auto done) { f.client.container_create(c, done); });
  REQUIRE(r.ok());
  const auto req = f.engine.last_request();
  CHECK(req.target == "/v1.41/containers/create?name=a%2Bb");
  CHECK(url_decode(*req.query("name")) == "a+b");
  CHECK(url_decode("a+b%2B") == "a b+");
  CHECK(corral::app::fake::url_decode("a+b%2B", corral::app::fake::plus_sign::literal) == "a+b+");
}

TEST_CASE("container_create: unset fields are left out", "[client]") {
  engine_and_client f;
  f.answer(reply::json(201, R"({"Id":"abc","Warnings":[]})"));
  docker::container_create_request c;
  c.image = "busybox";
  auto r = docker::blocking<docker::container_create_response>(
      [&](auto done) { f.client.container_create(c, done); });
  REQUIRE(r.ok());
  const auto req = f.engine.last_request();
  CHECK(req.target == "/v1.41/containers/create");  // no ?name=
  json_body body(req.body);
  simdjson::dom::element unused;
  for (const char* key :
       {"Cmd", "Entrypoint", "Env", "User", "WorkingDir", "Labels", "StopSignal", "StopTimeout"}) {
    INFO(key);
    CHECK(body.doc[key].get(unused) == simdjson::NO_SUCH_FIELD);
  }
  auto host = body.doc["HostConfig"];
  for (const char* key : {"Binds", "Tmpfs", "Memory", "MemorySwap", "NanoCpus", "CpuShares",
                          "PidsLimit", "CapDrop", "CapAdd", "SecurityOpt", "NetworkMode", "Init"}) {
    INFO(key);
    CHECK(host[key].get(unused) == simdjson::NO_SUCH_FIELD);
  }
  CHECK(r->warnings.empty());
}

TEST_CASE("container_create: refused without an image; errors and bad replies", "[client]") {
  engine_and_client f;
  SECTION("no image: invalid_request, nothing sent") {
    auto r = docker::blocking<docker::container_create_response>(
        [&](auto done) { f.client.container_create(docker::container_create_request{}, done); });
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().code == errc::invalid_request);
    CHECK(f.engine.request_count() == 0);
  }
  SECTION("409: the name is taken") {
    f.answer(reply::error(409, R"(Conflict. The container name "/x" is already in use)"));
    docker::container_create_request c;
    c.image = "busybox";
    c.name = "x";
    auto r = docker::blocking<docker::container_create_response>(
        [&](auto done) { f.client.container_create(c, done); });
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().code == errc::conflict);
    CHECK(r.err().message == R"(Conflict. The container name "/x" is already in use)");
  }
  SECTION("a reply without Id is a protocol error") {
    f.answer(reply::json(201, R"({"Warnings":[]})"));
    docker::container_create_request c;
    c.image = "busybox";
    auto r = docker::blocking<docker::container_create_response>(
        [&](auto done) { f.client.container_create(c, done); });
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().code == errc::protocol);
  }
}

TEST_CASE("container_start and _stop: 204 done, 304 already, 404 not_found", "[client]") {
  engine_and_client f;
  auto start = [&](const std::string& id) {
    return docker::blocking<docker::change_outcome>(
        [&](auto done) { f.client.container_start(id, done); });
  };
  auto stop = [&](const std::string& id, std::chrono::seconds grace) {
    return docker::blocking<docker::change_outcome>(
        [&](auto done) { f.client.container_stop(id, grace, done); });
  };

  f.answer(reply::empty(204));
  auto started = start("abc");
  REQUIRE(started.ok());
  CHECK(*started == docker::change_outcome::done);
  CHECK(f.engine.last_request().method == "POST");
  CHECK(f.engine.last_request().target == "/v1.41/containers/abc/start");
  CHECK(f.engine.last_request().body.empty());

  auto stopped = stop("abc", 5s);
  REQUIRE(stopped.ok());
  CHECK(*stopped == docker::change_outcome::done);
  CHECK(f.engine.last_request().method == "POST");
  CHECK(f.engine.last_request().target == "/v1.41/containers/abc/stop?t=5");

  f.answer(reply::empty(304));
  auto again = start("abc");
  REQUIRE(again.ok());
  CHECK(*again == docker::change_outcome::already);
  auto stopped_again = stop("abc", 0s);
  REQUIRE(stopped_again.ok());
  CHECK(*stopped_again == docker::change_outcome::already);
  CHECK(f.engine.last_request().target == "/v1.41/containers/abc/stop?t=0");

  f.answer(reply::error(404, "No such container: a b/c"));
  auto missing = start("a b/c");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.err().code == errc::not_found);
  CHECK(missing.err().message == "No such container: a b/c");
  CHECK(f.engine.last_request().target == "/v1.41/containers/a%20b%2Fc/start");
}

TEST_CASE("container_kill: signal in the query when given", "[client]") {
  engine_and_client f;
  f.answer(reply::empty(204));
  REQUIRE(docker::blocking<void>([&](auto done) {
            f.client.container_kill("abc", "SIGKILL", done);
          }).ok());
  CHECK(f.engine.last_request().method == "POST");
  CHECK(f.engine.last_request().target == "/v1.41/containers/abc/kill?signal=SIGKILL");
  REQUIRE(
      docker::blocking<void>([&](auto done) { f.client.container_kill("abc", "", done); }).ok());
  CHECK(f.engine.last_request().target == "/v1.41/containers/abc/kill");

  f.answer(reply::error(409, "Container abc is not running"));
  auto r = docker::blocking<void>([&](auto done) { f.client.container_kill("abc", "9", done); });
  REQUIRE_FALSE(r.ok());
  CHECK(r.err().code == errc::conflict);
  CHECK(r.err().message == "Container abc is not running");
  CHECK(f.engine.last_request().target == "/v1.41/containers/abc/kill?signal=9");
}

TEST_CASE("container_wait: condition in the query; status and error read", "[client]") {
  engine_and_client f;
  auto wait = [&](docker::wait_condition c) {
    return docker::blocking<docker::container_wait_response>(
        [&](auto done) { f.client.container_wait("abc", c, 5s, done); });
  };
  f.answer(reply::json(200, R"({"StatusCode":137,"Error":{"Message":"OOM"}})"));
  auto r = wait(docker::wait_condition::not_running);
  REQUIRE(r.ok());
  CHECK(r->status_code == 137);
  CHECK(r->error == "OOM");
  CHECK(f.engine.last_request().method == "POST");
  CHECK(f.engine.last_request().target == "/v1.41/containers/abc/wait?condition=not-running");

  f.answer(reply::json(200, R"({"StatusCode":0,"Error":null})"));
  auto next = wait(docker::wait_condition::next_exit);
  REQUIRE(next.ok());
  CHECK(next->status_code == 0);
  CHECK(next->error.empty());
  CHECK(f.engine.last_request().target == "/v1.41/containers/abc/wait?condition=next-exit");

  f.answer(reply::json(200, R"({"StatusCode":1})"));
  REQUIRE(wait(docker::wait_condition::removed).ok());
  CHECK(f.engine.last_request().target == "/v1.41/containers/abc/wait?condition=removed");
}

TEST_CASE("container_wait: its own timeout, and cancel", "[client]") {
  engine_and_client f;
  f.answer(reply::hang());
  const auto begin = std::chrono::steady_clock::now();
  auto r = docker::blocking<docker::container_wait_response>([&](auto done) {
    f.client.container_wait("abc", docker::wait_condition::not_running, 150ms, done);
  });
  REQUIRE_FALSE(r.ok());
  CHECK(r.err().code == errc::timeout);
  CHECK(std::chrono::steady_clock::now() - begin < 2s);

  std::promise<result<docker::container_wait_response>> promise;
  auto future = promise.get_future();
  const auto id = f.client.container_wait(
      "abc", docker::wait_condition::not_running, 10s,
      [&](result<docker::container_wait_response> w) { promise.set_value(std::move(w)); });
  REQUIRE(f.engine.wait_for_requests(2));
  f.client.cancel(id);
  REQUIRE(future.wait_for(2s) == std::future_status::ready);
  CHECK(future.get().err().code == errc::cancelled);
}

TEST_CASE("container_inspect: fields read; 404 not_found with the message", "[client]") {
  engine_and_client f;
  f.answer(reply::json(200, R"({
    "Id":"abc123","Created":"2024-05-01T10:00:00Z","Name":"/corral-1","Image":"sha256:img",
    "MountLabel":"","State":{"Status":"exited","Running":false,"Paused":false,
      "Restarting":false,"OOMKilled":true,"Dead":false,"Pid":0,"ExitCode":137,"Error":"",
      "StartedAt":"2024-05-01T10:00:01Z","FinishedAt":"2024-05-01T10:00:02Z"},
    "HostConfig":{"Binds":["/a:/b"],"Tmpfs":{"/tmp":"size=1m"},"Memory":1048576,
      "MemorySwap":1048576,"NanoCpus":1000000000,"CpuShares":0,"PidsLimit":32,
      "CapDrop":["ALL"],"CapAdd":null,"SecurityOpt":["no-new-privileges"],
      "ReadonlyRootfs":true,"NetworkMode":"none","Init":true,"AutoRemove":false},
    "Config":{"User":"1000","Env":["A=1"],"Cmd":["sh","-c","x"],"Image":"busybox",
      "WorkingDir":"/w","Labels":{"corral.managed-by":"corral"}},
    "NetworkSettings":{"Networks":{}}})"));
  auto r = docker::blocking<docker::container_inspect_response>(
      [&](auto done) { f.client.container_inspect("abc123", done); });
  INFO(why(r));
  REQUIRE(r.ok());
  CHECK(f.engine.last_request().method == "GET");
  CHECK(f.engine.last_request().target == "/v1.41/containers/abc123/json");
  CHECK(r->id == "abc123");
  CHECK(r->name == "/corral-1");
  CHECK(r->image == "sha256:img");
  CHECK(r->config_image == "busybox");
  CHECK(r->created == "2024-05-01T10:00:00Z");
  CHECK(r->user == "1000");
  CHECK(r->working_dir == "/w");
  CHECK(r->cmd == std::vector<std::string>{"sh", "-c", "x"});
  CHECK(r->env == std::vector<std::string>{"A=1"});
  CHECK(r->labels.at("corral.managed-by") == "corral");
  CHECK(r->state.status == "exited");
  CHECK_FALSE(r->state.running);
  CHECK(r->state.oom_killed);
  CHECK(r->state.exit_code == 137);
  CHECK(r->state.finished_at == "2024-05-01T10:00:02Z");
  CHECK(r->host.binds == std::vector<std::string>{"/a:/b"});
  CHECK(r->host.tmpfs.at("/tmp") == "size=1m");
  CHECK(r->host.memory == 1048576);
  CHECK(r->host.nano_cpus == 1000000000);
  CHECK(r->host.pids_limit == 32);
  CHECK(r->host.cap_drop == std::vector<std::string>{"ALL"});
  CHECK(r->host.cap_add.empty());
  CHECK(r->host.security_opt == std::vector<std::string>{"no-new-privileges"});
  CHECK(r->host.readonly_rootfs);
  CHECK(r->host.network_mode == "none");
  CHECK(r->host.init);

  f.answer(reply::error(404, "No such container: gone"));
  auto missing = docker::blocking<docker::container_inspect_response>(
      [&](auto done) { f.client.container_inspect("gone", done); });
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.err().code == errc::not_found);
  CHECK(missing.err().message == "No such container: gone");

  f.answer(reply::json(200, R"({"Id": truncated)"));
  auto broken = docker::blocking<docker::container_inspect_response>(
      [&](auto done) { f.client.container_inspect("abc", done); });
  REQUIRE_FALSE(broken.ok());
  CHECK(broken.err().code == errc::protocol);
}

TEST_CASE("container_list: all and label filters in the query; summaries read", "[client]") {
  engine_and_client f;
  f.answer(reply::json(200, R"([{"Id":"c1","Names":["/corral-1"],"Image":"busybox",
      "Created":1700000001,"Labels":{"corral.managed-by":"corral"},"State":"running",
      "Status":"Up 2 seconds"}])"));
  docker::container_list_options options;
  options.filters = {{"label", {"corral.managed-by=corral"}}};
  auto r = docker::blocking<std::vector<docker::container_summary>>(
      [&](auto done) { f.client.container_list(options, done); });
  REQUIRE(r.ok());
  const auto req = f.engine.last_request();
  CHECK(req.method == "GET");
  CHECK(req.target ==
        "/v1.41/containers/json?all=1&filters="
        "%7B%22label%22%3A%5B%22corral.managed-by%3Dcorral%22%5D%7D");
  json_body decoded(url_decode(*req.query("filters")));
  CHECK(strings(decoded.doc["label"]) == std::vector<std::string>{"corral.managed-by=corral"});
  REQUIRE(r->size() == 1);
  const auto& c = (*r)[0];
  CHECK(c.id == "c1");
  CHECK(c.names == std::vector<std::string>{"/corral-1"});
  CHECK(c.image == "busybox");
  CHECK(c.created == 1700000001);
  CHECK(c.labels.at("corral.managed-by") == "corral");
  CHECK(c.state == "running");
  CHECK(c.status == "Up 2 seconds");

  options.all = false;
  options.filters.clear();
  f.answer(reply::json(200, "[]"));
  auto none = docker::blocking<std::vector<docker::container_summary>>(
      [&](auto done) { f.client.container_list(options, done); });
  REQUIRE(none.ok());
  CHECK(none->empty());
  CHECK(f.engine.last_request().target == "/v1.41/containers/json?all=0");
}

TEST_CASE("container_rename, _remove, _pause, _unpause: method and target", "[client]") {
  engine_and_client f;
  f.answer(reply::empty(204));
  auto call = [&](auto start) {
    auto r = docker::blocking<void>(start);
    INFO(why(r));
    REQUIRE(r.ok());
    return f.engine.last_request();
  };
  auto req = call([&](auto done) { f.client.container_rename("abc", "new name&x=1", done); });
  CHECK(req.method == "POST");
  CHECK(req.target == "/v1.41/containers/abc/rename?name=new%20name%26x%3D1");

  req = call([&](auto done) { f.client.container_remove("abc", true, done); });
  CHECK(req.method == "DELETE");
  CHECK(req.target == "/v1.41/containers/abc?force=1&v=1");
  req = call([&](auto done) { f.client.container_remove("abc", false, done); });
  CHECK(req.target == "/v1.41/containers/abc?v=1");

  req = call([&](auto done) { f.client.container_pause("abc", done); });
  CHECK(req.method == "POST");
  CHECK(req.target == "/v1.41/containers/abc/pause");
  req = call([&](auto done) { f.client.container_unpause("abc", done); });
  CHECK(req.method == "POST");
  CHECK(req.target == "/v1.41/containers/abc/unpause");

  f.answer(reply::error(409, "removal of container abc is already in progress"));
  auto busy =
      docker::blocking<void>([&](auto done) { f.client.container_remove("abc", true, done); });
  REQUIRE_FALSE(busy.ok());
  CHECK(busy.err().code == errc::conflict);
}

TEST_CASE("container_logs: query; stdout and stderr demultiplexed and capped", "[client]") {
  engine_and_client f;
  const std::string frames = mux_frame(1, "out 1\n") + mux_frame(2, "err 1\n") +
                             mux_frame(1, "out 2\n") + mux_frame(2, "err 2\n");
  auto logs = [&](const docker::container_logs_options& o) {
    return docker::blocking<docker::exec_output>(
        [&](auto done) { f.client.container_logs("abc", o, done); });
  };

  SECTION("content-length body") {
    f.answer(reply::response(200, frames,
                             {{"Content-Type", "application/vnd.docker.multiplexed-stream"}}));
    auto r = logs({});
    REQUIRE(r.ok());
    CHECK(r->stdout_data.data == "out 1\nout 2\n");
    CHECK(r->stderr_data.data == "err 1\nerr 2\n");
    const auto req = f.engine.last_request();
    CHECK(req.method == "GET");
    CHECK(req.target == "/v1.41/containers/abc/logs?follow=0&stdout=1&stderr=1&tail=all");
  }
  SECTION("chunked, frames split across chunks; options in the query") {
    std::vector<std::string> pieces;
    for (std::size_t i = 0; i < frames.size(); i += 5) pieces.push_back(frames.substr(i, 5));
    f.answer(reply::chunked(200, pieces, 0ms, "application/vnd.docker.multiplexed-stream"));
    docker::container_logs_options o;
    o.stderr_stream = false;
    o.timestamps = true;
    o.tail = "100";
    auto r = logs(o);
    REQUIRE(r.ok());
    CHECK(r->stdout_data.data == "out 1\nout 2\n");
    CHECK(f.engine.last_request().target ==
          "/v1.41/containers/abc/logs?follow=0&stdout=1&stderr=0&timestamps=1&tail=100");
  }
  SECTION("caps keep the head and count the rest") {
    f.answer(reply::response(200, frames));
    docker::container_logs_options o;
    o.max_stdout = 4;
    o.max_stderr = 0;
    auto r = logs(o);
    REQUIRE(r.ok());
    CHECK(r->stdout_data.data == "out ");
    CHECK(r->stdout_data.truncated);
    CHECK(r->stdout_data.total == 12);
    CHECK(r->stderr_data.data.empty());
    CHECK(r->stderr_data.total == 12);
  }
  SECTION("a truncated frame is a protocol error") {
    f.answer(reply::response(200, frames.substr(0, frames.size() - 3)));
    auto r = logs({});
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().code == errc::protocol);
  }
  SECTION("404") {
    f.answer(reply::error(404, "No such container: abc"));
    auto r = logs({});
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().code == errc::not_found);
  }
}

TEST_CASE("container_stats: one-shot query; numbers read", "[client]") {
  engine_and_client f;
  f.answer(reply::json(200, R"({"read":"2024-05-01T10:00:00Z","pids_stats":{"current":3},
      "cpu_stats":{"cpu_usage":{"total_usage":123456},"system_cpu_usage":999999,
      "online_cpus":4},"memory_stats":{"usage":2048,"limit":4096}})"));
  auto r = docker::blocking<docker::container_stats>(
      [&](auto done) { f.client.container_stats("abc", done); });
  REQUIRE(r.ok());
  CHECK(f.engine.last_request().method == "GET");
  CHECK(f.engine.last_request().target == "/v1.41/containers/abc/stats?stream=0&one-shot=1");
  CHECK(r->pids_current == 3);
  CHECK(r->cpu_total_usage == 123456);
  CHECK(r->system_cpu_usage == 999999);
  CHECK(r->online_cpus == 4);
  CHECK(r->memory_usage == 2048);
  CHECK(r->memory_limit == 4096);
}
