// make_balancer() and the client key source_hash uses.
#include "proxy/balancer.hpp"

#include "proxy/balance/algorithms.hpp"

#include <cstring>
#include <netinet/in.h>

namespace spliced::proxy {

client_key client_key::of(const sockaddr* addr) {
    client_key k;
    if (!addr) return k;
    if (addr->sa_family == AF_INET) {
        const auto* in = reinterpret_cast<const sockaddr_in*>(addr);
        std::memcpy(k.bytes.data(), &in->sin_addr, 4);
        k.length = 4;
    } else if (addr->sa_family == AF_INET6) {
        const auto* in6 = reinterpret_cast<const sockaddr_in6*>(addr);
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            std::memcpy(k.bytes.data(), in6->sin6_addr.s6_addr + 12, 4);
            k.length = 4;
        } else {
            std::memcpy(k.bytes.data(), in6->sin6_addr.s6_addr, 16);
            k.length = 16;
        }
    }
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
