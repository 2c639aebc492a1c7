// The event core's shutdown: a coroutine left waiting on a socket when the worker stops goes, with its frame
// and what the frame owns, when the io_context does; nothing is left behind (LeakSanitizer would name it).
#include "net/core_socket.hpp"
#include "net/event_core.hpp"

#include <catch2/catch.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <memory>
#include <sys/socket.h>

using namespace spliced;

namespace {

struct sentinel {
    explicit sentinel(int& alive) : alive_(alive) { ++alive_; }
    ~sentinel() { --alive_; }
    int& alive_;
};

net::awaitable<void> wait_for_ever(std::unique_ptr<net::core_socket> s, int& alive, bool& resumed) {
    sentinel held(alive);
    co_await s->async_wait(EPOLLIN, net::timers::clock::time_point::max(), net::use_tuple);
    resumed = true;  // only an io_context that ran again would get here
}

}  // namespace

TEST_CASE("a coroutine still waiting on a socket when the worker stops goes with the io_context, frame and all") {
    int alive = 0;
    bool resumed = false;
    {
        std::optional<net::asio::io_context> io(std::in_place, 1);
        net::event_core core(*io);
        int sv[2];
        REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
        sys::unique_fd other(sv[1]);
        auto s = std::make_unique<net::core_socket>(core, sys::unique_fd(sv[0]));
        net::asio::co_spawn(*io, wait_for_ever(std::move(s), alive, resumed), net::asio::detached);
        core.asio_work_pending();
        for (int i = 0; i < 5; ++i) core.turn(0);
        REQUIRE(alive == 1);  // suspended on the socket, which its frame owns
        core.stop();
        core.abandon_waits();
        io.reset();  // before the core, as a worker does
        CHECK(alive == 0);
    }
    CHECK_FALSE(resumed);
}
