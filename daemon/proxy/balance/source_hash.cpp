// Source hash: consistent hashing of the client's address over a Maglev lookup table (Eisenbud et al.,
// NSDI 2016), so a client keeps its backend, and when the eligible set changes only about the share of
// the backend that came or went moves. Weighted: a backend of weight w takes w slots per round of the
// table's population, so its share of the table, and of clients, follows its weight.
#include "proxy/balance/algorithms.hpp"

namespace spliced::proxy::balance {

namespace {

// Prime, so every skip in 1..size-1 walks all the slots; large against the backend count, so shares
// are within a fraction of a percent of the weights and few keys move beyond the minimum.
constexpr std::uint32_t table_size = 65537;
constexpr std::uint32_t unfilled = UINT32_MAX;

// MurmurHash3's 64-bit finalizer: every input bit reaches every output bit.
std::uint64_t mix(std::uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 33);
}

// FNV-1a over the address bytes, then mixed: FNV-1a alone spreads its last byte weakly (a multiply only
// carries upwards), and neighbouring addresses are what a client population is made of. Fixed constants, so the
// mapping is the same in every process and on every run.
std::uint64_t key_hash(const client_key& key) {
    std::uint64_t h = 0xcbf29ce484222325ULL;
    for (std::size_t i = 0; i < key.length; ++i) {
        h ^= key.bytes[i];
        h *= 0x100000001b3ULL;
    }
    return mix(h);
}

}  // namespace

// A backend's identity is its index in the route's list, so its permutation of the slots is the same
// whichever other backends are eligible; that is what keeps the others' slots in place on a change.
void maglev_hash::rebuild(std::span<const candidate> eligible) {
    built_for_.clear();
    for (const auto& c : eligible) built_for_.emplace_back(c.index, c.weight);

    std::vector<std::uint32_t> slot(eligible.size());  // each backend's next slot in its permutation
    std::vector<std::uint32_t> skip(eligible.size());
    for (std::size_t i = 0; i < eligible.size(); ++i) {
        slot[i] = static_cast<std::uint32_t>(mix(eligible[i].index ^ 0x6a09e667f3bcc908ULL) % table_size);
        skip[i] = static_cast<std::uint32_t>(mix(eligible[i].index ^ 0xbb67ae8584caa73bULL) % (table_size - 1)) + 1;
    }
    table_.assign(table_size, unfilled);
    std::uint32_t filled = 0;
    for (;;) {
        for (std::size_t i = 0; i < eligible.size(); ++i) {
            for (unsigned turn = 0; turn < eligible[i].weight; ++turn) {
                while (table_[slot[i]] != unfilled) slot[i] = (slot[i] + skip[i]) % table_size;
                table_[slot[i]] = static_cast<std::uint32_t>(i);
                if (++filled == table_size) return;
            }
        }
    }
}

std::size_t maglev_hash::pick(std::span<const candidate> eligible, const client_key& client) {
    if (eligible.size() == 1) return 0;
    bool same = eligible.size() == built_for_.size();
    for (std::size_t i = 0; same && i < eligible.size(); ++i)
        same = built_for_[i] == std::pair{eligible[i].index, eligible[i].weight};
    if (!same) rebuild(eligible);
    return table_[key_hash(client) % table_size];
}

}  // namespace spliced::proxy::balance
