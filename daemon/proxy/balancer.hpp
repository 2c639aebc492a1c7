// Backend selection: which of a route's eligible backends a new connection goes to. One balancer per
// route, shared by every worker (the backend pool serialises the calls), so its state is exact.
#pragma once

#include "config/config.hpp"
#include "net/address.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <sys/socket.h>
#include <vector>

namespace spliced::proxy {

// A backend the balancer may choose now: up, weight > 0 and not full.
struct candidate {
    std::size_t index = 0;     // position in the route's backend list (stable for the balancer's life)
    unsigned weight = 1;       // 1..256
    std::uint64_t active = 0;  // its open connections at the moment of the pick
};

// What source_hash keys on: the client's IP address only (4 bytes for IPv4, an IPv4-mapped IPv6
// address counting as IPv4; 16 for IPv6). Empty when unknown.
struct client_key {
    std::array<std::uint8_t, 16> bytes{};
    std::uint8_t length = 0;
    static client_key of(const net::address& addr);
};

class balancer {
public:
    virtual ~balancer() = default;
    // Chooses one of `eligible` (never empty, in ascending index order) and returns its position in
    // `eligible`. Not thread-safe: the caller serialises calls.
    virtual std::size_t pick(std::span<const candidate> eligible, const client_key& client) = 0;
};

// A balancer of `kind` for a route whose backends have `weights` (by index; 0..256). `seed` feeds
// `random` (tests pass a fixed one).
std::unique_ptr<balancer> make_balancer(config::balance_kind kind, std::vector<unsigned> weights,
                                        std::uint64_t seed);

}  // namespace spliced::proxy
