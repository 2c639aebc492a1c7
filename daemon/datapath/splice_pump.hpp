// splice(2) data path: each direction moves bytes socket -> pipe -> socket without copying them.
#pragma once

#include "datapath/datapath.hpp"

namespace spliced::datapath {

// Runs both directions of the pair through pooled pipes until both end or the pair aborts.
net::awaitable<void> run_splice(pair_state& p);

// True when splice(2) from a TCP socket works on this kernel (checked once, cached).
bool splice_available();

}  // namespace spliced::datapath
