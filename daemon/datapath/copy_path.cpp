// The copy path: recv() into the worker's buffer, send() on at once.
#include "datapath/copy_path.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sys/socket.h>

namespace spliced::datapath {

void held_bytes::hold(std::span<const char> bytes) {
    if (bytes.empty()) return;
    data_ = std::make_unique_for_overwrite<char[]>(bytes.size());
    std::memcpy(data_.get(), bytes.data(), bytes.size());
    off_ = 0;
    len_ = static_cast<std::uint32_t>(bytes.size());
}

void held_bytes::consumed(std::size_t n) {
    off_ += static_cast<std::uint32_t>(n);
    if (off_ < len_) return;
    data_.reset();
    off_ = len_ = 0;
}

namespace {

bool would_block(int err) { return err == EAGAIN || err == EWOULDBLOCK; }

// send() on `to`; returns the bytes taken (0 when full), or -1 on failure.
ssize_t send_some(direction& d, std::span<const char> bytes) {
    for (;;) {
        const ssize_t n = ::send(d.to->fd(), bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n >= 0) return n;
        if (errno == EINTR) continue;
        return would_block(errno) ? 0 : -1;
    }
}

}  // namespace

step flush_held(direction& d) {
    while (!d.held.empty()) {
        const auto rest = d.held.rest();
        const ssize_t n = send_some(d, rest);
        if (n < 0) return step::to_failed;
        d.sent += static_cast<std::uint64_t>(n);
        d.held.consumed(static_cast<std::size_t>(n));
        if (!d.held.empty()) {
            d.to->write_would_block();
            return step::blocked;
        }
        d.to->wrote_all();  // it took everything: it has room, whether or not its event came yet
    }
    return step::go_on;
}

step copy_read(direction& d, std::span<char> buffer, std::size_t& budget) {
    const ssize_t n = ::recv(d.from->fd(), buffer.data(), buffer.size(), MSG_DONTWAIT);
    if (n == 0) {
        d.eof = true;
        d.from->read_would_block();
        return step::go_on;
    }
    if (n < 0) {
        if (errno == EINTR) return step::go_on;
        if (!would_block(errno)) return step::from_failed;
        d.from->read_would_block();  // ran dry: the mark, if there was one, is behind us
        return step::blocked;
    }
    const auto got = static_cast<std::size_t>(n);
    d.read += got;
    budget -= std::min(budget, got);
    d.bulk = d.may_splice && got == buffer.size();
    // A short read took every byte queued (recv stops short only at a FIN or an urgent mark, which stay
    // latched): the next event says when there is more, with no read to find EAGAIN.
    if (got < buffer.size() && !d.from->peer_closed() && !d.from->urgent()) d.from->read_drained();
    const ssize_t sent = send_some(d, {buffer.data(), got});
    if (sent < 0) return step::to_failed;
    d.sent += static_cast<std::uint64_t>(sent);
    if (static_cast<std::size_t>(sent) == got) return step::go_on;
    d.held.hold({buffer.data() + sent, got - static_cast<std::size_t>(sent)});
    d.to->write_would_block();
    return step::blocked;
}

}  // namespace spliced::datapath
