#include "docker/stream_demux.hpp"

#include <algorithm>
#include <cstdio>
#include <utility>

namespace corral::docker {

stream_demuxer::stream_demuxer(sink s, uint32_t max_frame)
    : sink_(std::move(s)), max_frame_(max_frame) {}

std::optional<error> stream_demuxer::fail(std::string message) {
  error_ = error{errc::protocol, std::move(message), 0};
  return error_;
}

std::optional<error> stream_demuxer::parse_header() {
  const unsigned type = header_[0];
  if (type > 3) {
    // The usual cause is a TTY container, whose output is raw text: name the byte so the
    // mistake is recognisable.
    return fail("stream frame has unknown stream type " + std::to_string(type) +
                " (a TTY stream is not multiplexed)");
  }
  if (header_[1] != 0 || header_[2] != 0 || header_[3] != 0) {
    char bytes[16];
    std::snprintf(bytes, sizeof bytes, "%02x %02x %02x", header_[1], header_[2], header_[3]);
    return fail(std::string("stream frame header has nonzero reserved bytes (") + bytes + ")");
  }
  const uint32_t size = (uint32_t{header_[4]} << 24) | (uint32_t{header_[5]} << 16) |
                        (uint32_t{header_[6]} << 8) | uint32_t{header_[7]};
  if (size > max_frame_) {
    return fail("stream frame declares " + std::to_string(size) + " bytes, over the " +
                std::to_string(max_frame_) + "-byte limit");
  }
  kind_ = static_cast<stream_kind>(type);
  payload_size_ = size;
  payload_left_ = size;
  header_have_ = 0;
  return std::nullopt;
}

std::optional<error> stream_demuxer::feed(std::string_view bytes) {
  if (error_) return error_;
  while (!bytes.empty()) {
    if (payload_left_ == 0) {
      const size_t take = std::min(sizeof header_ - header_have_, bytes.size());
      std::copy_n(bytes.data(), take, header_ + header_have_);
      header_have_ += take;
      bytes.remove_prefix(take);
      if (header_have_ < sizeof header_) break;
      if (auto err = parse_header()) return err;
      continue;
    }
    const size_t take = std::min<size_t>(payload_left_, bytes.size());
    payload_left_ -= static_cast<uint32_t>(take);
    sink_(kind_, bytes.substr(0, take));
    bytes.remove_prefix(take);
  }
  return std::nullopt;
}

std::optional<error> stream_demuxer::finish() {
  if (error_) return error_;
  if (header_have_ != 0) {
    return fail("stream truncated: " + std::to_string(header_have_) + " of 8 header bytes");
  }
  if (payload_left_ != 0) {
    return fail("stream truncated: " + std::to_string(payload_size_ - payload_left_) + " of " +
                std::to_string(payload_size_) + " payload bytes");
  }
  return std::nullopt;
}

void capped_buffer::append(std::string_view bytes) {
  total += bytes.size();
  const size_t room = data.size() < cap ? cap - data.size() : 0;
  if (bytes.size() > room) {
    truncated = true;
    bytes = bytes.substr(0, room);
  }
  data.append(bytes);
}

}  // namespace corral::docker
