// The warm pool (runtime_config.warm): sandboxes made before they are asked for, claimed by a
// rename to the key's name and bound through the agent; what a pool member looks like to the
// engine, to a command and to the next start of its runtime.
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <mutex>

#include "runtime_fixture.hpp"

using namespace corral::runtime_tests;
namespace fs = std::filesystem;

namespace {

// Waits until the runtime's pool holds `ready` members (and none is being made when `settled`).
bool pool_reaches(runtime_fixture& f, uint64_t ready, std::chrono::milliseconds limit = 60s) {
  return eventually(limit, [&] {
    auto st = f.stats();
    return st && st->pool_ready >= ready;
  });
}

std::string name_of(const corral::docker::container_inspect_response& ins) {
  return ins.name.substr(ins.name.rfind('/', 0) == 0 ? 1 : 0);
}

// The entrypoint's arguments without the pool member's own (--unclaimed-limit MS).
std::vector<std::string> without_unclaimed_limit(std::vector<std::string> cmd) {
  auto it = std::find(cmd.begin(), cmd.end(), "--unclaimed-limit");
  if (it != cmd.end()) cmd.erase(it, std::min(it + 2, cmd.end()));
  return cmd;
}

// The run directory bind names the sandbox: the rest of the binds must be equal.
std::vector<std::string> binds_without_run_dir(std::vector<std::string> binds) {
  binds.erase(std::remove_if(binds.begin(), binds.end(),
                             [](const std::string& b) { return contains(b, ":/corral/run:"); }),
              binds.end());
  return binds;
}

}  // namespace

TEST_CASE_METHOD(runtime_fixture,
                 "an acquire takes a warm sandbox: renamed to its key, bound by its agent",
                 "[runtime][pool]") {
  REQUIRE_FALSE(rt.agent_path.empty());
  rt.warm = 2;
  REQUIRE(pool_reaches(*this, 2));
  auto members = containers();
  REQUIRE(members.size() == 2);
  for (const auto& c : members) {
    INFO(c.names.front());
    CHECK(corral::actors::is_pool_member_name(c.names.front()));
    CHECK(c.labels.count(corral::actors::label_key) == 0);
    CHECK(c.labels.count(corral::actors::label_pool) == 1);
    CHECK(c.state == "running");
  }

  sandbox_spec spec;
  spec.env = {{"SECRET", "s3cret-value"}};
  auto info = acquire("warm-a", spec);
  REQUIRE_OK(info);
  CHECK(info->status == sandbox_status::ready);
  auto st = stats();
  REQUIRE_OK(st);
  CHECK(st->pool_hits == 1);
  CHECK(st->pool_misses == 0);
  CHECK(st->created_total == 0);
  // One of the members, under the key's name now; its labels never learnt the key.
  CHECK(std::any_of(members.begin(), members.end(),
                    [&](const auto& c) { return c.id == info->container_id; }));
  auto ins = inspect(info->container_id);
  REQUIRE_OK(ins);
  CHECK(name_of(*ins).rfind("corral-warm-a-", 0) == 0);
  CHECK(ins->labels.count(corral::actors::label_key) == 0);
  for (const auto& e : ins->env) CHECK_FALSE(contains(e, "s3cret-value"));

  // Bound: the sandbox's env reaches commands, which run as the sandbox's user.
  auto echo = exec("warm-a", sh("echo $SECRET; id -u"));
  REQUIRE_OK(echo);
  CHECK(echo->stdout_data == "s3cret-value\n1000\n");
  auto looked = lookup("warm-a");
  REQUIRE_OK(looked);
  CHECK(looked->container_id == info->container_id);

  // The pool refills behind the claim; the released sandbox goes, the pool stays.
  CHECK(pool_reaches(*this, 2));
  CHECK_OK(release("warm-a"));
  CHECK(eventually(10s, [&] { return containers().size() == 2; }));
  // The key can be had again: a fresh claim.
  auto again = acquire("warm-a");
  REQUIRE_OK(again);
  CHECK(again->container_id != info->container_id);
  CHECK_OK(release("warm-a"));
}

TEST_CASE_METHOD(runtime_fixture, "a pooled sandbox is hardened exactly like a cold one",
                 "[runtime][pool][security]") {
  REQUIRE_FALSE(rt.agent_path.empty());
  rt.warm = 1;
  REQUIRE(pool_reaches(*this, 1));
  // Two at once: one takes the member, the other finds the pool empty (a member takes
  // hundreds of ms to make) and is created cold.
  std::vector<caf::expected<sandbox_info>> got;
  auto first = self->request(sup(), caf::timespan{2min}, acquire_atom_v, "first", sandbox_spec{});
  auto second = self->request(sup(), caf::timespan{2min}, acquire_atom_v, "second", sandbox_spec{});
  for (auto* h : {&first, &second})
    h->receive([&](sandbox_info& info) { got.emplace_back(std::move(info)); },
               [&](caf::error& err) { got.emplace_back(std::move(err)); });
  for (auto& g : got) REQUIRE_OK(g);
  auto st = stats();
  REQUIRE_OK(st);
  REQUIRE(st->pool_hits == 1);
  REQUIRE(st->pool_misses == 1);
  auto a = inspect(got[0]->container_id);
  auto b = inspect(got[1]->container_id);
  REQUIRE_OK(a);
  REQUIRE_OK(b);
  const bool a_pooled = a->labels.count(corral::actors::label_pool) > 0;
  REQUIRE(a_pooled != (b->labels.count(corral::actors::label_pool) > 0));
  const auto& pooled = a_pooled ? *a : *b;
  const auto& cold = a_pooled ? *b : *a;
  INFO("pooled " << name_of(pooled) << ", cold " << name_of(cold));
  // Both claimed the same way: by their key's name, with no key label (their agents hold it).
  CHECK(name_of(cold) == corral::actors::claim_name(rt.name, a_pooled ? got[1]->key : got[0]->key));
  CHECK(name_of(pooled) ==
        corral::actors::claim_name(rt.name, a_pooled ? got[0]->key : got[1]->key));
  CHECK(cold.labels.count(corral::actors::label_key) == 0);

  // What the engine was told: the same, field by field, but for the names of the sandbox's
  // run directory and the unclaimed limits (a pool member's, a cold create's).
  const auto &hp = pooled.host, &hc = cold.host;
  CHECK(pooled.user == cold.user);
  CHECK(pooled.config_image == cold.config_image);
  CHECK(without_unclaimed_limit(pooled.cmd) == without_unclaimed_limit(cold.cmd));
  CHECK(pooled.env == cold.env);
  CHECK(binds_without_run_dir(hp.binds) == binds_without_run_dir(hc.binds));
  CHECK(hp.binds.size() == hc.binds.size());
  CHECK(hp.tmpfs == hc.tmpfs);
  CHECK(hp.memory == hc.memory);
  CHECK(hp.memory_swap == hc.memory_swap);
  CHECK(hp.nano_cpus == hc.nano_cpus);
  CHECK(hp.pids_limit == hc.pids_limit);
  CHECK(hp.cap_drop == hc.cap_drop);
  CHECK(hp.cap_add == hc.cap_add);
  CHECK(hp.security_opt == hc.security_opt);
  CHECK(hp.readonly_rootfs == hc.readonly_rootfs);
  CHECK(hp.network_mode == hc.network_mode);
  CHECK(hp.init == hc.init);
  CHECK(hp.oom_score_adj == hc.oom_score_adj);
  // And the checks every sandbox passes (security_test.cpp, "by inspect").
  for (const auto* ins : {&pooled, &cold}) {
    CHECK(ins->host.readonly_rootfs);
    CHECK(ins->host.network_mode == "none");
    CHECK(ins->host.cap_drop == std::vector<std::string>{"ALL"});
    CHECK(std::find(ins->host.security_opt.begin(), ins->host.security_opt.end(),
                    "no-new-privileges") != ins->host.security_opt.end());
  }

  // What a command can do: the same in both.
  for (const auto& g : got) {
    INFO("key " << g->key);
    auto status = exec(g->key, sh("cat /proc/self/status; id -u; echo x > /probe; echo rc=$?"));
    REQUIRE_OK(status);
    CHECK(contains(status->stdout_data, "CapEff:\t0000000000000000\n"));
    CHECK(contains(status->stdout_data, "CapBnd:\t0000000000000000\n"));
    CHECK(contains(status->stdout_data, "NoNewPrivs:\t1\n"));
    CHECK(contains(status->stdout_data, "\n1000\n"));
    CHECK(contains(status->stdout_data, "rc="));
    CHECK_FALSE(contains(status->stdout_data, "rc=0"));
    CHECK_OK(release(g->key));
  }
}

TEST_CASE_METHOD(runtime_fixture, "a burst of twice the pool's size: all served, the pool refills",
                 "[runtime][pool]") {
  REQUIRE_FALSE(rt.agent_path.empty());
  rt.warm = 3;
  REQUIRE(pool_reaches(*this, 3));
  constexpr int burst = 6;
  using handle = decltype(self->request(sup(), caf::timespan{2min}, acquire_atom_v, std::string(),
                                        sandbox_spec{}));
  std::vector<handle> pending;
  for (int i = 0; i < burst; ++i)
    pending.push_back(self->request(sup(), caf::timespan{2min}, acquire_atom_v,
                                    "burst-" + std::to_string(i), sandbox_spec{}));
  int ok = 0;
  for (auto& h : pending)
    h.receive([&](sandbox_info& info) { ok += info.status == sandbox_status::ready; },
              [&](caf::error& err) { FAIL_CHECK(describe(err)); });
  CHECK(ok == burst);
  auto st = stats();
  REQUIRE_OK(st);
  CHECK(st->pool_hits == 3);
  CHECK(st->pool_misses == 3);
  CHECK(st->created_total == 3);
  // Back to at least its minimum (misses may have grown it toward its maximum, 6).
  CHECK(pool_reaches(*this, 3));
  for (int i = 0; i < burst; ++i) {
    auto r = exec("burst-" + std::to_string(i), {"true"});
    REQUIRE_OK(r);
    CHECK(r->exit_code == 0);
  }
  auto released = release_all();
  REQUIRE_OK(released);
  CHECK(*released == burst);
}

TEST_CASE_METHOD(runtime_fixture, "an acquire with a workspace never gets a pooled sandbox",
                 "[runtime][pool]") {
  REQUIRE_FALSE(rt.agent_path.empty());
  char tmpl[] = "/tmp/corral-pool-ws-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const fs::path ws = tmpl;
  rt.policy.workspace_roots = {{ws.string(), true}};
  rt.warm = 1;
  REQUIRE(pool_reaches(*this, 1));
  sandbox_spec spec;
  spec.workspace.host_path = ws.string();
  spec.workspace.access = access_mode::ro;
  auto info = acquire("with-ws", spec);
  REQUIRE_OK(info);
  auto ins = inspect(info->container_id);
  REQUIRE_OK(ins);
  CHECK(ins->labels.count(corral::actors::label_pool) == 0);
  CHECK(name_of(*ins) == corral::actors::claim_name(rt.name, "with-ws"));
  auto st = stats();
  REQUIRE_OK(st);
  CHECK(st->pool_hits == 0);
  CHECK(st->pool_ready == 1);
  auto ls = exec("with-ws", {"ls", "-d", "/workspace"});
  REQUIRE_OK(ls);
  CHECK(ls->exit_code == 0);
  CHECK_OK(release("with-ws"));
  fs::remove_all(ws);
}

TEST_CASE_METHOD(runtime_fixture,
                 "a restarted runtime takes back its pool and what was claimed from it",
                 "[runtime][pool][restart]") {
  REQUIRE_FALSE(rt.agent_path.empty());
  rt.warm = 2;
  rt.keep_sandboxes_on_shutdown = true;
  REQUIRE(pool_reaches(*this, 2));
  auto claimed = acquire("claimed");
  REQUIRE_OK(claimed);
  REQUIRE_OK(exec("claimed", sh("echo kept > /tmp/mark")));
  REQUIRE(pool_reaches(*this, 2));
  REQUIRE(stop_supervisor());
  REQUIRE(containers().size() == 3);

  rt.keep_sandboxes_on_shutdown = false;
  auto listed = list();
  REQUIRE_OK(listed);
  // Listed at once: the runtime answers only once every pool member said whose it is.
  REQUIRE(listed->size() == 1);
  CHECK(listed->front().key == "claimed");
  CHECK(listed->front().container_id == claimed->container_id);
  auto st = stats();
  REQUIRE_OK(st);
  CHECK(st->adopted_total == 1);
  CHECK(st->pool_ready == 2);
  CHECK(st->pool_refills == 0);  // taken back, none made
  auto mark = exec("claimed", {"cat", "/tmp/mark"});
  REQUIRE_OK(mark);
  CHECK(mark->stdout_data == "kept\n");
  // The adopted members serve acquires.
  auto next = acquire("next");
  REQUIRE_OK(next);
  auto after = stats();
  REQUIRE_OK(after);
  CHECK(after->pool_hits == 1);
  auto released = release_all();
  REQUIRE_OK(released);
  CHECK(*released == 2);
}

TEST_CASE_METHOD(runtime_fixture, "a warm claim and a cold create race for one key: one container",
                 "[runtime][pool][concurrency]") {
  REQUIRE_FALSE(rt.agent_path.empty());
  rt.warm = 1;
  REQUIRE(pool_reaches(*this, 1));
  // A second process of the same name without a pool (as an embedded CLI beside its node).
  auto cold_cfg = rt;
  cold_cfg.warm = 0;
  auto other = spawn_other(cold_cfg);
  for (int round = 0; round < 3; ++round) {
    const std::string key = "race-" + std::to_string(round);
    auto warm = self->request(sup(), caf::timespan{2min}, acquire_atom_v, key, sandbox_spec{});
    auto cold = self->request(other, caf::timespan{2min}, acquire_atom_v, key, sandbox_spec{});
    std::vector<std::string> ids;
    for (auto* h : {&warm, &cold})
      h->receive([&](sandbox_info& info) { ids.push_back(info.container_id); },
                 [&](caf::error& err) { FAIL_CHECK(describe(err)); });
    REQUIRE(ids.size() == 2);
    CHECK(ids[0] == ids[1]);
    // Exactly one container under the key's name; the pool keeps its one member.
    CHECK(eventually(10s, [&] {
      auto all = containers();
      return std::count_if(all.begin(), all.end(), [&](const auto& c) {
               return !corral::actors::is_pool_member_name(c.names.front());
             }) == round + 1;
    }));
    auto seen = ask_of<exec_result>(other, caf::timespan{30s}, exec_atom_v, key, [] {
      exec_request r;
      r.argv = {"sh", "-c", "echo shared > /tmp/s"};
      return r;
    }());
    REQUIRE_OK(seen);
    auto read = exec(key, {"cat", "/tmp/s"});
    REQUIRE_OK(read);
    CHECK(read->stdout_data == "shared\n");
    REQUIRE(pool_reaches(*this, 1));
  }
  CHECK_OK(release_all());
}

TEST_CASE_METHOD(runtime_fixture, "a policy's pools entry keeps sandboxes of its own spec",
                 "[runtime][pool]") {
  REQUIRE_FALSE(rt.agent_path.empty());
  corral::actors::pool_entry small;
  small.memory = 128LL << 20;
  small.pids = 64;
  small.min = 1;
  rt.policy.pools = {small};
  REQUIRE(pool_reaches(*this, 1));
  auto members = containers();
  REQUIRE(members.size() == 1);
  auto member = inspect(members.front().id);
  REQUIRE_OK(member);
  CHECK(member->host.memory == 128LL << 20);
  CHECK(member->host.pids_limit == 64);
  // The default spec is not this pool's: created cold, and not a miss of it.
  auto plain = acquire("plain");
  REQUIRE_OK(plain);
  CHECK(plain->container_id != members.front().id);
  sandbox_spec spec;
  spec.memory_bytes = 128LL << 20;
  spec.pids_limit = 64;
  auto taken = acquire("small", spec);
  REQUIRE_OK(taken);
  CHECK(taken->container_id == members.front().id);
  auto st = stats();
  REQUIRE_OK(st);
  CHECK(st->pool_hits == 1);
  CHECK(st->pool_misses == 0);
  CHECK(st->created_total == 1);
  CHECK_OK(release_all());
}

TEST_CASE_METHOD(runtime_fixture, "a pool that keeps missing says so in the runtime's warnings",
                 "[runtime][pool]") {
  REQUIRE_FALSE(rt.agent_path.empty());
  auto warnings = std::make_shared<std::vector<std::string>>();
  auto guard = std::make_shared<std::mutex>();
  rt.warn = [warnings, guard](const std::string& text) {
    std::lock_guard<std::mutex> lock(*guard);
    warnings->push_back(text);
  };
  rt.warm = 1;
  rt.warm_max = 1;
  REQUIRE(pool_reaches(*this, 1));
  // One member against three acquires at once: one hit, then two misses in a row, which is
  // twice the pool's maximum.
  auto a = self->request(sup(), caf::timespan{2min}, acquire_atom_v, "m1", sandbox_spec{});
  auto b = self->request(sup(), caf::timespan{2min}, acquire_atom_v, "m2", sandbox_spec{});
  auto c = self->request(sup(), caf::timespan{2min}, acquire_atom_v, "m3", sandbox_spec{});
  for (auto* h : {&a, &b, &c})
    h->receive([](sandbox_info&) {}, [](caf::error& err) { FAIL_CHECK(describe(err)); });
  auto st = stats();
  REQUIRE_OK(st);
  CHECK(st->pool_hits == 1);
  CHECK(st->pool_misses == 2);
  std::lock_guard<std::mutex> lock(*guard);
  REQUIRE(warnings->size() == 1);
  CHECK(contains(warnings->front(), "2 acquires in a row found it empty"));
  CHECK(contains(warnings->front(), "consider a larger --warm"));
}
