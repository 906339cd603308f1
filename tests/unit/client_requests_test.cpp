// Request shapes of docker::client against the fake engine, in the manner of moby's mock
// client tests: for each endpoint the method, target (path and query), headers and JSON
// body it sends, and how it reads the engine's replies.
#include <simdjson.h>
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "app/fake_engine/http_core.hpp"
#include "docker/blocking.hpp"
#include "docker/client.hpp"
#include "tests/unit/eventually.hpp"
#include "tests/unit/fake_engine.hpp"

namespace docker = corral::docker;
using corral::test::fake_engine;
using corral::test::http_head;
using corral::test::mux_frame;
using corral::test::mux_header;
using corral::test::received_request;
using corral::test::reply;
using corral::test::url_decode;
using docker::errc;
using docker::result;
using namespace std::chrono_literals;

namespace {

// The fake engine and a client of it. The client is declared last: it shuts down first.
struct engine_and_client {
  explicit engine_and_client(fake_engine::handler h = {})
      : engine(std::move(h)), client(options(engine)) {}

  static docker::client_options options(const fake_engine& e) {
    docker::client_options o;
    o.http.socket_path = e.socket_path();
    o.http.default_timeout = 5s;
    return o;
  }

  // Answers every request with `r` (copied per request).
  void answer(reply r) {
    engine.set_handler([r](const received_request&) { return r; });
  }

  fake_engine engine;
  docker::client client;
};

template <class T>
std::string why(const result<T>& r) {
  return r.ok() ? std::string("ok") : r.err().describe();
}

// Parses a request body as JSON for field checks.
struct json_body {
  explicit json_body(const std::string& text) : doc(parser.parse(text)) {}
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
};

using corral::unit_tests::eventually;

std::vector<std::string> strings(simdjson::dom::element array) {
  std::vector<std::string> out;
  for (auto item : array.get_array()) out.emplace_back(std::string_view(item));
  return out;
}

}  // namespace

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
