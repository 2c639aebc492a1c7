// splice(2) data path: each direction moves bytes socket -> pipe -> socket without copying them.
#include "datapath/splice_pump.hpp"

#include "sys/fd.hpp"
#include "sys/socket.hpp"

#include <array>
#include <cerrno>
#include <memory>
#include <chrono>
#include <fcntl.h>
#include <unistd.h>
#include <vector>

namespace spliced::datapath {

namespace {

constexpr int pipe_size = 256 * 1024;
constexpr std::size_t pool_limit = 64;
constexpr unsigned splice_flags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;

// Empty pipes kept per worker thread; a pipe that still holds bytes is never returned.
class pipe_pool {
public:
    std::error_code get(pipe_pair& out) {
        if (!free_.empty()) {
            out = std::move(free_.back());
            free_.pop_back();
            return {};
        }
        int fds[2];
        if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return sys::last_error();
        out.read_end.reset(fds[0]);
        out.write_end.reset(fds[1]);
        // Best effort: unprivileged users past pipe-user-pages-soft keep the default size.
        ::fcntl(fds[1], F_SETPIPE_SZ, pipe_size);
        return {};
    }
    void put(pipe_pair&& p) {
        if (free_.size() < pool_limit) free_.push_back(std::move(p));
    }

private:
    std::vector<pipe_pair> free_;
};

thread_local pipe_pool pool;

// What the promoter sees of one direction.
struct direction_probe {
    bool parked = false;  // waiting to read, pipe empty, no EOF: stopping here loses nothing
    bool done = false;    // ended (EOF forwarded, or the pair aborted)
};

enum class recv_result { moved, nothing, eof, aborted };

// One recv()+send() of what `from` holds, for when splice() cannot move it: tcp_read_sock() (what
// splice reads with) stops at an urgent mark and never passes it, so a socket with urgent data
// pending stays readable while splice returns EAGAIN, for ever. recvmsg() reads through the mark
// (SO_OOBINLINE, set on every proxied socket: the urgent byte goes on as an ordinary byte of the
// stream, in order) and clears it. Call only with the direction's pipe empty.
net::awaitable<recv_result> recv_past_mark(pair_state& p, net::tcp::socket& from, net::tcp::socket& to,
                                           std::uint64_t& written) {
    using chunk = std::array<char, 64 * 1024>;
    auto buffer = std::make_unique_for_overwrite<chunk>();
    boost::system::error_code ec;
    const std::size_t n = from.read_some(net::asio::buffer(*buffer), ec);
    if (ec == net::asio::error::would_block || ec == net::asio::error::try_again) co_return recv_result::nothing;
    if (ec == net::asio::error::eof) co_return recv_result::eof;
    if (ec) {
        p.abort(p.reset_reason(from));
        co_return recv_result::aborted;
    }
    const bool sent = co_await write_all(p, from, to, buffer->data(), n);
    if (!sent) co_return recv_result::aborted;
    written += n;
    co_return recv_result::moved;
}

net::awaitable<void> splice_direction(pair_state& p, net::tcp::socket& from, net::tcp::socket& to, pipe_pair pipe,
                                      direction_probe* probe = nullptr) {
    direction_probe unused;
    direction_probe& state = probe ? *probe : unused;
    std::uint64_t& written = &to == &p.client ? p.written_to_client : p.written_to_upstream;
    const int in = from.native_handle();
    const int out = to.native_handle();
    std::size_t in_pipe = 0;
    bool eof = false;
    bool woken = false;  // the last readiness wait said `from` is readable, and splice has not moved a byte since
    // The last read was a message, not a bulk chunk: `from` most likely had no more, and the next read would
    // say EAGAIN -- one syscall per message of request/response traffic -- so wait for readiness instead: Asio
    // re-arms the descriptor (EPOLL_CTL_MOD) for every wait, which reports bytes that came meanwhile at once
    // (a read cut short by the pipe's slots, with more queued, costs one wake-up, not a byte). Bulk reads
    // (64 KiB and more) read on until EAGAIN, as before.
    constexpr std::size_t message_read = 64 * 1024;
    bool drained = false;
    while (!p.aborted) {
        if (!eof) {
            ssize_t n = -1;
            if (drained)
                errno = EAGAIN;
            else
                n = ::splice(in, nullptr, pipe.write_end.get(), nullptr, pipe_size, splice_flags);
            drained = false;
            if (n > 0) {
                in_pipe += static_cast<std::size_t>(n);
                woken = false;
                drained = static_cast<std::size_t>(n) < message_read;
            } else if (n == 0) {
                // Not always EOF: at an urgent mark with the FIN already queued behind it, splice reads
                // nothing and reports 0 although bytes are left. recv() tells, and reads past the mark.
                const auto r = co_await recv_past_mark(p, from, to, written);
                if (r == recv_result::eof || r == recv_result::nothing) {
                    eof = true;
                    p.mark_eof(from);
                }
            } else if (errno == EAGAIN) {
                // EAGAIN with bytes in the pipe may only mean the pipe is full: flush first.
                if (in_pipe == 0) {
                    if (woken) {
                        // Readable, yet splice moves nothing: an urgent mark (see recv_past_mark).
                        woken = false;
                        const auto r = co_await recv_past_mark(p, from, to, written);
                        if (r == recv_result::moved || r == recv_result::aborted) continue;
                        if (r == recv_result::eof) {
                            eof = true;
                            p.mark_eof(from);
                            continue;
                        }
                    }
                    state.parked = true;
                    auto [ec] = co_await from.async_wait(net::tcp::socket::wait_read, net::use_tuple);
                    state.parked = false;
                    // Stopped for the move to sockmap: the promoter saw both directions parked here with
                    // empty pipes and cancelled the waits. A wait that completed just before (a FIN came)
                    // stops too, without reading: the hand-off reads what is queued, the EOF included.
                    if (p.promoting && !p.aborted) break;
                    if (ec && !p.aborted) p.abort(p.reset_reason(from));
                    woken = !ec;
                    continue;
                }
            } else if (errno != EINTR) {
                p.abort(p.reset_reason(from));
                break;
            }
        }
        while (in_pipe > 0 && !p.aborted) {
            ssize_t m = ::splice(pipe.read_end.get(), nullptr, out, nullptr, in_pipe, splice_flags);
            if (m > 0) {
                in_pipe -= static_cast<std::size_t>(m);
                written += static_cast<std::uint64_t>(m);
            } else if (m < 0 && errno == EAGAIN) {
                co_await wait_writable(p, from, to);  // on a failure of either socket, aborts the pair
            } else if (m < 0 && errno == EINTR) {
                continue;
            } else {
                p.abort(p.reset_reason(to));
            }
        }
        if (eof && in_pipe == 0 && !p.aborted) {
            // Half-close only once the pipe is empty: every byte read has been sent on.
            sys::shutdown_write(out);
            break;
        }
    }
    state.done = true;
    if (in_pipe == 0) pool.put(std::move(pipe));
}

// Both receive queues empty: a parked direction has no read completion queued that carries data
// (readiness for bytes that arrived earlier would show here), so stopping it loses nothing. A
// queued EOF or error is fine: that direction then ends on its own and the insert refuses the
// pair (no longer ESTABLISHED), which goes back to splice.
bool receive_queues_empty(pair_state& p) {
    int a = 0, b = 0;
    if (sys::receive_queue_bytes(p.client.native_handle(), a) || sys::receive_queue_bytes(p.upstream.native_handle(), b))
        return false;
    return a == 0 && b == 0;
}

// Samples the pair every tick, beside its directions (a plain timer handler: see pair_timer), and
// stops both for the move to sockmap once the pair has been idle -- no byte either way for
// idle_ticks_before_move ticks -- with both directions parked.
//
// Only idle pairs move: the sockmap path's egress redirect hands every skb to a kworker
// (sk_psock_backlog), which per small message costs about twice the kernel CPU of splice and an extra
// scheduling hop, so request/response traffic (keep-alive HTTP, redis, database pools) and bulk
// transfers are better off where they are. An idle pair gains from the move: it holds no pipes and
// wakes nothing in userspace, and a later sporadic message takes the short hop.
class promoter {
public:
    promoter(pair_state& p, const direction_probe& forward, const direction_probe& backward)
        : p_(p), forward_(forward), backward_(backward), timer_(p.client.get_executor()), last_(total()) {
        arm(tick);
    }

private:
    static constexpr std::chrono::milliseconds tick{100};
    static constexpr int idle_ticks_before_move = 2;  // idle for 200..300 ms; short connections end before that
    // An idle pair whose directions are not parked is blocked on a slow receiver, which can last:
    // look again less and less often, up to this.
    static constexpr std::chrono::milliseconds blocked_backoff_max{1000};

    std::uint64_t total() const { return p_.written_to_client + p_.written_to_upstream; }
    void arm(std::chrono::milliseconds wait) {
        timer_.after(wait, [this] { on_tick(); });
    }
    void on_tick();

    pair_state& p_;
    const direction_probe& forward_;
    const direction_probe& backward_;
    pair_timer timer_;
    std::uint64_t last_;
    std::chrono::milliseconds blocked_wait_ = tick;
    int idle_ticks_ = 0, retries_ = 0;
};

void promoter::on_tick() {
    using namespace std::chrono_literals;
    // Ended, or half-closed (stays on splice): no more ticks.
    if (p_.aborted || forward_.done || backward_.done) return;
    const std::uint64_t now_total = total();
    if (now_total != last_) {
        idle_ticks_ = 0;
        retries_ = 0;
    } else if (retries_ == 0) {
        ++idle_ticks_;
    }
    last_ = now_total;
    const bool parked = forward_.parked && backward_.parked;
    const bool idle = idle_ticks_ >= idle_ticks_before_move;
    if (idle && parked && receive_queues_empty(p_)) {
        p_.promoting = true;
        boost::system::error_code ignored;
        p_.client.cancel(ignored);  // wakes both parked reads; they stop without reading
        p_.upstream.cancel(ignored);
        return;
    }
    std::chrono::milliseconds wait = tick;
    if (idle && parked && ++retries_ < 10) {
        wait = 1ms;  // parked, but bytes are on their way through: look again soon, a few times
    } else if (idle && !parked) {
        retries_ = 0;
        blocked_wait_ = std::min<std::chrono::milliseconds>(blocked_wait_ * 2, blocked_backoff_max);
        wait = blocked_wait_;
    } else {
        retries_ = 0;
        blocked_wait_ = tick;
    }
    arm(wait);
}

}  // namespace

std::error_code take_pipes(splice_pipes& out) {
    if (auto ec = pool.get(out.forward)) return ec;
    if (auto ec = pool.get(out.backward)) {
        out.forward = {};  // closed, not pooled: out of descriptors, every one freed counts
        return ec;
    }
    return {};
}

net::awaitable<bool> run_splice_promotable(pair_state& p, splice_pipes pipes) {
    direction_probe forward, backward;
    promoter watch(p, forward, backward);
    co_await run_pair(p, splice_direction(p, p.client, p.upstream, std::move(pipes.forward), &forward),
                      splice_direction(p, p.upstream, p.client, std::move(pipes.backward), &backward));
    co_return p.promoting && !p.aborted;
}

net::awaitable<void> run_splice(pair_state& p, splice_pipes pipes) {
    co_await run_pair(p, splice_direction(p, p.client, p.upstream, std::move(pipes.forward)),
                      splice_direction(p, p.upstream, p.client, std::move(pipes.backward)));
}

bool splice_available() {
    static const bool available = [] {
        int fds[2];
        if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return false;
        sys::unique_fd r(fds[0]), w(fds[1]);
        int s = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (s < 0) return false;
        sys::unique_fd sock(s);
        // An unconnected TCP socket answers ENOTCONN when splice is wired up for TCP,
        // EINVAL/ENOSYS when it is not.
        ssize_t n = ::splice(s, nullptr, w.get(), nullptr, 1, SPLICE_F_NONBLOCK);
        return n >= 0 || (errno != EINVAL && errno != ENOSYS);
    }();
    return available;
}

}  // namespace spliced::datapath
