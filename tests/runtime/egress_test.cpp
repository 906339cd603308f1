// Egress on the real engine: a sandbox (network none) reaches an allowed host only through
// corral's proxy, by way of its agent on 127.0.0.1:3128; the credential is added outside and
// never enters it. The upstreams are servers of this test on the host's loopback, named
// through the policy's `resolve` overrides and allowed by `allow_private_cidrs`.
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cli_process.hpp"
#include "http_upstream.hpp"
#include "runtime_fixture.hpp"

using namespace corral::runtime_tests;

namespace {

constexpr const char* secret = "s3cr3t-egress-token-5b1e";

std::string temp_dir() {
  char tmpl[] = "/tmp/corral-egress-XXXXXX";
  const char* dir = ::mkdtemp(tmpl);
  REQUIRE(dir != nullptr);
  return dir;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A self-signed certificate for the test's names (its own CA: the policy's upstream_ca), made
// with the openssl command, and a server context holding it.
SSL_CTX* tls_upstream_context(const std::string& dir) {
  const std::string cmd =
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
      "-subj /CN=up.test -addext subjectAltName=DNS:up.test,DNS:a.ok.test,DNS:other.test "
      "-keyout " +
      dir + "/up.key -out " + dir + "/up.pem 2>/dev/null";
  REQUIRE(std::system(cmd.c_str()) == 0);
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  REQUIRE(SSL_CTX_use_certificate_chain_file(ctx, (dir + "/up.pem").c_str()) == 1);
  REQUIRE(SSL_CTX_use_PrivateKey_file(ctx, (dir + "/up.key").c_str(), SSL_FILETYPE_PEM) == 1);
  return ctx;
}

// The fixture's runtime with an egress policy: `up.test` and `other.test` both name the
// upstream; only `up.test` and `*.ok.test` are allowed, `no.ok.test` is denied, `up.test` has
// a credential.
struct egress_fixture : runtime_fixture {
  egress_fixture() : dir(temp_dir()), tls_context(tls_upstream_context(dir)), tls_up(tls_context) {
    std::ofstream(dir + "/secret") << secret << "\n";
    auto& eg = rt.policy.egress;
    eg.allow = {"up.test", "*.ok.test"};
    eg.deny = {"no.ok.test"};
    eg.ports = {up.port(), tls_up.port()};
    eg.upstream_ca = dir + "/up.pem";
    eg.allow_private_cidrs = {"127.0.0.0/8"};
    eg.resolve = {{"up.test", "127.0.0.1"},
                  {"other.test", "127.0.0.1"},
                  {"a.ok.test", "127.0.0.1"},
                  {"no.ok.test", "127.0.0.1"},
                  // An allowed name that resolves to a private address outside the allowed
                  // range: refused after resolution, before any connection is tried.
                  {"priv.ok.test", "10.1.2.3"}};
    eg.credentials = {{"up.test", "X-Api-Key", dir + "/secret", ""}};
    eg.max_bytes_per_sandbox = 256 << 10;
    rt.egress_options.ca_dir = dir + "/ca";
    rt.egress_options.log_path = dir + "/egress.jsonl";
  }
  ~egress_fixture() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
    SSL_CTX_free(tls_context);
  }
  std::string url(const std::string& host, const std::string& path = "/hello") const {
    return "http://" + host + ":" + std::to_string(up.port()) + path;
  }
  upstream up;
  std::string dir;
  SSL_CTX* tls_context;
  upstream tls_up;
};

sandbox_spec with_egress(std::vector<std::string> hosts) {
  sandbox_spec spec;
  spec.allow_hosts = std::move(hosts);
  return spec;
}

// -- processes, seen from the host -------------------------------------------------------

pid_t parent_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("PPid:", 0) == 0) return static_cast<pid_t>(std::stol(line.substr(5)));
  return 0;
}

// The host pid of the process below `root` whose command line is `argv`, if there is one.
std::optional<pid_t> descendant_running(pid_t root, const std::vector<std::string>& argv) {
  std::string cmdline;
  for (const auto& a : argv) cmdline += a + '\0';
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const auto name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const auto pid = static_cast<pid_t>(std::stol(name));
    if (read_all("/proc/" + name + "/cmdline") != cmdline) continue;
    for (pid_t up = parent_of(pid); up > 1; up = parent_of(up))
      if (up == root) return pid;
  }
  return std::nullopt;
}

// What a process's descriptors point at ("pipe:[…]", "socket:[…]", "/dev/null", …); empty if
// they cannot be read.
std::vector<std::string> descriptors_of(pid_t pid) {
  std::vector<std::string> out;
  std::error_code ec;
  for (std::filesystem::directory_iterator it("/proc/" + std::to_string(pid) + "/fd", ec), end;
       !ec && it != end; it.increment(ec)) {
    std::error_code link_ec;
    const auto target = std::filesystem::read_symlink(it->path(), link_ec);
    out.push_back(link_ec ? "?" : target.string());
  }
  return out;
}

}  // namespace

TEST_CASE_METHOD(egress_fixture,
                 "egress: an allowed host answers through the proxy, with the "
                 "credential added outside",
                 "[runtime][egress]") {
  REQUIRE_OK(acquire("web", with_egress({"up.test", "*.ok.test"})));
  auto r = exec("web", sh("wget -q -O - --header 'X-Api-Key: forged' " + url("up.test")));
  REQUIRE_OK(r);
  INFO("stderr: " << r->stderr_data);
  CHECK(r->exit_code == 0);
  CHECK(r->stdout_data == "hello from upstream\n");
  const auto heads = up.heads();
  REQUIRE(heads.size() == 1);
  INFO(heads[0]);
  // The sandbox's own header with that name is replaced, never forwarded.
  CHECK(heads[0].find(std::string("X-Api-Key: ") + secret + "\r\n") != std::string::npos);
  CHECK(heads[0].find("forged") == std::string::npos);
  CHECK(heads[0].rfind("GET /hello HTTP/1.1\r\n", 0) == 0);

  // A wildcard entry: a name below it answers too (without the credential).
  r = exec("web", sh("wget -q -O - " + url("a.ok.test")));
  REQUIRE_OK(r);
  CHECK(r->stdout_data == "hello from upstream\n");
  CHECK(up.heads().back().find(secret) == std::string::npos);

  // Every decision is a JSON line; none holds the secret.
  const auto log = read_all(dir + "/egress.jsonl");
  INFO(log);
  CHECK(log.find("\"host\":\"up.test\"") != std::string::npos);
  CHECK(log.find("\"decision\":\"allowed\"") != std::string::npos);
  CHECK(log.find(secret) == std::string::npos);
}

TEST_CASE_METHOD(egress_fixture,
                 "egress: denied names, IP literals, private addresses and DNS "
                 "all fail inside the sandbox",
                 "[runtime][egress]") {
  REQUIRE_OK(acquire("web", with_egress({"up.test", "*.ok.test"})));
  const std::size_t before = up.heads().size();
  for (const auto& target : {url("other.test"), url("no.ok.test"), url("127.0.0.1"),
                             url("priv.ok.test"), url("up.test:1") /* bad port */}) {
    INFO(target);
    auto r = exec("web", sh("wget -q -O - '" + target + "'"));
    REQUIRE_OK(r);
    CHECK(r->exit_code != 0);
    CHECK(r->stdout_data.empty());
  }
  CHECK(up.heads().size() == before);  // nothing reached the upstream
  // Without the proxy there is no network at all: no DNS, no route.
  auto r = exec("web", sh("wget -q -Y off -O - " + url("up.test") +
                          "; echo rc=$?; "
                          "nslookup up.test 2>&1; echo rc=$?"));
  REQUIRE_OK(r);
  INFO(r->stdout_data << r->stderr_data);
  CHECK(r->stdout_data.find("hello") == std::string::npos);
  CHECK(r->stdout_data.find("rc=0") == std::string::npos);
  const auto log = read_all(dir + "/egress.jsonl");
  INFO(log);
  CHECK(log.find("\"host\":\"other.test\"") != std::string::npos);
  CHECK(log.find("\"decision\":\"denied\"") != std::string::npos);
  CHECK(log.find("10.1.2.3 is a private address") != std::string::npos);
}

TEST_CASE_METHOD(egress_fixture,
                 "egress: the secret is nowhere in the sandbox, and the byte "
                 "limit cuts a transfer",
                 "[runtime][egress]") {
  REQUIRE_OK(acquire("web", with_egress({"up.test"})));
  REQUIRE_OK(exec("web", sh("wget -q -O /dev/null " + url("up.test"))));
  // Every environment and file a command can read, while the proxy holds the credential.
  auto r = exec("web", sh(std::string("cat /proc/[0-9]*/environ 2>/dev/null | grep -c ") + secret +
                          "; grep -rl " + secret +
                          " / --exclude-dir=proc --exclude-dir=sys 2>/dev/null | head -3; env"));
  REQUIRE_OK(r);
  INFO(r->stdout_data);
  CHECK(r->stdout_data.find(secret) == std::string::npos);
  CHECK(r->stdout_data.rfind("0\n", 0) == 0);
  CHECK(r->stdout_data.find("HTTP_PROXY=http://127.0.0.1:3128") != std::string::npos);
  // 1 MiB against a 256 KiB budget for the whole sandbox.
  r = exec("web", sh("wget -q -O - " + url("up.test", "/big") + " | wc -c"));
  REQUIRE_OK(r);
  INFO(r->stdout_data << r->stderr_data);
  CHECK(std::stoul(r->stdout_data) < (256u << 10));
  const auto log = read_all(dir + "/egress.jsonl");
  CHECK(log.find("byte limit") != std::string::npos);
}

TEST_CASE_METHOD(egress_fixture,
                 "egress: off, nothing listens and no socket exists; another "
                 "sandbox's socket is out of reach",
                 "[runtime][egress]") {
  REQUIRE_OK(acquire("closed"));
  REQUIRE_OK(acquire("open", with_egress({"up.test"})));
  auto r = exec("closed", sh("env | grep -ci proxy; "
                             "http_proxy=http://127.0.0.1:3128 wget -q -O - " +
                             url("up.test") + "; echo rc=$?"));
  REQUIRE_OK(r);
  INFO(r->stdout_data << r->stderr_data);
  CHECK(r->stdout_data.rfind("0\n", 0) == 0);
  CHECK(r->stdout_data.find("rc=0") == std::string::npos);
  CHECK(r->stdout_data.find("hello") == std::string::npos);
  // On the host: the open sandbox's run directory holds the proxy's socket and the bundle;
  // the closed one's holds neither.
  std::map<std::string, std::string> run_dirs;
  for (const auto& c : containers()) {
    const auto id = c.labels.find(corral::actors::label_sandbox_id);
    const auto key = c.names.empty() ? std::string() : c.names[0];
    if (id != c.labels.end()) run_dirs[key] = rt.agent_run_root + "/" + id->second;
  }
  REQUIRE(run_dirs.size() == 2);
  int with_socket = 0;
  for (const auto& [name, run_dir] : run_dirs) {
    const bool has = std::filesystem::exists(run_dir + "/egress.sock");
    with_socket += has ? 1 : 0;
    CHECK(has == std::filesystem::exists(run_dir + "/ca.pem"));
  }
  CHECK(with_socket == 1);
  // Inside, a sandbox sees its own run directory only: the one egress socket it can name is
  // its own (the same inode as on the host), and the host's run root is not there at all.
  REQUIRE_OK(acquire("other", with_egress({"up.test"})));
  std::map<std::string, uint64_t> host_inodes;
  for (const auto& c : containers()) {
    const auto id = c.labels.find(corral::actors::label_sandbox_id);
    struct stat sb {};
    if (id != c.labels.end() &&
        ::stat((rt.agent_run_root + "/" + id->second + "/egress.sock").c_str(), &sb) == 0)
      host_inodes[c.names.empty() ? std::string() : c.names[0]] = sb.st_ino;
  }
  REQUIRE(host_inodes.size() == 2);
  for (const char* key : {"open", "other"}) {
    r = exec(key, sh("stat -c %i /corral/run/egress.sock; ls " + rt.agent_run_root +
                     " >/dev/null 2>&1; echo rc=$?"));
    REQUIRE_OK(r);
    INFO(key << ": " << r->stdout_data << r->stderr_data);
    const auto inode = std::stoull(r->stdout_data);
    int matches = 0;
    for (const auto& [name, host_inode] : host_inodes) {
      if (host_inode != inode) continue;
      ++matches;
      CHECK(name.find(key) != std::string::npos);  // its own claim name holds its key
    }
    CHECK(matches == 1);
    CHECK(r->stdout_data.find("rc=0") == std::string::npos);
  }
  REQUIRE_OK(release("other"));
  // Released, the sandbox's socket goes with it.
  REQUIRE_OK(release("open"));
  for (const auto& [name, run_dir] : run_dirs)
    CHECK_FALSE(std::filesystem::exists(run_dir + "/egress.sock"));
}

TEST_CASE_METHOD(egress_fixture,
                 "egress: a host outside the policy is refused before any "
                 "sandbox is made",
                 "[runtime][egress]") {
  auto info = acquire("web", with_egress({"other.test"}));
  REQUIRE_FALSE(info);
  CHECK(info.error() == corral_errc::policy_violation);
  CHECK_THAT(describe(info.error()), Catch::Contains("egress.allow"));
  CHECK(containers().empty());
}

TEST_CASE_METHOD(egress_fixture,
                 "egress: HTTPS through CONNECT: the credential is added behind "
                 "corral's CA, other hosts are tunnelled untouched, a wrong SNI "
                 "closes the tunnel",
                 "[runtime][egress]") {
  const probe_dir probe(CORRAL_EGRESS_PROBE_PATH);
  auto spec = probe.spec(rt);
  spec.allow_hosts = {"up.test", "*.ok.test"};
  REQUIRE_OK(acquire("tls", spec));
  const std::string port = std::to_string(tls_up.port());
  // The credential's host: TLS ends at the proxy, under a certificate of corral's CA that the
  // sandbox trusts through /corral/run/ca.pem; the upstream gets the secret, not the forgery.
  auto r = exec("tls", sh("/workspace/probe --ca /corral/run/ca.pem --header 'X-Api-Key: "
                          "forged' up.test " +
                          port + " up.test /hello"));
  REQUIRE_OK(r);
  INFO(r->stdout_data << r->stderr_data);
  CHECK(r->exit_code == 0);
  CHECK(r->stdout_data == "hello from upstream\n");
  auto heads = tls_up.heads();
  REQUIRE(heads.size() == 1);
  CHECK(heads[0].find(std::string("X-Api-Key: ") + secret + "\r\n") != std::string::npos);
  CHECK(heads[0].find("forged") == std::string::npos);
  // Another allowed host: tunnelled as it is (the upstream's own certificate; the probe does
  // not check it, having no copy of the test's CA), the sandbox's header reaches it unchanged.
  r = exec("tls", sh("/workspace/probe --header 'X-Api-Key: mine' a.ok.test " + port +
                     " a.ok.test /hello"));
  REQUIRE_OK(r);
  INFO(r->stdout_data << r->stderr_data);
  CHECK(r->exit_code == 0);
  heads = tls_up.heads();
  REQUIRE(heads.size() == 2);
  CHECK(heads[1].find("X-Api-Key: mine\r\n") != std::string::npos);
  CHECK(heads[1].find(secret) == std::string::npos);
  // CONNECT to an allowed name, TLS naming another: the tunnel closes before the upstream.
  r = exec("tls", sh("/workspace/probe a.ok.test " + port + " other.test /hello"));
  REQUIRE_OK(r);
  INFO(r->stderr_data);
  CHECK(r->exit_code == 3);
  // CONNECT to a denied name: refused with a status, nothing resolved or reached.
  r = exec("tls", sh("/workspace/probe no.ok.test " + port + " no.ok.test /hello"));
  REQUIRE_OK(r);
  CHECK(r->exit_code == 2);
  CHECK(tls_up.heads().size() == 2);
}

TEST_CASE_METHOD(egress_fixture,
                 "egress through the CLI: corral run --allow-host reaches the "
                 "host with the credential; corral create needs a node",
                 "[runtime][egress][cli]") {
  const std::string policy = dir + "/policy.json";
  std::ofstream(policy) << R"({"egress": {"allow": ["up.test"], "ports": [)" << up.port()
                        << R"(], "allow_private_cidrs": ["127.0.0.0/8"],
     "resolve": {"up.test": "127.0.0.1"},
     "credentials": [{"host": "up.test", "header": "X-Api-Key", "value_file": ")"
                        << dir << R"(/secret"}]}})";
  const auto ran = run_cli({"--policy", policy, "run", "--allow-host", "up.test", "--", "wget",
                            "-q", "-O", "-", url("up.test")},
                           rt.name);
  INFO(ran);
  CHECK(ran.code == 0);
  CHECK(ran.out == "hello from upstream\n");
  const auto heads = up.heads();
  REQUIRE(heads.size() == 1);
  CHECK(heads[0].find(std::string("X-Api-Key: ") + secret + "\r\n") != std::string::npos);

  const auto outside =
      run_cli({"--policy", policy, "run", "--allow-host", "other.test", "--", "true"}, rt.name);
  INFO(outside);
  CHECK(outside.code == 125);
  CHECK(contains(outside.err, "(policy key egress.allow would allow it)"));

  const auto created =
      run_cli({"--policy", policy, "create", "--allow-host", "up.test", "kept"}, rt.name);
  INFO(created);
  CHECK(created.code == 125);
  CHECK(contains(created.err, "--allow-host needs a node"));
  CHECK(containers().empty());
}

TEST_CASE_METHOD(egress_fixture, "egress: a warm pool member gets its egress at its claim",
                 "[runtime][egress][pool]") {
  rt.warm = 1;
  REQUIRE(eventually(60s, [&] {
    auto st = stats();
    return st && st->pool_ready >= 1;
  }));
  // The member was made before anyone asked for egress: no socket, nothing listening.
  REQUIRE_OK(acquire("web", with_egress({"up.test"})));
  auto st = stats();
  REQUIRE_OK(st);
  CHECK(st->pool_hits == 1);
  auto r = exec("web", sh("wget -q -O - " + url("up.test")));
  REQUIRE_OK(r);
  INFO(r->stderr_data);
  CHECK(r->stdout_data == "hello from upstream\n");
  REQUIRE(up.heads().size() == 1);
  CHECK(up.heads()[0].find(secret) != std::string::npos);
}

TEST_CASE_METHOD(egress_fixture,
                 "egress: a runtime that adopts a kept sandbox serves its egress "
                 "again, for hosts its policy still allows",
                 "[runtime][egress]") {
  rt.exclusive_name = true;  // as a node: it holds its name alone
  rt.keep_sandboxes_on_shutdown = true;
  REQUIRE_OK(acquire("kept", with_egress({"up.test", "a.ok.test"})));
  REQUIRE_OK(exec("kept", sh("wget -q -O /dev/null " + url("up.test"))));
  REQUIRE(stop_supervisor());
  // The next runtime of the name, with a policy that has dropped a.ok.test.
  rt.policy.egress.allow = {"up.test"};
  auto r = exec("kept", sh("wget -q -O - " + url("up.test") + "; echo; wget -q -O - " +
                           url("a.ok.test") + "; echo rc=$?"));
  REQUIRE_OK(r);
  INFO(r->stdout_data << r->stderr_data);
  CHECK(r->stdout_data.rfind("hello from upstream\n", 0) == 0);
  CHECK(r->stdout_data.find("rc=0") == std::string::npos);
  const auto heads = up.heads();
  REQUIRE(heads.size() == 2);
  CHECK(heads[1].find(secret) != std::string::npos);
  rt.keep_sandboxes_on_shutdown = false;
  REQUIRE_OK(release("kept"));
}

TEST_CASE_METHOD(egress_fixture, "egress: a command's keeper holds none of its agent's sockets",
                 "[runtime][egress][agent]") {
  // A keeper is a fork of the agent that never execs, so close-on-exec does not clear what it
  // inherits: it closes the agent's descriptors itself. Were the egress port (or a relay) left
  // open in it, a port the agent closed would stay open for as long as any command forked
  // meanwhile lived. Seen from the host (root reads /proc of the non-dumpable keeper).
  auto info = acquire("keep", with_egress({"up.test"}));
  REQUIRE_OK(info);
  auto inspected = inspect(info->container_id);
  REQUIRE_OK(inspected);
  const auto init = static_cast<pid_t>(inspected->state.pid);
  REQUIRE(init > 0);
  auto pending = self->request(sup(), caf::timespan{120s}, exec_atom_v, std::string("keep"),
                               make_exec({"sleep", "37"}, caf::timespan{60s}));
  std::optional<pid_t> command;
  REQUIRE(eventually(20s, [&] { return (command = descendant_running(init, {"sleep", "37"})); }));
  const pid_t keeper = parent_of(*command);
  const pid_t agent = parent_of(keeper);
  const auto keeper_fds = descriptors_of(keeper);
  const auto agent_fds = descriptors_of(agent);
  auto sockets = [](const std::vector<std::string>& fds) {
    return std::count_if(fds.begin(), fds.end(),
                         [](const std::string& f) { return f.rfind("socket:", 0) == 0; });
  };
  INFO("keeper " << keeper << ": " << Catch::Detail::stringify(keeper_fds));
  INFO("agent " << agent << ": " << Catch::Detail::stringify(agent_fds));
  // The agent listens for its host and on the egress port: sockets this check would see.
  CHECK(sockets(agent_fds) >= 2);
  REQUIRE(!keeper_fds.empty());  // readable: its pipes to the agent are there
  CHECK(sockets(keeper_fds) == 0);
  REQUIRE_OK(release("keep"));
  pending.receive([](exec_result&) {}, [](caf::error&) {});
}
