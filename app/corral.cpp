// The `corral` command: sandboxes from the shell, on an embedded in-process runtime or on
// `corral node`s (app/session.hpp).
//
// The command line is described once, in `commands`: each command's synopsis, help, flags
// and handler. CLI11 derives the parsing from it, refuses a flag the command does not have
// (naming the command that has it), and prints `--help`. Values go through
// app/cli_values.hpp, so an error names the flag and what it expected. Global flags go
// before or after the command; `--` ends corral's arguments (the rest is run/exec's CMD).
// Exit codes: app/exit_codes.hpp (every usage error is exit_code::error, 125).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "app/cli_flags.hpp"
#include "app/commands.hpp"
#include "app/exit_codes.hpp"
#include "app/remote.hpp"

using namespace corral::app;
using corral::messages::access_mode;

namespace {

// -- each command's flags --------------------------------------------------------------------

void sandbox_flags(CLI::App& cmd, command_line& cl) {
  auto& spec = cl.spec;
  cmd.option_defaults()->group("Sandbox flags (defaults are strict)");
  cmd.add_option("--image", spec.image, "image (default corral/sandbox:busybox; allowlist corral/)")
      ->type_name("IMAGE");
  size_flag(
      cmd, "--memory", false, [&spec](int64_t n) { spec.memory_bytes = n; },
      "memory limit, e.g. 256m, 1g (default 512m; swap equal)");
  value_flag(
      cmd, "--cpus", "N", "a CPU count (like 0.5, 2)", parse_cpus,
      [&spec](int64_t n) { spec.nano_cpus = n; }, "CPUs, e.g. 0.5 (default 1)");
  count_flag(cmd, "--pids", spec.pids_limit, 0, unbounded, "process limit (default 256)");
  duration_flag(
      cmd, "--lifetime", [&spec](auto d) { spec.lifetime = d; },
      "remove the sandbox after D (e.g. 30m; default none)");
  duration_flag(
      cmd, "--idle", [&spec](auto d) { spec.idle_limit = d; },
      "prune after D without use (default none)");
  env_flag(cmd, {&spec.env}, "environment (repeatable); reserved keys are stripped");
  cmd.add_option_function<std::string>(
         "--workspace",
         [&spec](std::string text) {
           spec.workspace.access = access_mode::ro;
           if (text.size() > 3 && (text.ends_with(":ro") || text.ends_with(":rw"))) {
             if (text.ends_with(":rw")) spec.workspace.access = access_mode::rw;
             text.resize(text.size() - 3);
           }
           spec.workspace.host_path = text;
         },
         "mount a host directory at /workspace (default ro)")
      ->type_name("PATH[:ro|:rw]");
  cmd.add_option_function<std::string>(
         "--workdir,-w", [&cl](const std::string& dir) { cl.spec.workdir = cl.exec.workdir = dir; },
         "working directory inside the sandbox")
      ->type_name("DIR");
  cmd.add_option("--user,-u", spec.user, "user (default 1000:1000)")->type_name("UID[:GID]");
  cmd.add_option("--network", spec.network_mode,
                 "loosen: a network mode other than none (never host)")
      ->type_name("MODE");
  cmd.add_flag("--writable-root", spec.writable_root, "loosen: a writable root filesystem");
  cmd.add_option("--allow-host", spec.allow_hosts,
                 "egress to HOST (or *.DOMAIN) through corral's proxy, within the policy's "
                 "egress.allow (repeatable)")
      ->type_name("HOST")
      ->allow_extra_args(false);
}

// The flags of one command's run: `run` sets them on the sandbox too, `create` only there
// (the defaults of later `corral exec`s), `exec` only on the command.
enum class exec_target { run, create, exec };

void exec_flags(CLI::App& cmd, command_line& cl, exec_target target) {
  cmd.option_defaults()->group(target == exec_target::create ? "Defaults of its commands"
                                                             : "Exec flags");
  const bool on_exec = target != exec_target::create;
  const bool on_spec = target != exec_target::exec;
  duration_flag(
      cmd, "--timeout",
      [&cl, on_exec, on_spec](auto d) {
        if (on_exec) cl.exec.timeout = d;
        if (on_spec) cl.spec.exec_timeout = d;
      },
      "kill the command (its whole process tree) after D (default 60s)");
  size_flag(
      cmd, "--max-output", true,
      [&cl, on_exec, on_spec](int64_t n) {
        const auto cap = static_cast<uint64_t>(n);
        if (on_exec) cl.exec.max_stdout = cl.exec.max_stderr = cap;
        if (on_spec) cl.spec.max_stdout = cl.spec.max_stderr = cap;
      },
      "keep at most SIZE of stdout and of stderr (default 1m)");
  if (target == exec_target::create) return;
  if (target == exec_target::exec) {
    env_flag(cmd, {&cl.exec.env}, "environment for this command only (repeatable)");
    cmd.add_option("--workdir,-w", cl.exec.workdir, "working directory for this command")
        ->type_name("DIR");
  }
  cmd.add_flag("--stdin,-i", cl.use_stdin, "pass this process's stdin to the command");
  cmd.add_flag("--json", cl.json, "print the result as JSON instead of streaming");
}

void run_flags(CLI::App& cmd, command_line& cl) {
  sandbox_flags(cmd, cl);
  exec_flags(cmd, cl, exec_target::run);
}

void create_flags(CLI::App& cmd, command_line& cl) {
  cmd.add_option("KEY", cl.keys, "the sandbox's key")->required()->expected(1)->type_name("");
  cmd.add_flag("--json", cl.json, "print its info as JSON");
  sandbox_flags(cmd, cl);
  exec_flags(cmd, cl, exec_target::create);
}

void exec_command_flags(CLI::App& cmd, command_line& cl) {
  cmd.add_option("KEY", cl.keys, "the sandbox's key")->required()->expected(1)->type_name("");
  exec_flags(cmd, cl, exec_target::exec);
}

void ls_flags(CLI::App& cmd, command_line& cl) {
  cmd.add_flag("--json", cl.json, "print the list as JSON");
}

void stats_flags(CLI::App& cmd, command_line& cl) {
  cmd.add_flag("--json", cl.json, "print the counters as JSON");
}

void rm_flags(CLI::App& cmd, command_line& cl) {
  cmd.add_option("KEY", cl.keys, "the sandboxes' keys")->type_name("");
  cmd.add_flag("--all", cl.all, "release all of this runtime's sandboxes");
}

void prune_flags(CLI::App& cmd, command_line& cl) {
  duration_flag(
      cmd, "--idle", [&cl](auto d) { cl.idle = d; }, "release sandboxes unused for D");
  duration_flag(
      cmd, "--max-age", [&cl](auto d) { cl.max_age = d; }, "release sandboxes older than D");
}

void no_flags(CLI::App&, command_line&) {}

void node_flags(CLI::App& cmd, command_line& cl) {
  auto& o = cl.serve;
  value_flag(
      cmd, "--listen", "HOST:PORT", "HOST:PORT (port 0 picks one)",
      [](const std::string& text) {
        auto where = parse_node_address(text, true);
        return where ? std::optional{*where} : std::nullopt;
      },
      [&o](const node_address& where) { o.listen = where; },
      "where to listen (default 127.0.0.1:4747; port 0 picks one). Every client needs a "
      "certificate of the node's CA, loopback included.");
  cmd.add_option("--name", o.name, "node name in container labels (default: the hostname)")
      ->type_name("NAME");
  duration_flag(
      cmd, "--grace", [&o](auto d) { o.grace = d; },
      "time running commands get at shutdown (default 10s)");
  cmd.add_flag("--keep-sandboxes", o.keep_sandboxes,
               "keep sandboxes at shutdown, for the next start to adopt");
  cmd.add_option("--warm", o.warm,
                 "keep N sandboxes of the default spec started and unbound: an acquire of that "
                 "spec takes one in a few ms (default 0: none)")
      ->type_name("N")
      ->check(CLI::Range(0, 10000));
  cmd.add_option("--warm-max", o.warm_max,
                 "how far misses grow the warm pool (default twice --warm)")
      ->type_name("N")
      ->check(CLI::Range(0, 10000));
  cmd.add_option("--audit-log", o.audit_log,
                 "append one JSON line per request that changes something (acquire, exec, "
                 "release, prune) to FILE (created 0600)")
      ->type_name("FILE");
  cmd.add_option("--log-format", o.log_format, "log line format (default text)")
      ->type_name("F")
      ->check(CLI::IsMember({"text", "json"}));
  cmd.add_option("--log-level", o.log_level, "log level (default info)")
      ->type_name("L")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  auto* issue = cmd.add_subcommand(
      "issue-cert",
      "Write a client certificate of the node's CA (in --tls-dir) to --out DIR: client.pem, "
      "client.key, ca.pem, for `corral --tls-dir DIR`.");
  issue->add_option("NAME", o.issue.name, "the client's name (its certificate's CN)")
      ->required()
      ->type_name("");
  issue->add_option("--out", o.issue.out, "a directory to make (0700); hand it to the client")
      ->required()
      ->type_name("DIR");
  count_flag(*issue, "--days", o.issue.days, 1, 36500, "validity in days (default 365)");
}

void policy_flags(CLI::App& cmd, command_line& cl) {
  cmd.add_option("ACTION", cl.policy_action, "check: validate FILE, print the effective policy")
      ->required()
      ->check(CLI::IsMember({"check"}))
      ->type_name("");
  cmd.add_option("FILE", cl.policy_path, "the policy file (JSON)")->required()->type_name("");
}

// -- the command line, described once ----------------------------------------------------------

struct command {
  const char* name;
  const char* synopsis;     // after "corral " in usage lines
  const char* summary;      // its line in `corral --help`
  const char* description;  // more, in `corral NAME --help`
  void (*flags)(CLI::App&, command_line&);
  int (*handler)(command_line&);
  bool takes_argv;  // `-- CMD...` follows
};

constexpr command commands[] = {
    {"run", "run [flags] -- CMD...", "create a sandbox, run CMD (streamed), remove it",
     "Create a sandbox, run CMD in it with its output streamed, remove it, exit with CMD's code.",
     run_flags, cmd_run, true},
    {"create", "create KEY [flags]", "create (or find) the sandbox KEY and keep it",
     "Create the sandbox KEY (or find it, if it exists) and keep it for later `corral exec KEY`.",
     create_flags, cmd_create, false},
    {"exec", "exec [flags] KEY -- CMD...", "run CMD in the sandbox KEY (streamed)",
     "Run CMD in the sandbox KEY.", exec_command_flags, cmd_exec, true},
    {"ls", "ls [--json]", "list this runtime's sandboxes", "List this runtime's sandboxes.",
     ls_flags, cmd_ls, false},
    {"stats", "stats [--json]", "print the runtime's counters (sandboxes, execs, warm pool)",
     "Print the runtime's counters: live sandboxes and capacity, totals, execs in flight, and\n"
     "the warm pool's size, hits, misses and mean claim and make times.",
     stats_flags, cmd_stats, false},
    {"rm", "rm KEY... | --all", "release sandboxes (stop, then remove)",
     "Release sandboxes: stop (grace period), then remove.", rm_flags, cmd_rm, false},
    {"prune", "prune [--idle D] [--max-age D]", "release sandboxes idle or older than D",
     "Release sandboxes unused for D, or older than D. Sandboxes with a command running are "
     "never pruned.",
     prune_flags, cmd_prune, false},
    {"version", "version", "print versions", "Print the versions of corral, its protocol and CAF.",
     no_flags, cmd_version, false},
    {"node", "node [flags]", "serve a runtime to remote clients (CAF network transport)",
     "Serve a runtime (one supervisor) to clients over CAF's network transport until SIGTERM or\n"
     "SIGINT; then stop accepting, give running commands the grace period, release the node's\n"
     "sandboxes (or keep them), exit 0. A second signal exits at once (130).",
     node_flags, cmd_node, false},
    {"policy", "policy check FILE", "validate a policy file; print the effective policy",
     "Validate the policy file FILE and print the effective policy as JSON, every default\n"
     "filled in (exit 0); a bad file: the error, naming the key and line, on stderr (125).\n"
     "The schema: README.md, \"The policy file\".",
     policy_flags, cmd_policy, false},
};

const command* find_command(const std::string& name) {
  for (const auto& c : commands)
    if (name == c.name) return &c;
  return nullptr;
}

constexpr const char* main_description =
    "corral — run commands in hardened, disposable Docker sandboxes";
constexpr const char* global_group = "Global flags (before or after the command)";
constexpr const char* exit_codes_help =
    "Exit codes: the command's own; 124 timed out; 137 killed or OOM-killed; 125 an error of\n"
    "corral or the engine (message on stderr); 126/127 command not executable / not found.\n";

// Help from the table: usage lines are the commands' synopses, usage comes first.
class help_formatter : public CLI::Formatter {
 public:
  std::string make_help(const CLI::App* app, std::string name, CLI::AppFormatMode) const override {
    const bool top = app->get_parent() == nullptr;
    return make_usage(app, name) + "\n" + make_description(app) +
           (top ? make_subcommands(app, CLI::AppFormatMode::Normal) : make_positionals(app)) +
           make_groups(app, CLI::AppFormatMode::Normal) + "\n" + make_footer(app);
  }
  std::string make_usage(const CLI::App* app, std::string) const override {
    const auto* c = find_command(app->get_name());
    return std::string("Usage: corral ") +
           (c ? c->synopsis : "[global flags] COMMAND [flags] [-- CMD...]") + "\n";
  }
  std::string make_subcommand(const CLI::App* sub) const override {
    const auto* c = find_command(sub->get_name());
    std::stringstream out;
    CLI::detail::format_help(out, std::string("corral ") + c->synopsis, c->summary, 38);
    return out.str();
  }
};

void describe(CLI::App& app, command_line& cl) {
  app.formatter(std::make_shared<help_formatter>());
  app.fallthrough();  // a command's unknown flags may be global flags
  app.require_subcommand(0, 1);
  app.set_help_flag("-h,--help", "help (also: corral COMMAND --help)")->group(global_group);
  app.option_defaults()->group(global_group);
  app.add_option("--runtime", cl.target.runtime,
                 "runtime name in container labels (default \"local\")")
      ->type_name("NAME")
      ->envname("CORRAL_RUNTIME");
  app.add_option("--node", cl.target.nodes,
                 "talk to a `corral node` instead of an embedded runtime; "
                 "several, comma-separated, spread sandboxes over the nodes")
      ->type_name("HOST:PORT[,...]")
      ->envname("CORRAL_NODE");
  app.add_option("--principal", cl.target.principal,
                 "with --node: who this client speaks for (keys, quotas and the audit are per "
                 "principal; default: the CN of the client certificate, else the user's name)")
      ->type_name("NAME")
      ->envname("CORRAL_PRINCIPAL");
  app.add_option("--policy", cl.policy_file,
                 "the operator's policy (JSON) for the embedded runtime or `corral node` "
                 "(default: /etc/corral/policy.json if it exists, else the built-in one)")
      ->type_name("FILE");
  app.add_option("--tls-cert", cl.target.tls.certificate,
                 "this side's certificate chain (PEM), for --node and `corral node`")
      ->type_name("FILE");
  app.add_option("--tls-key", cl.target.tls.key, "its private key")->type_name("FILE");
  app.add_option("--tls-ca", cl.target.tls.ca, "the CA the peer's certificate must chain to")
      ->type_name("FILE");
  app.add_option("--tls-dir", cl.target.tls.dir,
                 "without --tls-cert/--tls-key/--tls-ca: a node's material (made on first "
                 "start), a client's ca.pem, client.pem, client.key (default for both, as root: "
                 "/var/lib/corral/tls)")
      ->type_name("DIR")
      ->envname("CORRAL_TLS_DIR");
  app.footer(exit_codes_help);
  for (const auto& c : commands) {
    auto* sub = app.add_subcommand(c.name, c.description);
    sub->group("Commands");
    sub->set_help_flag("-h,--help", "print this help")->group("Flags");
    sub->option_defaults()->group("Flags");
    sub->footer(
        "Global flags (--runtime, --node, --principal, --policy, --tls-*) go before or\n"
        "after the command: see `corral --help`.\n");
    c.flags(*sub, cl);
  }
}

// Why arguments were left over: a flag of another command, an unknown flag, a stray
// argument, or an unknown command.
std::string explain_extras(const CLI::App& app, const CLI::App* chosen) {
  const auto extras = app.remaining(true);
  const std::string where = chosen ? "`corral " + chosen->get_name() + "`" : "corral";
  for (const auto& x : extras) {
    // The test kit left the shipped CLI: say where it went.
    if (!chosen && (x == "stress" || x == "fake-engine"))
      return "unknown command '" + x + "': it is the dev tool corral-" + x +
             " now (built beside corral, not installed)";
  }
  for (const auto& x : extras) {
    if (x.size() < 2 || x[0] != '-') continue;
    const auto flag = x.substr(0, x.find('='));
    std::string owners;
    for (const auto* sub : app.get_subcommands({}))
      if (sub != chosen && sub->get_option_no_throw(flag))
        owners += (owners.empty() ? "" : ", ") + sub->get_name();
    if (owners.empty()) return "unknown flag " + flag + " for " + where;
    return flag + " is not a flag of " + where + " (it belongs to: " + owners + ")";
  }
  if (extras.empty()) return "unexpected arguments";
  if (!chosen) return "unknown command '" + extras.front() + "'";
  return where + " takes no argument '" + extras.front() + "'";
}

}  // namespace

int main(int argc, char** argv) {
  command_line cl;
  std::vector<std::string> args(argv + 1, argv + argc);
  // `--` ends corral's arguments: what follows is run/exec's command, never a flag of ours.
  const auto dashes = std::find(args.begin(), args.end(), std::string("--"));
  const bool has_argv = dashes != args.end();
  if (has_argv) cl.argv.assign(dashes + 1, args.end());
  args.erase(dashes, args.end());

  CLI::App app{main_description, "corral"};
  describe(app, cl);
  std::reverse(args.begin(), args.end());  // CLI11 takes them reversed
  const CLI::App* chosen = nullptr;
  try {
    app.parse(args);
    chosen = app.get_subcommands().empty() ? nullptr : app.get_subcommands().front();
  } catch (const CLI::CallForHelp&) {
    std::printf("%s", app.help().c_str());
    return exit_code::ok;
  } catch (const CLI::ParseError& e) {
    chosen = app.get_subcommands().empty() ? nullptr : app.get_subcommands().front();
    // A flag nobody took explains what followed (its value taken for a KEY, say): it first.
    const auto extras = app.remaining(true);
    const bool stray_flag = std::any_of(extras.begin(), extras.end(), [](const std::string& x) {
      return x.size() > 1 && x[0] == '-';
    });
    const bool extras_error = dynamic_cast<const CLI::ExtrasError*>(&e) != nullptr;
    return usage_error(chosen ? chosen->get_name() : "",
                       stray_flag || extras_error ? explain_extras(app, chosen) : e.what());
  }
  if (!chosen) {
    std::printf("%s", app.help().c_str());
    return exit_code::error;
  }
  const auto& c = *find_command(chosen->get_name());
  if (has_argv && !c.takes_argv)
    return usage_error(c.name, std::string(c.name) + " takes no command after --");
  return c.handler(cl);
}
