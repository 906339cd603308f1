// Connections to the sandboxes' agents (app/agent/): framed unix-socket streams on one I/O
// thread shared by a runtime's container actors. Like docker::client, every call returns at
// once and every handler runs on the I/O thread, where actors only post a message.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace corral::actors {

// One whole frame (messages/agent_protocol.hpp): its type, command id and payload.
struct agent_frame {
  uint8_t type = 0;
  uint32_t id = 0;
  std::string payload;
};

struct agent_link_handlers {
  // The whole frames of one read, in order: one call (so one message to an actor) per read.
  std::function<void(std::vector<agent_frame> frames)> on_frames;
  // Once, when the link ends by itself (never after close()): why, in words.
  std::function<void(std::string why)> on_closed;
};

// Where corral's programs find the agent: $CORRAL_AGENT ("none": no agent, commands are
// `docker exec`s), else `corral-agent` beside the running program or in ../lib/corral/.
// Empty when there is none.
std::string default_agent_path();

class agent_hub {
 public:
  using link_id = uint64_t;

  agent_hub();
  ~agent_hub();  // closes every link and joins the I/O thread
  agent_hub(const agent_hub&) = delete;
  agent_hub& operator=(const agent_hub&) = delete;

  // Connects to the agent's socket, trying again while it is not there yet (the agent starts
  // with its container) for up to `patience`, then says hello; frames follow.
  link_id open(std::string socket_path, std::chrono::milliseconds patience,
               agent_link_handlers handlers);
  // Queues one frame. Unknown or closed links are ignored. Safe from any thread.
  void send(link_id id, std::string frame);
  void close(link_id id);

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace corral::actors
