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
    std::size_t pick(std::span<const candidate> eligible, const client_key& client) override;

private:
    void rebuild(std::span<const candidate> eligible);

    std::vector<std::pair<std::size_t, unsigned>> built_for_;  // (index, weight) of the table's eligible set
    std::vector<std::uint32_t> table_;                         // slot -> position in that eligible set
};

}  // namespace spliced::proxy::balance
