// The fake engine's command interpreter: see programs.hpp. Enough of sh (pieces split on ';',
// '&&', '||' and newlines, quotes removed) for the scripts corral and its tests write, and the
// few programs they run (echo, sleep, exit, true, false, head -c N /dev/zero, cat).
#include "app/fake_engine/programs.hpp"

#include <cctype>
#include <cstdlib>
#include <optional>
#include <string_view>

namespace corral::app::fake {

using std::chrono::milliseconds;

namespace {

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
    mult = uint64_t{1024} * 1024;
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

}  // namespace

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

}  // namespace corral::app::fake
