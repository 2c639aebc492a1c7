// The backend pool: health state changes (first result, rise, fall, passive ejection), eligibility, the FIFO queue.
#include "config/loader.hpp"
#include "metrics/registry.hpp"
#include "proxy/route_metrics.hpp"
#include "proxy/backend_pool.hpp"

#include <boost/asio/detached.hpp>
#include <catch2/catch.hpp>
#include <thread>

using namespace spliced;
using proxy::backend_pool;

namespace {

config::route route_with(const std::string& extra, const std::string& backends) {
    return config::load_string("routes:\n  - name: r\n    listen: 127.0.0.1:1\n" + extra + "    backends:\n" + backends,
                               "p.yaml")
        .routes.at(0);
}

struct fixture {
    metrics::registry registry;
    config::route cfg;
    std::vector<std::shared_ptr<proxy::backend_state>> states;
    std::shared_ptr<proxy::backend_queue> queue = std::make_shared<proxy::backend_queue>();
    std::shared_ptr<backend_pool> pool;
    explicit fixture(config::route r) : cfg(std::move(r)) {
        for (std::size_t i = 0; i < cfg.backends.size(); ++i) states.push_back(std::make_shared<proxy::backend_state>());
        pool = std::make_shared<backend_pool>(cfg, proxy::route_series(registry, cfg), states, queue, 1);
        pool->activate();
    }
    // acquire() run to completion on a private io_context.
    backend_pool::acquired acquire(std::vector<bool> tried = {}, std::chrono::milliseconds queue = std::chrono::milliseconds(0)) {
        net::asio::io_context io;
        backend_pool::acquired out;
        backend_pool::request request;
        for (std::size_t i = 0; i < tried.size(); ++i)
            if (tried[i]) request.tried.push_back(&pool->state(i));
        net::asio::co_spawn(
            io, [&]() -> net::awaitable<void> { out = co_await pool->acquire(request, queue); }, net::asio::detached);
        io.run();
        return out;
    }
};

const std::string two = "      - address: 127.0.0.1:9001\n      - address: 127.0.0.1:9002\n";

}  // namespace

TEST_CASE("the first check result sets a backend's state at once; then rise passes and fall failures", "[pool]") {
    fixture f(route_with("    health_check: { rise: 2, fall: 3 }\n", two));
    CHECK(f.pool->up(0));  // up until a check says otherwise
    f.pool->check_result(0, false, "connect: refused");
    CHECK_FALSE(f.pool->up(0));  // one failure is enough the first time
    f.pool->check_result(0, true, "");
    CHECK_FALSE(f.pool->up(0));
    f.pool->check_result(0, true, "");
    CHECK(f.pool->up(0));  // rise 2
    f.pool->check_result(0, false, "x");
    f.pool->check_result(0, false, "x");
    f.pool->check_result(0, true, "");  // a pass in between starts the count again
    f.pool->check_result(0, false, "x");
    f.pool->check_result(0, false, "x");
    CHECK(f.pool->up(0));
    f.pool->check_result(0, false, "x");
    CHECK_FALSE(f.pool->up(0));  // fall 3
    CHECK(f.pool->up(1));
}

TEST_CASE("a down backend takes no connection while another is up; with none up all are tried", "[pool]") {
    fixture f(route_with("    health_check: { rise: 1, fall: 1 }\n", two));
    f.pool->check_result(0, false, "x");
    for (int i = 0; i < 4; ++i) {
        auto a = f.acquire();
        REQUIRE(a.result == backend_pool::outcome::leased);
        CHECK(a.slot.index() == 1);
    }
    f.pool->check_result(1, false, "x");
    auto a = f.acquire();
    REQUIRE(a.result == backend_pool::outcome::leased);  // none up: tried anyway
    auto b = f.acquire({a.slot.index() == 0, a.slot.index() == 1});
    REQUIRE(b.result == backend_pool::outcome::leased);
    CHECK(b.slot.index() != a.slot.index());
    CHECK(f.acquire({true, true}).result == backend_pool::outcome::no_backend);
}

TEST_CASE("passive: consecutive failed connects eject; without checks the backend returns after eject", "[pool]") {
    fixture f(route_with("    passive: { failures: 2, eject: 50ms }\n", two));
    f.pool->connect_failed(0);
    f.pool->connect_succeeded(0);  // a success in between resets the count
    f.pool->connect_failed(0);
    CHECK(f.pool->up(0));
    f.pool->connect_failed(0);
    CHECK_FALSE(f.pool->up(0));
    std::this_thread::sleep_for(std::chrono::milliseconds(80));
    CHECK(f.pool->up(0));
}

TEST_CASE("passive ejection with active checks lasts until one check passes", "[pool]") {
    fixture f(route_with("    passive: { failures: 1, eject: 1ms }\n    health_check: { rise: 3, fall: 3 }\n", two));
    f.pool->check_result(0, true, "");
    f.pool->connect_failed(0);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    CHECK_FALSE(f.pool->up(0));  // eject does not apply with active checks
    f.pool->check_result(0, true, "");
    CHECK(f.pool->up(0));  // one pass, not rise
}

TEST_CASE("full backends are skipped; when all are full a connection waits, FIFO, and times out", "[pool]") {
    fixture f(route_with("", "      - { address: 127.0.0.1:9001, max_connections: 1 }\n"
                             "      - { address: 127.0.0.1:9002, max_connections: 1 }\n"));
    auto a = f.acquire();
    auto b = f.acquire();
    REQUIRE(a.result == backend_pool::outcome::leased);
    REQUIRE(b.result == backend_pool::outcome::leased);
    CHECK(a.slot.index() != b.slot.index());
    CHECK(f.pool->active(0) == 1);
    CHECK(f.pool->active(1) == 1);
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(f.acquire({}, std::chrono::milliseconds(30)).result == backend_pool::outcome::queue_timeout);
    CHECK(std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(30));

    // Two waiters on another thread's io_context; a release hands the slot to the older one.
    net::asio::io_context io;
    std::vector<int> order;
    backend_pool::request r1, r2;
    backend_pool::acquired first, second;
    net::asio::co_spawn(io, [&]() -> net::awaitable<void> {
        first = co_await f.pool->acquire(r1, std::chrono::seconds(5));
        order.push_back(1);
    }, net::asio::detached);
    net::asio::co_spawn(io, [&]() -> net::awaitable<void> {
        second = co_await f.pool->acquire(r2, std::chrono::milliseconds(300));
        order.push_back(2);
    }, net::asio::detached);
    std::thread runner([&] { io.run(); });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const std::size_t freed = b.slot.index();
    b.slot.reset();  // from this thread, as a session on another worker would
    runner.join();
    REQUIRE(order.size() == 2);
    CHECK(order[0] == 1);
    CHECK(first.result == backend_pool::outcome::leased);
    CHECK(first.slot.index() == freed);
    CHECK(second.result == backend_pool::outcome::queue_timeout);
    CHECK(f.pool->active(freed) == 1);
    first.slot.reset();
    CHECK(f.pool->active(freed) == 0);
}

TEST_CASE("weight 0 takes no new connection", "[pool]") {
    fixture f(route_with("", "      - { address: 127.0.0.1:9001, weight: 0 }\n      - address: 127.0.0.1:9002\n"));
    for (int i = 0; i < 5; ++i) CHECK(f.acquire().slot.index() == 1);
    CHECK(f.acquire({false, true}).result == backend_pool::outcome::no_backend);
}

namespace {

// A second pool for the same route and backends, as a reload builds it: the same states and queue.
std::shared_ptr<backend_pool> next_table(fixture& f, const config::route& cfg, metrics::registry& registry,
                                         std::shared_ptr<proxy::backend_queue> queue) {
    std::vector<std::shared_ptr<proxy::backend_state>> states;
    for (std::size_t i = 0; i < cfg.backends.size(); ++i) {
        // The states by address: a backend the new list keeps is the old one's.
        std::shared_ptr<proxy::backend_state> found;
        for (std::size_t j = 0; j < f.cfg.backends.size(); ++j)
            if (f.cfg.backends[j].name == cfg.backends[i].name) found = f.states[j];
        states.push_back(found ? found : std::make_shared<proxy::backend_state>());
    }
    return std::make_shared<backend_pool>(cfg, proxy::route_series(registry, cfg), std::move(states), std::move(queue), 2);
}

}  // namespace

TEST_CASE("a slot freed on an old table's pool goes to the oldest waiter, through the newest pool", "[pool]") {
    const std::string one = "      - { address: 127.0.0.1:9001, max_connections: 1 }\n";
    fixture f(route_with("", one));
    auto held = f.acquire();
    REQUIRE(held.result == backend_pool::outcome::leased);

    net::asio::io_context io;
    backend_pool::request request;
    backend_pool::acquired waited;
    net::asio::co_spawn(io, [&]() -> net::awaitable<void> {
        waited = co_await f.pool->acquire(request, std::chrono::seconds(5));
    }, net::asio::detached);
    std::thread runner([&] { io.run(); });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // queued behind the held slot
    // A reload: the same backend plus one that takes no connection (so the waiter still waits).
    auto cfg = route_with("", one + "      - { address: 127.0.0.1:9002, weight: 0 }\n");
    auto next = next_table(f, cfg, f.registry, f.queue);
    next->activate();
    const auto t0 = std::chrono::steady_clock::now();
    held.slot.reset();  // the old table's connection ends
    runner.join();
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2));  // served now, not at its queue timeout
    REQUIRE(waited.result == backend_pool::outcome::leased);
    CHECK(&waited.slot.pool() == next.get());
    CHECK(waited.slot.backend().name == "127.0.0.1:9001");
    CHECK(next->active(0) == 1);
}

TEST_CASE("a backend a check held down is up once its route has no check, and its series say so", "[pool]") {
    fixture f(route_with("    health_check: { rise: 1, fall: 1 }\n", two));
    f.pool->check_result(1, false, "refused");
    CHECK_FALSE(f.pool->up(1));
    auto next = next_table(f, route_with("", two), f.registry, f.queue);
    CHECK_FALSE(next->up(1));  // built, not yet in service: nothing changes (a reload may still fail)
    next->activate();
    CHECK(next->up(1));
    CHECK(f.pool->up(1));  // the state is one
}

TEST_CASE("a reload keeps a backend's check schedule unless the check probes otherwise", "[pool]") {
    using namespace std::chrono_literals;
    const auto cfg = route_with("    health_check: { interval: 10s, timeout: 1s, send: PING, expect: PONG }\n", two);
    fixture f(cfg);
    const auto started = std::chrono::steady_clock::now();
    f.pool->check_started(0, started);
    f.pool->check_result(0, true, "");
    CHECK(f.pool->next_check(0, *cfg.health_check) == started + 10s);
    auto before = std::chrono::steady_clock::now();
    CHECK(f.pool->next_check(1, *cfg.health_check) - before < 1s);  // never checked: now

    auto slower = route_with("    health_check: { interval: 20s, timeout: 1s, send: PING, expect: PONG }\n", two);
    auto next = next_table(f, slower, f.registry, f.queue);
    next->activate();
    CHECK(next->next_check(0, *slower.health_check) == started + 20s);  // the same probe: its schedule goes on

    auto other = route_with("    health_check: { interval: 10s, timeout: 1s, send: PING, expect: PANG }\n", two);
    auto third = next_table(f, other, f.registry, f.queue);
    third->activate();
    before = std::chrono::steady_clock::now();
    CHECK(third->next_check(0, *other.health_check) - before < 1s);  // another probe: at once
}
