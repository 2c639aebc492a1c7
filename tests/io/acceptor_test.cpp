// The core acceptor on real sockets: it accepts on the core's turn and never blocks the worker, whatever state
// the listening socket it is given is in.
#include "net/core_acceptor.hpp"

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <chrono>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

using namespace spliced;

namespace {

int connect_to(const net::tcp::endpoint& at) {
    const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(s >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(at.port());
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    return s;
}

}  // namespace

TEST_CASE("the acceptor takes every queued client in one turn and then returns to the loop, though Asio handed "
          "it a blocking listening socket") {
    net::asio::io_context io;
    net::event_core core(io);
    net::tcp::acceptor listener(io, net::tcp::endpoint(net::asio::ip::make_address("127.0.0.1"), 0));
    const auto at = listener.local_endpoint();
    std::vector<sys::unique_fd> accepted;
    net::core_acceptor acceptor(core, std::move(listener), [] { return nullptr; },
                                [&](sys::unique_fd fd, const net::address&, bool) { accepted.push_back(std::move(fd)); });
    std::vector<sys::unique_fd> clients;
    for (int i = 0; i < 3; ++i) clients.emplace_back(connect_to(at));
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 20 && accepted.size() < 3; ++i) core.turn(50);
    CHECK(accepted.size() == 3);
    // With nothing queued a turn comes back by its deadline: had accept4 blocked, it would never return.
    core.turn(10);
    core.turn(10);
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(2));
    clients.emplace_back(connect_to(at));
    for (int i = 0; i < 20 && accepted.size() < 4; ++i) core.turn(50);
    CHECK(accepted.size() == 4);
}
