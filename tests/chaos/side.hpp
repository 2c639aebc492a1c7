// One side (client or backend) of a chaos scenario: runs its plan on a connected socket and records what it sent,
// what it received (checked byte by byte against the peer's stream as it arrives) and how the connection ended.
#pragma once

#include "harness.hpp"
#include "scenario.hpp"

#include <optional>
#include <string>
#include <vector>

namespace chaos {

using it::clock;

// How the side's reading ended.
enum class read_end {
    none,     // it stopped reading first (its own close or reset), or never read
    eof,      // recv() returned 0
    reset,    // recv() failed with ECONNRESET (or EPIPE)
    error,    // recv() failed otherwise
    timeout,  // it was still waiting for the end at the scenario's cap
};
const char* to_string(read_end e);

struct side_result {
    bool connected = false;     // client: connect() succeeded; backend: the daemon's connection was accepted
    std::string connect_error;  // client: why connect() failed
    std::uint16_t local_port = 0;
    clock::time_point started{};

    std::uint64_t sent = 0;      // bytes of its stream the side wrote (send() returned them)
    std::uint64_t received = 0;  // bytes read
    std::optional<std::uint64_t> mismatch_at;  // first received byte that differs from the peer's stream
    std::uint8_t got = 0, want = 0;
    read_end end = read_end::none;
    int end_errno = 0;
    clock::time_point end_at{};  // when the EOF / error was read

    int send_errno = 0;  // a send() that failed (EPIPE, ECONNRESET) ends the side's writes
    bool shut = false;   // shutdown(SHUT_WR) succeeded
    bool closed = false;  // ended with a plain close()
    int unread_at_close = -1;  // SIOCINQ just before that close()
    bool reset = false;        // ended with SO_LINGER {1, 0} + close()
    // A FIN went out, or most likely did: shutdown(SHUT_WR), or a plain close() with nothing unread (a byte that
    // arrives between the SIOCINQ and the close() turns it into an RST). fin_at: just before that call.
    bool fin = false;
    clock::time_point fin_at{};

    bool hit_cap = false;  // still running at the scenario's cap
    std::string cap_in;    // what it was doing then
    std::vector<std::string> trace;
};

struct side_setup {
    const char* name;  // "client" / "backend"
    const side_plan& plan;
    it::payload own;   // the stream this side writes
    it::payload peer;  // the stream the other side writes
    clock::time_point t0;  // the scenario's start (trace times are relative to it)
    clock::time_point deadline;
};

// Runs the plan on `fd` (connected; made non-blocking here) and closes it as the plan ends, or at the deadline.
void run_side(it::unique_fd& fd, const side_setup& setup, side_result& r);

// Adds a trace line "+12.3ms text" (times from t0).
void trace(side_result& r, clock::time_point t0, const std::string& text);

// Milliseconds from `t0` to `t`, for reports.
double ms_since(clock::time_point t0, clock::time_point t);

}  // namespace chaos
