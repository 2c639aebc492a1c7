// Prometheus metrics: the one table of spliced_* families, per-route handles, and the /metrics endpoint.
#include "metrics/metrics.hpp"

#include "metrics/exposer.hpp"
#include "metrics/process.hpp"
#include "proxy/proxy_protocol.hpp"

#include <chrono>
#include <map>
#include <mutex>
#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <sstream>
#include <stdexcept>

namespace spliced::metrics {

const char* to_string(connect_error e) {
    switch (e) {
    case connect_error::refused: return "refused";
    case connect_error::timeout: return "timeout";
    case connect_error::unreachable: return "unreachable";
    case connect_error::other: return "other";
    case connect_error::local: return "local";
    }
    return "other";
}

void listener_metrics::unmatched() const { sni_unmatched->Increment(); }

void route_metrics::connection_opened() const { active->Increment(); }

void route_metrics::connection_handed_off(datapath::kind k) const {
    connections[static_cast<std::size_t>(k)]->Increment();
}

void route_metrics::connection_closed() const { active->Decrement(); }

void route_metrics::promoted() const { promotions->Increment(); }

void route_metrics::demoted() const { demotions->Increment(); }

void route_metrics::sockmap_fallback(datapath::fallback_reason why) const {
    sockmap_fallbacks[static_cast<std::size_t>(why)]->Increment();
}

static_assert(proxy_error_count == static_cast<std::size_t>(proxy::proxy_protocol_error::closed) + 1,
              "one series per PROXY error reason");

void route_metrics::proxy_protocol_failed(std::size_t reason) const { proxy_errors.at(reason)->Increment(); }

void route_metrics::connect_failed(std::size_t backend, connect_error e) const {
    backends.at(backend).connect_errors[static_cast<std::size_t>(e)]->Increment();
}

void route_metrics::backend_state(std::size_t backend, bool up, std::uint64_t open) const {
    backends.at(backend).up->Set(up ? 1 : 0);
    backends.at(backend).active->Set(static_cast<double>(open));
}

void route_metrics::health_checked(std::size_t backend, bool passed) const {
    backends.at(backend).health_checks[passed ? 1 : 0]->Increment();
}

void route_metrics::no_backend_up() const { no_backend_up_total->Increment(); }

void route_metrics::queue_timeout() const { queue_timeouts->Increment(); }

void route_metrics::add_bytes(std::uint64_t in, std::uint64_t out) const {
    if (in) bytes_in->Increment(static_cast<double>(in));
    if (out) bytes_out->Increment(static_cast<double>(out));
}

void route_metrics::connection_ended(double seconds) const { duration->Observe(seconds); }

void route_metrics::connected(double seconds) const { connect_time->Observe(seconds); }

// Every spliced_* family, declared once.
struct registry::families {
    prometheus::Family<prometheus::Counter>& connections_total;
    prometheus::Family<prometheus::Gauge>& connections_active;
    prometheus::Family<prometheus::Counter>& upstream_connect_errors_total;
    prometheus::Family<prometheus::Gauge>& build_info;
    prometheus::Family<prometheus::Counter>& sockmap_promotions_total;
    prometheus::Family<prometheus::Counter>& sockmap_fallbacks_total;
    prometheus::Family<prometheus::Counter>& sockmap_demotions_total;
    prometheus::Family<prometheus::Counter>& proxy_protocol_errors_total;
    prometheus::Family<prometheus::Counter>& sni_unmatched_total;
    prometheus::Family<prometheus::Gauge>& backend_up;
    prometheus::Family<prometheus::Gauge>& backend_connections_active;
    prometheus::Family<prometheus::Counter>& health_checks_total;
    prometheus::Family<prometheus::Counter>& route_no_backend_up_total;
    prometheus::Family<prometheus::Counter>& queue_timeouts_total;
    prometheus::Family<prometheus::Counter>& bytes_total;
    prometheus::Family<prometheus::Histogram>& connection_duration_seconds;
    prometheus::Family<prometheus::Histogram>& upstream_connect_seconds;
    prometheus::Family<prometheus::Counter>& config_reloads_total;
    prometheus::Family<prometheus::Gauge>& config_last_reload_success_timestamp_seconds;

    explicit families(prometheus::Registry& r)
        : connections_total(prometheus::BuildCounter()
                                .Name("spliced_connections_total")
                                .Help("Proxied connections handed to a data path")
                                .Register(r)),
          connections_active(prometheus::BuildGauge()
                                 .Name("spliced_connections_active")
                                 .Help("Client connections currently open")
                                 .Register(r)),
          upstream_connect_errors_total(prometheus::BuildCounter()
                                            .Name("spliced_upstream_connect_errors_total")
                                            .Help("Failed connects to a backend, by reason")
                                            .Register(r)),
          build_info(prometheus::BuildGauge()
                         .Name("spliced_build_info")
                         .Help("Version of the running spliced")
                         .Register(r)),
          sockmap_promotions_total(prometheus::BuildCounter()
                                       .Name("spliced_sockmap_promotions_total")
                                       .Help("Connections of a datapath auto route moved from splice to sockmap")
                                       .Register(r)),
          sockmap_fallbacks_total(prometheus::BuildCounter()
                                      .Name("spliced_sockmap_fallbacks_total")
                                      .Help("Connections meant for sockmap (or an auto promotion) that stayed on "
                                            "splice or copy, by reason")
                                      .Register(r)),
          sockmap_demotions_total(prometheus::BuildCounter()
                                      .Name("spliced_sockmap_demotions_total")
                                      .Help("Sockmap directions moved to userspace copy (peer miss, or the peer fell "
                                            "too far behind what was redirected to it: the egress bound)")
                                      .Register(r)),
          proxy_protocol_errors_total(prometheus::BuildCounter()
                                          .Name("spliced_proxy_protocol_errors_total")
                                          .Help("Client connections closed for a missing or bad PROXY header, by reason")
                                          .Register(r)),
          sni_unmatched_total(prometheus::BuildCounter()
                                  .Name("spliced_sni_unmatched_total")
                                  .Help("Connections to an SNI-routed address that no match.sni took (no TLS, no "
                                        "SNI, too large or no match): sent to the default route or closed")
                                  .Register(r)),
          backend_up(prometheus::BuildGauge()
                         .Name("spliced_backend_up")
                         .Help("1 when the backend is up (health checks, passive accounting), else 0")
                         .Register(r)),
          backend_connections_active(prometheus::BuildGauge()
                                         .Name("spliced_backend_connections_active")
                                         .Help("Open connections to the backend, whatever their data path")
                                         .Register(r)),
          health_checks_total(prometheus::BuildCounter()
                                  .Name("spliced_health_checks_total")
                                  .Help("Active health checks of the backend, by result")
                                  .Register(r)),
          route_no_backend_up_total(prometheus::BuildCounter()
                                        .Name("spliced_route_no_backend_up_total")
                                        .Help("Connections that found no backend of their route up (all were "
                                              "tried anyway)")
                                        .Register(r)),
          queue_timeouts_total(prometheus::BuildCounter()
                                   .Name("spliced_queue_timeouts_total")
                                   .Help("Connections closed after waiting timeouts.queue for a backend slot (or "
                                         "a route place on a shared listen address)")
                                   .Register(r)),
          bytes_total(prometheus::BuildCounter()
                          .Name("spliced_bytes_total")
                          .Help("Payload bytes received from clients (direction=in) and from backends (out); open "
                                "connections are counted at least every 10 s")
                          .Register(r)),
          connection_duration_seconds(prometheus::BuildHistogram()
                                          .Name("spliced_connection_duration_seconds")
                                          .Help("How long client connections lasted, accept to close")
                                          .Register(r)),
          upstream_connect_seconds(prometheus::BuildHistogram()
                                       .Name("spliced_upstream_connect_seconds")
                                       .Help("How long successful backend connects took")
                                       .Register(r)),
          config_reloads_total(prometheus::BuildCounter()
                                   .Name("spliced_config_reloads_total")
                                   .Help("Config reloads (SIGHUP), by result")
                                   .Register(r)),
          config_last_reload_success_timestamp_seconds(
              prometheus::BuildGauge()
                  .Name("spliced_config_last_reload_success_timestamp_seconds")
                  .Help("Unix time of the last successful config load (the start, or a reload)")
                  .Register(r)) {}
};

// Counters whose value lives elsewhere (BPF maps) and is read when scraped.
struct registry::sampled : prometheus::Collectable {
    struct entry {
        std::string name, help;
        std::function<double()> value;
        prometheus::MetricType type = prometheus::MetricType::Counter;
    };
    mutable std::mutex mutex;
    std::vector<entry> entries;

    std::vector<prometheus::MetricFamily> Collect() const override {
        std::lock_guard lock(mutex);
        std::vector<prometheus::MetricFamily> out;
        for (const auto& e : entries) {
            prometheus::MetricFamily f;
            f.name = e.name;
            f.help = e.help;
            f.type = e.type;
            prometheus::ClientMetric m;
            if (e.type == prometheus::MetricType::Counter) m.counter.value = e.value();
            else m.gauge.value = e.value();
            f.metric.push_back(std::move(m));
            out.push_back(std::move(f));
        }
        return out;
    }
};

// The series whose labels come from the config, by key (a route name, a route and a backend address, a
// listen address): one group of handles per key while anything holds it. The last holder's release
// removes the series from their families, unless the key has a newer group by then (the key came back
// after its group was let go and before it was destroyed: the newer group holds the very same series).
struct registry::interned {
    std::mutex mutex;
    struct slot {
        std::weak_ptr<const void> owner;
        std::uint64_t serial = 0;
    };
    std::map<std::string, slot> slots;
    std::uint64_t next_serial = 1;

    template <typename Handles>
    struct group {
        Handles handles;
        std::vector<std::function<void()>> removers;
        std::shared_ptr<interned> table;
        std::string key;
        std::uint64_t serial = 0;
        group() = default;
        group(const group&) = delete;
        group& operator=(const group&) = delete;
        ~group() {
            std::lock_guard lock(table->mutex);
            auto it = table->slots.find(key);
            if (it == table->slots.end() || it->second.serial != serial) return;
            table->slots.erase(it);
            for (auto& remove : removers) remove();
        }
    };

    // The live group of `key`, or a new one whose series `add(group&)` creates.
    template <typename Handles, typename Add>
    static std::shared_ptr<const group<Handles>> intern(const std::shared_ptr<interned>& self, const std::string& key,
                                                        Add add) {
        std::lock_guard lock(self->mutex);
        auto& s = self->slots[key];
        if (auto live = s.owner.lock()) return std::static_pointer_cast<const group<Handles>>(live);
        auto g = std::make_shared<group<Handles>>();
        g->table = self;
        g->key = key;
        g->serial = self->next_serial++;
        add(*g);
        s.owner = g;
        s.serial = g->serial;
        return g;
    }
};

namespace {

// f.Add(labels, more...), remembering how to remove it again.
template <typename T, typename... More>
T* add_series(std::vector<std::function<void()>>& removers, prometheus::Family<T>& f, const prometheus::Labels& labels,
              More&&... more) {
    T* m = &f.Add(labels, std::forward<More>(more)...);
    removers.push_back([&f, m] { f.Remove(m); });
    return m;
}

}  // namespace

registry::registry()
    : registry_(std::make_shared<prometheus::Registry>()),
      families_(std::make_unique<families>(*registry_)),
      sampled_(std::make_shared<sampled>()),
      interned_(std::make_shared<interned>()),
      process_(make_process_collectable()) {
    families_->build_info.Add({{"version", SPLICED_VERSION}}).Set(1);
    families_->config_reloads_total.Add({{"result", "success"}});
    families_->config_reloads_total.Add({{"result", "failure"}});
    families_->config_last_reload_success_timestamp_seconds.Add({});
}

void registry::config_loaded(bool reload, bool success) {
    if (reload) families_->config_reloads_total.Add({{"result", success ? "success" : "failure"}}).Increment();
    if (success)
        families_->config_last_reload_success_timestamp_seconds.Add({}).Set(
            std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
}

registry::~registry() = default;

route_metrics registry::add_route(const config::route& r) {
    auto& f = *families_;
    auto route = interned::intern<route_metrics>(interned_, "route\n" + r.name, [&](auto& g) {
        auto& m = g.handles;
        auto& rm = g.removers;
        for (auto k : {datapath::kind::sockmap, datapath::kind::splice, datapath::kind::copy})
            m.connections[static_cast<std::size_t>(k)] =
                add_series(rm, f.connections_total, {{"route", r.name}, {"datapath", datapath::to_string(k)}});
        m.active = add_series(rm, f.connections_active, {{"route", r.name}});
        m.promotions = add_series(rm, f.sockmap_promotions_total, {{"route", r.name}});
        m.demotions = add_series(rm, f.sockmap_demotions_total, {{"route", r.name}});
        for (std::size_t i = 0; i < proxy_error_count; ++i) {
            const auto reason = proxy::to_string(static_cast<proxy::proxy_protocol_error>(i));
            m.proxy_errors[i] =
                add_series(rm, f.proxy_protocol_errors_total, {{"route", r.name}, {"reason", std::string(reason)}});
        }
        for (std::size_t i = 0; i < datapath::fallback_reason_count; ++i)
            m.sockmap_fallbacks[i] =
                add_series(rm, f.sockmap_fallbacks_total,
                           {{"route", r.name}, {"reason", datapath::to_string(static_cast<datapath::fallback_reason>(i))}});
        m.no_backend_up_total = add_series(rm, f.route_no_backend_up_total, {{"route", r.name}});
        m.bytes_in = add_series(rm, f.bytes_total, {{"route", r.name}, {"direction", "in"}});
        m.bytes_out = add_series(rm, f.bytes_total, {{"route", r.name}, {"direction", "out"}});
        m.duration = add_series(rm, f.connection_duration_seconds, {{"route", r.name}},
                                prometheus::Histogram::BucketBoundaries{0.001, 0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900,
                                                                        3600, 14400, 86400});
        m.connect_time = add_series(rm, f.upstream_connect_seconds, {{"route", r.name}},
                                    prometheus::Histogram::BucketBoundaries{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                                            0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5});
        m.queue_timeouts = add_series(rm, f.queue_timeouts_total, {{"route", r.name}});
    });
    route_metrics m = route->handles;
    m.series.push_back(route);
    for (const auto& b : r.backends) {
        auto backend = interned::intern<backend_metrics>(
            interned_, "backend\n" + r.name + "\n" + b.addr.text, [&](auto& g) {
                auto& m = g.handles;
                auto& rm = g.removers;
                const prometheus::Labels labels{{"route", r.name}, {"backend", b.addr.text}};
                auto with = [&](const char* name, const char* value) {
                    auto l = labels;
                    l.emplace(name, value);
                    return l;
                };
                for (std::size_t i = 0; i < connect_error_count; ++i)
                    m.connect_errors[i] = add_series(rm, f.upstream_connect_errors_total,
                                                     with("reason", to_string(static_cast<connect_error>(i))));
                m.up = add_series(rm, f.backend_up, labels);
                m.active = add_series(rm, f.backend_connections_active, labels);
                m.health_checks = {add_series(rm, f.health_checks_total, with("result", "failure")),
                                   add_series(rm, f.health_checks_total, with("result", "success"))};
            });
        m.backends.push_back(backend->handles);
        m.series.push_back(std::move(backend));
    }
    return m;
}

listener_metrics registry::add_listener(const std::string& listen) {
    auto& f = *families_;
    auto group = interned::intern<listener_metrics>(interned_, "listen\n" + listen, [&](auto& g) {
        g.handles.sni_unmatched = add_series(g.removers, f.sni_unmatched_total, {{"listen", listen}});
    });
    listener_metrics m = group->handles;
    m.series = std::move(group);
    return m;
}

void registry::add_sampled_counter(const std::string& name, const std::string& help, std::function<double()> value) {
    std::lock_guard lock(sampled_->mutex);
    sampled_->entries.push_back({name, help, std::move(value)});
}

void registry::add_sampled_gauge(const std::string& name, const std::string& help, std::function<double()> value) {
    std::lock_guard lock(sampled_->mutex);
    sampled_->entries.push_back({name, help, std::move(value), prometheus::MetricType::Gauge});
}

void registry::serve(const config::address& listen) {
    // Serialized on the endpoint's thread at each scrape.
    auto body = [registry = registry_, sampled = sampled_, process = process_] {
        std::vector<prometheus::MetricFamily> families = registry->Collect();
        const std::array<const prometheus::Collectable*, 2> more{sampled.get(), process.get()};
        for (const auto* c : more)
            for (auto& f : c->Collect()) families.push_back(std::move(f));
        std::ostringstream out;
        prometheus::TextSerializer().Serialize(out, families);
        return out.str();
    };
    exposer_ = std::make_unique<exposer>(listen, std::move(body));
}

void registry::stop_serving() { exposer_.reset(); }

}  // namespace spliced::metrics
