// A direction in userspace: what it holds goes out first; then each read copies, or splices when the last one
// filled the copy buffer (the move between copy and splice, read by read).
#pragma once

#include "datapath/direction.hpp"
#include "datapath/pipe_pool.hpp"

#include <cstddef>
#include <span>

namespace spliced::datapath {

// Moves bytes until the direction blocks, the budget is spent (yield), `from` reached EOF with every byte
// sent (eof), or a socket failed. Reads only while `to` can take more: a slow receiver holds the sender
// back through TCP, with nothing piling up in userspace.
step run_userspace(direction& d, pipe_pool& pool, std::span<char> buffer, std::size_t& budget);

}  // namespace spliced::datapath
