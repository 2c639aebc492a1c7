// The series of a route, of its backends and of a listen address: one declarative table each (a series is one
// line: its handle, its family in metrics/families.hpp, and the enum that labels it, if any), kept by name
// across reloads (a dropped name's series leave /metrics with the last user of these handles).
#pragma once

#include "config/config.hpp"
#include "datapath/kinds.hpp"
#include "metrics/registry.hpp"
#include "net/upstream.hpp"
#include "proxy/proxy_protocol.hpp"
#include "proxy/source_acl.hpp"

#include <memory>
#include <vector>

namespace spliced::proxy {

// Which way payload went: from clients (in) or from backends (out); the `direction` label of bytes_total.
enum class direction { in, out };
// An active health check's outcome; the `result` label of health_checks_total.
enum class check_result { failure, success };

}  // namespace spliced::proxy

namespace spliced::sys {
template <>
struct enum_names<proxy::direction> {
    static constexpr std::array table{std::pair{proxy::direction::in, "in"}, std::pair{proxy::direction::out, "out"}};
};
template <>
struct enum_names<proxy::check_result> {
    static constexpr std::array table{std::pair{proxy::check_result::failure, "failure"},
                                      std::pair{proxy::check_result::success, "success"}};
};
}  // namespace spliced::sys

namespace spliced::proxy {

// X(handle, family) for one series; BY(handle, family, enum, label) for one series per value of the enum.
#define SPLICED_ROUTE_SERIES(X, BY)                                                    \
    BY(connections, connections_total, datapath::kind, "datapath")                     \
    X(active, connections_active)                                                      \
    X(promotions, sockmap_promotions_total)                                            \
    X(demotions, sockmap_demotions_total)                                              \
    BY(sockmap_fallbacks, sockmap_fallbacks_total, datapath::fallback_reason, "reason") \
    BY(proxy_errors, proxy_protocol_errors_total, proxy_protocol_error, "reason")      \
    BY(refused, connections_refused_total, refusal, "reason")                          \
    X(no_backend_up, route_no_backend_up_total)                                        \
    X(queue_timeouts, queue_timeouts_total)                                            \
    BY(bytes, bytes_total, direction, "direction")                                     \
    X(duration, connection_duration_seconds)                                           \
    X(connect_time, upstream_connect_seconds)

#define SPLICED_BACKEND_SERIES(X, BY)                                                  \
    BY(connect_errors, upstream_connect_errors_total, net::connect_error, "reason")    \
    X(up, backend_up)                                                                  \
    X(active, backend_connections_active)                                              \
    BY(health_checks, health_checks_total, check_result, "result")

#define SPLICED_LISTENER_SERIES(X, BY) X(sni_unmatched, sni_unmatched_total)

#define SPLICED_SERIES_MEMBER(handle, family) metrics::one_of<decltype(metrics::families::family)>::type handle;
#define SPLICED_BY_SERIES_MEMBER(handle, family, enum_type, label) \
    metrics::by<enum_type, typename metrics::one_of<decltype(metrics::families::family)>::type::metric> handle;

// One backend's series (labels: route, backend).
struct backend_metrics {
    SPLICED_BACKEND_SERIES(SPLICED_SERIES_MEMBER, SPLICED_BY_SERIES_MEMBER)
};

// One route's series (label: route), its backends' by index, and what keeps them on /metrics.
struct route_metrics {
    SPLICED_ROUTE_SERIES(SPLICED_SERIES_MEMBER, SPLICED_BY_SERIES_MEMBER)
    std::vector<backend_metrics> backends;
    std::vector<std::shared_ptr<const void>> series;  // the route's group and each backend's
};

// One listen address's series (label: listen, the address as the config writes it).
struct listener_metrics {
    SPLICED_LISTENER_SERIES(SPLICED_SERIES_MEMBER, SPLICED_BY_SERIES_MEMBER)
    std::shared_ptr<const void> series;
};

// The series of `r` and its backends: those these names have already, else new ones at 0.
route_metrics route_series(metrics::registry& registry, const config::route& r);
listener_metrics listener_series(metrics::registry& registry, const std::string& listen);

}  // namespace spliced::proxy
