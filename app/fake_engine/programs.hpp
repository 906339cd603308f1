// What an exec or a container's main process "does" in the fake engine: commands are not
// run, they are recognised (the table in fake_engine.hpp) and turned into a `program`, a list
// of steps (output, zero bytes, a sleep, echo stdin) and an exit code, which the engine's
// execs, its containers' main processes and the in-memory agent play on their own timers.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace corral::app::fake {

struct step {
  enum kind_t : uint8_t { out, zeros, sleep, echo_stdin } kind = out;
  uint8_t stream = 1;  // 1 stdout, 2 stderr
  std::string text;
  uint64_t count = 0;
  std::chrono::milliseconds duration{0};
};

struct program {
  std::vector<step> steps;
  int exit_code = 0;
  bool forever = false;  // a sleep beyond max_sleep (main processes only)
  std::string kill_tag;  // corral's exec killer: CORRAL_EXEC value to kill
  bool reads_stdin = false;
};

// The program of `argv`. A sleep longer than `cap` is cut to it, or, for a container's main
// process, makes the program run until stopped (`forever`). Anything unknown is the runtime's
// "executable file not found" (exit 126).
program interpret(const std::vector<std::string>& argv, std::chrono::milliseconds cap,
                  bool main_process);

}  // namespace corral::app::fake
