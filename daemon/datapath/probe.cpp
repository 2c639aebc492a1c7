// Decides whether the sockmap data path is usable here: kernel floor, BPF load/attach, live self-test.
#include "datapath/probe.hpp"

#include "sys/fd.hpp"
#include "sys/socket.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>
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

// What failed in the self-test: a step, with the errno of a call or what was seen instead.
enum class self_test_step { socket, listen, connect, accept, send, insert, redirect, eof, tcp_info, drain, fin, reverse,
                            counters };
const char* step_name(self_test_step s) {
    static constexpr const char* names[] = {"socket", "listen", "connect", "accept", "send", "insert", "redirect",
                                            "EOF not seen by userspace", "TCP_INFO", "peer never took the redirected bytes",
                                            "forwarded FIN not seen", "reverse redirect failed",
                                            "verdict counters did not move"};
    return names[static_cast<int>(s)];
}
struct self_test_failure {
    self_test_step step;
    std::error_code code;  // of the call that failed, if one did
    std::string seen;      // else what was seen
    std::string text() const {
        std::string t = step_name(step);
        if (code) t += ": " + code.message();
        if (!seen.empty()) t += ": " + seen;
        return t;
    }
};
using outcome = std::optional<self_test_failure>;
outcome call_failed(self_test_step step) { return self_test_failure{step, sys::last_error(), {}}; }
outcome saw(self_test_step step, std::string seen = {}) { return self_test_failure{step, {}, std::move(seen)}; }

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

outcome connect_pair(int listener, const sockaddr_in& addr, loopback_pair& out) {
    out.outer.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!out.outer) return call_failed(self_test_step::socket);
    if (::connect(out.outer.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0)
        return call_failed(self_test_step::connect);
    out.inner.reset(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
    if (!out.inner) return call_failed(self_test_step::accept);
    return std::nullopt;
}

// A two-connection loopback proxy through the engine: A's accepted socket and B's connecting
// socket are paired. Checks bytes sent before insertion, a 256 KiB transfer, the reverse
// direction, EOF seen by userspace, and FIN forwarded after the peer took every byte.
outcome self_test(sockmap_engine& engine) {
    sys::unique_fd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!listener) return call_failed(self_test_step::socket);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(listener.get(), 4) != 0 ||
        ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0)
        return call_failed(self_test_step::listen);
    loopback_pair a, b;  // proxy pair: a.inner (client side) <-> b.outer (upstream side)
    if (auto e = connect_pair(listener.get(), addr, a)) return e;
    if (auto e = connect_pair(listener.get(), addr, b)) return e;

    std::string early = "spoke-first";
    if (!send_all(a.outer.get(), early)) return call_failed(self_test_step::send);
    // Let the early bytes land in the receive queue before insertion.
    std::this_thread::sleep_for(std::chrono::milliseconds(5));

    auto ins = engine.insert(a.inner.get(), b.outer.get());
    if (ins.error) return saw(self_test_step::insert, ins.error.text());
    struct cleanup {
        sockmap_engine& e;
        sockmap_pair p;
        ~cleanup() { e.remove(p); }
    } remove_on_exit{engine, ins.pair};

    std::string bulk(256 * 1024, '\0');
    for (std::size_t i = 0; i < bulk.size(); ++i) bulk[i] = static_cast<char>((i * 131) ^ (i >> 9));
    if (!send_all(a.outer.get(), bulk)) return call_failed(self_test_step::send);
    ::shutdown(a.outer.get(), SHUT_WR);

    std::string got;
    auto deadline = clock::now() + step_budget;
    if (!read_exact(b.inner.get(), got, early.size() + bulk.size(), deadline))
        return saw(self_test_step::redirect,
                   "received " + std::to_string(got.size()) + " of " + std::to_string(early.size() + bulk.size()) + " bytes");
    if (got != early + bulk) return saw(self_test_step::redirect, "bytes differ");
    if (!read_eof(a.inner.get(), clock::now() + step_budget)) return saw(self_test_step::eof);

    std::uint64_t queued = 0;
    sys::tcp_stats src;
    deadline = clock::now() + step_budget;
    for (;;) {
        if (sys::tcp_stats_of(a.inner.get(), src) || sys::bytes_queued_total(b.outer.get(), queued))
            return call_failed(self_test_step::tcp_info);
        // tcpi_bytes_received counts the FIN (already seen above) as one byte.
        if (queued >= ins.pair.upstream_queued_base + src.bytes_received - 1) break;
        if (clock::now() > deadline) return saw(self_test_step::drain);
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ::shutdown(b.outer.get(), SHUT_WR);
    if (!read_eof(b.inner.get(), clock::now() + step_budget)) return saw(self_test_step::fin);

    std::string reply = "reverse-direction";
    if (!send_all(b.inner.get(), reply)) return call_failed(self_test_step::send);
    got.clear();
    if (!read_exact(a.outer.get(), got, reply.size(), clock::now() + step_budget) || got != reply)
        return saw(self_test_step::reverse);
    if (engine.counter(SPLICED_CNT_REDIRECT_BYTES) < bulk.size()) return saw(self_test_step::counters);
    return std::nullopt;
}

}  // namespace

std::unique_ptr<sockmap_engine> probe_sockmap(probe_report& report, std::uint32_t capacity) {
    auto kernel = running_kernel();
    bool floor_ok = kernel_meets_floor(kernel);
    report.checks.push_back({"kernel floor", floor_ok,
                             kernel.release + (floor_ok ? " >= 6.16 (or 6.12.34+)" : " is below 6.16 / 6.12.34")});
    engine_error error;
    auto engine = sockmap_engine::load(capacity, error);
    report.checks.push_back({"BPF load + SOCKHASH + verdict attach", engine != nullptr,
                             engine ? "sk_skb/stream_verdict attached to a SOCKHASH" : error.text() + " failed"});
    report.loaded = engine != nullptr;
    if (!engine) {
        report.summary = "sockmap unavailable: " + error.text() + " failed";
        return nullptr;
    }
    const auto failure = self_test(*engine);
    report.checks.push_back({"self-test (loopback redirect, bytes, EOF)", !failure,
                             failure ? failure->text() : "passed"});
    report.usable = floor_ok && !failure;
    if (failure)
        report.summary = "sockmap self-test failed: " + failure->text();
    else if (!floor_ok)
        report.summary = "sockmap works but kernel " + kernel.release + " is below the floor (6.16 / 6.12.34)";
    else
        report.summary = "sockmap usable: self-test passed on kernel " + kernel.release;
    return engine;
}

}  // namespace spliced::datapath
