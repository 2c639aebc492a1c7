// The metrics registry: the families, the series that the config's names label (kept by name across reloads,
// removed with their last user), the process-wide series, extra collectables, and the /metrics endpoint.
#pragma once

#include "config/config.hpp"
#include "metrics/families.hpp"
#include "metrics/handles.hpp"

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace prometheus {
class Collectable;
}

namespace spliced::metrics {

class exposer;

// Makes the series of one key, remembering how to remove each again.
class series_builder {
public:
    template <typename T>
    one<T> one_series(prometheus::Family<T>& f, const prometheus::Labels& labels,
                      const prometheus::Histogram::BucketBoundaries& buckets = {}) {
        T* s;
        if constexpr (std::is_same_v<T, prometheus::Histogram>) s = &f.Add(labels, buckets);
        else s = &f.Add(labels);
        removers_.push_back([&f, s] { f.Remove(s); });
        return {s};
    }
    // One series per value of E, each with `label` set to the value's name.
    template <typename E, typename T>
    by<E, T> by_series(prometheus::Family<T>& f, const prometheus::Labels& labels, const char* label) {
        by<E, T> out;
        for (std::size_t i = 0; i < sys::enum_count<E>; ++i) {
            auto l = labels;
            l.emplace(label, sys::name_of(static_cast<E>(i)));
            out.series[i] = one_series(f, l).series;
        }
        return out;
    }

private:
    template <typename Handles>
    friend struct series_group;
    std::vector<std::function<void()>> removers_;
};

// Which key has which live group of series; see registry::series().
struct series_table {
    std::mutex mutex;
    struct slot {
        std::weak_ptr<const void> owner;
        std::uint64_t serial = 0;
    };
    std::map<std::string, slot> slots;
    std::uint64_t next_serial = 1;
};

// One key's series. The last holder's release removes them from their families, unless the key has a newer
// group by then (the key came back after this one was let go and before it was destroyed: the newer group
// holds the very same series).
template <typename Handles>
struct series_group {
    Handles handles;
    series_builder builder;
    std::shared_ptr<series_table> table;
    std::string key;
    std::uint64_t serial = 0;
    series_group() = default;
    series_group(const series_group&) = delete;
    series_group& operator=(const series_group&) = delete;
    ~series_group() {
        std::lock_guard lock(table->mutex);
        auto it = table->slots.find(key);
        if (it == table->slots.end() || it->second.serial != serial) return;
        table->slots.erase(it);
        for (auto& remove : builder.removers_) remove();
    }
};

class registry {
public:
    registry();
    ~registry();  // after every handle it gave out: their removal uses its families

    metrics::families& families() { return *families_; }

    // The live series of `key`, or new ones (at 0) that `make(builder, handles)` creates; they stay while the
    // returned pointer or a copy lives. Keys name what the labels come from: a route, a route's backend, a
    // listen address.
    template <typename Handles, typename Make>
    std::shared_ptr<const series_group<Handles>> series(const std::string& key, Make make) {
        std::lock_guard lock(table_->mutex);
        auto& s = table_->slots[key];
        if (auto live = s.owner.lock()) return std::static_pointer_cast<const series_group<Handles>>(live);
        auto g = std::make_shared<series_group<Handles>>();
        g->table = table_;
        g->key = key;
        g->serial = table_->next_serial++;
        make(g->builder, g->handles);
        s.owner = g;
        s.serial = g->serial;
        return g;
    }

    // The config loaded at the start: the last-success timestamp.
    void config_loaded();
    // A reload (SIGHUP), counted by result; a success also sets the last-success timestamp.
    void config_reloaded(bool success);
    // Adds a collectable whose series are made at scrape time (BPF counters, process metrics).
    void add_collectable(std::shared_ptr<prometheus::Collectable> c);
    // Serves GET /metrics on the address; throws std::runtime_error when it cannot bind.
    void serve(const net::address& listen);
    // Stops serving (joins the HTTP threads): first thing at stop, before anything a scrape reads goes.
    void stop_serving();

private:
    std::shared_ptr<prometheus::Registry> registry_;
    std::unique_ptr<metrics::families> families_;
    std::shared_ptr<series_table> table_;
    std::shared_ptr<std::vector<std::shared_ptr<prometheus::Collectable>>> collectables_;
    one<prometheus::Counter> reloads_success_, reloads_failure_;
    one<prometheus::Gauge> last_success_;
    std::unique_ptr<exposer> exposer_;
};

}  // namespace spliced::metrics
