// Decides whether the sockmap data path is usable here: kernel floor, BPF load/attach, live self-test.
#include "datapath/probe.hpp"

#include "sys/fd.hpp"
#include "sys/socket.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <thread>

namespace spliced::datapath {

kernel_version running_kernel() {
    kernel_version k;
    utsname u{};
    if (::uname(&u) == 0) {
        k.release = u.release;
        std::sscanf(u.release, "%d.%d.%d", &k.major, &k.minor, &k.patch);
    }
    return k;
}

bool kernel_meets_floor(const kernel_version& k) {
    if (k.major != 6) return k.major > 6;
    if (k.minor == 12) return k.patch >= 34;
    return k.minor >= 16;
}

namespace {

using clock = std::chrono::steady_clock;
constexpr auto step_budget = std::chrono::seconds(2);

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

// poll() is never restarted after a signal handler (SA_RESTART or not): a SIGHUP at startup must not fail the test.
bool wait_fd(int fd, short events, clock::time_point deadline) {
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
        if (left <= 0) return false;
        pollfd p{fd, events, 0};
        int n = ::poll(&p, 1, static_cast<int>(left));
        if (n < 0 && errno == EINTR) continue;
        return n > 0;
    }
}

// Reads exactly `n` bytes (or until EOF when n == 0 and expect_eof) within the budget.
bool read_exact(int fd, std::string& out, std::size_t n, clock::time_point deadline) {
    char buf[16384];
    while (out.size() < n) {
        if (!wait_fd(fd, POLLIN, deadline)) return false;
        ssize_t r = ::recv(fd, buf, std::min(sizeof(buf), n - out.size()), MSG_DONTWAIT);
        if (r <= 0) {
            if (r < 0 && errno == EAGAIN) continue;
            return false;
        }
        out.append(buf, static_cast<std::size_t>(r));
    }
    return true;
}

bool read_eof(int fd, clock::time_point deadline) {
    char c;
    while (wait_fd(fd, POLLIN, deadline)) {
        ssize_t r = ::recv(fd, &c, 1, MSG_DONTWAIT);
        if (r == 0) return true;
        if (r < 0 && errno == EAGAIN) continue;
        return false;
    }
    return false;
}

bool send_all(int fd, const std::string& data) {
    std::size_t off = 0;
    while (off < data.size()) {
        ssize_t w = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
        if (w <= 0) return false;
        off += static_cast<std::size_t>(w);
    }
    return true;
}

struct loopback_pair {
    sys::unique_fd outer;  // the "client" end, outside the proxy
    sys::unique_fd inner;  // the accepted end, the proxy's socket
};

std::string connect_pair(int listener, const sockaddr_in& addr, loopback_pair& out) {
    out.outer.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!out.outer) return errno_text("socket");
    if (::connect(out.outer.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0)
        return errno_text("connect");
    out.inner.reset(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
    if (!out.inner) return errno_text("accept");
    return {};
}

// A two-connection loopback proxy through the engine: A's accepted socket and B's connecting
// socket are paired. Checks bytes sent before insertion, a 256 KiB transfer, the reverse
// direction, EOF seen by userspace, and FIN forwarded after the peer took every byte.
std::string self_test(sockmap_engine& engine) {
    sys::unique_fd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!listener) return errno_text("socket");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(listener.get(), 4) != 0 ||
        ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0)
        return errno_text("listen");
    loopback_pair a, b;  // proxy pair: a.inner (client side) <-> b.outer (upstream side)
    if (auto e = connect_pair(listener.get(), addr, a); !e.empty()) return e;
    if (auto e = connect_pair(listener.get(), addr, b); !e.empty()) return e;

    std::string early = "spoke-first";
    if (!send_all(a.outer.get(), early)) return errno_text("send");
    // Let the early bytes land in the receive queue before insertion.
    std::this_thread::sleep_for(std::chrono::milliseconds(5));

    auto ins = engine.insert(a.inner.get(), b.outer.get());
    if (ins.error) return ins.what + ": " + ins.error.message();
    struct cleanup {
        sockmap_engine& e;
        sockmap_pair p;
        ~cleanup() { e.remove(p); }
    } remove_on_exit{engine, ins.pair};

    std::string bulk(256 * 1024, '\0');
    for (std::size_t i = 0; i < bulk.size(); ++i) bulk[i] = static_cast<char>((i * 131) ^ (i >> 9));
    if (!send_all(a.outer.get(), bulk)) return errno_text("send");
    ::shutdown(a.outer.get(), SHUT_WR);

    std::string got;
    auto deadline = clock::now() + step_budget;
    if (!read_exact(b.inner.get(), got, early.size() + bulk.size(), deadline))
        return "redirect: received " + std::to_string(got.size()) + " of " +
               std::to_string(early.size() + bulk.size()) + " bytes";
    if (got != early + bulk) return "redirect: bytes differ";
    if (!read_eof(a.inner.get(), clock::now() + step_budget)) return "EOF not seen by userspace";

    std::uint64_t queued = 0;
    sys::tcp_stats src;
    deadline = clock::now() + step_budget;
    for (;;) {
        if (sys::tcp_stats_of(a.inner.get(), src) || sys::bytes_queued_total(b.outer.get(), queued))
            return errno_text("TCP_INFO");
        // tcpi_bytes_received counts the FIN (already seen above) as one byte.
        if (queued >= ins.pair.upstream_queued_base + src.bytes_received - 1) break;
        if (clock::now() > deadline) return "peer never took the redirected bytes";
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ::shutdown(b.outer.get(), SHUT_WR);
    if (!read_eof(b.inner.get(), clock::now() + step_budget)) return "forwarded FIN not seen";

    std::string reply = "reverse-direction";
    if (!send_all(b.inner.get(), reply)) return errno_text("send");
    got.clear();
    if (!read_exact(a.outer.get(), got, reply.size(), clock::now() + step_budget) || got != reply)
        return "reverse redirect failed";
    if (engine.counter(SPLICED_CNT_REDIRECT_BYTES) < bulk.size()) return "verdict counters did not move";
    return {};
}

}  // namespace

std::unique_ptr<sockmap_engine> probe_sockmap(probe_report& report, std::uint32_t capacity) {
    auto kernel = running_kernel();
    bool floor_ok = kernel_meets_floor(kernel);
    report.checks.push_back({"kernel floor", floor_ok,
                             kernel.release + (floor_ok ? " >= 6.16 (or 6.12.34+)" : " is below 6.16 / 6.12.34")});
    std::string error;
    auto engine = sockmap_engine::load(capacity, error);
    report.checks.push_back({"BPF load + SOCKHASH + verdict attach", engine != nullptr,
                             engine ? "sk_skb/stream_verdict attached to a SOCKHASH" : error});
    report.loaded = engine != nullptr;
    if (!engine) {
        report.summary = "sockmap unavailable: " + error;
        return nullptr;
    }
    auto failure = self_test(*engine);
    report.checks.push_back({"self-test (loopback redirect, bytes, EOF)", failure.empty(),
                             failure.empty() ? "passed" : failure});
    report.usable = floor_ok && failure.empty();
    if (!failure.empty())
        report.summary = "sockmap self-test failed: " + failure;
    else if (!floor_ok)
        report.summary = "sockmap works but kernel " + kernel.release + " is below the floor (6.16 / 6.12.34)";
    else
        report.summary = "sockmap usable: self-test passed on kernel " + kernel.release;
    return engine;
}

}  // namespace spliced::datapath
