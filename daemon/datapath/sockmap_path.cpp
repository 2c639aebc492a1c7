// The sockmap path: what userspace does for a direction the verdict redirects.
#include "datapath/sockmap_path.hpp"

#include "sys/socket.hpp"

#include <cerrno>
#include <sys/socket.h>

namespace spliced::datapath {

namespace {

// A slow reader keeps `to`'s send queue full and is bounded by the idle timeout; no progress while that
// queue is empty means the bytes are stranded in the kernel.
constexpr auto stranded_after = std::chrono::seconds(3);
// The backlog's kworker runs when the redirect queues an skb and when `to` gets write space
// (sk_psock_write_space). Should that wake-up be lost, with `to`'s send queue empty nothing would run it
// again: setting `to`'s send buffer (to the size it has) calls its sk_write_space, which schedules the
// backlog.
constexpr auto nudge_after = std::chrono::milliseconds(250);

}  // namespace

peeked peek(int fd) {
    char byte;
    const ssize_t n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0) return peeked::bytes;
    if (n == 0) return peeked::eof;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return peeked::nothing;
    return peeked::error;
}

void check_egress(sockmap_engine& engine, sockmap_record::side& s, int to_fd, sockmap_record::time_point now) {
    if (now - s.last_egress_check < egress_check_interval) return;
    s.last_egress_check = now;
    std::uint64_t queued = 0;
    if (sys::bytes_queued_total(to_fd, queued)) return;
    const std::uint64_t taken = queued - s.to_inserted_total;
    if (taken == s.budget_taken) return;  // nothing new: the ceiling stands
    if (engine.set_budget(s.from_cookie, taken + egress_backlog_limit)) return;
    s.budget_taken = taken;
}

drained drain_check(sockmap_record::side& s, int to_fd, std::uint64_t target, sockmap_record::time_point now,
                    std::uint64_t& stranded, std::uint32_t& nudges) {
    sys::tcp_stats dst;
    int unsent = 0;
    if (sys::tcp_stats_of(to_fd, dst) || sys::send_queue_bytes(to_fd, unsent)) return drained::error;
    const std::uint64_t queued = dst.bytes_acked + static_cast<std::uint64_t>(unsent);  // bytes_queued_total()
    if (queued >= target) return drained::yes;
    if (!dst.can_send()) return drained::peer_gone;  // reset: what is still in its backlog never arrives
    if (s.last_progress == sockmap_record::time_point{} || queued != s.last_queued) {
        s.last_queued = queued;
        s.last_progress = now;
    } else if (unsent == 0 && now - s.last_progress > stranded_after) {
        stranded = target - queued;  // never end this cleanly: a FIN now would pass a short stream off as whole
        return drained::stranded;
    } else if (unsent == 0 && now - s.last_progress > nudge_after && now - s.last_nudge > nudge_after) {
        s.last_nudge = now;
        int size = 0;  // SO_SNDBUF reads back twice what was set
        if (!sys::send_buffer(to_fd, size) && size > 0) {
            sys::set_send_buffer(to_fd, size / 2);
            ++nudges;
        }
    }
    return drained::not_yet;
}

std::optional<std::uint64_t> unread_before_fin(const sockmap_engine& engine, const sockmap_record::side& s,
                                               int from_fd, std::uint64_t user_read) {
    sys::tcp_stats src;
    std::uint64_t redirected = 0;
    if (sys::tcp_stats_of(from_fd, src) || engine.redirected(s.from_cookie, redirected)) return std::nullopt;
    // tcpi_bytes_received counts the FIN as one more byte.
    const std::uint64_t payload = src.bytes_received > 0 ? src.bytes_received - 1 : 0;
    const std::uint64_t accounted = user_read + redirected;
    return payload > accounted ? payload - accounted : 0;
}

drained late_check(sockmap_record::side& s, int from_fd, std::uint64_t unread, sockmap_record::time_point now,
                   std::uint64_t& stranded) {
    if (unread == 0) {
        s.late_since = {};
        return drained::yes;
    }
    sys::tcp_stats own;
    int unsent = 0;
    if (sys::tcp_stats_of(from_fd, own) || sys::send_queue_bytes(from_fd, unsent)) return drained::error;
    const std::uint64_t queued = own.bytes_acked + static_cast<std::uint64_t>(unsent);
    if (s.late_since == sockmap_record::time_point{} || unread != s.late_unread || queued != s.late_queued) {
        s.late_unread = unread;
        s.late_queued = queued;
        s.late_since = now;
    } else if (unsent == 0 && now - s.late_since > stranded_after) {
        stranded = unread;
        return drained::stranded;
    }
    return drained::not_yet;
}

std::optional<std::uint64_t> fin_target(const sockmap_record::side& s, int from_fd) {
    sys::tcp_stats src;
    if (sys::tcp_stats_of(from_fd, src)) return std::nullopt;
    // tcpi_bytes_received counts the FIN as one more byte.
    const std::uint64_t payload = src.bytes_received > 0 ? src.bytes_received - 1 : 0;
    return s.to_base + payload;
}

std::optional<std::uint64_t> redirected_target(const sockmap_engine& engine, const sockmap_record::side& s) {
    std::uint64_t redirected = 0;
    if (engine.redirected(s.from_cookie, redirected)) return std::nullopt;
    return s.to_inserted_total + redirected;
}

}  // namespace spliced::datapath
