// A listening socket in a worker's event core: accept4 until the queue is empty or the turn's share is taken.
#include "net/core_acceptor.hpp"

#include "net/upstream.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/resource.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

namespace spliced::net {

namespace {

// Connections accepted per listener per turn before the others get theirs (nginx's multi_accept does the
// same: a burst of SYNs must not hold the worker away from the connections it already has).
constexpr int accepts_per_turn = 64;
// Within this many descriptors of RLIMIT_NOFILE, accepts go one at a time (see short_of_descriptors).
constexpr int careful_margin = 2 * accepts_per_turn + 16;

using clock = std::chrono::steady_clock;

}  // namespace

core_acceptor::core_acceptor(event_core& core, tcp::acceptor listener, gate_fn gate, accept_fn on_accept)
    : core_(core), gate_(std::move(gate)), on_accept_(std::move(on_accept)), pause_(*this) {
    boost::system::error_code ec;
    fd_.reset(listener.release(ec));  // out of Asio's reactor: the core alone waits on it
    if (ec) throw std::runtime_error("listener: " + ec.message());
    // Asio leaves the descriptor blocking until it runs an operation itself; accept4 here must never block.
    const int flags = ::fcntl(fd_.get(), F_GETFL);
    if (flags < 0 || ::fcntl(fd_.get(), F_SETFL, flags | O_NONBLOCK) < 0)
        throw std::runtime_error(std::string("listener: O_NONBLOCK: ") + std::strerror(errno));
    if (auto err = core_.add(fd_.get(), *this, EPOLLIN | EPOLLET)) throw std::runtime_error("listener: " + err.message());
    rlimit lim{};
    if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY)
        descriptor_limit_ = static_cast<long>(lim.rlim_cur);
    core_.again(*this);  // clients may be queued already (a listener kept across a reload)
}

core_acceptor::~core_acceptor() {
    *alive_ = false;
    close();
}

void core_acceptor::close() {
    core_.clock().cancel(pause_);
    if (fd_) {
        core_.forget(fd_.get());
        fd_.reset();
    }
}

void core_acceptor::on_io(std::uint32_t) {
    if (!pause_.armed()) accept_some();
}

void core_acceptor::pause_for_descriptors(int err) {
    const auto now = clock::now();
    if (!last_warning_ || now - *last_warning_ >= std::chrono::seconds(10)) {
        spdlog::warn("accept: {}; pausing accepts for 100 ms at a time, clients wait in the listen queue ({} pauses "
                     "since the last warning)",
                     std::strerror(err), pauses_);
        last_warning_ = now;
        pauses_ = 0;
    }
    ++pauses_;
    core_.clock().arm(pause_, now + std::chrono::milliseconds(100));
}

bool core_acceptor::short_of_descriptors(int accepted) const {
    // Descriptors are handed out lowest first: an accepted one this near the limit says the table is nearly full.
    return descriptors_short_lately() || (descriptor_limit_ > 0 && accepted + careful_margin >= descriptor_limit_);
}

void core_acceptor::accept_some() {
    for (int n = 0; fd_ && n < accepts_per_turn; ++n) {
        if (sessions_awaiting_descriptor() > 0) {
            // Clients already in wait for a descriptor for their upstream: let them have the next ones
            // that free up, or accepted clients would pile up holding one each and no backend.
            core_.clock().arm(pause_, clock::now() + std::chrono::milliseconds(10));
            return;
        }
        admit_gate* gate = gate_();
        if (gate && !gate->try_admit()) {
            // Past the route's limit clients wait in the listen queue; the next freed place brings us back.
            if (waiting_on_ != gate) {
                waiting_on_ = gate;
                gate->call_when_room([this, alive = alive_, core = &core_] {
                    core->post([this, alive] {
                        if (!*alive) return;
                        waiting_on_ = nullptr;
                        core_.again(*this);
                    });
                });
            }
            return;
        }
        sockaddr_storage peer{};
        socklen_t len = sizeof peer;
        const int s = ::accept4(fd_.get(), reinterpret_cast<sockaddr*>(&peer), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (s < 0) {
            const int err = errno;
            if (gate) gate->release();
            if (err == EAGAIN || err == EWOULDBLOCK) return;  // edge-triggered: the next connection wakes us
            if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
                note_descriptor_shortage();
                pause_for_descriptors(err);
                return;
            }
            // ECONNABORTED and friends: the client gave up while queued; keep accepting.
            spdlog::debug("accept: {}", std::strerror(err));
            continue;
        }
        on_accept_(sys::unique_fd(s), address::from(reinterpret_cast<const sockaddr*>(&peer)), gate != nullptr);
        if (short_of_descriptors(s)) {
            // Near the descriptor limit: one client per 2 ms, so its session opens its upstream socket before
            // the next accept takes the descriptor it needs. A client accepted now that found none would wait
            // for one and, at the connect timeout, be closed.
            core_.clock().arm(pause_, clock::now() + std::chrono::milliseconds(2));
            return;
        }
    }
    if (fd_) core_.again(*this);  // more may be queued: after the others had their turn
}

}  // namespace spliced::net
