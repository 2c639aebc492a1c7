// The kernel facts the sockmap path is built around, each checked on real loopback sockets
// through sockmap_engine: every case fails if spliced's handling of that fact is removed.
#include "datapath/sockmap.hpp"
#include "datapath/copy_path.hpp"
#include "net/core_socket.hpp"
#include "sys/fd.hpp"
#include "sys/socket.hpp"

#include <arpa/inet.h>
#include <atomic>
#include <climits>
#include <bpf/bpf.h>
#include <array>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <netinet/in.h>
#include <poll.h>
#include <string>
#include <sys/socket.h>
#include <functional>
#include <thread>

using namespace spliced;
using clock_type = std::chrono::steady_clock;

namespace {

datapath::sockmap_engine& engine() {
    static datapath::engine_error error;
    static auto e = datapath::sockmap_engine::load(datapath::default_capacity, error);
    if (!e) FAIL("sockmap engine did not load: " << error.text());
    return *e;
}

struct conn {
    sys::unique_fd outer;  // the peer outside the proxy
    sys::unique_fd inner;  // the proxy's socket
};

class loopback {
public:
    loopback() {
        listener_.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        addr_.sin_family = AF_INET;
        addr_.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof(addr_);
        REQUIRE(::bind(listener_.get(), reinterpret_cast<sockaddr*>(&addr_), sizeof(addr_)) == 0);
        REQUIRE(::listen(listener_.get(), 16) == 0);
        REQUIRE(::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&addr_), &len) == 0);
    }
    conn connect() {
        conn c;
        c.outer.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        REQUIRE(::connect(c.outer.get(), reinterpret_cast<sockaddr*>(&addr_), sizeof(addr_)) == 0);
        c.inner.reset(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        REQUIRE(c.inner);
        return c;
    }

private:
    sys::unique_fd listener_;
    sockaddr_in addr_{};
};

void send_all(int fd, const std::string& data) {
    std::size_t off = 0;
    while (off < data.size()) {
        ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
        REQUIRE(n > 0);
        off += static_cast<std::size_t>(n);
    }
}

// Reads until `want` bytes arrived, EOF, or the budget ran out.
std::string read_for(int fd, std::size_t want, std::chrono::milliseconds budget) {
    std::string out;
    auto deadline = clock_type::now() + budget;
    char buf[65536];
    while (out.size() < want) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_type::now()).count();
        if (left <= 0) break;
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left)) <= 0) break;
        ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n == 0) break;
        if (n < 0) {
            if (errno == EAGAIN) continue;
            break;
        }
        out.append(buf, static_cast<std::size_t>(n));
    }
    return out;
}

bool eof_within(int fd, std::chrono::milliseconds budget) {
    auto deadline = clock_type::now() + budget;
    char c;
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_type::now()).count();
        if (left <= 0) return false;
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left)) <= 0) return false;
        ssize_t n = ::recv(fd, &c, 1, MSG_DONTWAIT);
        if (n == 0) return true;
        if (n < 0 && errno == EAGAIN) continue;
        return false;
    }
}

std::string pattern(std::size_t n, unsigned seed) {
    std::string s(n, '\0');
    for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 2654435761u + seed) >> 13);
    return s;
}

// Polls `pred` every millisecond until it holds or `budget` runs out; whether it held.
bool until(const std::function<bool()>& pred, std::chrono::milliseconds budget = std::chrono::milliseconds(2000)) {
    const auto deadline = clock_type::now() + budget;
    while (!pred()) {
        if (clock_type::now() >= deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return true;
}

// Bytes in a socket's receive queue, and in its send queue.
int inq(int fd) {
    int n = 0;
    REQUIRE_FALSE(sys::receive_queue_bytes(fd, n));
    return n;
}
int outq(int fd) {
    int n = 0;
    REQUIRE_FALSE(sys::send_queue_bytes(fd, n));
    return n;
}

std::uint64_t cookie_of(int fd) {
    std::uint64_t c = 0;
    REQUIRE_FALSE(sys::socket_cookie(fd, c));
    return c;
}

// Lifts the egress bound of a pair: for cases about the redirect itself, past the 4 MiB a pair may run
// ahead of its peer before the daemon's egress check raises the ceiling.
void unbounded(const datapath::sockmap_pair& pair) {
    for (auto cookie : {pair.client_cookie, pair.upstream_cookie})
        REQUIRE_FALSE(engine().set_budget(cookie, UINT64_MAX));
}

// A proxied pair: client.inner <-> upstream.outer are the proxy's two sockets.
struct proxied {
    loopback net;
    conn client = net.connect();
    conn upstream = net.connect();
};

// A direction of the userspace path on the proxy's two sockets (duplicates of them, in an event core of
// their own): what runs on a pair before it enters the map.
struct userspace_direction {
    net::asio::io_context io;
    net::event_core core{io};
    net::core_socket from, to;
    datapath::direction d{from, to};
    std::array<char, datapath::copy_buffer_size> buffer{};
    userspace_direction(int from_fd, int to_fd)
        : from(core, sys::unique_fd(::dup(from_fd))), to(core, sys::unique_fd(::dup(to_fd))) {
        REQUIRE(from.ok());
        REQUIRE(to.ok());
        core.turn(0);  // the registrations' events: readiness latched
    }
    // One copy read.
    datapath::step read_once() {
        std::size_t budget = SIZE_MAX;
        return datapath::copy_read(d, buffer, budget);
    }
    // Copies until the direction is parked: its last read ran the receive queue dry (on an skb boundary).
    void copy_until_parked() {
        const auto deadline = clock_type::now() + std::chrono::seconds(5);
        while (!d.parked()) {
            REQUIRE(clock_type::now() < deadline);
            const auto s = read_once();
            REQUIRE((s == datapath::step::go_on || s == datapath::step::blocked));
            REQUIRE_FALSE(d.eof);
            if (s == datapath::step::blocked) core.turn(10);
        }
    }
};

}  // namespace

TEST_CASE("bytes a client sent before its socket entered the map are delivered (insert kicks the queue)") {
    proxied p;
    send_all(p.client.outer.get(), "spoke before insertion");
    REQUIRE(until([&] { return inq(p.client.inner.get()) == 22; }));  // in the receive queue
    auto ins = engine().insert(p.client.inner.get(), p.upstream.outer.get());
    REQUIRE_FALSE(ins.error);
    // Nothing else is sent: without the kick these bytes would sit in the queue for good.
    CHECK(read_for(p.upstream.inner.get(), 22, std::chrono::milliseconds(2000)) == "spoke before insertion");
    engine().remove(ins.pair);
}

TEST_CASE("inserting a pair fixes no send buffer: the kernel's autotuning bounds what a slow reader pins") {
    // A send buffer set by hand stays fixed for the socket's life; a 16 MiB one held 37 MB per slow reader.
    proxied p;
    int client_before = 0, upstream_before = 0;
    REQUIRE_FALSE(sys::send_buffer(p.client.inner.get(), client_before));
    REQUIRE_FALSE(sys::send_buffer(p.upstream.outer.get(), upstream_before));
    auto ins = engine().insert(p.client.inner.get(), p.upstream.outer.get());
    REQUIRE_FALSE(ins.error);
    int client_after = 0, upstream_after = 0;
    REQUIRE_FALSE(sys::send_buffer(p.client.inner.get(), client_after));
    REQUIRE_FALSE(sys::send_buffer(p.upstream.outer.get(), upstream_after));
    CHECK(client_after == client_before);
    CHECK(upstream_after == upstream_before);
    // A transfer through the pair's default buffers arrives whole. (Whether it grows the send buffer depends on
    // timing: the backlog's kworker checks for room before it sends, and a send that never runs out of room
    // never marks the socket as wanting more, so under a slow CPU, as in a TCG guest, it often stays put.)
    unbounded(ins.pair);
    const auto data = pattern(8 << 20, 6);
    std::thread writer([&] { send_all(p.client.outer.get(), data); });
    CHECK(read_for(p.upstream.inner.get(), data.size(), std::chrono::milliseconds(10000)) == data);
    writer.join();
    REQUIRE_FALSE(sys::send_buffer(p.upstream.outer.get(), upstream_after));
    CHECK(upstream_after >= upstream_before);
    engine().remove(ins.pair);
}

TEST_CASE("an skb partly read by userspace before insertion is redirected whole: its read prefix goes out twice") {
    // This is why a pair enters the map only once both directions are parked (their last read ran the
    // queue dry), never in the middle of the queued bytes: the kernel's tcp_read_skb() hands the verdict
    // whole skbs.
    proxied p;
    const auto data = pattern(16000, 7);  // one write, one skb on loopback
    send_all(p.client.outer.get(), data);
    REQUIRE(until([&] { return inq(p.client.inner.get()) == static_cast<int>(data.size()); }));
    char head[1000];
    REQUIRE(::recv(p.client.inner.get(), head, sizeof head, MSG_DONTWAIT) == 1000);
    auto ins = engine().insert(p.client.inner.get(), p.upstream.outer.get());
    REQUIRE_FALSE(ins.error);
    const auto got = read_for(p.upstream.inner.get(), data.size(), std::chrono::milliseconds(1000));
    // What a proxy would want is data.substr(1000); the kernel sends all 16000 bytes again.
    CHECK(got.size() == data.size());
    CHECK(got == data);
    engine().remove(ins.pair);
}

TEST_CASE("a direction is parked only where the receive queue ran dry, so the pair enters the map on an skb boundary") {
    proxied p;
    const auto data = pattern(300000, 8);
    send_all(p.client.outer.get(), data);
    // More than one 64 KiB read is queued (all of it, or as much as the receive window takes).
    REQUIRE(until([&] { return outq(p.client.outer.get()) == 0 || inq(p.client.inner.get()) > 64 * 1024; }));
    userspace_direction u(p.client.inner.get(), p.upstream.outer.get());
    REQUIRE(u.read_once() == datapath::step::go_on);  // filled the copy buffer: more may be queued
    CHECK_FALSE(u.d.parked());
    u.copy_until_parked();
    CHECK(u.d.read > 64 * 1024);  // read on to where the queue ran dry, not one 64 KiB read
    auto ins = engine().insert(p.client.inner.get(), p.upstream.outer.get());
    REQUIRE_FALSE(ins.error);
    const auto tail = pattern(5000, 9);
    send_all(p.client.outer.get(), tail);
    const auto got = read_for(p.upstream.inner.get(), data.size() + tail.size() + 1, std::chrono::milliseconds(1000));
    CHECK(got.size() == data.size() + tail.size());  // nothing twice
    CHECK(got == data + tail);
    engine().remove(ins.pair);
}

TEST_CASE("a redirect whose peer is missing fails open: the bytes stay readable and the direction is demoted") {
    proxied p;
    auto ins = engine().insert(p.client.inner.get(), p.upstream.outer.get());
    REQUIRE_FALSE(ins.error);
    auto misses_before = engine().counter(SPLICED_CNT_PEER_MISS);
    // Take the upstream out of the SOCKHASH: the client's next skb has no peer to go to.
    REQUIRE(bpf_map_delete_elem(engine().sockhash_fd(), &ins.pair.upstream_cookie) == 0);
    auto first = pattern(1000, 1), second = pattern(3000, 2);
    send_all(p.client.outer.get(), first);
    CHECK(read_for(p.client.inner.get(), first.size(), std::chrono::milliseconds(2000)) == first);
    // Sticky: later bytes of that direction keep coming to userspace, in order.
    send_all(p.client.outer.get(), second);
    CHECK(read_for(p.client.inner.get(), second.size(), std::chrono::milliseconds(2000)) == second);
    CHECK(engine().counter(SPLICED_CNT_PEER_MISS) >= misses_before + 1);
    spliced_peer_value v{};
    REQUIRE(bpf_map_lookup_elem(engine().peers_fd(), &ins.pair.client_cookie, &v) == 0);
    CHECK((v.flags & SPLICED_PEER_DEMOTED) != 0);
    engine().remove(ins.pair);
}

TEST_CASE("FIN is not forwarded by the redirect and zero-length skbs are not redirected: the peer stays intact") {
    proxied p;
    auto ins = engine().insert(p.client.inner.get(), p.upstream.outer.get());
    REQUIRE_FALSE(ins.error);
    auto data = pattern(256 * 1024, 3);
    send_all(p.client.outer.get(), data);
    ::shutdown(p.client.outer.get(), SHUT_WR);
    CHECK(read_for(p.upstream.inner.get(), data.size(), std::chrono::milliseconds(3000)) == data);
    // Userspace sees the EOF; the backend does not, until spliced forwards it.
    CHECK(eof_within(p.client.inner.get(), std::chrono::milliseconds(2000)));
    CHECK_FALSE(eof_within(p.upstream.inner.get(), std::chrono::milliseconds(100)));
    // The upstream socket still works in both directions after the FIN went by.
    send_all(p.upstream.inner.get(), "reply after client FIN");
    CHECK(read_for(p.client.outer.get(), 22, std::chrono::milliseconds(2000)) == "reply after client FIN");
    ::shutdown(p.upstream.outer.get(), SHUT_WR);
    CHECK(eof_within(p.upstream.inner.get(), std::chrono::milliseconds(2000)));
    engine().remove(ins.pair);
}

TEST_CASE("a half-closed client (CLOSE_WAIT) cannot enter the map and never did, so it can be spliced") {
    proxied p;
    send_all(p.client.outer.get(), "request");
    ::shutdown(p.client.outer.get(), SHUT_WR);
    REQUIRE(until([&] {  // the FIN arrived: CLOSE_WAIT
        sys::tcp_stats st;
        return !sys::tcp_stats_of(p.client.inner.get(), st) && !st.established();
    }));
    auto ins = engine().insert(p.client.inner.get(), p.upstream.outer.get());
    CHECK(ins.error);
    CHECK_FALSE(ins.entered_map);
    std::uint64_t value = 0;
    auto c = cookie_of(p.client.inner.get());
    CHECK(bpf_map_lookup_elem(engine().peers_fd(), &c, &value) != 0);
    // Its bytes are untouched and still readable by a fallback path.
    CHECK(read_for(p.client.inner.get(), 7, std::chrono::milliseconds(1000)) == "request");
}

TEST_CASE("at capacity the peer map refuses the next pair with E2BIG before any socket entered the SOCKHASH; removing a pair makes room") {
    datapath::engine_error error;
    auto small = datapath::sockmap_engine::load(1, error);  // one pair: two entries per map
    REQUIRE(small);
    CHECK(small->capacity() == 1);
    proxied first, second;
    auto in = small->insert(first.client.inner.get(), first.upstream.outer.get());
    REQUIRE_FALSE(in.error);
    auto refused = small->insert(second.client.inner.get(), second.upstream.outer.get());
    CHECK(refused.error.code.value() == E2BIG);
    CHECK(refused.map_full);
    CHECK_FALSE(refused.entered_map);  // so the pair may be spliced
    std::uint64_t value = 0;
    for (int fd : {second.client.inner.get(), second.upstream.outer.get()}) {
        auto c = cookie_of(fd);
        CHECK(bpf_map_lookup_elem(small->sockhash_fd(), &c, &value) != 0);
        CHECK(bpf_map_lookup_elem(small->peers_fd(), &c, &value) != 0);
    }
    // The refused pair still carries bytes through userspace, ungated.
    send_all(second.client.outer.get(), "still mine");
    CHECK(read_for(second.client.inner.get(), 10, std::chrono::milliseconds(1000)) == "still mine");
    // The first pair redirects as usual.
    send_all(first.client.outer.get(), "redirected");
    CHECK(read_for(first.upstream.inner.get(), 10, std::chrono::milliseconds(2000)) == "redirected");
    small->remove(in.pair);
    auto again = small->insert(second.client.inner.get(), second.upstream.outer.get());
    CHECK_FALSE(again.error);
    small->remove(again.pair);
}

TEST_CASE("removing a pair leaves no SOCKHASH, peer-map or budget entry behind") {
    proxied p;
    auto ins = engine().insert(p.client.inner.get(), p.upstream.outer.get());
    REQUIRE_FALSE(ins.error);
    std::uint64_t value = 0;
    spliced_peer_value peer{};
    CHECK(bpf_map_lookup_elem(engine().peers_fd(), &ins.pair.client_cookie, &peer) == 0);
    CHECK(bpf_map_lookup_elem(engine().budget_fd(), &ins.pair.client_cookie, &value) == 0);
    engine().remove(ins.pair);
    for (auto cookie : {ins.pair.client_cookie, ins.pair.upstream_cookie}) {
        CHECK(bpf_map_lookup_elem(engine().sockhash_fd(), &cookie, &value) != 0);
        CHECK(bpf_map_lookup_elem(engine().peers_fd(), &cookie, &peer) != 0);
        CHECK(bpf_map_lookup_elem(engine().budget_fd(), &cookie, &value) != 0);
    }
}

TEST_CASE("redirected bytes count as taken by the peer only once they are in its send queue") {
    proxied p;
    auto ins = engine().insert(p.client.inner.get(), p.upstream.outer.get());
    REQUIRE_FALSE(ins.error);
    unbounded(ins.pair);
    auto data = pattern(4 * 1024 * 1024, 4);
    std::thread writer([&] {
        send_all(p.client.outer.get(), data);
        ::shutdown(p.client.outer.get(), SHUT_WR);
    });
    // Slow backend: read nothing yet, so the redirect backlog fills.
    REQUIRE(eof_within(p.client.inner.get(), std::chrono::milliseconds(10000)));
    sys::tcp_stats src;
    std::uint64_t queued = 0;
    REQUIRE_FALSE(sys::tcp_stats_of(p.client.inner.get(), src));
    // tcpi_bytes_received counts the FIN as one byte.
    CHECK(src.bytes_received == data.size() + 1);
    std::string got = read_for(p.upstream.inner.get(), data.size(), std::chrono::milliseconds(10000));
    writer.join();
    CHECK(got.size() == data.size());
    CHECK(got == data);
    REQUIRE_FALSE(sys::bytes_queued_total(p.upstream.outer.get(), queued));
    // Measured against the baseline taken at insertion: the connecting socket's
    // tcpi_bytes_acked also counts its SYN, which would make the drain check stop one byte short.
    CHECK(queued - ins.pair.upstream_queued_base == data.size());
    engine().remove(ins.pair);
}

TEST_CASE("a demoted direction delivers every byte to userspace, in order, even in bulk") {
    proxied p;
    auto ins = engine().insert(p.client.inner.get(), p.upstream.outer.get());
    REQUIRE_FALSE(ins.error);
    REQUIRE(bpf_map_delete_elem(engine().sockhash_fd(), &ins.pair.upstream_cookie) == 0);
    auto data = pattern(4 * 1024 * 1024, 5);
    std::thread writer([&] { send_all(p.client.outer.get(), data); });
    auto got = read_for(p.client.inner.get(), data.size(), std::chrono::milliseconds(10000));
    writer.join();
    CHECK(got.size() == data.size());
    CHECK(got == data);
    engine().remove(ins.pair);
}

TEST_CASE("a FIN arriving while the socket's redirect backlog still holds bytes does not strand them") {
    proxied p;
    auto ins = engine().insert(p.client.inner.get(), p.upstream.outer.get());
    REQUIRE_FALSE(ins.error);
    unbounded(ins.pair);
    // Backend -> client, while the client reads nothing: the client socket's send buffer fills
    // and the rest waits in its psock backlog.
    auto data = pattern(16 * 1024 * 1024, 6);
    // A send buffer far below the transfer (the pair's own is 16 MiB), so the backlog must hold the rest.
    REQUIRE_FALSE(sys::set_send_buffer(p.client.inner.get(), 256 * 1024));
    std::thread writer([&] { send_all(p.upstream.inner.get(), data); });
    // Bytes redirected to the client's proxy socket past what it took: they wait in its backlog.
    const auto upstream = cookie_of(p.upstream.outer.get());
    CHECK(until([&] {
        std::uint64_t redirected = 0, queued = 0;
        if (engine().redirected(upstream, redirected) || sys::bytes_queued_total(p.client.inner.get(), queued))
            return false;
        return redirected > queued - ins.pair.client_queued_base;
    }));
    // The client half-closes: its FIN reaches the proxy socket with the backlog non-empty.
    ::shutdown(p.client.outer.get(), SHUT_WR);
    CHECK(eof_within(p.client.inner.get(), std::chrono::milliseconds(2000)));
    auto got = read_for(p.client.outer.get(), data.size(), std::chrono::milliseconds(10000));
    writer.join();
    CHECK(got.size() == data.size());
    CHECK(got == data);
    engine().remove(ins.pair);
}

TEST_CASE("a FIN behind bytes the verdict passed reads as EOF while those bytes still wait in the socket's psock "
          "queue behind the redirects to it; they come out, and the EOF after them, once its peer reads") {
    proxied p;
    auto ins = engine().insert(p.client.inner.get(), p.upstream.outer.get());
    REQUIRE_FALSE(ins.error);
    unbounded(ins.pair);
    // Backend -> client while the client reads nothing: the rest waits in the client socket's psock queue.
    const auto down = pattern(4 << 20, 11);
    send_all(p.upstream.inner.get(), down);  // the redirect takes it all: no backpressure
    const auto upstream = cookie_of(p.upstream.outer.get());
    REQUIRE(until([&] {
        std::uint64_t redirected = 0, queued = 0;
        if (engine().redirected(upstream, redirected) || sys::bytes_queued_total(p.client.inner.get(), queued))
            return false;
        return redirected == down.size() && queued - ins.pair.client_queued_base < redirected;
    }));
    // The client's direction is demoted (a ceiling of 0): its bytes are passed, into that same queue, behind.
    REQUIRE_FALSE(engine().set_budget(ins.pair.client_cookie, 0));
    const auto up = pattern(100000, 12);
    send_all(p.client.outer.get(), up);
    REQUIRE(::shutdown(p.client.outer.get(), SHUT_WR) == 0);
    REQUIRE(until([&] {
        sys::tcp_stats st;
        return !sys::tcp_stats_of(p.client.inner.get(), st) && st.bytes_received == up.size() + 1;  // + the FIN
    }));
    std::uint64_t redirected_up = 0;
    REQUIRE_FALSE(engine().redirected(ins.pair.client_cookie, redirected_up));
    CHECK(redirected_up == 0);
    // EOF, though not one of the 100,000 bytes was read: a reader that believed it would cut the stream short.
    char c;
    CHECK(::recv(p.client.inner.get(), &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0);
    // The client reads: the queue moves, the passed bytes become readable, then the EOF.
    CHECK(read_for(p.client.outer.get(), down.size(), std::chrono::milliseconds(10000)) == down);
    CHECK(read_for(p.client.inner.get(), up.size(), std::chrono::milliseconds(5000)) == up);
    CHECK(eof_within(p.client.inner.get(), std::chrono::milliseconds(2000)));
    engine().remove(ins.pair);
}

TEST_CASE("the redirect gives no backpressure, so a direction that reaches its egress ceiling is demoted: the "
          "redirected bytes stop at the ceiling, the rest is passed to userspace in order, and it is counted") {
    proxied p;
    auto ins = engine().insert(p.client.inner.get(), p.upstream.outer.get());
    REQUIRE_FALSE(ins.error);
    const auto demoted_before = engine().counter(SPLICED_CNT_EGRESS_DEMOTED);
    // Nobody raises the ceiling (that is the daemon's egress check): past egress_backlog_limit the verdict
    // must pass. Without the bound it would redirect all 12 MiB into the upstream's send buffer and backlog.
    auto data = pattern(12 * 1024 * 1024, 10);
    std::thread writer([&] { send_all(p.client.outer.get(), data); });
    std::string redirected_side, passed;
    std::uint64_t redirected = 0;
    auto deadline = clock_type::now() + std::chrono::seconds(20);
    char buf[65536];
    while (clock_type::now() < deadline && redirected_side.size() + passed.size() < data.size()) {
        pollfd fds[2] = {{p.client.inner.get(), POLLIN, 0}, {p.upstream.inner.get(), POLLIN, 0}};
        if (::poll(fds, 2, 100) <= 0) continue;
        if (fds[0].revents & POLLIN) {
            ssize_t n = ::recv(fds[0].fd, buf, sizeof(buf), MSG_DONTWAIT);
            if (n > 0) passed.append(buf, static_cast<std::size_t>(n));
        }
        if (fds[1].revents & POLLIN) {
            ssize_t n = ::recv(fds[1].fd, buf, sizeof(buf), MSG_DONTWAIT);
            if (n > 0) redirected_side.append(buf, static_cast<std::size_t>(n));
        }
    }
    writer.join();
    REQUIRE_FALSE(engine().redirected(ins.pair.client_cookie, redirected));
    CHECK(redirected <= datapath::egress_backlog_limit);
    CHECK(redirected_side.size() == redirected);
    CHECK(redirected_side.size() + passed.size() == data.size());
    CHECK(redirected_side + passed == data);
    CHECK(engine().counter(SPLICED_CNT_EGRESS_DEMOTED) - demoted_before == 1);
    engine().remove(ins.pair);
}

TEST_CASE("raising a direction's egress ceiling as the peer takes bytes keeps a transfer past the first ceiling on "
          "the redirect path") {
    proxied p;
    auto ins = engine().insert(p.client.inner.get(), p.upstream.outer.get());
    REQUIRE_FALSE(ins.error);
    const auto demoted_before = engine().counter(SPLICED_CNT_EGRESS_DEMOTED);
    auto data = pattern(12 * 1024 * 1024, 11);
    // Paced (~100 MB/s): a sender that outruns the kworker filling the peer's send queue legitimately
    // reaches the ceiling however fast the peer reads; that is the case above.
    std::thread writer([&] {
        for (std::size_t off = 0; off < data.size(); off += 128 * 1024) {
            send_all(p.client.outer.get(), data.substr(off, 128 * 1024));
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    });
    std::string got;
    auto deadline = clock_type::now() + std::chrono::seconds(20);
    char buf[65536];
    while (clock_type::now() < deadline && got.size() < data.size()) {
        // What the daemon's egress check does, here after every read: ceiling = taken + limit.
        std::uint64_t queued = 0;
        REQUIRE_FALSE(sys::bytes_queued_total(p.upstream.outer.get(), queued));
        REQUIRE_FALSE(engine().set_budget(ins.pair.client_cookie,
                                          queued - ins.pair.upstream_queued_base + datapath::egress_backlog_limit));
        pollfd fd{p.upstream.inner.get(), POLLIN, 0};
        if (::poll(&fd, 1, 100) <= 0) continue;
        ssize_t n = ::recv(fd.fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n > 0) got.append(buf, static_cast<std::size_t>(n));
    }
    writer.join();
    CHECK(got.size() == data.size());
    CHECK(got == data);
    CHECK(engine().counter(SPLICED_CNT_EGRESS_DEMOTED) == demoted_before);
    engine().remove(ins.pair);
}

TEST_CASE("recv stops short at an urgent mark; EPOLLPRI says so, and the direction reads on through it before it is parked") {
    // A read cut short at the mark, taken for an empty queue, would leave a partly read skb for the verdict,
    // which redirects skbs whole (see the case above). SO_OOBINLINE keeps the urgent byte in the stream; the
    // mark's EPOLLPRI keeps the direction reading until EAGAIN.
    proxied p;
    for (int fd : {p.client.inner.get(), p.upstream.outer.get(), p.upstream.inner.get()})
        REQUIRE_FALSE(sys::set_oob_inline(fd));
    const auto head = pattern(3000, 21), tail = pattern(20000, 22);
    send_all(p.client.outer.get(), head);
    REQUIRE(::send(p.client.outer.get(), "!", 1, MSG_OOB | MSG_NOSIGNAL) == 1);
    send_all(p.client.outer.get(), tail);
    // All of it in the receive queue, coalesced into few skbs.
    REQUIRE(until([&] { return inq(p.client.inner.get()) == static_cast<int>(head.size() + 1 + tail.size()); }));
    userspace_direction u(p.client.inner.get(), p.upstream.outer.get());
    CHECK(u.from.urgent());
    REQUIRE(u.read_once() == datapath::step::go_on);
    CHECK(u.d.read == head.size());  // cut short at the mark, with bytes queued behind it
    CHECK_FALSE(u.d.parked());
    u.copy_until_parked();
    CHECK(u.d.read == head.size() + 1 + tail.size());
    auto ins = engine().insert(p.client.inner.get(), p.upstream.outer.get());
    REQUIRE_FALSE(ins.error);
    const auto more = pattern(5000, 23);
    send_all(p.client.outer.get(), more);
    const std::string want = head + "!" + tail + more;
    const auto got = read_for(p.upstream.inner.get(), want.size() + 1, std::chrono::milliseconds(1000));
    CHECK(got.size() == want.size());  // nothing twice
    CHECK(got == want);
    engine().remove(ins.pair);
}

TEST_CASE("removing a pair while bytes keep arriving counts no peer miss (peer entries go before SOCKHASH entries)") {
    // A verdict that finds its peer gone from the SOCKHASH counts a peer miss: with the SOCKHASH
    // entries deleted first, every pair that ends while its peer still sends would look like one.
    std::uint64_t misses = 0;
    for (int round = 0; round < 40; ++round) {
        proxied p;
        auto ins = engine().insert(p.client.inner.get(), p.upstream.outer.get());
        REQUIRE_FALSE(ins.error);
        unbounded(ins.pair);
        std::atomic<bool> stop{false};
        std::thread sender([&] {
            const auto chunk = pattern(4096, 31);
            while (!stop) {
                if (::send(p.upstream.inner.get(), chunk.data(), chunk.size(), MSG_NOSIGNAL | MSG_DONTWAIT) < 0 &&
                    errno != EAGAIN)
                    break;
            }
        });
        std::thread reader([&] { read_for(p.client.outer.get(), SIZE_MAX, std::chrono::milliseconds(60)); });
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        const auto before = engine().counter(SPLICED_CNT_PEER_MISS);
        engine().remove(ins.pair);
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        misses += engine().counter(SPLICED_CNT_PEER_MISS) - before;
        stop = true;
        sender.join();
        reader.join();
    }
    CHECK(misses == 0);
}
