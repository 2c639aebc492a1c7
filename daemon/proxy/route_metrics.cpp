// The series of a route, of its backends and of a listen address, made from their tables.
#include "proxy/route_metrics.hpp"

namespace spliced::proxy {

namespace {

template <typename Handles>
using group = metrics::series_group<Handles>;

}  // namespace

#define SPLICED_MAKE_SERIES(handle, family) \
    h.handle = b.one_series(f.family, labels, metrics::families::family##_buckets);
#define SPLICED_MAKE_BY_SERIES(handle, family, enum_type, label) \
    h.handle = b.by_series<enum_type>(f.family, labels, label);

route_metrics route_series(metrics::registry& registry, const config::route& r) {
    auto& f = registry.families();
    auto route = registry.series<route_metrics>("route\n" + r.name, [&](metrics::series_builder& b, route_metrics& h) {
        const prometheus::Labels labels{{"route", r.name}};
        SPLICED_ROUTE_SERIES(SPLICED_MAKE_SERIES, SPLICED_MAKE_BY_SERIES)
    });
    route_metrics m = route->handles;
    m.series.push_back(route);
    for (const auto& backend : r.backends) {
        auto g = registry.series<backend_metrics>(
            "backend\n" + r.name + "\n" + backend.name, [&](metrics::series_builder& b, backend_metrics& h) {
                const prometheus::Labels labels{{"route", r.name}, {"backend", backend.name}};
                SPLICED_BACKEND_SERIES(SPLICED_MAKE_SERIES, SPLICED_MAKE_BY_SERIES)
            });
        m.backends.push_back(g->handles);
        m.series.push_back(std::move(g));
    }
    return m;
}

listener_metrics listener_series(metrics::registry& registry, const std::string& listen) {
    auto& f = registry.families();
    auto g = registry.series<listener_metrics>("listen\n" + listen, [&](metrics::series_builder& b, listener_metrics& h) {
        const prometheus::Labels labels{{"listen", listen}};
        SPLICED_LISTENER_SERIES(SPLICED_MAKE_SERIES, SPLICED_MAKE_BY_SERIES)
    });
    listener_metrics m = g->handles;
    m.series = std::move(g);
    return m;
}

}  // namespace spliced::proxy
