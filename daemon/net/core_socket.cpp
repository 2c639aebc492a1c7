// A connection's socket in a worker's event core: registered once, readiness latched, a coroutine's wait or a
// state machine's events.
#include "net/core_socket.hpp"

#include "sys/socket.hpp"

namespace spliced::net {

core_socket::core_socket(event_core& core, sys::unique_fd fd) : core_(core), fd_(std::move(fd)) {
    registered_ = fd_ && !core_.add(fd_.get(), *this, registered_events);
}

core_socket::~core_socket() {
    if (waiter_) core_.wait_ended(*this);  // destroyed with its waiter (the frame it would resume is going)
    close();
}

void core_socket::on_io(std::uint32_t events) {
    if (!fd_) return;  // closed earlier in this batch of events
    if (events & EPOLLIN) readable_ = true;
    if (events & EPOLLOUT) writable_ = true;
    if (events & EPOLLRDHUP) rdhup_ = readable_ = true;
    if (events & EPOLLPRI) urgent_ = readable_ = true;
    if (events & EPOLLHUP) hup_ = readable_ = writable_ = true;
    if (events & EPOLLERR) error_ = readable_ = writable_ = true;
    if (waiter_ && wait_satisfied()) finish_wait({});
    if (listener_) listener_->on_socket(*this, events);
}

bool core_socket::wait_satisfied() const {
    return error_ || hup_ || ((want_ & EPOLLIN) && readable_) || ((want_ & EPOLLOUT) && writable_);
}

void core_socket::start_wait(std::uint32_t want, clock::time_point deadline, std::unique_ptr<waiter> w) {
    want_ = want;
    waiter_ = std::move(w);
    core_.waits_on(*this);
    if (wait_satisfied()) {
        finish_wait({});  // completes through the handler's executor, never inside the initiation
        return;
    }
    if (deadline == clock::time_point::max()) return;
    if (!deadline_) deadline_ = std::make_unique<owner_timer<core_socket, &core_socket::on_deadline>>(*this);
    core_.clock().arm(*deadline_, deadline);
}

void core_socket::finish_wait(const boost::system::error_code& ec) {
    deadline_.reset();
    core_.wait_ended(*this);
    auto w = std::move(waiter_);
    w->complete(ec);
    core_.asio_work_pending();
}

void core_socket::on_deadline() {
    if (waiter_) finish_wait(asio::error::timed_out);
}

void core_socket::cancel() {
    if (waiter_) finish_wait(asio::error::operation_aborted);
}

void core_socket::reset_on_close() {
    if (fd_) sys::set_linger_reset(fd_.get());
}

void core_socket::close() {
    deadline_.reset();
    fd_.reset();  // closing takes it out of the epoll set (the core holds no other reference to the socket)
    readable_ = writable_ = false;
}

}  // namespace spliced::net
