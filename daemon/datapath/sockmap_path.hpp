// Sockmap data path: the kernel redirects both directions; userspace only forwards FIN and demoted bytes.
#pragma once

#include "datapath/datapath.hpp"
#include "datapath/sockmap.hpp"

namespace spliced::datapath {

// Before insertion: forwards, in userspace, bytes already queued on `from` (up to a bound), so
// its receive window is open when it enters the map. A nearly closed window makes the kernel
// run the verdict despite the SO_RCVLOWAT gate, before the peer is in the map: a peer miss.
// Returns the bytes forwarded; I/O errors are left for the data path to find.
net::awaitable<std::uint64_t> forward_queued(net::tcp::socket& from, net::tcp::socket& to);

// Runs a pair already inserted by sockmap_engine::insert() until both directions end or it aborts.
// The caller removes the pair from the maps afterwards.
net::awaitable<void> run_sockmap(pair_state& p);

}  // namespace spliced::datapath
