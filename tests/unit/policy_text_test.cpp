// The policy's checks of the request's strings and names: check_key, check_image_reference,
// image_allowed, the users, and every string's UTF-8 and control characters (sandbox and
// exec). Split from policy_test.cpp by concern, as actors/policy_text.cpp is.
#include <catch2/catch.hpp>

#include "tests/unit/policy_test_support.hpp"

using namespace corral::unit_tests::policy_testing;

// -- check_key -------------------------------------------------------------------------------

TEST_CASE("policy: check_key accepts 1-128 safe characters", "[policy]") {
  for (const std::string& key :
       {"a"s, "k1"s, "agent-7.session_2"s, "A.b-C_d"s, "0"s, std::string(128, 'x'),
        // A principal's, as a node's facade scopes them.
        "alice/k1"s, "alice@corp.example/session-42"s}) {
    INFO("key: " << key);
    CHECK_FALSE(pol::check_key(key));
  }
}

TEST_CASE("policy: check_key refuses empty, long, relative and odd keys", "[policy]") {
  for (const std::string& key : {""s,
                                 std::string(129, 'x'),
                                 "../x"s,
                                 ".."s,
                                 "."s,
                                 "-x"s,
                                 "_x"s,
                                 ".hidden"s,
                                 "a b"s,
                                 "a/b/c"s,
                                 "/b"s,
                                 "a/"s,
                                 "../b"s,
                                 "a/../b"s,
                                 "a b/c"s,
                                 "a\\b"s,
                                 "a:b"s,
                                 "a\nb"s,
                                 "a\0b"s,
                                 "\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87"s,
                                 "caf\xc3\xa9"s,
                                 "a;b"s,
                                 "$(x)"s}) {
    INFO("key: " << key);
    const auto err = pol::check_key(key);
    CHECK(err == corral_errc::invalid_request);
    CHECK_THAT(msg::describe(err), Catch::Contains("sandbox key"));
  }
  CHECK_THAT(msg::describe(pol::check_key("../x")), Catch::Contains("'../x'"));
  // Control characters are shown escaped, not raw, in the message.
  CHECK_THAT(msg::describe(pol::check_key("a\nb")), Catch::Contains("a\\x0ab"));
}

// -- check_image_reference -------------------------------------------------------------------

TEST_CASE("policy: check_image_reference accepts valid references", "[policy]") {
  for (const std::string& image :
       {"corral/sandbox:busybox"s, "ghcr.io/org/tool:1"s, "localhost:5000/a/b:tag"s,
        "alpine@"s + digest, "alpine:3.19@"s + digest, "alpine"s, "alpine:3.19"s,
        "library/alpine:latest"s, "my-registry.example.com:443/team/app_x:v1.2.3-rc1"s,
        "alpine:Tag_With.Upper-1"s, std::string(256, 'a')}) {
    INFO("image: " << image);
    CHECK_FALSE(pol::check_image_reference(image));
  }
}

TEST_CASE("policy: check_image_reference refuses malformed references", "[policy]") {
  const std::string long_tag = "alpine:" + std::string(129, 't');
  const std::vector<std::vector<std::string>> groups{
      // Length, case and path components.
      {""s, std::string(257, 'a'), "UPPER/case"s, "Alpine"s, "a//b"s, "a/../b"s, "a/./b"s,
       "/alpine"s, "alpine/"s, "-alpine"s, "alpine-"s, "\xc3\xa9t\xc3\xa9"s},
      // Shell metacharacters and control characters.
      {"a b"s, "alpine;rm -rf /"s, "$(x)"s, "alpine\n"s, "alpine`id`"s, "alpine|x"s, "alpine&"s,
       "alpine>x"s, "alpine\0"s},
      // Tags and digests.
      {"a:tag:x"s, ":tag"s, "alpine:"s, "alpine:-x"s, "alpine:.x"s, long_tag, "alpine@"s,
       "alpine@sha256"s, "alpine@sha256:"s, "alpine@:abc"s, "alpine@sha256:ABCDEF"s,
       "alpine@sha256:xyz"s},
  };
  for (const auto& group : groups) {
    for (const auto& image : group) {
      INFO("image: " << image);
      const auto err = pol::check_image_reference(image);
      CHECK(err == corral_errc::invalid_request);
      CHECK_THAT(msg::describe(err), Catch::Contains("image reference"));
    }
  }
  CHECK_THAT(msg::describe(pol::check_image_reference("UPPER/case")),
             Catch::Contains("'UPPER/case'"));
  CHECK_THAT(msg::describe(pol::check_image_reference("a b")), Catch::Contains("' '"));
}

// -- image_allowed ---------------------------------------------------------------------------

TEST_CASE("policy: image_allowed matches prefixes only on a boundary", "[policy]") {
  SECTION("\"*\" allows every image, an empty allowlist none") {
    CHECK(pol::image_allowed("anything/at:all", {"*"}));
    CHECK_FALSE(pol::image_allowed("anything/at:all", {}));
  }
  SECTION("a prefix ending in '/' allows that namespace only") {
    const std::vector<std::string> allow{"ghcr.io/org/"};
    CHECK(pol::image_allowed("ghcr.io/org/tool:1", allow));
    CHECK(pol::image_allowed("ghcr.io/org/sub/tool@" + digest, allow));
    CHECK_FALSE(pol::image_allowed("ghcr.io/org-evil/tool", allow));
    CHECK_FALSE(pol::image_allowed("ghcr.io/org-evil/tool:1", allow));
    CHECK_FALSE(pol::image_allowed("ghcr.io/org", allow));
    CHECK_FALSE(pol::image_allowed("ghcr.io/org/", allow));
    CHECK_FALSE(pol::image_allowed("ghcr.io/orgx/tool", allow));
    CHECK_FALSE(pol::image_allowed("evil.io/ghcr.io/org/tool", allow));
  }
  SECTION("a prefix ending in ':' allows tags of that repository only") {
    const std::vector<std::string> allow{"alpine:"};
    CHECK(pol::image_allowed("alpine:3.19", allow));
    CHECK_FALSE(pol::image_allowed("alpine", allow));
    CHECK_FALSE(pol::image_allowed("alpine:", allow));
    CHECK_FALSE(pol::image_allowed("alpine@" + digest, allow));
    CHECK_FALSE(pol::image_allowed("alpine-evil:1", allow));
  }
  SECTION("a bare repository allows any tag or digest of exactly it") {
    const std::vector<std::string> allow{"alpine"};
    CHECK(pol::image_allowed("alpine", allow));
    CHECK(pol::image_allowed("alpine:3.19", allow));
    CHECK(pol::image_allowed("alpine@" + digest, allow));
    CHECK(pol::image_allowed("alpine:3.19@" + digest, allow));
    CHECK_FALSE(pol::image_allowed("alpine-evil", allow));
    CHECK_FALSE(pol::image_allowed("alpinex:1", allow));
    CHECK_FALSE(pol::image_allowed("evil/alpine", allow));
    CHECK_FALSE(pol::image_allowed("alpine/evil", allow));
    CHECK_FALSE(pol::image_allowed("alpin", allow));
  }
  SECTION("a bare repository behind a registry port") {
    const std::vector<std::string> allow{"localhost:5000/a/b"};
    CHECK(pol::image_allowed("localhost:5000/a/b", allow));
    CHECK(pol::image_allowed("localhost:5000/a/b:tag", allow));
    CHECK_FALSE(pol::image_allowed("localhost:5000/a/bc:tag", allow));
    CHECK_FALSE(pol::image_allowed("localhost:5001/a/b:tag", allow));
  }
  SECTION("any entry may match; empty entries match nothing") {
    const std::vector<std::string> allow{"", "corral/", "alpine"};
    CHECK(pol::image_allowed("corral/sandbox:busybox", allow));
    CHECK(pol::image_allowed("alpine:3", allow));
    CHECK_FALSE(pol::image_allowed("busybox", allow));
    CHECK_FALSE(pol::image_allowed("busybox", {""}));
  }
}

// -- plan_sandbox: users ---------------------------------------------------------------------

TEST_CASE("policy: users are numeric, never root, and within the configured ranges", "[policy]") {
  const pol::user_policy defaults;
  SECTION("the defaults: 1000-60000 for both, no root") {
    CHECK(defaults.uids.min == 1000);
    CHECK(defaults.uids.max == 60000);
    CHECK(defaults.gids.min == 1000);
    CHECK(defaults.gids.max == 60000);
    CHECK_FALSE(defaults.allow_root);
    CHECK(plan({})->create.user == "1000:1000");
  }
  SECTION("names are refused: one could resolve to root in the image") {
    for (const char* name : {"root", "root:root", "nobody", "1000:staff", "sandbox:1000"}) {
      INFO("user " << name);
      CHECK_REFUSED(pol::check_user(defaults, name), invalid_request, "numeric");
    }
  }
  SECTION("uid 0 and gid 0, in any spelling, name the setting that would allow them") {
    for (const char* user : {"0", "0:0", "00", "0:1000", "1000:0", "1000:000"}) {
      msg::sandbox_spec spec;
      spec.user = user;
      INFO("user " << user);
      CHECK_REFUSED(plan(spec), policy_violation, "users.allow_root");
    }
    CHECK_REFUSED(pol::check_user(defaults, "0"), policy_violation, "uid 0");
    CHECK_REFUSED(pol::check_user(defaults, "1000:0"), policy_violation, "gid 0");
  }
  SECTION("a system group such as disk (6) is outside the gid range") {
    msg::sandbox_spec spec;
    spec.user = "1000:6";
    CHECK_REFUSED(plan(spec), policy_violation, "gid 6");
    CHECK_REFUSED(plan(spec), policy_violation, "users.gids");
    spec.user = "6:1000";
    CHECK_REFUSED(plan(spec), policy_violation, "users.uids");
  }
  SECTION("range bounds are inclusive") {
    CHECK(pol::check_user(defaults, "1000:1000").value() == "1000:1000");
    CHECK(pol::check_user(defaults, "60000:60000").value() == "60000:60000");
    CHECK(pol::check_user(defaults, "01000").value() == "1000:1000");
    CHECK_REFUSED(pol::check_user(defaults, "999:1000"), policy_violation, "999");
    CHECK_REFUSED(pol::check_user(defaults, "60001:1000"), policy_violation, "60001");
    CHECK_REFUSED(pol::check_user(defaults, "1000:999"), policy_violation, "999");
    CHECK_REFUSED(pol::check_user(defaults, "1000:60001"), policy_violation, "60001");
  }
  SECTION("configured ranges") {
    pol::runtime_config cfg;
    cfg.policy.users.uids = {2000, 2999};
    cfg.policy.users.gids = {5, 5};
    msg::sandbox_spec spec;
    spec.user = "2500:5";
    CHECK(plan(spec, cfg));
    spec.user = "1000:1000";
    CHECK_REFUSED(plan(spec, cfg), policy_violation, "2000-2999");
  }
  SECTION("allow_root admits 0, not other ids outside the ranges") {
    pol::user_policy loose;
    loose.allow_root = true;
    CHECK(pol::check_user(loose, "0:0").value() == "0:0");
    CHECK(pol::check_user(loose, "1000:0").value() == "1000:0");
    CHECK_REFUSED(pol::check_user(loose, "0:6"), policy_violation, "gid 6");
  }
}

// -- request text ----------------------------------------------------------------------------

TEST_CASE("policy: valid_utf8 is strict", "[policy]") {
  for (const std::string& ok :
       {""s, "plain"s, "caf\xc3\xa9"s, "\xe2\x82\xac"s, "\xf0\x9f\x90\x84"s, "\xf4\x8f\xbf\xbf"s}) {
    INFO("ok: " << ok);
    CHECK(pol::valid_utf8(ok));
  }
  for (const std::string& bad :
       {"\xff"s, "a\xfe"s, "\x80"s, "\xc3"s, "\xc3\x28"s, "\xc0\xaf"s, "\xe0\x80\xaf"s,
        "\xed\xa0\x80"s, "\xf4\x90\x80\x80"s, "\xf8\x88\x80\x80\x80"s, "\xe2\x82"s}) {
    INFO("bad: " << bad);
    CHECK_FALSE(pol::valid_utf8(bad));
  }
}

TEST_CASE("policy: every request string is valid UTF-8 without stray control characters",
          "[policy]") {
  temp_dir tmp;
  using setter = std::function<void(msg::sandbox_spec&, const std::string&)>;
  // field name in the error, how to set it, whether it is multi-line (TAB, LF, CR allowed).
  const std::vector<std::tuple<std::string, setter, bool>> fields = {
      {"image", [](auto& s, auto& v) { s.image = "corral/x" + v; }, false},
      {"workspace",
       [&](auto& s, auto& v) {
         s.workspace.host_path = tmp.path.string() + "/x" + v;
         s.workspace.access = msg::access_mode::ro;
       },
       false},
      {"workspace container path",
       [&](auto& s, auto& v) {
         s.workspace.host_path = tmp.path.string();
         s.workspace.access = msg::access_mode::ro;
         s.workspace.container_path = "/ws" + v;
       },
       false},
      {"workdir", [](auto& s, auto& v) { s.workdir = "/w" + v; }, false},
      {"user", [](auto& s, auto& v) { s.user = "1000" + v; }, false},
      {"network mode", [](auto& s, auto& v) { s.network_mode = "none" + v; }, false},
      {"command[1]",
       [](auto& s, auto& v) {
         s.command = {"sh", "x" + v};
       },
       true},
      {"setup command[0]", [](auto& s, auto& v) { s.setup_command = {"x" + v}; }, true},
      {"env key",
       [](auto& s, auto& v) {
         s.env = {{"K" + v, "v"}};
       },
       false},
      {"env value of K",
       [](auto& s, auto& v) {
         s.env = {{"K", "v" + v}};
       },
       true},
      {"label key",
       [](auto& s, auto& v) {
         s.labels = {{"l" + v, "v"}};
       },
       false},
      {"label value of l",
       [](auto& s, auto& v) {
         s.labels = {{"l", "v" + v}};
       },
       true},
      {"capability[0]", [](auto& s, auto& v) { s.cap_add = {"CHOWN" + v}; }, false},
      {"tmpfs path[0]",
       [](auto& s, auto& v) {
         s.tmpfs = {{"/t" + v, 0, ""}};
       },
       false},
      {"tmpfs options[0]",
       [](auto& s, auto& v) {
         s.tmpfs = {{"/t", 0, "noatime" + v}};
       },
       false},
  };
  for (const auto& [field, set, multi_line] : fields) {
    for (const std::string& bad : {"\xff"s, "\xc3"s, "\xed\xa0\x80"s}) {
      msg::sandbox_spec spec;
      set(spec, bad);
      INFO("field " << field);
      CHECK_REFUSED(plan(spec), invalid_request, field + " ");
      CHECK_REFUSED(plan(spec), invalid_request, "not valid UTF-8");
      // The refused bytes never come back in the error text.
      CHECK(pol::valid_utf8(msg::describe(error_of(plan(spec)))));
    }
    for (char c : {'\0', '\x01', '\x1b', '\x7f', '\t', '\n', '\r'}) {
      msg::sandbox_spec spec;
      set(spec, std::string(1, c));
      INFO("field " << field << ", character " << static_cast<int>(c));
      const bool allowed = multi_line && (c == '\t' || c == '\n' || c == '\r');
      const auto err = error_of(plan(spec));
      if (allowed) {
        // Passes the text check (it may fail a later rule, never for this reason).
        CHECK_THAT(msg::describe(err), !Catch::Contains("control character"));
      } else {
        CHECK_REFUSED(plan(spec), invalid_request, field + " ");
        CHECK_THAT(msg::describe(err), Catch::Contains(c == '\0' ? "NUL" : "control character"));
      }
    }
  }
  SECTION("the key") {
    CHECK_REFUSED(pol::plan_sandbox({}, "k\xff", {}, engine_socket, now_ms), invalid_request,
                  "not valid UTF-8");
    CHECK_REFUSED(pol::plan_sandbox({}, "k\n", {}, engine_socket, now_ms), invalid_request,
                  "sandbox key");
  }
  SECTION("a workspace path with a 0xff byte never reaches the engine, even if it exists") {
    const auto odd = tmp.path / "odd\xff";
    fs::create_directories(odd);
    CHECK_REFUSED(plan(with_workspace(odd.string(), msg::access_mode::rw)), invalid_request,
                  "not valid UTF-8");
  }
  SECTION("values that may hold credentials are named, never echoed") {
    msg::sandbox_spec spec;
    spec.env = {{"TOKEN", "s3cret\x1b"}};
    CHECK_REFUSED(plan(spec), invalid_request, "env value of TOKEN");
    CHECK_THAT(msg::describe(error_of(plan(spec))), !Catch::Contains("s3cret"));
    spec.env = {{"TOKEN", "s3cret\xff"}};
    CHECK_THAT(msg::describe(error_of(plan(spec))), !Catch::Contains("s3cret"));
    spec.env = {};
    spec.command = {"curl", "-H", "Authorization: s3cret\x01"};
    CHECK_REFUSED(plan(spec), invalid_request, "command[2]");
    CHECK_THAT(msg::describe(error_of(plan(spec))), !Catch::Contains("s3cret"));
  }
  SECTION("multi-line scripts and UTF-8 text pass") {
    msg::sandbox_spec spec;
    spec.command = {"sh", "-c", "echo caf\xc3\xa9\n\techo two\r\n"};
    spec.env = {{"MSG", "line one\nline two\t\xe2\x82\xac"}};
    CHECK(plan(spec));
  }
}

TEST_CASE("policy: exec request strings are checked the same way", "[policy]") {
  const pol::runtime_config cfg;
  const auto sbx = sandbox_for_exec();
  CHECK_REFUSED(pol::plan_exec(cfg, sbx, request({"echo", "\xff"})), invalid_request,
                "exec argv[1]");
  CHECK_REFUSED(pol::plan_exec(cfg, sbx, request({"echo", "a\x1b"})), invalid_request,
                "control character");
  CHECK(pol::plan_exec(cfg, sbx, request({"sh", "-c", "echo a\n\techo b\r\n"})));
  auto r = request({"true"});
  r.env = {{"K", "\xc3"}};
  CHECK_REFUSED(pol::plan_exec(cfg, sbx, r), invalid_request, "exec env value of K");
  r.env = {{"K\xff", "v"}};
  CHECK_REFUSED(pol::plan_exec(cfg, sbx, r), invalid_request, "exec env key");
  r.env = {{"K", "a\nb"}};
  CHECK(pol::plan_exec(cfg, sbx, r));
  r = request({"true"});
  r.workdir = "/w\xff";
  CHECK_REFUSED(pol::plan_exec(cfg, sbx, r), invalid_request, "exec workdir");
  r.workdir = "/w\t";
  CHECK_REFUSED(pol::plan_exec(cfg, sbx, r), invalid_request, "exec workdir");
  // stdin is bytes, not text: anything goes.
  r = request({"cat"});
  r.has_stdin = true;
  r.stdin_data = "\xff\x00\x1b"s;
  CHECK(pol::plan_exec(cfg, sbx, r));
}

TEST_CASE("policy: workdir must be absolute and normal", "[policy]") {
  for (const char* bad : {"relative", "/", "/a/../b", "../x"}) {
    msg::sandbox_spec spec;
    spec.workdir = bad;
    CHECK_REFUSED(plan(spec), invalid_request, bad);
  }
}
