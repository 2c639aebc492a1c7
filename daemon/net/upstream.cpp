// Connecting to one backend with a deadline.
#include "net/upstream.hpp"

#include "net/endpoint.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <memory>

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

// Counts this session among those waiting for a descriptor, for as long as it waits.
struct awaiting_guard {
    bool counted = false;
    void count() {
        if (!counted) awaiting_descriptor.fetch_add(1, std::memory_order_relaxed);
        counted = true;
    }
    ~awaiting_guard() {
        if (counted) awaiting_descriptor.fetch_sub(1, std::memory_order_relaxed);
    }
};

}  // namespace

int sessions_awaiting_descriptor() { return awaiting_descriptor.load(std::memory_order_relaxed); }

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

}  // namespace spliced::net
