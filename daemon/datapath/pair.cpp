// A proxied pair after connect: two directions driven by readiness and the worker's timers.
#include "datapath/pair.hpp"

#include "datapath/sockmap.hpp"
#include "datapath/userspace.hpp"
#include "sys/socket.hpp"

#include <algorithm>
#include <spdlog/spdlog.h>

namespace spliced::datapath {

namespace {

using namespace std::chrono_literals;
using time_point = net::timers::clock::time_point;

// Bytes one pair may move per turn of the worker's loop before the other ready connections get theirs.
constexpr std::size_t turn_budget = 256 * 1024;
// Sockmap route: userspace forwards what comes before the pair is first parked; a sender that never lets its
// queue run dry within this many bytes keeps the pair off the map.
constexpr std::uint64_t busy_sender_bound = 64 << 20;
// auto: a pair that moved no byte for this long, with both directions parked, moves onto sockmap (short
// connections end before that). An idle pair blocked on a slow receiver is looked at less and less often.
constexpr auto promote_after = 200ms;
constexpr auto promote_backoff_min = 100ms;
constexpr auto promote_backoff_max = 1000ms;
// auto, on sockmap: every redirect costs a kworker hop (sk_psock_backlog) and wakes userspace anyway, so a
// pair that sends this many messages or bytes in one direction within a tick goes back to userspace copy.
constexpr auto policy_tick = 100ms;
constexpr std::uint64_t chatty_packets = 8;
constexpr std::uint64_t bulky_bytes = 1 << 20;
// Drains (a demotion's, the FIN's) look again after this, doubling up to the most: a peer that reads nothing
// costs 10 wake-ups a second, not a poll.
constexpr auto drain_pause_min = 1ms;
constexpr auto drain_pause_max = 100ms;

// How often the idle check samples the kernel's byte counters while userspace cannot see progress itself.
std::chrono::milliseconds idle_sample(std::chrono::milliseconds idle) { return std::max(1ms, idle / 4); }

fallback_reason fallback_reason_of(const insert_outcome& ins) {
    if (ins.map_full) return fallback_reason::map_full;
    if (ins.error.code == std::errc::not_connected) return fallback_reason::not_established;
    return fallback_reason::error;
}

// tcpi_bytes_received counts a received FIN as one more byte.
std::uint64_t payload(std::uint64_t bytes_received, bool fin) {
    return fin && bytes_received > 0 ? bytes_received - 1 : bytes_received;
}

}  // namespace

pair::pair(worker_resources& w, net::core_socket& client, net::core_socket& upstream, const pair_settings& s,
           pair_owner& owner)
    : w_(w), client_(client), upstream_(upstream), owner_(owner), settings_(s), fwd_(client, upstream),
      back_(upstream, client), last_progress_(w.core.now()), idle_timer_(*this), policy_timer_(*this),
      drain_timer_(*this) {}

pair::~pair() {
    client_.listen(nullptr);
    upstream_.listen(nullptr);
    if (map_ && w_.engine) w_.engine->remove(map_->maps);
}

void pair::engage(std::span<const std::uint8_t> pending) {
    client_.listen(this);
    upstream_.listen(this);
    fwd_.held.hold({reinterpret_cast<const char*>(pending.data()), pending.size()});
    const plan& how = settings_.how;
    const bool splice_ok = splice_available();
    const auto now = w_.core.now();
    if (how.path == kind::sockmap && w_.engine) {
        wish_ = map_wish::when_parked;  // the hand-off is counted once the pair is in the map, or stayed off
        fwd_.may_splice = back_.may_splice = splice_ok;
        // Nothing read from the client yet (no preamble): every queued skb is whole, and the insert kicks the
        // verdict over them, so the pair enters now. A client that sends, reads its answer and closes at once
        // would otherwise often be half-closed (CLOSE_WAIT, which the map refuses) by the time it is parked.
        if (pending.empty() && settings_.consumed == 0) enter_map();
    } else {
        const kind k = how.path == kind::copy || !splice_ok ? kind::copy : kind::splice;
        fwd_.may_splice = back_.may_splice = k == kind::splice;
        hand_off(k);
        if (how.promote_to_sockmap && w_.engine) {
            wish_ = map_wish::after_idle;
            w_.core.clock().arm(policy_timer_, now + promote_after);
        }
    }
    if (settings_.lifetime_left.count() > 0) lifetime_end_ = now + settings_.lifetime_left;
    if (settings_.idle.count() > 0) {
        kernel_changed_ = now;  // the counters' baseline is 0: any byte by the first sample is progress
        w_.core.clock().arm(idle_timer_, watch_next(now + idle_sample(settings_.idle)));
    } else if (lifetime_end_ != time_point{}) {
        w_.core.clock().arm(idle_timer_, lifetime_end_);
    }
    run();
}

void pair::hand_off(kind k) {
    report_.paths.ran_on(k);
    if (handed_off_) return;
    handed_off_ = true;
    owner_.handed_off(k);
}

void pair::on_socket(net::core_socket& s, std::uint32_t) {
    // On sockmap, the kernel wakes a socket's readers after each redirect of its bytes; with nothing left
    // to read, epoll reports that as the socket being writable. Either way the direction it feeds woke.
    if (map_) (&s == &client_ ? map_->from_client : map_->from_upstream).woken = true;
    run();
}

void pair::on_io(std::uint32_t) { run(); }

end_reason pair::reset_of(const net::core_socket& s) const {
    return &s == &client_ ? end_reason::client_reset : end_reason::upstream_reset;
}

void pair::run() {
    if (ended_) return;
    // An error (a reset) on a socket ends the pair now: its peer must not wait for bytes that never come. Not
    // once that socket sent its FIN: it is only owed what the other direction still sends, and that send meets
    // the error itself (userspace: the send fails; sockmap: the FIN drain finds the peer gone). A client that
    // half-closed, read its answer and closed resets at the backend's last bytes (a TLS close_notify).
    if (client_.failed() && !fwd_.done) return end(end_reason::client_reset);
    if (upstream_.failed() && !back_.done) return end(end_reason::upstream_reset);
    const std::uint64_t before = user_total();
    std::size_t budget = turn_budget;
    bool yielded = false;
    for (direction* d : {&fwd_, &back_}) {
        if (d->done) continue;
        const step s = run_direction(*d, budget);
        if (!settle(*d, s)) return;
        yielded |= s == step::yield;
    }
    if (fwd_.done && back_.done) return end(end_reason::completed);
    const auto now = w_.core.now();
    if (user_total() != before) last_progress_ = now;
    if (yielded) w_.core.again(*this);
    if (wish_ == map_wish::when_parked) {
        if (both_parked() && receive_queues_empty()) enter_map();
        else if (fwd_.read + back_.read > busy_sender_bound) stay_off_map(fallback_reason::busy_sender, false);
    }
}

step pair::run_direction(direction& d, std::size_t& budget) {
    for (;;) {
        if (d.mode == direction_mode::user) {
            const bool could_splice = d.may_splice;
            const step s = run_userspace(d, w_.pipes, *w_.buffer, budget);
            if (could_splice && !d.may_splice) report_.paths.ran_on(kind::copy);  // no pipe to be had
            if (s == step::eof && map_ && !fin_complete(d)) return step::blocked;
            return s;
        }
        const step s = run_in_map(d);
        if (s != step::go_on) return s;
    }
}

bool pair::settle(direction& d, step s) {
    switch (s) {
    case step::eof:
        // A client that half-closed before the pair was parked cannot enter the map (CLOSE_WAIT).
        if (wish_ == map_wish::when_parked) stay_off_map(fallback_reason::not_established, false);
        // Half-close only now: every byte read went out before the FIN.
        sys::shutdown_write(d.to->fd());
        d.done = true;
        return true;
    case step::from_failed: end(reset_of(*d.from)); return false;
    case step::to_failed: end(reset_of(*d.to)); return false;
    case step::go_on:
    case step::blocked:
    case step::yield: break;
    }
    return !ended_;
}

void pair::end(end_reason why) {
    if (ended_) return;
    ended_ = true;
    report_.reason = why;
    auto& clock = w_.core.clock();
    clock.cancel(idle_timer_);
    clock.cancel(policy_timer_);
    clock.cancel(drain_timer_);
    client_.listen(nullptr);
    upstream_.listen(nullptr);
    bytes_so_far(report_.from_client, report_.from_upstream);
    if (map_) {
        for (direction* d : {&fwd_, &back_})
            if (const auto& s = side_of(*d); s.demoted) report_.demoted_bytes += d->read - s.read_at_demotion;
        w_.engine->remove(map_->maps);
        map_.reset();
    }
    for (direction* d : {&fwd_, &back_}) {
        if (!d->pipe) continue;
        if (d->in_pipe == 0) w_.pipes.put(std::move(d->pipe));
        else d->pipe = {};  // its bytes go with the pair
    }
    owner_.pair_ended();
}

void pair::bytes_so_far(std::uint64_t& from_client, std::uint64_t& from_upstream) const {
    from_client = fwd_.read;
    from_upstream = back_.read;
    if (!was_in_map_) return;
    // The verdict moved bytes userspace never saw: the sockets' counters tell.
    sys::tcp_stats c, u;
    if (sys::tcp_stats_of(client_.fd(), c) || sys::tcp_stats_of(upstream_.fd(), u)) return;
    const std::uint64_t got = payload(c.bytes_received, fwd_.eof);
    from_client = got > settings_.consumed ? got - settings_.consumed : 0;
    from_upstream = payload(u.bytes_received, back_.eof);
}

// ---- the move onto sockmap, and the ways a pair stays off it ----

bool pair::receive_queues_empty() const {
    // Parked says the last read ran a queue dry; an urgent mark that arrived since stops the next read short
    // inside an skb, which the verdict would then redirect whole, its read prefix a second time. Asked only
    // before insertion (never FIONREAD a socket in the map).
    int a = 0, b = 0;
    return !sys::receive_queue_bytes(client_.fd(), a) && !sys::receive_queue_bytes(upstream_.fd(), b) && a == 0 &&
           b == 0;
}

void pair::enter_map() {
    auto& engine = *w_.engine;
    const insert_outcome ins = engine.insert(client_.fd(), upstream_.fd());
    if (ins.error) {
        spdlog::debug("conn {} route {}: sockmap insert failed at {}", settings_.id, settings_.route, ins.error.text());
        stay_off_map(fallback_reason_of(ins), ins.entered_map);
        return;
    }
    map_ = std::make_unique<sockmap_record>();
    map_->maps = ins.pair;
    // Each socket's queued total at insertion holds what userspace wrote to it (and the PROXY header it sent);
    // the client's received total holds what the preamble took: the bases take both out of the FIN drain.
    map_->from_client.from_cookie = ins.pair.client_cookie;
    map_->from_client.to_inserted_total = ins.pair.upstream_queued_base;
    map_->from_client.to_base = ins.pair.upstream_queued_base - fwd_.read - settings_.consumed;
    map_->from_upstream.from_cookie = ins.pair.upstream_cookie;
    map_->from_upstream.to_inserted_total = ins.pair.client_queued_base;
    map_->from_upstream.to_base = ins.pair.client_queued_base - back_.read;
    was_in_map_ = true;
    for (direction* d : {&fwd_, &back_}) {
        d->mode = direction_mode::redirected;
        d->may_splice = d->bulk = false;  // never splice(2) a socket that is in the map
    }
    w_.core.clock().cancel(policy_timer_);  // on sockmap it runs on redirect wake-ups
    if (wish_ == map_wish::after_idle) {
        owner_.promoted();
        report_.paths.ran_on(kind::sockmap);
    } else {
        hand_off(kind::sockmap);
    }
    wish_ = map_wish::never;
}

void pair::stay_off_map(fallback_reason why, bool entered_map) {
    auto state = [](const direction& d) {
        return fmt::format("read {} held {} pipe {} readable {} eof {}", d.read, d.held.rest().size(), d.in_pipe,
                           d.from->readable(), d.eof);
    };
    spdlog::debug("conn {} route {}: stays off sockmap ({}); client->upstream {}; upstream->client {}", settings_.id,
                  settings_.route, sys::name_of(why), state(fwd_), state(back_));
    owner_.stayed_off_sockmap(why);
    if (entered_map)  // a socket that was in the map, even briefly, is never spliced
        for (direction* d : {&fwd_, &back_}) d->may_splice = d->bulk = false;
    if (wish_ == map_wish::when_parked) hand_off(fwd_.may_splice ? kind::splice : kind::copy);
    wish_ = map_wish::never;
    w_.core.clock().cancel(policy_timer_);
}

// ---- a direction in the map ----

step pair::run_in_map(direction& d) {
    if (d.mode != direction_mode::redirected) return step::blocked;  // a drain: its timer moves it on
    if (d.from->readable()) {
        switch (peek(d.from->fd())) {
        case peeked::nothing: d.from->read_would_block(); break;
        case peeked::bytes: return demoted_in_map(d);
        case peeked::eof: {
            const auto unread = unread_before_fin(*w_.engine, side_of(d), d.from->fd(), d.read + consumed_of(d));
            if (!unread) {
                end(end_reason::error);
                return step::blocked;
            }
            // Bytes passed after a demotion, still queued behind the redirects to `from`: userspace reads them
            // once they come out, and the FIN after them.
            if (*unread > 0) return demoted_in_map(d);
            // FIN is not forwarded by the redirect: it goes on once the peer holds every byte.
            d.eof = true;
            start_drain(d, direction_mode::fin_wait);
            return ended_ ? step::blocked : step::go_on;
        }
        case peeked::error: return step::from_failed;  // a reset is reported once: end on it now
        }
    }
    auto& s = side_of(d);
    if (!s.woken) return step::blocked;
    // A redirect's wake-up: the egress check, and the policy's count.
    s.woken = false;
    const auto now = w_.core.now();
    if (!s.demote_asked) check_egress(*w_.engine, s, d.to->fd(), now);
    ++map_->wakes;
    if (settings_.how.promote_to_sockmap && !policy_timer_.armed()) w_.core.clock().arm(policy_timer_, now + policy_tick);
    return step::blocked;
}

step pair::demoted_in_map(direction& d) {
    // The verdict passed bytes: this direction was demoted (a peer miss, the egress bound, or the policy), for
    // good. Userspace copies them once the peer took every byte redirected before.
    owner_.demoted();
    report_.paths.ran_on(kind::copy);
    side_of(d).read_at_demotion = d.read;
    side_of(d).demoted = true;
    start_drain(d, direction_mode::draining);
    return ended_ ? step::blocked : step::go_on;
}

bool pair::fin_complete(direction& d) {
    auto& s = side_of(d);
    const auto unread = unread_before_fin(*w_.engine, s, d.from->fd(), d.read + consumed_of(d));
    std::uint64_t stranded = 0;
    switch (unread ? late_check(s, d.from->fd(), *unread, w_.core.now(), stranded) : drained::error) {
    case drained::yes: return true;
    case drained::not_yet: break;
    case drained::stranded: report_.unread_at_fin = stranded; [[fallthrough]];
    case drained::peer_gone:
    case drained::error: end(end_reason::error); return false;
    }
    // Not the end yet: the kernel wakes `from`'s readers as its kworker moves them; the drain timer looks
    // again in case it never does, and keeps the bound.
    d.eof = false;
    if (!drain_timer_.armed()) w_.core.clock().arm(drain_timer_, w_.core.now() + drain_pause_max);
    return false;
}

void pair::start_drain(direction& d, direction_mode mode) {
    d.mode = mode;
    side_of(d).last_progress = {};
    if (!check_drain(d)) return;
    if (d.mode == mode && !drain_timer_.armed()) {
        drain_pause_ = drain_pause_min;
        w_.core.clock().arm(drain_timer_, w_.core.now() + drain_pause_);
    }
}

bool pair::check_drain(direction& d) {
    auto& s = side_of(d);
    // A reset of the sender ends the pair now, not once a slow `to` has taken everything.
    if (d.from->failed()) {
        end(reset_of(*d.from));
        return false;
    }
    const auto target = d.mode == direction_mode::draining ? redirected_target(*w_.engine, s) : fin_target(s, d.from->fd());
    if (!target) {
        end(end_reason::error);
        return false;
    }
    switch (drain_check(s, d.to->fd(), *target, w_.core.now(), report_.stranded_bytes, report_.backlog_nudges)) {
    case drained::yes:
        if (d.mode == direction_mode::fin_wait) {
            sys::shutdown_write(d.to->fd());
            d.done = true;
        } else {
            d.mode = direction_mode::user;
        }
        return true;
    case drained::not_yet: return true;
    case drained::peer_gone: end(reset_of(*d.to)); return false;
    case drained::stranded:
    case drained::error: end(end_reason::error); return false;
    }
    return true;
}

void pair::on_drain_tick() {
    bool waiting = false;
    for (direction* d : {&fwd_, &back_}) {
        if (d->done) continue;
        if (d->mode == direction_mode::user) {
            if (map_ && side_of(*d).late_since != sockmap_record::time_point{}) d->from->assume_readable();
            continue;
        }
        if (d->mode != direction_mode::draining && d->mode != direction_mode::fin_wait) continue;
        if (!check_drain(*d)) return;
        waiting |= (d->mode == direction_mode::draining || d->mode == direction_mode::fin_wait) && !d->done;
    }
    if (waiting) {
        drain_pause_ = std::min<std::chrono::milliseconds>(drain_pause_ * 2, drain_pause_max);
        w_.core.clock().arm(drain_timer_, w_.core.now() + drain_pause_);
    }
    run();  // a direction back in userspace has bytes to copy; both done ends the pair
}

void pair::demote_all() {
    for (direction* d : {&fwd_, &back_}) {
        if (d->mode != direction_mode::redirected) continue;
        auto& s = side_of(*d);
        // A ceiling of 0: the verdict passes the next skb and sets the sticky flag; never a key delete.
        if (!w_.engine->set_budget(s.from_cookie, 0)) s.demote_asked = true;
    }
}

// ---- timers ----

time_point pair::watch_next(time_point idle_sample_at) const {
    return lifetime_end_ != time_point{} ? std::min(idle_sample_at, lifetime_end_) : idle_sample_at;
}

void pair::on_idle_tick() {
    if (ended_) return;
    const auto now = w_.core.now();
    // timeouts.lifetime: reset on both sides (never a FIN: the streams were not over).
    if (lifetime_end_ != time_point{} && now >= lifetime_end_) return end(end_reason::lifetime);
    if (settings_.idle.count() == 0) return w_.core.clock().arm(idle_timer_, lifetime_end_);
    // Userspace sees its own reads and writes, but not a slow reader taking what sits in a send queue, nor
    // anything on sockmap: no byte counter of either socket moving (nothing received from a peer, nothing
    // acknowledged by one) within the timeout is idle, so a slow reader still being fed is not. Sampled every
    // quarter of the timeout: an idle pair ends between one timeout and 1.25 of it.
    const auto idle = settings_.idle;
    sys::tcp_stats a, b;
    if (sys::tcp_stats_of(client_.fd(), a) || sys::tcp_stats_of(upstream_.fd(), b)) return end(end_reason::error);
    const std::uint64_t total = a.bytes_received + a.bytes_acked + b.bytes_received + b.bytes_acked;
    if (total != kernel_total_) {
        kernel_total_ = total;
        kernel_changed_ = now;
    }
    const auto since = std::max(last_progress_, kernel_changed_);
    if (now - since >= idle) return end(end_reason::idle_timeout);
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(since + idle - now);
    w_.core.clock().arm(idle_timer_, watch_next(now + std::min(idle_sample(idle), left)));
}

void pair::on_policy_tick() {
    if (ended_) return;
    const auto now = w_.core.now();
    if (map_) demote_tick(now);
    else promote_tick(now);
}

void pair::promote_tick(time_point now) {
    if (wish_ != map_wish::after_idle || fwd_.done || back_.done) return;  // half-closed: stays where it is
    if (now - last_progress_ < promote_after) {
        policy_backoff_ = std::chrono::milliseconds(0);
        w_.core.clock().arm(policy_timer_, last_progress_ + promote_after);
        return;
    }
    if (both_parked() && receive_queues_empty()) return enter_map();
    // Idle, yet not parked: blocked on a slow receiver, which can last. Look again less and less often.
    policy_backoff_ = std::clamp<std::chrono::milliseconds>(policy_backoff_ * 2, promote_backoff_min, promote_backoff_max);
    w_.core.clock().arm(policy_timer_, now + policy_backoff_);
}

void pair::demote_tick(time_point now) {
    bool busy = false;
    for (auto* s : {&map_->from_client, &map_->from_upstream}) {
        std::uint64_t bytes = 0, packets = 0;
        if (w_.engine->redirected(s->from_cookie, bytes, packets)) continue;
        busy |= packets - s->seen_packets >= chatty_packets || bytes - s->seen_bytes >= bulky_bytes;
        s->seen_packets = packets;
        s->seen_bytes = bytes;
    }
    if (busy) return demote_all();
    if (map_->wakes == 0) return;  // quiet: parked, with no tick until the next redirect
    map_->wakes = 0;
    w_.core.clock().arm(policy_timer_, now + policy_tick);
}

}  // namespace spliced::datapath
