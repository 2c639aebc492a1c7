// splice(2) data path: each direction moves bytes socket -> pipe -> socket without copying them.
#pragma once

#include "datapath/datapath.hpp"
#include "sys/fd.hpp"

#include <system_error>

namespace spliced::datapath {

// One pipe, what a direction splices through.
struct pipe_pair {
    sys::unique_fd read_end;
    sys::unique_fd write_end;
};

// The pipes of one spliced pair, one per direction.
struct splice_pipes {
    pipe_pair forward;   // client -> upstream
    pipe_pair backward;  // upstream -> client
};

// Takes a pipe per direction from the worker thread's pool, making new ones when it is empty. Out
// of descriptors (pipe2: EMFILE, ENFILE) it holds none and says why: take them before the hand-off,
// so such a pair is counted and run on copy, which needs no descriptor.
std::error_code take_pipes(splice_pipes& out);

// Runs both directions of the pair through its pipes until both end or the pair aborts; empty
// pipes go back to the pool.
net::awaitable<void> run_splice(pair_state& p, splice_pipes pipes);

// The splice path of `datapath: auto` when sockmap is usable: runs like run_splice, and returns
// true once the pair is worth moving to the sockmap path (it moved no byte for two 100 ms
// ticks: idle; the promoter in splice_pump.cpp says why busy pairs stay) and both directions are
// parked: waiting to read, pipes empty, neither at EOF. The pair's sockets are then untouched by
// userspace, with p.written_to_* set; the caller inserts them. Returns false when the pair ended
// on splice.
net::awaitable<bool> run_splice_promotable(pair_state& p, splice_pipes pipes);

// True when splice(2) from a TCP socket works on this kernel (checked once, cached).
bool splice_available();

}  // namespace spliced::datapath
