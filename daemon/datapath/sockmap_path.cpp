// Sockmap data path: the kernel redirects both directions; userspace only forwards FIN and demoted bytes.
#include "datapath/sockmap_path.hpp"

#include "sys/socket.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <memory>
#include <optional>
#include <poll.h>
#include <sys/socket.h>

namespace spliced::datapath {

namespace {

// One pair's run on sockmap: where it is in the maps, and the egress watchdog's state per direction.
struct sockmap_run {
    struct direction {
        std::uint64_t from_cookie = 0;         // the receiving socket's key in the maps
        std::uint64_t to_inserted_total = 0;   // bytes_queued_total() of the peer at insertion
        bool userspace = false;                // demoted: the verdict passes this direction to userspace
        std::uint64_t budget_taken = 0;        // bytes `to` had taken when the ceiling was last raised
        std::chrono::steady_clock::time_point last_check{};
    };
    pair_state& p;
    sockmap_engine& engine;
    direction from_client, from_upstream;

    sockmap_run(pair_state& pair, sockmap_engine& e, const sockmap_pair& maps)
        : p(pair), engine(e), from_client{maps.client_cookie, maps.upstream_queued_base},
          from_upstream{maps.upstream_cookie, maps.client_queued_base} {}
    direction& of(const net::tcp::socket& from) { return &from == &p.client ? from_client : from_upstream; }
    net::tcp::socket& peer_of(const net::tcp::socket& s) { return &s == &p.client ? p.upstream : p.client; }
};

// The egress check, run on the wake-up the kernel sends `from`'s readers after each redirect (at
// most once per egress_check_interval): raises the verdict's ceiling for this direction to what
// `to` has taken so far + egress_backlog_limit. The ceiling only trails what `to` really took, so
// the bound holds however late this runs; running it often only spares a healthy transfer a
// needless demotion.
void check_egress(sockmap_run& run, net::tcp::socket& from, net::tcp::socket& to) {
    auto& d = run.of(from);
    if (d.userspace || run.p.aborted) return;
    const auto now = std::chrono::steady_clock::now();
    if (now - d.last_check < egress_check_interval) return;
    d.last_check = now;
    std::uint64_t queued = 0;
    if (sys::bytes_queued_total(to.native_handle(), queued)) return;
    const std::uint64_t taken = queued - d.to_inserted_total;
    if (taken == d.budget_taken) return;  // nothing new: the ceiling stands
    if (run.engine.set_budget(d.from_cookie, taken + egress_backlog_limit)) return;
    d.budget_taken = taken;
}

// Waits until `to` has queued (taken into its send queue) at least `target()` bytes in total,
// re-reading the target every round. Redirected bytes sit in `to`'s psock backlog until a
// kworker sends them; no syscall reports that backlog, so byte counters tell when it is empty.
// `from` (the sender of those bytes) is watched meanwhile: its reset ends the pair now, not once `to` has
// taken everything (a slow reader can take tens of seconds), and never as a clean end.
template <typename Target>
net::awaitable<bool> wait_queued(pair_state& p, net::tcp::socket& from, net::tcp::socket& to, Target target) {
    using namespace std::chrono_literals;
    net::asio::steady_timer timer(co_await net::asio::this_coro::executor);
    // A slow reader keeps `to`'s send queue full and is bounded by the idle watchdog. No
    // progress while that queue is empty means the bytes are stranded in the kernel.
    constexpr auto stranded_after = std::chrono::seconds(3);
    // The backlog's kworker runs when the redirect queues an skb and when `to` gets write space
    // (sk_psock_write_space). Should that wake-up be lost, with `to`'s send queue empty nothing
    // would ever run it again: setting `to`'s send buffer (to the size it has) calls its
    // sk_write_space, which schedules the backlog. Tried every nudge_after without progress.
    constexpr auto nudge_after = std::chrono::milliseconds(250);
    auto pause = std::chrono::microseconds(100);
    std::uint64_t last_queued = 0;
    auto last_progress = std::chrono::steady_clock::now();
    auto last_nudge = last_progress;
    for (;;) {
        if (p.aborted) co_return false;
        if (sys::poll_events(from.native_handle()) & POLLERR) {
            p.abort(p.reset_reason(from));
            co_return false;
        }
        sys::tcp_stats dst;
        int unsent = 0;
        const std::optional<std::uint64_t> want = target();
        if (!want || sys::tcp_stats_of(to.native_handle(), dst) || sys::send_queue_bytes(to.native_handle(), unsent)) {
            p.abort(end_reason::error);
            co_return false;
        }
        const std::uint64_t queued = dst.bytes_acked + static_cast<std::uint64_t>(unsent);  // bytes_queued_total()
        if (queued >= *want) co_return true;
        if (!dst.can_send()) {
            // The peer is gone (reset): what is still in its backlog can never be delivered.
            p.abort(p.reset_reason(to));
            co_return false;
        }
        auto now = std::chrono::steady_clock::now();
        if (queued != last_queued) {
            last_queued = queued;
            last_progress = now;
        } else if (unsent == 0 && now - last_progress > stranded_after) {
            // Never end this cleanly: a FIN now would pass a truncated stream off as complete.
            p.stranded_bytes = *want - queued;
            p.abort(end_reason::error);
            co_return false;
        } else if (unsent == 0 && now - last_progress > nudge_after && now - last_nudge > nudge_after) {
            last_nudge = now;
            int size = 0;  // SO_SNDBUF reads back twice what was set
            if (!sys::send_buffer(to.native_handle(), size) && size > 0) {
                sys::set_send_buffer(to.native_handle(), size / 2);
                ++p.backlog_nudges;
            }
        }
        timer.expires_after(pause);
        auto [ec] = co_await timer.async_wait(net::use_tuple);
        if (ec) co_return false;
        pause = std::min<std::chrono::microseconds>(pause * 2, 20ms);
    }
}

// Before `from`'s EOF reaches `to`: `to` has taken every byte `from` received. Bytes userspace
// copied (before insertion, after a demotion) are in both totals and cancel out.
net::awaitable<bool> wait_taken(pair_state& p, net::tcp::socket& from, net::tcp::socket& to) {
    return wait_queued(p, from, to, [&p, &from, &to]() -> std::optional<std::uint64_t> {
        sys::tcp_stats src;
        if (sys::tcp_stats_of(from.native_handle(), src)) return std::nullopt;
        return p.queued_base(to) + p.payload_received(from, src.bytes_received);
    });
}

// Before userspace copies a demoted direction's first byte: `to` has taken every byte the
// verdict redirected to it (final by then: the verdict saw this socket's skbs in order, and
// passed the one userspace is about to read only after all the redirected ones).
net::awaitable<bool> wait_redirected_taken(sockmap_run& run, net::tcp::socket& from, net::tcp::socket& to) {
    auto& d = run.of(from);
    return wait_queued(run.p, from, to, [&run, &d]() -> std::optional<std::uint64_t> {
        std::uint64_t redirected = 0;
        if (run.engine.redirected(d.from_cookie, redirected)) return std::nullopt;
        return d.to_inserted_total + redirected;
    });
}

enum class readable { no, eof, error, bytes };

// Peeks without taking anything (it reads through the psock like a real read would). An error
// (a reset) is reported once and then cleared from the socket: the pair must end on it here, or
// the next read would see a plain EOF and pass the reset off as a clean close.
readable peek(pair_state& p, net::tcp::socket& s) {
    char byte;
    const ssize_t n = ::recv(s.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0) return readable::bytes;
    if (n == 0) return readable::eof;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return readable::no;
    p.abort(p.reset_reason(s));
    return readable::error;
}

// Waits until `from` has something for userspace: EOF, an error, or bytes the verdict passed.
// Every other wake-up follows a redirect and runs the egress watchdog.
net::awaitable<readable> wait_for_userspace(sockmap_run& run, net::tcp::socket& from, net::tcp::socket& to) {
    for (;;) {
        auto [ec] = co_await from.async_wait(net::tcp::socket::wait_read, net::use_tuple);
        if (run.p.aborted) co_return readable::no;
        if (ec) {
            run.p.abort(run.p.reset_reason(from));
            co_return readable::error;
        }
        if (auto r = peek(run.p, from); r != readable::no) co_return r;
        check_egress(run, from, to);
    }
}

net::awaitable<void> sockmap_direction(sockmap_run& run, net::tcp::socket& from, net::tcp::socket& to) {
    pair_state& p = run.p;
    // (g++ 12 miscompiles co_await inside an if condition: await into a variable first.)
    const readable seen = co_await wait_for_userspace(run, from, to);
    if (seen == readable::no || seen == readable::error) co_return;
    if (seen == readable::bytes) {
        // Passed bytes: this direction was demoted (peer miss or egress bound), for good.
        run.of(from).userspace = true;
        p.paths.ran_on(kind::copy);
        ++p.demotions;
        // From now on `to`'s send buffer is the backpressure: back to what a spliced socket has.
        sys::set_send_buffer(to.native_handle(), demoted_send_buffer);
        const bool drained = co_await wait_redirected_taken(run, from, to);
        if (!drained) co_return;
    }
    const bool eof = co_await copy_until_eof(p, from, to, &p.demoted_bytes);
    if (!eof) co_return;
    // FIN is not forwarded by the redirect: propagate it, once the peer holds every byte.
    const bool taken = co_await wait_taken(p, from, to);
    if (taken) sys::shutdown_write(to.native_handle());
}

}  // namespace

net::awaitable<forwarded> forward_queued(pair_state& p, net::tcp::socket& from, net::tcp::socket& to,
                                         std::uint64_t soft_bound, std::uint64_t hard_bound) {
    using chunk = std::array<char, 64 * 1024>;
    std::unique_ptr<chunk> buffer;
    forwarded out;
    while (!p.aborted) {
        if (!buffer) buffer = std::make_unique_for_overwrite<chunk>();
        boost::system::error_code ec;
        std::size_t n = from.read_some(net::asio::buffer(*buffer), ec);
        if (ec == net::asio::error::would_block || ec == net::asio::error::try_again) break;  // drained
        if (ec == net::asio::error::eof) break;  // the data path reads the FIN again and forwards it
        if (ec) {
            // A reset is reported once: ending the pair here keeps it from reading as a clean EOF later.
            p.abort(p.reset_reason(from));
            break;
        }
        const bool written = co_await write_all(p, from, to, buffer->data(), n);
        if (!written) break;
        out.bytes += n;
        // recvmsg stops short at an urgent mark too, with bytes still queued (SO_OOBINLINE makes
        // SIOCINQ count them): only an empty queue is an skb boundary.
        int left = 0;
        const bool drained = !sys::receive_queue_bytes(from.native_handle(), left) && left == 0;
        if (drained && out.bytes >= soft_bound) break;
        if (!drained && out.bytes >= hard_bound) {
            out.clean = false;  // a fast sender: we may be in the middle of an skb
            break;
        }
    }
    co_return out;
}

// While neither socket has anything for userspace, waits with one group of plain operations (two
// readiness waits and the idle timer) instead of a coroutine per direction and a watchdog: an idle
// pair costs a few hundred bytes instead of several KiB of coroutine frames. Returns false when
// the pair went idle past its timeout (aborted); true once a socket has something for userspace
// (EOF, an error, bytes passed by a demoted direction), for the full path to handle.
static net::awaitable<bool> wait_until_readable(sockmap_run& run) {
    namespace ex = net::asio::experimental;
    pair_state& p = run.p;
    net::asio::steady_timer timer(co_await net::asio::this_coro::executor);
    auto wait = idle_first_check(p);
    for (;;) {
        timer.expires_after(wait);
        auto [order, client_ec, upstream_ec, timer_ec] =
            co_await ex::make_parallel_group(p.client.async_wait(net::tcp::socket::wait_read, net::asio::deferred),
                                             p.upstream.async_wait(net::tcp::socket::wait_read, net::asio::deferred),
                                             timer.async_wait(net::asio::deferred))
                .async_wait(ex::wait_for_one(), net::use_awaitable);
        if (p.aborted) co_return false;  // cut from outside (drain timeout): the waits were cancelled
        if (order[0] != 2) {
            auto& s = order[0] == 0 ? p.client : p.upstream;
            const readable seen = peek(p, s);
            if (seen == readable::error) co_return false;  // aborted: a reset
            if (seen != readable::no) co_return true;
            check_egress(run, s, run.peer_of(s));  // the wake-up the kernel sends after a redirect
            continue;  // keep waiting (the idle check runs when the timer fires)
        }
        if (!idle_check(p, wait)) co_return false;
    }
}

net::awaitable<void> run_sockmap(pair_state& p, sockmap_engine& engine, const sockmap_pair& maps) {
    sockmap_run run(p, engine, maps);
    // (g++ 12 miscompiles co_await inside an if condition: await into a variable first.)
    const bool readable = co_await wait_until_readable(run);
    if (!readable) co_return;
    co_await run_pair(p, sockmap_direction(run, p.client, p.upstream), sockmap_direction(run, p.upstream, p.client));
}

}  // namespace spliced::datapath
