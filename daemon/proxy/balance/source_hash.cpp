// Source hash: consistent hashing of the client's address over a Maglev lookup table (Eisenbud et al.,
// NSDI 2016), so a client keeps its backend. The table is built once for every backend of the route (by
// weight: a backend of weight w takes w slots per round of the table's population, so its share of the
// table, and of clients, follows its weight); a backend that is not eligible now (down, full, already
// tried) is skipped by walking on to the next slot, so only its own clients move, spread over the others
// by their shares, and nothing is rebuilt per connection.
#include "proxy/balance/algorithms.hpp"

#include <algorithm>
#include <optional>

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

// The position of backend `index` in `eligible` (ascending by index), if it is there.
std::optional<std::size_t> position_of(std::span<const candidate> eligible, std::uint32_t index) {
    auto it = std::lower_bound(eligible.begin(), eligible.end(), index,
                               [](const candidate& c, std::uint32_t i) { return c.index < i; });
    if (it == eligible.end() || it->index != index) return std::nullopt;
    return static_cast<std::size_t>(it - eligible.begin());
}

}  // namespace

maglev_hash::maglev_hash(std::vector<unsigned> weights) : weights_(std::move(weights)) { rebuild(); }

// A backend's identity is its index in the route's list, so its permutation of the slots depends on
// nothing else: the table is the same in every process that reads the same config.
void maglev_hash::rebuild() {
    table_.clear();
    std::uint64_t total = 0;
    for (auto w : weights_) total += w;
    if (total == 0) return;
    std::vector<std::uint32_t> slot(weights_.size());  // each backend's next slot in its permutation
    std::vector<std::uint32_t> skip(weights_.size());
    for (std::size_t i = 0; i < weights_.size(); ++i) {
        slot[i] = static_cast<std::uint32_t>(mix(i ^ 0x6a09e667f3bcc908ULL) % table_size);
        skip[i] = static_cast<std::uint32_t>(mix(i ^ 0xbb67ae8584caa73bULL) % (table_size - 1)) + 1;
    }
    table_.assign(table_size, unfilled);
    std::uint32_t filled = 0;
    for (;;) {
        for (std::size_t i = 0; i < weights_.size(); ++i) {
            for (unsigned turn = 0; turn < weights_[i]; ++turn) {
                while (table_[slot[i]] != unfilled) slot[i] = (slot[i] + skip[i]) % table_size;
                table_[slot[i]] = static_cast<std::uint32_t>(i);
                if (++filled == table_size) return;
            }
        }
    }
}

std::size_t maglev_hash::pick(std::span<const candidate> eligible, const client_key& client) {
    if (eligible.size() == 1) return 0;
    // A backend's weight differs from the table's only when the route's weights changed (never per
    // connection): then, and only then, the table is built again.
    bool changed = false;
    for (const auto& c : eligible) {
        if (c.index >= weights_.size()) weights_.resize(c.index + 1, 0);
        if (weights_[c.index] != c.weight) {
            weights_[c.index] = c.weight;
            changed = true;
        }
    }
    if (changed) rebuild();
    const std::uint64_t h = key_hash(client);
    if (!table_.empty()) {
        // Walking on from the client's slot: the first slot whose backend is eligible. Every eligible
        // backend has weight > 0 and so slots, unless the route has more weight than the table has slots.
        std::uint32_t slot = static_cast<std::uint32_t>(h % table_size);
        for (std::uint32_t step = 0; step < table_size; ++step) {
            if (auto at = position_of(eligible, table_[slot])) return *at;
            slot = slot + 1 == table_size ? 0 : slot + 1;
        }
    }
    return static_cast<std::size_t>(h % eligible.size());
}

}  // namespace spliced::proxy::balance
