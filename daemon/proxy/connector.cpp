// A backend for a session: pick, connect, retry the next one.
#include "proxy/connector.hpp"

#include "net/upstream.hpp"

#include <spdlog/spdlog.h>

namespace spliced::proxy {

net::awaitable<connected> connect_any(net::event_core& core, route_runtime& route, std::uint64_t id,
                                     const client_key& client) {
    connected out;
    backend_pool::request request{client, {}, false};
    for (std::size_t attempt = 0; attempt < route.pool->size(); ++attempt) {
        auto got = co_await route.pool->acquire(request, route.cfg.timeouts.queue);
        if (got.result == backend_pool::outcome::queue_timeout) {
            route.metrics.queue_timeouts.inc();
            out.result = connected::outcome::queue_timeout;
            co_return out;
        }
        if (got.result != backend_pool::outcome::leased) break;
        // The pool that granted it: the route's newest in service, which a reload may have made since.
        auto& pool = got.slot.pool();
        const std::size_t index = got.slot.index();
        const auto& backend = pool.backend(index);
        const auto started = std::chrono::steady_clock::now();
        auto attempt_outcome = co_await net::connect_in_core(core, backend.addr, route.cfg.timeouts.connect);
        if (attempt_outcome.socket) {
            route.metrics.connect_time.observe(
                std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
            pool.connect_succeeded(index);
            out.result = connected::outcome::connected;
            out.socket = std::move(attempt_outcome.socket);
            out.slot = std::move(got.slot);
            co_return out;
        }
        request.tried.push_back(&pool.state(index));
        pool.metrics().backends[index].connect_errors.inc(attempt_outcome.reason);
        spdlog::warn("conn {} route {}: connect to {} failed: {} ({})", id, route.cfg.name, backend.name,
                     net::to_string(attempt_outcome.reason), attempt_outcome.error.message());
        // No socket of our own after a whole connect timeout: another backend needs one just the same.
        if (attempt_outcome.reason == net::connect_error::local) break;
        pool.connect_failed(index);
    }
    co_return out;
}

}  // namespace spliced::proxy
