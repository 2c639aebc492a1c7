// The balancing algorithms behind make_balancer(); one file each.
#pragma once

#include "proxy/balancer.hpp"

#include <cstdint>
#include <vector>

namespace spliced::proxy::balance {

class smooth_round_robin final : public balancer {
public:
    explicit smooth_round_robin(std::vector<unsigned> weights);
    std::size_t pick(std::span<const candidate> eligible, const client_key& client) override;

private:
    std::vector<std::int64_t> score_;  // by backend index
};

}  // namespace spliced::proxy::balance
