// The balancing algorithms' picks (shares, order, stickiness) and the kernel-floor rule.
#include "datapath/probe.hpp"
#include "proxy/balancer.hpp"

#include <catch2/catch.hpp>
#include <cstring>
#include <iostream>
#include <netinet/in.h>
#include <vector>

using namespace spliced::proxy;
using spliced::config::balance_kind;

namespace {

// Every backend of `weights` eligible, none with a connection open.
std::vector<candidate> pool(const std::vector<unsigned>& weights) {
    std::vector<candidate> out;
    for (std::size_t i = 0; i < weights.size(); ++i) out.push_back({i, weights[i], 0});
    return out;
}

// Only the backends of `indices` (ascending) eligible.
std::vector<candidate> subset(const std::vector<unsigned>& weights, std::vector<std::size_t> indices) {
    std::vector<candidate> out;
    for (auto i : indices) out.push_back({i, weights[i], 0});
    return out;
}

// The backend index `b` picks from `eligible`.
std::size_t pick_index(balancer& b, const std::vector<candidate>& eligible, const client_key& key = {}) {
    const std::size_t pos = b.pick(eligible, key);
    REQUIRE(pos < eligible.size());
    return eligible[pos].index;
}

client_key v4(std::uint8_t a, std::uint8_t b, std::uint8_t c, std::uint8_t d) {
    client_key k;
    k.bytes = {a, b, c, d};
    k.length = 4;
    return k;
}

// 10.0.0.0 onwards: neighbouring addresses, the hard case for a hash.
client_key client(std::uint32_t i) { return v4(10, i >> 16, i >> 8, i); }

// 2001:db8::<i>.
client_key v6(std::uint32_t i) {
    client_key k;
    k.bytes = {0x20, 0x01, 0x0d, 0xb8};
    k.bytes[12] = i >> 24;
    k.bytes[13] = i >> 16;
    k.bytes[14] = i >> 8;
    k.bytes[15] = i;
    k.length = 16;
    return k;
}

// Picks for `keys` clients, by backend index.
std::vector<std::size_t> placement(balancer& b, const std::vector<candidate>& eligible, std::uint32_t keys,
                                   client_key (*key)(std::uint32_t) = client) {
    std::vector<std::size_t> out;
    for (std::uint32_t i = 0; i < keys; ++i) out.push_back(pick_index(b, eligible, key(i)));
    return out;
}

std::vector<unsigned> tally(const std::vector<std::size_t>& picks, std::size_t backends) {
    std::vector<unsigned> n(backends, 0);
    for (auto i : picks) ++n[i];
    return n;
}

}  // namespace

TEST_CASE("smooth round robin gives weights 1:2:3 exactly their shares, in every window of 6 picks", "[balancer]") {
    const std::vector<unsigned> w{1, 2, 3};
    auto b = make_balancer(balance_kind::round_robin, w, 0);
    const auto eligible = pool(w);
    std::vector<std::size_t> picks;
    for (int i = 0; i < 6000; ++i) picks.push_back(pick_index(*b, eligible));
    CHECK(tally(picks, 3) == std::vector<unsigned>{1000, 2000, 3000});
    for (std::size_t start = 0; start + 6 <= picks.size(); ++start) {
        const std::vector<std::size_t> window(picks.begin() + start, picks.begin() + start + 6);
        INFO("window at pick " << start);
        REQUIRE(tally(window, 3) == std::vector<unsigned>{1, 2, 3});
    }
}

TEST_CASE("smooth round robin spreads a heavy backend's turns: 5:1:1 gives a a b a c a a", "[balancer]") {
    const std::vector<unsigned> w{5, 1, 1};
    auto b = make_balancer(balance_kind::round_robin, w, 0);
    const auto eligible = pool(w);
    std::vector<std::size_t> picks;
    for (int i = 0; i < 14; ++i) picks.push_back(pick_index(*b, eligible));
    CHECK(picks == std::vector<std::size_t>{0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0});
}

TEST_CASE("smooth round robin: a backend leaves the eligible set and comes back", "[balancer]") {
    const std::vector<unsigned> w{1, 1, 1};
    auto b = make_balancer(balance_kind::round_robin, w, 0);
    for (int i = 0; i < 10; ++i) pick_index(*b, pool(w));
    const auto without_1 = subset(w, {0, 2});
    std::vector<std::size_t> picks;
    for (int i = 0; i < 100; ++i) picks.push_back(pick_index(*b, without_1));
    const auto apart = tally(picks, 3);
    CHECK(apart[1] == 0);
    CHECK((apart[0] >= 49 && apart[0] <= 51));  // alternating, from wherever the scores stood
    picks.clear();
    for (int i = 0; i < 300; ++i) picks.push_back(pick_index(*b, pool(w)));
    const auto n = tally(picks, 3);
    INFO("after it came back: " << n[0] << "/" << n[1] << "/" << n[2]);
    for (auto c : n) CHECK((c >= 99 && c <= 101));
}

TEST_CASE("every balancer picks a lone eligible backend", "[balancer]") {
    for (auto kind : {balance_kind::round_robin, balance_kind::least_conn, balance_kind::random,
                      balance_kind::source_hash}) {
        INFO(spliced::config::to_string(kind));
        auto b = make_balancer(kind, {3, 7, 2}, 1);
        const std::vector<candidate> lone{{1, 7, 12}};
        for (std::uint32_t i = 0; i < 50; ++i) CHECK(b->pick(lone, client(i)) == 0);
    }
}

TEST_CASE("least connections evens out long-held connections by weight, exactly", "[balancer]") {
    for (const auto& [w, expected] : {std::pair{std::vector<unsigned>{1, 1, 1}, std::vector<unsigned>{200, 200, 200}},
                                      std::pair{std::vector<unsigned>{1, 2, 3}, std::vector<unsigned>{100, 200, 300}}}) {
        auto b = make_balancer(balance_kind::least_conn, w, 0);
        auto eligible = pool(w);
        for (int i = 0; i < 600; ++i) ++eligible[b->pick(eligible, {})].active;  // never released
        CHECK(std::vector<unsigned>{unsigned(eligible[0].active), unsigned(eligible[1].active),
                                    unsigned(eligible[2].active)} == expected);
    }
}

TEST_CASE("least connections breaks ties round robin over backend indices", "[balancer]") {
    const std::vector<unsigned> w{1, 1, 1};
    auto b = make_balancer(balance_kind::least_conn, w, 0);
    std::vector<std::size_t> picks;
    for (int i = 0; i < 6; ++i) picks.push_back(pick_index(*b, pool(w)));
    CHECK(picks == std::vector<std::size_t>{0, 1, 2, 0, 1, 2});
    // The cursor is past index 2 with 0 and 2 eligible: it wraps to 0, then moves on to 2.
    picks.clear();
    for (int i = 0; i < 3; ++i) picks.push_back(pick_index(*b, subset(w, {0, 2})));
    CHECK(picks == std::vector<std::size_t>{0, 2, 0});
}

TEST_CASE("least connections sends the next connection to a backend whose connections closed", "[balancer]") {
    const std::vector<unsigned> w{1, 1, 1};
    auto b = make_balancer(balance_kind::least_conn, w, 0);
    auto eligible = pool(w);
    for (int i = 0; i < 30; ++i) ++eligible[b->pick(eligible, {})].active;
    eligible[1].active -= 2;  // 10, 8, 10
    ++eligible[b->pick(eligible, {})].active;
    CHECK(eligible[1].active == 9);
    ++eligible[b->pick(eligible, {})].active;
    CHECK(eligible[1].active == 10);
    // Weighted: 4 open of weight 2 is fewer per weight than 3 of weight 1.
    const std::vector<candidate> mixed{{0, 1, 3}, {1, 2, 4}};
    CHECK(b->pick(mixed, {}) == 1);
}

// Tolerance: each backend within ±10% of its weight's share. At 6,000 picks the standard deviation of a
// count is 29-39, so ±100..300 is 3.5 sigma and more (the seed is fixed, so the figure is too).
TEST_CASE("random two choices with nothing open shares out by weight (seeded)", "[balancer]") {
    const std::vector<unsigned> w{1, 2, 3};
    auto b = make_balancer(balance_kind::random, w, 42);
    const auto eligible = pool(w);
    std::vector<std::size_t> picks;
    for (int i = 0; i < 6000; ++i) picks.push_back(pick_index(*b, eligible));
    const auto n = tally(picks, 3);
    std::cout << "random 1:2:3, 6000 picks, nothing open, seed 42: " << n[0] << "/" << n[1] << "/" << n[2] << "\n";
    CHECK((n[0] >= 900 && n[0] <= 1100));
    CHECK((n[1] >= 1800 && n[1] <= 2200));
    CHECK((n[2] >= 2700 && n[2] <= 3300));
}

// Two choices keep the most loaded backend within a few connections of its share, so ±1% holds.
TEST_CASE("random two choices keeps long-held connections close to the weights", "[balancer]") {
    const std::vector<unsigned> w{1, 2, 3};
    auto b = make_balancer(balance_kind::random, w, 7);
    auto eligible = pool(w);
    for (int i = 0; i < 6000; ++i) ++eligible[b->pick(eligible, {})].active;
    std::cout << "random 1:2:3, 6000 held connections, seed 7: " << eligible[0].active << "/" << eligible[1].active
              << "/" << eligible[2].active << "\n";
    CHECK((eligible[0].active >= 990 && eligible[0].active <= 1010));
    CHECK((eligible[1].active >= 1980 && eligible[1].active <= 2020));
    CHECK((eligible[2].active >= 2970 && eligible[2].active <= 3030));
}

TEST_CASE("random two choices draws two distinct backends and takes the less loaded", "[balancer]") {
    auto b = make_balancer(balance_kind::random, {1, 1, 1}, 3);
    // Two eligible: both are always drawn, so the lightly loaded one always wins.
    const std::vector<candidate> two{{0, 1, 100}, {2, 1, 1}};
    for (int i = 0; i < 1000; ++i) REQUIRE(b->pick(two, {}) == 1);
    // Load is per weight: 100 open on weight 256 is lighter than 1 on weight 1.
    const std::vector<candidate> weighted{{0, 256, 100}, {1, 1, 1}};
    for (int i = 0; i < 1000; ++i) REQUIRE(b->pick(weighted, {}) == 0);
    // Three eligible: the most loaded would win only if drawn twice.
    const std::vector<candidate> three{{0, 1, 5}, {1, 1, 50}, {2, 1, 5}};
    std::vector<unsigned> n(3, 0);
    for (int i = 0; i < 3000; ++i) ++n[b->pick(three, {})];
    CHECK(n[1] == 0);
    CHECK(n[0] > 0);
    CHECK(n[2] > 0);
}

TEST_CASE("random two choices is a function of its seed", "[balancer]") {
    const std::vector<unsigned> w{1, 1, 1, 1};
    auto a = make_balancer(balance_kind::random, w, 99);
    auto same = make_balancer(balance_kind::random, w, 99);
    auto other = make_balancer(balance_kind::random, w, 100);
    const auto eligible = pool(w);
    std::vector<std::size_t> pa, ps, po;
    for (int i = 0; i < 100; ++i) {
        pa.push_back(pick_index(*a, eligible));
        ps.push_back(pick_index(*same, eligible));
        po.push_back(pick_index(*other, eligible));
    }
    CHECK(pa == ps);
    CHECK(pa != po);
}

TEST_CASE("source hash maps a client to the same backend every time, in every instance and process", "[balancer]") {
    const std::vector<unsigned> w{1, 1, 1, 1, 1};
    auto a = make_balancer(balance_kind::source_hash, w, 1);
    auto b = make_balancer(balance_kind::source_hash, w, 2);  // the seed plays no part
    const auto eligible = pool(w);
    const auto first = placement(*a, eligible, 10000);
    CHECK(placement(*a, eligible, 10000) == first);
    CHECK(placement(*b, eligible, 10000) == first);
    // Pinned: a changed hash or table would move every client on an upgrade.
    CHECK(pick_index(*a, eligible, v4(192, 0, 2, 1)) == 4);
    CHECK(pick_index(*a, eligible, v6(1)) == 2);
    // An unknown client (empty key) has a slot of its own like any other key.
    const std::size_t empty = pick_index(*a, eligible, client_key{});
    CHECK(pick_index(*b, eligible, client_key{}) == empty);
    CHECK(empty == 3);
}

TEST_CASE("source hash spreads 10,000 neighbouring IPv4 clients evenly over 5 backends", "[balancer]") {
    const std::vector<unsigned> w{1, 1, 1, 1, 1};
    auto b = make_balancer(balance_kind::source_hash, w, 0);
    const auto n = tally(placement(*b, pool(w), 10000), 5);
    std::cout << "source_hash 5 backends, 10000 IPv4 clients:";
    for (auto c : n) std::cout << " " << c;
    std::cout << "\n";
    for (auto c : n) CHECK((c >= 1700 && c <= 2300));  // ±15% of 2,000
}

TEST_CASE("source hash spreads IPv6 clients too, and an IPv4-mapped address counts as IPv4", "[balancer]") {
    const std::vector<unsigned> w{1, 1, 1, 1, 1};
    auto b = make_balancer(balance_kind::source_hash, w, 0);
    const auto eligible = pool(w);
    const auto n = tally(placement(*b, eligible, 10000, v6), 5);
    std::cout << "source_hash 5 backends, 10000 IPv6 clients:";
    for (auto c : n) std::cout << " " << c;
    std::cout << "\n";
    for (auto c : n) CHECK((c >= 1700 && c <= 2300));

    sockaddr_in6 mapped{};
    mapped.sin6_family = AF_INET6;
    const std::uint8_t bytes[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 1, 7};
    std::memcpy(mapped.sin6_addr.s6_addr, bytes, 16);
    const auto key = client_key::of(spliced::net::address::from(reinterpret_cast<const sockaddr*>(&mapped)));
    CHECK(key.length == 4);
    CHECK(pick_index(*b, eligible, key) == pick_index(*b, eligible, v4(10, 0, 1, 7)));
}

TEST_CASE("source hash: a backend leaving moves its own clients and almost no others", "[balancer]") {
    const std::vector<unsigned> w{1, 1, 1, 1, 1};
    auto b = make_balancer(balance_kind::source_hash, w, 0);
    const auto before = placement(*b, pool(w), 10000);
    const auto after = placement(*b, subset(w, {0, 1, 3, 4}), 10000);
    unsigned others = 0, others_moved = 0;
    for (std::size_t i = 0; i < before.size(); ++i) {
        CHECK(after[i] != 2);
        if (before[i] == 2) continue;
        ++others;
        if (after[i] != before[i]) ++others_moved;
    }
    std::cout << "source_hash 5 -> 4 backends: " << others_moved << " of " << others << " clients of the staying backends moved ("
              << 100.0 * others_moved / others << "%)\n";
    CHECK(others_moved == 0);  // the others' slots are theirs still: the walk passes over backend 2's only
    // Back to 5: every client is where it was.
    CHECK(placement(*b, pool(w), 10000) == before);
}

TEST_CASE("source hash: eligible sets that change from pick to pick give each set's own placement", "[balancer]") {
    // Retries leave out tried backends and full ones drop out, so the set can differ on every connection: each
    // pick must still be what that set gives alone, and a backend's clients stay with it while it is eligible.
    std::vector<unsigned> w(100, 1);
    auto alternating = make_balancer(balance_kind::source_hash, w, 0);
    std::vector<std::size_t> without_odd_tenths;  // every tenth backend, from 5, is out (refusing, say)
    for (std::size_t i = 0; i < 100; ++i)
        if (i % 10 != 5) without_odd_tenths.push_back(i);
    const auto all = pool(w);
    const auto some = subset(w, without_odd_tenths);
    auto alone_all = make_balancer(balance_kind::source_hash, w, 0);
    auto alone_some = make_balancer(balance_kind::source_hash, w, 0);
    unsigned kept = 0, on_present = 0;
    for (std::uint32_t i = 0; i < 2000; ++i) {
        const auto a = all[alternating->pick(all, client(i))].index;
        const auto s = some[alternating->pick(some, client(i))].index;
        CHECK(a == all[alone_all->pick(all, client(i))].index);
        CHECK(s == some[alone_some->pick(some, client(i))].index);
        if (a % 10 != 5) {
            ++on_present;
            kept += a == s;
        }
    }
    CHECK(kept == on_present);
}

TEST_CASE("source hash: a 6th backend takes about a sixth of the clients, from every old backend", "[balancer]") {
    const std::vector<unsigned> w{1, 1, 1, 1, 1, 1};
    auto b = make_balancer(balance_kind::source_hash, w, 0);
    const auto before = placement(*b, subset(w, {0, 1, 2, 3, 4}), 10000);
    const auto after = placement(*b, pool(w), 10000);
    unsigned moved = 0, to_new = 0;
    for (std::size_t i = 0; i < before.size(); ++i) {
        if (after[i] == before[i]) continue;
        ++moved;
        if (after[i] == 5) ++to_new;
    }
    const unsigned between_old = moved - to_new;
    std::cout << "source_hash 5 -> 6 backends: " << moved << " of 10000 clients moved (" << moved / 100.0 << "%), "
              << between_old << " of them between old backends\n";
    CHECK((moved >= 1200 && moved <= 2200));  // 12%..22%, a sixth is 16.7%
    CHECK(between_old * 50 <= 10000);         // <= 2% of all clients
}

TEST_CASE("source hash shares follow weights, and a weight change rebuilds the table", "[balancer]") {
    auto b = make_balancer(balance_kind::source_hash, {1, 1}, 0);
    auto even = tally(placement(*b, pool({1, 1}), 10000), 2);
    const auto n = tally(placement(*b, pool({1, 3}), 10000), 2);
    std::cout << "source_hash weights 1:1 then 1:3, 10000 clients: " << even[0] << "/" << even[1] << " then " << n[0]
              << "/" << n[1] << "\n";
    CHECK((even[0] >= 4700 && even[0] <= 5300));
    CHECK((n[0] >= 2200 && n[0] <= 2800));  // 25% ± 3 points
    CHECK((n[1] >= 7200 && n[1] <= 7800));
}

TEST_CASE("the sockmap kernel floor is 6.16, or 6.12.34 on the 6.12 series") {
    using spliced::datapath::kernel_meets_floor;
    using spliced::datapath::kernel_version;
    CHECK(kernel_meets_floor(kernel_version{6, 18, 44, ""}));
    CHECK(kernel_meets_floor(kernel_version{6, 16, 0, ""}));
    CHECK(kernel_meets_floor(kernel_version{7, 0, 0, ""}));
    CHECK(kernel_meets_floor(kernel_version{6, 12, 34, ""}));
    CHECK_FALSE(kernel_meets_floor(kernel_version{6, 12, 33, ""}));
    CHECK_FALSE(kernel_meets_floor(kernel_version{6, 15, 9, ""}));
    CHECK_FALSE(kernel_meets_floor(kernel_version{6, 1, 100, ""}));
    CHECK_FALSE(kernel_meets_floor(kernel_version{5, 15, 0, ""}));
}
