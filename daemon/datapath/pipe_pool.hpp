// The pipes the splice path moves bulk reads through: taken from a per-worker pool when a read fills the copy
// buffer, given back as soon as they are empty.
#pragma once

#include "sys/fd.hpp"

#include <cstddef>
#include <system_error>
#include <vector>

namespace spliced::datapath {

// One pipe.
struct pipe_pair {
    sys::unique_fd read_end;
    sys::unique_fd write_end;
    explicit operator bool() const { return static_cast<bool>(write_end); }
};

// Capacity asked of every pipe (F_SETPIPE_SZ); what one splice read may move at most.
inline constexpr int pipe_size = 256 * 1024;

// Empty pipes of one worker; a pipe that still holds bytes is never put back.
class pipe_pool {
public:
    // Out of descriptors (pipe2: EMFILE, ENFILE) it gives none and says why: the direction copies instead.
    std::error_code get(pipe_pair& out);
    void put(pipe_pair&& p);
    std::size_t size() const { return free_.size(); }
    // Empty pipes kept at most (two descriptors each); more are closed.
    static constexpr std::size_t limit = 64;

private:
    std::vector<pipe_pair> free_;
};

// True when splice(2) from a TCP socket works on this kernel (checked once, cached).
bool splice_available();

}  // namespace spliced::datapath
