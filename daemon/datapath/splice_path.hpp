// The splice path: a bulk read moves socket -> pipe -> socket without entering userspace. A direction takes a
// pipe from the pool only for a read that follows one that filled the copy buffer, and gives it back as soon
// as it is empty (below that, a pipe costs more than the copy it saves).
#pragma once

#include "datapath/direction.hpp"
#include "datapath/pipe_pool.hpp"

#include <cstddef>

namespace spliced::datapath {

// Sends what the direction's pipe holds: go_on once it is empty (and back in `pool`); blocked while `to` is
// full; to_failed.
step flush_pipe(direction& d, pipe_pool& pool);

// One splice() from `from` into a pipe (taken from `pool`), then flush_pipe(). When splice cannot read where a
// recv() would (an urgent mark: tcp_read_sock() stops there for good; a 0 that may not be EOF), or no pipe
// can be had, the direction's next read copies instead (d.bulk cleared, or d.may_splice when splice is
// unusable); EOF only when the FIN was seen (EPOLLRDHUP) with no mark before it.
step splice_read(direction& d, pipe_pool& pool, std::size_t& budget);

}  // namespace spliced::datapath
