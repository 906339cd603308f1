#include <catch2/catch.hpp>

#include <string>
#include <string_view>
#include <vector>

#include "docker/json_lines.hpp"

namespace docker = corral::docker;

namespace {

struct lines {
  std::vector<std::string> got;
  docker::json_lines_splitter::line_handler handler() {
    return [this](std::string_view line) { got.emplace_back(line); };
  }
};

const std::string canned =
    "{\"status\":\"Pulling from library/alpine\",\"id\":\"3.19\"}\r\n"
    "\n"
    "\r\n"
    "{\"status\":\"Downloading\",\"progressDetail\":{\"current\":1,\"total\":9}}\n"
    "{\"a\":\"embedded \\n escape\"}\n"
    "x\n"
    "\n"
    "last line without newline";
const std::vector<std::string> expected = {
    "{\"status\":\"Pulling from library/alpine\",\"id\":\"3.19\"}",
    "{\"status\":\"Downloading\",\"progressDetail\":{\"current\":1,\"total\":9}}",
    "{\"a\":\"embedded \\n escape\"}",
    "x",
    "last line without newline",
};

}  // namespace

TEST_CASE("json_lines_splitter splits, strips CR and skips empty lines", "[json_lines]") {
  lines l;
  docker::json_lines_splitter s(l.handler());
  CHECK_FALSE(s.feed(canned));
  CHECK(l.got.size() == 4);  // the unterminated line waits for finish()
  CHECK_FALSE(s.finish());
  CHECK(l.got == expected);
}

TEST_CASE("json_lines_splitter accepts the stream split at every byte boundary", "[json_lines]") {
  for (size_t split = 0; split <= canned.size(); ++split) {
    INFO("split at " << split);
    lines l;
    docker::json_lines_splitter s(l.handler());
    CHECK_FALSE(s.feed(std::string_view(canned).substr(0, split)));
    CHECK_FALSE(s.feed(std::string_view(canned).substr(split)));
    CHECK_FALSE(s.finish());
    CHECK(l.got == expected);
  }
}

TEST_CASE("json_lines_splitter accepts the stream one byte at a time", "[json_lines]") {
  lines l;
  docker::json_lines_splitter s(l.handler());
  for (char ch : canned) REQUIRE_FALSE(s.feed(std::string_view(&ch, 1)));
  CHECK_FALSE(s.finish());
  CHECK(l.got == expected);
}

TEST_CASE("json_lines_splitter finish with nothing pending delivers nothing", "[json_lines]") {
  lines l;
  docker::json_lines_splitter s(l.handler());
  CHECK_FALSE(s.feed("a\n\r\n"));
  CHECK_FALSE(s.finish());
  CHECK(l.got == std::vector<std::string>{"a"});

  lines cr;
  docker::json_lines_splitter only_cr(cr.handler());
  CHECK_FALSE(only_cr.feed("\r"));
  CHECK_FALSE(only_cr.finish());
  CHECK(cr.got.empty());
}

TEST_CASE("json_lines_splitter bounds a line", "[json_lines]") {
  SECTION("a line of exactly max_line is fine, with or without CR, whole or split") {
    for (const std::string input : {"12345\n", "12345\r\n", "12345"}) {
      for (size_t split = 0; split <= input.size(); ++split) {
        lines l;
        docker::json_lines_splitter s(l.handler(), 5);
        CHECK_FALSE(s.feed(input.substr(0, split)));
        CHECK_FALSE(s.feed(input.substr(split)));
        CHECK_FALSE(s.finish());
        CHECK(l.got == std::vector<std::string>{"12345"});
      }
    }
  }
  SECTION("one byte more is too_large, whole or split") {
    for (const std::string input : {"123456\n", "123456\r\n"}) {
      for (size_t split = 0; split <= input.size(); ++split) {
        INFO(input.size() << " bytes split at " << split);
        lines l;
        docker::json_lines_splitter s(l.handler(), 5);
        auto err = s.feed(input.substr(0, split));
        if (!err) err = s.feed(input.substr(split));
        REQUIRE(err);
        CHECK(err->code == docker::errc::too_large);
        CHECK(err->message == "stream line exceeds the 5-byte limit");
        CHECK(l.got.empty());
      }
    }
  }
  SECTION("a peer that never sends a newline is stopped before the buffer grows past the limit") {
    lines l;
    docker::json_lines_splitter s(l.handler(), 5);
    CHECK_FALSE(s.feed("ok\n123"));
    const auto err = s.feed("4567");
    REQUIRE(err);
    CHECK(err->code == docker::errc::too_large);
    CHECK(l.got == std::vector<std::string>{"ok"});

    // Sticky, and nothing more is delivered.
    const auto again = s.feed("\nfine\n");
    REQUIRE(again);
    CHECK(again->code == docker::errc::too_large);
    const auto at_end = s.finish();
    REQUIRE(at_end);
    CHECK(at_end->code == docker::errc::too_large);
    CHECK(l.got == std::vector<std::string>{"ok"});
  }
  SECTION("an unterminated overlong last line fails at finish") {
    lines l;
    docker::json_lines_splitter s(l.handler(), 5);
    CHECK_FALSE(s.feed("123456"));  // could still be "12345\r"
    const auto err = s.finish();
    REQUIRE(err);
    CHECK(err->code == docker::errc::too_large);
    CHECK(l.got.empty());
  }
}

TEST_CASE("parse_pull_progress reads status and progress lines", "[json_lines]") {
  const auto p = docker::parse_pull_progress(
      R"({"status":"Downloading","progressDetail":{"current":1048576,"total":3145728},)"
      R"("progress":"[=====>    ] 1.049MB/3.146MB","id":"4abcf2066143"})");
  REQUIRE(p);
  CHECK(p->status == "Downloading");
  CHECK(p->id == "4abcf2066143");
  CHECK(p->progress == "[=====>    ] 1.049MB/3.146MB");
  CHECK(p->current == 1048576);
  CHECK(p->total == 3145728);
  CHECK(p->error_message.empty());

  const auto header =
      docker::parse_pull_progress(R"({"status":"Pulling from library/alpine","id":"3.19"})");
  REQUIRE(header);
  CHECK(header->status == "Pulling from library/alpine");
  CHECK(header->id == "3.19");
  CHECK(header->current == 0);
  CHECK(header->total == 0);

  const auto done = docker::parse_pull_progress(
      R"({"status":"Pull complete","progressDetail":{},"id":"4abcf2066143"})");
  REQUIRE(done);
  CHECK(done->status == "Pull complete");
  CHECK(done->current == 0);

  const auto digest =
      docker::parse_pull_progress(R"({"status":"Digest: sha256:0123abcd","extra":[1,{"x":null}]})");
  REQUIRE(digest);
  CHECK(digest->status == "Digest: sha256:0123abcd");
  CHECK(digest->id.empty());
}

TEST_CASE("parse_pull_progress reads error lines", "[json_lines]") {
  const auto e = docker::parse_pull_progress(
      R"({"errorDetail":{"message":"manifest for x:nope not found"},"error":"manifest for x:nope not found [legacy]"})");
  REQUIRE(e);
  CHECK(e->error_message == "manifest for x:nope not found");

  const auto legacy = docker::parse_pull_progress(R"({"error":"only the old field"})");
  REQUIRE(legacy);
  CHECK(legacy->error_message == "only the old field");

  const auto detail_first =
      docker::parse_pull_progress(R"({"error":"old","errorDetail":{"code":1,"message":"new"}})");
  REQUIRE(detail_first);
  CHECK(detail_first->error_message == "new");
}

TEST_CASE("parse_pull_progress rejects non-JSON and non-objects", "[json_lines]") {
  CHECK_FALSE(docker::parse_pull_progress(""));
  CHECK_FALSE(docker::parse_pull_progress("Downloading 50%"));
  CHECK_FALSE(docker::parse_pull_progress(R"(["status"])"));
  CHECK_FALSE(docker::parse_pull_progress(R"("status")"));
  CHECK_FALSE(docker::parse_pull_progress(R"({"status":"Downloading","progressDetail":{"cur)"));
  CHECK_FALSE(
      docker::parse_pull_progress(R"({"status":"Downloading","progressDetail":{"current":1})"));
  CHECK_FALSE(docker::parse_pull_progress(R"({"status":"x"}{"status":"y"})"));
}

TEST_CASE("parse_event reads a container event", "[json_lines]") {
  const auto e = docker::parse_event(
      R"({"status":"die","id":"0123abcd","from":"alpine","Type":"container","Action":"die",)"
      R"("Actor":{"ID":"0123abcd","Attributes":{"exitCode":"137","image":"alpine",)"
      R"("name":"web-1","com.example.label":"v=1"}},"scope":"local",)"
      R"("time":1700000000,"timeNano":1700000000123456789})");
  REQUIRE(e);
  CHECK(e->type == "container");
  CHECK(e->action == "die");
  CHECK(e->id == "0123abcd");
  CHECK(e->attributes == std::map<std::string, std::string>{{"exitCode", "137"},
                                                            {"image", "alpine"},
                                                            {"name", "web-1"},
                                                            {"com.example.label", "v=1"}});
  CHECK(e->time_nano == 1700000000123456789);
}

TEST_CASE("parse_event keeps exec actions whole and tolerates missing parts", "[json_lines]") {
  const auto exec = docker::parse_event(
      R"({"Type":"container","Action":"exec_start: sh -c \"echo hi; exit 3\"",)"
      R"("Actor":{"ID":"c1","Attributes":{"execID":"e1","name":"web"}},"time":1700000001})");
  REQUIRE(exec);
  CHECK(exec->action == "exec_start: sh -c \"echo hi; exit 3\"");
  CHECK(exec->attributes.at("execID") == "e1");
  CHECK(exec->time_nano == 1700000001000000000);

  const auto bare = docker::parse_event(R"({"Type":"network","Action":"connect"})");
  REQUIRE(bare);
  CHECK(bare->type == "network");
  CHECK(bare->id.empty());
  CHECK(bare->attributes.empty());
  CHECK(bare->time_nano == 0);

  const auto overflow = docker::parse_event(R"({"Action":"x","time":9223372036854775807})");
  REQUIRE(overflow);
  CHECK(overflow->time_nano == 0);

  CHECK_FALSE(docker::parse_event(""));
  CHECK_FALSE(docker::parse_event("not json"));
  CHECK_FALSE(docker::parse_event("[]"));
  CHECK_FALSE(docker::parse_event(R"({"Type":"container","Action":"die","Actor":{"ID":"c1")"));
}

TEST_CASE("json_lines_splitter feeding parse_event end to end", "[json_lines]") {
  const std::string stream =
      "{\"Type\":\"container\",\"Action\":\"start\",\"Actor\":{\"ID\":\"a\"},\"timeNano\":1}\n"
      "{\"Type\":\"container\",\"Action\":\"die\",\"Actor\":{\"ID\":\"a\",\"Attributes\":"
      "{\"exitCode\":\"0\"}},\"timeNano\":2}\n";
  for (size_t split = 0; split <= stream.size(); ++split) {
    std::vector<docker::event_message> events;
    docker::json_lines_splitter s([&](std::string_view line) {
      auto e = docker::parse_event(line);
      REQUIRE(e);
      events.push_back(std::move(*e));
    });
    CHECK_FALSE(s.feed(std::string_view(stream).substr(0, split)));
    CHECK_FALSE(s.feed(std::string_view(stream).substr(split)));
    CHECK_FALSE(s.finish());
    REQUIRE(events.size() == 2);
    CHECK(events[0].action == "start");
    CHECK(events[1].action == "die");
    CHECK(events[1].attributes.at("exitCode") == "0");
    CHECK(events[1].time_nano == 2);
  }
}
