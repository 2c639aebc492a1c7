// Connecting to one backend with a deadline.
#include "net/upstream.hpp"

#include "net/endpoint.hpp"

namespace spliced::net {

namespace {

metrics::connect_error classify(const boost::system::error_code& ec) {
    namespace error = asio::error;
    if (ec == error::connection_refused) return metrics::connect_error::refused;
    if (ec == error::timed_out) return metrics::connect_error::timeout;
    if (ec == error::host_unreachable || ec == error::network_unreachable) return metrics::connect_error::unreachable;
    return metrics::connect_error::other;
}

}  // namespace

awaitable<connect_outcome> connect_upstream(const config::address& addr, std::chrono::milliseconds timeout) {
    auto executor = co_await asio::this_coro::executor;
    connect_outcome out;
    tcp::socket socket(executor);
    asio::steady_timer deadline(executor, timeout);
    auto result = co_await (socket.async_connect(to_endpoint(addr), use_tuple) || deadline.async_wait(use_tuple));
    if (result.index() == 1) {
        out.reason = metrics::connect_error::timeout;
        out.error = asio::error::timed_out;
        co_return out;
    }
    auto [ec] = std::get<0>(result);
    if (ec) {
        out.reason = classify(ec);
        out.error = ec;
        co_return out;
    }
    out.socket.emplace(std::move(socket));
    co_return out;
}

}  // namespace spliced::net
