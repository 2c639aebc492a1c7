// Sockmap data path: the kernel redirects both directions; userspace only forwards FIN and demoted bytes.
#include "datapath/sockmap_path.hpp"

#include "sys/socket.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <memory>
#include <sys/socket.h>

namespace spliced::datapath {

namespace {

// Waits until `to` has taken into its send queue every byte `from` received: redirected bytes
// sit in the peer's psock backlog until a kworker sends them, and shutting `to` down earlier
// would lose them. No syscall reports that backlog, so compare byte counters: `to` has taken
// everything once its queued total grew, since insertion, by all `from` received. Bytes
// userspace copied after a demotion count on both sides and cancel out.
net::awaitable<bool> wait_taken(pair_state& p, net::tcp::socket& from, net::tcp::socket& to) {
    using namespace std::chrono_literals;
    net::asio::steady_timer timer(co_await net::asio::this_coro::executor);
    // A slow reader keeps `to`'s send queue full and is bounded by the idle watchdog. No
    // progress while that queue is empty means the bytes are stranded in the kernel.
    constexpr auto stranded_after = std::chrono::seconds(3);
    auto pause = std::chrono::microseconds(100);
    std::uint64_t last_queued = 0;
    auto last_progress = std::chrono::steady_clock::now();
    for (;;) {
        if (p.aborted) co_return false;
        sys::tcp_stats src, dst;
        int unsent = 0;
        if (sys::tcp_stats_of(from.native_handle(), src) || sys::tcp_stats_of(to.native_handle(), dst) ||
            sys::send_queue_bytes(to.native_handle(), unsent)) {
            p.abort(end_reason::error);
            co_return false;
        }
        const std::uint64_t queued = dst.bytes_acked + static_cast<std::uint64_t>(unsent);  // bytes_queued_total()
        const auto target = p.queued_base(to) + p.payload_received(from, src.bytes_received);
        if (queued >= target) co_return true;
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
            p.stranded_bytes = target - queued;
            p.abort(end_reason::error);
            co_return false;
        }
        timer.expires_after(pause);
        auto [ec] = co_await timer.async_wait(net::use_tuple);
        if (ec) co_return false;
        pause = std::min<std::chrono::microseconds>(pause * 2, 20ms);
    }
}

net::awaitable<void> sockmap_direction(pair_state& p, net::tcp::socket& from, net::tcp::socket& to) {
    // Userspace sees only EOF, errors, and bytes the verdict passed after a peer miss (sticky,
    // so copying them here keeps the order).
    // (g++ 12 miscompiles co_await inside an if condition: await into a variable first.)
    const bool eof = co_await copy_until_eof(p, from, to, &p.demoted_bytes);
    if (!eof) co_return;
    // FIN is not forwarded by the redirect: propagate it, once the peer holds every byte.
    const bool taken = co_await wait_taken(p, from, to);
    if (taken) sys::shutdown_write(to.native_handle());
}

}  // namespace

net::awaitable<forwarded> forward_queued(net::tcp::socket& from, net::tcp::socket& to, std::uint64_t soft_bound,
                                         std::uint64_t hard_bound) {
    using chunk = std::array<char, 64 * 1024>;
    std::unique_ptr<chunk> buffer;
    forwarded out;
    for (;;) {
        if (!buffer) buffer = std::make_unique_for_overwrite<chunk>();
        boost::system::error_code ec;
        std::size_t n = from.read_some(net::asio::buffer(*buffer), ec);
        if (ec || n == 0) break;  // drained (EAGAIN), EOF or error: the data path deals with it
        auto [write_ec, written] = co_await net::asio::async_write(to, net::asio::buffer(buffer->data(), n),
                                                                   net::use_tuple);
        out.bytes += written;
        if (write_ec) break;
        const bool drained = n < buffer->size();  // recvmsg came back short: the queue ran out
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
// the pair went idle past its timeout (aborted); true once a socket is readable (EOF, an error,
// demoted bytes, or the wake-up the kernel sends after a redirect), for the full path to handle.
net::awaitable<bool> wait_until_readable(pair_state& p) {
    namespace ex = net::asio::experimental;
    net::asio::steady_timer timer(co_await net::asio::this_coro::executor);
    auto wait = p.idle;
    for (;;) {
        timer.expires_after(wait);
        auto [order, client_ec, upstream_ec, timer_ec] =
            co_await ex::make_parallel_group(p.client.async_wait(net::tcp::socket::wait_read, net::asio::deferred),
                                             p.upstream.async_wait(net::tcp::socket::wait_read, net::asio::deferred),
                                             timer.async_wait(net::asio::deferred))
                .async_wait(ex::wait_for_one(), net::use_awaitable);
        if (order[0] != 2) {
            // The kernel wakes readers after every redirect: only EOF, an error or bytes for
            // userspace end the lean wait. A peek takes nothing from the socket (it reads through
            // the psock like the direction loop's read would).
            auto& s = order[0] == 0 ? p.client : p.upstream;
            char byte;
            const ssize_t n = ::recv(s.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
            if (!(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))) co_return true;
            continue;  // spurious: keep waiting (the idle check runs when the timer fires)
        }
        if (!idle_check(p, wait)) co_return false;
    }
}

net::awaitable<void> run_sockmap(pair_state& p) {
    // (g++ 12 miscompiles co_await inside an if condition: await into a variable first.)
    const bool readable = co_await wait_until_readable(p);
    if (!readable) co_return;
    co_await run_pair(p, sockmap_direction(p, p.client, p.upstream), sockmap_direction(p, p.upstream, p.client));
}

}  // namespace spliced::datapath
