// Active health checks: one loop per backend of a route, all on one io_context (not per worker).
#include "proxy/health.hpp"

#include "net/spawn.hpp"
#include "net/upstream.hpp"
#include "proxy/backend_pool.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cstring>
#include <spdlog/spdlog.h>

namespace spliced::proxy {

namespace {

using clock = std::chrono::steady_clock;

// The backend's address with the check's port, when it has one.
net::address check_target(const net::address& a, std::uint16_t port) { return port ? a.with_port(port) : a; }

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

}  // namespace

struct health_checks::shared {
    std::weak_ptr<backend_pool> pool;
    config::health_check check;
    std::vector<std::unique_ptr<net::asio::steady_timer>> timers;  // one per backend
    bool stopped = false;
};

namespace {

net::awaitable<void> check_loop(std::shared_ptr<health_checks::shared> sh, std::size_t index, net::address target,
                                clock::time_point due) {
    auto& timer = *sh->timers[index];
    for (;;) {
        timer.expires_at(due);
        auto [ec] = co_await timer.async_wait(net::use_tuple);
        if (ec || sh->stopped) co_return;
        const auto started = clock::now();
        if (auto pool = sh->pool.lock()) pool->check_started(index, started);
        else co_return;
        auto outcome = co_await check_once(target, sh->check);
        if (sh->stopped) co_return;  // a reload replaced these checks while this one ran
        auto pool = sh->pool.lock();
        if (!pool) co_return;
        pool->check_result(index, outcome.passed, outcome.why);
        due = started + sh->check.interval;
    }
}

}  // namespace

net::awaitable<check_outcome> check_once(const net::address& target, const config::health_check& check) {
    const auto started = clock::now();
    auto connected = co_await net::connect_upstream(target, check.timeout);
    if (!connected.socket) co_return check_outcome{false, "connect: " + std::string(net::to_string(connected.reason))};
    if (check.send.empty() && check.expect.empty()) co_return check_outcome{true, {}};
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(check.timeout - (clock::now() - started));
    if (left.count() <= 0) left = std::chrono::milliseconds(1);
    using namespace net::asio::experimental::awaitable_operators;
    auto result = co_await (converse(*connected.socket, check) || timeout_after(left));
    if (result.index() == 1) co_return check_outcome{false, "no expected reply within the timeout"};
    co_return std::get<0>(std::move(result));
}

health_checks::health_checks(net::asio::io_context& io, const std::shared_ptr<backend_pool>& pool,
                             const config::health_check& check)
    : shared_(std::make_shared<shared>()) {
    shared_->pool = pool;
    shared_->check = check;
    for (std::size_t i = 0; i < pool->size(); ++i) {
        shared_->timers.push_back(std::make_unique<net::asio::steady_timer>(io));
        auto target = check_target(pool->backend(i).addr, check.port);
        net::spawn(io, check_loop(shared_, i, std::move(target), pool->next_check(i, check)),
                   "route " + pool->route() + ": health check loop of " + pool->backend(i).name);
    }
}

health_checks::~health_checks() {
    shared_->stopped = true;
    for (auto& t : shared_->timers) t->cancel();
}

}  // namespace spliced::proxy
