// One generation of routing: build it from a config, put it in service.
#include "proxy/route_table.hpp"

#include <algorithm>
#include <random>
#include <spdlog/spdlog.h>
#include <stdexcept>

namespace spliced::proxy {

route_runtime::route_runtime(config::route c, datapath::plan p, route_metrics m,
                             std::vector<std::shared_ptr<backend_state>> states, std::shared_ptr<backend_queue> queue,
                             std::shared_ptr<proxy::admission> limit)
    : cfg(std::move(c)), plan(p), metrics(std::move(m)), admission(std::move(limit)) {
    pool = std::make_shared<backend_pool>(cfg, metrics, std::move(states), std::move(queue), std::random_device{}());
}

std::shared_ptr<route_runtime> listener_routes::route_for(const std::optional<std::string>& server_name) const {
    if (server_name)
        if (auto index = sni.match(*server_name)) return routes[*index];
    return fallback;
}

namespace {

std::shared_ptr<route_runtime> build_route(const config::route& r, const planner& plan, metrics::registry& registry,
                                           carry_over& carried) {
    std::vector<std::shared_ptr<backend_state>> states;
    for (const auto& b : r.backends)
        states.push_back(carried.backends.get(carry_over::backend_key(r.name, b.name),
                                              [] { return std::make_shared<backend_state>(); }));
    auto queue = carried.queues.get(r.name, [] { return std::make_shared<backend_queue>(); });
    std::shared_ptr<admission> limit;
    if (r.max_connections)
        limit = carried.admissions.get(r.name, [&] { return std::make_shared<admission>(r.max_connections); });
    return std::make_shared<route_runtime>(r, plan(r), route_series(registry, r), std::move(states), std::move(queue),
                                           std::move(limit));
}

// Groups `routes` by listen address (in the order the config first names each address).
std::vector<std::shared_ptr<listener_routes>> group_by_listener(const std::vector<std::shared_ptr<route_runtime>>& routes,
                                                                metrics::registry& registry) {
    std::vector<std::shared_ptr<listener_routes>> out;
    for (const auto& route : routes) {
        for (const auto& addr : route->cfg.listen) {
            auto it = std::find_if(out.begin(), out.end(), [&](const auto& g) { return g->addr == addr; });
            if (it == out.end()) {
                auto group = std::make_shared<listener_routes>();
                group->addr = addr;
                group->accept_proxy_protocol = route->cfg.accept_proxy_protocol;
                group->trusted_proxies = route->cfg.trusted_proxies;
                group->handshake = route->cfg.timeouts.handshake;
                group->metrics = listener_series(registry, addr.text());
                it = out.insert(out.end(), std::move(group));
            }
            auto& group = **it;
            const std::size_t index = group.routes.size();
            group.routes.push_back(route);
            if (route->cfg.sni.empty()) group.fallback = route;
            for (const auto& pattern : route->cfg.sni)
                if (auto error = group.sni.add(pattern, index))
                    throw std::runtime_error("route " + route->cfg.name + ": " + *error);  // the loader refuses these
        }
    }
    return out;
}

bool has_route(const route_table& t, const std::string& name) {
    return std::any_of(t.routes.begin(), t.routes.end(), [&](const auto& r) { return r->cfg.name == name; });
}

}  // namespace

route_table route_table::build(const config::config& c, const planner& plan, metrics::registry& registry,
                               carry_over& carried) {
    route_table t;
    for (const auto& r : c.routes) t.routes.push_back(build_route(r, plan, registry, carried));
    t.listeners = group_by_listener(t.routes, registry);
    return t;
}

void route_table::activate(net::asio::io_context& io) {
    for (const auto& r : routes) {
        if (r->admission) r->admission->set_limit(r->cfg.max_connections);
        r->pool->activate();
        if (r->cfg.health_check) checks.push_back(std::make_unique<health_checks>(io, r->pool, *r->cfg.health_check));
    }
}

void route_table::log_changes_from(const route_table& before) const {
    for (const auto& r : routes)
        if (!has_route(before, r->cfg.name)) spdlog::info("reload: route {} added", r->cfg.name);
    for (const auto& r : before.routes)
        if (!has_route(*this, r->cfg.name))
            spdlog::info("reload: route {} removed (its open connections run on)", r->cfg.name);
}

std::shared_ptr<listener_routes> route_table::listener_on(const net::address& addr) const {
    auto it = std::find_if(listeners.begin(), listeners.end(), [&](const auto& l) { return l->addr == addr; });
    return it == listeners.end() ? nullptr : *it;
}

}  // namespace spliced::proxy
