// What every data path shares: the proxied pair, how it ends, the idle watchdog and the copy loop.
#pragma once

#include "config/config.hpp"
#include "datapath/kinds.hpp"
#include "datapath/sockmap.hpp"
#include "net/asio.hpp"

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace spliced::datapath {

class sockmap_engine;

// The data paths one connection ran on, in order ("sockmap+copy" after a demotion, "splice+sockmap"
// after a promotion); what the access log's `datapath` field says.
class path_log {
public:
    // Appends `k` unless it is the path the connection is on already.
    void ran_on(kind k);
    kind first() const { return paths_[0]; }
    std::string text() const;  // "-" when empty

private:
    std::array<kind, 4> paths_{};
    std::uint8_t count_ = 0;
};

// Idle accounting from byte counters: a pair is idle while no byte counter of either socket moves
// (nothing received from a peer, nothing acknowledged by one), so a slow reader that is still being
// fed is not idle, and a stalled one is. The counters are 64-bit, so any timeout works (TCP_INFO's
// millisecond "last received" fields wrap after 49.7 days).
class progress_clock {
public:
    using time_point = std::chrono::steady_clock::time_point;
    // Records the counters' sum seen at `now`; returns for how long it has not changed (zero on the
    // first call, which starts the clock).
    std::chrono::steady_clock::duration quiet(std::uint64_t total, time_point now);

private:
    std::uint64_t total_ = 0;
    time_point changed_{};
};

// Both sockets of one proxied connection, borrowed from the session that owns them.
struct pair_state {
    pair_state(net::tcp::socket& c, net::tcp::socket& u, std::chrono::milliseconds idle_timeout)
        : client(c), upstream(u), idle(idle_timeout) {}
    net::tcp::socket& client;
    net::tcp::socket& upstream;
    std::chrono::milliseconds idle;
    end_reason reason = end_reason::completed;
    bool aborted = false;
    path_log paths;                   // the paths this pair ran on, in order
    progress_clock progress;          // for the idle timeout
    std::uint64_t demoted_bytes = 0;  // sockmap: bytes copied by userspace after a demotion
    std::uint8_t demotions = 0;       // sockmap: directions demoted to userspace copy
    std::uint64_t stranded_bytes = 0; // sockmap: redirected bytes the peer never took (pair reset)
    std::uint32_t backlog_nudges = 0; // sockmap: times a redirect backlog that made no progress was woken
    std::optional<sockmap_pair> maps; // sockmap: the pair's entries while it is in the maps
    // Sockmap: bytes_queued_total() of each socket when the pair entered the map, less the
    // bytes userspace forwarded to it from the other socket before insertion.
    std::uint64_t client_queued_base = 0;
    std::uint64_t upstream_queued_base = 0;
    bool client_eof = false;          // FIN received from the client
    bool upstream_eof = false;        // FIN received from the upstream
    // splice, promotable: set when both directions stopped, pipes empty, to move to sockmap;
    // and the bytes userspace has written to each socket so far (for the sockmap baselines).
    bool promoting = false;
    std::uint64_t written_to_client = 0;     // bytes from the upstream
    std::uint64_t written_to_upstream = 0;   // bytes from the client
    // Bytes userspace read from the client and did not forward (an accepted PROXY header): the sockmap
    // FIN drain and the access log count the client's stream without them. (Bytes it wrote to the
    // upstream itself, the PROXY header it sends, need no count: they are in the upstream's queued
    // total at insertion, which the baseline starts from.)
    std::uint64_t consumed_from_client = 0;

    // Ends the pair early: records why and cancels every pending operation on both sockets.
    void abort(end_reason why);
    // The reason an I/O error on `s` stands for (reset of that side, or a local error).
    end_reason reset_reason(const net::tcp::socket& s) const;
    std::uint64_t queued_base(const net::tcp::socket& s) const {
        return &s == &client ? client_queued_base : upstream_queued_base;
    }
    void mark_eof(const net::tcp::socket& s) { (&s == &client ? client_eof : upstream_eof) = true; }
    // Payload bytes `s` received: tcpi_bytes_received counts a received FIN as one more byte.
    std::uint64_t payload_received(const net::tcp::socket& s, std::uint64_t bytes_received) const {
        bool fin = &s == &client ? client_eof : upstream_eof;
        return fin && bytes_received > 0 ? bytes_received - 1 : bytes_received;
    }
};

// The idle timer fired: aborts the pair (idle_timeout) and returns false when its byte counters
// have not moved for `idle`; else sets `next` to when to look again and returns true. It samples
// every quarter of the timeout, so a pair is cut between 1 and 1.25 times `idle` after its last
// progress.
bool idle_check(pair_state& p, std::chrono::milliseconds& next);
// When the idle check first runs after a pair starts.
std::chrono::milliseconds idle_first_check(const pair_state& p);

// A timer for the watchers that run beside a pair's directions (the idle watchdog, the promoter)
// as plain handlers: no coroutine frame and no parallel group per connection, which an `||` of
// awaitables would co_spawn. A watcher ends the pair the way a cut from outside does, by aborting
// it (which cancels both sockets' waits); the directions then end on their own. Destroying the
// timer stops it for good: a handler already queued (its expiry passed, not yet run) finds the
// token dead and touches nothing. One worker thread runs the handler and its owner.
class pair_timer {
public:
    explicit pair_timer(const net::asio::any_io_executor& executor)
        : timer_(executor), alive_(std::make_shared<bool>(true)) {}
    ~pair_timer() { *alive_ = false; }  // the timer's own destructor cancels a wait still pending
    pair_timer(const pair_timer&) = delete;
    pair_timer& operator=(const pair_timer&) = delete;

    // Calls `f()` after `wait`, unless destroyed first.
    template <typename F>
    void after(std::chrono::milliseconds wait, F f) {
        timer_.expires_after(wait);
        timer_.async_wait([alive = alive_, f = std::move(f)](const boost::system::error_code& ec) mutable {
            if (*alive && !ec) f();
        });
    }

private:
    net::asio::steady_timer timer_;
    std::shared_ptr<bool> alive_;
};

// The idle watchdog of a pair for as long as it lives: runs idle_check() when it is due, which
// aborts the pair (idle_timeout) once its counters stood still for the idle timeout.
class idle_watch {
public:
    explicit idle_watch(pair_state& p);

private:
    void arm(std::chrono::milliseconds wait);
    pair_state& p_;
    pair_timer timer_;
};

// Runs `task` beside the idle watchdog: returns true when the task ended with the pair not aborted
// (by the watchdog or anything else).
net::awaitable<bool> with_idle_watchdog(pair_state& p, net::awaitable<void> task);

// Runs the two directions beside the idle watchdog until both directions end; an abort (a reset,
// the watchdog, a cut from outside) cancels their waits and ends them.
net::awaitable<void> run_pair(pair_state& p, net::awaitable<void> forward, net::awaitable<void> backward);

// Waits until `to` can take more bytes, watching `from` meanwhile: while a direction is blocked on a slow
// receiver nothing else looks at its sender, and a reset there must end the pair now, not once the
// receiver has taken every byte still queued. Returns false when the pair aborted.
net::awaitable<bool> wait_writable(pair_state& p, net::tcp::socket& from, net::tcp::socket& to);

// Writes all `n` bytes to `to`, waiting with wait_writable() whenever its send buffer is full.
// Returns false when the pair aborted (a reset of either socket included).
net::awaitable<bool> write_all(pair_state& p, net::tcp::socket& from, net::tcp::socket& to, const char* data,
                               std::size_t n);

// Copies `from` to `to` until EOF on `from`. Returns true on EOF, false when the pair aborted.
// Does not shut `to` down: the caller decides when that is safe.
net::awaitable<bool> copy_until_eof(pair_state& p, net::tcp::socket& from, net::tcp::socket& to,
                                    std::uint64_t* copied = nullptr);

// Copy data path: both directions through a userspace buffer.
net::awaitable<void> run_copy(pair_state& p);

}  // namespace spliced::datapath
