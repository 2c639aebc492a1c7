// The one entry from the session into the data paths: runs a connected pair on the path its route planned.
#include "datapath/engage.hpp"

#include "datapath/sockmap.hpp"
#include "datapath/sockmap_path.hpp"
#include "datapath/splice_pump.hpp"
#include "log/log.hpp"

namespace spliced::datapath {

namespace {

// The fallbacks metric's reason for a refused insert.
fallback_reason fallback_reason_of(const insert_outcome& ins) {
    if (ins.map_full) return fallback_reason::map_full;
    if (ins.error.code == std::errc::not_connected) return fallback_reason::not_established;
    return fallback_reason::error;
}

// Takes the pipes a splice pair needs; out of descriptors, the pair runs on copy instead, which
// needs none. Returns the path the pair gets.
kind take_pipes_or_copy(splice_pipes& pipes, std::uint64_t id, std::string_view route) {
    if (auto ec = take_pipes(pipes)) {
        // Out of descriptors this is every new connection's lot: warn now and then, not each time.
        static log::once_per warning(std::chrono::seconds(10));
        if (std::uint64_t more = 0; warning.allow(more))
            spdlog::warn("conn {} route {}: no pipe for splice ({}); using copy ({} more since the last warning)", id,
                         route, ec.message(), more);
        return kind::copy;
    }
    return kind::splice;
}

// Forwards what both sockets hold, both directions at once: one after the other, an echoing (or any
// request/response) backend deadlocks a busy pair. While the client's bytes go on, the backend's answers
// pile up unread in the upstream socket, the backend blocks writing them and stops reading, and the
// forward write then waits for ever (seen with a 64 MiB echo under qemu, where the client's queue never
// ran dry). `clean`: both queues ended on an skb boundary.
net::awaitable<void> forward_queued_both(pair_state& p, bool& clean) {
    using namespace net;  // && on awaitables
    // Named first: g++ 12 destroys temporaries inside a co_await expression twice.
    auto forward = forward_queued(p, p.client, p.upstream);
    auto backward = forward_queued(p, p.upstream, p.client);
    const auto [from_client, from_upstream] = co_await (std::move(forward) && std::move(backward));
    p.written_to_upstream += from_client.bytes;
    p.written_to_client += from_upstream.bytes;
    clean = from_client.clean && from_upstream.clean;
}

// Forwards in userspace what both sockets already hold, beside the idle watchdog: a peer that takes
// nothing must not pin the pair for ever. True when both queues ended on an skb boundary.
net::awaitable<bool> forward_both(pair_state& p) {
    bool clean = false;
    const bool ended = co_await with_idle_watchdog(p, forward_queued_both(p, clean));
    co_return ended && !p.aborted && clean;
}

// Inserts the pair into the maps. On success the pair's baselines are set: everything userspace
// wrote to a socket so far is in its queued total and in the other socket's received total, and
// counts once.
bool insert(pair_state& p, sockmap_engine& engine, engage_events& m, std::uint64_t id,
            std::string_view route, bool& entered_map) {
    auto ins = engine.insert(p.client.native_handle(), p.upstream.native_handle());
    if (ins.error) {
        entered_map = ins.entered_map;
        m.stayed_off_sockmap(fallback_reason_of(ins));
        spdlog::debug("conn {} route {}: sockmap insert failed at {}", id, route, ins.error.text());
        return false;
    }
    p.maps = ins.pair;
    // The upstream's total at insertion holds what userspace injected; the client's received total
    // holds what userspace consumed: the base takes both out of the comparison.
    p.client_queued_base = ins.pair.client_queued_base - p.written_to_client;
    p.upstream_queued_base = ins.pair.upstream_queued_base - p.written_to_upstream - p.consumed_from_client;
    return true;
}

// Tries to move the pair onto sockmap: forwards what is queued, then inserts. Returns the path the
// pair runs on from here (sockmap, or where it must go instead: a socket that entered the map, even
// briefly, is never spliced).
net::awaitable<kind> onto_sockmap(pair_state& p, sockmap_engine& engine, engage_events& m,
                                  std::uint64_t id, std::string_view route) {
    const bool clean = co_await forward_both(p);
    if (p.aborted) co_return kind::copy;  // nothing more to run; the path does not matter
    if (!clean) {
        spdlog::debug("conn {} route {}: the sender kept its queue full past the userspace bound; staying off "
                      "sockmap",
                      id, route);
        m.stayed_off_sockmap(fallback_reason::busy_sender);
        co_return kind::splice;
    }
    bool entered_map = false;
    if (insert(p, engine, m, id, route, entered_map)) co_return kind::sockmap;
    co_return entered_map ? kind::copy : kind::splice;
}

// Runs the pair on splice (pipes taken here) or copy until it ends.
net::awaitable<void> run_spliced_or_copied(pair_state& p, kind path, std::uint64_t id, std::string_view route,
                                           engage_events* handoff) {
    splice_pipes pipes;
    if (path == kind::splice) path = take_pipes_or_copy(pipes, id, route);
    if (handoff) handoff->handed_off(path);
    p.paths.ran_on(path);
    if (path == kind::splice)
        co_await run_splice(p, std::move(pipes));
    else
        co_await run_copy(p);
}

net::awaitable<void> write_pending(pair_state& p, std::span<const std::uint8_t> bytes) {
    co_await write_all(p, p.client, p.upstream, reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

// Writes the pending bytes to the upstream, beside the idle watchdog.
net::awaitable<bool> send_pending(pair_state& p, std::span<const std::uint8_t> pending) {
    const bool ended = co_await with_idle_watchdog(p, write_pending(p, pending));
    co_return ended && !p.aborted;
}

}  // namespace

net::awaitable<void> engage(pair_state& p, const plan& pl, sockmap_engine* engine, engage_events& m,
                            std::uint64_t id, std::string_view route, std::span<const std::uint8_t> pending) {
    if (!pending.empty()) {
        const bool sent = co_await send_pending(p, pending);
        if (!sent) co_return;
    }
    kind path = pl.path;
    if (path == kind::sockmap && !engine) path = kind::splice;
    if (path == kind::sockmap) {
        path = co_await onto_sockmap(p, *engine, m, id, route);
        if (p.aborted) co_return;
        if (path == kind::sockmap) {
            m.handed_off(kind::sockmap);
            p.paths.ran_on(kind::sockmap);
            co_await run_sockmap(p, *engine, *p.maps);
        } else {
            co_await run_spliced_or_copied(p, path, id, route, &m);
        }
    } else if (path == kind::splice && pl.promote_to_sockmap && engine) {
        splice_pipes pipes;
        path = take_pipes_or_copy(pipes, id, route);
        m.handed_off(path);
        p.paths.ran_on(path);
        if (path == kind::copy) {
            co_await run_copy(p);
        } else {
            const bool promote = co_await run_splice_promotable(p, std::move(pipes));
            if (promote) {
                p.promoting = false;
                const kind next = co_await onto_sockmap(p, *engine, m, id, route);
                if (p.aborted) {
                } else if (next == kind::sockmap) {
                    m.promoted();
                    p.paths.ran_on(kind::sockmap);
                    co_await run_sockmap(p, *engine, *p.maps);
                } else {
                    co_await run_spliced_or_copied(p, next, id, route, nullptr);  // no second try
                }
            }
        }
    } else {
        co_await run_spliced_or_copied(p, path, id, route, &m);
    }
    if (p.maps) {
        engine->remove(*p.maps);
        p.maps.reset();
    }
    for (std::uint8_t i = 0; i < p.demotions; ++i) m.demoted();
}

}  // namespace spliced::datapath
