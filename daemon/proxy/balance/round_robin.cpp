// Smooth weighted round robin: each pick adds every eligible backend's weight to its running score,
// takes the highest score (the lowest index on a tie) and takes the eligible total off it. Over any
// run of picks with a fixed eligible set, each backend gets its weight's share, evenly spread
// (weights 5:1:1 give a a b a c a a, not a a a a a b c).
#include "proxy/balance/algorithms.hpp"

namespace spliced::proxy::balance {

smooth_round_robin::smooth_round_robin(std::vector<unsigned> weights) : score_(weights.size(), 0) {}

std::size_t smooth_round_robin::pick(std::span<const candidate> eligible, const client_key&) {
    std::int64_t total = 0;
    std::size_t best = 0;
    for (std::size_t i = 0; i < eligible.size(); ++i) {
        auto& s = score_[eligible[i].index];
        s += eligible[i].weight;
        total += eligible[i].weight;
        if (s > score_[eligible[best].index]) best = i;
    }
    score_[eligible[best].index] -= total;
    return best;
}

}  // namespace spliced::proxy::balance
