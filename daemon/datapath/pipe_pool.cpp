// The per-worker pool of empty pipes, and whether splice(2) works on TCP sockets here at all.
#include "datapath/pipe_pool.hpp"

#include "sys/socket.hpp"

#include <cerrno>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

namespace spliced::datapath {

std::error_code pipe_pool::get(pipe_pair& out) {
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

void pipe_pool::put(pipe_pair&& p) {
    if (free_.size() < limit) free_.push_back(std::move(p));
    p = {};  // closed if it was not kept
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
