// The loaded SK_SKB verdict program and its maps: inserting and removing proxied socket pairs.
#include "datapath/sockmap.hpp"

#include "splice.skel.h"
#include "sys/socket.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <cerrno>
#include <climits>
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

std::unique_ptr<sockmap_engine> sockmap_engine::load(std::uint32_t capacity, std::string& error) {
    std::unique_ptr<sockmap_engine> engine(new sockmap_engine());
    engine->skel_ = splice_bpf::open();
    if (!engine->skel_) {
        error = std::string("opening the BPF object failed: ") + std::strerror(errno);
        return nullptr;
    }
    // Every map declared with SPLICED_MAP_CAPACITY entries holds one entry per socket in the
    // SOCKHASH: size them all alike, so the peer map fills up exactly when the SOCKHASH does.
    bpf_map* map;
    bpf_object__for_each_map(map, engine->skel_->obj) {
        if (bpf_map__max_entries(map) != SPLICED_MAP_CAPACITY) continue;
        if (int r = bpf_map__set_max_entries(map, 2 * capacity); r != 0) {
            error = std::string("sizing BPF map ") + bpf_map__name(map) + " failed: " + std::strerror(-r);
            return nullptr;
        }
    }
    engine->capacity_ = capacity;
    if (int r = splice_bpf::load(engine->skel_); r != 0) {
        error = std::string("loading the BPF object failed: ") + std::strerror(-r);
        return nullptr;
    }
    // The skeleton's attach() skips sk_skb programs: attach the verdict to the map by hand.
    int prog_fd = bpf_program__fd(engine->skel_->progs.spliced_verdict);
    if (bpf_prog_attach(prog_fd, engine->sockhash_fd(), BPF_SK_SKB_STREAM_VERDICT, 0) != 0) {
        error = std::string("attaching the stream verdict to the SOCKHASH failed: ") + std::strerror(errno);
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

insert_outcome sockmap_engine::insert(int client_fd, int upstream_fd) {
    insert_outcome out;
    auto fail = [&](std::error_code ec, const char* what) {
        out.error = ec;
        out.what = what;
        return out;
    };
    auto& pair = out.pair;
    if (auto ec = sys::socket_cookie(client_fd, pair.client_cookie)) return fail(ec, "SO_COOKIE");
    if (auto ec = sys::socket_cookie(upstream_fd, pair.upstream_cookie)) return fail(ec, "SO_COOKIE");

    // Gate first, then check state: bytes may keep arriving, but no verdict can run on them.
    for (int fd : {client_fd, upstream_fd})
        if (auto ec = sys::set_rcvlowat(fd, gate_lowat)) return fail(ec, "SO_RCVLOWAT gate");
    auto ungate = [&] {
        sys::set_rcvlowat(client_fd, 1);
        sys::set_rcvlowat(upstream_fd, 1);
    };
    // Only ESTABLISHED sockets can enter the map; a client that already half-closed is in
    // CLOSE_WAIT and must take another path.
    for (int fd : {client_fd, upstream_fd}) {
        sys::tcp_stats st;
        if (auto ec = sys::tcp_stats_of(fd, st)) {
            ungate();
            return fail(ec, "TCP_INFO");
        }
        if (!st.established()) {
            ungate();
            return fail(std::make_error_code(std::errc::not_connected), "socket not ESTABLISHED");
        }
    }

    if (auto ec = sys::bytes_queued_total(client_fd, pair.client_queued_base)) {
        ungate();
        return fail(ec, "SIOCOUTQ");
    }
    if (auto ec = sys::bytes_queued_total(upstream_fd, pair.upstream_queued_base)) {
        ungate();
        return fail(ec, "SIOCOUTQ");
    }

    spliced_peer_value to_upstream{pair.upstream_cookie, 0, 0};
    spliced_peer_value to_client{pair.client_cookie, 0, 0};
    int peers = peers_fd();
    // A full hash map (or SOCKHASH) refuses a new key with E2BIG. The peer map goes first: the
    // SOCKHASH never holds more entries than it, so at capacity no socket enters the SOCKHASH.
    if (int r = bpf_map_update_elem(peers, &pair.client_cookie, &to_upstream, BPF_NOEXIST); r != 0) {
        auto ec = bpf_error(r);
        ungate();
        out.map_full = ec.value() == E2BIG;
        return fail(ec, "peer map insert");
    }
    if (int r = bpf_map_update_elem(peers, &pair.upstream_cookie, &to_client, BPF_NOEXIST); r != 0) {
        auto ec = bpf_error(r);
        bpf_map_delete_elem(peers, &pair.client_cookie);
        ungate();
        out.map_full = ec.value() == E2BIG;
        return fail(ec, "peer map insert");
    }
    // Nothing redirected yet: each direction may run egress_backlog_limit ahead of its peer.
    for (auto cookie : {pair.client_cookie, pair.upstream_cookie}) {
        if (auto ec = set_budget(cookie, egress_backlog_limit)) {
            remove(pair);  // no socket is in the SOCKHASH yet: this only drops map entries
            ungate();
            return fail(ec, "budget map insert");
        }
    }
    int hash = sockhash_fd();
    std::uint64_t fd64 = static_cast<std::uint64_t>(client_fd);
    if (int r = bpf_map_update_elem(hash, &pair.client_cookie, &fd64, BPF_NOEXIST); r != 0) {
        auto ec = sockhash_error(r, client_fd);
        remove(pair);  // the client's insert failed: only peer and budget entries to drop
        ungate();
        out.map_full = ec.value() == E2BIG;
        return fail(ec, "SOCKHASH insert (client)");
    }
    ++pair.entries;
    entries_.fetch_add(1, std::memory_order_relaxed);
    fd64 = static_cast<std::uint64_t>(upstream_fd);
    if (int r = bpf_map_update_elem(hash, &pair.upstream_cookie, &fd64, BPF_NOEXIST); r != 0) {
        auto ec = sockhash_error(r, upstream_fd);
        remove(pair);
        ungate();
        out.entered_map = true;
        out.map_full = ec.value() == E2BIG;
        return fail(ec, "SOCKHASH insert (upstream)");
    }
    ++pair.entries;
    entries_.fetch_add(1, std::memory_order_relaxed);
    // Only now, with both sockets in: a send buffer set by hand stays fixed for the socket's life
    // (no autotuning after SO_SNDBUF), so a pair refused above keeps the size splice and copy want.
    // Still gated: no redirect has run, so none was sent with the smaller buffer.
    for (int fd : {client_fd, upstream_fd}) {
        if (auto ec = sys::set_send_buffer(fd, egress_send_buffer)) {
            remove(out.pair);
            ungate();
            out.entered_map = true;
            return fail(ec, "SO_SNDBUF");
        }
    }
    // Lowering the mark calls sk_data_ready: the verdict now runs on whatever was queued before
    // insertion, which would otherwise sit there until the next segment arrived.
    ungate();
    return out;
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
