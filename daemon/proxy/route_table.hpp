// One generation of routing, immutable once built: the routes of a config with their plans, pools, limits and
// series, grouped by listen address; state of backends, queues and limits carried over by key from earlier
// generations.
#pragma once

#include "config/config.hpp"
#include "proxy/carry_over.hpp"
#include "proxy/health.hpp"
#include "proxy/route.hpp"
#include "proxy/sni_match.hpp"

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace spliced::proxy {

// A listen address and the routes on it. Routes that share an address agree on the preamble (the
// loader checks): whether a PROXY header comes first, from which sources, and how long it may take.
struct listener_routes {
    net::address addr;
    std::vector<std::shared_ptr<route_runtime>> routes;  // in config order
    std::shared_ptr<route_runtime> fallback;              // the route without match.sni, or null
    sni_table sni;                                        // pattern -> index into routes
    bool accept_proxy_protocol = false;
    std::vector<config::cidr> trusted_proxies;            // empty: every source
    std::chrono::milliseconds handshake{5000};
    listener_metrics metrics;

    // A ClientHello is read (peeked) before routing: some route here has match.sni.
    bool reads_client_hello() const { return sni.size() > 0; }
    // The route named in counts made before a route is chosen (PROXY header errors): the fallback, else the
    // first route.
    route_runtime& preamble_route() const { return fallback ? *fallback : *routes.front(); }
    // The route for a TLS server name (nullopt: none was read); null when no route takes it.
    std::shared_ptr<route_runtime> route_for(const std::optional<std::string>& server_name) const;
    // A route's place-count limit applies at accept when the address has no other route (else the session
    // takes its place once it knows its route).
    net::admit_gate* accept_gate() const { return routes.size() == 1 ? routes.front()->admission.get() : nullptr; }
};

// The data path plan of a route (datapath::selector::plan_for); throws when the route cannot run.
using planner = std::function<datapath::plan(const config::route&)>;

struct route_table {
    std::vector<std::shared_ptr<route_runtime>> routes;
    std::vector<std::shared_ptr<listener_routes>> listeners;  // the routes grouped by listen address
    std::vector<std::unique_ptr<health_checks>> checks;       // from when it is in service

    // The table of `c`; state of backends, queues and limits that `carried` still holds is taken over.
    // Throws std::runtime_error when a route cannot run (the planner's refusal).
    static route_table build(const config::config& c, const planner& plan, metrics::registry& registry,
                             carry_over& carried);
    // Puts the table in service once every worker runs it: route limits, pools (which take over the
    // waiters and bring carried health in line with this config) and health checks on `io`.
    void activate(net::asio::io_context& io);
    // Logs the routes it adds to `before`, and those it drops.
    void log_changes_from(const route_table& before) const;
    // The routes on `addr`, null when the table does not listen there.
    std::shared_ptr<listener_routes> listener_on(const net::address& addr) const;
};

}  // namespace spliced::proxy
