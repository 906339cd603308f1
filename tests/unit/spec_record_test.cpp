// The per-field spec record (actors/spec_record.hpp): what an acquire of an existing key with
// another spec is told, and that an environment value never shows in it.
#include <catch2/catch.hpp>

#include "actors/policy.hpp"
#include "actors/runtime_config.hpp"
#include "actors/spec_record.hpp"

namespace msg = corral::messages;
using namespace corral::actors;
using namespace std::chrono_literals;

namespace {

msg::sandbox_spec base_spec() {
  msg::sandbox_spec s;
  s.image = "corral/sandbox:busybox";
  s.env = {{"TOKEN", "hunter2"}, {"MODE", "fast"}};
  s.memory_bytes = 256 << 20;
  s.user = "1000:1000";
  return s;
}

}  // namespace

TEST_CASE("spec record: the same spec under the same secret differs in nothing", "[spec-record]") {
  const auto a = make_spec_record(base_spec(), "secret-1");
  const auto b = make_spec_record(base_spec(), "secret-1");
  CHECK(differing_fields(a, b).empty());
  CHECK(decode_spec_record(encode(a)) == a);
}

TEST_CASE("spec record: names exactly the fields that differ", "[spec-record]") {
  auto other = base_spec();
  other.user = "0:0";
  other.memory_bytes = 1 << 30;
  other.env["TOKEN"] = "another";
  other.env["EXTRA"] = "1";
  other.lifetime = 5min;
  const auto kept = make_spec_record(base_spec(), "s");
  const auto asked = make_spec_record(other, "s");
  CHECK(differing_fields(kept, asked) ==
        std::vector<std::string>{"env.EXTRA", "env.TOKEN", "lifetime", "memory", "user"});
  // Nothing asked that the record does not know: an env variable left out also differs.
  auto fewer = base_spec();
  fewer.env.erase("MODE");
  CHECK(differing_fields(kept, make_spec_record(fewer, "s")) ==
        std::vector<std::string>{"env.MODE"});
}

TEST_CASE("spec record: an env value is kept only as a keyed hash", "[spec-record]") {
  const auto record = make_spec_record(base_spec(), "node-secret");
  const auto text = encode(record);
  CHECK(text.find("hunter2") == std::string::npos);
  CHECK(text.find("fast") == std::string::npos);
  // Keyed: another secret gives another digest for the same value, so a label cannot be
  // checked against guesses without the secret.
  const auto other = make_spec_record(base_spec(), "another-secret");
  CHECK(record.at("env.TOKEN") != other.at("env.TOKEN"));
  CHECK(record.at("image") == other.at("image"));
  // Under different secrets (adopted from another process), env values compare by name only.
  CHECK(differing_fields(record, other).empty());
  auto renamed = base_spec();
  renamed.env.erase("TOKEN");
  renamed.env["TOKEN2"] = "hunter2";
  CHECK(differing_fields(record, make_spec_record(renamed, "another-secret")) ==
        std::vector<std::string>{"env.TOKEN", "env.TOKEN2"});
}

TEST_CASE("spec record: a malformed label decodes to nothing", "[spec-record]") {
  CHECK(decode_spec_record("").empty());
  CHECK(decode_spec_record("image").empty());
  CHECK(decode_spec_record("=x;image=1").empty());
  CHECK(decode_spec_record("image=1;user=2").size() == 2);
}

TEST_CASE("spec record: plan_sandbox labels a principal's key and its record", "[spec-record]") {
  runtime_config cfg;
  cfg.spec_secret = "s";
  auto plan = plan_sandbox(cfg, "alice/session-42", base_spec(), "/var/run/docker.sock", 1);
  REQUIRE(plan);
  const auto& labels = plan->create.labels;
  CHECK(labels.at("corral.key") == "alice/session-42");
  CHECK(labels.at("corral.principal") == "alice");
  CHECK(decode_spec_record(labels.at("corral.spec")) == make_spec_record(base_spec(), "s"));
  CHECK(labels.at("corral.spec").find("hunter2") == std::string::npos);
}
