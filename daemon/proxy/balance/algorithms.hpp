// The balancing algorithms behind make_balancer(); one file each.
#pragma once

#include "proxy/balancer.hpp"

#include <cstdint>
#include <utility>
#include <vector>

namespace spliced::proxy::balance {

class smooth_round_robin final : public balancer {
public:
    explicit smooth_round_robin(std::vector<unsigned> weights);
    std::size_t pick(std::span<const candidate> eligible, const client_key& client) override;

private:
    std::vector<std::int64_t> score_;  // by backend index
};

class least_connections final : public balancer {
public:
    std::size_t pick(std::span<const candidate> eligible, const client_key& client) override;

private:
    std::size_t cursor_ = 0;  // backend index the next tie starts looking at
};

class two_random_choices final : public balancer {
public:
    explicit two_random_choices(std::uint64_t seed);
    std::size_t pick(std::span<const candidate> eligible, const client_key& client) override;

private:
    std::uint64_t next();  // splitmix64
    std::uint64_t below(std::uint64_t bound);

    std::uint64_t state_;
};

class maglev_hash final : public balancer {
public:
    // `weights`: every backend of the route, by index (0: no slots).
    explicit maglev_hash(std::vector<unsigned> weights);
    std::size_t pick(std::span<const candidate> eligible, const client_key& client) override;

private:
    void rebuild();

    std::vector<unsigned> weights_;     // by backend index: what the table was built for
    std::vector<std::uint32_t> table_;  // slot -> backend index; empty when no backend has weight
};

}  // namespace spliced::proxy::balance
