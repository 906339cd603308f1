// The sandbox policy as pure functions: what is accepted, what is refused and with which code,
// and the exact container the strict defaults produce. No engine, no actors.
#include <catch2/catch.hpp>

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "actors/policy.hpp"
#include "actors/runtime_config.hpp"
#include "messages/errors.hpp"
#include "messages/exec.hpp"
#include "messages/sandbox.hpp"

namespace fs = std::filesystem;
namespace pol = corral::actors;
namespace msg = corral::messages;
using msg::corral_errc;
using namespace std::chrono_literals;
using namespace std::string_literals;

namespace {

constexpr int64_t now_ms = 1'700'000'000'000;
const std::string engine_socket = "/var/run/docker.sock";
const std::string digest = "sha256:" + std::string(64, 'a');

template <class T>
caf::error error_of(const caf::expected<T>& x) {
  return x ? caf::error{} : x.error();
}

caf::error error_of(const caf::error& x) {
  return x;
}

caf::expected<pol::sandbox_plan> plan(const msg::sandbox_spec& spec,
                                      const pol::runtime_config& cfg = {},
                                      const std::string& key = "k1") {
  return pol::plan_sandbox(cfg, key, spec, engine_socket, now_ms);
}

bool has_warning(const std::vector<std::string>& warnings, const std::string& part) {
  for (const auto& w : warnings) {
    if (w.find(part) != std::string::npos) return true;
  }
  return false;
}

// A fresh directory under the system's temp directory, removed with everything in it.
struct temp_dir {
  fs::path path;
  temp_dir() {
    std::string pattern = (fs::temp_directory_path() / "corral-policy-XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path = fs::canonical(pattern);
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
};

msg::sandbox_spec with_workspace(std::string host_path,
                                 msg::access_mode access = msg::access_mode::ro) {
  msg::sandbox_spec spec;
  spec.workspace.host_path = std::move(host_path);
  spec.workspace.access = access;
  return spec;
}

pol::sandbox_plan sandbox_for_exec() {
  msg::sandbox_spec spec;
  spec.user = "1234:1234";
  spec.exec_timeout = 90s;
  spec.max_stdout = 1000;
  spec.max_stderr = 2000;
  auto p = plan(spec);
  REQUIRE(p);
  return *p;
}

// A runtime whose policy allows each loosening the tests ask for.
pol::runtime_config loose() {
  pol::runtime_config cfg;
  cfg.policy.networks = {"none", "bridge"};
  cfg.policy.writable_root = true;
  cfg.policy.capabilities = {"NET_BIND_SERVICE", "CHOWN", "NET_RAW"};
  return cfg;
}

msg::exec_request request(std::vector<std::string> argv) {
  msg::exec_request r;
  r.argv = std::move(argv);
  return r;
}

}  // namespace

// The error's code and that its text names the offending value.
#define CHECK_REFUSED(expr, code, mention)                                      \
  do {                                                                          \
    const caf::error refused_ = error_of(expr);                                 \
    INFO("error: " << msg::describe(refused_));                                 \
    CHECK(refused_ == corral_errc::code);                                       \
    CHECK_THAT(msg::describe(refused_), Catch::Contains(std::string(mention))); \
  } while (false)

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

// -- is_reserved_env_key ---------------------------------------------------------------------

TEST_CASE("policy: reserved env keys, in any case", "[policy]") {
  for (const char* key :
       {"HTTP_PROXY", "http_proxy", "Https_Proxy", "HTTPS_PROXY", "NO_PROXY", "no_proxy",
        "ALL_PROXY", "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "BASH_ENV", "ENV",
        "PYTHONSTARTUP", "CORRAL_", "CORRAL_anything", "corral_token", "Corral_X"}) {
    INFO("key: " << key);
    CHECK(pol::is_reserved_env_key(key));
  }
  for (const char* key : {"PATH", "HOME", "LANG", "CORRAL", "XCORRAL_X", "HTTP_PROXYX",
                          "MY_HTTP_PROXY", "ENVIRONMENT", "LD_PRELOAD_X", ""}) {
    INFO("key: " << key);
    CHECK_FALSE(pol::is_reserved_env_key(key));
  }
}

// -- plan_sandbox: the strict defaults -------------------------------------------------------

TEST_CASE("policy: an empty spec gets exactly the strict defaults", "[policy]") {
  const pol::runtime_config cfg;
  const auto p = plan({}, cfg, "sbx-1");
  REQUIRE(p);
  const auto& c = p->create;
  const auto& h = c.host;

  CHECK(c.image == "corral/sandbox:busybox");
  CHECK(c.cmd == std::vector<std::string>{"sleep", "2147483647"});
  CHECK(c.entrypoint.empty());
  CHECK(c.env.empty());
  CHECK(c.user == "1000:1000");
  CHECK(p->user == "1000:1000");
  CHECK(c.working_dir.empty());
  CHECK(c.stop_signal == "SIGTERM");
  CHECK(c.stop_timeout == 1);
  CHECK_FALSE(c.tty);
  CHECK_FALSE(c.open_stdin);

  CHECK(h.network_mode == "none");
  CHECK(h.readonly_rootfs);
  CHECK(h.cap_drop == std::vector<std::string>{"ALL"});
  CHECK(h.cap_add.empty());
  CHECK(h.security_opt == std::vector<std::string>{"no-new-privileges"});
  CHECK(h.pids_limit == 256);
  CHECK(h.memory == 512LL * 1024 * 1024);
  CHECK(h.memory_swap == h.memory);
  CHECK(h.nano_cpus == 1'000'000'000);
  CHECK(h.init);
  CHECK(h.binds.empty());
  CHECK(h.tmpfs == std::map<std::string, std::string>{
                       {"/tmp", "rw,noexec,nosuid,nodev,size=67108864,uid=1000,gid=1000"}});

  CHECK(c.labels.size() == 7);
  CHECK(c.labels.at("corral.spec") == p->spec_record);
  // The backstop deadline: created-at plus the lifetime (the default: 24 h).
  CHECK(std::stoll(c.labels.at("corral.deadline")) ==
        std::stoll(c.labels.at("corral.created-at")) + 24LL * 3600 * 1000);
  CHECK(c.labels.count("corral.principal") == 0);  // the embedder's key: no principal
  CHECK(c.labels.at("corral.managed-by") == "corral");
  CHECK(c.labels.at("corral.runtime") == "local");
  CHECK(c.labels.at("corral.key") == "sbx-1");
  CHECK(c.labels.at("corral.created-at") == "1700000000000");
  CHECK(c.labels.at("corral.spec-hash") == p->spec_hash);
  CHECK(p->spec_hash.size() == 16);
  CHECK(p->spec_hash.find_first_not_of("0123456789abcdef") == std::string::npos);

  CHECK(p->warnings.empty());
  CHECK(p->setup_command.empty());
  CHECK(p->exec_timeout == 60s);
  CHECK(p->max_stdout == 1u << 20);
  CHECK(p->max_stderr == 1u << 20);
  CHECK(p->lifetime == 24h);  // limits.lifetime: every sandbox ends by itself
  CHECK(p->idle_limit == 0ms);
}

TEST_CASE("policy: a one-shot sandbox gets run_lifetime unless it asks for a lifetime",
          "[policy]") {
  pol::runtime_config cfg;
  cfg.policy.run_lifetime = 15min;
  msg::sandbox_spec spec;
  spec.one_shot = true;
  CHECK(plan(spec, cfg)->lifetime == 15min);
  spec.lifetime = 2h;
  CHECK(plan(spec, cfg)->lifetime == 2h);
  spec.one_shot = false;
  spec.lifetime = 0ms;
  CHECK(plan(spec, cfg)->lifetime == 24h);
}

TEST_CASE("policy: the runtime's name, stop grace and defaults reach the plan", "[policy]") {
  pol::runtime_config cfg;
  cfg.name = "ci";
  cfg.stop_grace = 5s;
  cfg.policy.defaults.timeout = 7s;
  cfg.policy.defaults.max_output = 1000;
  cfg.policy.defaults.lifetime = 1h;
  cfg.policy.defaults.idle = 10min;
  cfg.policy.defaults.image = "corral/other:1";
  const auto p = plan({}, cfg);
  REQUIRE(p);
  CHECK(p->create.labels.at("corral.runtime") == "ci");
  CHECK(p->create.stop_timeout == 5);
  CHECK(p->create.image == "corral/other:1");
  CHECK(p->exec_timeout == 7s);
  CHECK(p->max_stdout == 1000);
  CHECK(p->max_stderr == 1000);
  CHECK(p->lifetime == 1h);
  CHECK(p->idle_limit == 10min);
}

TEST_CASE("policy: spec values override the runtime's defaults", "[policy]") {
  msg::sandbox_spec spec;
  spec.command = {"python3", "-m", "http.server"};
  spec.setup_command = {"mkdir", "-p", "/tmp/x"};
  spec.exec_timeout = 90s;
  spec.max_stdout = 10;
  spec.max_stderr = 20;
  spec.lifetime = 2h;
  spec.idle_limit = 5min;
  spec.workdir = "/opt/app";
  spec.labels = {{"team", "a"}};
  const auto p = plan(spec);
  REQUIRE(p);
  CHECK(p->create.cmd == spec.command);
  CHECK(p->setup_command == spec.setup_command);
  CHECK(p->exec_timeout == 90s);
  CHECK(p->max_stdout == 10);
  CHECK(p->max_stderr == 20);
  CHECK(p->lifetime == 2h);
  CHECK(p->idle_limit == 5min);
  CHECK(p->create.working_dir == "/opt/app");
  CHECK(p->create.labels.at("team") == "a");
  CHECK(p->create.labels.size() == 8);
}

TEST_CASE("policy: use_agent makes the agent PID 1 and moves env and command to it",
          "[policy][agent]") {
  pol::runtime_config cfg;
  cfg.agent_path = "/opt/corral/corral-agent";
  cfg.agent_run_root = "/run/corral/sandboxes";
  cfg.policy.capabilities = {"NET_BIND_SERVICE"};
  msg::sandbox_spec spec;
  spec.env = {{"TOKEN", "s3cr3t-value"}};
  spec.command = {"python3", "-m", "http.server"};
  spec.cap_add = {"NET_BIND_SERVICE"};
  auto p = plan(spec, cfg, "sbx-1");
  REQUIRE(p);
  pol::use_agent(*p, cfg, "0123456789abcdef");
  const auto& c = p->create;
  CHECK(p->agent);
  CHECK(c.entrypoint == std::vector<std::string>{"/corral/agent"});
  CHECK(c.cmd == std::vector<std::string>{"--socket", "/corral/run/agent.sock"});
  CHECK(c.user == "0:0");
  CHECK(p->user == "1000:1000");  // commands' user
  CHECK_FALSE(c.host.init);
  CHECK(c.env.empty());
  CHECK(p->sandbox_env == std::vector<std::string>{"TOKEN=s3cr3t-value"});
  CHECK(p->main_command == spec.command);
  CHECK(p->command_caps == std::vector<std::string>{"NET_BIND_SERVICE"});
  auto caps = c.host.cap_add;
  std::sort(caps.begin(), caps.end());
  CHECK(caps ==
        std::vector<std::string>{"KILL", "NET_BIND_SERVICE", "SETGID", "SETPCAP", "SETUID"});
  CHECK(c.host.cap_drop == std::vector<std::string>{"ALL"});
  CHECK(c.host.binds ==
        std::vector<std::string>{"/opt/corral/corral-agent:/corral/agent:ro",
                                 "/run/corral/sandboxes/0123456789abcdef:/corral/run:rw"});
  CHECK(c.labels.at("corral.sandbox-id") == "0123456789abcdef");
  for (const auto& [k, v] : c.labels) CHECK(v.find("s3cr3t-value") == std::string::npos);

  SECTION("the keep-alive is the agent: no main command") {
    auto q = plan({}, cfg, "sbx-2");
    REQUIRE(q);
    pol::use_agent(*q, cfg, "fedcba9876543210");
    CHECK(q->main_command.empty());
  }
}

// -- egress ----------------------------------------------------------------------------------

TEST_CASE("policy: egress host patterns and what covers what", "[policy][egress]") {
  for (const char* text : {"pypi.org", "*.pythonhosted.org", "a-b.c1.org", "127.0.0.1", "::1"}) {
    std::string ok = text;
    INFO(ok);
    CHECK(pol::check_egress_pattern(ok).empty());
  }
  std::string upper = "PyPI.Org.";
  CHECK(pol::check_egress_pattern(upper).empty());
  CHECK(upper == "pypi.org");
  for (const char* text :
       {"", "*", "*.", "a..b", "-a.org", "a-.org", "a b.org", "a_b.org", "*.*.org", "a.*.org",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.org"}) {
    std::string bad = text;
    INFO(bad);
    CHECK_FALSE(pol::check_egress_pattern(bad).empty());
  }
  CHECK(pol::egress_pattern_covers("pypi.org", "pypi.org"));
  CHECK_FALSE(pol::egress_pattern_covers("pypi.org", "x.pypi.org"));
  CHECK(pol::egress_pattern_covers("*.pythonhosted.org", "files.pythonhosted.org"));
  CHECK(pol::egress_pattern_covers("*.pythonhosted.org", "a.b.pythonhosted.org"));
  CHECK(pol::egress_pattern_covers("*.pythonhosted.org", "*.files.pythonhosted.org"));
  CHECK(pol::egress_pattern_covers("*.pythonhosted.org", "*.pythonhosted.org"));
  CHECK_FALSE(pol::egress_pattern_covers("*.pythonhosted.org", "pythonhosted.org"));
  CHECK_FALSE(pol::egress_pattern_covers("*.pythonhosted.org", "evilpythonhosted.org"));
  CHECK_FALSE(pol::egress_pattern_covers("files.pythonhosted.org", "*.pythonhosted.org"));
}

TEST_CASE("policy: --allow-host narrows the policy's egress, never widens it", "[policy][egress]") {
  pol::runtime_config cfg;
  cfg.agent_path = "/opt/corral/corral-agent";
  cfg.policy.egress.allow = {"pypi.org", "*.pythonhosted.org"};
  cfg.policy.egress.deny = {"*.internal.pythonhosted.org"};
  msg::sandbox_spec spec;
  spec.allow_hosts = {"PyPI.org", "files.pythonhosted.org", "pypi.org"};
  auto p = plan(spec, cfg);
  REQUIRE(p);
  CHECK(p->egress_hosts == std::vector<std::string>{"pypi.org", "files.pythonhosted.org"});
  pol::use_agent(*p, cfg, "0123456789abcdef");
  const auto& env = p->sandbox_env;
  for (const char* kv :
       {"HTTP_PROXY=http://127.0.0.1:3128", "https_proxy=http://127.0.0.1:3128",
        "SSL_CERT_FILE=/corral/run/ca.pem", "NODE_EXTRA_CA_CERTS=/corral/run/ca.pem"})
    CHECK(std::find(env.begin(), env.end(), kv) != env.end());

  SECTION("no egress asked: no proxy in the commands' environment") {
    auto q = plan({}, cfg);
    REQUIRE(q);
    CHECK(q->egress_hosts.empty());
    pol::use_agent(*q, cfg, "0123456789abcdef");
    for (const auto& kv : q->sandbox_env) CHECK(kv.find("PROXY") == std::string::npos);
  }
  SECTION("refusals name what is wrong") {
    msg::sandbox_spec other;
    other.allow_hosts = {"github.com"};
    CHECK_REFUSED(plan(other, cfg), policy_violation, "(policy key egress.allow would allow it)");
    other.allow_hosts = {"pythonhosted.org"};
    CHECK_REFUSED(plan(other, cfg), policy_violation, "'pythonhosted.org' is not allowed");
    other.allow_hosts = {"a.internal.pythonhosted.org"};
    CHECK_REFUSED(plan(other, cfg), policy_violation, "(policy key egress.deny would allow it)");
    other.allow_hosts = {"*"};
    CHECK_REFUSED(plan(other, cfg), invalid_request, "not a host name");
    other.allow_hosts = {"pypi.org"};
    other.network_mode = "bridge";
    cfg.policy.networks = {"none", "bridge"};
    CHECK_REFUSED(plan(other, cfg), invalid_request, "needs network none");
    pol::runtime_config no_agent = cfg;
    no_agent.agent_path.clear();
    other.network_mode.clear();
    CHECK_REFUSED(plan(other, no_agent), invalid_request, "needs the sandbox agent");
    pol::runtime_config no_egress;
    no_egress.agent_path = cfg.agent_path;
    CHECK_REFUSED(plan(other, no_egress), policy_violation, "egress.allow");
  }
}

// -- plan_sandbox: key and image -------------------------------------------------------------

TEST_CASE("policy: plan_sandbox checks the key and the image", "[policy]") {
  CHECK_REFUSED(plan({}, {}, "../x"), invalid_request, "'../x'");
  CHECK_REFUSED(plan({}, {}, ""), invalid_request, "sandbox key");

  msg::sandbox_spec spec;
  spec.image = "ghcr.io/org/tool:1";
  CHECK_REFUSED(plan(spec), policy_violation, "ghcr.io/org/tool:1");
  CHECK_REFUSED(plan(spec), policy_violation, "corral/");
  CHECK_REFUSED(plan(spec), policy_violation, "(policy key images would allow it)");

  pol::runtime_config open;
  open.policy.images = {"*"};
  CHECK(plan(spec, open));
  pol::runtime_config none;
  none.policy.images = {};
  CHECK_REFUSED(plan(spec, none), policy_violation, "images");
  pol::runtime_config org;
  org.policy.images = {"ghcr.io/org/"};
  CHECK(plan(spec, org));
  spec.image = "ghcr.io/org-evil/tool:1";
  CHECK_REFUSED(plan(spec, org), policy_violation, "ghcr.io/org-evil/tool:1");
  // An embedder's allowlist is not checked by the policy file's loader; the refusal lists it
  // escaped, on one line (found by the fuzz stage: a tab in an entry was echoed raw).
  pol::runtime_config odd;
  odd.policy.images = {"ghcr.io/a\tb\n/"};
  CHECK_REFUSED(plan(spec, odd), policy_violation, "('ghcr.io/a\\x09b\\x0a/')");

  spec.image = "corral/x;rm -rf /";
  CHECK_REFUSED(plan(spec, open), invalid_request, "corral/x;rm -rf /");
  spec.image = "UPPER/case";
  CHECK_REFUSED(plan(spec, open), invalid_request, "UPPER/case");
}

// -- plan_sandbox: loosening -----------------------------------------------------------------

TEST_CASE("policy: loosening beyond the policy names the key that would allow it", "[policy]") {
  msg::sandbox_spec network;
  network.network_mode = "bridge";
  CHECK_REFUSED(plan(network), policy_violation, "(policy key networks would allow it)");
  msg::sandbox_spec root;
  root.writable_root = true;
  CHECK_REFUSED(plan(root), policy_violation, "(policy key writable_root would allow it)");
  msg::sandbox_spec cap;
  cap.cap_add = {"net_bind_service"};
  CHECK_REFUSED(plan(cap), policy_violation, "(policy key capabilities would allow it)");
  cap.cap_add = {"CHOWN"};
  pol::runtime_config other;
  other.policy.capabilities = {"NET_RAW"};
  CHECK_REFUSED(plan(cap, other), policy_violation, "capability CHOWN");
  msg::sandbox_spec user;
  user.user = "0";
  CHECK_REFUSED(plan(user), policy_violation, "(policy key users.allow_root would allow it)");
  msg::sandbox_spec none;
  none.network_mode = "none";  // the strictest is always allowed
  pol::runtime_config no_networks;
  no_networks.policy.networks = {};
  CHECK(plan(none, no_networks));
}

TEST_CASE("policy: loosening is explicit and reported", "[policy]") {
  SECTION("network bridge") {
    msg::sandbox_spec spec;
    spec.network_mode = "bridge";
    const auto p = plan(spec, loose());
    REQUIRE(p);
    CHECK(p->create.host.network_mode == "bridge");
    CHECK(has_warning(p->warnings, "network bridge"));
  }
  SECTION("writable root") {
    msg::sandbox_spec spec;
    spec.writable_root = true;
    const auto p = plan(spec, loose());
    REQUIRE(p);
    CHECK_FALSE(p->create.host.readonly_rootfs);
    CHECK(has_warning(p->warnings, "writable root"));
  }
  SECTION("an added capability, in any spelling") {
    for (const char* cap : {"NET_BIND_SERVICE", "net_bind_service", "CAP_NET_BIND_SERVICE"}) {
      msg::sandbox_spec spec;
      spec.cap_add = {cap};
      const auto p = plan(spec, loose());
      REQUIRE(p);
      CHECK(p->create.host.cap_drop == std::vector<std::string>{"ALL"});
      CHECK(p->create.host.cap_add == std::vector<std::string>{"NET_BIND_SERVICE"});
      CHECK(has_warning(p->warnings, "NET_BIND_SERVICE"));
    }
  }
  SECTION("running as root, when the runtime allows it") {
    pol::runtime_config cfg;
    cfg.policy.users.allow_root = true;
    for (const char* user : {"0", "0:0", "1000:0", "0:1000"}) {
      msg::sandbox_spec spec;
      spec.user = user;
      const auto p = plan(spec, cfg);
      INFO("user " << user);
      REQUIRE(p);
      CHECK(has_warning(p->warnings, "root"));
    }
    msg::sandbox_spec spec;
    spec.user = "0";
    CHECK(plan(spec, cfg)->create.user == "0:0");
  }
  SECTION("several at once, each reported") {
    msg::sandbox_spec spec;
    spec.network_mode = "bridge";
    spec.writable_root = true;
    spec.cap_add = {"CHOWN", "NET_RAW"};
    const auto p = plan(spec, loose());
    REQUIRE(p);
    CHECK(p->warnings.size() == 4);
  }
}

TEST_CASE("policy: the sandbox user sets the tmpfs owner", "[policy]") {
  auto tmp_options = [](const std::string& user) {
    msg::sandbox_spec spec;
    spec.user = user;
    const auto p = plan(spec);
    REQUIRE(p);
    return p->create.host.tmpfs.at("/tmp");
  };
  CHECK_THAT(tmp_options("1234:5678"), Catch::EndsWith(",uid=1234,gid=5678"));
  CHECK_THAT(tmp_options("1234"), Catch::EndsWith(",uid=1234,gid=1234"));
  CHECK_THAT(tmp_options(""), Catch::EndsWith(",uid=1000,gid=1000"));

  for (const char* bad : {":1000", "1000:", "a b", "bad;user", "$(id)", "u\n", "1:2:3", "-1",
                          "+1000", "1000 ", "4294967296"}) {
    msg::sandbox_spec spec;
    spec.user = bad;
    INFO("user " << bad);
    CHECK_REFUSED(plan(spec), invalid_request, "user");
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

// -- plan_sandbox: forbidden -----------------------------------------------------------------

TEST_CASE("policy: host namespaces and dangerous capabilities are never granted", "[policy]") {
  // Even a policy built in code that lists them does not grant them.
  auto cfg = loose();
  cfg.policy.networks = {"none", "host", "container:x"};
  cfg.policy.capabilities = {"NET_BIND_SERVICE", "SYS_ADMIN", "ALL", "SYS_PTRACE", "BPF"};
  for (const char* mode : {"host", "container:x", "container:abc123"}) {
    msg::sandbox_spec spec;
    spec.network_mode = mode;
    CHECK_REFUSED(plan(spec, cfg), policy_violation, mode);
    CHECK_REFUSED(plan(spec, cfg), policy_violation, "namespace outside the sandbox");
  }
  for (const char* cap : {"SYS_ADMIN", "sys_admin", "CAP_SYS_ADMIN", "ALL", "all", "SYS_PTRACE",
                          "SYS_MODULE", "NET_ADMIN", "BPF", "DAC_READ_SEARCH"}) {
    msg::sandbox_spec spec;
    spec.cap_add = {"NET_BIND_SERVICE", cap};
    INFO("cap: " << cap);
    const auto err = error_of(plan(spec, cfg));
    CHECK(err == corral_errc::policy_violation);
    CHECK_THAT(msg::describe(err), Catch::Contains("never granted"));
  }
  for (const char* cap : {"", "CAP_", "NET BIND", "X1", "A;B"}) {
    msg::sandbox_spec spec;
    spec.cap_add = {cap};
    INFO("cap: " << cap);
    CHECK(error_of(plan(spec, cfg)) == corral_errc::invalid_request);
  }
}

// -- plan_sandbox: limits --------------------------------------------------------------------

TEST_CASE("policy: limits: zero is the default, nonsense invalid, excess a violation", "[policy]") {
  pol::runtime_config cfg;
  cfg.policy.limits.memory = 2LL << 30;
  cfg.policy.limits.nano_cpus = 2'000'000'000;
  cfg.policy.limits.pids = 1000;

  SECTION("memory") {
    msg::sandbox_spec spec;
    spec.memory_bytes = -1;
    CHECK_REFUSED(plan(spec, cfg), invalid_request, "memory");
    spec.memory_bytes = 1 << 20;
    CHECK_REFUSED(plan(spec, cfg), invalid_request, "1048576");
    spec.memory_bytes = (2LL << 30) + 1;
    CHECK_REFUSED(plan(spec, cfg), policy_violation, "2147483649");
    CHECK_REFUSED(plan(spec, cfg), policy_violation, "(policy key limits.memory would allow it)");
    spec.memory_bytes = 2LL << 30;
    auto p = plan(spec, cfg);
    REQUIRE(p);
    CHECK(p->create.host.memory == 2LL << 30);
    CHECK(p->create.host.memory_swap == 2LL << 30);
    spec.memory_bytes = 6LL << 20;
    CHECK(plan(spec, cfg));
  }
  SECTION("memory swap includes memory") {
    msg::sandbox_spec spec;
    spec.memory_bytes = 1LL << 30;
    spec.memory_swap_bytes = 512LL << 20;
    CHECK_REFUSED(plan(spec, cfg), invalid_request, "memory-swap");
    spec.memory_swap_bytes = -1;
    CHECK_REFUSED(plan(spec, cfg), invalid_request, "memory-swap");
    spec.memory_bytes = 0;  // the 512 MiB default
    spec.memory_swap_bytes = 256LL << 20;
    CHECK_REFUSED(plan(spec, cfg), invalid_request, "memory-swap");
    spec.memory_swap_bytes = 1LL << 30;
    const auto p = plan(spec, cfg);
    REQUIRE(p);
    CHECK(p->create.host.memory == 512LL << 20);
    CHECK(p->create.host.memory_swap == 1LL << 30);
  }
  SECTION("cpus") {
    msg::sandbox_spec spec;
    spec.nano_cpus = -1;
    CHECK_REFUSED(plan(spec, cfg), invalid_request, "cpus");
    spec.nano_cpus = 1000;
    CHECK_REFUSED(plan(spec, cfg), invalid_request, "1000");
    spec.nano_cpus = 3'000'000'000;
    CHECK_REFUSED(plan(spec, cfg), policy_violation, "3000000000");
    CHECK_REFUSED(plan(spec, cfg), policy_violation, "limits.cpus");
    spec.nano_cpus = 500'000'000;
    const auto p = plan(spec, cfg);
    REQUIRE(p);
    CHECK(p->create.host.nano_cpus == 500'000'000);
  }
  SECTION("the defaults come from the policy") {
    cfg.policy.defaults.nano_cpus = 500'000'000;
    cfg.policy.defaults.memory = 64LL << 20;
    cfg.policy.defaults.pids = 32;
    const auto p = plan({}, cfg);
    REQUIRE(p);
    CHECK(p->create.host.nano_cpus == 500'000'000);
    CHECK(p->create.host.memory == 64LL << 20);
    CHECK(p->create.host.pids_limit == 32);
  }
  SECTION("pids") {
    msg::sandbox_spec spec;
    spec.pids_limit = -5;
    CHECK_REFUSED(plan(spec, cfg), invalid_request, "pids");
    spec.pids_limit = 4;
    CHECK_REFUSED(plan(spec, cfg), invalid_request, "pids limit of 4");
    spec.pids_limit = 1001;
    CHECK_REFUSED(plan(spec, cfg), policy_violation, "1001");
    CHECK_REFUSED(plan(spec, cfg), policy_violation, "limits.pids");
    spec.pids_limit = 64;
    const auto p = plan(spec, cfg);
    REQUIRE(p);
    CHECK(p->create.host.pids_limit == 64);
  }
  SECTION("durations and output caps") {
    msg::sandbox_spec spec;
    spec.exec_timeout = -1ms;
    CHECK_REFUSED(plan(spec, cfg), invalid_request, "exec timeout");
    spec.exec_timeout = 1h + 1ms;
    CHECK_REFUSED(plan(spec, cfg), policy_violation, "(policy key limits.timeout would allow it)");
    spec.exec_timeout = 0ms;
    spec.lifetime = -1s;
    CHECK_REFUSED(plan(spec, cfg), invalid_request, "lifetime");
    spec.lifetime = 25h;
    CHECK_REFUSED(plan(spec, cfg), policy_violation, "(policy key limits.lifetime would allow it)");
    spec.lifetime = 0ms;
    spec.idle_limit = 24h * 366;
    CHECK_REFUSED(plan(spec, cfg), invalid_request, "idle limit");
    spec.idle_limit = 0ms;
    spec.max_stdout = (16ULL << 20) + 1;
    CHECK_REFUSED(plan(spec, cfg), policy_violation, "stdout cap");
    CHECK_REFUSED(plan(spec, cfg), policy_violation, "limits.max_output");
    spec.max_stdout = 0;
    spec.max_stderr = (16ULL << 20) + 1;
    CHECK_REFUSED(plan(spec, cfg), policy_violation, "stderr cap");
  }
}

// -- plan_sandbox: env -----------------------------------------------------------------------

TEST_CASE("policy: env keys that redirect traffic or inject code are stripped", "[policy]") {
  msg::sandbox_spec spec;
  spec.env = {{"HTTP_PROXY", "http://evil"},
              {"ld_preload", "/x.so"},
              {"CORRAL_TOKEN", "t"},
              {"FOO", "bar"},
              {"EMPTY", ""},
              {"WITH_EQ", "a=b"}};
  const auto p = plan(spec);
  REQUIRE(p);
  CHECK(p->create.env == std::vector<std::string>{"EMPTY=", "FOO=bar", "WITH_EQ=a=b"});
  CHECK(has_warning(p->warnings, "HTTP_PROXY"));
  CHECK(has_warning(p->warnings, "ld_preload"));
  CHECK(has_warning(p->warnings, "CORRAL_TOKEN"));
  CHECK(p->warnings.size() == 3);
  // The stripped values are not echoed back.
  CHECK_FALSE(has_warning(p->warnings, "http://evil"));
}

TEST_CASE("policy: malformed env keys and NUL values are refused", "[policy]") {
  for (const std::string& key : {"A=B"s, "1X"s, ""s, "A B"s, "A\nB"s, "-A"s, "\xc3\xa9"s}) {
    msg::sandbox_spec spec;
    spec.env = {{key, "v"}};
    INFO("key: " << key);
    const auto err = error_of(plan(spec));
    CHECK(err == corral_errc::invalid_request);
    CHECK_THAT(msg::describe(err), Catch::Contains("env key"));
  }
  msg::sandbox_spec spec;
  spec.env = {{"A=B", "v"}};
  CHECK_REFUSED(plan(spec), invalid_request, "'A=B'");
  spec.env = {{"GOOD", "a\0b"s}};
  CHECK_REFUSED(plan(spec), invalid_request, "GOOD");
  // A reserved key with a bad value is still an error, not a silent strip.
  spec.env = {{"_ok", "v"}, {"HTTP_PROXY", "a\0b"s}};
  CHECK(error_of(plan(spec)) == corral_errc::invalid_request);
}

TEST_CASE("policy: an env allowlist strips every other key", "[policy]") {
  pol::runtime_config cfg;
  cfg.policy.env_allowlist = {"FOO", "HTTP_PROXY"};
  msg::sandbox_spec spec;
  spec.env = {{"FOO", "1"}, {"BAR", "2"}, {"HTTP_PROXY", "x"}};
  const auto p = plan(spec, cfg);
  REQUIRE(p);
  CHECK(p->create.env == std::vector<std::string>{"FOO=1"});
  CHECK(has_warning(p->warnings, "BAR"));
  CHECK(has_warning(p->warnings, "allowlist"));
  // Reserved keys never pass, allowlisted or not.
  CHECK(has_warning(p->warnings, "HTTP_PROXY"));
}

// -- plan_sandbox: workspace -----------------------------------------------------------------

TEST_CASE("policy: a workspace must be a real directory that does not hold the engine",
          "[policy]") {
  temp_dir tmp;

  SECTION("not absolute") {
    CHECK_REFUSED(plan(with_workspace("relative/dir")), invalid_request, "relative/dir");
    CHECK_REFUSED(plan(with_workspace("")), invalid_request, "workspace");
  }
  SECTION("missing") {
    const auto missing = (tmp.path / "nope").string();
    CHECK_REFUSED(plan(with_workspace(missing)), invalid_request, missing);
  }
  SECTION("a file") {
    const auto file = tmp.path / "file.txt";
    std::ofstream{file} << "x";
    CHECK_REFUSED(plan(with_workspace(file.string())), invalid_request, "not a directory");
  }
  SECTION("the host's root") {
    CHECK_REFUSED(plan(with_workspace("/")), policy_violation, "root");
    CHECK_REFUSED(plan(with_workspace("/tmp/..")), policy_violation, "root");
  }
  SECTION("the directory of the engine's socket") {
    CHECK_REFUSED(plan(with_workspace("/var/run")), policy_violation, "socket");
    CHECK_REFUSED(plan(with_workspace("/run")), policy_violation, "socket");
    CHECK_REFUSED(plan(with_workspace("/var/run/../run")), policy_violation, "socket");
  }
  SECTION("a directory that holds the socket, whatever its name") {
    // Wherever the socket really is (on Debian /var/run is a link to /run), mounting an
    // ancestor of it is refused.
    const auto socket_dir = fs::weakly_canonical(engine_socket).parent_path();
    for (auto dir = socket_dir; dir != dir.root_path(); dir = dir.parent_path()) {
      INFO("workspace: " << dir);
      CHECK(error_of(plan(with_workspace(dir.string()))) == corral_errc::policy_violation);
    }
  }
  SECTION("a symlink to the socket's directory") {
    const auto link = tmp.path / "innocent";
    fs::create_directory_symlink("/var/run", link);
    CHECK_REFUSED(plan(with_workspace(link.string())), policy_violation, "innocent");
    const auto chain = tmp.path / "chain";
    fs::create_directory_symlink(link, chain);
    CHECK(error_of(plan(with_workspace(chain.string()))) == corral_errc::policy_violation);
  }
  SECTION("the socket given by the runtime, not only the default one") {
    const auto engine_dir = tmp.path / "engine";
    fs::create_directories(engine_dir);
    std::ofstream{engine_dir / "docker.sock"} << "";
    const auto socket = (engine_dir / "docker.sock").string();
    const auto other = tmp.path / "other";
    fs::create_directories(other);
    auto plan_with = [&](const fs::path& dir) {
      return pol::plan_sandbox({}, "k", with_workspace(dir.string()), socket, now_ms);
    };
    CHECK(error_of(plan_with(engine_dir)) == corral_errc::policy_violation);
    CHECK(error_of(plan_with(tmp.path)) == corral_errc::policy_violation);
    CHECK(plan_with(other));
  }
  SECTION("a real directory is bound read-only at /workspace, with its identity") {
    fs::create_directories(tmp.path / "real");
    const auto p = plan(with_workspace((tmp.path / "real").string()));
    REQUIRE(p);
    CHECK(p->create.host.binds ==
          std::vector<std::string>{(tmp.path / "real").string() + ":/workspace:ro"});
    CHECK(p->create.working_dir == "/workspace");
    struct stat st {};
    REQUIRE(::stat((tmp.path / "real").c_str(), &st) == 0);
    CHECK(p->workspace.device == static_cast<uint64_t>(st.st_dev));
    CHECK(p->workspace.inode == static_cast<uint64_t>(st.st_ino));
    CHECK(p->workspace.host_path == (tmp.path / "real").string());
    CHECK(p->workspace.container_path == "/workspace");
  }
  SECTION("a link to a real directory is refused, naming the link") {
    fs::create_directories(tmp.path / "real");
    const auto link = tmp.path / "via-link";
    fs::create_directory_symlink(tmp.path / "real", link);
    CHECK_REFUSED(plan(with_workspace(link.string())), policy_violation, "via-link");
    CHECK_REFUSED(plan(with_workspace(link.string())), policy_violation, "symbolic link");
    // A link anywhere on the way, not only the last component.
    fs::create_directories(tmp.path / "real" / "sub");
    CHECK_REFUSED(plan(with_workspace((link / "sub").string())), policy_violation, "via-link");
  }
  SECTION("rw, a custom container path and an explicit workdir") {
    auto spec = with_workspace(tmp.path.string(), msg::access_mode::rw);
    spec.workspace.container_path = "/src";
    auto p = plan(spec);
    REQUIRE(p);
    CHECK(p->create.host.binds == std::vector<std::string>{tmp.path.string() + ":/src:rw"});
    CHECK(p->create.working_dir == "/src");
    spec.workdir = "/src/sub";
    p = plan(spec);
    REQUIRE(p);
    CHECK(p->create.working_dir == "/src/sub");
  }
  SECTION("the container path must be absolute and normal") {
    for (const char* bad : {"", "relative", "/", "/a/../b", "/a/./b", "a/../b"}) {
      auto spec = with_workspace(tmp.path.string());
      spec.workspace.container_path = bad;
      INFO("container path: " << bad);
      CHECK(error_of(plan(spec)) == corral_errc::invalid_request);
    }
  }
  SECTION("access none mounts nothing, whatever the path says") {
    const auto p = plan(with_workspace("/var/run", msg::access_mode::none));
    REQUIRE(p);
    CHECK(p->create.host.binds.empty());
    CHECK(p->create.working_dir.empty());
  }
}

TEST_CASE("policy: system directories are refused by resolved prefix", "[policy]") {
  // Each refused whether or not it exists here: the rules apply to the resolved path.
  for (const char* dir : {"/etc",
                          "/etc/ssh",
                          "/usr",
                          "/usr/local/bin",
                          "/usr/bin",
                          "/bin",
                          "/sbin",
                          "/lib",
                          "/lib32",
                          "/lib64",
                          "/libx32",
                          "/bin/../usr/share",
                          "/boot",
                          "/dev",
                          "/dev/shm",
                          "/proc/self",
                          "/sys/fs",
                          "/run/user",
                          "/var",
                          "/var/log",
                          "/var/lib",
                          "/var/spool/cron",
                          "/var/lib/docker/volumes/x/_data",
                          "/var/lib/containerd",
                          "/run/containerd",
                          "/root",
                          "/root/.ssh",
                          "/home",
                          "/opt",
                          "/srv"}) {
    INFO("workspace: " << dir);
    const auto err = error_of(plan(with_workspace(dir, msg::access_mode::rw)));
    CHECK(err == corral_errc::policy_violation);
  }
  CHECK_REFUSED(plan(with_workspace("/usr/local/bin")), policy_violation, "/usr");
  CHECK_REFUSED(plan(with_workspace("/var/log")), policy_violation, "/var");
  CHECK_REFUSED(plan(with_workspace("/root/.ssh")), policy_violation, "/root");
  // Merged /usr: /bin is a link to /usr/bin on Debian 12, refused either way.
  CHECK_REFUSED(plan(with_workspace("/bin")), policy_violation, "/bin");
}

TEST_CASE("policy: the engine's data root is never a workspace, nor anything above it",
          "[policy]") {
  temp_dir tmp;
  fs::create_directories(tmp.path / "state" / "docker" / "volumes");
  fs::create_directories(tmp.path / "state" / "other");
  pol::runtime_config cfg;
  cfg.engine_data_root = (tmp.path / "state" / "docker").string();
  auto at = [&](const fs::path& p) { return plan(with_workspace(p.string()), cfg); };
  CHECK_REFUSED(at(tmp.path / "state" / "docker"), policy_violation, "engine");
  CHECK_REFUSED(at(tmp.path / "state" / "docker" / "volumes"), policy_violation, "engine");
  CHECK_REFUSED(at(tmp.path / "state"), policy_violation, "engine");
  CHECK_REFUSED(at(tmp.path), policy_violation, "engine");
  CHECK(at(tmp.path / "state" / "other"));
}

TEST_CASE("policy: workspaces below /var/tmp and home directories are allowed", "[policy]") {
  SECTION("/var/tmp: below it yes, the shared directory itself no") {
    std::string pattern = "/var/tmp/corral-policy-XXXXXX";
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    const auto p = plan(with_workspace(pattern, msg::access_mode::rw));
    CHECK(p);
    std::error_code ec;
    fs::remove_all(pattern, ec);
    CHECK_REFUSED(plan(with_workspace("/var/tmp")), policy_violation, "writable");
    // Not refused by location: only because it is not there.
    CHECK_REFUSED(plan(with_workspace("/var/tmp/corral-no-such-dir")), invalid_request,
                  "does not exist");
  }
  SECTION("a project below /home") {
    CHECK_REFUSED(plan(with_workspace("/home/corral-nobody/project")), invalid_request,
                  "does not exist");
    if (fs::is_directory("/home")) {
      std::string pattern = "/home/corral-policy-XXXXXX";
      REQUIRE(::mkdtemp(pattern.data()) != nullptr);
      fs::create_directories(fs::path(pattern) / "project");
      fs::permissions(fs::path(pattern) / "project", fs::perms(0755));
      CHECK(plan(with_workspace(pattern + "/project", msg::access_mode::rw)));
      CHECK(plan(with_workspace(pattern, msg::access_mode::rw)));
      std::error_code ec;
      fs::remove_all(pattern, ec);
    }
  }
}

TEST_CASE("policy: no workspace component may be writable by others", "[policy]") {
  temp_dir tmp;
  fs::create_directories(tmp.path / "shared" / "project");
  SECTION("a group-writable component") {
    fs::permissions(tmp.path / "shared", fs::perms(0775));
    CHECK_REFUSED(plan(with_workspace((tmp.path / "shared" / "project").string())),
                  policy_violation, (tmp.path / "shared").string() + "' is writable");
  }
  SECTION("an other-writable workspace itself") {
    fs::permissions(tmp.path / "shared" / "project", fs::perms(0757));
    CHECK_REFUSED(plan(with_workspace((tmp.path / "shared" / "project").string())),
                  policy_violation, "writable by its group or others");
  }
  SECTION("a sticky directory is fine above what is ours, not above someone else's") {
    fs::permissions(tmp.path / "shared", fs::perms(01777));
    CHECK(plan(with_workspace((tmp.path / "shared" / "project").string())));
    // The sticky directory itself is no workspace: others may add to it and rename in it.
    CHECK_REFUSED(plan(with_workspace((tmp.path / "shared").string())), policy_violation,
                  "writable");
    if (::geteuid() == 0) {
      REQUIRE(::chown((tmp.path / "shared" / "project").c_str(), 12345, 12345) == 0);
      CHECK_REFUSED(plan(with_workspace((tmp.path / "shared" / "project").string())),
                    policy_violation, (tmp.path / "shared").string());
    }
  }
  SECTION("'.' and '..' are not taken apart: the real path is wanted") {
    CHECK_REFUSED(plan(with_workspace((tmp.path / "shared" / ".." / "shared").string())),
                  invalid_request, "'..'");
    CHECK_REFUSED(plan(with_workspace((tmp.path / "." / "shared").string())), invalid_request,
                  "'.'");
  }
}

TEST_CASE("policy: the workspace mount is verified against the checked directory", "[policy]") {
  temp_dir tmp;
  fs::create_directories(tmp.path / "ws");
  fs::create_directories(tmp.path / "other");
  auto p = plan(with_workspace((tmp.path / "ws").string()));
  REQUIRE(p);
  // Our own process: /proc/<pid>/root is "/", so the container path may be the host path.
  auto id = p->workspace;
  id.container_path = (tmp.path / "ws").string();
  const auto pid = static_cast<int64_t>(::getpid());
  CHECK_FALSE(pol::verify_workspace_mount(id, pid));

  // Swapped: another directory now at that path.
  fs::rename(tmp.path / "ws", tmp.path / "ws-old");
  fs::rename(tmp.path / "other", tmp.path / "ws");
  CHECK_REFUSED(pol::verify_workspace_mount(id, pid), policy_violation, "changed");
  // Swapped for a link to the original: still another path, but the same directory.
  fs::remove(tmp.path / "ws");
  fs::create_directory_symlink(tmp.path / "ws-old", tmp.path / "ws");
  CHECK_FALSE(pol::verify_workspace_mount(id, pid));
  // Cannot look: that is a refusal too.
  fs::remove(tmp.path / "ws");
  CHECK_REFUSED(pol::verify_workspace_mount(id, pid), policy_violation, "could not be verified");
  CHECK_REFUSED(pol::verify_workspace_mount(id, 0), policy_violation, "no process");
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

// -- plan_sandbox: labels, tmpfs, command ----------------------------------------------------

TEST_CASE("policy: the corral. label namespace is reserved", "[policy]") {
  for (const char* key : {"corral.key", "corral.managed-by", "corral.anything", ""}) {
    msg::sandbox_spec spec;
    spec.labels = {{key, "forged"}};
    INFO("label: " << key);
    const auto err = error_of(plan(spec));
    CHECK(err == corral_errc::policy_violation);
    CHECK_THAT(msg::describe(err), Catch::Contains("'"s + key + "'"));
  }
  msg::sandbox_spec spec;
  spec.labels = {{"corralx", "1"}, {"org.corral.x", "2"}};
  const auto p = plan(spec);
  REQUIRE(p);
  CHECK(p->create.labels.at("corralx") == "1");
  CHECK(p->create.labels.at("org.corral.x") == "2");
}

TEST_CASE("policy: tmpfs mounts are never executable or setuid", "[policy]") {
  for (const char* options :
       {"exec", "suid", "nosuid,exec", "mode=1777,suid", "rw,exec,size=1", "mode=1777 exec"}) {
    msg::sandbox_spec spec;
    spec.tmpfs = {{"/scratch", 0, options}};
    INFO("options: " << options);
    const auto err = error_of(plan(spec));
    CHECK(err == corral_errc::policy_violation);
    CHECK_THAT(msg::describe(err), Catch::Contains("/scratch"));
  }
  {
    // A control character is refused before the options are read at all.
    msg::sandbox_spec spec;
    spec.tmpfs = {{"/scratch", 0, "a\nb"}};
    CHECK_REFUSED(plan(spec), invalid_request, "tmpfs options[0]");
  }
  SECTION("harmless options are appended after corral's own") {
    msg::sandbox_spec spec;
    spec.tmpfs = {{"/scratch", 1 << 20, "mode=1777"}, {"/cache", 0, "noexec"}};
    const auto p = plan(spec);
    REQUIRE(p);
    const auto& t = p->create.host.tmpfs;
    CHECK(t.size() == 2);  // a spec's tmpfs list replaces the default /tmp
    CHECK(t.at("/scratch") == "rw,noexec,nosuid,nodev,size=1048576,uid=1000,gid=1000,mode=1777");
    CHECK(t.at("/cache") == "rw,noexec,nosuid,nodev,size=67108864,uid=1000,gid=1000,noexec");
  }
  SECTION("options that would undo corral's own are refused") {
    for (const char* options : {"size=100g", "dev", "uid=0", "gid=0", "exec", "suid", "mode=abc"}) {
      msg::sandbox_spec spec;
      spec.tmpfs = {{"/scratch", 0, options}};
      INFO("options: " << options);
      CHECK_REFUSED(plan(spec), policy_violation, "/scratch");
    }
  }
  SECTION("path and size are checked") {
    for (const char* path : {"", "tmp", "/", "/a/../b"}) {
      msg::sandbox_spec spec;
      spec.tmpfs = {{path, 0, ""}};
      INFO("path: " << path);
      CHECK(error_of(plan(spec)) == corral_errc::invalid_request);
    }
    msg::sandbox_spec spec;
    spec.tmpfs = {{"/scratch", -1, ""}};
    CHECK_REFUSED(plan(spec), invalid_request, "/scratch");
    spec.tmpfs = {{"/scratch", (4LL << 30) + 1, ""}};
    CHECK_REFUSED(plan(spec), invalid_request, "4 GiB");
  }
}

TEST_CASE("policy: command arguments may not hold NUL bytes", "[policy]") {
  msg::sandbox_spec spec;
  spec.command = {"sh", "-c", "echo a\0b"s};
  CHECK_REFUSED(plan(spec), invalid_request, "NUL");
}

// -- plan_sandbox: spec hash -----------------------------------------------------------------

TEST_CASE("policy: the spec hash is stable and tells specs apart", "[policy]") {
  auto hash = [](const msg::sandbox_spec& spec, const std::string& key = "k1") {
    pol::runtime_config cfg;
    cfg.policy.images = {"*"};
    cfg.policy.writable_root = true;
    const auto p = plan(spec, cfg, key);
    REQUIRE(p);
    return p->spec_hash;
  };
  msg::sandbox_spec base;
  base.image = "alpine:3.19";
  base.env = {{"A", "1"}};
  base.memory_bytes = 1LL << 30;

  CHECK(hash(base) == hash(base));
  CHECK(hash(base) == hash(msg::sandbox_spec{base}));
  // The key and the time are labels of their own, not part of the spec.
  CHECK(hash(base, "k1") == hash(base, "k2"));
  CHECK(pol::plan_sandbox({}, "k", {}, engine_socket, 1)->spec_hash ==
        pol::plan_sandbox({}, "k", {}, engine_socket, 2)->spec_hash);

  std::vector<msg::sandbox_spec> variants(10, base);
  variants[0].image = "alpine:3.20";
  variants[1].env["A"] = "2";
  variants[2].memory_bytes = 2LL << 30;
  variants[3].workspace = {"/nonexistent", "/workspace", msg::access_mode::none};
  variants[4].exec_timeout = 5s;
  variants[5].writable_root = true;
  variants[6].command = {"sleep", "1"};
  variants[7].labels = {{"a", "b"}};
  variants[8].tmpfs = {{"/tmp", 1 << 20, ""}};
  variants[9].idle_limit = 1min;
  std::vector<std::string> hashes{hash(base)};
  for (const auto& v : variants) hashes.push_back(hash(v));
  std::sort(hashes.begin(), hashes.end());
  CHECK(std::adjacent_find(hashes.begin(), hashes.end()) == hashes.end());
}

TEST_CASE("policy: the spec hash tells workspace access modes apart", "[policy]") {
  temp_dir tmp;
  auto ro = with_workspace(tmp.path.string(), msg::access_mode::ro);
  auto rw = with_workspace(tmp.path.string(), msg::access_mode::rw);
  const auto a = plan(ro);
  const auto b = plan(rw);
  REQUIRE(a);
  REQUIRE(b);
  CHECK(a->spec_hash != b->spec_hash);
}

// -- plan_exec -------------------------------------------------------------------------------

TEST_CASE("policy: plan_exec takes its defaults from the sandbox", "[policy]") {
  const pol::runtime_config cfg;
  const auto sbx = sandbox_for_exec();
  const auto p = pol::plan_exec(cfg, sbx, request({"echo", "hi"}));
  REQUIRE(p);
  CHECK(p->create.cmd == std::vector<std::string>{"echo", "hi"});
  CHECK(p->create.user == "1234:1234");
  CHECK(p->create.working_dir.empty());
  CHECK(p->create.env.empty());
  CHECK_FALSE(p->create.attach_stdin);
  CHECK(p->create.attach_stdout);
  CHECK(p->create.attach_stderr);
  CHECK_FALSE(p->create.tty);
  CHECK(p->timeout == 90s);
  CHECK(p->max_stdout == 1000);
  CHECK(p->max_stderr == 2000);
  CHECK(p->warnings.empty());
}

TEST_CASE("policy: plan_exec applies the call's own settings", "[policy]") {
  const pol::runtime_config cfg;
  auto r = request({"cat"});
  r.timeout = 1500ms;
  r.max_stdout = 10;
  r.max_stderr = 20;
  r.has_stdin = true;
  r.workdir = "/workspace/sub";
  const auto p = pol::plan_exec(cfg, sandbox_for_exec(), r);
  REQUIRE(p);
  CHECK(p->timeout == 1500ms);
  CHECK(p->max_stdout == 10);
  CHECK(p->max_stderr == 20);
  CHECK(p->create.attach_stdin);
  CHECK(p->create.working_dir == "/workspace/sub");
}

TEST_CASE("policy: plan_exec refuses bad requests", "[policy]") {
  const pol::runtime_config cfg;
  const auto sbx = sandbox_for_exec();
  CHECK_REFUSED(pol::plan_exec(cfg, sbx, request({})), invalid_request, "empty command");
  CHECK_REFUSED(pol::plan_exec(cfg, sbx, request({"echo", "a\0b"s})), invalid_request, "NUL");

  auto r = request({"true"});
  r.timeout = -1ms;
  CHECK_REFUSED(pol::plan_exec(cfg, sbx, r), invalid_request, "negative");
  r.timeout = 1h + 1ms;
  CHECK_REFUSED(pol::plan_exec(cfg, sbx, r), policy_violation, "1h");
  CHECK_REFUSED(pol::plan_exec(cfg, sbx, r), policy_violation, "limits.timeout");
  r.timeout = 1h;
  CHECK(pol::plan_exec(cfg, sbx, r));

  r = request({"true"});
  r.max_stdout = (16ULL << 20) + 1;
  CHECK_REFUSED(pol::plan_exec(cfg, sbx, r), policy_violation, "stdout cap");
  r.max_stdout = 0;
  r.max_stderr = (16ULL << 20) + 1;
  CHECK_REFUSED(pol::plan_exec(cfg, sbx, r), policy_violation, "limits.max_output");

  r = request({"true"});
  r.workdir = "relative";
  CHECK_REFUSED(pol::plan_exec(cfg, sbx, r), invalid_request, "relative");

  r = request({"true"});
  r.env = {{"1X", "v"}};
  CHECK_REFUSED(pol::plan_exec(cfg, sbx, r), invalid_request, "'1X'");
}

TEST_CASE("policy: plan_exec strips reserved env keys per call", "[policy]") {
  pol::runtime_config cfg;
  auto r = request({"env"});
  r.env = {{"HTTPS_PROXY", "http://evil"}, {"TOKEN", "s3cret"}, {"LD_PRELOAD", "/x.so"}};
  auto p = pol::plan_exec(cfg, sandbox_for_exec(), r);
  REQUIRE(p);
  CHECK(p->create.env == std::vector<std::string>{"TOKEN=s3cret"});
  CHECK(has_warning(p->warnings, "HTTPS_PROXY"));
  CHECK(has_warning(p->warnings, "LD_PRELOAD"));
  CHECK(p->warnings.size() == 2);

  cfg.policy.env_allowlist = {"OTHER"};
  p = pol::plan_exec(cfg, sandbox_for_exec(), r);
  REQUIRE(p);
  CHECK(p->create.env.empty());
  CHECK(has_warning(p->warnings, "TOKEN"));
}

// -- request size bounds ---------------------------------------------------------------------

TEST_CASE("policy: oversized requests are refused, not buffered", "[policy]") {
  pol::runtime_config cfg;
  cfg.max_argv_bytes = 16;  // each argument counts its size plus one
  cfg.max_env_bytes = 16;   // each pair counts key, value and two
  cfg.max_stdin_bytes = 4;

  SECTION("sandbox env, command, setup command and labels") {
    msg::sandbox_spec spec;
    spec.env = {{"A", std::string(13, 'v')}};  // exactly 16
    spec.command = {"0123456789", "abcd"};     // exactly 16
    spec.setup_command = spec.command;
    spec.labels = {{"k", std::string(13, 'v')}};
    REQUIRE(plan(spec, cfg));

    auto big = spec;
    big.env["A"] += "v";
    CHECK_REFUSED(plan(big, cfg), invalid_request, "env of 17 bytes");
    big = spec;
    big.command.back() += "e";
    CHECK_REFUSED(plan(big, cfg), invalid_request, "command of 17 bytes");
    big = spec;
    big.setup_command.push_back("");
    CHECK_REFUSED(plan(big, cfg), invalid_request, "setup command of 17 bytes");
    big = spec;
    big.labels["k"] += "v";
    CHECK_REFUSED(plan(big, cfg), invalid_request, "labels of 17 bytes");
  }
  SECTION("exec argv, env and stdin") {
    const auto sbx = plan({}, cfg);
    REQUIRE(sbx);
    auto r = request({"0123456789", "abcd"});
    r.env = {{"A", std::string(13, 'v')}};
    r.stdin_data = "1234";
    r.has_stdin = true;
    REQUIRE(pol::plan_exec(cfg, *sbx, r));

    auto big = r;
    big.argv.back() += "e";
    CHECK_REFUSED(pol::plan_exec(cfg, *sbx, big), invalid_request, "exec argv of 17 bytes");
    big = r;
    big.env["A"] += "v";
    CHECK_REFUSED(pol::plan_exec(cfg, *sbx, big), invalid_request, "exec env of 17 bytes");
    big = r;
    big.stdin_data += "5";
    CHECK_REFUSED(pol::plan_exec(cfg, *sbx, big), invalid_request, "exec stdin of 5 bytes");
  }
  SECTION("the defaults allow ordinary requests") {
    const pol::runtime_config defaults;
    CHECK(defaults.max_argv_bytes == 1u << 20);
    CHECK(defaults.max_env_bytes == 256u << 10);
    CHECK(defaults.max_stdin_bytes == 64u << 20);
  }
}

// -- the policy's workspace roots ------------------------------------------------------------

TEST_CASE("policy: workspaces only below the policy's workspace roots", "[policy]") {
  temp_dir tmp;
  fs::create_directory(tmp.path / "inside");
  fs::create_directory(tmp.path / "ro");
  temp_dir elsewhere;
  SECTION("no roots (a node's default): no workspace at all") {
    pol::runtime_config cfg;
    cfg.policy = pol::policy::node_default();
    CHECK_REFUSED(plan(with_workspace(tmp.path.string()), cfg), policy_violation,
                  "(policy key workspace_roots would allow it)");
  }
  SECTION("below a root, and not outside it") {
    pol::runtime_config cfg;
    cfg.policy.workspace_roots = {{tmp.path.string(), true}};
    CHECK(plan(with_workspace((tmp.path / "inside").string(), msg::access_mode::rw), cfg));
    CHECK(plan(with_workspace(tmp.path.string()), cfg));
    CHECK_REFUSED(plan(with_workspace(elsewhere.path.string()), cfg), policy_violation,
                  "outside every workspace root (" + tmp.path.string() + ")");
    CHECK_REFUSED(plan(with_workspace(elsewhere.path.string()), cfg), policy_violation,
                  "(policy key workspace_roots would allow it)");
  }
  SECTION("a read-only root allows only :ro") {
    pol::runtime_config cfg;
    cfg.policy.workspace_roots = {{elsewhere.path.string(), true},
                                  {(tmp.path / "ro").string(), false}};
    CHECK(plan(with_workspace((tmp.path / "ro").string(), msg::access_mode::ro), cfg));
    CHECK_REFUSED(plan(with_workspace((tmp.path / "ro").string(), msg::access_mode::rw), cfg),
                  policy_violation, "(policy key workspace_roots[1].writable would allow it)");
  }
  SECTION("a root of / still never allows the host's system directories") {
    pol::runtime_config cfg;
    cfg.policy.workspace_roots = {{"/", true}};
    CHECK_REFUSED(plan(with_workspace("/etc"), cfg), policy_violation, "system directories");
  }
}
