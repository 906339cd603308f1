// The fake engine's in-memory agent (agent.hpp): the agent protocol's server side, and the
// engine's part in it (start_agent, accept_agent, stop_agent).
#include "app/fake_engine/agent.hpp"

#include <simdjson.h>

#include <algorithm>
#include <array>
#include <deque>
#include <filesystem>
#include <map>
#include <string_view>

#include "app/fake_engine/engine.hpp"
#include "app/fake_engine/programs.hpp"
#include "messages/agent_protocol.hpp"

namespace corral::app::fake {

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
      static thread_local std::array<char, std::size_t{64} * 1024> chunk;
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
          const std::string zeros(std::size_t{32} * 1024, '\0');
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

void serve_agent(asio::io_context& io, unix_socket sock,
                 std::shared_ptr<fake_agent_registry> registry) {
  std::make_shared<fake_agent_conn>(io, std::move(sock), std::move(registry))->start();
}

void close_agent(fake_agent_conn& conn) {
  conn.close();
}

}  // namespace corral::app::fake

namespace corral::app {

using namespace fake;
using namespace std::chrono_literals;

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
    serve_agent(io, std::move(sock), agent_registry);
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
    if (auto conn = weak.lock()) close_agent(*conn);
  agent->conns.clear();
  std::error_code fs_ignored;
  if (!agent->socket_path.empty()) std::filesystem::remove(agent->socket_path, fs_ignored);
}

}  // namespace corral::app
