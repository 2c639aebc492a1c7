// Thin, errno-capturing wrappers over the socket options and ioctls the data paths rely on.
#include "sys/socket.hpp"

#include <cerrno>
#include <cstdlib>
#include <dirent.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

namespace spliced::sys {

namespace {
// Kernel TCP states (include/net/tcp_states.h); not exported by a userspace header.
constexpr std::uint8_t tcp_established = 1;
constexpr std::uint8_t tcp_close_wait = 8;
}  // namespace

bool tcp_stats::established() const { return state == tcp_established; }
bool tcp_stats::can_send() const { return state == tcp_established || state == tcp_close_wait; }

std::error_code tcp_stats_of(int fd, tcp_stats& out) {
    struct tcp_info info {};
    socklen_t len = sizeof(info);
    if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return last_error();
    out.state = info.tcpi_state;
    out.bytes_acked = info.tcpi_bytes_acked;
    out.bytes_received = info.tcpi_bytes_received;
    return {};
}

std::error_code socket_cookie(int fd, std::uint64_t& out) {
    socklen_t len = sizeof(out);
    if (::getsockopt(fd, SOL_SOCKET, SO_COOKIE, &out, &len) != 0) return last_error();
    return {};
}

std::error_code set_rcvlowat(int fd, int bytes) {
    if (::setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &bytes, sizeof(bytes)) != 0) return last_error();
    return {};
}

std::error_code set_keepalive(int fd, int idle_s, int interval_s, int count) {
    const int on = 1;
    if (::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on) != 0 ||
        ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle_s, sizeof idle_s) != 0 ||
        ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval_s, sizeof interval_s) != 0 ||
        ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count) != 0)
        return last_error();
    return {};
}

std::error_code set_nodelay(int fd, bool on) {
    int v = on ? 1 : 0;
    if (::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof(v)) != 0) return last_error();
    return {};
}

std::error_code set_send_buffer(int fd, int bytes) {
    if (::setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &bytes, sizeof(bytes)) == 0) return {};
    if (::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes)) != 0) return last_error();
    return {};
}

std::error_code send_buffer(int fd, int& out) {
    socklen_t len = sizeof(out);
    if (::getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &out, &len) != 0) return last_error();
    return {};
}

std::error_code set_linger_reset(int fd) {
    linger l{1, 0};
    if (::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l)) != 0) return last_error();
    return {};
}

std::error_code send_queue_bytes(int fd, int& out) {
    if (::ioctl(fd, SIOCOUTQ, &out) != 0) return last_error();
    return {};
}

std::error_code receive_queue_bytes(int fd, int& out) {
    if (::ioctl(fd, SIOCINQ, &out) != 0) return last_error();
    return {};
}

std::error_code shutdown_write(int fd) {
    if (::shutdown(fd, SHUT_WR) != 0) return last_error();
    return {};
}

short poll_events(int fd) {
    pollfd p{fd, 0, 0};
    return ::poll(&p, 1, 0) == 1 ? p.revents : 0;
}

std::error_code set_oob_inline(int fd) {
    int one = 1;
    if (::setsockopt(fd, SOL_SOCKET, SO_OOBINLINE, &one, sizeof(one)) != 0) return last_error();
    return {};
}

std::error_code bytes_queued_total(int fd, std::uint64_t& out) {
    tcp_stats info;
    if (auto ec = tcp_stats_of(fd, info)) return ec;
    int outq = 0;
    if (auto ec = send_queue_bytes(fd, outq)) return ec;
    out = info.bytes_acked + static_cast<std::uint64_t>(outq);
    return {};
}

int reset_open_tcp_sockets() {
    DIR* dir = ::opendir("/proc/self/fd");
    if (!dir) return 0;
    int reset = 0;
    while (const dirent* e = ::readdir(dir)) {
        char* end = nullptr;
        const long fd = std::strtol(e->d_name, &end, 10);
        if (end == e->d_name || *end != '\0' || fd == ::dirfd(dir)) continue;
        int domain = 0, type = 0, listening = 0;
        socklen_t len = sizeof(int);
        if (::getsockopt(static_cast<int>(fd), SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) continue;
        if (domain != AF_INET && domain != AF_INET6) continue;
        len = sizeof(int);
        if (::getsockopt(static_cast<int>(fd), SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM) continue;
        len = sizeof(int);
        if (::getsockopt(static_cast<int>(fd), SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || listening) continue;
        if (!set_linger_reset(static_cast<int>(fd))) ++reset;
    }
    ::closedir(dir);
    return reset;
}

}  // namespace spliced::sys
