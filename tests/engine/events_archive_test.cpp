// The events stream and the archive endpoints against the real engine.
#include <ctime>

#include "engine_fixture.hpp"

using namespace corral_test;

TEST_CASE_METHOD(engine_fixture,
                 "events: a label-filtered stream shows our container's start and die",
                 "[engine][events]") {
  struct shared_state {
    std::mutex mutex;
    std::condition_variable cv;
    std::vector<event_message> events;
    std::optional<result<void>> done;

    bool seen(const std::string& action) const {
      for (const auto& e : events) {
        if (e.action == action) return true;
      }
      return false;
    }
  };
  auto state = std::make_shared<shared_state>();

  events_options options;
  options.filters["type"] = {"container"};
  options.filters["label"] = {"corral.test=" + test_name(), "corral.test-run=" + run_id()};
  // From a moment ago: the engine replays what it buffered since then and then streams, so
  // events between our request and its subscription are not lost.
  options.since = std::to_string(std::time(nullptr) - 1);
  const auto stream = docker().events(
      options,
      [state](const event_message& e) {
        std::lock_guard<std::mutex> guard(state->mutex);
        state->events.push_back(e);
        state->cv.notify_all();
      },
      [state](result<void> r) {
        std::lock_guard<std::mutex> guard(state->mutex);
        state->done.emplace(std::move(r));
        state->cv.notify_all();
      });

  auto request = sandbox("events", {"sh", "-c", "exit 5"});
  const auto id = run(request);
  CHECK(wait(id).status_code == 5);

  {
    std::unique_lock<std::mutex> lock(state->mutex);
    const bool both = state->cv.wait_for(lock, 20s, [&] {
      return (state->seen("start") && state->seen("die")) || state->done.has_value();
    });
    INFO("events seen: " << state->events.size());
    REQUIRE(both);
    REQUIRE_FALSE(state->done.has_value());  // the stream is still open
  }

  std::vector<event_message> events;
  {
    std::lock_guard<std::mutex> guard(state->mutex);
    events = state->events;
  }
  bool saw_create = false;
  for (const auto& e : events) {
    INFO("event " << e.type << " " << e.action << " " << e.id);
    CHECK(e.type == "container");
    CHECK(e.id == id);  // the filter let through only ours
    CHECK(e.attributes.at("corral.test") == test_name());
    CHECK(e.attributes.at("name") == request.name);
    CHECK(e.attributes.at("image") == sandbox_image);
    CHECK(e.time_nano > 0);
    if (e.action == "create") saw_create = true;
    if (e.action == "die") CHECK(e.attributes.at("exitCode") == "5");
  }
  CHECK(saw_create);
  // In the order they happened.
  auto index_of = [&](const std::string& action) {
    for (std::size_t i = 0; i < events.size(); ++i) {
      if (events[i].action == action) return i;
    }
    return events.size();
  };
  CHECK(index_of("create") < index_of("start"));
  CHECK(index_of("start") < index_of("die"));

  docker().cancel(stream);
  std::unique_lock<std::mutex> lock(state->mutex);
  REQUIRE(state->cv.wait_for(lock, 10s, [&] { return state->done.has_value(); }));
  REQUIRE_FALSE(state->done->ok());
  CHECK(state->done->err().code == errc::cancelled);
}

TEST_CASE_METHOD(engine_fixture, "archive: a tar put into a writable mount comes back out",
                 "[engine][archive]") {
  temp_dir scratch;
  auto request = sandbox("archive");
  request.host.binds = {scratch.path() + ":/scratch:rw"};
  const auto id = run(request);

  std::string payload;
  for (int i = 0; i < 3000; ++i) payload.push_back(static_cast<char>((i * 31) & 0xff));
  payload.append("\0end", 4);
  const std::string notes = "second file\n";
  const auto tar = make_tar({{"hello.bin", payload}, {"notes.txt", notes, 0600}});
  REQUIRE(tar.size() % 512 == 0);

  auto put = blocking<void>([&](auto done) { docker().put_archive(id, "/scratch", tar, done); });
  REQUIRE_OK(put);

  // The files are there, for the host and for the sandbox user, with the tar's owner and mode.
  CHECK(scratch.read("hello.bin") == payload);
  const auto listed = exec(id, {"sh", "-c",
                                "stat -c '%n %u:%g %a %s' /scratch/hello.bin /scratch/notes.txt; "
                                "cat /scratch/notes.txt"});
  CHECK(listed.exit_code == 0);
  CHECK(listed.out() == "/scratch/hello.bin 1000:1000 644 " + std::to_string(payload.size()) +
                            "\n/scratch/notes.txt 1000:1000 600 12\nsecond file\n");

  // One file: the tar holds it under its base name.
  auto file = blocking<std::string>(
      [&](auto done) { docker().get_archive(id, "/scratch/hello.bin", 1 << 20, done); });
  REQUIRE_OK(file);
  auto files = read_tar(*file);
  REQUIRE(files.count("hello.bin") == 1);
  CHECK(files["hello.bin"] == payload);

  // A folder: under the folder's name.
  auto folder = blocking<std::string>(
      [&](auto done) { docker().get_archive(id, "/scratch", 1 << 20, done); });
  REQUIRE_OK(folder);
  files = read_tar(*folder);
  CHECK(files["scratch/hello.bin"] == payload);
  CHECK(files["scratch/notes.txt"] == notes);

  // The download cap is enforced, as a clean error.
  auto capped = blocking<std::string>(
      [&](auto done) { docker().get_archive(id, "/scratch/hello.bin", 1024, done); });
  REQUIRE_FALSE(capped.ok());
  CHECK(capped.err().code == errc::too_large);

  // A path that does not exist: not_found, both ways.
  auto missing_get = blocking<std::string>(
      [&](auto done) { docker().get_archive(id, "/scratch/nope", 1 << 20, done); });
  REQUIRE_FALSE(missing_get.ok());
  CHECK(missing_get.err().code == errc::not_found);
  auto missing_put =
      blocking<void>([&](auto done) { docker().put_archive(id, "/scratch/nope", tar, done); });
  REQUIRE_FALSE(missing_put.ok());
  CHECK(missing_put.err().code == errc::not_found);
}

TEST_CASE_METHOD(engine_fixture, "archive: putting into a read-only rootfs is a clean error",
                 "[engine][archive]") {
  const auto id = run(sandbox("archive-ro"));
  const auto tar = make_tar({{"x.txt", "x"}});

  // Not a mount: the read-only rootfs itself.
  auto put = blocking<void>([&](auto done) { docker().put_archive(id, "/workspace", tar, done); });
  REQUIRE_FALSE(put.ok());
  INFO(put.err().describe());
  CHECK(put.err().code == errc::engine_error);
  CHECK(put.err().http_status == 500);
  CHECK(put.err().message == "container rootfs is marked read-only");

  // A tmpfs is no way around it: the engine refuses any target but a volume or bind mount
  // when the rootfs is read-only.
  auto tmpfs = blocking<void>([&](auto done) { docker().put_archive(id, "/tmp", tar, done); });
  REQUIRE_FALSE(tmpfs.ok());
  CHECK(tmpfs.err().message.find("read-only") != std::string::npos);

  // Nothing was written anywhere, and the container still works.
  const auto ls = exec(id, {"sh", "-c", "ls /workspace /tmp"});
  CHECK(ls.exit_code == 0);
  CHECK(ls.out().find("x.txt") == std::string::npos);

  // Reading from a read-only rootfs is fine.
  auto passwd = blocking<std::string>(
      [&](auto done) { docker().get_archive(id, "/etc/passwd", 1 << 20, done); });
  REQUIRE_OK(passwd);
  const auto files = read_tar(*passwd);
  REQUIRE(files.count("passwd") == 1);
  CHECK(files.at("passwd").find("sandbox:x:1000:1000") != std::string::npos);
}
