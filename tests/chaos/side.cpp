// Running one side of a scenario: a non-blocking socket driven by one poll() loop that writes the plan's steps and
// reads as its read policy allows, comparing every byte read with the peer's stream.
#include "side.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <linux/sockios.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

namespace chaos {

const char* to_string(read_end e) {
    switch (e) {
    case read_end::none: return "none";
    case read_end::eof: return "EOF";
    case read_end::reset: return "reset";
    case read_end::error: return "error";
    case read_end::timeout: return "no end (timeout)";
    }
    return "?";
}

double ms_since(clock::time_point t0, clock::time_point t) {
    return std::chrono::duration<double, std::milli>(t - t0).count();
}

void trace(side_result& r, clock::time_point t0, const std::string& text) {
    char head[32];
    std::snprintf(head, sizeof head, "+%.1fms ", ms_since(t0, clock::now()));
    r.trace.push_back(head + text);
}

namespace {

std::string errno_name(int e) { return std::string(std::strerror(e)) + " (errno " + std::to_string(e) + ")"; }

int unread_bytes(int fd) {
    int n = 0;
    return ::ioctl(fd, SIOCINQ, &n) == 0 ? n : -1;
}

class side_runner {
public:
    side_runner(it::unique_fd& fd, const side_setup& s, side_result& r) : fd_(fd), s_(s), r_(r), plan_(s.plan) {}

    void run() {
        it::set_nonblocking(fd_.get(), true);
        r_.started = clock::now();
        log("starts");
        for (;;) {
            const auto now = clock::now();
            if (now >= s_.deadline) {
                r_.hit_cap = true;
                r_.cap_in = what_now();
                if (!reading_over_ && plan_.end == ending::drain && steps_done()) r_.end = read_end::timeout;
                log("scenario cap reached while " + r_.cap_in + "; closing");
                fd_.reset();
                return;
            }
            if (steps_done() && finish()) return;
            bool progress = read_some(now);
            if (!steps_done()) progress |= step(now);
            if (!progress) wait(now);
        }
    }

private:
    void log(const std::string& text) { trace(r_, s_.t0, std::string(s_.name) + " " + text); }

    bool steps_done() const { return idx_ >= plan_.steps.size() || writes_failed_; }

    std::string what_now() const {
        if (!steps_done()) {
            const auto& st = plan_.steps[idx_];
            switch (st.kind) {
            case step_kind::write:
                return "writing (step " + std::to_string(idx_) + ", " + std::to_string(step_sent_) + " of " +
                       std::to_string(st.n) + " B, " + std::to_string(r_.sent) + " sent in all" +
                       (write_blocked_ ? ", blocked" : "") + ")";
            case step_kind::urgent: return "sending the urgent byte";
            case step_kind::pause: return "pausing";
            case step_kind::wait_peer: return "waiting for the peer to speak";
            case step_kind::shutdown: return "shutting down";
            }
        }
        return "waiting for EOF/RST after " + std::to_string(r_.received) + " B received";
    }

    // The ending, once the steps are done; true when the side is over.
    bool finish() {
        switch (plan_.end) {
        case ending::close: {
            const int unread = unread_bytes(fd_.get());
            r_.unread_at_close = unread;
            if (!r_.fin && unread == 0) {
                r_.fin = true;
                r_.fin_at = clock::now();
            }
            r_.closed = true;
            log("close() with " + std::to_string(unread) + " B unread");
            fd_.reset();
            return true;
        }
        case ending::reset: {
            linger l{1, 0};
            ::setsockopt(fd_.get(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
            r_.reset = true;
            log("reset (SO_LINGER 0 + close)");
            fd_.reset();
            return true;
        }
        case ending::drain:
            if (!reading_over_) return false;
            r_.unread_at_close = unread_bytes(fd_.get());
            // After EOF nothing more can arrive: this close sends a FIN. After an RST it sends nothing.
            if (!r_.fin && r_.end == read_end::eof && r_.unread_at_close == 0) {
                r_.fin = true;
                r_.fin_at = clock::now();
            }
            r_.closed = true;
            log("close() after " + std::string(to_string(r_.end)));
            fd_.reset();
            return true;
        }
        return true;
    }

    read_mode mode() const {
        // Draining means reading: a side that read late or never reads now.
        if (steps_done() && plan_.end == ending::drain &&
            (plan_.reads == read_mode::late || plan_.reads == read_mode::never))
            return read_mode::eager;
        return plan_.reads;
    }

    // The end of the stall `now` is in, if any.
    std::optional<clock::time_point> stalled_until(clock::time_point now) const {
        for (auto& st : plan_.stalls) {
            auto from = r_.started + std::chrono::milliseconds(st.at_ms);
            auto to = from + std::chrono::milliseconds(st.len_ms);
            if (now >= from && now < to) return to;
        }
        return std::nullopt;
    }

    // How many bytes the side may read now (0: none).
    std::size_t read_allowance(clock::time_point now) {
        if (reading_over_) return 0;
        const read_mode m = mode();
        if (m == read_mode::never || (m == read_mode::late && !steps_done())) return 0;
        if (auto until = stalled_until(now)) {
            if (!in_stall_) log("stall (not reading) until +" + std::to_string(static_cast<long>(ms_since(s_.t0, *until))) + "ms");
            in_stall_ = true;
            return 0;
        }
        if (in_stall_) log("stall over");
        in_stall_ = false;
        if (m == read_mode::slow) {
            if (now >= slow_next_) {
                slow_left_ = plan_.slow_chunk;
                slow_next_ = now + std::chrono::milliseconds(plan_.slow_every_ms);
            }
            return slow_left_;
        }
        return in_.size() * 4;
    }

    bool read_some(clock::time_point now) {
        std::size_t allowance = read_allowance(now);
        bool progress = false;
        while (allowance > 0 && !reading_over_) {
            const std::size_t want = std::min(allowance, in_.size());
            ssize_t n = ::recv(fd_.get(), in_.data(), want, MSG_DONTWAIT);
            if (n > 0) {
                check_bytes(static_cast<std::size_t>(n));
                allowance -= static_cast<std::size_t>(n);
                if (mode() == read_mode::slow) slow_left_ -= std::min<std::size_t>(slow_left_, static_cast<std::size_t>(n));
                progress = true;
                continue;
            }
            if (n == 0) {
                r_.end_at = clock::now();
                reading_over_ = true;
                if (r_.send_errno == ECONNRESET || r_.send_errno == EPIPE) {
                    // The failed send() took the socket's error (an RST came): after it, recv() reports a plain
                    // end of stream. That is the reset, not a FIN.
                    r_.end = read_end::reset;
                    r_.end_errno = r_.send_errno;
                    log("read 0 after " + std::to_string(r_.received) + " B, after a send() failed: the reset");
                } else {
                    r_.end = read_end::eof;
                    log("read EOF after " + std::to_string(r_.received) + " B");
                }
                return true;
            }
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            const int e = errno;
            r_.end = (e == ECONNRESET || e == EPIPE) ? read_end::reset : read_end::error;
            r_.end_errno = e;
            r_.end_at = clock::now();
            reading_over_ = true;
            log("read error " + errno_name(e) + " after " + std::to_string(r_.received) + " B");
            return true;
        }
        if (progress) log("received " + std::to_string(r_.received) + " B in all");
        return progress;
    }

    void check_bytes(std::size_t n) {
        if (!r_.mismatch_at) {
            s_.peer.fill(r_.received, expect_.data(), n);
            if (std::memcmp(in_.data(), expect_.data(), n) != 0) {
                std::size_t i = 0;
                while (in_[i] == expect_[i]) ++i;
                r_.mismatch_at = r_.received + i;
                r_.got = in_[i];
                r_.want = expect_[i];
                log("MISMATCH at byte " + std::to_string(*r_.mismatch_at));
            }
        }
        r_.received += n;
    }

    void next_step() {
        ++idx_;
        step_sent_ = 0;
        step_begun_ = false;
    }

    void send_failed(int e) {
        r_.send_errno = e;
        writes_failed_ = true;
        log("send failed: " + errno_name(e) + " after " + std::to_string(r_.sent) + " B; skipping to the ending");
    }

    // Works on the current step; true on progress.
    bool step(clock::time_point now) {
        const auto& st = plan_.steps[idx_];
        if (!step_begun_) {
            step_begun_ = true;
            step_started_ = now;
        }
        switch (st.kind) {
        case step_kind::write:
        case step_kind::urgent: {
            const bool urgent = st.kind == step_kind::urgent;
            const std::size_t k = urgent ? 1 : static_cast<std::size_t>(std::min<std::uint64_t>(st.n - step_sent_, out_.size()));
            s_.own.fill(r_.sent, out_.data(), k);
            ssize_t n = ::send(fd_.get(), out_.data(), k, MSG_NOSIGNAL | MSG_DONTWAIT | (urgent ? MSG_OOB : 0));
            if (n > 0) {
                if (write_blocked_) log("send unblocked at " + std::to_string(r_.sent) + " B");
                write_blocked_ = false;
                r_.sent += static_cast<std::uint64_t>(n);
                step_sent_ += static_cast<std::uint64_t>(n);
                if (urgent || step_sent_ == st.n) {
                    log(std::string(urgent ? "sent the URGENT byte" : "wrote " + std::to_string(st.n) + " B") +
                        ", " + std::to_string(r_.sent) + " B in all");
                    next_step();
                }
                return true;
            }
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                if (!write_blocked_) log("send blocked (EAGAIN) at " + std::to_string(r_.sent) + " B");
                write_blocked_ = true;
                return false;
            }
            if (n < 0 && errno == EINTR) return true;
            send_failed(n < 0 ? errno : EIO);
            return true;
        }
        case step_kind::pause:
            if (now >= step_started_ + std::chrono::milliseconds(st.n)) {
                next_step();
                return true;
            }
            return false;
        case step_kind::wait_peer: {
            const bool spoke = r_.received > 0 || reading_over_ || unread_bytes(fd_.get()) != 0 || hup_;
            if (spoke || now >= step_started_ + std::chrono::milliseconds(st.n)) {
                log(spoke ? "the peer spoke first" : "the peer did not speak: going first");
                next_step();
                return true;
            }
            return false;
        }
        case step_kind::shutdown: {
            const auto at = clock::now();
            if (::shutdown(fd_.get(), SHUT_WR) == 0) {
                r_.shut = true;
                if (!r_.fin) {
                    r_.fin = true;
                    r_.fin_at = at;
                }
                log("shutdown(SHUT_WR) after " + std::to_string(r_.sent) + " B");
            } else {
                log("shutdown(SHUT_WR) failed: " + errno_name(errno));
            }
            next_step();
            return true;
        }
        }
        return false;
    }

    // Nothing moved: sleeps in poll() until the socket or the next timer has something.
    void wait(clock::time_point now) {
        clock::time_point wake = s_.deadline;
        auto sooner = [&](clock::time_point t) { wake = std::min(wake, t); };
        short events = 0;
        if (!steps_done()) {
            const auto& st = plan_.steps[idx_];
            if (st.kind == step_kind::pause) sooner(step_started_ + std::chrono::milliseconds(st.n));
            if (st.kind == step_kind::wait_peer) {
                sooner(step_started_ + std::chrono::milliseconds(st.n));
                events |= POLLIN;  // readable is all it waits for
            }
            if (write_blocked_) events |= POLLOUT;
        }
        const read_mode m = mode();
        if (!reading_over_ && m != read_mode::never && !(m == read_mode::late && !steps_done())) {
            if (auto until = stalled_until(now)) sooner(*until);
            else if (m == read_mode::slow && slow_left_ == 0) sooner(slow_next_);
            else events |= POLLIN;
        }
        // Unless reading, a hang-up or error already seen would wake poll() at once, again and again.
        const bool watch = events != 0 && (!hup_ || (events & POLLIN));
        pollfd p{watch ? fd_.get() : -1, events, 0};
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(wake - now).count() + 1;
        int r = ::poll(&p, 1, static_cast<int>(std::clamp<long long>(left, 0, 1000)));
        if (r == 1 && (p.revents & (POLLHUP | POLLERR)) && !hup_) {
            hup_ = true;
            log(std::string("poll: ") + (p.revents & POLLERR ? "POLLERR" : "POLLHUP"));
        }
    }

    it::unique_fd& fd_;
    const side_setup& s_;
    side_result& r_;
    const side_plan& plan_;
    std::size_t idx_ = 0;
    std::uint64_t step_sent_ = 0;
    bool step_begun_ = false;
    clock::time_point step_started_{};
    bool write_blocked_ = false, writes_failed_ = false, reading_over_ = false, hup_ = false, in_stall_ = false;
    clock::time_point slow_next_{};
    std::size_t slow_left_ = 0;
    std::vector<std::uint8_t> out_ = std::vector<std::uint8_t>(256 * 1024);
    std::vector<std::uint8_t> in_ = std::vector<std::uint8_t>(64 * 1024);
    std::vector<std::uint8_t> expect_ = std::vector<std::uint8_t>(64 * 1024);
};

}  // namespace

void run_side(it::unique_fd& fd, const side_setup& setup, side_result& r) {
    side_runner(fd, setup, r).run();
    // A long trace keeps its start and its end.
    constexpr std::size_t head = 80, tail = 220;
    if (r.trace.size() > head + tail + 1) {
        const std::size_t dropped = r.trace.size() - head - tail;
        r.trace.erase(r.trace.begin() + head, r.trace.end() - tail);
        r.trace.insert(r.trace.begin() + head, "... (" + std::to_string(dropped) + " trace lines left out)");
    }
}

}  // namespace chaos
