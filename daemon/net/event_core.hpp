// One event core per worker thread: an epoll instance in which each socket of a connection is registered
// once, edge-triggered (no epoll_ctl per wait, as Asio's reactor does for every async_wait), the worker's
// timers, and the worker's loop, which also runs the worker's Asio io_context (its epoll is one of ours:
// Asio keeps what sets a connection up, the core carries its bytes).
#pragma once

#include "net/asio.hpp"
#include "net/timers.hpp"
#include "sys/fd.hpp"

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <sys/epoll.h>
#include <system_error>
#include <unordered_set>
#include <vector>

namespace spliced::net {

class event_core;
class core_socket;

// What the core calls when a registered descriptor has events, on the core's thread.
class io_handler {
public:
    // `events`: EPOLLIN, EPOLLOUT, EPOLLRDHUP, EPOLLERR, EPOLLHUP ...; 0 for a turn asked with again().
    virtual void on_io(std::uint32_t events) = 0;

protected:
    ~io_handler();  // leaves the core's list of handlers waiting for another turn

private:
    friend class event_core;
    event_core* again_in_ = nullptr;  // the core whose list of handlers that asked for another turn holds this
};

// What the core destroys for its owner once the batch of events being handled is done: an object whose
// sockets may still have events in that batch must not go before.
class retirable {
public:
    virtual ~retirable() = default;

private:
    friend class event_core;
    retirable* next_retired_ = nullptr;
};

class event_core {
public:
    // On the worker's thread, before io.run() would be called; run() replaces it.
    explicit event_core(asio::io_context& io);
    ~event_core();
    event_core(const event_core&) = delete;
    event_core& operator=(const event_core&) = delete;

    // The core of the calling thread (the worker running it), or null.
    static event_core* current();

    // Registers `fd` for `events` (edge-triggered); `h` hears of them until `fd` is closed or forgotten.
    std::error_code add(int fd, io_handler& h,
                        std::uint32_t events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET);
    std::error_code modify(int fd, io_handler& h, std::uint32_t events);
    // Unregisters `fd` (closing it does that too, once no other descriptor refers to the socket).
    void forget(int fd);
    // `h` gets another turn (on_io(0)) once this batch is done, before the loop waits again: a connection
    // that moved its share of bytes this turn lets the others have theirs.
    void again(io_handler& h);
    // Destroys `r` once this batch is done.
    void retire(retirable* r);

    timers& clock() { return timers_; }
    // The time this turn of the loop began: what a connection stamps its progress with, at no syscall.
    timers::clock::time_point now() const { return now_; }

    // From any thread: runs `f` on the core's thread soon (what other threads have the worker do).
    void post(std::function<void()> f);
    // Asio handlers were queued from outside Asio (a completion, a co_spawn): run them this turn.
    void asio_work_pending() { asio_pending_ = true; }

    // Sockets a coroutine waits on (core_socket keeps this up to date).
    void waits_on(core_socket& s) { waiting_.insert(&s); }
    void wait_ended(core_socket& s) { waiting_.erase(&s); }
    // After the loop stopped for good: every coroutine still waiting on a socket (a session in its connect, say)
    // gets operation_aborted through Asio, whose io_context then destroys it with its frame; a wait held by the
    // socket alone would keep the frame, and the session in it, alive for ever.
    void abandon_waits();

    // The worker's loop, until stop(): epoll, timers, posted work, Asio's handlers.
    void run();
    // One turn of it, waiting at most `max_wait_ms` for events (-1: until the next timer or event); what
    // tests drive a core with.
    void turn(int max_wait_ms);
    // From any thread.
    void stop();
    bool stopped() const { return stopped_.load(std::memory_order_acquire); }

    asio::io_context& io() { return io_; }

private:
    std::error_code control(int op, int fd, io_handler& h, std::uint32_t events);  // epoll_ctl ADD or MOD
    void drain_posted();
    void handle_batch(const epoll_event* events, int n, bool& asio_ready);
    void run_again_list();
    void destroy_retired();
    void drop_again(io_handler& h);
    friend class io_handler;

    asio::io_context& io_;
    sys::unique_fd epoll_;
    sys::unique_fd wake_;  // eventfd: posted work, stop()
    int asio_epoll_ = -1;  // Asio's reactor's epoll instance, level-triggered in ours
    std::vector<epoll_event> events_;  // one turn's batch
    timers timers_;
    timers::clock::time_point now_ = timers::clock::now();
    std::vector<io_handler*> again_, again_running_;
    retirable* retired_ = nullptr;
    std::unordered_set<core_socket*> waiting_;
    bool asio_pending_ = false;
    std::atomic<bool> stopped_{false};
    std::mutex posted_mutex_;
    std::vector<std::function<void()>> posted_, running_;
    bool signalled_ = false;  // under posted_mutex_: the eventfd was written and not yet read
};

}  // namespace spliced::net
