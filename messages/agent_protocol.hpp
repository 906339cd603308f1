// The sandbox agent's wire protocol: what corral and `corral-agent` (app/agent/) say to each
// other over the unix socket in a sandbox's run directory. Plain C++ and nothing else, because
// the agent is a static program that links no library of ours.
//
// A frame is   u32 length | u8 type | u32 command id | payload      (little endian)
// where length counts everything after itself. Payload fields are u8/u32/u64/i64 integers,
// strings (u32 size + bytes) and string lists (u32 count + strings), in the order the
// frame's table in app/agent/README.md lists them. A connection starts with hello/welcome; a
// frame of an unknown type, a short payload or a length over max_frame ends the connection.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace corral::agent_protocol {

// Bumped on any change of a frame's layout; a peer of another version is refused by name.
inline constexpr uint32_t version = 3;
inline constexpr uint32_t max_frame = 4u << 20;
inline constexpr std::size_t header_size = 9;  // length, type, id

// Paths inside every sandbox.
inline constexpr const char* agent_path_inside = "/corral/agent";
inline constexpr const char* run_dir_inside = "/corral/run";
inline constexpr const char* socket_name = "agent.sock";
inline constexpr const char* egress_socket_name = "egress.sock";  // the proxy's, per sandbox
inline constexpr const char* trust_bundle_name = "ca.pem";        // what commands trust
inline constexpr uint16_t egress_port = 3128;                     // on the sandbox's own loopback

enum class frame : uint8_t {
  // corral -> agent
  hello = 1,        // u32 version
  configure = 2,    // str sandbox id, str key, i64 deadline (unix ms, 0: none), i64 idle limit
                    // (ms, 0: none), strs sandbox env, strs main command, u32 uid, u32 gid,
                    // strs capabilities kept for commands, str spec record, strs egress
                    // hosts (not empty: listen on 127.0.0.1:3128 and bridge each connection
                    // to the run directory's egress socket); the first configure binds the
                    // sandbox: a later one for another key is refused
  start = 3,        // strs argv, strs env, str workdir, u32 uid, u32 gid, i64 timeout ms,
                    // u64 stdout cap, u64 stderr cap, u8 has stdin, u64 output credit
  stdin_data = 4,   // str bytes
  stdin_close = 5,  // (none)
  credit = 6,       // u64 bytes the reader may take more
  signal = 7,       // u32 signal number; SIGKILL kills the command's whole tree
  shutdown = 8,     // (none): end every command, then the sandbox
  ping = 9,         // (none)
  // agent -> corral
  welcome = 64,  // u32 version, str sandbox id, str key, i64 deadline, i64 idle limit,
                 // str spec record (all empty/0: not bound yet),
                 // u32 count, then per running command: u32 id, i64 deadline, str argv[0];
                 // then strs egress hosts (what a runtime that adopts it opens again)
  started = 65,  // u32 pid (reserved: not sent by version 1)
  output = 66,   // u8 stream (1 stdout, 2 stderr), str bytes
  exited = 67,   // u8 end, i32 exit code, i32 signal, u64 stdout total, u64 stderr total,
                 // u8 stdout truncated, u8 stderr truncated, u8 oom killed, str detail
  pong = 68,     // (none)
  refused = 69,  // str reason: the frame with this id was not carried out
  bye = 70,      // u8 why (a bye_reason), str detail: the agent ends the sandbox now
};

enum class bye_reason : uint8_t { lifetime = 1, idle = 2, stopped = 3, main_command_ended = 4 };

// How a command ended (exited frame).
enum class end : uint8_t {
  exited = 0,        // by itself: exit code, or signal when killed by one we did not send
  timed_out = 1,     // the agent killed its tree at the deadline
  killed = 2,        // a signal frame or shutdown killed its tree
  spawn_failed = 3,  // never ran: 127 not found, 126 not executable, detail says why
  lost = 4,          // its keeper died (never by the command's hand)
};

class writer {
 public:
  writer(frame type, uint32_t id) {
    buf_.resize(4);
    u8(static_cast<uint8_t>(type));
    u32(id);
  }
  writer& u8(uint8_t v) {
    buf_.push_back(static_cast<char>(v));
    return *this;
  }
  writer& u32(uint32_t v) { return raw(v); }
  writer& i32(int32_t v) { return raw(static_cast<uint32_t>(v)); }
  writer& u64(uint64_t v) { return raw(v); }
  writer& i64(int64_t v) { return raw(static_cast<uint64_t>(v)); }
  writer& str(std::string_view s) {
    u32(static_cast<uint32_t>(s.size()));
    buf_.append(s.data(), s.size());
    return *this;
  }
  writer& strs(const std::vector<std::string>& list) {
    u32(static_cast<uint32_t>(list.size()));
    for (const auto& s : list) str(s);
    return *this;
  }
  // The frame, length filled in.
  std::string finish() {
    const auto n = static_cast<uint32_t>(buf_.size() - 4);
    for (int i = 0; i < 4; ++i) buf_[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    return std::move(buf_);
  }

 private:
  template <class T>
  writer& raw(T v) {
    for (std::size_t i = 0; i < sizeof(T); ++i)
      buf_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    return *this;
  }
  std::string buf_;
};

// Reads one frame's payload; any read past its end sets !ok() and yields zeros.
class reader {
 public:
  explicit reader(std::string_view payload) : rest_(payload) {}
  bool ok() const { return ok_; }
  bool done() const { return ok_ && rest_.empty(); }
  uint8_t u8() { return static_cast<uint8_t>(raw<uint8_t>()); }
  uint32_t u32() { return raw<uint32_t>(); }
  int32_t i32() { return static_cast<int32_t>(raw<uint32_t>()); }
  uint64_t u64() { return raw<uint64_t>(); }
  int64_t i64() { return static_cast<int64_t>(raw<uint64_t>()); }
  std::string str(std::size_t max = max_frame) {
    const uint32_t n = u32();
    if (!ok_ || n > rest_.size() || n > max) return fail<std::string>();
    std::string s(rest_.substr(0, n));
    rest_.remove_prefix(n);
    return s;
  }
  std::vector<std::string> strs(std::size_t max_count = 1u << 16) {
    const uint32_t n = u32();
    std::vector<std::string> out;
    if (!ok_ || n > max_count || n > rest_.size() / 4) return fail<std::vector<std::string>>();
    out.reserve(n);
    for (uint32_t i = 0; i < n && ok_; ++i) out.push_back(str());
    return out;
  }

 private:
  template <class T>
  T fail() {
    ok_ = false;
    rest_ = {};
    return T{};
  }
  template <class T>
  T raw() {
    if (!ok_ || rest_.size() < sizeof(T)) return fail<T>();
    T v = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i)
      v |= static_cast<T>(static_cast<T>(static_cast<unsigned char>(rest_[i])) << (8 * i));
    rest_.remove_prefix(sizeof(T));
    return v;
  }
  std::string_view rest_;
  bool ok_ = true;
};

struct frame_view {
  frame type;
  uint32_t id;
  std::string_view payload;
};

// Cuts the first whole frame off `buffer` (consumed bytes in `used`). nullopt: wait for more
// bytes. A length under the header or over max_frame sets `bad`.
inline std::optional<frame_view> next_frame(std::string_view buffer, std::size_t& used, bool& bad) {
  used = 0;
  bad = false;
  if (buffer.size() < 4) return std::nullopt;
  uint32_t n = 0;
  for (int i = 0; i < 4; ++i)
    n |= static_cast<uint32_t>(static_cast<unsigned char>(buffer[i])) << (8 * i);
  if (n < header_size - 4 || n > max_frame) {
    bad = true;
    return std::nullopt;
  }
  if (buffer.size() < 4 + static_cast<std::size_t>(n)) return std::nullopt;
  reader head(buffer.substr(4, header_size - 4));
  frame_view f;
  f.type = static_cast<frame>(head.u8());
  f.id = head.u32();
  f.payload = buffer.substr(header_size, n - (header_size - 4));
  used = 4 + n;
  return f;
}

}  // namespace corral::agent_protocol
