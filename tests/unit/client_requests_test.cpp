// Request shapes of docker::client against the fake engine, in the manner of moby's mock
// client tests: for each endpoint the method, target (path and query), headers and JSON
// body it sends, and how it reads the engine's replies. This file: the system endpoints and
// images; containers are in client_container_requests_test.cpp, exec, archive, events and the
// connection budgets in client_stream_requests_test.cpp.
#include <catch2/catch.hpp>

#include <chrono>
#include <string>
#include <vector>

#include "app/fake_engine/http_core.hpp"
#include "docker/blocking.hpp"
#include "tests/unit/client_requests_fixture.hpp"

using namespace corral::client_request_tests;

// -- system -------------------------------------------------------------------------------

TEST_CASE("ping: GET /_ping, version headers read", "[client]") {
  engine_and_client f;
  f.answer(reply::response(200, "OK", {{"Api-Version", "1.43"}, {"Ostype", "linux"}}));
  auto r = docker::blocking<docker::ping_response>([&](auto done) { f.client.ping(done); });
  REQUIRE(r.ok());
  CHECK(r->api_version == "1.43");
  CHECK(r->os_type == "linux");
  const auto req = f.engine.last_request();
  CHECK(req.method == "GET");
  CHECK(req.target == "/_ping");
}

TEST_CASE("version: GET /version, unversioned, fields read", "[client]") {
  engine_and_client f;
  f.answer(reply::json(200, R"({"Version":"24.0.7","ApiVersion":"1.43","MinAPIVersion":"1.12",
                              "Os":"linux","Arch":"amd64","KernelVersion":"6.1.0"})"));
  auto r = docker::blocking<docker::version_response>([&](auto done) { f.client.version(done); });
  REQUIRE(r.ok());
  CHECK(r->version == "24.0.7");
  CHECK(r->api_version == "1.43");
  CHECK(r->min_api_version == "1.12");
  CHECK(r->os == "linux");
  CHECK(r->arch == "amd64");
  CHECK(r->kernel_version == "6.1.0");
  CHECK(f.engine.last_request().target == "/version");
  CHECK(f.engine.last_request().method == "GET");
}

TEST_CASE("negotiate: the engine's API version decides", "[client]") {
  engine_and_client f;
  auto negotiate = [&] {
    return docker::blocking<docker::version_response>([&](auto done) { f.client.negotiate(done); });
  };
  auto engine_says = [&](std::string api) {
    f.answer(reply::json(200, R"({"Version":"19.03.15","ApiVersion":")" + api + R"("})"));
  };
  CHECK(f.client.api_version() == "1.41");  // before negotiation

  SECTION("1.40 is too old, naming both versions") {
    engine_says("1.40");
    auto r = negotiate();
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().code == errc::api_too_old);
    CHECK(r.err().message.find("1.40") != std::string::npos);
    CHECK(r.err().message.find("1.41") != std::string::npos);
    CHECK(f.client.api_version() == "1.41");
  }
  SECTION("1.41 is taken as is") {
    engine_says("1.41");
    auto r = negotiate();
    REQUIRE(r.ok());
    CHECK(r->api_version == "1.41");
    CHECK(f.client.api_version() == "1.41");
  }
  SECTION("1.42 is taken as is, and used by later calls") {
    engine_says("1.42");
    REQUIRE(negotiate().ok());
    CHECK(f.client.api_version() == "1.42");
    f.answer(reply::empty(204));
    REQUIRE(docker::blocking<docker::change_outcome>([&](auto done) {
              f.client.container_start("abc", done);
            }).ok());
    CHECK(f.engine.last_request().target == "/v1.42/containers/abc/start");
  }
  SECTION("1.45 is capped at max_api_version") {
    engine_says("1.45");
    auto r = negotiate();
    REQUIRE(r.ok());
    CHECK(r->api_version == "1.45");  // what the engine said
    CHECK(f.client.api_version() == std::string(docker::max_api_version));
    CHECK(f.client.api_version() == "1.43");
    CHECK(f.client.versioned("/info") == "/v1.43/info");
  }
  SECTION("2.0 is newer than anything: capped") {
    engine_says("2.0");
    REQUIRE(negotiate().ok());
    CHECK(f.client.api_version() == "1.43");
  }
  SECTION("a version that is not one is a protocol error") {
    engine_says("one.forty");
    auto r = negotiate();
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().code == errc::protocol);
    CHECK(f.client.api_version() == "1.41");
  }
  SECTION("a body that is not JSON is a protocol error") {
    f.answer(reply::json(200, "<html>definitely not docker</html>"));
    auto r = negotiate();
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().code == errc::protocol);
  }
  SECTION("JSON without ApiVersion is a protocol error") {
    f.answer(reply::json(200, R"({"Version":"24.0.7"})"));
    auto r = negotiate();
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().code == errc::protocol);
  }
  SECTION("an engine error is passed on") {
    f.answer(reply::error(500, "daemon on fire"));
    auto r = negotiate();
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().code == errc::engine_error);
    CHECK(r.err().message == "daemon on fire");
  }
  CHECK(f.engine.requests().at(0).target == "/version");
  CHECK(f.engine.requests().at(0).method == "GET");
}

TEST_CASE("info: GET /v1.41/info, fields read", "[client]") {
  engine_and_client f;
  f.answer(reply::json(200, R"({"ID":"X7ZQ","Name":"host1","ServerVersion":"24.0.7",
      "OperatingSystem":"Debian GNU/Linux 12","CgroupDriver":"systemd","CgroupVersion":"2",
      "Containers":5,"ContainersRunning":2,"Images":7,"NCPU":8,"MemTotal":16777216000,
      "Unknown":{"nested":[1,2,3]}})"));
  auto r = docker::blocking<docker::system_info>([&](auto done) { f.client.info(done); });
  REQUIRE(r.ok());
  CHECK(r->id == "X7ZQ");
  CHECK(r->name == "host1");
  CHECK(r->server_version == "24.0.7");
  CHECK(r->operating_system == "Debian GNU/Linux 12");
  CHECK(r->cgroup_driver == "systemd");
  CHECK(r->cgroup_version == "2");
  CHECK(r->containers == 5);
  CHECK(r->containers_running == 2);
  CHECK(r->images == 7);
  CHECK(r->ncpu == 8);
  CHECK(r->mem_total == 16777216000);
  CHECK(f.engine.last_request().target == "/v1.41/info");
}

// -- images -------------------------------------------------------------------------------

TEST_CASE("image_inspect: the name is URL-encoded; fields read; 404 is not_found", "[client]") {
  engine_and_client f;
  f.answer(reply::json(200, R"({"Id":"sha256:abc","RepoTags":["corral/sandbox:busybox"],
      "Created":"2024-01-01T00:00:00Z","Size":4261550,
      "Config":{"User":"1000:1000","Env":["PATH=/bin"],"Labels":{"org.corral":"yes"}}})"));
  auto r = docker::blocking<docker::image_inspect_response>(
      [&](auto done) { f.client.image_inspect("corral/sandbox:busybox", done); });
  REQUIRE(r.ok());
  CHECK(f.engine.last_request().method == "GET");
  CHECK(f.engine.last_request().target == "/v1.41/images/corral%2Fsandbox%3Abusybox/json");
  CHECK(r->id == "sha256:abc");
  CHECK(r->repo_tags == std::vector<std::string>{"corral/sandbox:busybox"});
  CHECK(r->created == "2024-01-01T00:00:00Z");
  CHECK(r->size == 4261550);
  CHECK(r->user == "1000:1000");
  CHECK(r->env == std::vector<std::string>{"PATH=/bin"});
  CHECK(r->labels.at("org.corral") == "yes");

  f.answer(reply::error(404, "No such image: nope:latest"));
  auto missing = docker::blocking<docker::image_inspect_response>(
      [&](auto done) { f.client.image_inspect("nope:latest", done); });
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.err().code == errc::not_found);
  CHECK(missing.err().http_status == 404);
  CHECK(missing.err().message == "No such image: nope:latest");
}

TEST_CASE("image_list: filters as URL-encoded JSON; summaries read", "[client]") {
  engine_and_client f;
  f.answer(reply::json(200, R"([{"Id":"sha256:1","RepoTags":["a:1","a:latest"],"Created":1700000000,
      "Size":10,"Labels":{"k":"v"}},{"Id":"sha256:2","RepoTags":null,"Created":1,"Size":2,
      "Labels":null}])"));
  docker::image_list_options options;
  options.filters = {{"reference", {"corral/*"}}, {"dangling", {"false"}}};
  auto r = docker::blocking<std::vector<docker::image_summary>>(
      [&](auto done) { f.client.image_list(options, done); });
  REQUIRE(r.ok());
  const auto req = f.engine.last_request();
  CHECK(req.method == "GET");
  CHECK(req.path() == "/v1.41/images/json");
  CHECK(req.query("all") == "0");
  const auto filters = req.query("filters");
  REQUIRE(filters);
  CHECK(*filters ==
        "%7B%22dangling%22%3A%5B%22false%22%5D%2C%22reference%22%3A%5B%22corral%2F%2A%22%5D%7D");
  json_body decoded(url_decode(*filters));
  CHECK(strings(decoded.doc["reference"]) == std::vector<std::string>{"corral/*"});
  CHECK(strings(decoded.doc["dangling"]) == std::vector<std::string>{"false"});

  REQUIRE(r->size() == 2);
  CHECK((*r)[0].id == "sha256:1");
  CHECK((*r)[0].repo_tags == std::vector<std::string>{"a:1", "a:latest"});
  CHECK((*r)[0].created == 1700000000);
  CHECK((*r)[0].labels.at("k") == "v");
  CHECK((*r)[1].repo_tags.empty());
  CHECK((*r)[1].labels.empty());

  // Without filters: no filters parameter at all.
  auto plain = docker::blocking<std::vector<docker::image_summary>>([&](auto done) {
    f.client.image_list(docker::image_list_options{true, {}}, done);
  });
  REQUIRE(plain.ok());
  CHECK(f.engine.last_request().target == "/v1.41/images/json?all=1");
}

TEST_CASE("image_remove: DELETE with force; items read", "[client]") {
  engine_and_client f;
  f.answer(reply::json(200, R"([{"Untagged":"a:1"},{"Deleted":"sha256:1"}])"));
  auto r = docker::blocking<std::vector<docker::image_delete_item>>(
      [&](auto done) { f.client.image_remove("a:1", true, done); });
  REQUIRE(r.ok());
  CHECK(f.engine.last_request().method == "DELETE");
  CHECK(f.engine.last_request().target == "/v1.41/images/a%3A1?force=1");
  REQUIRE(r->size() == 2);
  CHECK((*r)[0].untagged == "a:1");
  CHECK((*r)[1].deleted == "sha256:1");

  f.answer(reply::error(409, "image is being used by running container 1234"));
  auto busy = docker::blocking<std::vector<docker::image_delete_item>>(
      [&](auto done) { f.client.image_remove("a:1", false, done); });
  REQUIRE_FALSE(busy.ok());
  CHECK(busy.err().code == errc::conflict);
  CHECK(f.engine.last_request().target == "/v1.41/images/a%3A1?force=0");
}

TEST_CASE("image_pull: progress lines as they come; an error line fails the pull", "[client]") {
  engine_and_client f;
  std::vector<docker::pull_progress> seen;
  auto pull = [&](const std::string& image, const std::string& tag) {
    seen.clear();
    return docker::blocking<void>([&](auto done) {
      f.client.image_pull(
          image, tag, [&](const docker::pull_progress& p) { seen.push_back(p); }, done);
    });
  };

  SECTION("success") {
    f.answer(reply::chunked(
        200,
        {R"({"status":"Pulling from corral/sandbox","id":"busybox"})"
         "\n",
         R"({"status":"Downloading","id":"a1b2","progressDetail":{"current":1,"tot)",
         R"(al":9},"progress":"[=> ] 1B/9B"})"
         "\r\n",
         R"({"status":"Status: Downloaded newer image for corral/sandbox:busybox"})"},
        2ms));
    auto r = pull("corral/sandbox", "busybox");
    INFO(why(r));
    REQUIRE(r.ok());
    const auto req = f.engine.last_request();
    CHECK(req.method == "POST");
    CHECK(req.target == "/v1.41/images/create?fromImage=corral%2Fsandbox&tag=busybox");
    CHECK(req.body.empty());
    REQUIRE(seen.size() == 3);
    CHECK(seen[0].status == "Pulling from corral/sandbox");
    CHECK(seen[1].id == "a1b2");
    CHECK(seen[1].current == 1);
    CHECK(seen[1].total == 9);
    CHECK(seen[1].progress == "[=> ] 1B/9B");
    CHECK(seen[2].error_message.empty());
  }
  SECTION("an error line in a 200 stream") {
    f.answer(reply::chunked(
        200, {R"({"status":"Pulling from library/x"})"
              "\n",
              R"({"errorDetail":{"message":"unauthorized: authentication required"},)"
              R"("error":"unauthorized: authentication required"})"
              "\n"}));
    auto r = pull("library/x", "");
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().code == errc::engine_error);
    CHECK(r.err().message.find("unauthorized: authentication required") != std::string::npos);
    CHECK(r.err().message.find("library/x") != std::string::npos);
    CHECK(f.engine.last_request().target == "/v1.41/images/create?fromImage=library%2Fx");
    REQUIRE(seen.size() == 2);
    CHECK(seen[1].error_message == "unauthorized: authentication required");
  }
  SECTION("a not-found error line is not_found") {
    f.answer(reply::chunked(200, {R"({"error":"manifest for x:nope not found: manifest unknown"})"
                                  "\n"}));
    auto r = pull("x", "nope");
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().code == errc::not_found);
  }
  SECTION("an error status before the stream") {
    f.answer(reply::error(404, "pull access denied for nope"));
    auto r = pull("nope", "latest");
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().code == errc::not_found);
    CHECK(r.err().message == "pull access denied for nope");
    CHECK(seen.empty());
  }
}
