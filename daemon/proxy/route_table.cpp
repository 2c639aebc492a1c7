// One generation of routing: each listen address with the routes that share it and its preamble settings.
#include "proxy/route_table.hpp"

#include <stdexcept>

namespace spliced::proxy {

std::shared_ptr<route_runtime> listener_routes::route_for(const std::optional<std::string>& server_name) const {
    if (server_name)
        if (auto index = sni.match(*server_name)) return routes[*index];
    return fallback;
}

std::vector<std::shared_ptr<listener_routes>> group_by_listener(const std::vector<std::shared_ptr<route_runtime>>& routes,
                                                                metrics::registry& registry) {
    std::vector<std::shared_ptr<listener_routes>> out;
    for (const auto& route : routes) {
        for (const auto& addr : route->cfg.listen) {
            std::shared_ptr<listener_routes> group;
            for (auto& g : out)
                if (g->addr == addr) group = g;
            if (!group) {
                group = std::make_shared<listener_routes>();
                group->addr = addr;
                group->accept_proxy_protocol = route->cfg.accept_proxy_protocol;
                group->trusted_proxies = route->cfg.trusted_proxies;
                group->handshake = route->cfg.timeouts.handshake;
                group->metrics = listener_series(registry, addr.text());
                out.push_back(group);
            }
            const std::size_t index = group->routes.size();
            group->routes.push_back(route);
            if (route->cfg.sni.empty()) group->fallback = route;
            for (const auto& pattern : route->cfg.sni)
                if (auto error = group->sni.add(pattern, index))
                    throw std::runtime_error("route " + route->cfg.name + ": " + *error);  // the loader refuses these
        }
    }
    return out;
}

}  // namespace spliced::proxy
