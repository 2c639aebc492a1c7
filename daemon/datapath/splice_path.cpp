// The splice path: socket -> pipe -> socket for bulk reads.
#include "datapath/splice_path.hpp"

#include <algorithm>
#include <cerrno>
#include <fcntl.h>

namespace spliced::datapath {

namespace {

constexpr unsigned splice_flags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;

bool would_block(int err) { return err == EAGAIN || err == EWOULDBLOCK; }

}  // namespace

step flush_pipe(direction& d, pipe_pool& pool) {
    while (d.in_pipe > 0) {
        const ssize_t n = ::splice(d.pipe.read_end.get(), nullptr, d.to->fd(), nullptr, d.in_pipe, splice_flags);
        if (n > 0) {
            d.in_pipe -= static_cast<std::uint32_t>(n);
            d.sent += static_cast<std::uint64_t>(n);
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && would_block(errno)) {
            d.to->write_would_block();
            return step::blocked;
        } else {
            return step::to_failed;
        }
    }
    if (d.pipe) {
        pool.put(std::move(d.pipe));
        d.to->wrote_all();
    }
    return step::go_on;
}

step splice_read(direction& d, pipe_pool& pool, std::size_t& budget) {
    if (!d.pipe && pool.get(d.pipe)) {
        d.may_splice = d.bulk = false;  // out of descriptors: this direction copies, which needs none
        return step::go_on;
    }
    const ssize_t n = ::splice(d.from->fd(), nullptr, d.pipe.write_end.get(), nullptr, pipe_size, splice_flags);
    if (n > 0) {
        const auto got = static_cast<std::size_t>(n);
        d.in_pipe = static_cast<std::uint32_t>(got);
        d.read += got;
        budget -= std::min(budget, got);
        d.bulk = got >= copy_buffer_size;  // a smaller read: back to copying
        return flush_pipe(d, pool);
    }
    pool.put(std::move(d.pipe));  // empty
    if (n == 0) {
        // EOF, unless an urgent mark stops splice short of the FIN: then recv() reads through the mark.
        if (d.from->peer_closed() && !d.from->urgent()) d.eof = true;
        else d.bulk = false;
        return step::go_on;
    }
    if (errno == EINTR) return step::go_on;
    if (would_block(errno)) {
        if (d.from->urgent()) {
            d.bulk = false;  // readable, yet splice stops at the mark: recv() reads on through it
            return step::go_on;
        }
        d.from->read_would_block();
        return step::blocked;
    }
    if (errno == EINVAL || errno == ENOSYS) {
        // No splice for this socket (the pipe is empty: nothing is lost): copy, never a reset for it.
        d.may_splice = d.bulk = false;
        return step::go_on;
    }
    return step::from_failed;
}

}  // namespace spliced::datapath
