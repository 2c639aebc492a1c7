// Prometheus metrics: the one table of spliced_* families, per-route handles, and the /metrics endpoint.
#pragma once

#include "config/config.hpp"
#include "datapath/datapath.hpp"

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
class Collectable;
class Registry;
}  // namespace prometheus

namespace spliced::metrics {

class exposer;

// Why an upstream connect failed (the `reason` label). `local`: spliced could not open the socket
// (out of descriptors or socket memory) within the connect timeout; no backend was at fault.
enum class connect_error { refused, timeout, unreachable, other, local };
inline constexpr std::size_t connect_error_count = 5;
const char* to_string(connect_error e);

// Why a connection's preamble failed (the `reason` label of spliced_proxy_protocol_errors_total): the
// values of proxy::proxy_protocol_error, in its order.
inline constexpr std::size_t proxy_error_count = 7;

// Handles of one listen address's series.
struct listener_metrics {
    prometheus::Counter* sni_unmatched = nullptr;  // connections no match.sni took (default route or closed)
    std::shared_ptr<const void> series;            // keeps them on /metrics while a copy of this lives
    void unmatched() const;
};

// Handles of one backend's series (labels: its route and address).
struct backend_metrics {
    std::array<prometheus::Counter*, connect_error_count> connect_errors{};  // by connect_error
    prometheus::Gauge* up = nullptr;
    prometheus::Gauge* active = nullptr;
    std::array<prometheus::Counter*, 2> health_checks{};  // [failure, success]
};

// Handles of one route's series. A route's and each backend's series are kept by the config's names: a
// reload that keeps a name gets the same series; one that drops it removes them from /metrics once the
// last copy of these handles (its route table, its last open connection) is gone.
struct route_metrics {
    std::array<prometheus::Counter*, 3> connections{};  // by datapath::kind
    prometheus::Gauge* active = nullptr;
    prometheus::Counter* promotions = nullptr;
    prometheus::Counter* demotions = nullptr;
    std::array<prometheus::Counter*, datapath::fallback_reason_count> sockmap_fallbacks{};
    std::array<prometheus::Counter*, proxy_error_count> proxy_errors{};
    std::vector<backend_metrics> backends;  // by backend index
    prometheus::Counter* no_backend_up_total = nullptr;
    prometheus::Counter* queue_timeouts = nullptr;
    prometheus::Counter* bytes_in = nullptr;   // payload from clients
    prometheus::Counter* bytes_out = nullptr;  // payload from backends
    prometheus::Histogram* duration = nullptr;
    prometheus::Histogram* connect_time = nullptr;
    std::vector<std::shared_ptr<const void>> series;  // the route's and each backend's: see above

    void connection_opened() const;
    void connection_handed_off(datapath::kind k) const;
    void connection_closed() const;
    void promoted() const;  // a splice connection moved to sockmap
    void demoted() const;   // a sockmap direction moved to userspace copy
    void sockmap_fallback(datapath::fallback_reason why) const;  // stayed off sockmap
    void connect_failed(std::size_t backend, connect_error e) const;
    void proxy_protocol_failed(std::size_t reason) const;  // a proxy::proxy_protocol_error
    void backend_state(std::size_t backend, bool up, std::uint64_t active) const;
    void health_checked(std::size_t backend, bool passed) const;
    void no_backend_up() const;  // a connection found no backend up
    void queue_timeout() const;  // a connection waited timeouts.queue for a backend slot in vain
    void add_bytes(std::uint64_t in, std::uint64_t out) const;
    void connection_ended(double seconds) const;
    void connected(double seconds) const;  // an upstream connect that succeeded, and how long it took
};

class registry {
public:
    registry();
    ~registry();
    // Every series of a route: those it already has (by route name and backend address), else new ones at 0.
    route_metrics add_route(const config::route& r);
    // The series of a listen address ("listen" label: the address as the config writes it), likewise.
    listener_metrics add_listener(const std::string& listen);
    // A config load: the start (success only) or a reload (SIGHUP), counted by result; a success also
    // sets the last-success timestamp.
    void config_loaded(bool reload, bool success);
    // Exposes `value()` as a counter (or a gauge) sampled at scrape time (e.g. BPF per-CPU sums).
    void add_sampled_counter(const std::string& name, const std::string& help, std::function<double()> value);
    void add_sampled_gauge(const std::string& name, const std::string& help, std::function<double()> value);
    // Serves GET /metrics on the address; throws std::runtime_error when it cannot bind.
    void serve(const config::address& listen);
    // Stops serving (joins the HTTP threads): first thing at stop, before anything a scrape reads goes.
    void stop_serving();

private:
    std::shared_ptr<prometheus::Registry> registry_;
    std::unique_ptr<exposer> exposer_;
    struct families;
    std::unique_ptr<families> families_;
    struct sampled;
    std::shared_ptr<sampled> sampled_;
    struct interned;
    std::shared_ptr<interned> interned_;
    std::shared_ptr<prometheus::Collectable> process_;
};

}  // namespace spliced::metrics
