#include <catch2/catch.hpp>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "docker/stream_demux.hpp"

namespace docker = corral::docker;
using docker::stream_kind;
using namespace std::string_literals;

namespace {

std::string frame(uint8_t kind, std::string_view payload) {
  const auto n = static_cast<uint32_t>(payload.size());
  std::string out = {static_cast<char>(kind),
                     0,
                     0,
                     0,
                     static_cast<char>(n >> 24),
                     static_cast<char>(n >> 16),
                     static_cast<char>(n >> 8),
                     static_cast<char>(n)};
  return out + std::string(payload);
}

std::string header(uint8_t b0, uint8_t b1, uint8_t b2, uint8_t b3, uint32_t n) {
  return {static_cast<char>(b0),     static_cast<char>(b1),      static_cast<char>(b2),
          static_cast<char>(b3),     static_cast<char>(n >> 24), static_cast<char>(n >> 16),
          static_cast<char>(n >> 8), static_cast<char>(n)};
}

// Concatenates into one string. Not `"a" + std::to_string(n) + "b"`: GCC 12 at -O3 inlines the
// move of that temporary and warns about an out-of-bounds memcpy that cannot happen
// (-Warray-bounds, GCC bug 105651).
std::string joined(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (auto part : parts) out.append(part);
  return out;
}

struct collected {
  std::string out, err, in, sys;
  int calls = 0;
  int empty_calls = 0;
  std::string order;  // the kind of each call, to check pieces never cross frames

  docker::stream_demuxer::sink sink() {
    return [this](stream_kind kind, std::string_view piece) {
      ++calls;
      if (piece.empty()) ++empty_calls;
      switch (kind) {
        case stream_kind::stdin_stream:
          in += piece;
          order += 'i';
          break;
        case stream_kind::stdout_stream:
          out += piece;
          order += 'o';
          break;
        case stream_kind::stderr_stream:
          err += piece;
          order += 'e';
          break;
        case stream_kind::system_error:
          sys += piece;
          order += 's';
          break;
      }
    };
  }
};

// Binary payloads on purpose: NULs, bytes that look like headers, a frame of exactly 8 bytes.
const std::string canned = frame(1, "hello ") + frame(2, "oops\n") + frame(1, "") +
                           frame(1, "world\n"s + '\0' + "\x01\x00\x00\x00"s) +
                           frame(2, std::string(300, 'E')) + frame(0, "in") + frame(1, "12345678") +
                           frame(3, "exec failed") + frame(2, "");
const std::string expect_out = "hello world\n"s + '\0' + "\x01\x00\x00\x00"s + "12345678";
const std::string expect_err = "oops\n" + std::string(300, 'E');

void check_canned(const collected& c) {
  CHECK(c.out == expect_out);
  CHECK(c.err == expect_err);
  CHECK(c.in == "in");
  CHECK(c.sys == "exec failed");
  CHECK(c.empty_calls == 0);
}

}  // namespace

TEST_CASE("stream_demuxer reassembles the canned stream in one feed", "[stream_demux]") {
  collected c;
  docker::stream_demuxer d(c.sink());
  CHECK_FALSE(d.feed(canned));
  CHECK_FALSE(d.finish());
  check_canned(c);
  CHECK(c.order == "oeoeios");  // one call per non-empty frame, none for the empty ones
}

TEST_CASE("stream_demuxer accepts the stream split at every byte boundary", "[stream_demux]") {
  for (size_t split = 0; split <= canned.size(); ++split) {
    INFO("split at " << split);
    collected c;
    docker::stream_demuxer d(c.sink());
    CHECK_FALSE(d.feed(std::string_view(canned).substr(0, split)));
    CHECK_FALSE(d.feed(std::string_view(canned).substr(split)));
    CHECK_FALSE(d.finish());
    check_canned(c);
  }
  for (size_t a = 0; a <= 40; ++a) {
    for (size_t b = a; b <= 40; ++b) {
      INFO("split at " << a << " and " << b);
      collected c;
      docker::stream_demuxer d(c.sink());
      const std::string_view all = canned;
      CHECK_FALSE(d.feed(all.substr(0, a)));
      CHECK_FALSE(d.feed(all.substr(a, b - a)));
      CHECK_FALSE(d.feed(all.substr(b)));
      CHECK_FALSE(d.finish());
      check_canned(c);
    }
  }
}

TEST_CASE("stream_demuxer accepts the stream one byte at a time", "[stream_demux]") {
  collected c;
  docker::stream_demuxer d(c.sink());
  for (char ch : canned) REQUIRE_FALSE(d.feed(std::string_view(&ch, 1)));
  CHECK_FALSE(d.finish());
  check_canned(c);
}

TEST_CASE("stream_demuxer handles zero-length frames and empty feeds", "[stream_demux]") {
  collected c;
  docker::stream_demuxer d(c.sink());
  CHECK_FALSE(d.feed(""));
  CHECK_FALSE(d.feed(frame(1, "") + frame(2, "") + frame(1, "")));
  CHECK_FALSE(d.feed(""));
  CHECK_FALSE(d.finish());
  CHECK(c.calls == 0);

  collected none;
  docker::stream_demuxer fresh(none.sink());
  CHECK_FALSE(fresh.finish());  // an empty stream is a complete one
}

TEST_CASE("stream_demuxer rejects an unknown stream byte", "[stream_demux]") {
  collected c;
  docker::stream_demuxer d(c.sink());
  CHECK_FALSE(d.feed(frame(1, "ok")));
  const auto err = d.feed(frame(4, "bad") + frame(1, "after"));
  REQUIRE(err);
  CHECK(err->code == docker::errc::protocol);
  CHECK(err->message.find("unknown stream type 4") != std::string::npos);
  CHECK(c.out == "ok");

  // A TTY stream fed here by mistake: the first byte is text.
  collected t;
  docker::stream_demuxer tty(t.sink());
  const auto tty_err = tty.feed("hello from a tty\n");
  REQUIRE(tty_err);
  CHECK(tty_err->message.find("unknown stream type 104") != std::string::npos);
  CHECK(t.calls == 0);
}

TEST_CASE("stream_demuxer rejects nonzero reserved bytes", "[stream_demux]") {
  for (int which = 1; which <= 3; ++which) {
    collected c;
    docker::stream_demuxer d(c.sink());
    const auto err = d.feed(header(1, which == 1, which == 2, which == 3 ? 0x80 : 0, 2) + "xy");
    REQUIRE(err);
    CHECK(err->code == docker::errc::protocol);
    CHECK(err->message.find("reserved") != std::string::npos);
    if (which == 3) {
      CHECK(err->message == "stream frame header has nonzero reserved bytes (00 00 80)");
    }
    CHECK(c.calls == 0);
  }
}

TEST_CASE("stream_demuxer rejects an oversized frame without allocating it", "[stream_demux]") {
  collected c;
  docker::stream_demuxer d(c.sink());
  // Built in two steps: g++ 12 at -O2 warns falsely (array-bounds) on the one-liner.
  std::string bytes = header(1, 0, 0, 0, 0xFFFFFFFF);
  bytes += "some payload";
  const auto err = d.feed(bytes);
  REQUIRE(err);
  CHECK(err->code == docker::errc::protocol);
  CHECK(err->message == "stream frame declares 4294967295 bytes, over the 67108864-byte limit");
  CHECK(c.calls == 0);

  // The error sticks, for feeds and finish alike, and the sink stays quiet.
  const auto again = d.feed(frame(1, "more"));
  REQUIRE(again);
  CHECK(again->message == err->message);
  const auto at_end = d.finish();
  REQUIRE(at_end);
  CHECK(at_end->message == err->message);
  CHECK(c.calls == 0);

  // The limit itself is allowed, one over is not.
  collected small;
  docker::stream_demuxer limited(small.sink(), 4);
  CHECK_FALSE(limited.feed(frame(2, "abcd")));
  CHECK(small.err == "abcd");
  const auto over = limited.feed(frame(2, "abcde"));
  REQUIRE(over);
  CHECK(over->message == "stream frame declares 5 bytes, over the 4-byte limit");
}

TEST_CASE("stream_demuxer passes a huge frame through in pieces", "[stream_demux]") {
  // With the limit raised, a 4 GiB frame is legal; pieces flow as they arrive, and nothing of
  // the declared size is reserved (which would fail or take seconds here).
  collected c;
  docker::stream_demuxer d(c.sink(), 0xFFFFFFFF);
  CHECK_FALSE(d.feed(header(1, 0, 0, 0, 0xFFFFFFFF) + "abc"));
  CHECK_FALSE(d.feed("de"));
  CHECK(c.out == "abcde");
  CHECK(c.calls == 2);
  const auto err = d.finish();
  REQUIRE(err);
  CHECK(err->message == "stream truncated: 5 of 4294967295 payload bytes");
}

TEST_CASE("stream_demuxer finish reports a truncated header or payload", "[stream_demux]") {
  const std::string whole = frame(1, "0123456789");
  for (size_t cut = 1; cut < whole.size(); ++cut) {
    INFO("cut at " << cut);
    collected c;
    docker::stream_demuxer d(c.sink());
    CHECK_FALSE(d.feed(frame(2, "e") + whole.substr(0, cut)));
    const auto err = d.finish();
    REQUIRE(err);
    CHECK(err->code == docker::errc::protocol);
    if (cut < 8) {
      CHECK(err->message ==
            joined({"stream truncated: ", std::to_string(cut), " of 8 header bytes"}));
      CHECK(c.out.empty());
    } else {
      CHECK(err->message ==
            joined({"stream truncated: ", std::to_string(cut - 8), " of 10 payload bytes"}));
      CHECK(c.out == whole.substr(8, cut - 8));
    }
    CHECK(c.err == "e");
    const auto again = d.finish();
    REQUIRE(again);
    CHECK(again->message == err->message);
  }
}

TEST_CASE("capped_buffer keeps the first cap bytes and counts the rest", "[stream_demux]") {
  docker::capped_buffer b{{}, 10};
  b.append("hello");
  CHECK(b.data == "hello");
  CHECK(b.total == 5);
  CHECK_FALSE(b.truncated);

  b.append("world");  // exactly at the cap: nothing dropped
  CHECK(b.data == "helloworld");
  CHECK(b.total == 10);
  CHECK_FALSE(b.truncated);

  b.append("");
  CHECK_FALSE(b.truncated);

  b.append("!");
  CHECK(b.data == "helloworld");
  CHECK(b.total == 11);
  CHECK(b.truncated);

  b.append(std::string(1000, 'x'));
  CHECK(b.data == "helloworld");
  CHECK(b.total == 1011);

  docker::capped_buffer split{{}, 4};
  split.append("abcdef");
  CHECK(split.data == "abcd");
  CHECK(split.total == 6);
  CHECK(split.truncated);

  docker::capped_buffer zero{{}, 0};
  zero.append("a");
  CHECK(zero.data.empty());
  CHECK(zero.total == 1);
  CHECK(zero.truncated);

  // A huge cap is not reserved up front.
  docker::capped_buffer big{{}, size_t{1} << 40};
  big.append("tiny");
  CHECK(big.data == "tiny");
  CHECK(big.data.capacity() < 1024);
  CHECK_FALSE(big.truncated);
}

TEST_CASE("stream_demuxer feeding capped buffers", "[stream_demux]") {
  docker::capped_buffer out{{}, 8};
  docker::capped_buffer err{{}, 100};
  docker::stream_demuxer d([&](stream_kind kind, std::string_view piece) {
    (kind == stream_kind::stderr_stream ? err : out).append(piece);
  });
  CHECK_FALSE(d.feed(frame(1, "0123456789") + frame(2, "warn") + frame(1, "abc")));
  CHECK_FALSE(d.finish());
  CHECK(out.data == "01234567");
  CHECK(out.total == 13);
  CHECK(out.truncated);
  CHECK(err.data == "warn");
  CHECK_FALSE(err.truncated);
}
