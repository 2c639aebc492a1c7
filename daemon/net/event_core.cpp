// One event core per worker thread: epoll (each socket registered once, edge-triggered), timers, and the
// worker's loop, which runs the worker's Asio io_context too.
#include "net/event_core.hpp"

#include "net/core_socket.hpp"

#include <boost/asio/detail/epoll_reactor.hpp>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>
#include <sys/eventfd.h>
#include <unistd.h>

namespace spliced::net {

namespace {

thread_local event_core* this_thread_core = nullptr;

// Asio's reactor keeps its epoll descriptor private, and has no way to run inside another event loop. An
// explicit instantiation may name a private member (the standard allows it there), which gives its address
// to a friend function: the one place spliced reaches into Asio's internals (Boost 1.81 is pinned).
struct asio_epoll_fd_tag {
    using type = int asio::detail::epoll_reactor::*;
    friend type member(asio_epoll_fd_tag);
};
template <typename Tag, typename Tag::type M>
struct expose {
    friend typename Tag::type member(Tag) { return M; }
};
template struct expose<asio_epoll_fd_tag, &asio::detail::epoll_reactor::epoll_fd_>;

int asio_epoll_of(asio::io_context& io) {
    auto& reactor = asio::use_service<asio::detail::epoll_reactor>(io);
    reactor.init_task();  // the scheduler polls the reactor from now on
    return reactor.*member(asio_epoll_fd_tag{});
}

// Marks for the two descriptors that are not handlers.
char asio_mark, wake_mark;


}  // namespace

event_core::event_core(asio::io_context& io) : io_(io), events_(256) {
    epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_) throw std::runtime_error(std::string("epoll_create1: ") + std::strerror(errno));
    wake_.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!wake_) throw std::runtime_error(std::string("eventfd: ") + std::strerror(errno));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = &wake_mark;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_.get(), &ev) != 0)
        throw std::runtime_error(std::string("epoll_ctl: ") + std::strerror(errno));
    asio_epoll_ = asio_epoll_of(io_);
    // Level-triggered: readable while Asio's reactor has events it has not taken.
    ev.events = EPOLLIN;
    ev.data.ptr = &asio_mark;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, asio_epoll_, &ev) != 0)
        throw std::runtime_error(std::string("epoll_ctl: ") + std::strerror(errno));
}

event_core::~event_core() {
    destroy_retired();
    if (this_thread_core == this) this_thread_core = nullptr;
}

event_core* event_core::current() { return this_thread_core; }

std::error_code event_core::control(int op, int fd, io_handler& h, std::uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.ptr = &h;
    if (::epoll_ctl(epoll_.get(), op, fd, &ev) != 0) return {errno, std::system_category()};
    return {};
}

std::error_code event_core::add(int fd, io_handler& h, std::uint32_t events) {
    return control(EPOLL_CTL_ADD, fd, h, events);
}

std::error_code event_core::modify(int fd, io_handler& h, std::uint32_t events) {
    return control(EPOLL_CTL_MOD, fd, h, events);
}

void event_core::forget(int fd) {
    epoll_event ev{};
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, &ev);
}

io_handler::~io_handler() {
    if (again_in_) again_in_->drop_again(*this);
}

void event_core::again(io_handler& h) {
    if (h.again_in_) return;
    h.again_in_ = this;
    again_.push_back(&h);
}

void event_core::drop_again(io_handler& h) {
    // Rare (a connection that asked for another turn and ended before it came): a scan is fine.
    for (auto* list : {&again_, &again_running_})
        for (auto& p : *list)
            if (p == &h) p = nullptr;
    h.again_in_ = nullptr;
}

void event_core::retire(retirable* r) {
    r->next_retired_ = retired_;
    retired_ = r;
}

void event_core::post(std::function<void()> f) {
    bool signal = false;
    {
        std::lock_guard lock(posted_mutex_);
        posted_.push_back(std::move(f));
        signal = !signalled_;
        signalled_ = true;
    }
    if (signal) {
        const std::uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(wake_.get(), &one, sizeof one);
    }
}

void event_core::stop() {
    stopped_.store(true, std::memory_order_release);
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_.get(), &one, sizeof one);
}

void event_core::drain_posted() {
    std::uint64_t count = 0;
    [[maybe_unused]] auto n = ::read(wake_.get(), &count, sizeof count);
    {
        std::lock_guard lock(posted_mutex_);
        running_.swap(posted_);
        signalled_ = false;
    }
    for (auto& f : running_) f();
    running_.clear();
    asio_pending_ = true;  // what other threads have the worker do mostly touches Asio objects
}

void event_core::handle_batch(const epoll_event* events, int n, bool& asio_ready) {
    for (int i = 0; i < n; ++i) {
        void* p = events[i].data.ptr;
        if (p == &asio_mark) asio_ready = true;
        else if (p == &wake_mark) drain_posted();
        else static_cast<io_handler*>(p)->on_io(events[i].events);
    }
}

void event_core::run_again_list() {
    again_running_.swap(again_);
    for (std::size_t i = 0; i < again_running_.size(); ++i) {
        io_handler* h = again_running_[i];
        if (!h) continue;  // destroyed meanwhile
        h->again_in_ = nullptr;
        h->on_io(0);
    }
    again_running_.clear();
}

void event_core::destroy_retired() {
    while (retired_) {
        retirable* r = retired_;
        retired_ = r->next_retired_;
        delete r;
    }
}

void event_core::turn(int max_wait_ms) {
    int timeout = timers_.next_timeout_ms(timers::clock::now());
    if (max_wait_ms >= 0 && (timeout < 0 || timeout > max_wait_ms)) timeout = max_wait_ms;
    if (asio_pending_ || !again_.empty()) timeout = 0;
    const int n = ::epoll_wait(epoll_.get(), events_.data(), static_cast<int>(events_.size()), timeout);
    now_ = timers::clock::now();
    bool asio_ready = false;
    if (n > 0) handle_batch(events_.data(), n, asio_ready);
    timers_.fire_expired(now_);
    run_again_list();
    destroy_retired();
    if (asio_ready || asio_pending_) {
        asio_pending_ = false;
        io_.poll();
        destroy_retired();
    }
}

void event_core::abandon_waits() {
    const std::vector<core_socket*> sockets(waiting_.begin(), waiting_.end());
    for (core_socket* s : sockets) s->cancel();  // each leaves waiting_
    waiting_.clear();
}

void event_core::run() {
    this_thread_core = this;
    auto guard = asio::make_work_guard(io_);
    asio_pending_ = true;  // whatever was spawned before the loop started
    while (!stopped() && !io_.stopped()) turn(-1);
    this_thread_core = nullptr;
}

}  // namespace spliced::net
