// Fuzzes messages/agent_protocol.hpp, the framing and field reader that corral and the agent
// both run on what the other side sends (a hostile sandbox root can put its own listener in the
// agent's place): a stream cut into frames in pieces, and every frame's payload read as each
// frame type's documented fields.
//
// Input: one byte for the piece size, then the stream.
// Properties: a frame never claims more bytes than the buffer holds, nor a length outside
// [header, max_frame] without `bad`; a reader never yields a string longer than what was left,
// nor more list items than fit; a payload read without error and re-written by the writer is
// the same bytes; buffered bytes stay within one frame plus a piece.
#include <cstdint>
#include <string>

#include "fuzz_common.hpp"
#include "messages/agent_protocol.hpp"

namespace proto = corral::agent_protocol;
using corral::fuzz::input;

namespace {

// Reads `payload` as the fields of `type` and writes what it read back: equal bytes when the
// whole payload was those fields.
void read_fields(proto::frame type, std::string_view payload) {
  proto::reader r(payload);
  proto::writer w(type, 0);
  auto s = [&] { w.str(r.str()); };
  auto ss = [&] { w.strs(r.strs()); };
  switch (type) {
    case proto::frame::hello:
    case proto::frame::started:
      w.u32(r.u32());
      break;
    case proto::frame::configure:
      s(), s(), w.i64(r.i64()), w.i64(r.i64()), ss(), ss(), w.u32(r.u32()), w.u32(r.u32()), ss(),
          s(), w.u8(r.u8());
      break;
    case proto::frame::start:
      ss(), ss(), s(), w.u32(r.u32()), w.u32(r.u32()), w.i64(r.i64()), w.u64(r.u64()),
          w.u64(r.u64()), w.u8(r.u8()), w.u64(r.u64());
      break;
    case proto::frame::stdin_data:
    case proto::frame::refused:
      s();
      break;
    case proto::frame::credit:
      w.u64(r.u64());
      break;
    case proto::frame::signal:
      w.u32(r.u32());
      break;
    case proto::frame::welcome: {
      w.u32(r.u32()), s(), s(), w.i64(r.i64()), w.i64(r.i64()), s();
      const uint32_t n = r.u32();
      w.u32(n);
      for (uint32_t i = 0; i < n && r.ok(); ++i) w.u32(r.u32()), w.i64(r.i64()), s();
      break;
    }
    case proto::frame::output:
      w.u8(r.u8()), s();
      break;
    case proto::frame::exited:
      w.u8(r.u8()), w.i32(r.i32()), w.i32(r.i32()), w.u64(r.u64()), w.u64(r.u64()), w.u8(r.u8()),
          w.u8(r.u8()), w.u8(r.u8()), s();
      break;
    case proto::frame::bye:
      w.u8(r.u8()), s();
      break;
    default:
      return;  // no fields: stdin_close, shutdown, ping, pong, or an unknown type
  }
  if (!r.done()) return;
  const std::string again = w.finish();
  CORRAL_FUZZ_CHECK(std::string_view(again).substr(proto::header_size) == payload);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  input in(data, size);
  const std::size_t piece = 1 + in.byte() % 64;
  std::string buffer;
  bool broken = false;
  while (!in.empty() && !broken) {
    buffer.append(in.take(piece));
    std::size_t offset = 0;
    for (;;) {
      std::size_t used = 0;
      bool bad = false;
      const auto rest = std::string_view(buffer).substr(offset);
      auto f = proto::next_frame(rest, used, bad);
      if (bad) {
        CORRAL_FUZZ_CHECK(!f);
        broken = true;  // both sides close the connection here
        break;
      }
      if (!f) {
        CORRAL_FUZZ_CHECK(used == 0);
        break;
      }
      CORRAL_FUZZ_CHECK(used >= proto::header_size && used <= rest.size());
      CORRAL_FUZZ_CHECK(f->payload.size() == used - proto::header_size);
      CORRAL_FUZZ_CHECK(used - 4 <= proto::max_frame);
      read_fields(f->type, f->payload);
      offset += used;
    }
    buffer.erase(0, offset);
    CORRAL_FUZZ_CHECK(broken || buffer.size() < proto::max_frame + 4 + piece);
  }
  return 0;
}
