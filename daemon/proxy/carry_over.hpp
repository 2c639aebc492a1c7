// What a reload carries from one route table to the next: state kept by key (a backend by route and
// address, a route's queue and connection limit by route name) for as long as any table, or an open
// connection of one, uses it, so that a key the next table names again finds its state, even when a
// table without it came in between.
#pragma once

#include "proxy/admission.hpp"
#include "proxy/backend_pool.hpp"

#include <map>
#include <memory>
#include <string>

namespace spliced::proxy {

// The live state of each key. Used from one thread (where route tables are built).
template <typename T>
class keyed_states {
public:
    // The state of `key` if some user still holds it, else `make()`'s.
    template <typename Make>
    std::shared_ptr<T> get(const std::string& key, Make make) {
        auto& known = states_[key];
        if (auto live = known.lock()) return live;
        auto fresh = make();
        known = fresh;
        return fresh;
    }
    // Forgets the keys nobody uses any more.
    void prune() { std::erase_if(states_, [](const auto& kv) { return kv.second.expired(); }); }

private:
    std::map<std::string, std::weak_ptr<T>> states_;
};

struct carry_over {
    keyed_states<backend_state> backends;  // by backend_key()
    keyed_states<backend_queue> queues;    // by route name
    keyed_states<admission> admissions;    // by route name

    static std::string backend_key(const std::string& route, const std::string& address) {
        return route + '\n' + address;
    }
    void prune() {
        backends.prune();
        queues.prune();
        admissions.prune();
    }
};

}  // namespace spliced::proxy
