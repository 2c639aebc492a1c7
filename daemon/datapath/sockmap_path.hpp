// The sockmap path: the verdict redirects each direction's skbs to the peer socket in the kernel; userspace
// only hears of them (the wake-up after each redirect), keeps the egress bound, and forwards the FIN once
// the peer took every byte.
#pragma once

#include "datapath/direction.hpp"
#include "datapath/sockmap.hpp"

#include <chrono>
#include <cstdint>
#include <optional>

namespace spliced::datapath {

// A pair's record while it is in the maps: a parked pair is this, its two sockets and its timers.
struct sockmap_record {
    using time_point = std::chrono::steady_clock::time_point;
    // One direction, keyed by its receiving socket.
    struct side {
        std::uint64_t from_cookie = 0;
        std::uint64_t to_inserted_total = 0;  // bytes_queued_total() of `to` at insertion
        std::uint64_t to_base = 0;            // the same, less what userspace wrote to `to` before (and injected)
        std::uint64_t budget_taken = 0;       // bytes `to` had taken when the egress ceiling was last raised
        time_point last_egress_check{};
        // While draining or in fin_wait: the peer's progress towards the target.
        std::uint64_t last_queued = 0;
        time_point last_progress{}, last_nudge{};
        // The verdict's counters at the policy's last tick.
        std::uint64_t seen_packets = 0, seen_bytes = 0;
        // Demotion: the bytes userspace had read from `from` when it began (for the report).
        std::uint64_t read_at_demotion = 0;
        // After `from`'s FIN: bytes the verdict passed that userspace has not read yet, and since when neither
        // they nor `from`'s own queued total moved.
        std::uint64_t late_unread = 0, late_queued = 0;
        time_point late_since{};
        bool demoted = false;       // the verdict passes this direction to userspace
        bool demote_asked = false;  // the policy set its ceiling to 0: no egress check may raise it again
        bool woken = false;         // `from` had an event since its direction last looked
    };
    sockmap_pair maps;
    side from_client, from_upstream;
    std::uint32_t wakes = 0;  // redirect wake-ups since the policy's last tick
};

// What a socket in the map has for userspace: nothing (its bytes were redirected), bytes (the verdict passed
// them: that direction was demoted), EOF, or an error (a reset: reported once, so the pair ends on it now).
enum class peeked { nothing, bytes, eof, error };
peeked peek(int fd);

// The egress check, run on a redirect's wake-up (at most once per egress_check_interval): raises the
// verdict's ceiling for this direction to what `to` has taken so far + egress_backlog_limit. The ceiling
// only trails what `to` really took, so the bound holds however late this runs.
inline constexpr auto egress_check_interval = std::chrono::milliseconds(1);
void check_egress(sockmap_engine& engine, sockmap_record::side& s, int to_fd, sockmap_record::time_point now);

// How a drain stands: `to` has taken everything up to the target, or not yet, or never will.
enum class drained { yes, not_yet, peer_gone, stranded, error };
// Whether `to` has queued (taken into its send queue) at least `target` bytes in total. Redirected bytes wait
// in `to`'s psock backlog until a kworker sends them; no syscall reports that backlog, so byte counters tell
// when it is empty. No progress for stranded_after while `to`'s send queue is empty means the bytes are lost
// in the kernel (`stranded` is how many); meanwhile the backlog is nudged every nudge_after (`nudges`).
drained drain_check(sockmap_record::side& s, int to_fd, std::uint64_t target, sockmap_record::time_point now,
                    std::uint64_t& stranded, std::uint32_t& nudges);

// Bytes `from` received before its FIN that neither the verdict redirected nor userspace read (`user_read`:
// what userspace and the preamble read from it, before insertion and since). Unset when a counter fails.
// A socket in the map reads EOF once its FIN came and its psock holds nothing ready for userspace, though
// bytes the verdict passed (a demoted direction) may still wait in that psock's queue behind the bytes
// redirected *to* the socket, which move only as fast as its own peer reads them.
std::optional<std::uint64_t> unread_before_fin(const sockmap_engine& engine, const sockmap_record::side& s,
                                               int from_fd, std::uint64_t user_read);
// How the wait for those bytes stands: all read (yes), not yet, or never (stranded: neither they nor what
// `from` has queued moved for stranded_after while `from`'s send queue is empty, so nothing ahead of them in
// its psock queue can move either).
drained late_check(sockmap_record::side& s, int from_fd, std::uint64_t unread, sockmap_record::time_point now,
                   std::uint64_t& stranded);

// The target of the FIN drain, once `from` reached EOF: every byte `from` received is in `to`'s queued total
// (to_base takes out what userspace consumed or injected). Unset when TCP_INFO fails.
std::optional<std::uint64_t> fin_target(const sockmap_record::side& s, int from_fd);
// The target of a demotion's drain: every byte the verdict redirected to `to` is in its queued total (final:
// the verdict saw `from`'s skbs in order and passed the first one userspace is about to read only after
// every redirected one).
std::optional<std::uint64_t> redirected_target(const sockmap_engine& engine, const sockmap_record::side& s);

}  // namespace spliced::datapath
