// What the running daemon holds, shared by its lifecycle (app.cpp) and its reload (reload.cpp); members are
// destroyed in reverse order, so everything a session uses outlives the workers.
#pragma once

#include "app/workers.hpp"
#include "config/config.hpp"
#include "datapath/select.hpp"
#include "metrics/registry.hpp"
#include "net/listen_claim.hpp"
#include "proxy/carry_over.hpp"
#include "proxy/open_connections.hpp"
#include "proxy/route_table.hpp"

#include <map>
#include <memory>
#include <optional>
#include <string>

namespace spliced::app {

struct state {
    explicit state(config::config c);

    config::config cfg;
    // Before the metrics: a scrape reads the engine's counters, so the engine must outlive the exposer.
    std::optional<datapath::selector> paths;
    metrics::registry metrics;
    std::shared_ptr<spdlog::logger> access_log;
    proxy::carry_over carried;  // backend, queue and limit state by key, for the next table
    proxy::route_table table;
    std::map<std::string, net::listen_claim> claims;  // by listen address: every address listened on
    proxy::open_connections open;
    bool draining = false;
    bool reload_wanted = false;  // a SIGHUP came in that no reload has served yet
    bool reloading = false;      // reload_loop() runs
    net::asio::io_context main_io{1};
    // Made before READY=1 is sent, so that from then on every signal is handled.
    net::asio::signal_set signals{main_io, SIGTERM, SIGINT, SIGHUP};
    std::optional<app::workers> workers;  // destroyed first: the sessions use everything above

    proxy::planner planner(bool log) const;
    // Claims every listen address of `t` this process does not hold yet (throws if another spliced has one).
    std::map<std::string, net::listen_claim> claim(const proxy::route_table& t) const;

    // Reloads as long as SIGHUPs came in since the last one (reload.cpp).
    net::awaitable<void> reload_loop();
};

}  // namespace spliced::app
