// Exit codes of corral's programs, in one place. A command that ran exits with its own code;
// these are the ones corral itself chooses (as `docker run` does where they overlap).
#pragma once

namespace corral::app::exit_code {

inline constexpr int ok = 0;
// `corral-stress`: the run finished but something outlived it (a container, an fd, memory),
// or more operations failed than --max-errors allows.
inline constexpr int leaked = 1;
inline constexpr int stress_failed = 1;
// The command timed out; corral killed its whole process tree.
inline constexpr int timed_out = 124;
// An error of corral or the engine (a bad flag, an unreachable node...): stderr says what.
inline constexpr int error = 125;
// The command exists but cannot be executed (as the engine reports it).
inline constexpr int cannot_execute = 126;
// The command was not found (as the engine reports it).
inline constexpr int not_found = 127;
// `corral node`: a second SIGTERM/SIGINT during shutdown exits at once.
inline constexpr int second_signal = 130;
// The command was killed (from outside, or by the OOM killer).
inline constexpr int killed = 137;

}  // namespace corral::app::exit_code
