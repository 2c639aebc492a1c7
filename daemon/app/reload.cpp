// Reload (SIGHUP): read the file like --check-config, build the next table, bind its new addresses, swap it in
// on every worker, then let the old one go; on any failure nothing changes.
#include "app/state.hpp"

#include "config/diff.hpp"
#include "config/loader.hpp"
#include "log/log.hpp"
#include "net/resolve.hpp"
#include "sys/notify.hpp"

#include <ctime>
#include <malloc.h>
#include <spdlog/spdlog.h>

namespace spliced::app {

namespace {

std::string monotonic_usec() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return std::to_string(static_cast<std::uint64_t>(ts.tv_sec) * 1000000u + static_cast<std::uint64_t>(ts.tv_nsec) / 1000u);
}

// Puts `next` in place of the running config; throws (having changed nothing) when it cannot.
net::awaitable<void> apply(state& s, config::config next) {
    for (const auto& warning : config::keep_restart_only(s.cfg, next)) spdlog::warn("reload: {}", warning);
    // Everything that can fail comes first, while nothing has changed: plans, the access log, claims, binds.
    auto table = proxy::route_table::build(next, s.planner(false), s.metrics, s.carried);
    auto access_log = next.log.access_log == s.cfg.log.access_log && next.log.access_log == "stdout"
                          ? s.access_log  // nothing to reopen
                          : log::make_access_log(next.log);
    auto claimed = s.claim(table);
    auto listeners = s.workers->bind_new(table);

    co_await s.workers->swap(table, std::move(listeners), access_log);
    table.activate(s.main_io);
    table.log_changes_from(s.table);
    std::erase_if(s.claims, [&](const auto& kv) {
        return std::none_of(table.listeners.begin(), table.listeners.end(),
                            [&](const auto& l) { return l->addr.text() == kv.first; });
    });
    s.claims.merge(claimed);
    s.table = std::move(table);  // the old table's health checks stop here
    s.carried.prune();
    s.access_log = std::move(access_log);
    log::init(next.log);
    s.cfg = std::move(next);
}

net::awaitable<void> reload(state& s) {
    sys::notify("RELOADING=1\nMONOTONIC_USEC=" + monotonic_usec());
    spdlog::info("SIGHUP: reloading {}", s.cfg.source);
    const auto started = std::chrono::steady_clock::now();
    bool ok = false;
    try {
        co_await apply(s, config::load_file(s.cfg.source, net::resolve_host));
        ok = true;
    } catch (const std::exception& e) {
        spdlog::error("reload failed, the running config stays: {}", e.what());
    }
    s.metrics.config_reloaded(ok);
    // Parsing a large file (or one refused for its size) took memory the daemon will not use again: hand
    // it back rather than keep it for the life of the process.
    ::malloc_trim(0);
    if (ok)
        spdlog::info("reload done in {} ms: {} route(s) on {} listen address(es)",
                     std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count(),
                     s.table.routes.size(), s.table.listeners.size());
    if (!s.draining) sys::notify("READY=1\nSTATUS=serving");  // else STOPPING=1 has been said since
}

}  // namespace

net::awaitable<void> state::reload_loop() {
    reloading = true;
    while (reload_wanted && !draining) {
        reload_wanted = false;
        co_await reload(*this);
    }
    reloading = false;
}

}  // namespace spliced::app
