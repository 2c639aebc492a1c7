// Connecting to one backend with a deadline.
#include "net/upstream.hpp"

#include "net/endpoint.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <memory>
#include <sys/socket.h>
#include "sys/socket.hpp"

namespace spliced::net {

namespace {

connect_error classify(const boost::system::error_code& ec) {
    namespace error = asio::error;
    if (ec == error::connection_refused) return connect_error::refused;
    if (ec == error::timed_out) return connect_error::timeout;
    if (ec == error::host_unreachable || ec == error::network_unreachable) return connect_error::unreachable;
    return connect_error::other;
}

// Opening a socket failed for want of a descriptor or socket memory: nothing to do with the backend.
bool out_of_resources(const boost::system::error_code& ec) {
    return ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space || ec == asio::error::no_memory ||
           (ec.category() == boost::system::system_category() && ec.value() == ENFILE);
}

std::atomic<int> awaiting_descriptor{0};
std::atomic<std::int64_t> last_shortage_ns{0};  // steady clock, when anything last ran out of descriptors

struct connect_core_failure {
    connect_error reason = connect_error::other;
    boost::system::error_code error;
};

// Counts this session among those waiting for a descriptor, for as long as it waits.
struct awaiting_guard {
    bool counted = false;
    void count() {
        note_descriptor_shortage();
        if (!counted) awaiting_descriptor.fetch_add(1, std::memory_order_relaxed);
        counted = true;
    }
    ~awaiting_guard() {
        if (counted) awaiting_descriptor.fetch_sub(1, std::memory_order_relaxed);
    }
};

}  // namespace

int sessions_awaiting_descriptor() { return awaiting_descriptor.load(std::memory_order_relaxed); }

void note_descriptor_shortage() {
    last_shortage_ns.store(std::chrono::steady_clock::now().time_since_epoch().count(), std::memory_order_relaxed);
}

bool descriptors_short_lately() {
    const std::int64_t last = last_shortage_ns.load(std::memory_order_relaxed);
    if (last == 0) return false;
    return std::chrono::steady_clock::now().time_since_epoch() - std::chrono::steady_clock::duration(last) <
           std::chrono::seconds(1);
}

awaitable<connect_outcome> connect_upstream(const address& addr, std::chrono::milliseconds timeout) {
    using namespace std::chrono_literals;
    auto executor = co_await asio::this_coro::executor;
    connect_outcome out;
    const auto endpoint = to_endpoint(addr);
    tcp::socket socket(executor);
    asio::steady_timer deadline(executor, timeout);
    // Out of descriptors, the client is already in: wait for a descriptor (looking again every
    // 10 ms, within the connect timeout) rather than close a client that a moment later could have
    // been served. Meanwhile the accept loops hold off, so the next free descriptor comes here.
    for (awaiting_guard waiting;;) {  // counted only until the socket is open
        boost::system::error_code ec;
        socket.open(endpoint.protocol(), ec);
        // Non-blocking before the connect: Asio's own (internal) switch would cost an ioctl, and the
        // data path's (user) one a second.
        if (!ec) socket.non_blocking(true, ec);
        if (!ec) break;
        const auto left = deadline.expiry() - asio::steady_timer::clock_type::now();
        if (!out_of_resources(ec) || left <= asio::steady_timer::duration::zero()) {
            out.reason = out_of_resources(ec) ? connect_error::local : connect_error::other;
            out.error = ec;
            co_return out;
        }
        waiting.count();
        asio::steady_timer pause(executor, std::min<asio::steady_timer::duration>(10ms, left));
        co_await pause.async_wait(use_tuple);
    }
    // The deadline cancels the connect from a plain handler. An `||` of the two awaitables would
    // co_spawn each of them: two coroutine frames and a parallel group for every connection.
    // One worker thread runs this and the handler, so the handler sees `done` set before the
    // socket is moved out or destroyed, and then touches nothing.
    struct deadline_state {
        bool done = false;
        bool fired = false;
    };
    auto state = std::make_shared<deadline_state>();
    deadline.async_wait([state, &socket](const boost::system::error_code& ec) {
        if (ec || state->done) return;
        state->fired = true;
        boost::system::error_code ignored;
        socket.cancel(ignored);
    });
    auto [ec] = co_await socket.async_connect(endpoint, use_tuple);
    state->done = true;
    deadline.cancel();
    if (ec && state->fired) {
        out.reason = connect_error::timeout;
        out.error = asio::error::timed_out;
        co_return out;
    }
    if (ec) {
        out.reason = classify(ec);
        out.error = ec;
        co_return out;
    }
    out.socket.emplace(std::move(socket));
    co_return out;
}

namespace {

connect_error classify_errno(int err) {
    return classify(boost::system::error_code(err, boost::system::system_category()));
}

// A socket for `family`, waiting (within `deadline`) for a descriptor when there is none.
awaitable<int> open_socket(int family, asio::steady_timer::time_point deadline, connect_core_failure& failed) {
    for (awaiting_guard waiting;;) {  // counted only until the socket is open
        const int fd = ::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd >= 0) co_return fd;
        const boost::system::error_code ec(errno, boost::system::system_category());
        const auto left = deadline - asio::steady_timer::clock_type::now();
        if (!out_of_resources(ec) || left <= asio::steady_timer::duration::zero()) {
            failed = {out_of_resources(ec) ? connect_error::local : connect_error::other, ec};
            co_return -1;
        }
        waiting.count();
        asio::steady_timer pause(co_await asio::this_coro::executor,
                                 std::min<asio::steady_timer::duration>(std::chrono::milliseconds(10), left));
        co_await pause.async_wait(use_tuple);
    }
}

}  // namespace

awaitable<core_connect_outcome> connect_in_core(event_core& core, const address& addr, std::chrono::milliseconds timeout) {
    core_connect_outcome out;
    const auto deadline = asio::steady_timer::clock_type::now() + timeout;
    connect_core_failure failed;
    sys::unique_fd fd(co_await open_socket(addr.family(), deadline, failed));
    if (!fd) {
        out.reason = failed.reason;
        out.error = failed.error;
        co_return out;
    }
    sys::set_nodelay(fd.get(), true);
    sys::set_oob_inline(fd.get());
    if (::connect(fd.get(), addr.data(), addr.size()) != 0 && errno != EINPROGRESS) {
        out.error = boost::system::error_code(errno, boost::system::system_category());
        out.reason = classify(out.error);
        co_return out;
    }
    auto s = std::make_unique<core_socket>(core, std::move(fd));
    if (!s->ok()) {
        out.error = boost::system::error_code(errno, boost::system::system_category());
        out.reason = connect_error::local;
        co_return out;
    }
    auto [ec] = co_await s->async_wait(EPOLLOUT, deadline, use_tuple);
    if (ec == asio::error::timed_out) {
        out.reason = connect_error::timeout;
        out.error = asio::error::timed_out;
        co_return out;
    }
    if (ec) {  // cancelled
        out.error = ec;
        co_return out;
    }
    if (s->failed() || s->hung_up()) {  // the connect failed: SO_ERROR says why
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(s->fd(), SOL_SOCKET, SO_ERROR, &err, &len);
        if (err == 0) err = ECONNREFUSED;
        out.error = boost::system::error_code(err, boost::system::system_category());
        out.reason = classify_errno(err);
        co_return out;
    }
    out.socket = std::move(s);
    co_return out;
}

}  // namespace spliced::net
