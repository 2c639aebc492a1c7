// Sockmap data path: the kernel redirects both directions; userspace only forwards FIN and demoted bytes.
#pragma once

#include "datapath/datapath.hpp"
#include "datapath/sockmap.hpp"

namespace spliced::datapath {

// Before insertion: forwards, in userspace, bytes already queued on `from`, so its receive window
// is open when it enters the map. A nearly closed window makes the kernel run the verdict despite
// the SO_RCVLOWAT gate, before the peer is in the map: a peer miss.
// It stops only on an empty receive queue (EAGAIN, or a read shorter than the buffer, which
// recvmsg returns only once it ran out of queued bytes): the verdict is handed whole skbs, so a
// partly read skb left in the queue would have its read prefix redirected a second time. After
// `soft_bound` bytes it stops at the next such point; a sender that keeps the queue non-empty
// past `hard_bound` leaves it unclean, and the pair must not enter the map.
struct forwarded {
    std::uint64_t bytes = 0;  // forwarded to `to`
    bool clean = true;        // false: `from` may hold a partly read skb; do not insert it
};
inline constexpr std::uint64_t forward_soft_bound = 4 << 20;
inline constexpr std::uint64_t forward_hard_bound = 64 << 20;
// A read error (a reset) or a failed write aborts the pair; a slow `to` is waited for with
// wait_writable(), so a reset of `from` meanwhile ends the pair too (run it beside the idle watchdog).
net::awaitable<forwarded> forward_queued(pair_state& p, net::tcp::socket& from, net::tcp::socket& to,
                                         std::uint64_t soft_bound = forward_soft_bound,
                                         std::uint64_t hard_bound = forward_hard_bound);

// How often, at most, a pair's egress check raises a direction's ceiling (egress_backlog_limit).
inline constexpr auto egress_check_interval = std::chrono::milliseconds(1);
// Send buffer of a socket once the direction into it is demoted to userspace copy.
inline constexpr int demoted_send_buffer = 2 << 20;

// Runs a pair already inserted by sockmap_engine::insert() (`maps`: its entries) until both
// directions end or it aborts. The caller removes the pair from the maps afterwards.
net::awaitable<void> run_sockmap(pair_state& p, sockmap_engine& engine, const sockmap_pair& maps);

}  // namespace spliced::datapath
