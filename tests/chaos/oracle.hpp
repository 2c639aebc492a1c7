// What a scenario's two sides must have seen, given what each did: the invariants that need no knowledge of the
// daemon's insides (byte-exact prefixes, FIN only after the complete stream, resets where bytes were lost).
#pragma once

#include "scenario.hpp"
#include "side.hpp"

#include <string>
#include <vector>

namespace chaos {

// The daemon's access log line for one connection, split into the fields the campaign uses.
struct access_entry {
    std::string line;
    std::string route, client, datapath, end;
};
// Parses "... route=r3 client=127.0.0.1:40000 backend=... datapath=splice ... end=completed"; false if it is not
// such a line.
bool parse_access_line(const std::string& line, access_entry& out);

// Every violation of the invariants in one scenario's outcome, one line each (empty: none). `log` is the
// connection's access log line, if it came (only its end= is used: an idle_timeout ends a connection without
// either side's FIN).
std::vector<std::string> judge(const scenario& s, const side_result& client, const side_result& backend,
                               const access_entry* log);

// A line per side: what it did and what it saw (times from t0, the scenario's start).
std::string describe_outcome(const side_result& client, const side_result& backend, clock::time_point t0);

}  // namespace chaos
