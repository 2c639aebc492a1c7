// One generation of routing: each listen address with the routes that share it and its preamble settings.
#pragma once

#include "config/config.hpp"
#include "proxy/session.hpp"
#include "proxy/sni_match.hpp"

#include <chrono>
#include <memory>
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
};

// Groups `routes` by listen address (in the order the config first names each address).
std::vector<std::shared_ptr<listener_routes>> group_by_listener(const std::vector<std::shared_ptr<route_runtime>>& routes,
                                                                metrics::registry& registry);

}  // namespace spliced::proxy
