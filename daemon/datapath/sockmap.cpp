// The loaded SK_SKB verdict program and its maps: inserting and removing proxied socket pairs.
#include "datapath/sockmap.hpp"

#include "splice.skel.h"
#include "sys/socket.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <cerrno>
#include <array>
#include <climits>
#include <tuple>
#include <cstring>
#include <vector>

namespace spliced::datapath {

namespace {

// While SO_RCVLOWAT is this high, tcp_data_ready() does not call sk_data_ready, so no verdict
// runs on either socket until both are in the map (the kernel caps it at tcp_rmem[2] / 2).
constexpr int gate_lowat = INT_MAX;

std::error_code bpf_error(int ret) {
    return {ret < 0 ? -ret : errno, std::system_category()};
}

// The SOCKHASH refuses a socket that is no longer ESTABLISHED with EOPNOTSUPP: a FIN that arrived
// after the state check. Say so, like the check itself would have.
std::error_code sockhash_error(int ret, int fd) {
    auto ec = bpf_error(ret);
    sys::tcp_stats st;
    if (ec.value() == EOPNOTSUPP && !sys::tcp_stats_of(fd, st) && !st.established())
        return std::make_error_code(std::errc::not_connected);
    return ec;
}

}  // namespace

std::string engine_error::text() const { return std::string(sys::name_of(step)) + ": " + code.message(); }

std::unique_ptr<sockmap_engine> sockmap_engine::load(std::uint32_t capacity, engine_error& error) {
    std::unique_ptr<sockmap_engine> engine(new sockmap_engine());
    engine->skel_ = splice_bpf::open();
    if (!engine->skel_) {
        error = {engine_step::open, sys::last_error()};
        return nullptr;
    }
    // Every map declared with SPLICED_MAP_CAPACITY entries holds one entry per socket in the
    // SOCKHASH: size them all alike, so the peer map fills up exactly when the SOCKHASH does.
    bpf_map* map;
    bpf_object__for_each_map(map, engine->skel_->obj) {
        if (bpf_map__max_entries(map) != SPLICED_MAP_CAPACITY) continue;
        if (int r = bpf_map__set_max_entries(map, 2 * capacity); r != 0) {
            error = {engine_step::size_maps, bpf_error(r)};
            return nullptr;
        }
    }
    engine->capacity_ = capacity;
    if (int r = splice_bpf::load(engine->skel_); r != 0) {
        error = {engine_step::load, bpf_error(r)};
        return nullptr;
    }
    // The skeleton's attach() skips sk_skb programs: attach the verdict to the map by hand.
    int prog_fd = bpf_program__fd(engine->skel_->progs.spliced_verdict);
    if (bpf_prog_attach(prog_fd, engine->sockhash_fd(), BPF_SK_SKB_STREAM_VERDICT, 0) != 0) {
        error = {engine_step::attach, sys::last_error()};
        return nullptr;
    }
    int n = libbpf_num_possible_cpus();
    engine->ncpus_ = n > 0 ? n : 1;
    return engine;
}

sockmap_engine::~sockmap_engine() {
    if (skel_) {
        bpf_prog_detach2(bpf_program__fd(skel_->progs.spliced_verdict), sockhash_fd(),
                         BPF_SK_SKB_STREAM_VERDICT);
        splice_bpf::destroy(skel_);
    }
}

int sockmap_engine::sockhash_fd() const { return bpf_map__fd(skel_->maps.sockhash); }
int sockmap_engine::peers_fd() const { return bpf_map__fd(skel_->maps.peers); }
int sockmap_engine::budget_fd() const { return bpf_map__fd(skel_->maps.budget); }

namespace {

// Holds back the verdict on both sockets of a pair from hold() until it is destroyed: while SO_RCVLOWAT is
// gate_lowat, bytes may keep arriving but no verdict runs on them. Lowering the mark to 1 again calls
// sk_data_ready: the verdict then runs on whatever was queued meanwhile, which would otherwise sit there
// until the next segment arrived (a client that spoke first and now waits would hang).
class verdict_gate {
public:
    verdict_gate(int a, int b) : fds_{a, b} {}
    ~verdict_gate() {
        for (int fd : fds_) sys::set_rcvlowat(fd, 1);
    }
    verdict_gate(const verdict_gate&) = delete;
    verdict_gate& operator=(const verdict_gate&) = delete;
    std::error_code hold() {
        for (int fd : fds_)
            if (auto ec = sys::set_rcvlowat(fd, gate_lowat)) return ec;
        return {};
    }

private:
    std::array<int, 2> fds_;
};

// Only ESTABLISHED sockets can enter the map; a client that already half-closed is in CLOSE_WAIT and
// must take another path.
engine_error check_established(int client_fd, int upstream_fd) {
    for (int fd : {client_fd, upstream_fd}) {
        sys::tcp_stats st;
        if (auto ec = sys::tcp_stats_of(fd, st)) return {engine_step::tcp_info, ec};
        if (!st.established()) return {engine_step::not_established, std::make_error_code(std::errc::not_connected)};
    }
    return {};
}

}  // namespace

insert_outcome sockmap_engine::insert(int client_fd, int upstream_fd) {
    insert_outcome out;
    auto& pair = out.pair;
    auto& e = out.error;
    if (auto ec = sys::socket_cookie(client_fd, pair.client_cookie)) e = {engine_step::cookie, ec};
    else if (auto ec2 = sys::socket_cookie(upstream_fd, pair.upstream_cookie)) e = {engine_step::cookie, ec2};
    if (e) return out;
    // Gate first, then check the state: bytes may keep arriving, but no verdict can run on them.
    verdict_gate gate(client_fd, upstream_fd);  // lowered on every return below
    if (auto ec = gate.hold()) e = {engine_step::gate, ec};
    if (!e) e = check_established(client_fd, upstream_fd);
    if (!e) {
        if (auto ec = sys::bytes_queued_total(client_fd, pair.client_queued_base)) e = {engine_step::queued_total, ec};
        else if (auto ec2 = sys::bytes_queued_total(upstream_fd, pair.upstream_queued_base))
            e = {engine_step::queued_total, ec2};
    }
    if (!e) e = add_peers(pair, out.map_full);
    if (!e) e = add_sockets(client_fd, upstream_fd, pair, out.entered_map, out.map_full);
    if (e.step == engine_step::budget_map) remove(pair);  // peer and budget entries, no socket yet
    return out;
}

engine_error sockmap_engine::add_peers(sockmap_pair& pair, bool& map_full) {
    const spliced_peer_value to_upstream{pair.upstream_cookie, 0, 0, 0};
    const spliced_peer_value to_client{pair.client_cookie, 0, 0, 0};
    const int peers = peers_fd();
    // A full hash map (or SOCKHASH) refuses a new key with E2BIG. The peer map goes first: the
    // SOCKHASH never holds more entries than it, so at capacity no socket enters the SOCKHASH.
    if (int r = bpf_map_update_elem(peers, &pair.client_cookie, &to_upstream, BPF_NOEXIST); r != 0) {
        map_full = bpf_error(r).value() == E2BIG;
        return {engine_step::peer_map, bpf_error(r)};
    }
    if (int r = bpf_map_update_elem(peers, &pair.upstream_cookie, &to_client, BPF_NOEXIST); r != 0) {
        bpf_map_delete_elem(peers, &pair.client_cookie);
        map_full = bpf_error(r).value() == E2BIG;
        return {engine_step::peer_map, bpf_error(r)};
    }
    // Nothing redirected yet: each direction may run egress_backlog_limit ahead of its peer.
    for (auto cookie : {pair.client_cookie, pair.upstream_cookie})
        if (auto ec = set_budget(cookie, egress_backlog_limit)) return {engine_step::budget_map, ec};
    return {};
}

engine_error sockmap_engine::add_sockets(int client_fd, int upstream_fd, sockmap_pair& pair, bool& entered_map,
                                         bool& map_full) {
    const int hash = sockhash_fd();
    for (const auto& [fd, cookie, step] :
         {std::tuple{client_fd, pair.client_cookie, engine_step::sockhash_client},
          std::tuple{upstream_fd, pair.upstream_cookie, engine_step::sockhash_upstream}}) {
        const std::uint64_t fd64 = static_cast<std::uint64_t>(fd);
        if (int r = bpf_map_update_elem(hash, &cookie, &fd64, BPF_NOEXIST); r != 0) {
            const auto ec = sockhash_error(r, fd);
            entered_map = pair.entries > 0;
            map_full = ec.value() == E2BIG;
            remove(pair);
            return {step, ec};
        }
        ++pair.entries;
        entries_.fetch_add(1, std::memory_order_relaxed);
    }
    return {};
}

void sockmap_engine::remove(sockmap_pair& pair) {
    entries_.fetch_sub(pair.entries, std::memory_order_relaxed);
    pair.entries = 0;
    int hash = sockhash_fd();
    int peers = peers_fd();
    int budget = budget_fd();
    // Peer entries first: a verdict that still runs on either socket then finds no entry and passes
    // (counted as such), instead of finding its peer gone from the SOCKHASH, which it would count
    // as a peer miss although the pair is simply over.
    for (auto cookie : {pair.client_cookie, pair.upstream_cookie}) bpf_map_delete_elem(peers, &cookie);
    for (auto cookie : {pair.client_cookie, pair.upstream_cookie}) bpf_map_delete_elem(hash, &cookie);
    for (auto cookie : {pair.client_cookie, pair.upstream_cookie}) bpf_map_delete_elem(budget, &cookie);
}

std::error_code sockmap_engine::redirected(std::uint64_t cookie, std::uint64_t& out) const {
    spliced_peer_value value{};
    if (int r = bpf_map_lookup_elem(peers_fd(), &cookie, &value); r != 0) return bpf_error(r);
    out = value.redirected_bytes;
    return {};
}

std::error_code sockmap_engine::redirected(std::uint64_t cookie, std::uint64_t& bytes, std::uint64_t& packets) const {
    spliced_peer_value value{};
    if (int r = bpf_map_lookup_elem(peers_fd(), &cookie, &value); r != 0) return bpf_error(r);
    bytes = value.redirected_bytes;
    packets = value.redirected_packets;
    return {};
}

std::error_code sockmap_engine::set_budget(std::uint64_t cookie, std::uint64_t ceiling) {
    if (int r = bpf_map_update_elem(budget_fd(), &cookie, &ceiling, BPF_ANY); r != 0) return bpf_error(r);
    return {};
}

std::uint64_t sockmap_engine::counter(spliced_counter slot) const {
    std::vector<std::uint64_t> values(ncpus_);
    __u32 key = slot;
    if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.stats), &key, values.data()) != 0) return 0;
    std::uint64_t sum = 0;
    for (auto v : values) sum += v;
    return sum;
}

}  // namespace spliced::datapath
