// What the `corral` command prints: sandboxes (a line, a table, JSON), a command's result,
// its output as it streams, and the exit code a result maps to (app/exit_codes.hpp).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <caf/fwd.hpp>

#include "messages/exec.hpp"
#include "messages/runtime_stats.hpp"
#include "messages/sandbox.hpp"

namespace corral::app {

// Each warning as "corral: note: ..." on stderr.
void print_warnings(const std::vector<std::string>& warnings);

// One sandbox: "KEY CONTAINER" (12 characters of its id), or a JSON object.
void print_sandbox(const messages::sandbox_info& info, bool json);

// A table with a header line, or a JSON array.
void print_sandboxes(const std::vector<messages::sandbox_info>& list, bool json);

// `corral stats`: the runtime's counters, one "name value" per line (or a JSON object).
void print_stats(const messages::runtime_stats& stats, bool json);

// A finished command: as JSON (its output included), or the notes on stderr that streamed
// output lacks (truncation, timeout, out of memory, a lost sandbox).
void print_result(const messages::exec_result& result, bool json);

// The command's own code; timed_out, killed, or error when corral cannot tell.
int exit_code_of(const messages::exec_result& result);

// An actor writing output chunks to this process's stdout and stderr as they come; a
// `flush` request is answered after every chunk queued before it.
caf::behavior terminal_writer(caf::event_based_actor* self);

// All of this process's stdin.
// This process's stdin, read to its end; nullopt as soon as it holds more than `limit` bytes.
std::optional<std::string> read_stdin(std::size_t limit);

}  // namespace corral::app
