// Active health checks: one loop per backend of a route, all on one io_context (not per worker).
#include "proxy/health.hpp"

#include "net/upstream.hpp"
#include "proxy/backend_pool.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cstring>

namespace spliced::proxy {

namespace {

using clock = std::chrono::steady_clock;

// The backend's address with the check's port, when it has one.
config::address check_target(config::address a, std::uint16_t port) {
    if (!port) return a;
    if (a.family() == AF_INET) reinterpret_cast<sockaddr_in*>(&a.storage)->sin_port = htons(port);
    else reinterpret_cast<sockaddr_in6*>(&a.storage)->sin6_port = htons(port);
    a.text = a.text.substr(0, a.text.rfind(':') + 1) + std::to_string(port);
    return a;
}

// Sends and reads what the check asks for; the caller bounds it in time.
net::awaitable<check_outcome> converse(net::tcp::socket& s, const config::health_check& check) {
    if (!check.send.empty()) {
        auto [ec, n] = co_await net::asio::async_write(s, net::asio::buffer(check.send), net::use_tuple);
        if (ec) co_return check_outcome{false, "send: " + ec.message()};
    }
    std::string got;
    char buf[1024];
    while (got.size() < check.expect.size()) {
        auto [ec, n] = co_await s.async_read_some(net::asio::buffer(buf), net::use_tuple);
        got.append(buf, n);
        // A reply that already differs fails at once, without waiting for the rest.
        const std::size_t common = std::min(got.size(), check.expect.size());
        if (got.compare(0, common, check.expect, 0, common) != 0)
            co_return check_outcome{false, "reply did not start with the expected bytes"};
        if (ec && got.size() < check.expect.size())
            co_return check_outcome{false, ec == net::asio::error::eof ? std::string("closed before the expected reply")
                                                                       : "read: " + ec.message()};
    }
    co_return check_outcome{true, {}};
}

net::awaitable<void> timeout_after(std::chrono::milliseconds d) {
    net::asio::steady_timer t(co_await net::asio::this_coro::executor, d);
    co_await t.async_wait(net::use_tuple);
}

net::awaitable<void> check_loop(std::shared_ptr<backend_pool> pool, std::size_t index, config::health_check check) {
    const config::address target = check_target(pool->backend(index).addr, check.port);
    net::asio::steady_timer next(co_await net::asio::this_coro::executor);
    while (!pool->retired()) {
        const auto started = clock::now();
        auto outcome = co_await check_once(target, check);
        if (pool->retired()) break;  // a reload replaced the pool while this check ran
        pool->check_result(index, outcome.passed, outcome.why);
        next.expires_at(started + check.interval);
        auto [ec] = co_await next.async_wait(net::use_tuple);
        if (ec) co_return;
    }
}

}  // namespace

net::awaitable<check_outcome> check_once(const config::address& target, const config::health_check& check) {
    const auto started = clock::now();
    auto connected = co_await net::connect_upstream(target, check.timeout);
    if (!connected.socket) co_return check_outcome{false, "connect: " + std::string(metrics::to_string(connected.reason))};
    if (check.send.empty() && check.expect.empty()) co_return check_outcome{true, {}};
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(check.timeout - (clock::now() - started));
    if (left.count() <= 0) left = std::chrono::milliseconds(1);
    using namespace net::asio::experimental::awaitable_operators;
    auto result = co_await (converse(*connected.socket, check) || timeout_after(left));
    if (result.index() == 1) co_return check_outcome{false, "no expected reply within the timeout"};
    co_return std::get<0>(std::move(result));
}

void start_health_checks(net::asio::io_context& io, const std::shared_ptr<backend_pool>& pool,
                         const config::health_check& check) {
    for (std::size_t i = 0; i < pool->size(); ++i)
        net::asio::co_spawn(io, check_loop(pool, i, check), net::asio::detached);
}

}  // namespace spliced::proxy
