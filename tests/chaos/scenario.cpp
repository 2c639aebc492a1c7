// Drawing a scenario from its seed, and describing it for a failure report.
#include "scenario.hpp"

#include <algorithm>
#include <sstream>

namespace chaos {

// ---------------------------------------------------------------------------------------------------------
// PRNG: splitmix64 to seed, xoshiro256** to draw (both public domain, Vigna). Integer arithmetic only.

std::uint64_t splitmix64(std::uint64_t& state) {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

rng::rng(std::uint64_t seed) {
    for (auto& s : s_) s = splitmix64(seed);
}

namespace {
std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

std::uint64_t rng::next() {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
}

std::uint64_t rng::below(std::uint64_t n) {
    if (n == 0) return 0;
    // Multiply-shift (Lemire) without the rejection step: a bias below 2^-40 for the ranges drawn here.
    return static_cast<std::uint64_t>((static_cast<unsigned __int128>(next()) * n) >> 64);
}

std::uint64_t rng::log_uniform(std::uint64_t lo, std::uint64_t hi) {
    lo = std::max<std::uint64_t>(lo, 1);
    if (hi <= lo) return lo;
    auto bits = [](std::uint64_t v) {
        int b = 0;
        while (v) ++b, v >>= 1;
        return b;
    };
    const int lo_bits = bits(lo), hi_bits = bits(hi);
    const int b = lo_bits + static_cast<int>(below(static_cast<std::uint64_t>(hi_bits - lo_bits + 1)));
    const std::uint64_t from = std::max<std::uint64_t>(lo, 1ULL << (b - 1));
    const std::uint64_t to = std::min<std::uint64_t>(hi, b >= 64 ? ~0ULL : (1ULL << b) - 1);
    return between(from, to);
}

// ---------------------------------------------------------------------------------------------------------

std::uint64_t side_plan::total() const {
    std::uint64_t n = 0;
    for (auto& s : steps) {
        if (s.kind == step_kind::write) n += s.n;
        if (s.kind == step_kind::urgent) n += 1;
    }
    return n;
}

bool side_plan::shuts_down() const {
    return std::any_of(steps.begin(), steps.end(), [](const step& s) { return s.kind == step_kind::shutdown; });
}

std::optional<std::uint64_t> side_plan::urgent_offset() const {
    std::uint64_t off = 0;
    for (auto& s : steps) {
        if (s.kind == step_kind::urgent) return off;
        if (s.kind == step_kind::write) off += s.n;
    }
    return std::nullopt;
}

std::uint64_t scenario::client_stream_seed() const {
    std::uint64_t st = seed ^ 0xc11e47c11e47ULL;
    return splitmix64(st);
}

std::uint64_t scenario::backend_stream_seed() const {
    std::uint64_t st = seed ^ 0xbac7e4dbac7e4dULL;
    return splitmix64(st);
}

bool scenario::client_resets_early() const { return client.end == ending::reset; }

namespace {

void push(side_plan& p, step_kind k, std::uint64_t n = 0) { p.steps.push_back({k, n}); }

// A few bytes or nothing, for the styles that end at once.
void maybe_small_write(rng& r, side_plan& p) {
    if (r.percent(50)) push(p, step_kind::write, r.log_uniform(1, 64 * KiB));
}

// The writes of a normal side: `total` bytes (the urgent byte among them, if any) in many small and a few
// big send()s, with pauses between some of them.
void draw_writes(rng& r, side_plan& p) {
    const std::uint64_t total = r.percent(12) ? 0 : r.log_uniform(1, MiB);
    const std::uint64_t cap = r.log_uniform(1, 256 * KiB);  // this side's usual write size
    const bool urgent = total > 0 && r.percent(12);
    const std::uint64_t urgent_at = urgent ? r.below(total) : 0;
    std::uint64_t off = 0, pause_budget = 1200;
    int writes = 0;
    while (off < total) {
        if (urgent && off == urgent_at) {
            push(p, step_kind::urgent);
            ++off;
            continue;
        }
        std::uint64_t left = (urgent && urgent_at > off ? urgent_at : total) - off;
        std::uint64_t k = r.log_uniform(1, cap);
        // At most about 64 writes per side: past that, the remainder goes in bigger pieces.
        k = std::max<std::uint64_t>(k, (total - off) / static_cast<std::uint64_t>(std::max(1, 64 - writes)));
        k = std::min(k, left);
        push(p, step_kind::write, k);
        off += k;
        ++writes;
        if (off < total && pause_budget > 0 && r.percent(10)) {
            const std::uint64_t ms = std::min<std::uint64_t>(pause_budget, r.log_uniform(1, 300));
            push(p, step_kind::pause, ms);
            pause_budget -= ms;
        }
    }
}

void maybe_pause(rng& r, side_plan& p, unsigned percent, std::uint64_t max_ms) {
    if (r.percent(percent)) push(p, step_kind::pause, r.log_uniform(1, max_ms));
}

side_plan draw_normal(rng& r) {
    side_plan p;
    p.style = "normal";
    if (r.percent(25)) push(p, step_kind::wait_peer, r.between(200, 800));
    draw_writes(r, p);
    const unsigned e = static_cast<unsigned>(r.below(100));
    if (e < 45) {  // half-close, then read to the end
        maybe_pause(r, p, 20, 300);
        push(p, step_kind::shutdown);
        p.end = ending::drain;
    } else if (e < 65) {  // no half-close: read until the other side ends it
        p.end = ending::drain;
    } else if (e < 80) {  // a full close, maybe after a half-close, read or not
        if (r.percent(50)) push(p, step_kind::shutdown);
        maybe_pause(r, p, 40, 300);
        p.end = ending::close;
    } else {  // a reset: mid-transfer, after the writes, or after a half-close
        p.end = ending::reset;
        switch (r.below(4)) {
        case 0:
        case 1: p.steps.resize(static_cast<std::size_t>(r.below(p.steps.size() + 1))); break;
        case 2: maybe_pause(r, p, 50, 300); break;
        default:
            push(p, step_kind::shutdown);
            push(p, step_kind::pause, r.log_uniform(1, 700));
            break;
        }
    }
    const unsigned m = static_cast<unsigned>(r.below(100));
    p.reads = m < 55 ? read_mode::eager : m < 70 ? read_mode::slow : m < 85 ? read_mode::late : read_mode::never;
    if (p.reads == read_mode::never && p.end == ending::drain) p.reads = read_mode::late;
    if ((p.reads == read_mode::eager || p.reads == read_mode::slow) && r.percent(25)) {
        const int n = 1 + static_cast<int>(r.below(2));
        for (int i = 0; i < n; ++i)
            p.stalls.push_back({static_cast<std::uint32_t>(r.below(1500)),
                                static_cast<std::uint32_t>(r.log_uniform(50, 1000))});
    }
    // Rarely a stall past the idle timeout: what the daemon holds for this side then waits that long.
    if (p.reads == read_mode::eager && r.percent(5))
        p.stalls.push_back({static_cast<std::uint32_t>(r.below(300)),
                            static_cast<std::uint32_t>(idle_timeout_ms + 500 + r.below(700))});
    std::sort(p.stalls.begin(), p.stalls.end(), [](const stall& a, const stall& b) { return a.at_ms < b.at_ms; });
    if (r.percent(20)) p.rcvbuf = static_cast<int>(r.log_uniform(4 * KiB, 64 * KiB));
    return p;
}

side_plan draw_client(rng& r, scenario& s) {
    const unsigned style = static_cast<unsigned>(r.below(100));
    side_plan p;
    p.reads = read_mode::never;
    if (style < 6) {  // connect and vanish: close at once, with or without sending
        p.style = "vanish";
        maybe_small_write(r, p);
        p.end = ending::close;
        return p;
    }
    if (style < 12) {  // reset right after connect, likely before the daemon connected upstream
        p.style = "reset at once";
        maybe_small_write(r, p);
        p.end = ending::reset;
        return p;
    }
    if (style < 16) {  // reset while the daemon's upstream connect waits for its SYN retransmission
        p.style = "reset during upstream connect";
        s.hold_ms = static_cast<std::uint32_t>(r.between(200, 600));
        maybe_small_write(r, p);
        push(p, step_kind::pause, r.between(10, s.hold_ms - 100));
        p.end = ending::reset;
        return p;
    }
    return draw_normal(r);
}

side_plan draw_backend(rng& r, scenario& s) {
    const unsigned style = static_cast<unsigned>(r.below(100));
    if (r.percent(10)) s.accept_delay_ms = static_cast<std::uint32_t>(r.log_uniform(1, 300));
    side_plan p;
    p.reads = read_mode::never;
    if (style < 5) {
        p.style = "reset at once";
        maybe_small_write(r, p);
        p.end = ending::reset;
        return p;
    }
    if (style < 9) {
        p.style = "close at once";
        maybe_small_write(r, p);
        p.end = ending::close;
        return p;
    }
    return draw_normal(r);
}

// A slow reader takes about 2.5 s for what the other side writes.
void size_slow_reads(rng& r, side_plan& reader, std::uint64_t peer_total) {
    if (reader.reads != read_mode::slow) return;
    reader.slow_every_ms = static_cast<std::uint32_t>(r.between(20, 50));
    reader.slow_chunk = static_cast<std::uint32_t>(std::max<std::uint64_t>(512, peer_total * reader.slow_every_ms / 2500));
}

bool reads_only_late(const side_plan& p) { return p.reads == read_mode::late || p.reads == read_mode::never; }

}  // namespace

scenario generate(std::uint64_t seed) {
    scenario s;
    s.seed = seed;
    std::uint64_t st = seed;
    rng client_rng(splitmix64(st)), backend_rng(splitmix64(st));
    s.client = draw_client(client_rng, s);
    s.backend = draw_backend(backend_rng, s);
    // Two sides that both read only once their own writes are done would deadlock on a full pipe: one of them reads.
    if (reads_only_late(s.client) && reads_only_late(s.backend) && s.client.total() > 0 && s.backend.total() > 0)
        s.backend.reads = read_mode::eager;
    // Now and then a bulk transfer into a reader that stalls past the idle timeout. The daemon parks more than
    // 1 MiB per direction (on loopback a socket's send queue autotunes to about 2.6 MB, plus a pipe or a copy
    // buffer and the receive queue), so only a bigger stream leaves bytes on their way inside the daemon while
    // nothing moves: what the idle timeout must not cut off under a FIN.
    rng common(splitmix64(st));
    if (common.percent(4) && s.client.style == "normal" && s.backend.style == "normal") {
        const bool from_backend = common.percent(75);
        side_plan& writer = from_backend ? s.backend : s.client;
        side_plan& reader = from_backend ? s.client : s.backend;
        s.profile = "bulk into a stall";
        writer.style = "bulk";
        std::vector<step> steps;
        bool placed = false;
        auto place = [&] {
            const std::uint64_t total = common.between(3 * MiB, 6 * MiB);
            for (std::uint64_t off = 0; off < total;) {
                const std::uint64_t k = std::min(total - off, common.between(256 * KiB, MiB));
                steps.push_back({step_kind::write, k});
                off += k;
            }
            placed = true;
        };
        for (auto& st : writer.steps) {
            if (st.kind == step_kind::write || st.kind == step_kind::urgent) continue;
            if (st.kind == step_kind::shutdown && !placed) place();
            steps.push_back(st);
        }
        if (!placed) place();
        writer.steps = std::move(steps);
        reader.reads = read_mode::eager;
        reader.stalls = {{static_cast<std::uint32_t>(common.below(300)),
                          static_cast<std::uint32_t>(idle_timeout_ms + 500 + common.below(700))}};
    }
    size_slow_reads(client_rng, s.client, s.backend.total());
    size_slow_reads(backend_rng, s.backend, s.client.total());
    return s;
}

// ---------------------------------------------------------------------------------------------------------

const char* to_string(read_mode m) {
    switch (m) {
    case read_mode::eager: return "eager";
    case read_mode::slow: return "slow";
    case read_mode::late: return "late (after its writes)";
    case read_mode::never: return "never";
    }
    return "?";
}

const char* to_string(ending e) {
    switch (e) {
    case ending::drain: return "read to EOF/RST, then close";
    case ending::close: return "close";
    case ending::reset: return "reset (SO_LINGER 0 + close)";
    }
    return "?";
}

namespace {
std::string bytes_text(std::uint64_t n) {
    std::ostringstream s;
    if (n >= MiB && n % KiB == 0) s << n / KiB << " KiB";
    else if (n >= 10 * KiB) s << n / KiB << "." << (n % KiB) * 10 / KiB << " KiB";
    else s << n << " B";
    return s.str();
}
}  // namespace

std::string describe(const side_plan& p) {
    std::ostringstream s;
    s << p.style << ", " << bytes_text(p.total()) << " in " << std::count_if(p.steps.begin(), p.steps.end(), [](const step& x) {
        return x.kind == step_kind::write || x.kind == step_kind::urgent;
    }) << " writes; reads " << to_string(p.reads);
    if (p.reads == read_mode::slow) s << " (" << p.slow_chunk << " B every " << p.slow_every_ms << " ms)";
    for (auto& st : p.stalls) s << ", stall " << st.at_ms << "+" << st.len_ms << " ms";
    if (p.rcvbuf) s << ", SO_RCVBUF " << p.rcvbuf;
    s << "\n      steps:";
    std::uint64_t off = 0;
    for (const auto& st : p.steps) {
        switch (st.kind) {
        case step_kind::write: s << " write " << st.n << " @" << off; off += st.n; break;
        case step_kind::urgent: s << " URGENT @" << off; ++off; break;
        case step_kind::pause: s << " pause " << st.n << "ms"; break;
        case step_kind::wait_peer: s << " wait-for-peer<=" << st.n << "ms"; break;
        case step_kind::shutdown: s << " SHUT_WR"; break;
        }
        s << ";";
    }
    s << " then " << to_string(p.end);
    return s.str();
}

std::string tags(const scenario& s) {
    std::ostringstream o;
    auto side = [&](const char* name, const side_plan& p) {
        o << name << " " << p.style << " " << bytes_text(p.total()) << (p.shuts_down() ? " shut" : "") << " "
          << (p.end == ending::drain ? "drain" : p.end == ending::close ? "close" : "reset") << " reads "
          << (p.reads == read_mode::late ? "late" : to_string(p.reads));
        if (p.urgent_offset()) o << " URGENT";
        for (auto& st : p.stalls)
            if (st.len_ms > idle_timeout_ms) o << " long-stall";
    };
    side("client", s.client);
    o << "; ";
    side("backend", s.backend);
    if (s.polite()) o << "; polite";
    if (!s.profile.empty()) o << "; " << s.profile;
    return o.str();
}

std::string describe(const scenario& s) {
    std::ostringstream o;
    o << "scenario seed " << s.seed << (s.polite() ? " (polite: both sides read to the end)" : "");
    if (!s.profile.empty()) o << "; " << s.profile;
    if (s.hold_ms) o << "; backend accept queue held " << s.hold_ms << " ms";
    if (s.accept_delay_ms) o << "; backend accepts " << s.accept_delay_ms << " ms late";
    o << "\n    client:  " << describe(s.client) << "\n    backend: " << describe(s.backend);
    return o.str();
}

}  // namespace chaos
