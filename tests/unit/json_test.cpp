#include <catch2/catch.hpp>

#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <string_view>

#include <simdjson.h>

#include "docker/error.hpp"
#include "docker/json.hpp"
#include "docker/json_read.hpp"

namespace docker = corral::docker;
using namespace std::string_literals;

namespace {

std::string encode(std::string_view raw) {
  std::string out;
  docker::append_json_string(out, raw);
  return out;
}

// Decodes with simdjson's DOM parser, which validates the whole document including its UTF-8,
// so a success here means the engine's JSON parser would accept the bytes too.
std::optional<std::string> decode_string(const std::string& json) {
  simdjson::dom::parser parser;
  std::string_view v;
  if (parser.parse(json).get_string().get(v) != simdjson::SUCCESS) return std::nullopt;
  return std::string(v);
}

bool valid_json(const std::string& json) {
  simdjson::dom::parser parser;
  simdjson::dom::element e;
  return parser.parse(json).get(e) == simdjson::SUCCESS;
}

const std::string fffd = "\xEF\xBF\xBD";

}  // namespace

TEST_CASE("append_json_string escapes quotes, backslashes and newlines", "[json]") {
  CHECK(encode("") == R"("")");
  CHECK(encode("plain") == R"("plain")");
  CHECK(encode(R"(say "hi")") == R"("say \"hi\"")");
  CHECK(encode(R"(C:\path\)") == R"("C:\\path\\")");
  CHECK(encode("a\nb\r\nc\td") == R"("a\nb\r\nc\td")");
  CHECK(encode("\b\f") == R"("\b\f")");
  CHECK(encode("/") == R"("/")");
  for (std::string_view s : {R"(say "hi")", R"(C:\path\)", "a\nb\r\nc\td", "\\\"\\\"\n"}) {
    CHECK(decode_string(encode(s)) == std::string(s));
  }
}

TEST_CASE("append_json_string escapes every control character and DEL", "[json]") {
  for (int c = 0; c < 0x20; ++c) {
    const std::string raw = "x"s + static_cast<char>(c) + "y";
    const std::string json = encode(raw);
    INFO("control char " << c << " encoded as " << json);
    for (char ch : json) CHECK(static_cast<unsigned char>(ch) >= 0x20);
    CHECK(decode_string(json) == raw);
  }
  CHECK(encode(std::string("\0", 1)) == R"("\u0000")");
  CHECK(encode("\x01\x1f") == R"("\u0001\u001f")");
  CHECK(encode("\x0b") == R"("\u000b")");
  CHECK(encode("\x7f") == R"("\u007f")");
  CHECK(decode_string(encode("a\x7f")) == "a\x7f");

  std::string all;
  for (int c = 0; c < 0x80; ++c) all.push_back(static_cast<char>(c));
  CHECK(decode_string(encode(all)) == all);
}

TEST_CASE("append_json_string leaves shell metacharacters alone", "[json]") {
  const std::string raw =
      R"($(rm -rf /); echo `id` | cat > /tmp/x < /dev/null && a || b & 'q' * ? ~ ! # % ^ { } [ ])";
  const std::string json = encode(raw);
  CHECK(json == "\"" + raw + "\"");
  CHECK(decode_string(json) == raw);
}

TEST_CASE("append_json_string passes valid multi-byte UTF-8 through", "[json]") {
  for (std::string raw :
       {"caf\xC3\xA9"s, "\xF0\x9F\x98\x80"s, "\xE2\x82\xAC 5"s, "\xF4\x8F\xBF\xBF"s,
        "\xEF\xBF\xBD"s, "\xED\x9F\xBF"s, "\xEE\x80\x80"s, "\xF0\x90\x80\x80"s}) {
    INFO(raw);
    CHECK(encode(raw) == "\"" + raw + "\"");
    CHECK(decode_string(encode(raw)) == raw);
  }
}

TEST_CASE("append_json_string replaces invalid UTF-8 with U+FFFD", "[json]") {
  struct example {
    std::string raw;
    std::string decoded;
  };
  // One U+FFFD per maximal ill-formed subpart, as Python's decode(errors="replace") gives.
  const example examples[] = {
      {"\xFF", fffd},
      {"a\xFF"
       "b",
       "a" + fffd + "b"},
      {"\xE2\x82", fffd},  // truncated euro sign
      {"\xE2\x82"
       "x",
       fffd + "x"},                                     // cut short by ASCII
      {"\xF0\x9F\x98", fffd},                           // truncated emoji at the end
      {"\xC0\xAF", fffd + fffd},                        // overlong '/'
      {"\xE0\x80\xAF", fffd + fffd + fffd},             // overlong '/' in three bytes
      {"\xED\xA0\x80", fffd + fffd + fffd},             // CESU-8 high surrogate
      {"\xED\xBF\xBF", fffd + fffd + fffd},             // low surrogate
      {"\xF4\x90\x80\x80", fffd + fffd + fffd + fffd},  // U+110000
      {"\xF5\x80", fffd + fffd},
      {"\x80", fffd},  // lone continuation byte
      {"\x80\xBF", fffd + fffd},
      {"\xC2", fffd},
      {"\xC2\xC3\xA9", fffd + "\xC3\xA9"},  // valid sequence right after a broken one
      {"\xE2\x82\xE2\x82\xAC", fffd + "\xE2\x82\xAC"},
  };
  for (const auto& e : examples) {
    const std::string json = encode(e.raw);
    INFO("input bytes " << e.raw.size() << ", encoded " << json);
    CHECK(json == "\"" + e.decoded + "\"");
    CHECK(decode_string(json) == e.decoded);
  }
}

TEST_CASE("append_json_string output is valid JSON for arbitrary bytes", "[json]") {
  std::mt19937 rng(20240601);
  // Bias towards high bytes so that broken and valid multi-byte sequences both occur often.
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<int> length(0, 12);
  int valid_inputs = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string raw;
    const int n = length(rng);
    for (int k = 0; k < n; ++k) {
      const int b = byte(rng);
      raw.push_back(static_cast<char>(b < 128 ? b / 4 + 0x60 : b));
    }
    const std::string json = encode(raw);
    const auto decoded = decode_string(json);
    REQUIRE(decoded.has_value());
    if (simdjson::validate_utf8(raw.data(), raw.size())) {
      ++valid_inputs;
      CHECK(*decoded == raw);
    }
  }
  CHECK(valid_inputs > 100);
}

TEST_CASE("json_writer builds nested objects and arrays with commas", "[json]") {
  docker::json_writer w;
  w.begin_object()
      .field("Image", "alpine:3.19")
      .field_array("Cmd")
      .value("sh")
      .value("-c")
      .value("echo \"$HOME\"\n")
      .end_array()
      .field("Tty", false)
      .field("Count", 3)
      .field("Big", std::numeric_limits<int64_t>::min())
      .field("Huge", std::numeric_limits<uint64_t>::max())
      .field("Unsigned", 7u)
      .field_object("Labels")
      .field("a", std::string("1"))
      .field("b", std::string_view("2"))
      .end_object()
      .field_object("Empty")
      .end_object()
      .field_array("None")
      .end_array()
      .field_array("Nested")
      .begin_array()
      .value(1)
      .end_array()
      .begin_object()
      .key("k")
      .null_value()
      .end_object()
      .value(true)
      .value(static_cast<const char*>(nullptr))
      .end_array()
      .end_object();

  CHECK(w.str() ==
        R"({"Image":"alpine:3.19","Cmd":["sh","-c","echo \"$HOME\"\n"],"Tty":false,"Count":3,)"
        R"("Big":-9223372036854775808,"Huge":18446744073709551615,"Unsigned":7,)"
        R"("Labels":{"a":"1","b":"2"},"Empty":{},"None":[],"Nested":[[1],{"k":null},true,null]})");

  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  REQUIRE(parser.parse(w.str()).get(doc) == simdjson::SUCCESS);
  CHECK(std::string_view(doc["Cmd"].at(2)) == "echo \"$HOME\"\n");
  CHECK(int64_t(doc["Big"]) == std::numeric_limits<int64_t>::min());
  CHECK(uint64_t(doc["Huge"]) == std::numeric_limits<uint64_t>::max());
  CHECK(std::string_view(doc["Labels"]["b"]) == "2");
  CHECK(doc["Nested"].at(1)["k"].is_null());
}

TEST_CASE("json_writer escapes keys and take() resets it", "[json]") {
  docker::json_writer w;
  w.begin_object().field("we\"ird\n\xFF", 1).end_object();
  const std::string first = w.take();
  CHECK(first == "{\"we\\\"ird\\n" + fffd + "\":1}");
  CHECK(valid_json(first));
  CHECK(w.str().empty());

  w.begin_array().value(1).value(2).end_array();
  CHECK(w.take() == "[1,2]");
  w.value("top");
  CHECK(w.str() == R"("top")");
}

TEST_CASE("json_field_string reads a top-level string field", "[json]") {
  CHECK(docker::json_field_string(R"({"message":"No such container: x"})", "message") ==
        "No such container: x");
  CHECK(docker::json_field_string("{\"message\":\"line\\nnext \\u00e9\"}\n", "message") ==
        "line\nnext \xC3\xA9");
  CHECK(docker::json_field_string(R"({"a":{"message":"inner"},"message":"outer"})", "message") ==
        "outer");
  CHECK(docker::json_field_string(R"({"message":""})", "message") == "");
  CHECK(docker::json_field_string(R"(  {"other":1, "message":"late"}  )", "message") == "late");
}

TEST_CASE("json_field_string gives nullopt for anything else", "[json]") {
  CHECK_FALSE(docker::json_field_string("", "message"));
  CHECK_FALSE(docker::json_field_string("   \n", "message"));
  CHECK_FALSE(docker::json_field_string("page not found", "message"));
  CHECK_FALSE(docker::json_field_string("<html><body>502 Bad Gateway</body></html>", "message"));
  CHECK_FALSE(docker::json_field_string(R"(["message","x"])", "message"));
  CHECK_FALSE(docker::json_field_string(R"("message")", "message"));
  CHECK_FALSE(docker::json_field_string("null", "message"));
  CHECK_FALSE(docker::json_field_string(R"({"msg":"x"})", "message"));
  CHECK_FALSE(docker::json_field_string(R"({})", "message"));
  CHECK_FALSE(docker::json_field_string(R"({"message":42})", "message"));
  CHECK_FALSE(docker::json_field_string(R"({"message":null})", "message"));
  CHECK_FALSE(docker::json_field_string(R"({"a":{"message":"inner"}})", "message"));
  CHECK_FALSE(docker::json_field_string(R"({"message":"x")", "message"));
  CHECK_FALSE(docker::json_field_string(R"({"message":"x"} trailing)", "message"));
  CHECK_FALSE(docker::json_field_string("{\"message\":\"bad \xFF\"}", "message"));
}

TEST_CASE("json_read helpers read fields in any order and fall back", "[json]") {
  const auto padded =
      docker::pad(R"({"Name":"web","Count":42,"Neg":-7,"Float":1.5,"Huge":18446744073709551615,)"
                  R"("On":true,"Off":false,"Null":null,"Esc":"a\"b\u00e9",)"
                  R"("State":{"Running":true,"Pid":123},)"
                  R"("Labels":{"a":"1","n":2,"b":"two","o":{"x":"y"},"c":""},)"
                  R"("Cmd":["sh",1,"-c",null,"ls"],"Last":"end"})");
  simdjson::ondemand::parser parser;
  simdjson::ondemand::document doc;
  REQUIRE(parser.iterate(padded).get(doc) == simdjson::SUCCESS);
  simdjson::ondemand::object obj;
  REQUIRE(doc.get_object().get(obj) == simdjson::SUCCESS);

  // Deliberately out of document order.
  CHECK(docker::get_string(obj, "Last") == "end");
  CHECK(docker::get_string(obj, "Name") == "web");
  CHECK(docker::get_int(obj, "Count") == 42);
  CHECK(docker::get_int(obj, "Neg") == -7);
  CHECK(docker::get_int(obj, "Float", -1) == -1);
  CHECK(docker::get_int(obj, "Huge", -2) == -2);
  CHECK(docker::get_int(obj, "Name", -3) == -3);
  CHECK(docker::get_int(obj, "Missing", 9) == 9);
  CHECK(docker::get_bool(obj, "On"));
  CHECK_FALSE(docker::get_bool(obj, "Off", true));
  CHECK(docker::get_bool(obj, "Null", true));
  CHECK(docker::get_bool(obj, "Count", true));
  CHECK(docker::get_string(obj, "Esc") == "a\"b\xC3\xA9");
  CHECK(docker::get_string(obj, "Count", "fb") == "fb");
  CHECK(docker::get_string(obj, "Null", "fb") == "fb");
  CHECK(docker::get_string(obj, "Missing") == "");

  simdjson::ondemand::object state;
  REQUIRE(docker::get_object(obj, "State", state));
  CHECK(docker::get_int(state, "Pid") == 123);
  CHECK(docker::get_bool(state, "Running"));
  simdjson::ondemand::object none;
  CHECK_FALSE(docker::get_object(obj, "Null", none));
  CHECK_FALSE(docker::get_object(obj, "Name", none));
  CHECK_FALSE(docker::get_object(obj, "Missing", none));

  const auto labels = docker::get_string_map(obj, "Labels");
  CHECK(labels == std::map<std::string, std::string>{{"a", "1"}, {"b", "two"}, {"c", ""}});
  CHECK(docker::get_string_map(obj, "Null").empty());
  CHECK(docker::get_string_map(obj, "Cmd").empty());

  CHECK(docker::get_string_list(obj, "Cmd") == std::vector<std::string>{"sh", "-c", "ls"});
  CHECK(docker::get_string_list(obj, "Labels").empty());
  CHECK(docker::get_string_list(obj, "Missing").empty());

  // Still usable after all of that.
  CHECK(docker::get_string(obj, "Name") == "web");
}

TEST_CASE("json_read pad copies well-formed JSON and empties malformed JSON", "[json]") {
  const std::string text = R"({"a":"b"})";
  const auto padded = docker::pad(text);
  CHECK(std::string_view(padded) == text);
  CHECK(std::string_view(docker::pad(R"("scalar")")) == R"("scalar")");

  // Each of these once reached on-demand reads; the first crashed simdjson 3.0.1 and the
  // second was read as its first document.
  for (std::string_view bad :
       {R"({"a":"x","b":{"c":1})", R"({"a":"x"}{"a":"y"})", R"({"a":[1 2],"b":"x"})",
        R"({"a":"x",})", "{\"a\":\"\xFF\"}", "", "   ", "nope"}) {
    INFO(bad);
    const auto p = docker::pad(bad);
    CHECK(p.size() == 0);
    simdjson::ondemand::parser parser;
    simdjson::ondemand::document doc;
    CHECK(parser.iterate(p).get(doc) == simdjson::EMPTY);
  }
}

TEST_CASE("json_read helpers survive documents that end early after an inner object", "[json]") {
  // The same documents through the public readers: nullopt, not a crash or a partial read.
  CHECK_FALSE(docker::json_field_string(R"({"message":"x","detail":{"c":1})", "message"));
  CHECK_FALSE(docker::json_field_string(R"({"detail":{"c":1},"message":"x")", "message"));
  CHECK_FALSE(docker::json_field_string(R"({"message":"x"}{"message":"y"})", "message"));
  CHECK_FALSE(docker::json_field_string(R"({"a":[1 2],"message":"x"})", "message"));
}

TEST_CASE("error_from_response classifies status and reads the engine message", "[json][error]") {
  struct example {
    int status;
    docker::errc code;
  };
  for (auto [status, code] :
       {example{400, docker::errc::invalid_request}, example{404, docker::errc::not_found},
        example{409, docker::errc::conflict}, example{500, docker::errc::engine_error},
        example{503, docker::errc::engine_error}, example{418, docker::errc::engine_error}}) {
    INFO("status " << status);
    const auto json =
        docker::error_from_response(status, "{\"message\":\"engine says \\\"no\\\"\"}\n");
    CHECK(json.code == code);
    CHECK(json.http_status == status);
    CHECK(json.message == "engine says \"no\"");

    const auto text = docker::error_from_response(status, "plain failure\r\n");
    CHECK(text.code == code);
    CHECK(text.message == "plain failure");

    const auto empty = docker::error_from_response(status, "");
    CHECK(empty.code == code);
    CHECK(empty.message == "HTTP status " + std::to_string(status));
  }
}

TEST_CASE("error_from_response keeps non-message JSON as text", "[json][error]") {
  const auto e = docker::error_from_response(404, R"({"error":"gone"})");
  CHECK(e.code == docker::errc::not_found);
  CHECK(e.message == R"({"error":"gone"})");
  CHECK(e.describe() == R"(not_found (404): {"error":"gone"})");

  const auto html = docker::error_from_response(502, "<html>Bad Gateway</html>\n");
  CHECK(html.code == docker::errc::engine_error);
  CHECK(html.message == "<html>Bad Gateway</html>");

  const auto blank = docker::error_from_response(409, R"({"message":""})");
  CHECK(blank.code == docker::errc::conflict);
  CHECK(blank.message == "HTTP status 409");
  CHECK(blank.describe() == "conflict (409): HTTP status 409");
}
