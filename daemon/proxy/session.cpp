// One client connection from accept to close: pick and connect a backend, hand off to a data path.
#include "proxy/session.hpp"

#include "datapath/sockmap.hpp"
#include "datapath/sockmap_path.hpp"
#include "datapath/splice_pump.hpp"
#include "log/log.hpp"
#include "net/upstream.hpp"
#include "sys/socket.hpp"

#include <optional>

namespace spliced::proxy {

namespace {

struct active_guard {
    const route_runtime& route;
    std::atomic<long>* active;
    active_guard(const route_runtime& r, std::atomic<long>* a) : route(r), active(a) {
        route.metrics.connection_opened();
        active->fetch_add(1, std::memory_order_relaxed);
    }
    ~active_guard() {
        route.metrics.connection_closed();
        active->fetch_sub(1, std::memory_order_relaxed);
    }
};

std::string endpoint_text(const net::tcp::socket& s, bool remote) {
    boost::system::error_code ec;
    auto ep = remote ? s.remote_endpoint(ec) : s.local_endpoint(ec);
    return ec ? std::string("?") : fmt::format("{}", ep);
}

// Tries each backend once, starting where the balancer says; counts every failure.
net::awaitable<std::optional<net::tcp::socket>> connect_any(route_runtime& route, std::uint64_t id,
                                                            std::size_t& chosen) {
    std::size_t index = route.balancer.first();
    for (std::size_t tries = 0; tries < route.balancer.size(); ++tries, index = route.balancer.after(index)) {
        const auto& backend = route.cfg.backends[index];
        auto outcome = co_await net::connect_upstream(backend.addr, route.cfg.timeouts.connect);
        if (outcome.socket) {
            chosen = index;
            co_return std::move(outcome.socket);
        }
        route.metrics.connect_failed(index, outcome.reason);
        spdlog::warn("conn {} route {}: connect to {} failed: {} ({})", id, route.cfg.name, backend.addr.text,
                     metrics::to_string(outcome.reason), outcome.error.message());
        // No socket of our own after a whole connect timeout: another backend needs one just the same.
        if (outcome.reason == metrics::connect_error::local) break;
    }
    co_return std::nullopt;
}

// The fallbacks metric's reason for a refused insert.
datapath::fallback_reason fallback_reason_of(const datapath::insert_outcome& ins) {
    if (ins.map_full) return datapath::fallback_reason::map_full;
    if (ins.error == std::errc::not_connected) return datapath::fallback_reason::not_established;
    return datapath::fallback_reason::error;
}

// Takes the pipes a splice pair needs; out of descriptors, the pair runs on copy instead, which
// needs none. Returns the path the pair gets.
datapath::kind take_pipes_or_copy(const route_runtime& route, datapath::splice_pipes& pipes, std::uint64_t id) {
    if (auto ec = datapath::take_pipes(pipes)) {
        // Out of descriptors this is every new connection's lot: warn now and then, not each time.
        static log::once_per warning(std::chrono::seconds(10));
        if (std::uint64_t more = 0; warning.allow(more))
            spdlog::warn("conn {} route {}: no pipe for splice ({}); using copy ({} more since the last warning)", id,
                         route.cfg.name, ec.message(), more);
        return datapath::kind::copy;
    }
    return datapath::kind::splice;
}

// Picks the data path for this pair; on sockmap, inserts it into the maps.
// `clean`: forward_queued() left both receive queues on an skb boundary (else: splice).
datapath::kind hand_off(route_runtime& route, session_env env, net::tcp::socket& client,
                        net::tcp::socket& upstream, std::uint64_t id, bool clean,
                        std::optional<datapath::sockmap_pair>& in_map) {
    if (route.path != datapath::kind::sockmap || !env.engine) return route.path;
    if (!clean) {
        spdlog::debug("conn {} route {}: the client kept its queue full past the userspace bound; using splice", id,
                      route.cfg.name);
        route.metrics.sockmap_fallback(datapath::fallback_reason::busy_sender);
        return datapath::kind::splice;
    }
    auto ins = env.engine->insert(client.native_handle(), upstream.native_handle());
    if (!ins.error) {
        in_map = ins.pair;
        return datapath::kind::sockmap;
    }
    // A socket that entered the map (even briefly) is never spliced.
    auto fallback = ins.entered_map ? datapath::kind::copy : datapath::kind::splice;
    route.metrics.sockmap_fallback(fallback_reason_of(ins));
    spdlog::debug("conn {} route {}: sockmap insert failed at {}: {}; using {}", id, route.cfg.name, ins.what,
                  ins.error.message(), datapath::to_string(fallback));
    return fallback;
}

// A pair whose promotion fell through goes on on splice, with pipes taken again (or on copy when
// none can be made). Returns the path it ran on.
net::awaitable<datapath::kind> stay_on_splice(const route_runtime& route, datapath::pair_state& pair,
                                              std::uint64_t id) {
    datapath::splice_pipes pipes;
    const auto path = take_pipes_or_copy(route, pipes, id);
    if (path == datapath::kind::splice)
        co_await datapath::run_splice(pair, std::move(pipes));
    else
        co_await datapath::run_copy(pair);
    co_return path;
}

// Moves a pair that run_splice_promotable parked into the maps and runs it on sockmap; where
// the insert is refused, the pair goes on as before. Returns the path it ran on.
net::awaitable<datapath::kind> run_promoted(route_runtime& route, session_env env, datapath::pair_state& pair,
                                            std::optional<datapath::sockmap_pair>& in_map, std::uint64_t id) {
    pair.promoting = false;
    const auto from_client = co_await datapath::forward_queued(pair.client, pair.upstream);
    const auto from_upstream = co_await datapath::forward_queued(pair.upstream, pair.client);
    pair.written_to_upstream += from_client.bytes;
    pair.written_to_client += from_upstream.bytes;
    if (!from_client.clean || !from_upstream.clean) {
        route.metrics.sockmap_fallback(datapath::fallback_reason::busy_sender);
        const auto path = co_await stay_on_splice(route, pair, id);  // a sender that never paused
        co_return path;
    }
    auto ins = env.engine->insert(pair.client.native_handle(), pair.upstream.native_handle());
    if (ins.error) {
        spdlog::debug("conn {} route {}: sockmap insert on promotion failed at {}: {}", id, route.cfg.name, ins.what,
                      ins.error.message());
        route.metrics.sockmap_fallback(fallback_reason_of(ins));  // no second try: it stays off sockmap
        if (ins.entered_map) {
            co_await datapath::run_copy(pair);
            co_return datapath::kind::copy;
        }
        const auto path = co_await stay_on_splice(route, pair, id);
        co_return path;
    }
    in_map = ins.pair;
    // Everything userspace wrote to a socket is in its queued total and in the other socket's
    // received total: count it once.
    pair.client_queued_base = ins.pair.client_queued_base - pair.written_to_client;
    pair.upstream_queued_base = ins.pair.upstream_queued_base - pair.written_to_upstream;
    route.metrics.promoted();
    co_await datapath::run_sockmap(pair, *env.engine, *in_map);
    co_return datapath::kind::sockmap;
}

}  // namespace

net::awaitable<void> run_session(std::shared_ptr<route_runtime> route, session_env env, net::tcp::socket client,
                                 std::uint64_t id) {
    const auto started = std::chrono::steady_clock::now();
    active_guard guard(*route, env.active);
    sys::set_nodelay(client.native_handle(), true);
    // Only the access log needs the peer's address (one getpeername per connection otherwise).
    const std::string client_text = env.access_log ? endpoint_text(client, true) : std::string();

    std::size_t backend_index = 0;
    auto upstream_opt = co_await connect_any(*route, id, backend_index);
    if (!upstream_opt) {
        if (env.access_log)
            env.access_log->info("route={} client={} backend=- datapath=- duration_ms={} bytes_in=0 bytes_out=0 "
                                 "end=no_backend",
                                 route->cfg.name, client_text,
                                 std::chrono::duration_cast<std::chrono::milliseconds>(
                                     std::chrono::steady_clock::now() - started)
                                     .count());
        co_return;  // closing the client is the answer
    }
    net::tcp::socket upstream = std::move(*upstream_opt);
    sys::set_nodelay(upstream.native_handle(), true);
    client.non_blocking(true);
    upstream.non_blocking(true);

    datapath::forwarded early_from_client, early_from_upstream;
    if (route->path == datapath::kind::sockmap && env.engine) {
        early_from_client = co_await datapath::forward_queued(client, upstream);
        early_from_upstream = co_await datapath::forward_queued(upstream, client);
    }
    std::optional<datapath::sockmap_pair> in_map;
    auto path = hand_off(*route, env, client, upstream, id, early_from_client.clean && early_from_upstream.clean,
                         in_map);
    datapath::splice_pipes pipes;
    if (path == datapath::kind::splice) path = take_pipes_or_copy(*route, pipes, id);
    route->metrics.connection_handed_off(path);

    datapath::pair_state pair{client, upstream, route->cfg.timeouts.idle};
    if (in_map) {
        // Bytes forwarded before insertion are in the peer's queued total already, and also
        // in the sender's received total: count them once.
        pair.client_queued_base = in_map->client_queued_base - early_from_upstream.bytes;
        pair.upstream_queued_base = in_map->upstream_queued_base - early_from_client.bytes;
    }
    switch (path) {
    case datapath::kind::sockmap: co_await datapath::run_sockmap(pair, *env.engine, *in_map); break;
    case datapath::kind::splice:
        if (route->promote_to_sockmap && env.engine) {
            const bool promote = co_await datapath::run_splice_promotable(pair, std::move(pipes));
            if (promote) path = co_await run_promoted(*route, env, pair, in_map, id);
        } else {
            co_await datapath::run_splice(pair, std::move(pipes));
        }
        break;
    case datapath::kind::copy: co_await datapath::run_copy(pair); break;
    }

    sys::tcp_stats from_client, from_upstream;
    if (env.access_log) {  // payload byte counts, for the access log line
        sys::tcp_stats_of(client.native_handle(), from_client);
        sys::tcp_stats_of(upstream.native_handle(), from_upstream);
    }
    if (in_map) env.engine->remove(*in_map);
    if (pair.reason != datapath::end_reason::completed && pair.reason != datapath::end_reason::idle_timeout) {
        // Data was lost on one side: make the other side see a reset, not a clean end.
        sys::set_linger_reset(client.native_handle());
        sys::set_linger_reset(upstream.native_handle());
    }
    boost::system::error_code ignored;
    client.close(ignored);
    upstream.close(ignored);

    if (pair.stranded_bytes)
        spdlog::error("conn {} route {}: {} redirected bytes never reached the peer socket; both sides reset",
                      id, route->cfg.name, pair.stranded_bytes);
    if (pair.demoted_bytes)
        spdlog::info("conn {} route {}: {} bytes copied by userspace after a sockmap demotion", id, route->cfg.name,
                     pair.demoted_bytes);
    if (env.access_log)
        env.access_log->info("route={} client={} backend={} datapath={} duration_ms={} bytes_in={} bytes_out={} "
                             "end={}",
                             route->cfg.name, client_text, route->cfg.backends[backend_index].addr.text,
                             datapath::to_string(path),
                             std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::steady_clock::now() - started)
                                 .count(),
                             pair.payload_received(client, from_client.bytes_received),
                             pair.payload_received(upstream, from_upstream.bytes_received),
                             datapath::to_string(pair.reason));
}

}  // namespace spliced::proxy
