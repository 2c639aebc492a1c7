// The copy path: recv() into the worker's buffer, send() on at once; a buffer of the direction's own only for
// what a partial send left.
#pragma once

#include "datapath/direction.hpp"

#include <cstddef>
#include <span>

namespace spliced::datapath {

// Sends what `d` holds: go_on once it all went out; blocked while `to` is full; to_failed.
step flush_held(direction& d);

// One recv() from `from` into `buffer` and a send() of it to `to`, holding what the send did not take. A
// read that fills the buffer marks the direction bulk (for a pipe next time, where it may splice); a
// shorter one means `from` ran dry (unless a FIN or an urgent mark is still to be read). EOF sets d.eof.
// `budget` shrinks by the bytes read.
step copy_read(direction& d, std::span<char> buffer, std::size_t& budget);

}  // namespace spliced::datapath
