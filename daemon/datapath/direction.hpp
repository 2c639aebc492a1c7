// One direction of a pair: the bytes one socket receives on their way to the other, and where they are.
#pragma once

#include "datapath/pipe_pool.hpp"
#include "net/core_socket.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

namespace spliced::datapath {

// What a partial send left over (and, at the start, the bytes to send before any of the stream): a buffer
// of the direction's own only while there is something in it.
class held_bytes {
public:
    bool empty() const { return off_ == len_; }
    std::span<const char> rest() const { return {data_.get() + off_, len_ - off_}; }
    void hold(std::span<const char> bytes);
    void consumed(std::size_t n);  // frees the buffer once all of it went out

private:
    std::unique_ptr<char[]> data_;
    std::uint32_t off_ = 0, len_ = 0;
};

// Where a direction's bytes go: through userspace (recv/send, pipes for bulk), or redirected by the verdict
// (sockmap), waiting for the peer to take what was redirected before userspace copies again (draining), or
// before the FIN goes on (fin_wait).
enum class direction_mode : std::uint8_t { user, redirected, draining, fin_wait };

struct direction {
    direction(net::core_socket& f, net::core_socket& t) : from(&f), to(&t) {}

    net::core_socket* from;
    net::core_socket* to;
    std::uint64_t read = 0;  // bytes userspace read from `from`
    std::uint64_t sent = 0;  // bytes userspace sent to `to` (the pending bytes included)
    held_bytes held;
    pipe_pair pipe;            // while it holds bytes (or a splice read is about to fill it)
    std::uint32_t in_pipe = 0; // bytes in `pipe`
    direction_mode mode = direction_mode::user;
    bool may_splice = false;   // bulk reads go through a pipe (never once a socket was in the map)
    bool bulk = false;         // the last read filled the copy buffer: the next one splices
    bool eof = false;          // `from` reached EOF
    bool done = false;         // every byte and the FIN went on to `to`: this direction is over

    // Nothing read and not yet sent, nothing known to be waiting in `from` (its last read met EAGAIN or ran
    // it dry, on an skb boundary), no urgent mark, no EOF: stopping here loses nothing.
    bool parked() const {
        return mode == direction_mode::user && held.empty() && in_pipe == 0 && !eof && !done && !from->readable() &&
               !from->urgent();
    }
};

// How far one step of a direction got.
enum class step : std::uint8_t {
    go_on,        // more may be done now
    blocked,      // waits for an event: `from` readable, `to` writable, or a timer
    yield,        // the turn's budget is spent with more to do
    eof,          // `from` reached EOF and every byte read went out: `to` may be shut down
    from_failed,  // reading `from` failed (a reset)
    to_failed,    // writing `to` failed
};

// The copy buffer of one worker: every direction of every pair reads into it and sends from it at once;
// only a partial send's rest is copied into a buffer of the direction's own.
inline constexpr std::size_t copy_buffer_size = 64 * 1024;

}  // namespace spliced::datapath
