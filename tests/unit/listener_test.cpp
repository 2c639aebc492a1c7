// The socket options a proxied client socket needs come from its listener: the kernel clones the
// listening socket for every connection it accepts, so the session sets nothing on the client.
#include "net/listener.hpp"

#include <arpa/inet.h>
#include <catch2/catch.hpp>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

namespace {

int option(int fd, int level, int name) {
    int v = -1;
    socklen_t len = sizeof(v);
    REQUIRE(::getsockopt(fd, level, name, &v, &len) == 0);
    return v;
}

}  // namespace

TEST_CASE("a socket accepted from an open_listener() has TCP_NODELAY and SO_OOBINLINE without setting them",
          "[listener]") {
    boost::asio::io_context io;
    const auto addr = spliced::net::address::v4({127, 0, 0, 1}, 0);
    auto acceptor = spliced::net::open_listener(io, addr, false);
    const auto port = acceptor.local_endpoint().port();

    const int client = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(client >= 0);
    const auto to = addr.with_port(port);
    REQUIRE(::connect(client, to.data(), to.size()) == 0);
    auto accepted = acceptor.accept();
    const int fd = accepted.native_handle();
    CHECK(option(fd, IPPROTO_TCP, TCP_NODELAY) != 0);
    CHECK(option(fd, SOL_SOCKET, SO_OOBINLINE) != 0);
    // A plain socket has neither: the options above came from the listener.
    CHECK(option(client, IPPROTO_TCP, TCP_NODELAY) == 0);
    CHECK(option(client, SOL_SOCKET, SO_OOBINLINE) == 0);
    ::close(client);
}
