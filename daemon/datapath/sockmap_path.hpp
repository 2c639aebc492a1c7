// Sockmap data path: the kernel redirects both directions; userspace only forwards FIN and demoted bytes.
#pragma once

#include "datapath/datapath.hpp"
#include "datapath/sockmap.hpp"

namespace spliced::datapath {

// Runs a pair already inserted by sockmap_engine::insert() until both directions end or it aborts.
// The caller removes the pair from the maps afterwards.
net::awaitable<void> run_sockmap(pair_state& p);

}  // namespace spliced::datapath
