// Power of two random choices: draw two distinct eligible backends, each with probability proportional to
// its weight, and take the less loaded (open connections per unit of weight). Close to least connections
// in effect, without every pick of a burst landing on the same momentarily least loaded backend.
#include "proxy/balance/algorithms.hpp"

namespace spliced::proxy::balance {

namespace {

// The position in `eligible` that `ticket` (0 .. total weight, less the skipped one's, exclusive) falls on.
std::size_t by_weight(std::span<const candidate> eligible, std::uint64_t ticket, std::size_t skip) {
    for (std::size_t i = 0;; ++i) {
        if (i == skip) continue;
        if (ticket < eligible[i].weight) return i;
        ticket -= eligible[i].weight;
    }
}

}  // namespace

two_random_choices::two_random_choices(std::uint64_t seed) : state_(seed) {}

std::uint64_t two_random_choices::next() {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// Uniform in [0, bound) by multiply-shift; the bias is below bound / 2^64, nothing at these bounds.
std::uint64_t two_random_choices::below(std::uint64_t bound) {
    return static_cast<std::uint64_t>((static_cast<unsigned __int128>(next()) * bound) >> 64);
}

std::size_t two_random_choices::pick(std::span<const candidate> eligible, const client_key&) {
    if (eligible.size() == 1) return 0;
    std::uint64_t total = 0;
    for (const auto& c : eligible) total += c.weight;
    const std::size_t first = by_weight(eligible, below(total), eligible.size());
    const std::size_t second = by_weight(eligible, below(total - eligible[first].weight), first);
    const auto& a = eligible[first];
    const auto& b = eligible[second];
    // Exact a.active/a.weight vs b.active/b.weight (weights <= 256). A tie keeps the first drawn: it was
    // drawn by weight, so equal loads share out by weight. Preferring the heavier on a tie would not:
    // at 1:2:3 with nothing open, the heaviest would win every pair it is in, about 85% of picks.
    return b.active * a.weight < a.active * b.weight ? second : first;
}

}  // namespace spliced::proxy::balance
