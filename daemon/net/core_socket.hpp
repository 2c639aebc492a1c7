// A connection's socket in a worker's event core: it owns its descriptor, registered once (edge-triggered for
// IN, OUT, RDHUP and PRI), and latches the readiness it has been told of until an operation meets EAGAIN.
// While a connection is set up a coroutine waits on it (preamble, connect); afterwards the data path's state
// machine hears of its events.
#pragma once

#include "net/asio.hpp"
#include "net/event_core.hpp"
#include "net/timers.hpp"
#include "sys/fd.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <sys/epoll.h>
#include <system_error>

namespace spliced::net {

class core_socket;

// What hears of a socket's events once a state machine runs it.
class socket_listener {
public:
    // On the core's thread; `events` as epoll gives them (0 never comes here).
    virtual void on_socket(core_socket& s, std::uint32_t events) = 0;

protected:
    ~socket_listener() = default;
};

class core_socket final : public io_handler {
public:
    using clock = std::chrono::steady_clock;
    // What every socket of a connection is registered for, once.
    static constexpr std::uint32_t registered_events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI | EPOLLET;

    // Takes `fd` (a non-blocking TCP socket) into `core`; on the core's thread. ok() says whether the
    // registration worked (if not, errno says why).
    core_socket(event_core& core, sys::unique_fd fd);
    ~core_socket();  // closes the descriptor (which takes it out of the core)
    core_socket(const core_socket&) = delete;
    core_socket& operator=(const core_socket&) = delete;

    bool ok() const { return registered_; }
    int fd() const { return fd_.get(); }
    bool open() const { return static_cast<bool>(fd_); }
    event_core& core() const { return core_; }

    // Readiness seen since the last EAGAIN: the edge-triggered registration reports each change once.
    bool readable() const { return readable_; }
    bool writable() const { return writable_; }
    // The peer's FIN arrived (EPOLLRDHUP): reads reach EOF once the bytes before it are read.
    bool peer_closed() const { return rdhup_; }
    // An urgent mark is queued (EPOLLPRI): recv() stops short there and splice() never passes it, so a read
    // that ends short or empty is not the end of what is queued. The reader clears it on EAGAIN.
    bool urgent() const { return urgent_; }
    bool failed() const { return error_; }  // EPOLLERR: the next operation reports why (a reset)
    bool hung_up() const { return hup_; }   // EPOLLHUP: both directions are closed (or the connect failed)
    void read_would_block() { readable_ = urgent_ = false; }
    void read_drained() { readable_ = false; }  // a short read: the queue ran dry (the mark, if any, stays)
    void write_would_block() { writable_ = false; }
    // Look again without an event: for bytes whose wake-up comes from the kernel's own work (a psock queue),
    // read on a timer in case it never comes.
    void assume_readable() { readable_ = true; }
    // A send took all it was given: there is room now, even if the event saying so has not come yet (it
    // comes only once half the send buffer is free).
    void wrote_all() { writable_ = true; }

    // The state machine that hears of this socket's events from now on (null: nobody).
    void listen(socket_listener* l) { listener_ = l; }

    // For a coroutine: completes (error_code) once the socket is readable (`want` EPOLLIN) or writable
    // (EPOLLOUT), or has failed or hung up, with timed_out at `deadline`, or operation_aborted on cancel().
    // One wait at a time.
    template <typename Token>
    auto async_wait(std::uint32_t want, clock::time_point deadline, Token&& token) {
        return asio::async_initiate<Token, void(boost::system::error_code)>(
            [this, want, deadline](auto handler) {
                start_wait(want, deadline,
                           std::make_unique<waiter_of<std::decay_t<decltype(handler)>>>(std::move(handler)));
            },
            token);
    }
    // Ends a pending wait with operation_aborted (a cut from outside).
    void cancel();

    // SO_LINGER {1, 0}: closing sends a reset, never a FIN after a short stream.
    void reset_on_close();
    void close();

private:
    struct waiter {
        virtual ~waiter() = default;
        virtual void complete(const boost::system::error_code& ec) = 0;
    };
    template <typename Handler>
    struct waiter_of final : waiter {
        explicit waiter_of(Handler h) : handler(std::move(h)) {}
        void complete(const boost::system::error_code& ec) override {
            auto ex = asio::get_associated_executor(handler);
            asio::post(ex, [h = std::move(handler), ec]() mutable { std::move(h)(ec); });
        }
        Handler handler;
    };

    void on_io(std::uint32_t events) override;
    void start_wait(std::uint32_t want, clock::time_point deadline, std::unique_ptr<waiter> w);
    bool wait_satisfied() const;
    void finish_wait(const boost::system::error_code& ec);
    void on_deadline();

    event_core& core_;
    sys::unique_fd fd_;
    socket_listener* listener_ = nullptr;
    std::unique_ptr<waiter> waiter_;
    std::unique_ptr<owner_timer<core_socket, &core_socket::on_deadline>> deadline_;  // while a wait has one
    std::uint32_t want_ = 0;
    bool registered_ = false;
    bool readable_ = false, writable_ = false, rdhup_ = false, urgent_ = false, error_ = false, hup_ = false;
};

}  // namespace spliced::net
