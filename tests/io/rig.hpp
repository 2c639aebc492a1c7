// A pair on real loopback sockets, driven turn by turn from the test's own thread: the test plays the client
// and the backend with non-blocking calls and turns the event core between them, so every case runs in
// milliseconds with nothing left to a scheduler.
#pragma once

#include "datapath/pair.hpp"
#include "datapath/sockmap.hpp"
#include "net/core_socket.hpp"
#include "net/event_core.hpp"
#include "sys/fd.hpp"
#include "sys/socket.hpp"

#include <arpa/inet.h>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <functional>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <optional>
#include <string>
#include <sys/socket.h>
#include <vector>

namespace io_test {

using namespace spliced;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

// The sockmap engine, loaded once for the process; null where it cannot be (not root).
datapath::sockmap_engine* engine();

std::string pattern(std::size_t n, unsigned seed);

// Both ends of one loopback TCP connection.
struct tcp_conn {
    sys::unique_fd connector;  // the end that called connect()
    sys::unique_fd acceptor;   // the end accept() returned
};

class loopback {
public:
    loopback();
    tcp_conn connect();

private:
    sys::unique_fd listener_;
    sockaddr_in addr_{};
};

// What the pair told its owner.
struct recorder final : datapath::pair_owner {
    std::vector<datapath::kind> handoffs;
    std::vector<datapath::fallback_reason> fallbacks;
    int promotions = 0, demotions = 0, ended = 0;
    std::function<void()> on_end;  // what the owner does when the pair ends (closes the sockets)
    void handed_off(datapath::kind k) override { handoffs.push_back(k); }
    void stayed_off_sockmap(datapath::fallback_reason why) override { fallbacks.push_back(why); }
    void promoted() override { ++promotions; }
    void demoted() override { ++demotions; }
    void pair_ended() override {
        ++ended;
        if (on_end) on_end();
    }
};

// The client (the test), the proxy's two sockets in an event core, and the backend (the test).
class rig {
public:
    explicit rig(datapath::sockmap_engine* e = nullptr);
    ~rig();

    // Starts the pair on `how`; `pending` goes to the backend first.
    void engage(datapath::plan how, std::chrono::milliseconds idle = 10s, const std::string& pending = "",
                std::uint64_t consumed = 0, std::chrono::milliseconds lifetime = 0ms);
    static datapath::plan copy() { return {datapath::kind::copy, false}; }
    static datapath::plan splice() { return {datapath::kind::splice, false}; }
    static datapath::plan sockmap() { return {datapath::kind::sockmap, false}; }
    static datapath::plan automatic() { return {datapath::kind::splice, true}; }

    void turn(int max_wait_ms = 0) { core.turn(max_wait_ms); }
    // Turns the core until `pred` holds or `budget` passed; whether it held.
    bool until(const std::function<bool()>& pred, std::chrono::milliseconds budget = 5000ms);

    int client() const { return client_end.get(); }
    int backend() const { return backend_end.get(); }
    // The proxy's sockets (their descriptors).
    int proxy_client() const { return proxy_client_socket->fd(); }
    int proxy_upstream() const { return proxy_upstream_socket->fd(); }

    // Sends all of `data` from `fd`, turning the core whenever the socket is full.
    void send_all(int fd, const std::string& data);
    // Reads from `fd` (turning the core meanwhile) until `want` bytes came, EOF, an error, or `budget` passed.
    struct got {
        std::string bytes;
        bool eof = false;
        int error = 0;  // errno of a failed read (ECONNRESET)
    };
    got read(int fd, std::size_t want, std::chrono::milliseconds budget = 5000ms);
    // Moves `data` from `from` to `to` through the pair, sending and reading in turn; what arrived.
    std::string transfer(int from, int to, const std::string& data, std::chrono::milliseconds budget = 10000ms);
    bool ended() const { return owner.ended > 0; }
    datapath::end_reason reason() const { return pair->report().reason; }

    net::asio::io_context io;
    net::event_core core{io};
    datapath::worker_resources resources;
    loopback lo;
    sys::unique_fd client_end, backend_end;
    std::unique_ptr<net::core_socket> proxy_client_socket, proxy_upstream_socket;
    recorder owner;
    std::optional<datapath::pair> pair;
};

// "" when `got` is `want`, else what differs (sizes, the first differing offset): a CHECK's message that stays
// short for megabytes of data.
std::string diff(const std::string& got, const std::string& want);

// Pipes this process has open (descriptors).
int open_pipes();
// SO_LINGER {1, 0} and close: the peer gets a reset.
void reset(sys::unique_fd& fd);

}  // namespace io_test
