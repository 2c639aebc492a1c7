// Thin, errno-capturing wrappers over the socket options and ioctls the data paths rely on.
#pragma once

#include <cstdint>
#include <system_error>

namespace spliced::sys {

// errno of the call just made, as an error_code.
inline std::error_code last_error() { return {errno, std::system_category()}; }

// The TCP_INFO fields spliced uses (the kernel's struct, not glibc's shorter one).
struct tcp_stats {
    std::uint8_t state = 0;                  // TCP_ESTABLISHED, TCP_CLOSE_WAIT, ...
    std::uint64_t bytes_acked = 0;           // sent and acknowledged by the peer
    std::uint64_t bytes_received = 0;        // received in order
    bool established() const;
    bool can_send() const;                   // ESTABLISHED or CLOSE_WAIT
};

std::error_code tcp_stats_of(int fd, tcp_stats& out);
std::error_code socket_cookie(int fd, std::uint64_t& out);
std::error_code set_rcvlowat(int fd, int bytes);
std::error_code set_nodelay(int fd, bool on);
// SO_KEEPALIVE with its first probe after `idle_s` idle seconds, then one every `interval_s`; `count` unanswered
// probes reset the connection.
std::error_code set_keepalive(int fd, int idle_s, int interval_s, int count);
// Fixes the send buffer at `bytes` (the kernel doubles it for overhead): SO_SNDBUFFORCE, which
// passes net.core.wmem_max with CAP_NET_ADMIN, else SO_SNDBUF capped by wmem_max.
std::error_code set_send_buffer(int fd, int bytes);
std::error_code send_buffer(int fd, int& out);
// SO_LINGER {1, 0}: the next close() sends RST instead of FIN.
std::error_code set_linger_reset(int fd);
// set_linger_reset() on every TCP socket the process has open, listeners aside; returns how many: at exit,
// a peer whose transfer was cut must not take the FIN a plain close sends for the clean end of a stream.
int reset_open_tcp_sockets();
// Bytes in the send queue not yet acknowledged by the peer (SIOCOUTQ).
std::error_code send_queue_bytes(int fd, int& out);
// Bytes waiting in the receive queue (SIOCINQ). Never on a socket that is in the SOCKHASH.
std::error_code receive_queue_bytes(int fd, int& out);
std::error_code shutdown_write(int fd);
// poll(2) events of `fd` right now (0 on failure). Unlike SO_ERROR or a read, this leaves a pending error in place.
short poll_events(int fd);
// SO_OOBINLINE: urgent data stays in the stream, read in order like any other byte.
std::error_code set_oob_inline(int fd);

// Bytes the socket has ever queued for sending: tcpi_bytes_acked + SIOCOUTQ.
std::error_code bytes_queued_total(int fd, std::uint64_t& out);

}  // namespace spliced::sys
