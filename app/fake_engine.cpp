// The fake Docker engine: see fake_engine.hpp. One io_context, one thread; every object
// below lives on that thread, and the public methods reach it by posting.
#include "app/fake_engine.hpp"

#include <pthread.h>
#include <signal.h>
#include <simdjson.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <filesystem>
#include <functional>
#include <future>
#include <iostream>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string_view>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>

#include "app/cli_values.hpp"
#include "docker/asio.hpp"
#include "docker/json.hpp"
#include "messages/agent_protocol.hpp"

namespace corral::app {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using unix_socket = asio::local::stream_protocol::socket;
using docker::json_writer;
using std::chrono::microseconds;
using std::chrono::milliseconds;

constexpr std::string_view api_version = "1.41";
constexpr std::string_view engine_version = "20.10.24-fake";
constexpr std::size_t frame_size = 32 * 1024;
constexpr std::size_t max_request_body = 64u << 20;

// -- small text helpers ---------------------------------------------------------------------

std::string url_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2])));
      i += 2;
    } else if (s[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::map<std::string, std::string> parse_query(std::string_view q) {
  std::map<std::string, std::string> out;
  while (!q.empty()) {
    auto amp = q.find('&');
    auto part = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view{} : q.substr(amp + 1);
    if (part.empty()) continue;
    auto eq = part.find('=');
    if (eq == std::string_view::npos)
      out[url_decode(part)] = "";
    else
      out[url_decode(part.substr(0, eq))] = url_decode(part.substr(eq + 1));
  }
  return out;
}

bool truthy(const std::map<std::string, std::string>& q, const std::string& key) {
  auto it = q.find(key);
  return it != q.end() && (it->second == "1" || it->second == "true" || it->second == "True");
}

std::string trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return std::string(s);
}

// Whitespace-separated words with single and double quotes removed (no escapes, no
// expansions): enough for the scripts tests write.
std::vector<std::string> words(std::string_view s) {
  std::vector<std::string> out;
  std::string cur;
  bool have = false;
  char quote = 0;
  for (char c : s) {
    if (quote) {
      if (c == quote)
        quote = 0;
      else
        cur.push_back(c);
    } else if (c == '\'' || c == '"') {
      quote = c;
      have = true;
    } else if (std::isspace(static_cast<unsigned char>(c))) {
      if (have || !cur.empty()) out.push_back(std::move(cur));
      cur.clear();
      have = false;
    } else {
      cur.push_back(c);
    }
  }
  if (have || !cur.empty()) out.push_back(std::move(cur));
  return out;
}

std::string basename_of(std::string_view path) {
  auto slash = path.rfind('/');
  return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
}

// "1.5", "2s", "1m", "100ms" (busybox sleep takes the suffixes s, m, h, d).
std::optional<milliseconds> parse_sleep(std::string_view s) {
  if (s.empty()) return std::nullopt;
  double unit = 1000;
  if (s.size() > 2 && s.substr(s.size() - 2) == "ms") {
    unit = 1;
    s.remove_suffix(2);
  } else if (s.back() == 's') {
    s.remove_suffix(1);
  } else if (s.back() == 'm') {
    unit = 60'000;
    s.remove_suffix(1);
  } else if (s.back() == 'h') {
    unit = 3'600'000;
    s.remove_suffix(1);
  } else if (s.back() == 'd') {
    unit = 86'400'000;
    s.remove_suffix(1);
  }
  std::string text(s);
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || !(v >= 0)) return std::nullopt;
  const double ms = v * unit;
  if (ms > 1e15) return milliseconds(static_cast<int64_t>(1e15));
  return milliseconds(static_cast<int64_t>(ms));
}

// "1024", "64k", "1m" (busybox head -c suffixes b, k, m).
std::optional<uint64_t> parse_count(std::string_view s) {
  if (s.empty()) return std::nullopt;
  uint64_t mult = 1;
  const char last = static_cast<char>(std::tolower(static_cast<unsigned char>(s.back())));
  if (last == 'k')
    mult = 1024;
  else if (last == 'm')
    mult = 1024 * 1024;
  else if (last == 'b')
    mult = 512;
  if (mult != 1) s.remove_suffix(1);
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
    if (v > (1ULL << 40)) return std::nullopt;
  }
  return v * mult;
}

std::string rfc3339(std::chrono::system_clock::time_point t) {
  const auto ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  const std::time_t secs = static_cast<std::time_t>(ns / 1'000'000'000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char frac[16];
  std::snprintf(frac, sizeof frac, ".%09lldZ", static_cast<long long>(ns % 1'000'000'000));
  return std::string(buf) + frac;
}

std::string frame_header(uint8_t stream, uint32_t size) {
  std::string h(8, '\0');
  h[0] = static_cast<char>(stream);
  h[4] = static_cast<char>((size >> 24) & 0xff);
  h[5] = static_cast<char>((size >> 16) & 0xff);
  h[6] = static_cast<char>((size >> 8) & 0xff);
  h[7] = static_cast<char>(size & 0xff);
  return h;
}

bool valid_container_name(std::string_view n) {
  if (n.size() < 2) return false;
  if (!std::isalnum(static_cast<unsigned char>(n[0]))) return false;
  return std::all_of(n.begin() + 1, n.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '_' || c == '.' || c == '-';
  });
}

// -- programs: what an exec or a container's main process "does" ---------------------------

struct step {
  enum kind_t : uint8_t { out, zeros, sleep, echo_stdin } kind = out;
  uint8_t stream = 1;  // 1 stdout, 2 stderr
  std::string text;
  uint64_t count = 0;
  milliseconds duration{0};
};

struct program {
  std::vector<step> steps;
  int exit_code = 0;
  bool forever = false;  // a sleep beyond max_sleep (main processes only)
  std::string kill_tag;  // corral's exec killer: CORRAL_EXEC value to kill
  bool reads_stdin = false;
};

void add_sleep(program& p, milliseconds d, milliseconds cap, bool main_process) {
  if (d > cap) {
    if (main_process) {
      p.forever = true;
      return;
    }
    d = cap;
  }
  step s;
  s.kind = step::sleep;
  s.duration = d;
  p.steps.push_back(std::move(s));
}

void add_out(program& p, uint8_t stream, std::string text) {
  if (text.empty()) return;
  step s;
  s.kind = step::out;
  s.stream = stream;
  s.text = std::move(text);
  p.steps.push_back(std::move(s));
}

// One simple command; returns its status, or nullopt when it was `exit` (status in code).
std::optional<int> run_simple(program& p, const std::vector<std::string>& w, milliseconds cap,
                              bool main_process, bool in_shell, int& exit_code) {
  if (w.empty()) return 0;
  const std::string cmd = basename_of(w[0]);
  if (cmd == "echo") {
    std::vector<std::string> args(w.begin() + 1, w.end());
    bool newline = true;
    uint8_t stream = 1;
    if (!args.empty() && args.front() == "-n") {
      newline = false;
      args.erase(args.begin());
    }
    if (!args.empty() && (args.back() == ">&2" || args.back() == "1>&2")) {
      stream = 2;
      args.pop_back();
    }
    std::string text;
    for (std::size_t i = 0; i < args.size(); ++i) text += (i ? " " : "") + args[i];
    if (newline) text += '\n';
    add_out(p, stream, std::move(text));
    return 0;
  }
  if (cmd == "sleep") {
    if (w.size() < 2) return 1;
    auto d = parse_sleep(w[1]);
    if (!d) return 1;
    add_sleep(p, *d, cap, main_process);
    return 0;
  }
  if (cmd == "true" || cmd == ":") return 0;
  if (cmd == "false") return 1;
  if (cmd == "exit" && in_shell) {
    exit_code = w.size() > 1 ? std::atoi(w[1].c_str()) & 0xff : 0;
    return std::nullopt;
  }
  if (cmd == "head" && w.size() >= 4 && w[1] == "-c" && w[3] == "/dev/zero") {
    auto n = parse_count(w[2]);
    if (!n) return 1;
    step s;
    s.kind = step::zeros;
    s.count = *n;
    p.steps.push_back(std::move(s));
    return 0;
  }
  if (cmd == "cat" && w.size() == 1) {
    step s;
    s.kind = step::echo_stdin;
    p.steps.push_back(std::move(s));
    p.reads_stdin = true;
    return 0;
  }
  return -1;  // unknown
}

program interpret(const std::vector<std::string>& argv, milliseconds cap, bool main_process) {
  program p;
  if (argv.empty()) return p;
  const std::string cmd = basename_of(argv[0]);
  if ((cmd == "sh" || cmd == "bash" || cmd == "ash") && argv.size() >= 3 && argv[1] == "-c") {
    if (argv.size() >= 5 && argv[3] == "corral-kill") {
      p.kill_tag = argv[4];
      return p;
    }
    // Pieces split on ';', '&&', '||' and newlines; each is one simple command.
    const std::string& script = argv[2];
    std::vector<std::string> pieces;
    std::string cur;
    char quote = 0;
    for (std::size_t i = 0; i < script.size(); ++i) {
      const char c = script[i];
      if (quote) {
        if (c == quote) quote = 0;
        cur.push_back(c);
        continue;
      }
      if (c == '\'' || c == '"') {
        quote = c;
        cur.push_back(c);
      } else if (c == ';' || c == '\n') {
        pieces.push_back(std::move(cur));
        cur.clear();
      } else if ((c == '&' || c == '|') && i + 1 < script.size() && script[i + 1] == c) {
        pieces.push_back(std::move(cur));
        cur.clear();
        ++i;
      } else {
        cur.push_back(c);
      }
    }
    pieces.push_back(std::move(cur));
    int status = 0;
    for (const auto& raw : pieces) {
      const std::string piece = trim(raw);
      if (piece.empty()) continue;
      int code = 0;
      auto r = run_simple(p, words(piece), cap, main_process, true, code);
      if (!r) {
        p.exit_code = code;
        return p;
      }
      if (*r < 0) {
        // Not a command we model: its text is its output (the brief's "echo-like").
        add_out(p, 1, piece + "\n");
        status = 0;
      } else {
        status = *r;
      }
      if (p.forever) break;
    }
    p.exit_code = status;
    return p;
  }
  int code = 0;
  auto r = run_simple(p, argv, cap, main_process, false, code);
  if (r && *r >= 0) {
    p.exit_code = *r;
    return p;
  }
  p.steps.clear();
  add_out(p, 1,
          "OCI runtime exec failed: exec failed: unable to start container process: exec: \"" +
              argv[0] + "\": executable file not found in $PATH: unknown\r\n");
  p.exit_code = 126;
  return p;
}

// What one container's in-memory agent holds (see "the in-memory agent" below).
class fake_agent_conn;
struct fake_agent_state {
  std::string socket_path;  // in the run directory: a link to the fake's one agent listener
  std::vector<std::weak_ptr<fake_agent_conn>> conns;
  std::string sandbox_id, key;
  int64_t deadline = 0, idle_limit = 0;
};

// All agents of the fake share one listener (ten thousand listeners would not fit a process's
// descriptors): a connection names its sandbox in `configure`, by the corral.sandbox-id label.
struct fake_agent_registry {
  std::unordered_map<std::string, std::weak_ptr<fake_agent_state>> by_sandbox_id;
  milliseconds max_sleep{0};
};

// -- the in-memory agent --------------------------------------------------------------------
//
// A container created with corral's agent as its entrypoint (`/corral/agent`, the run
// directory bound at /corral/run) gets an agent here: a listening unix socket at the bound
// host directory's agent.sock that speaks messages/agent_protocol.hpp, and runs each command
// as a `program` (the same interpreter as execs) with the agent's timeout and output caps. It
// ends with the container: every connection closes, as when the real agent (PID 1) dies.

namespace proto = corral::agent_protocol;

struct fake_agent_command {
  uint32_t id = 0;
  program prog;
  std::size_t next_step = 0;
  uint64_t cap[2] = {0, 0};
  uint64_t total[2] = {0, 0};
  uint64_t sent[2] = {0, 0};
  std::string stdin_data;
  bool stdin_done = false;
  bool waiting_for_stdin = false;
  bool done = false;
  std::unique_ptr<asio::steady_timer> step_timer;
  std::unique_ptr<asio::steady_timer> deadline;
};

class fake_agent_conn : public std::enable_shared_from_this<fake_agent_conn> {
 public:
  fake_agent_conn(asio::io_context& io, unix_socket sock,
                  std::shared_ptr<fake_agent_registry> registry)
      : io_(io), sock_(std::move(sock)), registry_(std::move(registry)) {}

  void start() { read_more(); }

  void close() {
    if (closed_) return;
    closed_ = true;
    for (auto& [id, c] : commands_) cancel(*c);
    commands_.clear();
    beast::error_code ignored;
    sock_.close(ignored);
  }

 private:
  void read_more() {
    sock_.async_wait(unix_socket::wait_read, [self = shared_from_this()](beast::error_code ec) {
      if (self->closed_) return;
      if (ec) return self->close();
      static thread_local std::array<char, 64 * 1024> chunk;
      beast::error_code read_ec;
      sock_nonblocking(self->sock_);
      const std::size_t n = self->sock_.read_some(asio::buffer(chunk), read_ec);
      if (read_ec == asio::error::would_block || read_ec == asio::error::try_again)
        return self->read_more();
      if (read_ec) return self->close();
      self->in_.append(chunk.data(), n);
      std::size_t offset = 0;
      for (;;) {
        std::size_t used = 0;
        bool bad = false;
        auto f = proto::next_frame(std::string_view(self->in_).substr(offset), used, bad);
        if (bad) return self->close();
        if (!f) break;
        offset += used;
        self->handle(*f);
        if (self->closed_) return;
      }
      self->in_.erase(0, offset);
      if (self->in_.empty()) std::string().swap(self->in_);
      self->read_more();
    });
  }

  static void sock_nonblocking(unix_socket& s) {
    beast::error_code ignored;
    if (!s.non_blocking()) s.non_blocking(true, ignored);
  }

  void send(std::string frame) {
    out_.push_back(std::move(frame));
    if (out_.size() == 1) write_next();
  }

  void write_next() {
    if (out_.empty() || closed_) return;
    asio::async_write(sock_, asio::buffer(out_.front()),
                      [self = shared_from_this()](beast::error_code ec, std::size_t) {
                        if (self->closed_) return;
                        if (ec) return self->close();
                        self->out_.pop_front();
                        self->write_next();
                      });
  }

  void handle(const proto::frame_view& f) {
    proto::reader r(f.payload);
    if (!greeted_) {
      const uint32_t v = r.u32();
      if (f.type != proto::frame::hello || v != proto::version) {
        send(proto::writer(proto::frame::refused, f.id).str("hello first").finish());
        return close();
      }
      greeted_ = true;
      // Which sandbox this is comes with `configure`: until then the welcome names none, so
      // corral binds it on every link (harmless here).
      send(proto::writer(proto::frame::welcome, f.id)
               .u32(proto::version)
               .str("")
               .str("")
               .i64(0)
               .i64(0)
               .str("")
               .u32(0)
               .strs({})
               .finish());
      return;
    }
    switch (f.type) {
      case proto::frame::configure: {
        const std::string sandbox_id = r.str();
        auto it = registry_->by_sandbox_id.find(sandbox_id);
        agent_ = it == registry_->by_sandbox_id.end() ? nullptr : it->second.lock();
        if (!agent_) {
          send(proto::writer(proto::frame::refused, f.id).str("no such sandbox").finish());
          return close();
        }
        std::string key = r.str();
        if (!agent_->key.empty() && agent_->key != key) {
          send(proto::writer(proto::frame::refused, f.id)
                   .str("configure: the sandbox is bound to another key")
                   .finish());
          return close();
        }
        agent_->conns.push_back(weak_from_this());
        agent_->sandbox_id = sandbox_id;
        agent_->key = std::move(key);
        agent_->deadline = r.i64();
        agent_->idle_limit = r.i64();
        send(proto::writer(proto::frame::pong, f.id).finish());
        return;
      }
      case proto::frame::start:
        return start_command(f.id, r);
      case proto::frame::stdin_data:
        if (auto it = commands_.find(f.id); it != commands_.end()) {
          it->second->stdin_data += r.str();
        }
        return;
      case proto::frame::stdin_close:
        if (auto it = commands_.find(f.id); it != commands_.end()) {
          it->second->stdin_done = true;
          if (it->second->waiting_for_stdin) {
            it->second->waiting_for_stdin = false;
            step(it->second);
          }
        }
        return;
      case proto::frame::signal:
        if (auto it = commands_.find(f.id); it != commands_.end() && r.u32() == 9)
          finish(it->second, proto::end::killed, 137);
        return;
      case proto::frame::ping:
        send(proto::writer(proto::frame::pong, f.id).finish());
        return;
      case proto::frame::credit:
      case proto::frame::shutdown:
        return;
      default:
        return close();
    }
  }

  void start_command(uint32_t id, proto::reader& r) {
    const auto argv = r.strs();
    r.strs();  // env
    r.str();   // workdir
    r.u32();
    r.u32();
    const int64_t timeout = r.i64();
    auto c = std::make_shared<fake_agent_command>();
    c->id = id;
    c->cap[0] = r.u64();
    c->cap[1] = r.u64();
    r.u8();   // has stdin: stdin frames follow
    r.u64();  // credit: this agent does not wait for readers
    if (!r.done() || argv.empty() || commands_.count(id) || !agent_) {
      send(proto::writer(proto::frame::refused, id).str("start: malformed").finish());
      return;
    }
    c->prog = interpret(argv, registry_->max_sleep, false);
    c->step_timer = std::make_unique<asio::steady_timer>(io_);
    commands_[id] = c;
    if (c->prog.exit_code == 126 && c->prog.steps.size() == 1 &&
        c->prog.steps[0].text.find("executable file not found") != std::string::npos) {
      c->prog.steps.clear();
      return finish(c, proto::end::spawn_failed, 127, "executing " + argv[0] + ": not found");
    }
    if (timeout > 0) {
      c->deadline = std::make_unique<asio::steady_timer>(io_);
      c->deadline->expires_after(std::chrono::milliseconds(timeout));
      std::weak_ptr<fake_agent_command> weak = c;
      c->deadline->async_wait([self = shared_from_this(), weak](beast::error_code ec) {
        if (ec) return;
        if (auto cmd = weak.lock()) self->finish(cmd, proto::end::timed_out, 124);
      });
    }
    step(c);
  }

  void output(fake_agent_command& c, uint8_t stream, std::string_view bytes) {
    const int s = stream == 2 ? 1 : 0;
    c.total[s] += bytes.size();
    const uint64_t room = c.cap[s] - std::min(c.cap[s], c.sent[s]);
    const auto take = static_cast<std::size_t>(std::min<uint64_t>(room, bytes.size()));
    if (take == 0) return;
    c.sent[s] += take;
    send(proto::writer(proto::frame::output, c.id).u8(stream).str(bytes.substr(0, take)).finish());
  }

  void step(const std::shared_ptr<fake_agent_command>& c) {
    while (!c->done && !closed_) {
      if (c->next_step >= c->prog.steps.size())
        return finish(c, proto::end::exited, c->prog.exit_code);
      const auto& x = c->prog.steps[c->next_step++];
      switch (x.kind) {
        case step::sleep: {
          std::weak_ptr<fake_agent_command> weak = c;
          c->step_timer->expires_after(x.duration);
          c->step_timer->async_wait([self = shared_from_this(), weak](beast::error_code ec) {
            if (ec) return;
            if (auto cmd = weak.lock()) self->step(cmd);
          });
          return;
        }
        case step::echo_stdin:
          if (!c->stdin_done) {
            --c->next_step;
            c->waiting_for_stdin = true;
            return;
          }
          output(*c, 1, c->stdin_data);
          break;
        case step::out:
          output(*c, x.stream, x.text);
          break;
        case step::zeros: {
          const std::string zeros(32 * 1024, '\0');
          for (uint64_t left = x.count; left > 0;) {
            const auto n = static_cast<std::size_t>(std::min<uint64_t>(left, zeros.size()));
            output(*c, 1, std::string_view(zeros).substr(0, n));
            left -= n;
          }
          break;
        }
      }
    }
  }

  void cancel(fake_agent_command& c) {
    c.done = true;
    if (c.step_timer) c.step_timer->cancel();
    if (c.deadline) c.deadline->cancel();
  }

  void finish(const std::shared_ptr<fake_agent_command>& c, proto::end how, int32_t code,
              const std::string& detail = {}) {
    if (c->done) return;
    cancel(*c);
    send(proto::writer(proto::frame::exited, c->id)
             .u8(static_cast<uint8_t>(how))
             .i32(code)
             .i32(how == proto::end::exited ? 0 : 9)
             .u64(c->total[0])
             .u64(c->total[1])
             .u8(c->total[0] > c->sent[0] ? 1 : 0)
             .u8(c->total[1] > c->sent[1] ? 1 : 0)
             .u8(0)
             .str(detail)
             .finish());
    commands_.erase(c->id);
  }

  asio::io_context& io_;
  unix_socket sock_;
  std::shared_ptr<fake_agent_registry> registry_;
  std::shared_ptr<fake_agent_state> agent_;  // once configured
  std::string in_;
  std::deque<std::string> out_;
  std::map<uint32_t, std::shared_ptr<fake_agent_command>> commands_;
  bool greeted_ = false;
  bool closed_ = false;
};

}  // namespace

// -- engine state ---------------------------------------------------------------------------

class session;

struct exec_rec {
  std::string id;
  std::string container_id;
  std::vector<std::string> cmd;
  std::vector<std::string> env;
  std::string user;
  bool attach_stdin = false;
  bool attach_stdout = true;
  bool attach_stderr = true;
  bool started = false;
  bool running = false;
  std::optional<int64_t> exit_code;
  int64_t pid = 0;
  program prog;
  std::size_t next_step = 0;
  std::shared_ptr<session> stream;  // while attached
  std::unique_ptr<asio::steady_timer> timer;
  std::string stdin_data;
  bool stdin_done = false;
  bool waiting_for_stdin = false;

  bool has_env(std::string_view entry) const {
    return std::find(env.begin(), env.end(), entry) != env.end();
  }
};

struct waiter {
  std::shared_ptr<session> s;
  std::string condition;  // not-running | next-exit | removed
};

struct container_rec {
  std::string id;
  std::string name;
  std::string image;
  std::vector<std::string> cmd;
  std::vector<std::string> entrypoint;
  std::vector<std::string> env;
  std::string user;
  std::string working_dir;
  std::map<std::string, std::string> labels;
  std::string host_config_json = "{}";
  std::string state = "created";
  int64_t exit_code = 0;
  bool oom_killed = false;
  int64_t pid = 0;
  int64_t created_unix = 0;
  std::string created;
  std::string started_at = "0001-01-01T00:00:00Z";
  std::string finished_at = "0001-01-01T00:00:00Z";
  std::vector<std::string> execs;
  std::unique_ptr<asio::steady_timer> main_timer;
  std::vector<waiter> waiters;
  std::shared_ptr<fake_agent_state> agent;  // while running with corral's agent as entrypoint

  bool running() const { return state == "running" || state == "paused"; }
};

struct subscriber {
  std::shared_ptr<session> s;
  std::map<std::string, std::vector<std::string>> filters;
};

struct route {
  std::string cls = "unknown";
  http::verb method = http::verb::get;
  std::vector<std::string> parts;  // decoded path segments after the version prefix
  std::string raw_path;            // without the version prefix, not decoded
  std::map<std::string, std::string> query;
};

class fake_engine::impl : public std::enable_shared_from_this<impl> {
 public:
  explicit impl(fake_engine_options o);

  void start();
  void stop();

  // All below on the I/O thread.
  void accept();
  void on_request(const std::shared_ptr<session>& s);
  void handle(const std::shared_ptr<session>& s, const route& r);
  void session_gone(uint64_t id) { sessions.erase(id); }

  // endpoints
  void ping(const std::shared_ptr<session>& s, const route& r);
  void version(const std::shared_ptr<session>& s);
  void info(const std::shared_ptr<session>& s);
  void create(const std::shared_ptr<session>& s, const route& r);
  void start_container(const std::shared_ptr<session>& s, container_rec& c);
  void stop_container(const std::shared_ptr<session>& s, container_rec& c, const route& r);
  void kill_container(const std::shared_ptr<session>& s, container_rec& c, const route& r);
  void remove_container(const std::shared_ptr<session>& s, const std::string& id, const route& r);
  void inspect(const std::shared_ptr<session>& s, const container_rec& c);
  void list(const std::shared_ptr<session>& s, const route& r);
  void wait(const std::shared_ptr<session>& s, container_rec& c, const route& r);
  void exec_create(const std::shared_ptr<session>& s, container_rec& c);
  void exec_start(const std::shared_ptr<session>& s, const std::string& id);
  void exec_inspect(const std::shared_ptr<session>& s, const std::string& id);
  void events(const std::shared_ptr<session>& s, const route& r);
  void logs(const std::shared_ptr<session>& s, const container_rec& c);
  void image(const std::shared_ptr<session>& s, const route& r);

  // lifecycle
  container_rec* find_container(const std::string& ref);
  void container_exit(container_rec& c, int64_t code);
  void emit(const container_rec& c, const std::string& action,
            std::map<std::string, std::string> extra = {});
  void run_exec(const std::shared_ptr<exec_rec>& e);
  void exec_step(const std::shared_ptr<exec_rec>& e);
  void finish_exec(const std::shared_ptr<exec_rec>& e, int64_t code, bool killed);
  void kill_execs_of(container_rec& c);
  void notify_waiters(container_rec& c, bool removed);
  void start_agent(container_rec& c);
  void stop_agent(container_rec& c);
  void accept_agent();

  // helpers
  bool roll(double p);
  double rate(const std::map<std::string, double>& by_class, double global,
              const std::string& cls) const;
  microseconds latency_of(const std::string& cls);
  // Runs `then` after `work` spent on one of the engine's CPUs (queueing for one first).
  void on_cpu(const std::shared_ptr<session>& s, microseconds work, bool heavy,
              std::function<void()> then);
  void next_cpu();
  std::string new_id();
  fake_engine_stats snapshot() const;
  std::vector<fake_container_view> view() const;
  bool image_exists(const std::string& image) const;

  template <class F>
  auto call(F f) -> decltype(f());

  // Members: the ones that handlers touch when the io_context destroys them come first, so
  // that they outlive it; everything holding sockets or timers comes after it.
  fake_engine_options opt;
  std::mt19937_64 fault_rng;
  std::mt19937_64 id_rng;
  std::mt19937_64 jitter_rng;
  fake_engine_stats st;
  std::unordered_map<uint64_t, std::weak_ptr<session>> sessions;
  uint64_t next_session = 1;
  int64_t next_pid = 1000;
  bool stopping = false;
  std::atomic<bool> running{false};
  std::thread::id io_thread_id;

  asio::io_context io;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  asio::local::stream_protocol::acceptor acceptor{io};
  asio::steady_timer accept_timer{io};
  asio::steady_timer agent_accept_timer{io};
  std::thread thread;
  std::mutex stop_mutex;

  std::unordered_map<std::string, std::shared_ptr<container_rec>> containers;
  std::unordered_map<std::string, std::string> names;  // name -> id
  std::unordered_map<std::string, std::shared_ptr<exec_rec>> execs;
  std::vector<subscriber> subscribers;
  // The in-memory agents' one listener (opened with the first agent container).
  std::shared_ptr<fake_agent_registry> agent_registry;
  std::unique_ptr<asio::local::stream_protocol::acceptor> agent_acceptor;
  std::string agent_listen_path;
  int cpus_busy = 0;
  std::deque<std::function<void()>> cpu_queue;
  simdjson::dom::parser json;
};

// -- a connection ---------------------------------------------------------------------------

class session : public std::enable_shared_from_this<session> {
 public:
  session(fake_engine::impl& eng, unix_socket sock, uint64_t id)
      : eng_(eng), sock_(std::move(sock)), timer_(eng.io), id_(id) {
    ++eng_.st.connections_open;
    ++eng_.st.connections_total;
  }

  ~session() {
    --eng_.st.connections_open;
    eng_.session_gone(id_);
  }

  uint64_t id() const { return id_; }
  bool closed() const { return closed_; }
  http::request<http::string_body>& req() { return req_; }
  asio::steady_timer& timer() { return timer_; }
  bool reset_instead_of_reply = false;

  void read_request() {
    if (closed_ || eng_.stopping) return;
    parser_.emplace();
    parser_->body_limit(max_request_body);
    http::async_read(sock_, buf_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, std::size_t) {
                       if (ec) return self->close();
                       self->req_ = self->parser_->release();
                       self->eng_.on_request(self);
                     });
  }

  // A normal response; then the next request (keep-alive) or the close.
  void reply(http::status status, std::string body,
             std::string_view content_type = "application/json",
             std::vector<std::pair<std::string, std::string>> headers = {}) {
    if (closed_) return;
    if (reset_instead_of_reply) return reset();
    auto res = std::make_shared<http::response<http::string_body>>(status, 11);
    res->set(http::field::server, "Docker/20.10.24-fake (linux)");
    res->set("Api-Version", api_version);
    res->set("Docker-Experimental", "false");
    res->set("Ostype", "linux");
    if (!content_type.empty() && !body.empty()) res->set(http::field::content_type, content_type);
    for (auto& [k, v] : headers) res->set(k, v);
    const bool keep = req_.keep_alive() && !eng_.stopping;
    res->keep_alive(keep);
    const bool head = req_.method() == http::verb::head;
    const auto length = body.size();
    res->body() = std::move(body);
    res->prepare_payload();
    if (head) {
      res->body().clear();
      res->content_length(length);
    }
    http::async_write(sock_, *res,
                      [self = shared_from_this(), res, keep](beast::error_code ec, std::size_t) {
                        if (ec) return self->close();
                        if (keep)
                          self->read_request();
                        else
                          self->close();
                      });
  }

  void reply_json(http::status status, std::string json) { reply(status, std::move(json) + "\n"); }

  void reply_error(http::status status, std::string_view message) {
    json_writer w;
    w.begin_object().field("message", message).end_object();
    reply_json(status, w.take());
  }

  // SO_LINGER 0, then close.
  void reset() {
    if (closed_) return;
    beast::error_code ignored;
    sock_.set_option(asio::socket_base::linger(true, 0), ignored);
    close();
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    beast::error_code ignored;
    sock_.shutdown(unix_socket::shutdown_both, ignored);
    sock_.close(ignored);
    timer_.cancel();
    out_.clear();
    run_drained();
    if (on_end_) {
      auto f = std::move(on_end_);
      on_end_ = nullptr;
      f(false);
    }
  }

  // -- raw streams (exec, events, logs) --------------------------------------------------

  void send_raw(std::string bytes) {
    if (closed_) return;
    out_.push_back(piece{std::move(bytes), 0});
    pump();
  }

  void send_frames(uint8_t stream, std::string_view text) {
    while (!text.empty()) {
      const auto n = std::min(text.size(), frame_size);
      std::string f = frame_header(stream, static_cast<uint32_t>(n));
      f.append(text.substr(0, n));
      send_raw(std::move(f));
      text.remove_prefix(n);
    }
  }

  void send_zeros(uint64_t n) {
    if (closed_ || n == 0) return;
    out_.push_back(piece{{}, n});
    pump();
  }

  // f runs once everything queued is written (or the connection is gone).
  void after_drain(std::function<void()> f) {
    drained_.push_back(std::move(f));
    if (!writing_ && (out_.empty() || closed_)) {
      asio::post(eng_.io, [self = shared_from_this()] { self->run_drained(); });
    }
  }

  // Close once everything queued is written.
  void end_after_drain() {
    after_drain([self = shared_from_this()] { self->close(); });
  }

  // Reads what the client sends on a hijacked or streaming connection: stdin for an exec,
  // nothing for events (a read then only tells us the client went away).
  void read_stream(std::function<void(std::string_view)> on_data,
                   std::function<void(bool eof)> on_end) {
    on_data_ = std::move(on_data);
    on_end_ = std::move(on_end);
    // Bytes that came with the request head belong to the stream.
    if (buf_.size() > 0) {
      std::string first(static_cast<const char*>(buf_.data().data()), buf_.size());
      buf_.consume(buf_.size());
      if (on_data_) on_data_(first);
    }
    read_more();
  }

 private:
  struct piece {
    std::string bytes;
    uint64_t zeros = 0;  // > 0: that many zero bytes of stdout, framed
  };

  void read_more() {
    if (closed_) return;
    sock_.async_read_some(asio::buffer(in_),
                          [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                            if (n > 0 && self->on_data_)
                              self->on_data_(std::string_view(self->in_.data(), n));
                            if (ec) {
                              if (self->on_end_) {
                                auto f = std::move(self->on_end_);
                                self->on_end_ = nullptr;
                                f(ec == asio::error::eof);
                              }
                              if (ec != asio::error::eof) self->close();
                              return;
                            }
                            self->read_more();
                          });
  }

  void pump() {
    if (writing_ || closed_) return;
    if (out_.empty()) return run_drained();
    writing_ = true;
    auto& front = out_.front();
    auto done = [self = shared_from_this()](beast::error_code ec, std::size_t) {
      self->writing_ = false;
      if (ec || self->closed_) {
        self->close();
        return self->run_drained();
      }
      self->pump();
    };
    if (front.zeros == 0) {
      current_ = std::move(front.bytes);
      out_.pop_front();
      asio::async_write(sock_, asio::buffer(current_), std::move(done));
      return;
    }
    static const std::string zero_block(frame_size, '\0');
    const auto n = static_cast<std::size_t>(std::min<uint64_t>(front.zeros, frame_size));
    front.zeros -= n;
    if (front.zeros == 0) out_.pop_front();
    current_ = frame_header(1, static_cast<uint32_t>(n));
    std::array<asio::const_buffer, 2> bufs{asio::buffer(current_),
                                           asio::buffer(zero_block.data(), n)};
    asio::async_write(sock_, bufs, std::move(done));
  }

  void run_drained() {
    if (drained_.empty() || writing_) return;
    if (!out_.empty() && !closed_) return;
    auto fs = std::move(drained_);
    drained_.clear();
    for (auto& f : fs) f();
  }

  fake_engine::impl& eng_;
  unix_socket sock_;
  asio::steady_timer timer_;
  uint64_t id_;
  beast::flat_buffer buf_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::request<http::string_body> req_;
  bool closed_ = false;
  bool writing_ = false;
  std::deque<piece> out_;
  std::string current_;
  std::vector<std::function<void()>> drained_;
  std::array<char, 4096> in_{};
  std::function<void(std::string_view)> on_data_;
  std::function<void(bool)> on_end_;
};

// -- the engine -----------------------------------------------------------------------------

fake_engine::impl::impl(fake_engine_options o)
    : opt(std::move(o)),
      fault_rng(opt.seed),
      id_rng(opt.seed * 0x9E3779B97F4A7C15ULL + 1),
      jitter_rng(opt.seed ^ 0xD1B54A32D192ED03ULL) {}

void fake_engine::impl::start() {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(opt.socket_path, ec) && fs::is_socket(opt.socket_path, ec))
    fs::remove(opt.socket_path, ec);
  asio::local::stream_protocol::endpoint endpoint(opt.socket_path);
  acceptor.open(endpoint.protocol());
  acceptor.bind(endpoint);
  acceptor.listen(opt.backlog);
  work.emplace(asio::make_work_guard(io));
  running = true;
  accept();
  thread = std::thread([self = shared_from_this()] { self->io.run(); });
  io_thread_id = thread.get_id();
}

void fake_engine::impl::stop() {
  std::lock_guard<std::mutex> guard(stop_mutex);
  if (!thread.joinable()) return;
  asio::post(io, [this] {
    stopping = true;
    beast::error_code ignored;
    acceptor.close(ignored);
    accept_timer.cancel();
    agent_accept_timer.cancel();
    for (auto& [id, c] : containers) {
      if (c->main_timer) c->main_timer->cancel();
      c->waiters.clear();
      stop_agent(*c);
    }
    for (auto& [id, e] : execs) {
      if (e->timer) e->timer->cancel();
      e->stream.reset();
    }
    subscribers.clear();
    cpu_queue.clear();
    if (agent_acceptor) {
      agent_acceptor->close(ignored);
      agent_acceptor.reset();
      std::error_code fs_ignored;
      std::filesystem::remove(agent_listen_path, fs_ignored);
    }
    std::vector<std::shared_ptr<session>> open;
    for (auto& [id, weak] : sessions) {
      if (auto s = weak.lock()) open.push_back(std::move(s));
    }
    for (auto& s : open) s->close();
    work.reset();
    // Whatever still waits is destroyed with the io_context; nothing more runs.
    io.stop();
  });
  thread.join();
  running = false;
  std::error_code ec;
  std::filesystem::remove(opt.socket_path, ec);
}

template <class F>
auto fake_engine::impl::call(F f) -> decltype(f()) {
  if (!running || std::this_thread::get_id() == io_thread_id) return f();
  std::packaged_task<decltype(f())()> task(std::move(f));
  auto result = task.get_future();
  asio::post(io, [&task] { task(); });
  return result.get();
}

void fake_engine::impl::accept() {
  acceptor.async_accept([this](beast::error_code ec, unix_socket sock) {
    if (stopping) return;
    if (ec) {
      // Out of descriptors, most likely: try again shortly rather than spin.
      accept_timer.expires_after(milliseconds(10));
      accept_timer.async_wait([this](beast::error_code wait_ec) {
        if (!wait_ec && !stopping) accept();
      });
      return;
    }
    const uint64_t id = next_session++;
    auto s = std::make_shared<session>(*this, std::move(sock), id);
    sessions.emplace(id, s);
    s->read_request();
    accept();
  });
}

bool fake_engine::impl::roll(double p) {
  if (p <= 0) return false;
  if (p >= 1) return true;
  return std::uniform_real_distribution<double>(0, 1)(fault_rng) < p;
}

double fake_engine::impl::rate(const std::map<std::string, double>& by_class, double global,
                               const std::string& cls) const {
  if (cls == "unknown") return 0;
  auto it = by_class.find(cls);
  return it != by_class.end() ? it->second : global;
}

microseconds fake_engine::impl::latency_of(const std::string& cls) {
  const auto& l = opt.latency;
  microseconds base{0};
  if (cls == "ping" || cls == "version" || cls == "info")
    base = l.ping;
  else if (cls == "create")
    base = l.create;
  else if (cls == "start")
    base = l.start;
  else if (cls == "stop")
    base = l.stop;
  else if (cls == "kill")
    base = l.kill;
  else if (cls == "remove")
    base = l.remove;
  else if (cls == "inspect" || cls == "image")
    base = l.inspect;
  else if (cls == "list")
    base = l.list;
  else if (cls == "exec_create")
    base = l.exec_create;
  else if (cls == "exec_start")
    base = l.exec_start;
  else if (cls == "exec_inspect")
    base = l.exec_inspect;
  else if (cls == "events" || cls == "unknown")
    base = microseconds{0};
  else
    base = l.other;
  if (opt.latency_scale <= 0 || base.count() == 0) return microseconds{0};
  double us = static_cast<double>(base.count()) * opt.latency_scale;
  if (opt.jitter > 0)
    us *= std::uniform_real_distribution<double>(1 - opt.jitter, 1 + opt.jitter)(jitter_rng);
  return microseconds{static_cast<int64_t>(us)};
}

std::string fake_engine::impl::new_id() {
  static constexpr char hex[] = "0123456789abcdef";
  for (;;) {
    std::string id;
    id.reserve(64);
    for (int i = 0; i < 4; ++i) {
      uint64_t v = id_rng();
      for (int j = 0; j < 16; ++j) {
        id.push_back(hex[v & 0xf]);
        v >>= 4;
      }
    }
    if (!containers.count(id) && !execs.count(id)) return id;
  }
}

bool fake_engine::impl::image_exists(const std::string& image) const {
  if (image.empty()) return false;
  if (opt.image_prefixes.empty()) return true;
  return std::any_of(opt.image_prefixes.begin(), opt.image_prefixes.end(),
                     [&](const std::string& p) { return image.rfind(p, 0) == 0; });
}

container_rec* fake_engine::impl::find_container(const std::string& ref) {
  if (ref.empty()) return nullptr;
  if (auto it = containers.find(ref); it != containers.end()) return it->second.get();
  std::string name = ref.front() == '/' ? ref.substr(1) : ref;
  if (auto it = names.find(name); it != names.end()) {
    if (auto c = containers.find(it->second); c != containers.end()) return c->second.get();
  }
  // A unique id prefix.
  container_rec* found = nullptr;
  for (auto& [id, c] : containers) {
    if (id.rfind(ref, 0) == 0) {
      if (found) return nullptr;
      found = c.get();
    }
  }
  return found;
}

// -- routing --------------------------------------------------------------------------------

namespace {

route make_route(const http::request<http::string_body>& req) {
  route r;
  r.method = req.method();
  std::string_view target(req.target().data(), req.target().size());
  auto q = target.find('?');
  std::string_view path = target.substr(0, q);
  if (q != std::string_view::npos) r.query = parse_query(target.substr(q + 1));
  // "/v1.41/..." for any version.
  if (path.size() > 2 && path[0] == '/' && path[1] == 'v') {
    std::size_t i = 2;
    bool digits = false, dot = false;
    while (i < path.size() &&
           (std::isdigit(static_cast<unsigned char>(path[i])) || path[i] == '.')) {
      if (path[i] == '.')
        dot = true;
      else
        digits = true;
      ++i;
    }
    if (digits && dot && (i == path.size() || path[i] == '/')) path.remove_prefix(i);
  }
  r.raw_path = std::string(path);
  std::string_view rest = path;
  while (!rest.empty()) {
    if (rest.front() == '/') {
      rest.remove_prefix(1);
      continue;
    }
    auto slash = rest.find('/');
    r.parts.push_back(url_decode(rest.substr(0, slash)));
    rest = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash);
  }
  const auto& p = r.parts;
  const auto m = r.method;
  const bool get = m == http::verb::get || m == http::verb::head;
  const bool post = m == http::verb::post;
  if (p.size() == 1 && p[0] == "_ping" && get)
    r.cls = "ping";
  else if (p.size() == 1 && p[0] == "version" && get)
    r.cls = "version";
  else if (p.size() == 1 && p[0] == "info" && get)
    r.cls = "info";
  else if (p.size() == 1 && p[0] == "events" && get)
    r.cls = "events";
  else if (!p.empty() && p[0] == "images")
    r.cls = "image";
  else if (p.size() == 2 && p[0] == "containers" && p[1] == "create" && post)
    r.cls = "create";
  else if (p.size() == 2 && p[0] == "containers" && p[1] == "json" && get)
    r.cls = "list";
  else if (p.size() == 2 && p[0] == "containers" && m == http::verb::delete_)
    r.cls = "remove";
  else if (p.size() == 3 && p[0] == "containers") {
    const auto& a = p[2];
    if (a == "json" && get)
      r.cls = "inspect";
    else if (a == "exec" && post)
      r.cls = "exec_create";
    else if (a == "logs" && get)
      r.cls = "logs";
    else if (a == "stats" && get)
      r.cls = "stats";
    else if (a == "archive")
      r.cls = "archive";
    else if (post && (a == "start" || a == "stop" || a == "kill" || a == "wait" || a == "pause" ||
                      a == "unpause" || a == "rename"))
      r.cls = a;
  } else if (p.size() == 3 && p[0] == "exec") {
    if (p[2] == "start" && post)
      r.cls = "exec_start";
    else if (p[2] == "json" && get)
      r.cls = "exec_inspect";
    else if (p[2] == "resize" && post)
      r.cls = "exec_inspect";
  }
  return r;
}

// {"label":["a=b"]} or {"label":{"a=b":true}}; nullopt when malformed.
std::optional<std::map<std::string, std::vector<std::string>>> parse_filters(
    simdjson::dom::parser& parser, const std::string& text) {
  std::map<std::string, std::vector<std::string>> out;
  if (text.empty()) return out;
  simdjson::dom::element doc;
  if (parser.parse(text).get(doc) != simdjson::SUCCESS) return std::nullopt;
  simdjson::dom::object obj;
  if (doc.get_object().get(obj) != simdjson::SUCCESS) return std::nullopt;
  for (auto field : obj) {
    auto& values = out[std::string(field.key)];
    simdjson::dom::array arr;
    simdjson::dom::object map;
    if (field.value.get_array().get(arr) == simdjson::SUCCESS) {
      for (auto v : arr) {
        std::string_view s;
        if (v.get_string().get(s) != simdjson::SUCCESS) return std::nullopt;
        values.emplace_back(s);
      }
    } else if (field.value.get_object().get(map) == simdjson::SUCCESS) {
      for (auto kv : map) values.emplace_back(kv.key);
    } else {
      return std::nullopt;
    }
  }
  return out;
}

bool label_matches(const std::map<std::string, std::string>& labels, const std::string& filter) {
  auto eq = filter.find('=');
  if (eq == std::string::npos) return labels.count(filter) > 0;
  auto it = labels.find(filter.substr(0, eq));
  return it != labels.end() && it->second == filter.substr(eq + 1);
}

std::vector<std::string> json_strings(simdjson::dom::object& o, const char* key) {
  std::vector<std::string> out;
  simdjson::dom::array a;
  if (o[key].get_array().get(a) != simdjson::SUCCESS) return out;
  for (auto v : a) {
    std::string_view s;
    if (v.get_string().get(s) == simdjson::SUCCESS) out.emplace_back(s);
  }
  return out;
}

std::map<std::string, std::string> json_string_map(simdjson::dom::object& o, const char* key) {
  std::map<std::string, std::string> out;
  simdjson::dom::object m;
  if (o[key].get_object().get(m) != simdjson::SUCCESS) return out;
  for (auto kv : m) {
    std::string_view s;
    if (kv.value.get_string().get(s) == simdjson::SUCCESS)
      out.emplace(std::string(kv.key), std::string(s));
  }
  return out;
}

std::string json_string(simdjson::dom::object& o, const char* key) {
  std::string_view s;
  if (o[key].get_string().get(s) != simdjson::SUCCESS) return {};
  return std::string(s);
}

bool json_bool(simdjson::dom::object& o, const char* key, bool fallback) {
  bool b = false;
  if (o[key].get_bool().get(b) != simdjson::SUCCESS) return fallback;
  return b;
}

void write_strings(json_writer& w, std::string_view key, const std::vector<std::string>& values) {
  w.key(key).begin_array();
  for (const auto& v : values) w.value(v);
  w.end_array();
}

void write_map(json_writer& w, std::string_view key,
               const std::map<std::string, std::string>& values) {
  w.key(key).begin_object();
  for (const auto& [k, v] : values) w.field(k, v);
  w.end_object();
}

std::string status_text(const container_rec& c) {
  if (c.state == "running") return "Up Less than a second";
  if (c.state == "paused") return "Up Less than a second (Paused)";
  if (c.state == "created") return "Created";
  return "Exited (" + std::to_string(c.exit_code) + ") Less than a second ago";
}

std::string to_hex(std::size_t n) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%zx", n);
  return buf;
}

}  // namespace

void fake_engine::impl::on_request(const std::shared_ptr<session>& s) {
  route r = make_route(s->req());
  ++st.requests[r.cls];
  ++st.requests_total;
  // Draws in a fixed order, so a seed replays the same faults for the same requests.
  const bool reset_now = roll(rate(opt.reset_rates, opt.reset_rate, r.cls));
  const bool fail = roll(rate(opt.error_rates, opt.error_rate, r.cls));
  const bool reset_after = roll(rate(opt.reset_after_rates, opt.reset_after_rate, r.cls));
  const bool slow = r.cls != "unknown" && roll(opt.slow_rate);
  if (reset_now) {
    ++st.injected_resets[r.cls];
    return s->reset();
  }
  const auto work = latency_of(r.cls);
  microseconds extra{0};
  if (slow) {
    ++st.injected_slow;
    extra = opt.slow_delay;
  }
  // Only the container lifecycle and exec start hold a CPU (runc, shim); lookups do not.
  const bool heavy = r.cls == "create" || r.cls == "start" || r.cls == "stop" || r.cls == "kill" ||
                     r.cls == "remove" || r.cls == "exec_start";
  auto go = [this, s, r = std::move(r), fail, reset_after] {
    if (stopping) return;
    if (fail) {
      ++st.injected_errors[r.cls];
      s->reply_error(http::status::internal_server_error, "fake engine: injected failure");
      return;
    }
    if (reset_after) {
      ++st.injected_resets_after[r.cls];
      s->reset_instead_of_reply = true;
    }
    handle(s, r);
  };
  // The engine's work first (holding a CPU), then the injected slowness (holding none).
  on_cpu(s, work, heavy, [s, extra, go = std::move(go)]() mutable {
    if (extra.count() == 0) return go();
    s->timer().expires_after(extra);
    s->timer().async_wait([go = std::move(go)](beast::error_code ec) {
      if (!ec) go();
    });
  });
}

void fake_engine::impl::on_cpu(const std::shared_ptr<session>& s, microseconds work, bool heavy,
                               std::function<void()> then) {
  if (work.count() == 0) return then();
  if (!heavy) {
    s->timer().expires_after(work);
    s->timer().async_wait([then = std::move(then)](beast::error_code ec) {
      if (!ec) then();
    });
    return;
  }
  auto run = [this, s, work, then = std::move(then)]() mutable {
    ++cpus_busy;
    s->timer().expires_after(work);
    s->timer().async_wait([this, then = std::move(then)](beast::error_code ec) {
      --cpus_busy;
      next_cpu();
      if (!ec) then();
    });
  };
  if (opt.engine_cpus <= 0 || cpus_busy < opt.engine_cpus) return run();
  cpu_queue.push_back(std::move(run));
  st.cpu_queued_max = std::max<uint64_t>(st.cpu_queued_max, cpu_queue.size());
}

void fake_engine::impl::next_cpu() {
  while (!stopping && !cpu_queue.empty() && (opt.engine_cpus <= 0 || cpus_busy < opt.engine_cpus)) {
    auto f = std::move(cpu_queue.front());
    cpu_queue.pop_front();
    f();
  }
}

void fake_engine::impl::handle(const std::shared_ptr<session>& s, const route& r) {
  const auto& p = r.parts;
  const auto& cls = r.cls;
  if (cls == "ping") return ping(s, r);
  if (cls == "version") return version(s);
  if (cls == "info") return info(s);
  if (cls == "events") return events(s, r);
  if (cls == "image") return image(s, r);
  if (cls == "create") return create(s, r);
  if (cls == "list") return list(s, r);
  if (cls == "exec_start") return exec_start(s, p[1]);
  if (cls == "exec_inspect") {
    if (p[2] == "resize") return s->reply(http::status::created, "");
    return exec_inspect(s, p[1]);
  }
  if (cls == "unknown") return s->reply_error(http::status::not_found, "page not found");
  // Everything else names a container.
  container_rec* c = find_container(p[1]);
  if (!c) return s->reply_error(http::status::not_found, "No such container: " + p[1]);
  if (cls == "remove") return remove_container(s, c->id, r);
  if (cls == "inspect") return inspect(s, *c);
  if (cls == "start") return start_container(s, *c);
  if (cls == "stop") return stop_container(s, *c, r);
  if (cls == "kill") return kill_container(s, *c, r);
  if (cls == "wait") return wait(s, *c, r);
  if (cls == "exec_create") return exec_create(s, *c);
  if (cls == "logs") return logs(s, *c);
  if (cls == "pause" || cls == "unpause") {
    if (!c->running())
      return s->reply_error(http::status::conflict, "Container " + c->id + " is not running");
    const bool to_pause = cls == "pause";
    if (to_pause == (c->state == "paused")) {
      return s->reply_error(
          http::status::conflict,
          "Container " + c->id + (to_pause ? " is already paused" : " is not paused"));
    }
    c->state = to_pause ? "paused" : "running";
    emit(*c, cls);
    return s->reply(http::status::no_content, "");
  }
  if (cls == "rename") {
    auto it = r.query.find("name");
    std::string name = it == r.query.end() ? "" : it->second;
    if (!name.empty() && name.front() == '/') name.erase(0, 1);
    if (!valid_container_name(name))
      return s->reply_error(http::status::bad_request, "Invalid container name (" + name + ")");
    if (auto other = names.find(name); other != names.end() && other->second != c->id) {
      return s->reply_error(http::status::conflict, "Conflict. The name \"/" + name +
                                                        "\" is already in use by container \"" +
                                                        other->second + "\".");
    }
    names.erase(c->name);
    c->name = name;
    names[name] = c->id;
    emit(*c, "rename");
    return s->reply(http::status::no_content, "");
  }
  if (cls == "stats") {
    json_writer w;
    w.begin_object();
    w.field("read", rfc3339(std::chrono::system_clock::now()));
    w.field_object("pids_stats").field("current", int64_t{c->running() ? 1 : 0}).end_object();
    w.field_object("cpu_stats")
        .field_object("cpu_usage")
        .field("total_usage", int64_t{1'000'000})
        .end_object();
    w.field("system_cpu_usage", int64_t{1'000'000'000})
        .field("online_cpus", int64_t{2})
        .end_object();
    w.field_object("memory_stats")
        .field("usage", int64_t{1 << 20})
        .field("limit", int64_t{512LL << 20})
        .end_object();
    w.end_object();
    return s->reply_json(http::status::ok, w.take());
  }
  if (cls == "archive") {
    if (r.method == http::verb::put) return s->reply(http::status::ok, "");
    auto it = r.query.find("path");
    return s->reply_error(http::status::not_found,
                          "Could not find the file " +
                              (it == r.query.end() ? std::string() : it->second) +
                              " in container " + c->id);
  }
  s->reply_error(http::status::not_found, "page not found");
}

// -- system ---------------------------------------------------------------------------------

void fake_engine::impl::ping(const std::shared_ptr<session>& s, const route&) {
  s->reply(http::status::ok, "OK", "text/plain; charset=utf-8",
           {{"Cache-Control", "no-cache, no-store, must-revalidate"}, {"Pragma", "no-cache"}});
}

void fake_engine::impl::version(const std::shared_ptr<session>& s) {
  json_writer w;
  w.begin_object();
  w.key("Platform").begin_object().field("Name", "fake engine").end_object();
  w.field("Version", engine_version)
      .field("ApiVersion", api_version)
      .field("MinAPIVersion", "1.12");
  w.field("GitCommit", "fake")
      .field("GoVersion", "go1.19")
      .field("Os", "linux")
      .field("Arch", "amd64");
  w.field("KernelVersion", "fake").field("BuildTime", "2023-01-01T00:00:00.000000000+00:00");
  w.end_object();
  s->reply_json(http::status::ok, w.take());
}

void fake_engine::impl::info(const std::shared_ptr<session>& s) {
  uint64_t running_n = 0, paused = 0, stopped = 0;
  for (const auto& [id, c] : containers) {
    if (c->state == "running")
      ++running_n;
    else if (c->state == "paused")
      ++paused;
    else
      ++stopped;
  }
  json_writer w;
  w.begin_object();
  w.field("ID", "FAKE:ENGINE").field("Name", "fake-engine").field("ServerVersion", engine_version);
  w.field("Containers", static_cast<uint64_t>(containers.size()))
      .field("ContainersRunning", running_n);
  w.field("ContainersPaused", paused)
      .field("ContainersStopped", stopped)
      .field("Images", int64_t{1});
  w.field("OperatingSystem", "fake engine")
      .field("OSType", "linux")
      .field("Architecture", "x86_64");
  w.field("CgroupDriver", "cgroupfs").field("CgroupVersion", "1").field("NCPU", int64_t{2});
  w.field("MemTotal", int64_t{8LL << 30}).field("Driver", "fake");
  w.end_object();
  s->reply_json(http::status::ok, w.take());
}

void fake_engine::impl::image(const std::shared_ptr<session>& s, const route& r) {
  // /images/{name}/json, where the name may hold '/' (encoded or not).
  std::string_view path = r.raw_path;
  constexpr std::string_view prefix = "/images/";
  if (r.method == http::verb::get && path.size() > prefix.size() + 5 &&
      path.substr(0, prefix.size()) == prefix && path.substr(path.size() - 5) == "/json") {
    const std::string name =
        url_decode(path.substr(prefix.size(), path.size() - prefix.size() - 5));
    if (!image_exists(name))
      return s->reply_error(http::status::not_found, "No such image: " + name);
    json_writer w;
    w.begin_object().field("Id", "sha256:" + std::string(64, 'f'));
    write_strings(w, "RepoTags", {name});
    w.field("Size", int64_t{1 << 20}).field("Os", "linux").field("Architecture", "amd64");
    w.end_object();
    return s->reply_json(http::status::ok, w.take());
  }
  if (r.method == http::verb::get && r.parts.size() == 2 && r.parts[1] == "json") {
    return s->reply_json(http::status::ok, "[]");
  }
  if (r.method == http::verb::post && r.parts.size() == 2 && r.parts[1] == "create") {
    auto from = r.query.count("fromImage") ? r.query.at("fromImage") : std::string();
    auto tag = r.query.count("tag") ? r.query.at("tag") : std::string();
    const std::string name = tag.empty() ? from : from + ":" + tag;
    if (!image_exists(name)) {
      return s->reply_error(http::status::not_found,
                            "pull access denied for " + from + ", repository does not exist");
    }
    json_writer w;
    w.begin_object().field("status", "Status: Image is up to date for " + name).end_object();
    return s->reply_json(http::status::ok, w.take());
  }
  s->reply_error(http::status::not_found, "page not found");
}

// -- containers -----------------------------------------------------------------------------

void fake_engine::impl::create(const std::shared_ptr<session>& s, const route& r) {
  simdjson::dom::element doc;
  simdjson::dom::object body;
  if (json.parse(s->req().body()).get(doc) != simdjson::SUCCESS ||
      doc.get_object().get(body) != simdjson::SUCCESS) {
    return s->reply_error(http::status::bad_request, "invalid JSON body");
  }
  std::string name;
  if (auto it = r.query.find("name"); it != r.query.end()) name = it->second;
  if (!name.empty() && name.front() == '/') name.erase(0, 1);
  if (!name.empty() && !valid_container_name(name)) {
    return s->reply_error(
        http::status::bad_request,
        "Invalid container name (" + name + "), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed");
  }
  if (!name.empty()) {
    if (auto other = names.find(name); other != names.end()) {
      return s->reply_error(
          http::status::conflict,
          "Conflict. The container name \"/" + name + "\" is already in use by container \"" +
              other->second +
              "\". You have to remove (or rename) that container to be able to reuse that name.");
    }
  }
  auto c = std::make_shared<container_rec>();
  c->image = json_string(body, "Image");
  if (!image_exists(c->image))
    return s->reply_error(http::status::not_found, "No such image: " + c->image);
  c->cmd = json_strings(body, "Cmd");
  c->entrypoint = json_strings(body, "Entrypoint");
  if (c->cmd.empty() && c->entrypoint.empty()) {
    return s->reply_error(http::status::bad_request, "No command specified");
  }
  c->env = json_strings(body, "Env");
  c->user = json_string(body, "User");
  c->working_dir = json_string(body, "WorkingDir");
  c->labels = json_string_map(body, "Labels");
  simdjson::dom::element host;
  if (body["HostConfig"].get(host) == simdjson::SUCCESS)
    c->host_config_json = simdjson::minify(host);
  c->id = new_id();
  c->name = name.empty() ? "fake_" + c->id.substr(0, 12) : name;
  const auto now = std::chrono::system_clock::now();
  c->created = rfc3339(now);
  c->created_unix =
      std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  names[c->name] = c->id;
  containers[c->id] = c;
  ++st.containers_created_total;
  emit(*c, "create");
  json_writer w;
  w.begin_object().field("Id", c->id);
  write_strings(w, "Warnings", {});
  w.end_object();
  s->reply_json(http::status::created, w.take());
}

void fake_engine::impl::start_container(const std::shared_ptr<session>& s, container_rec& c) {
  if (c.running()) return s->reply(http::status::not_modified, "");
  c.state = "running";
  c.exit_code = 0;
  c.oom_killed = false;
  c.pid = next_pid++;
  c.started_at = rfc3339(std::chrono::system_clock::now());
  emit(c, "start");
  if (c.entrypoint == std::vector<std::string>{proto::agent_path_inside}) {
    start_agent(c);  // runs until the container ends
    return s->reply(http::status::no_content, "");
  }
  std::vector<std::string> argv = c.entrypoint;
  argv.insert(argv.end(), c.cmd.begin(), c.cmd.end());
  // docker-init as PID 1 only forwards: the command's own behaviour decides the exit.
  program p = interpret(argv, opt.max_sleep, true);
  if (!p.forever) {
    milliseconds total{0};
    for (const auto& st_ : p.steps) total += st_.duration;
    c.main_timer = std::make_unique<asio::steady_timer>(io);
    c.main_timer->expires_after(total);
    const std::string id = c.id;
    const int64_t pid = c.pid;
    const int code = p.exit_code;
    c.main_timer->async_wait([this, id, pid, code](beast::error_code ec) {
      if (ec || stopping) return;
      auto it = containers.find(id);
      if (it == containers.end() || !it->second->running() || it->second->pid != pid) return;
      container_exit(*it->second, code);
    });
  }
  s->reply(http::status::no_content, "");
}

void fake_engine::impl::stop_container(const std::shared_ptr<session>& s, container_rec& c,
                                       const route& r) {
  if (!c.running()) return s->reply(http::status::not_modified, "");
  const bool now = r.query.count("t") && r.query.at("t") == "0";
  emit(c, "kill", {{"signal", now ? "9" : "15"}});
  container_exit(c, now ? 137 : 143);
  emit(c, "stop");
  s->reply(http::status::no_content, "");
}

void fake_engine::impl::kill_container(const std::shared_ptr<session>& s, container_rec& c,
                                       const route& r) {
  if (!c.running()) {
    return s->reply_error(http::status::conflict, "Cannot kill container: " + c.id +
                                                      ": Container " + c.id + " is not running");
  }
  std::string signal = r.query.count("signal") ? r.query.at("signal") : "SIGKILL";
  if (signal.rfind("SIG", 0) == 0) signal.erase(0, 3);
  int number = 9;
  if (signal == "TERM" || signal == "15")
    number = 15;
  else if (signal == "INT" || signal == "2")
    number = 2;
  else if (signal == "HUP" || signal == "1")
    number = 1;
  else if (!signal.empty() && std::all_of(signal.begin(), signal.end(),
                                          [](unsigned char ch) { return std::isdigit(ch) != 0; }))
    number = std::atoi(signal.c_str());
  emit(c, "kill", {{"signal", std::to_string(number)}});
  container_exit(c, 128 + number);
  s->reply(http::status::no_content, "");
}

void fake_engine::impl::remove_container(const std::shared_ptr<session>& s, const std::string& id,
                                         const route& r) {
  auto it = containers.find(id);
  auto c = it->second;
  if (c->running()) {
    if (!truthy(r.query, "force")) {
      return s->reply_error(http::status::conflict,
                            "You cannot remove a running container " + c->id +
                                ". Stop the container before attempting removal or force remove");
    }
    emit(*c, "kill", {{"signal", "9"}});
    container_exit(*c, 137);
  }
  kill_execs_of(*c);
  for (const auto& e : c->execs) execs.erase(e);
  if (c->main_timer) c->main_timer->cancel();
  names.erase(c->name);
  containers.erase(it);
  ++st.containers_removed_total;
  emit(*c, "destroy");
  notify_waiters(*c, true);
  s->reply(http::status::no_content, "");
}

void fake_engine::impl::container_exit(container_rec& c, int64_t code) {
  if (!c.running()) return;
  c.state = "exited";
  c.exit_code = code;
  c.pid = 0;
  c.finished_at = rfc3339(std::chrono::system_clock::now());
  if (c.main_timer) c.main_timer->cancel();
  kill_execs_of(c);
  stop_agent(c);
  emit(c, "die", {{"exitCode", std::to_string(code)}});
  notify_waiters(c, false);
}

void fake_engine::impl::start_agent(container_rec& c) {
  auto agent = std::make_shared<fake_agent_state>();
  c.agent = agent;
  simdjson::dom::element host;
  simdjson::dom::array binds;
  if (json.parse(c.host_config_json).get(host) == simdjson::SUCCESS &&
      host["Binds"].get_array().get(binds) == simdjson::SUCCESS) {
    const std::string inside = std::string(":") + proto::run_dir_inside;
    for (auto b : binds) {
      std::string_view text;
      if (b.get_string().get(text) != simdjson::SUCCESS) continue;
      if (const auto at = text.find(inside); at != std::string_view::npos)
        agent->socket_path = std::string(text.substr(0, at)) + "/" + proto::socket_name;
    }
  }
  auto id = c.labels.find("corral.sandbox-id");
  if (agent->socket_path.empty() || id == c.labels.end()) return;  // nobody can reach it
  if (!agent_acceptor) {
    agent_registry = std::make_shared<fake_agent_registry>();
    agent_registry->max_sleep = opt.max_sleep;
    agent_listen_path = opt.socket_path + ".agents";
    std::error_code fs_ec;
    std::filesystem::remove(agent_listen_path, fs_ec);
    beast::error_code ec;
    agent_acceptor = std::make_unique<asio::local::stream_protocol::acceptor>(io);
    agent_acceptor->open(asio::local::stream_protocol(), ec);
    if (!ec) agent_acceptor->bind(asio::local::stream_protocol::endpoint(agent_listen_path), ec);
    if (!ec) agent_acceptor->listen(1024, ec);
    if (ec) {
      agent_acceptor.reset();
      return;
    }
    accept_agent();
  }
  agent_registry->by_sandbox_id[id->second] = agent;
  std::error_code fs_ec;
  std::filesystem::remove(agent->socket_path, fs_ec);
  std::filesystem::create_symlink(agent_listen_path, agent->socket_path, fs_ec);
}

void fake_engine::impl::accept_agent() {
  if (!agent_acceptor) return;
  agent_acceptor->async_accept([this](beast::error_code ec, unix_socket sock) {
    if (!agent_acceptor || stopping || ec == asio::error::operation_aborted) return;
    if (ec) {
      // Out of descriptors, say: accept again shortly rather than never.
      agent_accept_timer.expires_after(10ms);
      agent_accept_timer.async_wait([this](beast::error_code wait_ec) {
        if (!wait_ec) accept_agent();
      });
      return;
    }
    std::make_shared<fake_agent_conn>(io, std::move(sock), agent_registry)->start();
    accept_agent();
  });
}

void fake_engine::impl::stop_agent(container_rec& c) {
  auto agent = std::move(c.agent);
  c.agent.reset();
  if (!agent) return;
  if (agent_registry) agent_registry->by_sandbox_id.erase(agent->sandbox_id);
  if (auto id = c.labels.find("corral.sandbox-id"); id != c.labels.end() && agent_registry)
    agent_registry->by_sandbox_id.erase(id->second);
  for (auto& weak : agent->conns)
    if (auto conn = weak.lock()) conn->close();
  agent->conns.clear();
  std::error_code fs_ignored;
  if (!agent->socket_path.empty()) std::filesystem::remove(agent->socket_path, fs_ignored);
}

void fake_engine::impl::notify_waiters(container_rec& c, bool removed) {
  auto ws = std::move(c.waiters);
  c.waiters.clear();
  for (auto& w : ws) {
    if (!removed && w.condition == "removed") {
      c.waiters.push_back(std::move(w));
      continue;
    }
    json_writer j;
    j.begin_object().field("StatusCode", c.exit_code).key("Error").null_value().end_object();
    w.s->reply_json(http::status::ok, j.take());
  }
}

void fake_engine::impl::wait(const std::shared_ptr<session>& s, container_rec& c, const route& r) {
  std::string condition = r.query.count("condition") ? r.query.at("condition") : "not-running";
  if (condition.empty()) condition = "not-running";
  if (condition == "not-running" && !c.running()) {
    json_writer j;
    j.begin_object().field("StatusCode", c.exit_code).key("Error").null_value().end_object();
    return s->reply_json(http::status::ok, j.take());
  }
  c.waiters.push_back(waiter{s, condition});
}

void fake_engine::impl::inspect(const std::shared_ptr<session>& s, const container_rec& c) {
  json_writer w;
  w.begin_object();
  w.field("Id", c.id).field("Created", c.created);
  std::vector<std::string> argv = c.entrypoint;
  argv.insert(argv.end(), c.cmd.begin(), c.cmd.end());
  w.field("Path", argv.empty() ? std::string() : argv.front());
  write_strings(w, "Args",
                argv.empty() ? argv : std::vector<std::string>(argv.begin() + 1, argv.end()));
  w.key("State").begin_object();
  w.field("Status", c.state).field("Running", c.running()).field("Paused", c.state == "paused");
  w.field("Restarting", false)
      .field("OOMKilled", c.oom_killed)
      .field("Dead", false)
      .field("Pid", c.pid);
  w.field("ExitCode", c.exit_code)
      .field("Error", "")
      .field("StartedAt", c.started_at)
      .field("FinishedAt", c.finished_at);
  w.end_object();
  w.field("Image", "sha256:" + std::string(64, 'f'));
  w.field("Name", "/" + c.name)
      .field("RestartCount", int64_t{0})
      .field("Driver", "fake")
      .field("MountLabel", "");
  std::string head = w.take();
  // HostConfig is echoed as it came: splice the raw JSON in.
  head += ",\"HostConfig\":" + c.host_config_json;
  json_writer cfg;
  cfg.begin_object();
  cfg.field("Hostname", c.id.substr(0, 12)).field("User", c.user);
  write_strings(cfg, "Env", c.env);
  write_strings(cfg, "Cmd", c.cmd);
  cfg.field("Image", c.image).field("WorkingDir", c.working_dir);
  if (!c.entrypoint.empty()) write_strings(cfg, "Entrypoint", c.entrypoint);
  write_map(cfg, "Labels", c.labels);
  cfg.end_object();
  head += ",\"Config\":" + cfg.take() + "}";
  s->reply_json(http::status::ok, std::move(head));
}

void fake_engine::impl::list(const std::shared_ptr<session>& s, const route& r) {
  std::map<std::string, std::vector<std::string>> filters;
  if (auto it = r.query.find("filters"); it != r.query.end()) {
    auto parsed = parse_filters(json, it->second);
    if (!parsed) return s->reply_error(http::status::bad_request, "invalid filter: " + it->second);
    filters = std::move(*parsed);
  }
  for (const auto& [k, v] : filters) {
    if (k != "label" && k != "status" && k != "id" && k != "name" && k != "ancestor") {
      return s->reply_error(http::status::bad_request, "invalid filter '" + k + "'");
    }
  }
  const bool all = truthy(r.query, "all");
  std::vector<const container_rec*> out;
  for (const auto& [id, c] : containers) {
    if (!all && !c->running()) continue;
    bool ok = true;
    for (const auto& [k, values] : filters) {
      if (k == "label") {
        ok = std::all_of(values.begin(), values.end(),
                         [&](const std::string& f) { return label_matches(c->labels, f); });
      } else if (k == "status") {
        ok = std::find(values.begin(), values.end(), c->state) != values.end();
      } else if (k == "id") {
        ok = std::any_of(values.begin(), values.end(),
                         [&](const std::string& v) { return c->id.rfind(v, 0) == 0; });
      } else if (k == "name") {
        ok = std::any_of(values.begin(), values.end(), [&](const std::string& v) {
          return c->name.find(v[0] == '/' ? v.substr(1) : v) != std::string::npos;
        });
      } else if (k == "ancestor") {
        ok = std::find(values.begin(), values.end(), c->image) != values.end();
      }
      if (!ok) break;
    }
    if (ok) out.push_back(c.get());
  }
  std::sort(out.begin(), out.end(), [](const auto* a, const auto* b) {
    return a->created_unix != b->created_unix ? a->created_unix > b->created_unix : a->id < b->id;
  });
  json_writer w;
  w.begin_array();
  for (const auto* c : out) {
    w.begin_object();
    w.field("Id", c->id);
    write_strings(w, "Names", {"/" + c->name});
    w.field("Image", c->image).field("ImageID", "sha256:" + std::string(64, 'f'));
    std::string command;
    for (const auto& a : c->cmd) command += (command.empty() ? "" : " ") + a;
    w.field("Command", command).field("Created", c->created_unix);
    w.key("Ports").begin_array().end_array();
    write_map(w, "Labels", c->labels);
    w.field("State", c->state).field("Status", status_text(*c));
    w.key("HostConfig").begin_object().field("NetworkMode", "none").end_object();
    w.key("Mounts").begin_array().end_array();
    w.end_object();
  }
  w.end_array();
  s->reply_json(http::status::ok, w.take());
}

void fake_engine::impl::logs(const std::shared_ptr<session>& s, const container_rec&) {
  if (roll(opt.truncate_rate)) {
    ++st.injected_truncations;
    if (s->reset_instead_of_reply) return s->reset();
    // Close-delimited, cut inside the first frame.
    std::string head =
        "HTTP/1.1 200 OK\r\nContent-Type: "
        "application/vnd.docker.multiplexed-stream\r\nApi-Version: 1.41\r\n"
        "Connection: close\r\n\r\n";
    head += frame_header(1, 64);
    head += "partial";
    s->send_raw(std::move(head));
    return s->end_after_drain();
  }
  s->reply(http::status::ok, "", "application/vnd.docker.multiplexed-stream");
}

// -- events ---------------------------------------------------------------------------------

void fake_engine::impl::events(const std::shared_ptr<session>& s, const route& r) {
  std::map<std::string, std::vector<std::string>> filters;
  if (auto it = r.query.find("filters"); it != r.query.end()) {
    auto parsed = parse_filters(json, it->second);
    if (!parsed) return s->reply_error(http::status::bad_request, "invalid filter: " + it->second);
    filters = std::move(*parsed);
  }
  if (s->reset_instead_of_reply) return s->reset();
  s->send_raw(
      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: "
      "chunked\r\nApi-Version: 1.41\r\n"
      "Docker-Experimental: false\r\nOstype: linux\r\nServer: Docker/20.10.24-fake "
      "(linux)\r\n\r\n");
  subscribers.push_back(subscriber{s, std::move(filters)});
  st.event_subscribers = subscribers.size();
  const uint64_t id = s->id();
  s->read_stream({}, [this, id](bool) {
    subscribers.erase(std::remove_if(subscribers.begin(), subscribers.end(),
                                     [id](const subscriber& x) { return x.s->id() == id; }),
                      subscribers.end());
    st.event_subscribers = subscribers.size();
  });
}

void fake_engine::impl::emit(const container_rec& c, const std::string& action,
                             std::map<std::string, std::string> extra) {
  if (stopping) return;
  if (roll(opt.drop_event_rate)) {
    ++st.dropped_events;
    return;
  }
  ++st.events_emitted;
  if (subscribers.empty()) return;
  std::map<std::string, std::string> attributes = c.labels;
  attributes["image"] = c.image;
  attributes["name"] = c.name;
  for (auto& [k, v] : extra) attributes[k] = v;
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  const int64_t nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(now).count();
  std::string line;
  bool built = false;
  for (auto it = subscribers.begin(); it != subscribers.end();) {
    if (it->s->closed()) {
      it = subscribers.erase(it);
      continue;
    }
    bool match = true;
    for (const auto& [k, values] : it->filters) {
      if (values.empty()) continue;
      if (k == "type")
        match = std::find(values.begin(), values.end(), "container") != values.end();
      else if (k == "event")
        match = std::find(values.begin(), values.end(), action) != values.end();
      else if (k == "label") {
        match = std::all_of(values.begin(), values.end(),
                            [&](const std::string& f) { return label_matches(c.labels, f); });
      } else if (k == "container") {
        match = std::any_of(values.begin(), values.end(), [&](const std::string& v) {
          return v == c.name || (!v.empty() && c.id.rfind(v, 0) == 0);
        });
      } else if (k == "image") {
        match = std::find(values.begin(), values.end(), c.image) != values.end();
      }
      if (!match) break;
    }
    if (match) {
      if (!built) {
        json_writer w;
        w.begin_object();
        w.field("status", action)
            .field("id", c.id)
            .field("from", c.image)
            .field("Type", "container");
        w.field("Action", action);
        w.key("Actor").begin_object().field("ID", c.id);
        write_map(w, "Attributes", attributes);
        w.end_object();
        w.field("scope", "local").field("time", nanos / 1'000'000'000).field("timeNano", nanos);
        w.end_object();
        std::string json_line = w.take() + "\n";
        line = to_hex(json_line.size()) + "\r\n" + json_line + "\r\n";
        built = true;
      }
      it->s->send_raw(line);
    }
    ++it;
  }
  st.event_subscribers = subscribers.size();
}

// -- execs ----------------------------------------------------------------------------------

void fake_engine::impl::exec_create(const std::shared_ptr<session>& s, container_rec& c) {
  if (c.state == "paused") {
    return s->reply_error(http::status::conflict,
                          "Container " + c.id + " is paused, unpause the container before exec");
  }
  if (!c.running())
    return s->reply_error(http::status::conflict, "Container " + c.id + " is not running");
  simdjson::dom::element doc;
  simdjson::dom::object body;
  if (json.parse(s->req().body()).get(doc) != simdjson::SUCCESS ||
      doc.get_object().get(body) != simdjson::SUCCESS) {
    return s->reply_error(http::status::bad_request, "invalid JSON body");
  }
  auto e = std::make_shared<exec_rec>();
  e->cmd = json_strings(body, "Cmd");
  if (e->cmd.empty()) return s->reply_error(http::status::bad_request, "No exec command specified");
  e->env = json_strings(body, "Env");
  e->user = json_string(body, "User");
  e->attach_stdin = json_bool(body, "AttachStdin", false);
  e->attach_stdout = json_bool(body, "AttachStdout", false);
  e->attach_stderr = json_bool(body, "AttachStderr", false);
  e->id = new_id();
  e->container_id = c.id;
  execs[e->id] = e;
  c.execs.push_back(e->id);
  ++st.execs_total;
  if (c.execs.size() > opt.max_exec_records) {
    // Forget the oldest finished execs, down to half the bound.
    std::vector<std::string> kept;
    std::size_t excess = c.execs.size() - opt.max_exec_records / 2;
    for (auto& id : c.execs) {
      auto it = execs.find(id);
      const bool finished = it == execs.end() || (it->second->started && !it->second->running);
      if (excess > 0 && finished) {
        if (it != execs.end()) execs.erase(it);
        --excess;
      } else {
        kept.push_back(std::move(id));
      }
    }
    c.execs = std::move(kept);
  }
  json_writer w;
  w.begin_object().field("Id", e->id).end_object();
  s->reply_json(http::status::created, w.take());
}

void fake_engine::impl::exec_inspect(const std::shared_ptr<session>& s, const std::string& id) {
  auto it = execs.find(id);
  if (it == execs.end())
    return s->reply_error(http::status::not_found, "No such exec instance: " + id);
  const auto& e = *it->second;
  json_writer w;
  w.begin_object();
  w.field("CanRemove", false).field("ContainerID", e.container_id).field("DetachKeys", "");
  w.field("ID", e.id).field("Running", e.running);
  w.key("ExitCode");
  if (e.exit_code)
    w.value(*e.exit_code);
  else
    w.null_value();
  w.key("ProcessConfig").begin_object().field("tty", false);
  w.field("entrypoint", e.cmd.front());
  write_strings(w, "arguments", std::vector<std::string>(e.cmd.begin() + 1, e.cmd.end()));
  w.field("privileged", false).field("user", e.user).end_object();
  w.field("OpenStdin", e.attach_stdin)
      .field("OpenStderr", e.attach_stderr)
      .field("OpenStdout", e.attach_stdout);
  w.field("Pid", e.pid);
  w.end_object();
  s->reply_json(http::status::ok, w.take());
}

void fake_engine::impl::exec_start(const std::shared_ptr<session>& s, const std::string& id) {
  auto it = execs.find(id);
  if (it == execs.end())
    return s->reply_error(http::status::not_found, "No such exec instance: " + id);
  auto e = it->second;
  if (e->started)
    return s->reply_error(http::status::conflict,
                          "Error: Exec command " + id + " is already running");
  auto c = containers.find(e->container_id);
  if (c == containers.end() || !c->second->running()) {
    return s->reply_error(http::status::conflict,
                          "Container " + e->container_id + " is not running");
  }
  if (c->second->state == "paused") {
    return s->reply_error(
        http::status::conflict,
        "Container " + e->container_id + " is paused, unpause the container before exec");
  }
  bool detach = false;
  simdjson::dom::element doc;
  simdjson::dom::object body;
  if (!s->req().body().empty() && json.parse(s->req().body()).get(doc) == simdjson::SUCCESS &&
      doc.get_object().get(body) == simdjson::SUCCESS) {
    detach = json_bool(body, "Detach", false);
  }
  e->started = true;
  e->running = true;
  e->pid = next_pid++;
  ++st.execs_running;
  e->prog = interpret(e->cmd, opt.max_sleep, false);
  e->timer = std::make_unique<asio::steady_timer>(io);

  const bool truncate = !detach && roll(opt.truncate_rate);
  if (detach) {
    s->reply(http::status::ok, "");
  } else if (s->reset_instead_of_reply) {
    // The process runs; its caller never hears of it.
    s->reset();
  } else {
    const bool upgrade =
        beast::iequals(s->req()[http::field::upgrade], "tcp") ||
        s->req()[http::field::connection].find("pgrade") != beast::string_view::npos;
    s->send_raw(upgrade
                    ? "HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\n"
                      "Connection: Upgrade\r\nUpgrade: tcp\r\nApi-Version: 1.41\r\n\r\n"
                    : "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n"
                      "Api-Version: 1.41\r\nConnection: close\r\n\r\n");
    if (truncate) {
      ++st.injected_truncations;
      // Cut inside the first frame: a header that promises more than follows.
      std::string cut;
      const step* first = nullptr;
      for (const auto& x : e->prog.steps) {
        if (x.kind == step::out || x.kind == step::zeros) {
          first = &x;
          break;
        }
      }
      if (first && first->kind == step::out && first->text.size() >= 2) {
        const auto n = std::min(first->text.size(), frame_size);
        cut = frame_header(first->stream, static_cast<uint32_t>(n)) + first->text.substr(0, n / 2);
      } else if (first && first->kind == step::zeros && first->count >= 2) {
        const auto n = static_cast<std::size_t>(std::min<uint64_t>(first->count, frame_size));
        cut = frame_header(1, static_cast<uint32_t>(n)) + std::string(n / 2, '\0');
      } else {
        cut = frame_header(1, 16).substr(0, 5);
      }
      s->send_raw(std::move(cut));
      s->end_after_drain();
    } else {
      e->stream = s;
      std::weak_ptr<exec_rec> weak = e;
      s->read_stream(
          [weak](std::string_view data) {
            if (auto x = weak.lock()) x->stdin_data.append(data);
          },
          [this, weak](bool) {
            auto x = weak.lock();
            if (!x) return;
            x->stdin_done = true;
            if (x->waiting_for_stdin && x->running) {
              x->waiting_for_stdin = false;
              exec_step(x);
            }
          });
      if (!e->attach_stdin) e->stdin_done = true;
    }
  }
  run_exec(e);
}

void fake_engine::impl::run_exec(const std::shared_ptr<exec_rec>& e) {
  if (!e->prog.kill_tag.empty()) {
    // corral's killer: every running exec of this container carrying the tag ends now.
    const std::string wanted = "CORRAL_EXEC=" + e->prog.kill_tag;
    if (auto c = containers.find(e->container_id); c != containers.end()) {
      for (const auto& other_id : c->second->execs) {
        auto other = execs.find(other_id);
        if (other == execs.end() || other->second == e) continue;
        if (other->second->running && other->second->has_env(wanted)) {
          ++st.execs_killed;
          finish_exec(other->second, 137, true);
        }
      }
    }
  }
  e->next_step = 0;
  exec_step(e);
}

void fake_engine::impl::exec_step(const std::shared_ptr<exec_rec>& e) {
  if (!e->running || stopping) return;
  if (e->next_step >= e->prog.steps.size()) return finish_exec(e, e->prog.exit_code, false);
  const step& x = e->prog.steps[e->next_step++];
  auto s = e->stream && !e->stream->closed() ? e->stream : nullptr;
  std::weak_ptr<exec_rec> weak = e;
  auto next = [this, weak] {
    if (auto x2 = weak.lock()) exec_step(x2);
  };
  switch (x.kind) {
    case step::sleep:
      e->timer->expires_after(x.duration);
      e->timer->async_wait([next](beast::error_code ec) {
        if (!ec) next();
      });
      return;
    case step::echo_stdin:
      if (!e->stdin_done) {
        --e->next_step;
        e->waiting_for_stdin = true;
        return;
      }
      if (s && e->attach_stdout && !e->stdin_data.empty()) {
        s->send_frames(1, e->stdin_data);
        return s->after_drain(next);
      }
      return exec_step(e);
    case step::out:
      if (s && ((x.stream == 1 && e->attach_stdout) || (x.stream == 2 && e->attach_stderr))) {
        s->send_frames(x.stream, x.text);
        return s->after_drain(next);
      }
      return exec_step(e);
    case step::zeros:
      if (s && e->attach_stdout) {
        s->send_zeros(x.count);
        return s->after_drain(next);
      }
      return exec_step(e);
  }
}

void fake_engine::impl::finish_exec(const std::shared_ptr<exec_rec>& e, int64_t code, bool killed) {
  if (!e->running) return;
  e->running = false;
  e->exit_code = code;
  --st.execs_running;
  if (e->timer) e->timer->cancel();
  if (auto s = std::move(e->stream)) {
    e->stream = nullptr;
    if (killed)
      s->close();
    else
      s->end_after_drain();
  }
}

void fake_engine::impl::kill_execs_of(container_rec& c) {
  for (const auto& id : c.execs) {
    auto it = execs.find(id);
    if (it == execs.end() || !it->second->running) continue;
    ++st.execs_killed;
    finish_exec(it->second, 137, true);
  }
}

// -- views ----------------------------------------------------------------------------------

fake_engine_stats fake_engine::impl::snapshot() const {
  fake_engine_stats out = st;
  out.containers = containers.size();
  out.containers_running = 0;
  for (const auto& [id, c] : containers) out.containers_running += c->running() ? 1 : 0;
  out.connections_open = 0;
  for (const auto& [id, weak] : sessions) out.connections_open += weak.expired() ? 0 : 1;
  return out;
}

std::vector<fake_container_view> fake_engine::impl::view() const {
  std::vector<fake_container_view> out;
  out.reserve(containers.size());
  for (const auto& [id, c] : containers) {
    out.push_back(fake_container_view{c->id, c->name, c->image, c->state, c->exit_code, c->labels,
                                      c->execs.size()});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return out;
}

// -- public face ----------------------------------------------------------------------------

uint64_t fake_engine_stats::injected_errors_total() const {
  uint64_t n = 0;
  for (const auto& [k, v] : injected_errors) n += v;
  return n;
}

uint64_t fake_engine_stats::injected_resets_total() const {
  uint64_t n = 0;
  for (const auto& [k, v] : injected_resets) n += v;
  return n;
}

uint64_t fake_engine_stats::injected_resets_after_total() const {
  uint64_t n = 0;
  for (const auto& [k, v] : injected_resets_after) n += v;
  return n;
}

std::string fake_engine_stats::summary() const {
  std::ostringstream o;
  o << "requests " << requests_total << " (";
  bool first = true;
  for (const auto& [k, v] : requests) {
    o << (first ? "" : ", ") << k << " " << v;
    first = false;
  }
  o << ")\n";
  o << "connections open " << connections_open << ", total " << connections_total << "\n";
  o << "containers live " << containers << " (running " << containers_running << "), created "
    << containers_created_total << ", removed " << containers_removed_total << "\n";
  o << "execs total " << execs_total << ", running " << execs_running << ", killed " << execs_killed
    << "\n";
  o << "longest queue for the engine's CPUs " << cpu_queued_max << "\n";
  o << "events emitted " << events_emitted << ", subscribers " << event_subscribers << "\n";
  auto by = [&o](const char* what, const std::map<std::string, uint64_t>& m) {
    uint64_t n = 0;
    for (const auto& [k, v] : m) n += v;
    o << what << " " << n;
    if (!m.empty()) {
      o << " (";
      bool f = true;
      for (const auto& [k, v] : m) {
        o << (f ? "" : ", ") << k << " " << v;
        f = false;
      }
      o << ")";
    }
    o << "\n";
  };
  by("injected errors", injected_errors);
  by("injected resets", injected_resets);
  by("injected resets after work", injected_resets_after);
  o << "injected slow " << injected_slow << ", truncations " << injected_truncations
    << ", dropped events " << dropped_events << "\n";
  return o.str();
}

fake_engine::fake_engine(fake_engine_options options)
    : impl_(std::make_shared<impl>(std::move(options))) {
  if (impl_->opt.socket_path.empty()) throw std::invalid_argument("fake_engine: no socket path");
  try {
    impl_->start();
  } catch (const boost::system::system_error& e) {
    throw std::system_error(e.code().value(), std::generic_category(),
                            "fake engine: cannot listen on " + impl_->opt.socket_path);
  }
}

fake_engine::~fake_engine() {
  stop();
}

void fake_engine::stop() {
  impl_->stop();
}

const std::string& fake_engine::socket_path() const noexcept {
  return impl_->opt.socket_path;
}

const fake_engine_options& fake_engine::options() const noexcept {
  return impl_->opt;
}

fake_engine_stats fake_engine::stats() const {
  return impl_->call([this] { return impl_->snapshot(); });
}

std::vector<fake_container_view> fake_engine::containers() const {
  return impl_->call([this] { return impl_->view(); });
}

bool fake_engine::inject_oom(const std::string& id_or_name) {
  return impl_->call([this, id_or_name] {
    auto* c = impl_->find_container(id_or_name);
    if (!c || !c->running()) return false;
    c->oom_killed = true;
    impl_->emit(*c, "oom");
    impl_->container_exit(*c, 137);
    return true;
  });
}

void fake_engine::set_faults(double error_rate, double reset_rate, double truncate_rate,
                             double drop_event_rate) {
  impl_->call([this, error_rate, reset_rate, truncate_rate, drop_event_rate] {
    impl_->opt.error_rate = error_rate;
    impl_->opt.reset_rate = reset_rate;
    impl_->opt.truncate_rate = truncate_rate;
    impl_->opt.drop_event_rate = drop_event_rate;
    return 0;
  });
}

const std::vector<std::string>& fake_engine::endpoint_classes() {
  static const std::vector<std::string> classes = {
      "ping",        "version",    "info",         "create", "start", "stop",    "kill",   "remove",
      "inspect",     "list",       "wait",         "rename", "pause", "unpause", "logs",   "stats",
      "exec_create", "exec_start", "exec_inspect", "events", "image", "archive", "unknown"};
  return classes;
}

// -- corral fake-engine ---------------------------------------------------------------------

namespace {

int usage(std::ostream& out, int code) {
  out << "usage: corral fake-engine --socket PATH [--latency-scale X] [--error-rate P] "
         "[--reset-rate P]\n"
         "         [--slow-rate P] [--slow-delay D] [--truncate-rate P] [--drop-event-rate P] "
         "[--seed N]\n"
         "A fake Docker engine (Engine API 1.41) for scale and fault-injection runs of corral.\n"
         "Latencies default to the real engine's on corral's build machines; --latency-scale 0\n"
         "answers at once. Rates are probabilities in [0, 1]. Stops on SIGTERM or SIGINT.\n";
  return code;
}

std::optional<double> parse_rate(const std::string& text, bool probability) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || !(v >= 0)) return std::nullopt;
  if (probability && v > 1) return std::nullopt;
  return v;
}

}  // namespace

int fake_engine_main(int argc, char** argv) {
  fake_engine_options options;
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && args.front() == "fake-engine") args.erase(args.begin());
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string flag = args[i];
    std::string value;
    bool have_value = false;
    if (auto eq = flag.find('='); eq != std::string::npos && flag.rfind("--", 0) == 0) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
      have_value = true;
    }
    if (flag == "--help" || flag == "-h") return usage(std::cout, 0);
    if (!have_value) {
      if (i + 1 >= args.size()) {
        std::cerr << "corral fake-engine: " << flag << " needs a value\n";
        return usage(std::cerr, 2);
      }
      value = args[++i];
    }
    auto bad = [&] {
      std::cerr << "corral fake-engine: bad value for " << flag << ": '" << value << "'\n";
      return 2;
    };
    if (flag == "--socket") {
      options.socket_path = value;
    } else if (flag == "--latency-scale") {
      auto v = parse_rate(value, false);
      if (!v) return bad();
      options.latency_scale = *v;
    } else if (flag == "--slow-delay") {
      auto d = parse_duration(value);
      if (!d) return bad();
      options.slow_delay = *d;
    } else if (flag == "--seed") {
      char* end = nullptr;
      options.seed = std::strtoull(value.c_str(), &end, 10);
      if (value.empty() || end != value.c_str() + value.size()) return bad();
    } else {
      double* target = flag == "--error-rate"        ? &options.error_rate
                       : flag == "--reset-rate"      ? &options.reset_rate
                       : flag == "--slow-rate"       ? &options.slow_rate
                       : flag == "--truncate-rate"   ? &options.truncate_rate
                       : flag == "--drop-event-rate" ? &options.drop_event_rate
                                                     : nullptr;
      if (!target) {
        std::cerr << "corral fake-engine: unknown option " << flag << "\n";
        return usage(std::cerr, 2);
      }
      auto v = parse_rate(value, true);
      if (!v) return bad();
      *target = *v;
    }
  }
  if (options.socket_path.empty()) {
    std::cerr << "corral fake-engine: --socket PATH is required\n";
    return usage(std::cerr, 2);
  }

  // Signals go to sigwait below: block them before the I/O thread starts, so it inherits it.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::unique_ptr<fake_engine> engine;
  try {
    engine = std::make_unique<fake_engine>(options);
  } catch (const std::exception& e) {
    std::cerr << "corral fake-engine: " << e.what() << "\n";
    return 1;
  }
  std::cout << "fake engine listening on " << options.socket_path << std::endl;
  int sig = 0;
  sigwait(&signals, &sig);
  const auto final_stats = engine->stats();
  engine->stop();
  std::cerr << "fake engine stopped (" << (sig == SIGINT ? "SIGINT" : "SIGTERM") << ")\n"
            << final_stats.summary();
  return 0;
}

}  // namespace corral::app
