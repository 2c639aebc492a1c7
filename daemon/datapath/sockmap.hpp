// The loaded SK_SKB verdict program and its maps: inserting and removing proxied socket pairs.
#pragma once

#include "splice_abi.h"
#include "sys/enum_names.hpp"

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <system_error>

struct splice_bpf;

namespace spliced::datapath {

// Cookies of a pair that is in the maps; what remove() needs.
struct sockmap_pair {
    std::uint64_t client_cookie = 0;
    std::uint64_t upstream_cookie = 0;
    // bytes_queued_total() of each socket at insertion. Every byte the other socket receives
    // after that lands on top of it, whatever the counters' quirks (an active opener's
    // tcpi_bytes_acked counts its SYN).
    std::uint64_t client_queued_base = 0;
    std::uint64_t upstream_queued_base = 0;
    // SOCKHASH entries this pair added and has not yet given back (for sockmap_entries).
    unsigned entries = 0;
};

// The step of the engine's work that failed (load, or inserting a pair), with its errno.
enum class engine_step {
    open, size_maps, load, attach,                        // load()
    cookie, gate, tcp_info, not_established, queued_total, // insert(): before any map entry
    peer_map, budget_map, sockhash_client, sockhash_upstream,
};
struct engine_error {
    engine_step step = engine_step::open;
    std::error_code code;  // empty: no error
    explicit operator bool() const { return static_cast<bool>(code); }
    std::string text() const;  // "attaching the stream verdict to the SOCKHASH: Operation not permitted"
};

struct insert_outcome {
    engine_error error;          // empty on success
    bool entered_map = false;    // a socket entered the map: it must not be spliced afterwards
    bool map_full = false;       // refused because the maps are at capacity (E2BIG)
    sockmap_pair pair;
};

// Egress bound. The kernel gives the redirect path no backpressure: a sender can push bytes into
// the peer's psock backlog far faster than the peer's reader takes them (measured: GBs within
// seconds). Per direction, bytes redirected but not yet taken into the peer's send queue stay
// under this limit: the verdict redirects only up to a ceiling, which userspace raises to "taken
// so far + this limit" as it sees the peer take bytes (sockmap_path's check_egress); a sender
// that outruns it has its direction demoted for good to userspace copy, whose writes block on
// the peer's send buffer (counted: spliced_sockmap_demotions_total). Kernel memory of one
// direction is thus at most this limit + the peer's send buffer + the receiving socket's
// receive buffer (the last two as on every data path).
inline constexpr std::uint64_t egress_backlog_limit = 4 << 20;
// Connections the maps hold unless the config says otherwise (two entries each).
inline constexpr std::uint32_t default_capacity = SPLICED_MAP_CAPACITY / 2;

class sockmap_engine {
public:
    // Opens the skeleton, sizes the per-socket maps for `capacity` connections, loads it and
    // attaches the verdict program to the SOCKHASH; null with `error` set when a step fails.
    static std::unique_ptr<sockmap_engine> load(std::uint32_t capacity, engine_error& error);
    ~sockmap_engine();
    sockmap_engine(const sockmap_engine&) = delete;
    sockmap_engine& operator=(const sockmap_engine&) = delete;

    // Puts two ESTABLISHED sockets into the maps, redirecting each one's bytes to the other,
    // with no verdict run before both are in, then kicks bytes already queued. At capacity the
    // peer map refuses the first entry, so no socket enters the SOCKHASH (map_full, splice).
    insert_outcome insert(int client_fd, int upstream_fd);
    // Deletes both sockets' SOCKHASH, peer and budget entries (idempotent).
    void remove(sockmap_pair& pair);
    // SOCKHASH entries held by pairs not yet removed (a closed socket's entry the kernel dropped
    // counts until its pair is removed).
    std::int64_t entries() const { return entries_.load(std::memory_order_relaxed); }

    // Bytes the verdict has redirected from the socket with this cookie to its peer so far.
    std::error_code redirected(std::uint64_t cookie, std::uint64_t& out) const;
    // The same, with the number of skbs they came in.
    std::error_code redirected(std::uint64_t cookie, std::uint64_t& bytes, std::uint64_t& packets) const;
    // Lets the verdict redirect from the socket with this cookie until its redirected bytes reach
    // `ceiling` (see egress_backlog_limit); past it, that direction is demoted.
    std::error_code set_budget(std::uint64_t cookie, std::uint64_t ceiling);

    // Sum over CPUs of one counter slot.
    std::uint64_t counter(spliced_counter slot) const;
    int sockhash_fd() const;
    int peers_fd() const;
    int budget_fd() const;
    std::uint32_t capacity() const { return capacity_; }

private:
    sockmap_engine() = default;
    // insert()'s steps once both sockets are held back from the verdict.
    engine_error add_peers(sockmap_pair& pair, bool& map_full);
    engine_error add_sockets(int client_fd, int upstream_fd, sockmap_pair& pair, bool& entered_map, bool& map_full);
    splice_bpf* skel_ = nullptr;
    int ncpus_ = 1;
    std::uint32_t capacity_ = default_capacity;
    std::atomic<std::int64_t> entries_{0};
};

}  // namespace spliced::datapath

namespace spliced::sys {
template <>
struct enum_names<datapath::engine_step> {
    using step = datapath::engine_step;
    static constexpr std::array table{std::pair{step::open, "opening the BPF object"},
                                      std::pair{step::size_maps, "sizing the BPF maps"},
                                      std::pair{step::load, "loading the BPF object"},
                                      std::pair{step::attach, "attaching the stream verdict to the SOCKHASH"},
                                      std::pair{step::cookie, "SO_COOKIE"},
                                      std::pair{step::gate, "SO_RCVLOWAT gate"},
                                      std::pair{step::tcp_info, "TCP_INFO"},
                                      std::pair{step::not_established, "socket not ESTABLISHED"},
                                      std::pair{step::queued_total, "SIOCOUTQ"},
                                      std::pair{step::peer_map, "peer map insert"},
                                      std::pair{step::budget_map, "budget map insert"},
                                      std::pair{step::sockhash_client, "SOCKHASH insert (client)"},
                                      std::pair{step::sockhash_upstream, "SOCKHASH insert (upstream)"}};
};
}  // namespace spliced::sys
