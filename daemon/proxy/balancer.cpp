// make_balancer() and the client key source_hash uses.
#include "proxy/balancer.hpp"

#include "proxy/balance/algorithms.hpp"

#include <algorithm>

namespace spliced::proxy {

client_key client_key::of(const net::address& addr) {
    client_key k;
    const net::address plain = addr.unmapped();  // an IPv4-mapped address counts as its IPv4 one
    const auto ip = plain.ip();                   // (a view into `plain`, which must outlive it)
    std::copy(ip.begin(), ip.end(), k.bytes.begin());
    k.length = static_cast<std::uint8_t>(ip.size());
    return k;
}

std::unique_ptr<balancer> make_balancer(config::balance_kind kind, std::vector<unsigned> weights,
                                        std::uint64_t seed) {
    switch (kind) {
    case config::balance_kind::least_conn: return std::make_unique<balance::least_connections>();
    case config::balance_kind::random: return std::make_unique<balance::two_random_choices>(seed);
    case config::balance_kind::source_hash: return std::make_unique<balance::maglev_hash>(std::move(weights));
    case config::balance_kind::round_robin:
    default: return std::make_unique<balance::smooth_round_robin>(std::move(weights));
    }
}

}  // namespace spliced::proxy
