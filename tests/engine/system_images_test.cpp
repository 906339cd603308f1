// System and images areas against the real engine.
#include <algorithm>

#include "engine_fixture.hpp"

using namespace corral_test;

TEST_CASE_METHOD(engine_fixture, "system: negotiation, ping, version and info give sane values",
                 "[engine][system]") {
  CHECK(docker().api_version() == "1.41");
  CHECK(docker().versioned("/info") == "/v1.41/info");
  CHECK(engine_version().api_version == "1.41");

  auto ping = blocking<ping_response>([&](auto done) { docker().ping(done); });
  REQUIRE_OK(ping);
  CHECK(ping->api_version == "1.41");
  CHECK(ping->os_type == "linux");

  auto version = blocking<version_response>([&](auto done) { docker().version(done); });
  REQUIRE_OK(version);
  CHECK(version->api_version == "1.41");
  CHECK_FALSE(version->min_api_version.empty());
  CHECK(version->version.rfind("20.10.", 0) == 0);
  CHECK(version->os == "linux");
  CHECK_FALSE(version->arch.empty());
  CHECK_FALSE(version->kernel_version.empty());

  auto info = blocking<system_info>([&](auto done) { docker().info(done); });
  REQUIRE_OK(info);
  CHECK_FALSE(info->id.empty());
  CHECK_FALSE(info->name.empty());
  CHECK(info->server_version == version->version);
  CHECK_FALSE(info->operating_system.empty());
  CHECK((info->cgroup_version == "1" || info->cgroup_version == "2"));
  CHECK_FALSE(info->cgroup_driver.empty());
  CHECK(info->ncpu >= 1);
  CHECK(info->mem_total > 64 * mib);
  CHECK(info->images >= 1);
  CHECK(info->containers >= info->containers_running);
}

TEST_CASE_METHOD(engine_fixture, "system: a client with no engine behind its socket fails cleanly",
                 "[engine][system]") {
  client_options options;
  options.http.socket_path = "/tmp/corral-test-no-engine-" + run_id() + ".sock";
  options.http.default_timeout = 5s;
  client nowhere(options);
  auto version = blocking<version_response>([&](auto done) { nowhere.negotiate(done); });
  REQUIRE_FALSE(version.ok());
  CHECK(version.err().code == errc::engine_unavailable);
  CHECK(version.err().message.find(options.http.socket_path) != std::string::npos);
  CHECK(nowhere.api_version() == "1.41");  // unchanged: the floor

  // A DOCKER_HOST we cannot use is refused, not guessed around.
  auto tcp = resolve_engine_socket("tcp://127.0.0.1:2375", nullptr);
  REQUIRE_FALSE(tcp.ok());
  CHECK(tcp.err().code == errc::invalid_request);
  auto unix_host = resolve_engine_socket("unix:///var/run/docker.sock", nullptr);
  REQUIRE_OK(unix_host);
  CHECK(*unix_host == "/var/run/docker.sock");
}

TEST_CASE_METHOD(engine_fixture, "images: inspect and list the sandbox image", "[engine][images]") {
  auto image = blocking<image_inspect_response>(
      [&](auto done) { docker().image_inspect(sandbox_image, done); });
  REQUIRE_OK(image);
  CHECK(image->id.rfind("sha256:", 0) == 0);
  CHECK(std::count(image->repo_tags.begin(), image->repo_tags.end(), sandbox_image) == 1);
  CHECK(image->size > 0);
  CHECK_FALSE(image->created.empty());
  CHECK(std::count(image->env.begin(), image->env.end(), "PATH=/bin:/usr/bin") == 1);

  // By id too.
  auto by_id =
      blocking<image_inspect_response>([&](auto done) { docker().image_inspect(image->id, done); });
  REQUIRE_OK(by_id);
  CHECK(by_id->id == image->id);

  image_list_options options;
  options.filters["reference"] = {sandbox_image};
  auto listed =
      blocking<std::vector<image_summary>>([&](auto done) { docker().image_list(options, done); });
  REQUIRE_OK(listed);
  REQUIRE(listed->size() == 1);
  CHECK(listed->front().id == image->id);
  CHECK(std::count(listed->front().repo_tags.begin(), listed->front().repo_tags.end(),
                   sandbox_image) == 1);
  CHECK(listed->front().size == image->size);
  CHECK(listed->front().created > 0);

  // A wildcard reference matches it; an unknown one matches nothing.
  options.filters["reference"] = {"corral/*"};
  auto wildcard =
      blocking<std::vector<image_summary>>([&](auto done) { docker().image_list(options, done); });
  REQUIRE_OK(wildcard);
  CHECK(std::any_of(wildcard->begin(), wildcard->end(),
                    [&](const image_summary& s) { return s.id == image->id; }));
  options.filters["reference"] = {"corral-test/no-such-image-" + run_id()};
  auto none =
      blocking<std::vector<image_summary>>([&](auto done) { docker().image_list(options, done); });
  REQUIRE_OK(none);
  CHECK(none->empty());
}

TEST_CASE_METHOD(engine_fixture, "images: a missing image is not_found", "[engine][images]") {
  const std::string missing = "corral-test/no-such-image-" + run_id() + ":nope";
  auto image =
      blocking<image_inspect_response>([&](auto done) { docker().image_inspect(missing, done); });
  REQUIRE_FALSE(image.ok());
  CHECK(image.err().code == errc::not_found);
  CHECK(image.err().http_status == 404);
  // Engine 20.10 words it "no such image: X: No such image: X".
  CHECK(image.err().message.find("No such image: " + missing) != std::string::npos);

  // Creating a container from it: not_found too, and nothing is left behind.
  auto request = sandbox("no-image");
  request.image = missing;
  auto created = blocking<container_create_response>(
      [&](auto done) { docker().container_create(request, done); });
  REQUIRE_FALSE(created.ok());
  CHECK(created.err().code == errc::not_found);
  CHECK(created.err().message.find("No such image") != std::string::npos);
}

TEST_CASE_METHOD(engine_fixture, "images: pulling an image that cannot be had fails, and soon",
                 "[engine][images]") {
  // No registry is reachable from here; with one, this name does not exist. Either way: an
  // error, within a bounded time, never a hang.
  const std::string name = "corral-test/no-such-image-" + run_id();
  pending<void> pull;
  auto progress = std::make_shared<std::vector<pull_progress>>();  // I/O thread only
  const auto began = std::chrono::steady_clock::now();
  const auto id = docker().image_pull(
      name, "nope", [progress](const pull_progress& p) { progress->push_back(p); }, pull.done());
  if (!pull.ready_within(60s)) {
    docker().cancel(id);
    FAIL("image_pull still running after 60 s");
  }
  const auto took = std::chrono::steady_clock::now() - began;
  auto pulled = pull.get(0ms, "image_pull");
  REQUIRE_FALSE(pulled.ok());
  INFO(pulled.err().describe());
  CHECK((pulled.err().code == errc::engine_error || pulled.err().code == errc::not_found));
  CHECK_FALSE(pulled.err().message.empty());
  CHECK(took < 60s);

  // It was not made up locally either.
  auto image = blocking<image_inspect_response>(
      [&](auto done) { docker().image_inspect(name + ":nope", done); });
  REQUIRE_FALSE(image.ok());
  CHECK(image.err().code == errc::not_found);
}
