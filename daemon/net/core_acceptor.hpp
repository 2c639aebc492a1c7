// A listening socket in a worker's event core: each readiness accepts (accept4: non-blocking, close-on-exec
// at once) until the listen queue is empty or a turn's share is taken, and hands each socket on.
#pragma once

#include "net/address.hpp"
#include "net/event_core.hpp"
#include "net/listener.hpp"
#include "sys/fd.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>

namespace spliced::net {

class core_acceptor final : public io_handler {
public:
    // What a route's max_connections gives at accept (asked before each accept: a reload may change it).
    using gate_fn = std::function<admit_gate*()>;
    // A socket accepted from `peer`; `admitted`: it holds a place of the gate (its session releases it).
    using accept_fn = std::function<void(sys::unique_fd, const address& peer, bool admitted)>;

    // Takes the listening socket out of Asio's reactor into `core`. On the core's thread.
    core_acceptor(event_core& core, tcp::acceptor listener, gate_fn gate, accept_fn on_accept);
    ~core_acceptor();
    // Stops accepting: the listening socket closes (clients still queued on it are refused by the kernel).
    void close();
    bool open() const { return static_cast<bool>(fd_); }

private:
    void on_io(std::uint32_t events) override;
    void accept_some();
    // Out of descriptors: the listener stays readable, so retrying at once would spin: pause, warn now and then.
    void pause_for_descriptors(int err);
    void resume() { accept_some(); }
    bool short_of_descriptors(int accepted) const;

    event_core& core_;
    sys::unique_fd fd_;
    gate_fn gate_;
    accept_fn on_accept_;
    owner_timer<core_acceptor, &core_acceptor::resume> pause_;
    std::optional<std::chrono::steady_clock::time_point> last_warning_;
    unsigned pauses_ = 0;
    long descriptor_limit_ = 0;  // RLIMIT_NOFILE's soft limit when the listener came (0: none)
    admit_gate* waiting_on_ = nullptr;  // the full gate that will say when it has room
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);  // for the gate's room callback
};

}  // namespace spliced::net
