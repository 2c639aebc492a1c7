// A proxied pair after connect: a state machine of two directions driven by its sockets' readiness and the
// worker's timers. No coroutine, no per-connection timer object in the kernel: what it costs is this object.
#pragma once

#include "datapath/direction.hpp"
#include "datapath/engage.hpp"
#include "datapath/report.hpp"
#include "datapath/sockmap_path.hpp"
#include "net/core_socket.hpp"
#include "net/event_core.hpp"
#include "net/timers.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>

namespace spliced::datapath {

class pair final : private net::socket_listener, private net::io_handler {
public:
    // Borrows both sockets (connected, in `w.core`) and the owner for as long as it lives.
    pair(worker_resources& w, net::core_socket& client, net::core_socket& upstream, const pair_settings& s,
         pair_owner& owner);
    ~pair();
    pair(const pair&) = delete;
    pair& operator=(const pair&) = delete;

    // Hands the pair to the path its plan says and runs it from the sockets' events. `pending` goes to the
    // upstream before any byte of the client (a PROXY header to send). The owner hears of the hand-off, and of
    // the end, possibly before this returns.
    void engage(std::span<const std::uint8_t> pending);
    // Ends the pair now, as `why` (a cut from outside); the owner hears of it before this returns.
    void abort(end_reason why) { end(why); }
    bool ended() const { return ended_; }
    const pair_report& report() const { return report_; }
    // Payload bytes received from each side so far (TCP_INFO once the pair has been on sockmap).
    void bytes_so_far(std::uint64_t& from_client, std::uint64_t& from_upstream) const;

private:
    enum class map_wish : std::uint8_t { never, when_parked, after_idle };

    void on_socket(net::core_socket& s, std::uint32_t events) override;
    void on_io(std::uint32_t events) override;  // the turn asked for with again()
    void run();
    step run_direction(direction& d, std::size_t& budget);
    // Acts on how a direction's step ended; false once the pair is over.
    bool settle(direction& d, step s);
    void end(end_reason why);
    end_reason reset_of(const net::core_socket& s) const;
    sockmap_record::side& side_of(const direction& d) { return &d == &fwd_ ? map_->from_client : map_->from_upstream; }
    // What the preamble took from `d.from` (the client's PROXY header): read, though not by the direction.
    std::uint64_t consumed_of(const direction& d) const { return &d == &fwd_ ? settings_.consumed : 0; }
    bool both_parked() const { return fwd_.parked() && back_.parked(); }
    bool receive_queues_empty() const;
    void hand_off(kind k);

    // The move onto sockmap, and the ways a pair stays off it.
    void enter_map();
    void stay_off_map(fallback_reason why, bool entered_map);
    // A direction in the map: what its socket's events mean.
    step run_in_map(direction& d);
    step demoted_in_map(direction& d);
    // Whether a direction whose `from` was in the map may pass its EOF on: every byte `from` received was
    // redirected or read. False while passed bytes still wait in the kernel (or once the pair is over).
    bool fin_complete(direction& d);
    void start_drain(direction& d, direction_mode mode);
    bool check_drain(direction& d);  // false once the pair is over
    void demote_all();

    // Timers. The idle timer also keeps the lifetime: its next tick is the sooner of the two.
    void on_idle_tick();
    net::timers::clock::time_point watch_next(net::timers::clock::time_point idle_sample_at) const;
    void on_policy_tick();
    void on_drain_tick();
    void promote_tick(net::timers::clock::time_point now);
    void demote_tick(net::timers::clock::time_point now);
    // Bytes userspace moved either way (read or sent): its progress.
    std::uint64_t user_total() const { return fwd_.read + fwd_.sent + back_.read + back_.sent; }

    worker_resources& w_;
    net::core_socket& client_;
    net::core_socket& upstream_;
    pair_owner& owner_;
    pair_settings settings_;
    direction fwd_;   // client -> upstream
    direction back_;  // upstream -> client
    std::unique_ptr<sockmap_record> map_;  // while in the maps
    pair_report report_;
    net::timers::clock::time_point last_progress_;   // userspace last moved a byte
    net::timers::clock::time_point kernel_changed_{};  // the sockets' byte counters last moved (sampled)
    net::timers::clock::time_point lifetime_end_{};    // timeouts.lifetime: reset then (unset: no limit)
    std::uint64_t kernel_total_ = 0;
    net::owner_timer<pair, &pair::on_idle_tick> idle_timer_;
    net::owner_timer<pair, &pair::on_policy_tick> policy_timer_;
    net::owner_timer<pair, &pair::on_drain_tick> drain_timer_;
    std::chrono::milliseconds policy_backoff_{0};
    std::chrono::milliseconds drain_pause_{1};
    map_wish wish_ = map_wish::never;
    bool was_in_map_ = false;
    bool handed_off_ = false;
    bool ended_ = false;
};

}  // namespace spliced::datapath
