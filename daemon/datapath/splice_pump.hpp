// splice(2) data path: each direction moves bytes socket -> pipe -> socket without copying them.
#pragma once

#include "datapath/datapath.hpp"

namespace spliced::datapath {

// Runs both directions of the pair through pooled pipes until both end or the pair aborts.
net::awaitable<void> run_splice(pair_state& p);

// The splice path of `datapath: auto` when sockmap is usable: runs like run_splice, and returns
// true once the pair is worth moving to the sockmap path (it moved less than a bulk transfer
// would in the last sampling interval, so latency matters more than bulk throughput there) and
// both directions are parked: waiting to read, pipes empty, neither at EOF. The pair's sockets
// are then untouched by userspace, with p.written_to_* set; the caller inserts them. Returns
// false when the pair ended on splice.
net::awaitable<bool> run_splice_promotable(pair_state& p);

// True when splice(2) from a TCP socket works on this kernel (checked once, cached).
bool splice_available();

}  // namespace spliced::datapath
