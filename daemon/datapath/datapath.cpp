// What every data path shares: the proxied pair, how it ends, the idle watchdog and the copy loop.
#include "datapath/datapath.hpp"

#include "sys/socket.hpp"

#include <algorithm>
#include <array>
#include <memory>
#include <poll.h>

namespace spliced::datapath {

void path_log::ran_on(kind k) {
    if (count_ > 0 && paths_[count_ - 1] == k) return;
    if (count_ < paths_.size()) paths_[count_++] = k;
}

std::string path_log::text() const {
    if (count_ == 0) return "-";
    std::string out;
    for (std::uint8_t i = 0; i < count_; ++i) {
        if (i) out += '+';
        out += to_string(paths_[i]);
    }
    return out;
}

std::chrono::steady_clock::duration progress_clock::quiet(std::uint64_t total, time_point now) {
    if (changed_ == time_point{} || total != total_) {
        total_ = total;
        changed_ = now;
    }
    return now - changed_;
}

void pair_state::abort(end_reason why) {
    if (aborted) return;
    aborted = true;
    reason = why;
    boost::system::error_code ignored;
    client.cancel(ignored);
    upstream.cancel(ignored);
}

end_reason pair_state::reset_reason(const net::tcp::socket& s) const {
    return &s == &client ? end_reason::client_reset : end_reason::upstream_reset;
}

namespace {

// How often the idle check samples the counters: a quarter of the timeout (at least 1 ms).
std::chrono::milliseconds idle_sample(const pair_state& p) {
    return std::max(std::chrono::milliseconds(1), p.idle / 4);
}

}  // namespace

std::chrono::milliseconds idle_first_check(const pair_state& p) { return idle_sample(p); }

bool idle_check(pair_state& p, std::chrono::milliseconds& next) {
    // TCP_INFO works on every data path, including sockmap where userspace never sees the bytes.
    sys::tcp_stats a, b;
    if (sys::tcp_stats_of(p.client.native_handle(), a) || sys::tcp_stats_of(p.upstream.native_handle(), b)) {
        p.abort(end_reason::error);
        return false;
    }
    const std::uint64_t total = a.bytes_received + a.bytes_acked + b.bytes_received + b.bytes_acked;
    const auto quiet = p.progress.quiet(total, std::chrono::steady_clock::now());
    if (quiet >= p.idle) {
        p.abort(end_reason::idle_timeout);
        return false;
    }
    next = std::min(idle_sample(p),
                    std::chrono::ceil<std::chrono::milliseconds>(p.idle - quiet));
    return true;
}

idle_watch::idle_watch(pair_state& p) : p_(p), timer_(p.client.get_executor()) { arm(idle_first_check(p)); }

void idle_watch::arm(std::chrono::milliseconds wait) {
    timer_.after(wait, [this] {
        std::chrono::milliseconds next{};
        if (!p_.aborted && idle_check(p_, next)) arm(next);
    });
}

net::awaitable<bool> with_idle_watchdog(pair_state& p, net::awaitable<void> task) {
    idle_watch watch(p);
    co_await std::move(task);
    co_return !p.aborted;
}

net::awaitable<void> run_pair(pair_state& p, net::awaitable<void> forward, net::awaitable<void> backward) {
    using namespace net;  // && on awaitables
    idle_watch watch(p);
    co_await (std::move(forward) && std::move(backward));
}

net::awaitable<bool> wait_writable(pair_state& p, net::tcp::socket& from, net::tcp::socket& to) {
    namespace ex = net::asio::experimental;
    // Asio's epoll is edge-triggered: an error that arrived before this wait would never wake it. Look first.
    short events = sys::poll_events(from.native_handle());
    if (events & POLLERR) {
        p.abort(p.reset_reason(from));
        co_return false;
    }
    // A hang-up without an error is a clean end of both directions of `from`: nothing to watch there.
    if (!(events & POLLHUP)) {
        auto [order, to_ec, from_ec] =
            co_await ex::make_parallel_group(to.async_wait(net::tcp::socket::wait_write, net::asio::deferred),
                                             from.async_wait(net::tcp::socket::wait_error, net::asio::deferred))
                .async_wait(ex::wait_for_one(), net::use_awaitable);
        if (p.aborted) co_return false;
        if (order[0] == 0) {
            if (to_ec) p.abort(p.reset_reason(to));
            co_return !to_ec;
        }
        // wait_error ends on an error, a hang-up or urgent data; only an error ends the pair.
        if (from_ec || (sys::poll_events(from.native_handle()) & POLLERR)) {
            p.abort(p.reset_reason(from));
            co_return false;
        }
    }
    auto [ec] = co_await to.async_wait(net::tcp::socket::wait_write, net::use_tuple);
    if (p.aborted) co_return false;
    if (ec) p.abort(p.reset_reason(to));
    co_return !ec;
}

net::awaitable<bool> write_all(pair_state& p, net::tcp::socket& from, net::tcp::socket& to, const char* data,
                               std::size_t n) {
    // Piecewise, waiting with wait_writable(): a reset of `from` ends the pair even while `to` is slow.
    for (std::size_t written = 0; written < n;) {
        if (p.aborted) co_return false;
        boost::system::error_code write_ec;
        written += to.write_some(net::asio::buffer(data + written, n - written), write_ec);
        if (write_ec == net::asio::error::would_block || write_ec == net::asio::error::try_again) {
            // (g++ 12 miscompiles co_await inside an if condition: await into a variable first.)
            const bool writable = co_await wait_writable(p, from, to);
            if (!writable) co_return false;
        } else if (write_ec) {
            if (!p.aborted) p.abort(p.reset_reason(to));
            co_return false;
        }
    }
    co_return true;
}

net::awaitable<bool> copy_until_eof(pair_state& p, net::tcp::socket& from, net::tcp::socket& to,
                                    std::uint64_t* copied) {
    // Allocated on first data, so a connection that never uses this direction costs nothing.
    std::unique_ptr<std::array<char, 64 * 1024>> buffer;
    for (;;) {
        if (p.aborted) co_return false;
        auto [wait_ec] = co_await from.async_wait(net::tcp::socket::wait_read, net::use_tuple);
        if (p.aborted) co_return false;
        if (wait_ec) {
            p.abort(p.reset_reason(from));
            co_return false;
        }
        if (!buffer) buffer = std::make_unique_for_overwrite<std::array<char, 64 * 1024>>();
        boost::system::error_code ec;
        std::size_t n = from.read_some(net::asio::buffer(*buffer), ec);
        if (ec == net::asio::error::would_block || ec == net::asio::error::try_again) continue;
        if (ec == net::asio::error::eof) {
            p.mark_eof(from);
            co_return true;
        }
        if (ec) {
            p.abort(p.reset_reason(from));
            co_return false;
        }
        const bool written = co_await write_all(p, from, to, buffer->data(), n);
        if (!written) co_return false;
        if (copied) *copied += n;
    }
}

namespace {

net::awaitable<void> copy_direction(pair_state& p, net::tcp::socket& from, net::tcp::socket& to) {
    const bool eof = co_await copy_until_eof(p, from, to);
    if (eof) sys::shutdown_write(to.native_handle());
}

}  // namespace

net::awaitable<void> run_copy(pair_state& p) {
    co_await run_pair(p, copy_direction(p, p.client, p.upstream), copy_direction(p, p.upstream, p.client));
}

}  // namespace spliced::datapath
