// The moves onto and off the sockmap path, and a pair on it, on real sockets (root: the BPF engine).
#include "rig.hpp"

using namespace io_test;
using datapath::end_reason;
using datapath::kind;

namespace {

bool in_map(const rig& r) { return r.pair->report().paths.last() == kind::sockmap; }

// Echoes what the backend receives back to it until `total` bytes went round, while the client sends `data`
// and reads the echo: both directions of the pair busy at once.
std::string echo_round_trip(rig& r, const std::string& data, std::chrono::milliseconds budget = 30000ms) {
    std::string got, pending;
    std::size_t sent = 0;
    std::vector<char> buf(256 * 1024);
    const auto deadline = clock_type::now() + budget;
    while (got.size() < data.size() && clock_type::now() < deadline) {
        if (sent < data.size()) {
            const ssize_t n = ::send(r.client(), data.data() + sent, std::min<std::size_t>(data.size() - sent, 256 * 1024),
                                     MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0) sent += static_cast<std::size_t>(n);
        }
        if (pending.size() < 4 << 20) {
            const ssize_t m = ::recv(r.backend(), buf.data(), buf.size(), MSG_DONTWAIT);
            if (m > 0) pending.append(buf.data(), static_cast<std::size_t>(m));
        }
        if (!pending.empty()) {
            const ssize_t w = ::send(r.backend(), pending.data(), pending.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
            if (w > 0) pending.erase(0, static_cast<std::size_t>(w));
        }
        const ssize_t k = ::recv(r.client(), buf.data(), buf.size(), MSG_DONTWAIT);
        if (k > 0) got.append(buf.data(), static_cast<std::size_t>(k));
        r.turn(0);
    }
    return got;
}

void exchange(rig& r, int rounds, unsigned seed) {
    for (int i = 0; i < rounds; ++i) {
        const auto q = pattern(200, seed + static_cast<unsigned>(i)), a = pattern(300, seed + 1000 + static_cast<unsigned>(i));
        r.send_all(r.client(), q);
        REQUIRE(r.read(r.backend(), q.size()).bytes == q);
        r.send_all(r.backend(), a);
        REQUIRE(r.read(r.client(), a.size()).bytes == a);
    }
}

}  // namespace

TEST_CASE("a sockmap pair enters the map once parked, the kernel moves its bytes, and FINs go on after every byte", "[sockmap]") {
    rig r(engine());
    r.engage(rig::sockmap());
    REQUIRE(r.until([&] { return !r.owner.handoffs.empty(); }));
    CHECK(r.owner.handoffs == std::vector<kind>{kind::sockmap});
    const auto up = pattern(1 << 20, 1), down = pattern(3 << 20, 2);
    CHECK(diff(r.transfer(r.client(), r.backend(), up), up) == "");
    CHECK(diff(r.transfer(r.backend(), r.client(), down), down) == "");
    REQUIRE(::shutdown(r.client(), SHUT_WR) == 0);
    CHECK(r.read(r.backend(), 1).eof);
    REQUIRE(::shutdown(r.backend(), SHUT_WR) == 0);
    CHECK(r.read(r.client(), 1).eof);
    REQUIRE(r.until([&] { return r.ended(); }));
    CHECK(r.reason() == end_reason::completed);
    CHECK(r.pair->report().from_client == up.size());
    CHECK(r.pair->report().from_upstream == down.size());
    CHECK(r.pair->report().paths.text() == "sockmap");
}

TEST_CASE("a client that spoke first has its bytes forwarded by userspace before the pair enters the map, once each", "[sockmap]") {
    rig r(engine());
    const auto early = pattern(300000, 3);
    r.send_all(r.client(), early);
    r.engage(rig::sockmap(), 10s, "PROXY-HEADER\r\n");
    const auto late = pattern(100000, 4);
    std::string got = r.read(r.backend(), 14 + early.size()).bytes;
    REQUIRE(r.until([&] { return !r.owner.handoffs.empty(); }));
    got += r.transfer(r.client(), r.backend(), late);
    CHECK(diff(got, "PROXY-HEADER\r\n" + early + late) == "");
    CHECK(r.owner.handoffs == std::vector<kind>{kind::sockmap});
    // The FIN drain compares like with like: the injected header and the bytes userspace moved count once.
    REQUIRE(::shutdown(r.client(), SHUT_WR) == 0);
    CHECK(r.read(r.backend(), 1).eof);
}

TEST_CASE("a client that half-closed before its pair was parked stays off the map (not established) and ends whole", "[sockmap]") {
    rig r(engine());
    r.send_all(r.client(), "request");
    REQUIRE(::shutdown(r.client(), SHUT_WR) == 0);
    r.engage(rig::sockmap());
    const auto got = r.read(r.backend(), 100);
    CHECK(diff(got.bytes, "request") == "");
    CHECK(got.eof);
    CHECK(r.owner.fallbacks == std::vector<datapath::fallback_reason>{datapath::fallback_reason::not_established});
    CHECK(r.owner.handoffs == std::vector<kind>{kind::splice});
    r.send_all(r.backend(), "response");
    REQUIRE(::shutdown(r.backend(), SHUT_WR) == 0);
    CHECK(r.read(r.client(), 100).bytes == "response");
    REQUIRE(r.until([&] { return r.ended(); }));
    CHECK(r.reason() == end_reason::completed);
}

TEST_CASE("a busy echo on the way into the map cannot deadlock the hand-off: each direction moves on its own (c962ddd)", "[sockmap]") {
    // With the queued bytes forwarded one direction after the other, an echoing backend blocks writing its answers
    // while the proxy waits for it to read: seen with a 64 MiB echo under qemu.
    rig r(engine());
    const int small = 16384;
    for (int fd : {r.client(), r.backend()}) REQUIRE(::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small) == 0);
    r.engage(rig::sockmap());
    const auto data = pattern(24 << 20, 5);
    const auto got = echo_round_trip(r, data);
    CHECK(got.size() == data.size());
    CHECK(diff(got, data) == "");
    CHECK_FALSE(r.ended());
}

TEST_CASE("auto: a request/response pair stays in userspace; once idle it moves to sockmap; turning chatty it comes back", "[sockmap]") {
    rig r(engine());
    r.engage(rig::automatic());
    CHECK(r.owner.handoffs == std::vector<kind>{kind::splice});
    exchange(r, 20, 100);
    CHECK(r.owner.promotions == 0);  // busy: no move
    REQUIRE(r.until([&] { return r.owner.promotions == 1; }, 1000ms));  // idle for 200 ms
    CHECK(in_map(r));
    CHECK(r.pair->report().paths.text() == "splice+sockmap");
    exchange(r, 3, 200);  // a few sporadic messages: the kernel moves them
    CHECK(r.owner.demotions == 0);
    // Chatty: many messages a tick. Both directions go back to userspace copy, bytes in flight included.
    std::string sent_up, got_up;
    const auto chat_until = clock_type::now() + 3s;
    for (int i = 0; clock_type::now() < chat_until && r.owner.demotions < 2; ++i) {
        const auto q = pattern(100, 300 + static_cast<unsigned>(i));
        sent_up += q;
        r.send_all(r.client(), q);
        got_up += r.read(r.backend(), q.size(), 1000ms).bytes;
        r.send_all(r.backend(), q);
        REQUIRE(r.read(r.client(), q.size(), 1000ms).bytes == q);
    }
    CHECK(diff(got_up, sent_up) == "");
    CHECK(r.owner.demotions == 2);
    CHECK(r.pair->report().paths.text() == "splice+sockmap+copy");
    exchange(r, 20, 400);  // on copy now, in order
    CHECK_FALSE(r.ended());
}

TEST_CASE("auto: a parked pair that turns bulky goes back to userspace, every byte in order", "[sockmap]") {
    rig r(engine());
    r.engage(rig::automatic());
    exchange(r, 2, 500);
    REQUIRE(r.until([&] { return r.owner.promotions == 1; }, 1000ms));
    // Bulk for longer than a tick: the policy sees the bytes and moves the pair back to userspace, which it does
    // with the next skb each way.
    const auto until = clock_type::now() + 3s;
    for (unsigned i = 0; clock_type::now() < until && r.owner.demotions == 0; ++i) {
        const auto data = pattern(4 << 20, 6 + i);
        REQUIRE(diff(r.transfer(r.backend(), r.client(), data), data) == "");
    }
    CHECK(r.owner.demotions >= 1);
    const auto after = pattern(4 << 20, 99);
    CHECK(diff(r.transfer(r.backend(), r.client(), after), after) == "");
}

TEST_CASE("auto: a pair that ends quickly never enters the map", "[sockmap]") {
    rig r(engine());
    r.engage(rig::automatic());
    exchange(r, 1, 600);
    REQUIRE(::shutdown(r.client(), SHUT_WR) == 0);
    REQUIRE(::shutdown(r.backend(), SHUT_WR) == 0);
    REQUIRE(r.until([&] { return r.ended(); }));
    CHECK(r.reason() == end_reason::completed);
    CHECK(r.owner.promotions == 0);
    CHECK(r.pair->report().paths.text() == "splice");
}

TEST_CASE("a slow reader on sockmap: the egress bound demotes the direction, every byte arrives, memory stays bounded", "[sockmap]") {
    rig r(engine());
    r.engage(rig::sockmap());
    REQUIRE(r.until([&] { return in_map(r); }));
    const auto data = pattern(24 << 20, 7);
    std::size_t sent = 0, peak_in_flight = 0;
    std::string got;
    char buf[16384];
    const auto deadline = clock_type::now() + 30s;
    int reads = 0;
    while (got.size() < data.size() && clock_type::now() < deadline) {
        if (sent < data.size()) {
            const ssize_t n = ::send(r.client(), data.data() + sent, data.size() - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0) sent += static_cast<std::size_t>(n);
        }
        // The backend reads slowly for a while, then at full speed.
        if (++reads % 20 == 0 || got.size() > (8u << 20)) {
            const ssize_t m = ::recv(r.backend(), buf, sizeof buf, MSG_DONTWAIT);
            if (m > 0) got.append(buf, static_cast<std::size_t>(m));
        }
        peak_in_flight = std::max(peak_in_flight, sent - got.size());
        r.turn(0);
    }
    CHECK(diff(got, data) == "");
    CHECK(r.owner.demotions == 1);
    // In flight: at most the egress bound and the buffers of the four sockets on the way (autotuned, none
    // fixed by spliced), as on any path.
    auto buffer = [](int fd, int opt) {
        int size = 0;
        socklen_t len = sizeof size;
        REQUIRE(::getsockopt(fd, SOL_SOCKET, opt, &size, &len) == 0);
        return static_cast<std::size_t>(size);
    };
    const std::size_t buffers = buffer(r.client(), SO_SNDBUF) + buffer(r.proxy_client(), SO_RCVBUF) +
                                buffer(r.proxy_upstream(), SO_SNDBUF) + buffer(r.backend(), SO_RCVBUF);
    INFO("peak bytes in flight " << peak_in_flight << ", buffers " << buffers);
    CHECK(peak_in_flight <= datapath::egress_backlog_limit + buffers);
}

TEST_CASE("an urgent byte on sockmap arrives in order", "[sockmap]") {
    rig r(engine());
    r.engage(rig::sockmap());
    REQUIRE(r.until([&] { return in_map(r); }));
    const auto head = pattern(5000, 8), tail = pattern(7000, 9);
    r.send_all(r.client(), head);
    REQUIRE(::send(r.client(), "!", 1, MSG_OOB | MSG_NOSIGNAL) == 1);
    r.send_all(r.client(), tail);
    CHECK(r.read(r.backend(), head.size() + 1 + tail.size()).bytes == head + "!" + tail);
}

TEST_CASE("a reset on sockmap ends the pair at once, and the other side gets a reset", "[sockmap]") {
    SECTION("the client, while parked") {
        rig r(engine());
        r.engage(rig::sockmap());
        REQUIRE(r.until([&] { return in_map(r); }));
        reset(r.client_end);
        REQUIRE(r.until([&] { return r.ended(); }));
        CHECK(r.reason() == end_reason::client_reset);
        CHECK(r.read(r.backend(), 1).error == ECONNRESET);
    }
    SECTION("the backend, after the client's FIN went on") {
        rig r(engine());
        r.engage(rig::sockmap());
        REQUIRE(r.until([&] { return in_map(r); }));
        REQUIRE(::shutdown(r.client(), SHUT_WR) == 0);
        REQUIRE(r.read(r.backend(), 1).eof);
        reset(r.backend_end);
        REQUIRE(r.until([&] { return r.ended(); }));
        CHECK(r.reason() == end_reason::upstream_reset);
    }
}

TEST_CASE("a FIN that arrives while the peer's backlog still holds redirected bytes goes on only after them", "[sockmap]") {
    rig r(engine());
    r.engage(rig::sockmap());
    REQUIRE(r.until([&] { return in_map(r); }));
    // The backend reads nothing yet: the upstream's send queue fills, and the rest waits in its redirect backlog.
    const auto data = pattern(3 << 20, 10);
    r.send_all(r.client(), data);
    REQUIRE(::shutdown(r.client(), SHUT_WR) == 0);
    r.until([] { return false; }, 50ms);
    const auto got = r.read(r.backend(), data.size() + 1, 20000ms);
    CHECK(diff(got.bytes, data) == "");
    CHECK(got.eof);
    CHECK(r.owner.demotions == 0);
}

TEST_CASE("a FIN behind bytes the verdict passed goes on only after them, though the socket reads EOF first", "[sockmap]") {
    rig r(engine());
    r.engage(rig::sockmap());
    REQUIRE(r.until([&] { return in_map(r); }));
    // Backend -> client while the client reads nothing (within the egress bound): what the client's socket
    // buffers cannot hold waits in the psock queue of the proxy's client socket.
    // Small buffers on the way (the test's client window, the proxy socket's send buffer), so that most of it does.
    const int small = 64 * 1024;
    REQUIRE(::setsockopt(r.client(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small) == 0);
    REQUIRE(::setsockopt(r.proxy_client(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
    const auto down = pattern(3 << 20, 21);
    r.send_all(r.backend(), down);
    std::uint64_t upstream_cookie = 0;
    REQUIRE_FALSE(sys::socket_cookie(r.proxy_upstream(), upstream_cookie));
    std::uint64_t redirected = 0;
    int in_client = 0, in_proxy = 0;
    const bool waiting = r.until([&] {
        if (engine()->redirected(upstream_cookie, redirected) || sys::receive_queue_bytes(r.client(), in_client) ||
            sys::send_queue_bytes(r.proxy_client(), in_proxy))
            return false;
        return redirected == down.size() && static_cast<std::uint64_t>(in_client + in_proxy) < redirected;
    });
    INFO("redirected " << redirected << ", in the client's receive queue " << in_client << ", in the proxy's send queue "
                       << in_proxy);
    REQUIRE(waiting);
    // The client's direction is demoted (a ceiling of 0, as the policy does): its bytes and FIN queue behind.
    std::uint64_t cookie = 0;
    REQUIRE_FALSE(sys::socket_cookie(r.proxy_client(), cookie));
    REQUIRE_FALSE(engine()->set_budget(cookie, 0));
    const auto up = pattern(100000, 22);
    r.send_all(r.client(), up);
    REQUIRE(::shutdown(r.client(), SHUT_WR) == 0);
    r.until([] { return false; }, 300ms);
    CHECK_FALSE(r.ended());
    // The client reads: its socket's queue moves, the passed bytes come out, and the FIN goes on after them.
    CHECK(diff(r.read(r.client(), down.size(), 10000ms).bytes, down) == "");
    const auto got = r.read(r.backend(), up.size() + 1);
    CHECK(diff(got.bytes, up) == "");
    CHECK(got.eof);
    REQUIRE(::shutdown(r.backend(), SHUT_WR) == 0);
    CHECK(r.read(r.client(), 1).eof);
    REQUIRE(r.until([&] { return r.ended(); }));
    CHECK(r.reason() == end_reason::completed);
    CHECK(r.pair->report().from_client == up.size());
    CHECK(r.owner.demotions == 1);
}

TEST_CASE("no socket of a pair on sockmap gets a fixed send buffer: the kernel's autotuning bounds it", "[sockmap]") {
    rig r(engine());
    r.engage(rig::sockmap());
    REQUIRE(r.until([&] { return in_map(r); }));
    for (int fd : {r.proxy_client(), r.proxy_upstream()}) {
        int size = 0;
        REQUIRE_FALSE(sys::send_buffer(fd, size));
        CHECK(size <= 4 << 20);
    }
}
