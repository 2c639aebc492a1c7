// Every spliced_* family, declared once: one line a family (its type, its member in `families`, its name, its
// help, and the bucket boundaries of a histogram). Which labels its series carry is said where they are made:
// a route's and a backend's series in proxy/route_metrics.hpp, the process-wide ones in registry.cpp.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

namespace spliced::metrics {

// X(type, member, name, help, buckets)
#define SPLICED_FAMILIES(X)                                                                                          \
    X(Counter, connections_total, "spliced_connections_total", "Proxied connections handed to a data path", {})        \
    X(Gauge, connections_active, "spliced_connections_active", "Client connections currently open", {})               \
    X(Counter, sockmap_promotions_total, "spliced_sockmap_promotions_total",                                          \
      "Connections of a datapath auto route moved from splice to sockmap", {})                                        \
    X(Counter, sockmap_fallbacks_total, "spliced_sockmap_fallbacks_total",                                            \
      "Connections meant for sockmap (or an auto promotion) that stayed on splice or copy, by reason", {})             \
    X(Counter, sockmap_demotions_total, "spliced_sockmap_demotions_total",                                            \
      "Sockmap directions moved to userspace copy (peer miss, or the peer fell too far behind what was redirected "   \
      "to it: the egress bound)",                                                                                     \
      {})                                                                                                             \
    X(Counter, proxy_protocol_errors_total, "spliced_proxy_protocol_errors_total",                                    \
      "Client connections closed for a missing or bad PROXY header, by reason", {})                                   \
    X(Counter, sni_unmatched_total, "spliced_sni_unmatched_total",                                                    \
      "Connections to an SNI-routed address that no match.sni took (no TLS, no SNI, too large or no match): sent to " \
      "the default route or closed",                                                                                  \
      {})                                                                                                             \
    X(Counter, connections_refused_total, "spliced_connections_refused_total",                                        \
      "Client connections reset at once, before any backend connect, by reason (acl, source_connections, "           \
      "source_rate, accept_rate)",                                                                                    \
      {})                                                                                                             \
    X(Counter, upstream_connect_errors_total, "spliced_upstream_connect_errors_total",                                \
      "Failed connects to a backend, by reason", {})                                                                  \
    X(Gauge, backend_up, "spliced_backend_up", "1 when the backend is up (health checks, passive accounting), else 0", \
      {})                                                                                                             \
    X(Gauge, backend_connections_active, "spliced_backend_connections_active",                                        \
      "Open connections to the backend, whatever their data path", {})                                                \
    X(Counter, health_checks_total, "spliced_health_checks_total", "Active health checks of the backend, by result",  \
      {})                                                                                                             \
    X(Counter, route_no_backend_up_total, "spliced_route_no_backend_up_total",                                        \
      "Connections that found no backend of their route up (all were tried anyway)", {})                              \
    X(Counter, queue_timeouts_total, "spliced_queue_timeouts_total",                                                  \
      "Connections closed after waiting timeouts.queue for a backend slot (or a route place on a shared listen "      \
      "address)",                                                                                                     \
      {})                                                                                                             \
    X(Counter, bytes_total, "spliced_bytes_total",                                                                    \
      "Payload bytes received from clients (direction=in) and from backends (out); open connections are counted at "  \
      "least every 10 s",                                                                                             \
      {})                                                                                                             \
    X(Histogram, connection_duration_seconds, "spliced_connection_duration_seconds",                                  \
      "How long client connections lasted, accept to close",                                                          \
      ({0.001, 0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400}))                                      \
    X(Histogram, upstream_connect_seconds, "spliced_upstream_connect_seconds", "How long successful backend connects took", \
      ({0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}))               \
    X(Gauge, build_info, "spliced_build_info", "Version of the running spliced", {})                                  \
    X(Counter, config_reloads_total, "spliced_config_reloads_total", "Config reloads (SIGHUP), by result", {})        \
    X(Gauge, config_last_reload_success_timestamp_seconds, "spliced_config_last_reload_success_timestamp_seconds",    \
      "Unix time of the last successful config load (the start, or a reload)", {})

// One member per family, registered in one prometheus::Registry; `X_buckets` are a histogram's boundaries.
struct families {
#define SPLICED_FAMILY_MEMBER(type, member, name, help, buckets)                                                      \
    prometheus::Family<prometheus::type>& member;                                                                     \
    static inline const prometheus::Histogram::BucketBoundaries member##_buckets = std::vector<double> buckets;
    SPLICED_FAMILIES(SPLICED_FAMILY_MEMBER)
#undef SPLICED_FAMILY_MEMBER

    explicit families(prometheus::Registry& r);

private:
    int unused_;  // ends the constructor's generated initializer list
};

}  // namespace spliced::metrics
