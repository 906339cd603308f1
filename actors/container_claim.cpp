// The container actor's way to a ready sandbox (the diagram at the top of container.cpp): its
// container created under the key's claim name, or met there and adopted or cleared
// (claim_taken), or adopted at a runtime's restart; started; its workspace opened to a
// remapped user and checked; claimed by rename (the warm pool, drawn below); set up.
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <caf/all.hpp>

#include "actors/container_state.hpp"
#include "actors/engine_bridge.hpp"
#include "actors/engine_errors.hpp"
#include "actors/random_id.hpp"
#include "actors/spec_record.hpp"
#include "actors/workspace_access.hpp"
#include "docker/client.hpp"
#include "messages/agent_protocol.hpp"
#include "messages/errors.hpp"

namespace corral::actors::container_detail {

// -- start, setup --------------------------------------------------------------------------

namespace {

// The setup command without the agent (a docker exec), one handler per step: created,
// ran (its output), its exit code read.
void on_setup_exit_code(self_ptr self, const std::string& stderr_text,
                        docker::result<docker::exec_inspect_response> ins) {
  if (!ins)
    return fail_startup(self, from_engine(ins.err(), "reading the setup command's exit code"));
  const auto code = ins->exit_code.value_or(-1);
  if (code != 0) {
    return fail_startup(
        self, make_error(corral_errc::invalid_request,
                         "setup command exited " + std::to_string(code) +
                             (stderr_text.empty() ? "" : ": " + stderr_text.substr(0, 500))));
  }
  become_ready(self);
}

void on_setup_ran(self_ptr self, const std::string& exec_id,
                  docker::result<docker::exec_output> out) {
  if (!out) return fail_startup(self, from_engine(out.err(), "running the setup command"));
  engine(self).exec_inspect(exec_id,
                            back_to<docker::exec_inspect_response>(
                                self, [self, stderr_text = out->stderr_data.data](auto ins) {
                                  on_setup_exit_code(self, stderr_text, std::move(ins));
                                }));
}

void on_setup_created(self_ptr self, docker::result<docker::exec_create_response> created) {
  if (!created) return fail_startup(self, from_engine(created.err(), "creating the setup command"));
  docker::exec_start_options options;
  options.timeout = self->state.args.plan.exec_timeout;
  options.max_stdout = std::size_t{64} * 1024;
  options.max_stderr = std::size_t{64} * 1024;
  engine(self).exec_start(created->id, options,
                          back_to<docker::exec_output>(self, [self, id = created->id](auto out) {
                            on_setup_ran(self, id, std::move(out));
                          }));
}

void run_setup(self_ptr self) {
  auto& st = self->state;
  if (moot(self)) return;  // released while the agent link or the workspace check was made
  if (st.args.plan.setup_command.empty()) return become_ready(self);
  if (st.args.plan.agent) {
    auto errors = std::make_shared<std::string>();
    agent_command cmd;
    cmd.on_output = [errors](output_stream stream, std::string& bytes) {
      if (stream == output_stream::stderr_stream && errors->size() < std::size_t{64} * 1024)
        *errors += bytes;
      return false;
    };
    cmd.on_exit = [self, errors](agent_exit& e) {
      if (e.how == agent_protocol::end::lost) return;  // the link's end says it
      if (e.code != 0 || e.how != agent_protocol::end::exited) {
        const std::string why = !e.detail.empty() ? e.detail : errors->substr(0, 500);
        return fail_startup(self, make_error(corral_errc::invalid_request,
                                             "setup command exited " + std::to_string(e.code) +
                                                 (why.empty() ? "" : ": " + why)));
      }
      become_ready(self);
    };
    agent_start(self, st.args.plan.setup_command, {}, {}, st.args.plan.exec_timeout,
                uint64_t{64} * 1024, uint64_t{64} * 1024, nullptr, std::move(cmd));
    return;
  }
  docker::exec_create_request req;
  req.cmd = st.args.plan.setup_command;
  req.user = st.args.plan.user;
  engine(self).exec_create(st.info.container_id, req,
                           back_to<docker::exec_create_response>(self, [self](auto created) {
                             on_setup_created(self, std::move(created));
                           }));
}

// The engine resolved the workspace path again at start: make sure it mounted the directory
// the policy checked (a path swapped for a link or another directory in between would not be),
// before the sandbox is claimed and bound (so before its `command`, the setup command or any
// exec runs). Anything else removes the sandbox. Then `next`.
void verify_workspace(self_ptr self, std::function<void()> next) {
  auto& st = self->state;
  if (st.args.plan.workspace.container_path.empty()) return next();
  engine(self).container_inspect(
      st.info.container_id,
      back_to<docker::container_inspect_response>(
          self,
          [self, next = std::move(next)](docker::result<docker::container_inspect_response> r) {
            if (!r)
              return fail_startup(self, from_engine(r.err(), "inspecting the started sandbox"));
            if (moot(self)) return;
            // A quick stat of /proc/<pid>/root/...: fine in a handler.
            if (auto err = verify_workspace_mount(self->state.args.plan.workspace, r->state.pid))
              return fail_startup(self, err);
            next();
          }));
}

void claim_by_rename(self_ptr self);

void start_container(self_ptr self) {
  auto& st = self->state;
  if (!enter(self, phase::starting)) return;
  st.info.status = sandbox_status::starting;
  publish(self);
  engine(self).container_start(
      st.info.container_id,
      back_to<docker::change_outcome>(
          self, [self](const docker::result<docker::change_outcome>& r) {
            if (!r) return fail_startup(self, from_engine(r.err(), "starting the sandbox"));
            if (!enter(self, phase::setting_up)) return;
            if (self->state.pool_member)
              return with_agent(
                  self, [self] { become_ready(self); }, std::chrono::seconds(10));
            if (self->state.cold_claim)
              return with_agent(
                  self, [self] { verify_workspace(self, [self] { claim_by_rename(self); }); },
                  std::chrono::seconds(10));
            if (self->state.args.plan.agent)
              return with_agent(
                  self, [self] { verify_workspace(self, [self] { run_setup(self); }); },
                  std::chrono::seconds(10));
            verify_workspace(self, [self] { run_setup(self); });
          }));
}

// -- create: the key's name ----------------------------------------------------------------

// The most files and directories of a workspace given an ACL entry for a remapped sandbox user.
constexpr uint64_t max_workspace_entries = 100'000;
// The uids of a sandbox an engine remaps (dockremap's range: 65,536 from its first).
constexpr uint32_t remapped_range = 65'536;

// How long a cold sandbox's agent waits for its claim before it ends the sandbox: its maker
// renames and binds it within milliseconds of its start, unless it died.
constexpr std::chrono::milliseconds cold_unclaimed_limit{120'000};

// The name's holder could not be inspected: gone since (create again), or an engine failure.
// Not inlined: GCC 12 at -O2 then sees the variant as maybe uninitialised (a false positive).
[[gnu::noinline]] void claim_unseen(self_ptr self, const docker::error& err) {
  if (err.code == docker::errc::not_found) return create_container(self);
  refuse_claim(self, from_engine(err, "looking at the key's sandbox"));
}

// How long a name held by a container that is being created, started or removed elsewhere
// is waited for: polls of 200 ms, 30 s in all; then its creator is taken to have died.
constexpr int max_claim_attempts = 150;
constexpr auto claim_poll = std::chrono::milliseconds(200);

void claim_again_later(self_ptr self, std::function<void()> step) {
  self->delayed_send(self, claim_poll, resume_atom_v, continuation{std::move(step)});
}

void claim_taken(self_ptr self);

// The name is held by a container that is no longer of use (exited, dead, or left in
// `created` by a creator that died): it goes, and the create is tried again.
void clear_claim(self_ptr self, const std::string& holder) {
  engine(self).container_remove(
      holder, true, back_to<void>(self, [self](const docker::result<void>& r) {
        // Removed, or its removal under way elsewhere (409), or the
        // engine failed it (a busy root filesystem, say): the next look
        // at the name decides again, within the claim's bounded attempts.
        if (!r && r.err().code != docker::errc::not_found) {
          if (++self->state.clear_attempts > 6) {
            return refuse_claim(self, from_engine(r.err(), "removing a dead sandbox of this key"));
          }
          return claim_again_later(self, [self] { claim_taken(self); });
        }
        claim_again_later(self, [self] { create_container(self); });
      }));
}

// The create met a container of the key's name: adopt it if it is a live sandbox of this key
// (another process won the race), wait while it is being created, started or removed, and
// clear it if it is dead.
void claim_taken(self_ptr self) {
  auto& st = self->state;
  if (!enter(self, phase::creating)) return;
  if (++st.claim_attempts > max_claim_attempts) {
    return refuse_claim(
        self, make_error(corral_errc::timeout, "sandbox " + st.info.key + ": its container name " +
                                                   st.container_name + " stayed taken for 30 s"));
  }
  engine(self).container_inspect(
      st.container_name,
      back_to<docker::container_inspect_response>(
          self, [self](docker::result<docker::container_inspect_response> r) {
            auto& st = self->state;
            if (!r) return claim_unseen(self, r.err());
            auto label = [&](const char* name) {
              auto it = r->labels.find(name);
              return it == r->labels.end() ? std::string() : it->second;
            };
            // A sandbox claimed by rename (a pool member, or a cold one made with the agent)
            // carries no key label: its agent's welcome says whose it is (bound_agent), or it
            // is bound by us if its claimer died before it could.
            const bool agent_bound = label(label_key).empty() && !label(label_sandbox_id).empty();
            if (label(label_runtime) != st.args.cfg.name ||
                (!agent_bound && label(label_key) != st.info.key)) {
              return refuse_claim(
                  self, make_error(corral_errc::conflict,
                                   "sandbox " + st.info.key + ": container name " +
                                       st.container_name + " is held by container " +
                                       r->id.substr(0, 12) + ", which is not this key's"));
            }
            const auto& state = r->state;
            // This actor's own create went through and only its answer was lost (or the
            // client sent it again on a fresh connection): the holder is ours to start.
            if (!st.claim_nonce.empty() && label(label_claim) == st.claim_nonce) {
              if (state.status == "exited" || state.status == "dead")
                return clear_claim(self, r->id);
              st.info.container_id = r->id;
              return start_container(self);
            }
            if (state.running && !state.paused && !state.restarting) {
              // Never another caller's spec: the same rule as for a key this process holds.
              const auto differ = differing_fields(decode_spec_record(label(label_spec)),
                                                   decode_spec_record(st.args.plan.spec_record));
              if (!differ.empty() && !label(label_spec).empty()) {
                std::string fields;
                for (const auto& f : differ) fields += (fields.empty() ? "" : ", ") + f;
                return refuse_claim(self, make_error(corral_errc::conflict,
                                                     "sandbox " + st.info.key +
                                                         " exists with another spec; these fields "
                                                         "differ: " +
                                                         fields));
              }
              st.shared_claim = true;
              st.args.adopt_container_id = r->id;
              return adopt_container(self);
            }
            if (state.status == "exited" || state.status == "dead" ||
                (state.status == "created" && st.claim_attempts >= max_claim_attempts / 2)) {
              return clear_claim(self, r->id);
            }
            // created, restarting, removing: someone is at work on it.
            claim_again_later(self, [self] { claim_taken(self); });
          }));
}

// On an engine that remaps user namespaces the sandbox's user is a host uid no host user has,
// which the workspace's modes do not name: an ACL entry for it is set on the workspace tree
// first (actors/workspace_access.hpp), on a thread of its own (a walk of a whole tree).
bool needs_workspace_grant(self_ptr self) {
  const auto& st = self->state;
  return !st.workspace_granted && !st.args.plan.workspace.container_path.empty() &&
         st.args.plan.agent && st.args.cfg.agent_root_uid != 0;
}

void grant_workspace(self_ptr self) {
  auto& st = self->state;
  const auto& ws = st.args.plan.workspace;
  // The agent (the sandbox's root) enters it as the container's working directory; the
  // sandbox's user reads it, and writes it if it is rw.
  const uint32_t uid = numeric_user(st.args.plan.user).first;
  if (uid >= remapped_range) {
    st.workspace_granted = true;
    return fail_startup(
        self, make_error(corral_errc::policy_violation,
                         "user " + st.args.plan.user +
                             ": the engine remaps only uids 0-65535 of a sandbox; a workspace "
                             "cannot be opened to uid " +
                             std::to_string(uid)));
  }
  std::vector<workspace_user> users{{st.args.cfg.agent_root_uid, false},
                                    {st.args.cfg.agent_root_uid + uid, ws.writable}};
  caf::weak_actor_ptr weak = self->ctrl();
  std::thread([weak, self, root = ws.host_path, device = ws.device, inode = ws.inode,
               users = std::move(users)] {
    workspace_grant done;
    auto failed = grant_workspace_access(root, device, inode, users, max_workspace_entries, done);
    auto strong = weak.lock();
    if (!strong) return;
    caf::anon_send(
        caf::actor_cast<caf::actor>(strong), resume_atom_v,
        continuation{[self, failed = std::move(failed), done, root] {
          auto& st = self->state;
          st.workspace_granted = true;
          if (failed)
            return fail_startup(self, make_error(corral_errc::policy_violation,
                                                 "workspace " + root +
                                                     ": the sandbox's user (a remapped host uid) "
                                                     "could not be given access: " +
                                                     *failed));
          if (done.truncated)
            st.info.warnings.push_back("workspace: only the first " + std::to_string(done.entries) +
                                       " files and directories were opened to the sandbox's user");
          create_container(self);
        }});
  }).detach();
}

}  // namespace

// Fails without touching the container that holds the name: it is someone else's.
void refuse_claim(self_ptr self, const caf::error& err) {
  self->state.info.container_id.clear();
  // Nor its run directory (ours, if made, goes with the minute's sweep).
  if (!self->state.args.adopt_container_id.empty()) self->state.args.plan.run_dir.clear();
  fail_startup(self, err);
}

void create_container(self_ptr self) {
  auto& st = self->state;
  if (!enter(self, phase::creating)) return;
  if (needs_workspace_grant(self)) return grant_workspace(self);
  auto request = st.args.plan.create;
  request.name = claim_name(st.args.cfg.name, st.args.key);
  // With the agent, every sandbox is claimed the same way: made unclaimed (a pool member, or
  // a cold create), then renamed to the key's name and bound through its agent.
  st.cold_claim = st.args.plan.agent && !st.pool_member;
  if (st.cold_claim && !st.name_looked_at) {
    // A key that has its sandbox already (another process's) is adopted without a wasted
    // create: one look at the name first (claim_taken; if nobody holds it, back here).
    st.name_looked_at = true;
    st.cold_claim = false;
    st.container_name = request.name;
    return claim_taken(self);
  }
  if (st.pool_member || st.cold_claim) {
    // Nobody's yet: a name of its own, and none of the labels a claim binds (its agent holds
    // those).
    request.name = st.pool_member ? pool_member_name(st.args.plan.sandbox_id)
                                  : unclaimed_name(st.args.plan.sandbox_id);
    for (auto it = request.labels.begin(); it != request.labels.end();)
      it = is_claim_label(it->first) && it->first != label_sandbox_id &&
                   it->first != label_created_at
               ? request.labels.erase(it)
               : std::next(it);
    if (st.pool_member) request.labels[label_pool] = st.args.pool_hash;
    // Its agent ends it if nobody binds it in time (its maker died before the claim).
    const auto unclaimed_limit = st.pool_member ? st.args.unclaimed_limit : cold_unclaimed_limit;
    if (unclaimed_limit.count() > 0) {
      request.cmd.push_back("--unclaimed-limit");
      request.cmd.push_back(std::to_string(unclaimed_limit.count()));
    }
  }
  if (st.claim_nonce.empty()) {
    st.claim_nonce = random_hex64();
  }
  request.labels[label_claim] = st.claim_nonce;
  // Its age counts from its create (another process spares a young one), not from its plan.
  request.labels[label_created_at] = std::to_string(unix_now_ms());
  st.container_name = request.name;
  if (st.args.plan.agent) {
    if (auto err = make_run_dir(self)) return fail_startup(self, err);
  }
  if (st.args.cfg.before_create_for_tests) st.args.cfg.before_create_for_tests(st.args.plan);
  st.create_in_flight = true;
  engine(self).container_create(
      request, back_to<docker::container_create_response>(
                   self, [self](docker::result<docker::container_create_response> r) {
                     self->state.create_in_flight = false;
                     if (self->state.now == phase::removing) {
                       // The lifetime or a mark came meanwhile: what was made goes.
                       return r ? removed_after_create(self, r->id)
                                : removed_after_create(self, r.err());
                     }
                     if (!r && r.err().code == docker::errc::conflict) return claim_taken(self);
                     if (!r) {
                       // The engine may have created it and lost only its answer: remove by name.
                       if (create_may_have_made(r.err())) {
                         self->state.info.container_id = self->state.container_name;
                       }
                       const auto doing = r.err().code == docker::errc::not_found
                                              ? "creating the sandbox (is the image " +
                                                    self->state.args.plan.create.image + " there?)"
                                              : std::string("creating the sandbox");
                       return fail_startup(self, from_engine(r.err(), doing));
                     }
                     self->state.info.container_id = r->id;
                     start_container(self);
                   }));
}

// -- adopt ---------------------------------------------------------------------------------

namespace {

// An adopted sandbox may still run commands of the run that left it (a node killed while
// they ran): nobody owns them any more. Every process carrying a CORRAL_EXEC tag is stopped
// before the sandbox takes commands (found by tests/crash_trial.sh).
void stop_orphans(self_ptr self) {
  auto& st = self->state;
  docker::exec_create_request killer;
  killer.user = st.args.plan.user;
  killer.attach_stdout = false;
  killer.attach_stderr = false;
  killer.cmd = {"/bin/sh", "-c",
                "for round in 1 2 3; do p=; for d in /proc/[0-9]*; do "
                "if tr '\\0' '\\n' < \"$d/environ\" 2>/dev/null | grep -q '^CORRAL_EXEC='; then "
                "p=\"$p ${d#/proc/}\"; fi; done; [ -z \"$p\" ] && break; "
                "kill -STOP $p 2>/dev/null; kill -KILL $p 2>/dev/null; done",
                "corral-adopt"};
  engine(self).exec_create(
      st.info.container_id, killer,
      back_to<docker::exec_create_response>(
          self, [self](docker::result<docker::exec_create_response> created) {
            if (!created) {
              return fail_startup(
                  self, from_engine(created.err(), "stopping the commands a previous run left"));
            }
            engine(self).exec_start(
                created->id, {}, back_to<docker::exec_output>(self, [self](auto done) {
                  if (!done) {
                    return fail_startup(
                        self, from_engine(done.err(), "stopping the commands a previous run left"));
                  }
                  become_ready(self);
                }));
          }));
}

}  // namespace

void adopt_container(self_ptr self) {
  auto& st = self->state;
  if (!enter(self, phase::adopting)) return;
  st.info.container_id = st.args.adopt_container_id;
  engine(self).container_inspect(
      st.info.container_id,
      back_to<docker::container_inspect_response>(
          self, [self](docker::result<docker::container_inspect_response> r) {
            if (!r) return fail_startup(self, from_engine(r.err(), "adopting the sandbox"));
            if (!r->state.running || r->state.paused) {
              return fail_startup(
                  self,
                  make_error(corral_errc::sandbox_lost,
                             "found container " + r->id.substr(0, 12) + " " + r->state.status +
                                 ", not running: removed instead of adopted"));
            }
            auto& st = self->state;
            if (auto it = r->labels.find(label_created_at); it != r->labels.end()) {
              st.info.created_ms = std::strtoll(it->second.c_str(), nullptr, 10);
            }
            if (!r->name.empty()) st.container_name = r->name.substr(r->name[0] == '/' ? 1 : 0);
            if (auto id = r->labels.find(label_sandbox_id); id != r->labels.end()) {
              // Made with the agent: link to it. A previous process's commands ended when
              // its connections closed (the agent kills them), so none is left to stop here.
              if (!st.args.agents) {
                return fail_startup(
                    self,
                    make_error(corral_errc::sandbox_lost,
                               "sandbox " + st.info.key +
                                   " runs corral's agent, and this runtime has none "
                                   "(runtime_config.agent_path): removed instead of adopted"));
              }
              auto& plan = st.args.plan;
              plan.agent = true;
              plan.sandbox_id = id->second;
              plan.run_dir = st.args.cfg.agent_run_root + "/" + plan.sandbox_id;
              st.info.image = r->config_image;
              st.info.memory_bytes = r->host.memory;
              st.info.nano_cpus = r->host.nano_cpus;
              st.info.pids_limit = r->host.pids_limit;
              return with_agent(
                  self, [self] { become_ready(self); }, std::chrono::seconds(10));
            }
            st.args.plan.user = r->user.empty() ? st.args.plan.user : r->user;
            st.info.image = r->config_image;
            st.info.memory_bytes = r->host.memory;
            st.info.nano_cpus = r->host.nano_cpus;
            st.info.pids_limit = r->host.pids_limit;
            // Another live process's sandbox: its commands are running, not orphaned.
            if (st.shared_claim) return become_ready(self);
            stop_orphans(self);
          }));
}

// -- the warm pool -------------------------------------------------------------------------
//
// Every sandbox made with the agent is claimed one way: it is made unclaimed, like any
// sandbox of its spec minus the claim (a name of its own, no key labels, its agent started and
// unbound), then renamed to its key's claim name and bound. A pool member waits in between
// (pool_member_name, until an acquire claims it); a cold create claims itself as soon as its
// agent is up (unclaimed_name, after one look at the key's name: a key another process holds
// is adopted without a create). The claim:
//
//   unclaimed --claim--> rename to the key's claim name --> configure (bind) --> setup --> ready
//                             | 409: the key has a container        | refused: another key
//                             v                                     v    bound it first
//                        this one is removed; the holder        refuse_claim (theirs)
//                        is adopted as any (claim_taken)
//                             | 404: the pool member is gone
//                             v
//                        a cold create under the key (unclaimed, then this claim)
//
// The rename is the claim record: the engine's name uniqueness decides between processes and
// survives restarts; the first configure decides between two binders of one name (an adopter
// that meets a renamed, unbound sandbox waits two seconds for its claimer to bind it). A
// claimer that dies after the rename leaves a sandbox under the key's name, unbound: the next
// process that asks for the key binds it (with_agent), a restarted runtime takes it back to
// its pool, or removes it if it holds its name alone (a node), or leaves it to its agent's
// unclaimed limit.

void claim_pooled(self_ptr self, const pool_claim& claim) {
  auto& st = self->state;
  if (st.now != phase::pooled) {
    // Not claimable any more (it died meanwhile): the acquire that follows is told so
    // (startup_failure, "try again"), and the supervisor tries a fresh sandbox.
    st.info.key = claim.key;
    if (!is_terminal(st.info.status)) st.info.status = sandbox_status::starting;
    st.startup_failure =
        make_error(corral_errc::sandbox_lost, "sandbox " + claim.key +
                                                  ": the warm sandbox it was given "
                                                  "ended before its claim; try again");
    begin_removal(self, sandbox_status::lost, "the pool member was not ready");
    return;
  }
  st.now = phase::setting_up;
  st.pool_member = false;
  const auto sandbox_id = st.args.plan.sandbox_id;
  st.args.key = claim.key;
  st.args.plan = *claim.plan;
  use_agent(st.args.plan, st.args.cfg, sandbox_id);
  st.info.key = claim.key;
  st.info.created_ms = unix_now_ms();
  st.info.last_used_ms = st.info.created_ms;
  st.info.warnings = st.args.plan.warnings;
  st.info.status = sandbox_status::starting;
  if (st.args.plan.lifetime.count() > 0)
    self->delayed_send(self, st.args.plan.lifetime, lifetime_atom_v);
  publish(self);
  claim_by_rename(self);
}

namespace {

// The claim of a sandbox made unclaimed (a pool member, or a cold create after its start):
// the rename is the claim record, then its agent is bound (with_agent's configure).
void claim_by_rename(self_ptr self) {
  auto& st = self->state;
  close_agent_link(self);  // the next link's welcome finds it unbound and binds it
  const auto name = claim_name(st.args.cfg.name, st.args.key);
  engine(self).container_rename(
      st.info.container_id, name, back_to<void>(self, [self, name](const docker::result<void>& r) {
        auto& st = self->state;
        if (moot(self)) return;
        if (!r && r.err().code == docker::errc::conflict) {
          // The key has a container already (another process's): this one goes, then the
          // holder is looked at as any create that met it would. The removal is awaited: a
          // process that adopts the holder and exits at once leaves nothing behind.
          const auto loser = st.info.container_id;
          st.info.container_id.clear();
          st.cold_claim = false;
          // Said before the removal: its kill and destroy events are not this key's.
          publish(self);
          st.container_name = name;
          engine(self).container_remove(loser, true,
                                        back_to<void>(self, [self](const docker::result<void>&) {
                                          // Failed or not, it is not this key's: a later runtime's
                                          // adoption removes a container left under an unclaimed
                                          // name.
                                          remove_run_dir(self);
                                          claim_taken(self);
                                        }));
          return;
        }
        if (!r && r.err().code == docker::errc::not_found && !st.cold_claim) {
          // The pool member is gone: a cold create under the key.
          st.info.container_id.clear();
          return create_container(self);
        }
        if (!r)
          return fail_startup(self,
                              from_engine(r.err(), st.cold_claim ? "claiming the new sandbox's name"
                                                                 : "claiming a warm sandbox"));
        st.cold_claim = false;
        st.container_name = name;
        if (st.args.cfg.after_claim_rename_for_tests) st.args.cfg.after_claim_rename_for_tests();
        // A cold sandbox's workspace was verified before its claim; a pool member has none.
        with_agent(
            self, [self] { run_setup(self); }, std::chrono::seconds(10));
      }));
}

}  // namespace

}  // namespace corral::actors::container_detail
