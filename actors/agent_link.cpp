#include "actors/agent_link.hpp"

#include <cstdlib>
#include <deque>
#include <filesystem>
#include <map>
#include <thread>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include "messages/agent_protocol.hpp"

namespace corral::actors {

namespace asio = boost::asio;
using stream = asio::local::stream_protocol;
namespace proto = agent_protocol;

namespace {

// One connection. Lives on the I/O thread only.
struct link : std::enable_shared_from_this<link> {
  link(asio::io_context& io, std::string path, std::chrono::milliseconds patience,
       agent_link_handlers h)
      : socket(io),
        retry(io),
        path(std::move(path)),
        give_up(std::chrono::steady_clock::now() + patience),
        handlers(std::move(h)) {}

  stream::socket socket;
  asio::steady_timer retry;
  std::string path;
  std::chrono::steady_clock::time_point give_up;
  agent_link_handlers handlers;
  std::string in;  // a partial frame, between reads
  std::deque<std::string> out;
  bool connected = false;
  bool writing = false;
  bool closed = false;

  void end(std::string why) {
    if (closed) return;
    closed = true;
    boost::system::error_code ignored;
    retry.cancel();
    socket.close(ignored);
    if (handlers.on_closed) handlers.on_closed(std::move(why));
  }

  void close_quietly() {
    closed = true;
    boost::system::error_code ignored;
    retry.cancel();
    socket.close(ignored);
  }

  void connect() {
    socket.async_connect(stream::endpoint(path), [self = shared_from_this()](auto ec) {
      if (self->closed) return;
      if (ec) {
        // The agent creates its socket a few milliseconds after the container starts; a
        // process out of descriptors has a few seconds to get one back.
        const bool no_fds = ec == boost::system::errc::too_many_files_open ||
                            ec == boost::system::errc::too_many_files_open_in_system;
        if (no_fds && self->give_up < std::chrono::steady_clock::now() + std::chrono::seconds(5))
          self->give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        if (std::chrono::steady_clock::now() < self->give_up) {
          boost::system::error_code ignored;
          self->socket.close(ignored);
          self->retry.expires_after(std::chrono::milliseconds(10));
          self->retry.async_wait([self](auto wait_ec) {
            if (!wait_ec && !self->closed) self->connect();
          });
          return;
        }
        return self->end("cannot connect to the sandbox's agent at " + self->path + ": " +
                         ec.message());
      }
      self->connected = true;
      boost::system::error_code ignored;
      self->socket.non_blocking(true, ignored);
      self->out.push_front(proto::writer(proto::frame::hello, 0).u32(proto::version).finish());
      self->write_next();
      self->read_more();
    });
  }

  // Waits for the socket to be readable, then reads into the I/O thread's one buffer: a link
  // holds no read buffer of its own while idle (ten thousand sandboxes, tests/scale).
  void read_more() {
    socket.async_wait(stream::socket::wait_read, [self = shared_from_this()](auto ec) {
      if (self->closed) return;
      if (ec) return self->end("the agent connection broke: " + ec.message());
      static thread_local std::array<char, 64 * 1024> chunk;
      boost::system::error_code read_ec;
      const std::size_t n = self->socket.read_some(asio::buffer(chunk), read_ec);
      if (read_ec == asio::error::would_block || read_ec == asio::error::try_again)
        return self->read_more();
      if (read_ec) {
        return self->end(read_ec == asio::error::eof
                             ? "the sandbox's agent closed the connection"
                             : "the agent connection broke: " + read_ec.message());
      }
      self->in.append(chunk.data(), n);
      std::size_t offset = 0;
      std::vector<agent_frame> frames;
      for (;;) {
        std::size_t used = 0;
        bool bad = false;
        auto f = proto::next_frame(std::string_view(self->in).substr(offset), used, bad);
        if (bad) return self->end("the sandbox's agent sent a frame of a bad length");
        if (!f) break;
        offset += used;
        frames.push_back({static_cast<uint8_t>(f->type), f->id, std::string(f->payload)});
      }
      if (!frames.empty() && self->handlers.on_frames) self->handlers.on_frames(std::move(frames));
      if (self->closed) return;
      self->in.erase(0, offset);
      if (self->in.empty()) std::string().swap(self->in);
      self->read_more();
    });
  }

  void write_next() {
    if (writing || out.empty() || !connected || closed) return;
    writing = true;
    asio::async_write(socket, asio::buffer(out.front()),
                      [self = shared_from_this()](auto ec, std::size_t) {
                        self->writing = false;
                        if (self->closed) return;
                        if (ec) return self->end("writing to the sandbox's agent: " + ec.message());
                        self->out.pop_front();
                        self->write_next();
                      });
  }
};

}  // namespace

struct agent_hub::impl {
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
  std::map<link_id, std::shared_ptr<link>> links;  // I/O thread only
  std::atomic<link_id> next{1};
  std::thread thread{[this] { io.run(); }};
};

std::string default_agent_path() {
  if (const char* given = std::getenv("CORRAL_AGENT"))
    return std::string_view(given) == "none" ? std::string() : std::string(given);
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return {};
  for (const auto& candidate : {self.parent_path() / "corral-agent",
                                self.parent_path().parent_path() / "lib/corral/corral-agent"}) {
    if (std::filesystem::is_regular_file(candidate, ec)) return candidate.string();
  }
  return {};
}

agent_hub::agent_hub() : impl_(std::make_unique<impl>()) {}

agent_hub::~agent_hub() {
  asio::post(impl_->io, [i = impl_.get()] {
    for (auto& [id, l] : i->links) l->close_quietly();
    i->links.clear();
    i->work.reset();
  });
  impl_->thread.join();
}

agent_hub::link_id agent_hub::open(std::string socket_path, std::chrono::milliseconds patience,
                                   agent_link_handlers handlers) {
  const link_id id = impl_->next++;
  asio::post(impl_->io, [i = impl_.get(), id, path = std::move(socket_path), patience,
                         h = std::move(handlers)]() mutable {
    auto l = std::make_shared<link>(i->io, std::move(path), patience, std::move(h));
    // Forget it once it ends by itself; close() forgets it too.
    auto closed = std::move(l->handlers.on_closed);
    l->handlers.on_closed = [i, id, closed = std::move(closed)](std::string why) {
      if (closed) closed(std::move(why));
      asio::post(i->io, [i, id] { i->links.erase(id); });
    };
    i->links.emplace(id, l);
    l->connect();
  });
  return id;
}

void agent_hub::send(link_id id, std::string frame) {
  asio::post(impl_->io, [i = impl_.get(), id, frame = std::move(frame)]() mutable {
    auto it = i->links.find(id);
    if (it == i->links.end()) return;
    it->second->out.push_back(std::move(frame));
    it->second->write_next();
  });
}

void agent_hub::close(link_id id) {
  asio::post(impl_->io, [i = impl_.get(), id] {
    auto it = i->links.find(id);
    if (it == i->links.end()) return;
    it->second->close_quietly();
    i->links.erase(it);
  });
}

}  // namespace corral::actors
