// Fault injection against the real daemon on one data path: clients that reset mid-transfer, a black-holed
// backend, SIGTERM under load, connection churn and many idle connections; each case starts its own daemon.
#include <catch2/catch.hpp>

#include "echo_peer.hpp"
#include "suite.hpp"
#include "harness.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <netinet/tcp.h>
#include <netinet/in.h>
#include <poll.h>
#include <set>
#include <sstream>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

namespace it {

namespace {


#if defined(__SANITIZE_ADDRESS__)
constexpr bool sanitized = true;  // the daemon is built the same way: much slower, and its RSS means little
#else
constexpr bool sanitized = false;
#endif

// The daemon's worker threads in every case.
constexpr int workers = 2;
// Seconds the daemon may take to exit once it has nothing left to drain (stopping the metrics endpoint's thread,
// the workers' threads, a loaded machine).
constexpr double exit_margin = 3.0;
// Empty pipes the splice path keeps per worker thread (daemon/datapath/splice_pump.cpp pool_limit), two fds each:
// after a splice run they may stay open, up to this many.
constexpr int pooled_pipe_fds = workers * 64 * 2;

// The path leaves pooled pipes behind.
bool uses_pipes() { return datapath() == "splice" || datapath() == "auto"; }

long env_long(const char* name, long fallback) {
    const char* v = std::getenv(name);
    return v && *v ? std::atol(v) : fallback;
}

std::string fixed(double v, int decimals = 2) {
    std::ostringstream s;
    s << std::fixed << std::setprecision(decimals) << v;
    return s.str();
}

// One line per case with its figures, for reports: grep SUMMARY.
void summary(const std::string& case_name, const std::string& figures) {
    std::cout << "SUMMARY [" << datapath() << (sanitized ? ", sanitized build" : "") << "] " << case_name << ": "
              << figures << std::endl;
}

void loud(const std::string& text) {
    std::cout << "\n**********************************************************************\n"
              << text << "\n**********************************************************************\n"
              << std::endl;
}


// ---------------------------------------------------------------------------------------------------------
// A daemon per case

struct route_def {
    std::string name;
    std::vector<std::string> backends;
    std::string connect_timeout = "2s";
    std::string idle_timeout = "1h";
};

struct daemon_options {
    std::string drain_timeout = "5s";
    std::string access_log = "stdout";  // off for the cases with tens of thousands of connections; "file": access.log
    bool metrics = true;                // false: no metrics section (no metrics thread: SIGPIPE is spliced's own)
    process_options process = {};
};

// free_port() may hand out a port twice: draw until it is new to this run.
std::uint16_t fresh_port(int family) {
    static std::set<std::uint16_t> taken;
    for (;;)
        if (auto p = free_port(family); taken.insert(p).second) return p;
}

class case_daemon {
public:
    case_daemon(const std::vector<route_def>& routes, const daemon_options& opts) : metrics_port_(fresh_port(AF_INET)) {
        for (auto& r : routes) port_[r.name] = fresh_port(AF_INET);
        daemon_config c;
        c.datapath = datapath();
        c.workers = workers;
        c.drain_timeout = opts.drain_timeout;
        if (opts.metrics) c.metrics_port = metrics_port_;
        c.access_log = opts.access_log == "file" ? access_log_path() : opts.access_log;
        for (auto& r : routes)
            c.routes.push_back({r.name, {"127.0.0.1:" + std::to_string(port_.at(r.name))},
                                "connect: " + r.connect_timeout + ", idle: " + r.idle_timeout, "", r.backends});
        write_file(dir.file("spliced.yaml"), c.yaml());
        process = std::make_unique<daemon_process>(settings().binary, dir.file("spliced.yaml"),
                                                   dir.file("spliced.log"), dir.file("notify.sock"), 15s, opts.process);
    }

    temp_dir dir;
    std::string access_log_path() const { return dir.file("access.log"); }
    std::uint16_t metrics_port() const { return metrics_port_; }
    std::unique_ptr<daemon_process> process;

    pid_t pid() const { return process->pid(); }
    std::uint16_t port(const std::string& route) const { return port_.at(route); }
    metrics_snapshot metrics() const { return scrape("127.0.0.1", metrics_port_); }
    unique_fd connect(const std::string& route, std::chrono::milliseconds io_timeout = 30s) const {
        return connect_tcp("127.0.0.1", port_.at(route), io_timeout);
    }

private:
    std::uint16_t metrics_port_;
    std::map<std::string, std::uint16_t> port_;
};

std::unique_ptr<case_daemon> current;  // the running case's daemon; released by after_case

[[noreturn]] void skip_run(const std::string& why) {
    loud("SKIPPED: " + why);
    current.reset();
    std::exit(77);
}

// Starts the case's daemon (a port taken meanwhile by another process: retried with fresh ports) and, on the map
// paths, checks that it holds both maps and that we may read them.
case_daemon& start_daemon(const std::vector<route_def>& routes, const daemon_options& opts = {}) {
    current.reset();
    for (int attempt = 1;; ++attempt) {
        try {
            current = std::make_unique<case_daemon>(routes, opts);
            break;
        } catch (const std::exception& e) {
            std::string why = e.what();
            if (attempt < 3 && why.find("in use") != std::string::npos) {
                std::cout << "spliced could not bind a port (taken meanwhile?); retrying with fresh ports" << std::endl;
                continue;
            }
            FAIL("cannot start spliced: " << why);
        }
    }
    std::cout << "  spliced pid " << current->pid() << ", config " << current->dir.file("spliced.yaml") << std::endl;
    if (uses_maps()) {
        for (const char* name : {"sockhash", "peers"}) {
            auto census = count_map_entries(current->pid(), name);
            if (census.error == EPERM || census.error == EACCES)
                skip_run("sockmap tests need root (CAP_BPF+CAP_NET_ADMIN) to read the daemon's BPF maps (" +
                         census.what + ": " + std::strerror(census.error) + ")");
            INFO(census.what << ": " << std::strerror(census.error) << "; log:\n" << current->process->log_tail());
            REQUIRE(census.error == 0);
            INFO("spliced holds no BPF map named '" << name << "': it is not running the sockmap data path although "
                                                                 "the config says datapath: "
                                                              << datapath());
            REQUIRE(census.maps >= 1);
        }
    }
    return *current;
}

// ---------------------------------------------------------------------------------------------------------
// Metrics and the daemon's state


double promotions_of(const metrics_snapshot& m, const std::string& route) {
    return m.sum("spliced_sockmap_promotions_total", {{"route", route}});
}

double active_of(const metrics_snapshot& m, const std::string& route) {
    return m.sum("spliced_connections_active", {{"route", route}});
}

double connect_errors(const metrics_snapshot& m, const std::string& route, const std::string& reason) {
    return m.sum("spliced_upstream_connect_errors_total", {{"route", route}, {"reason", reason}});
}

// Waits (bounded) until `route` has handed off `n` more connections than `before`, on any path.
bool wait_handed_off(const case_daemon& d, const std::string& route, const path_counts& before, double n,
                     std::chrono::milliseconds budget = 10s) {
    return run_until([&] { return connections_of(d.metrics(), route).total() - before.total() >= n; }, budget, 10ms);
}

// Requires that `route` handed off exactly `n` connections since `before`, all on the data path under test.
void require_handed_off(const case_daemon& d, const std::string& route, const path_counts& before, double n) {
    wait_handed_off(d, route, before, n);
    auto now = connections_of(d.metrics(), route);
    INFO("route " << route << ": connections_total since the case began: " << describe(before, now) << "; expected +"
                  << n << " on " << handoff_path());
    CHECK(now.total() - before.total() == n);
    CHECK(now.on(handoff_path()) - before.on(handoff_path()) == n);
}

// Waits (bounded) until `route` has no open connection; returns the last value seen.
double wait_inactive(const case_daemon& d, const std::string& route, std::chrono::milliseconds budget = 10s) {
    double active = -1;
    run_until(
        [&] {
            active = active_of(d.metrics(), route);
            return active == 0;
        },
        budget, 20ms);
    return active;
}

struct map_entries {
    std::uint64_t sockhash = 0, peers = 0, budget = 0;
    bool empty() const { return sockhash == 0 && peers == 0 && budget == 0; }
};

map_entries entries_of(pid_t pid) {
    return {count_map_entries(pid, "sockhash").entries, count_map_entries(pid, "peers").entries,
            count_map_entries(pid, "budget").entries};
}

// On the map paths, waits (bounded) until no sockhash or peers entry is left and checks it.
void require_maps_empty(const case_daemon& d, std::chrono::milliseconds budget = 10s) {
    if (!uses_maps()) return;
    map_entries e;
    bool empty = run_until(
        [&] {
            e = entries_of(d.pid());
            return e.empty();
        },
        budget, 50ms);
    INFO("entries left: sockhash " << e.sockhash << ", peers " << e.peers << ", budget " << e.budget);
    CHECK(empty);
}

// Sockets and other descriptors back to `base` or fewer (a metrics scrape's connection may still have been open
// when the baseline was counted; a leak only ever adds); pipes at most the splice pool's bound above it.
bool fds_back_to(const fd_census& now, const fd_census& base) {
    return now.sockets <= base.sockets && now.other <= base.other && now.pipes <= base.pipes + pooled_pipe_fds;
}

fd_census wait_fds_back(const case_daemon& d, const fd_census& base, std::chrono::milliseconds budget = 10s) {
    fd_census now;
    run_until(
        [&] {
            now = count_fds(d.pid());
            return fds_back_to(now, base);
        },
        budget, 50ms);
    return now;
}

void check_fds_back(const fd_census& now, const fd_census& base) {
    INFO("daemon descriptors: baseline " << base.text() << ", now " << now.text() << " (pipes may stay up to +"
                                         << pooled_pipe_fds << ": the splice pipe pool); other descriptors before: "
                                         << base.others() << "; now: " << now.others());
    CHECK(fds_back_to(now, base));
}

void require_fds_back(const case_daemon& d, const fd_census& base, std::chrono::milliseconds budget = 10s) {
    check_fds_back(wait_fds_back(d, base, budget), base);
}

// ---------------------------------------------------------------------------------------------------------
// Client sockets

// A client socket from 127.0.0.(2 + index % 16), its port picked at connect time (IP_BIND_ADDRESS_NO_PORT), so
// tens of thousands of short connections and their TIME_WAITs spread over sixteen ephemeral port ranges.
unique_fd spread_socket(std::size_t index, bool nonblocking) {
    unique_fd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0));
    if (!fd) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
    int one = 1;
    setsockopt(fd.get(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    sockaddr_in src{};
    src.sin_family = AF_INET;
    src.sin_addr.s_addr = htonl(INADDR_LOOPBACK + 2 + static_cast<std::uint32_t>(index % 16));
    if (bind(fd.get(), reinterpret_cast<sockaddr*>(&src), sizeof src) != 0)
        throw std::runtime_error(std::string("bind 127.0.0.x: ") + std::strerror(errno));
    return fd;
}

sockaddr_in loopback(std::uint16_t port) {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return sin;
}

// The kernel's TCP state of a socket (TCP_ESTABLISHED, TCP_CLOSE_WAIT, TCP_CLOSE, ...), -1 on error.
int tcp_state(int fd) {
    tcp_info info{};
    socklen_t len = sizeof info;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return -1;
    return info.tcpi_state;
}

void close_with_reset(unique_fd& fd) {
    linger l{1, 0};
    setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
    fd.reset();
}

// ---------------------------------------------------------------------------------------------------------
// A backend whose end of the connection the test watches

// One connection at a time. `slow_sink` reads 64 KiB every 500 ms (about 130 KB/s: the megabytes queued ahead of it
// take tens of seconds to drain, so only a reset the daemon passes on at once ends it in time); `endless_source`
// waits for one request byte, then writes a stream (at most 64 MiB) as fast as its socket takes it. Either way it
// watches its socket's TCP state every few milliseconds and records the first sign of the end and when it came:
// "reset" (state CLOSE: an RST arrived), "FIN" (CLOSE_WAIT: a clean end), or the send error.
class watched_backend {
public:
    enum mode { slow_sink, endless_source };
    struct outcome {
        std::uint64_t accepted = 0;
        bool ended = false;
        std::string how;
        clock::time_point at{};
        std::uint64_t bytes = 0;  // read (sink) or written (source) on the last connection
    };

    explicit watched_backend(mode m) : mode_(m) {
        listen_.reset(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        auto sin = loopback(0);
        socklen_t len = sizeof sin;
        if (!listen_ || bind(listen_.get(), reinterpret_cast<sockaddr*>(&sin), len) != 0 || listen(listen_.get(), 16) != 0 ||
            getsockname(listen_.get(), reinterpret_cast<sockaddr*>(&sin), &len) != 0)
            throw std::runtime_error(std::string("watched backend: ") + std::strerror(errno));
        port_ = ntohs(sin.sin_port);
        thread_ = std::thread([this] { run(); });
    }
    ~watched_backend() {
        stop_ = true;
        thread_.join();
    }
    std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
    // The sink reads as fast as it can from now on.
    void hurry() { hurry_ = true; }
    outcome state() {
        std::lock_guard lock(mutex_);
        return state_;
    }

private:
    void run() {
        while (!stop_) {
            pollfd p{listen_.get(), POLLIN, 0};
            if (poll(&p, 1, 20) != 1) continue;
            unique_fd c(accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
            if (!c) continue;
            {
                std::lock_guard lock(mutex_);
                outcome fresh;
                fresh.accepted = state_.accepted + 1;
                state_ = fresh;
            }
            serve(c.get());
        }
    }

    void end(const std::string& how) {
        std::lock_guard lock(mutex_);
        state_.ended = true;
        state_.how = how;
        state_.at = clock::now();
    }

    // Returns true once the end is recorded.
    bool check_state(int fd) {
        int st = tcp_state(fd);
        if (st == TCP_CLOSE) end("reset");
        else if (st == TCP_CLOSE_WAIT) end("FIN");
        else if (st < 0) end("TCP_INFO failed");
        else return false;
        return true;
    }

    void serve(int fd) {
        std::vector<std::uint8_t> buf(256 * KiB);
        const payload stream(0xe7d1e55);
        bool requested = mode_ == slow_sink;
        std::uint64_t bytes = 0;
        auto next_read = clock::now();
        while (!stop_) {
            if (check_state(fd)) return;
            if (mode_ == slow_sink) {
                if (hurry_ || clock::now() >= next_read) {
                    ssize_t n;
                    do {
                        n = recv(fd, buf.data(), hurry_ ? buf.size() : 64 * KiB, 0);
                        if (n > 0) bytes += static_cast<std::uint64_t>(n);
                    } while (hurry_ && n > 0);
                    next_read += 500ms;
                }
            } else if (!requested) {
                char byte;
                requested = recv(fd, &byte, 1, 0) == 1;
            } else if (bytes < 64 * MiB) {
                pollfd p{fd, POLLOUT, 0};
                if (poll(&p, 1, 5) == 1) {
                    auto k = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), 64 * MiB - bytes));
                    stream.fill(bytes, buf.data(), k);
                    ssize_t n = send(fd, buf.data(), k, MSG_NOSIGNAL);
                    const int err = errno;
                    if (n > 0) bytes += static_cast<std::uint64_t>(n);
                    if (n < 0 && err != EAGAIN && err != EINTR) {
                        if (!check_state(fd)) end(std::string("send: ") + std::strerror(err));
                        return;
                    }
                }
            }
            {
                std::lock_guard lock(mutex_);
                state_.bytes = bytes;
            }
            std::this_thread::sleep_for(2ms);
        }
    }

    mode mode_;
    unique_fd listen_;
    std::uint16_t port_ = 0;
    std::atomic<bool> stop_{false}, hurry_{false};
    std::mutex mutex_;
    outcome state_;
    std::thread thread_;
};

// ---------------------------------------------------------------------------------------------------------
// A black-holed address

// An address in a network namespace of the test's own where SYNs go unanswered: a veth pair into the namespace,
// which has the address but no listener, and a blackhole route there swallows the RSTs it would send back. Removed
// with its veth pair on destruction; namespaces left by an earlier run that was killed are removed first.
class blackhole_netns {
public:
    blackhole_netns() {
        remove_stale();
        const auto pid = static_cast<unsigned>(getpid());
        name_ = "splbh" + std::to_string(pid);
        // One /30 per pid (mod 16384) in 10.201.0.0/16.
        const std::string net = "10.201." + std::to_string((pid >> 6) & 255) + ".";
        const unsigned base = (pid & 63) * 4;
        host_ip_ = net + std::to_string(base + 1);
        ns_ip_ = net + std::to_string(base + 2);
        const std::string host_if = name_ + "a", ns_if = name_ + "b";
        run("ip netns add " + name_);
        created_ = true;
        run("ip link add " + host_if + " type veth peer name " + ns_if + " netns " + name_);
        run("ip addr add " + host_ip_ + "/30 dev " + host_if);
        run("ip link set " + host_if + " up");
        run("ip -n " + name_ + " addr add " + ns_ip_ + "/30 dev " + ns_if);
        run("ip -n " + name_ + " link set " + ns_if + " up");
        run("ip -n " + name_ + " route add blackhole " + host_ip_ + "/32");
    }
    ~blackhole_netns() {
        if (created_) std::system(("ip netns del " + name_ + " >/dev/null 2>&1").c_str());  // takes the veth pair along
    }
    blackhole_netns(const blackhole_netns&) = delete;
    blackhole_netns& operator=(const blackhole_netns&) = delete;
    std::string address(std::uint16_t port) const { return ns_ip_ + ":" + std::to_string(port); }
    const std::string& name() const { return name_; }

private:
    static void run(const std::string& cmd) {
        std::string full = cmd + " 2>&1";
        FILE* p = popen(full.c_str(), "r");
        if (!p) throw std::runtime_error("cannot run: " + cmd);
        std::string out;
        char buf[256];
        while (fgets(buf, sizeof buf, p)) out += buf;
        int st = pclose(p);
        if (st != 0) throw std::runtime_error("'" + cmd + "' failed: " + out);
    }
    static void remove_stale() {
        FILE* p = popen("ip netns list 2>/dev/null", "r");
        if (!p) return;
        std::vector<std::string> stale;
        char buf[256];
        while (fgets(buf, sizeof buf, p)) {
            std::string name(buf);
            name = name.substr(0, name.find_first_of(" \n"));
            if (name.rfind("splbh", 0) != 0 || name.size() <= 5) continue;
            const std::string pid = name.substr(5);
            if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
            if (access(("/proc/" + pid).c_str(), F_OK) != 0) stale.push_back(name);
        }
        pclose(p);
        for (auto& n : stale) std::system(("ip netns del " + n + " >/dev/null 2>&1").c_str());
    }

    std::string name_, host_ip_, ns_ip_;
    bool created_ = false;
};

// ---------------------------------------------------------------------------------------------------------
// Paced echo

// Sends `len` bytes of `p` in 64 KiB chunks spread evenly over `pace`, reads the echo as it comes, half-closes after
// the last byte, and requires EOF after the full echo, whose SHA-256 must match what was sent. Returns "" on
// success, else what went wrong. `echoed` follows the progress.
std::string paced_echo(int fd, const payload& p, std::size_t len, std::chrono::milliseconds pace,
                       clock::time_point deadline, std::atomic<std::uint64_t>& echoed) {
    set_nonblocking(fd, true);
    constexpr std::size_t chunk = 64 * KiB;
    std::vector<std::uint8_t> out(chunk), in(chunk);
    const auto start = clock::now();
    std::size_t sent = 0, out_off = 0, out_len = 0, received = 0;
    bool shut = false;
    sha256 h;
    for (;;) {
        if (sent == len && !shut) {
            if (shutdown(fd, SHUT_WR) != 0) return std::string("shutdown: ") + std::strerror(errno);
            shut = true;
        }
        const auto now = clock::now();
        if (now >= deadline)
            return "deadline passed: sent " + std::to_string(sent) + ", echoed " + std::to_string(received) + " of " +
                   std::to_string(len);
        // The chunk being sent may go out once its start time (by the pace) has come.
        const auto due = start + std::chrono::duration_cast<clock::duration>(pace * (double(sent) / double(len)));
        const bool may_send = sent < len && (out_off < out_len || now >= due);
        int wait_ms = 100;
        if (sent < len && !may_send)
            wait_ms = std::max(1, static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(due - now).count()));
        pollfd pfd{fd, POLLIN, 0};
        if (may_send) pfd.events |= POLLOUT;
        int r = poll(&pfd, 1, wait_ms);
        if (r < 0 && errno != EINTR) return std::string("poll: ") + std::strerror(errno);
        if (r <= 0) continue;
        if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = recv(fd, in.data(), in.size(), 0);
            if (n == 0) {
                if (received != len)
                    return "EOF after " + std::to_string(received) + " of " + std::to_string(len) + " echoed bytes";
                auto d = h.finish();
                if (hex(d) != hex(p.sha(len))) return "SHA-256 of the echo differs from what was sent";
                return "";
            }
            if (n < 0 && errno != EAGAIN && errno != EINTR)
                return "recv after " + std::to_string(received) + " echoed bytes: " + std::strerror(errno);
            if (n > 0) {
                if (received + static_cast<std::size_t>(n) > len) return "more bytes echoed than sent";
                h.update(in.data(), static_cast<std::size_t>(n));
                received += static_cast<std::size_t>(n);
                echoed = received;
            }
        }
        if ((pfd.revents & POLLOUT) && may_send) {
            if (out_off == out_len) {
                out_len = std::min(chunk, len - sent);
                out_off = 0;
                p.fill(sent, out.data(), out_len);
            }
            ssize_t n = send(fd, out.data() + out_off, out_len - out_off, MSG_NOSIGNAL);
            if (n < 0 && errno != EAGAIN && errno != EINTR)
                return "send after " + std::to_string(sent) + " bytes: " + std::strerror(errno);
            if (n > 0) {
                out_off += static_cast<std::size_t>(n);
                sent += static_cast<std::size_t>(n);
            }
        }
    }
}

// One echo of `len` bytes through `route` with half-close, once the pair is handed off (a half-close before that
// legitimately leaves the sockmap path); proves the daemon still proxies on the path.
void require_echo_works(const case_daemon& d, const std::string& route, std::uint64_t seed, std::size_t len) {
    auto before = connections_of(d.metrics(), route);
    auto fd = d.connect(route, 10s);
    REQUIRE(wait_handed_off(d, route, before, 1));
    CHECK(echo_check(fd.get(), payload(seed), len, clock::now() + 10s, true) == "");
    require_handed_off(d, route, before, 1);
}

// Stops the case's daemon with SIGTERM and requires a clean exit (status 0; under the sanitizers also no report).
// Access-log lines (in the daemon's log: access_log stdout) of one route.
std::vector<std::string> access_lines(const case_daemon& d, const std::string& route) {
    std::vector<std::string> out;
    std::ifstream in(d.process->log_path());
    for (std::string line; std::getline(in, line);)
        if (line.find(" route=" + route + " ") != std::string::npos && line.find(" end=") != std::string::npos)
            out.push_back(line);
    return out;
}

void require_clean_stop(case_daemon& d) {
    const auto t0 = clock::now();
    const int status = d.process->stop(20s);
    INFO("spliced after SIGTERM: " << d.process->exit_description() << "; log:\n" << d.process->log_tail());
    CHECK(status == 0);
    std::cout << "  spliced stopped in " << seconds_since(t0) << " s: " << d.process->exit_description() << std::endl;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// 1. A client that resets mid-transfer

namespace {

// Regression: on the sockmap path the daemon peeks (recv MSG_PEEK) at a socket that woke it; on a reset socket that
// returns ECONNRESET and clears the pending error, so the next read saw a plain EOF and the pair ended as if the
// client had closed cleanly: the backend got a FIN instead of a reset, on an upload only after it had taken every
// byte already redirected (a truncated upload passed off as complete). The peek's error now aborts the pair as a
// reset of that socket. Set this to true only to look at the other checks while that is broken again.
constexpr bool sockmap_peek_bug_known = false;

struct reset_figures {
    std::uint64_t moved = 0;  // client bytes sent (upload) or received (download) before the reset
    std::uint64_t backend_bytes = 0;
    std::string backend_saw;
    double backend_after = -1;  // seconds from the client's RST to the backend's end
    double closed_after = -1;   // ... to connections_active 0
    bool known_bug = false;     // the backend checks missed as sockmap_peek_bug_known describes
};

// Connects on `route`, waits for the hand-off (on auto also for the move to sockmap: the transfer then runs
// through the redirect), moves data until mid-way, resets, and checks how the backend's side ends: within 5 s, and
// on an upload by a reset (a FIN would pass the truncated upload off as complete). Then both daemon sockets must
// be closed, no map entry left, and the daemon's descriptors back to `base`.
reset_figures reset_mid_transfer(case_daemon& d, const std::string& route, watched_backend& backend, bool upload,
                                 const fd_census& base) {
    reset_figures f;
    auto m0 = d.metrics();
    auto before = connections_of(m0, route);
    const double promoted0 = promotions_of(m0, route);
    auto fd = d.connect(route, 10s);
    REQUIRE(wait_handed_off(d, route, before, 1));
    if (datapath() == "auto") {
        // A connection that has moved nothing yet is quiet: auto moves it to sockmap within a few ticks.
        bool promoted = run_until([&] { return promotions_of(d.metrics(), route) - promoted0 == 1; }, 5s);
        std::cout << "  auto: the pair " << (promoted ? "moved to sockmap before the transfer" : "was NOT promoted")
                  << std::endl;
        CHECK(promoted);
    }
    REQUIRE(run_until([&] { return backend.state().accepted == 1; }, 5s));

    if (upload) {
        // Up to 16 MiB or 1 s of a stream meant to be longer; the backend takes about 130 KB/s of it.
        set_nonblocking(fd.get(), true);
        const payload p(0x0a11);
        std::vector<std::uint8_t> chunk(256 * KiB);
        const auto until = clock::now() + 1s;
        while (f.moved < 16 * MiB && clock::now() < until) {
            pollfd pfd{fd.get(), POLLOUT, 0};
            if (poll(&pfd, 1, 10) != 1) continue;
            p.fill(f.moved, chunk.data(), chunk.size());
            ssize_t n = send(fd.get(), chunk.data(), chunk.size(), MSG_NOSIGNAL);
            INFO("send after " << f.moved << " bytes: " << std::strerror(errno));
            REQUIRE((n > 0 || errno == EAGAIN));
            if (n > 0) f.moved += static_cast<std::uint64_t>(n);
        }
        INFO("client sent " << f.moved << " bytes");
        REQUIRE(f.moved >= MiB);
    } else {
        // Asks for the stream, takes 4 MiB of it (checking every byte), then resets while the backend still sends.
        REQUIRE(send_all(fd.get(), "?", 1));
        const payload stream(0xe7d1e55);
        std::vector<std::uint8_t> in(256 * KiB), expected(256 * KiB);
        while (f.moved < 4 * MiB) {
            ssize_t n = recv(fd.get(), in.data(), std::min<std::size_t>(in.size(), 4 * MiB - f.moved), 0);
            INFO("recv after " << f.moved << " bytes: " << (n < 0 ? std::strerror(errno) : "EOF"));
            REQUIRE(n > 0);
            stream.fill(f.moved, expected.data(), static_cast<std::size_t>(n));
            REQUIRE(std::equal(in.begin(), in.begin() + n, expected.begin()));
            f.moved += static_cast<std::uint64_t>(n);
        }
    }
    {
        auto st = backend.state();
        INFO("the backend's connection ended (" << st.how << ") before the client's reset");
        REQUIRE_FALSE(st.ended);
    }
    close_with_reset(fd);
    const auto reset_at = clock::now();

    watched_backend::outcome st;
    auto backend_ended = [&] {
        st = backend.state();
        return st.ended;
    };
    run_until(backend_ended, 6s, 5ms);
    f.backend_saw = st.ended ? st.how : "nothing within 6 s";
    if (st.ended) f.backend_after = std::chrono::duration<double>(st.at - reset_at).count();
    const bool in_time = st.ended && f.backend_after < 5.0;
    // The upstream is reset too, both ways: a FIN would pass the truncated stream off as complete.
    const bool as_expected = st.how == "reset";
    std::cout << "  " << (upload ? "upload: client sent " : "download: client read ") << f.moved << " B; the backend "
              << (upload ? "read " : "wrote ") << st.bytes << " B and saw " << f.backend_saw;
    if (st.ended) std::cout << " " << f.backend_after << " s after the client's RST";
    std::cout << std::endl;
    if (!(in_time && as_expected) && sockmap_peek_bug_known && uses_maps()) {
        f.known_bug = true;
        loud("KNOWN DAEMON BUG (reported; see sockmap_peek_bug_known in this file): on the sockmap path a client's "
             "reset reaches the backend as a FIN, after every redirected byte. Not failing the case for it.");
        backend.hurry();  // lets the daemon finish its drain so the rest of the case can run
        run_until(backend_ended, 20s, 5ms);
        std::cout << "  after hurrying the backend: it saw " << (st.ended ? st.how : "nothing") << std::endl;
    } else {
        // A FIN on an upload would pass the truncated stream off as complete: the backend must see a reset.
        CHECK(as_expected);
        CHECK(in_time);
    }

    const double active = wait_inactive(d, route, 10s);
    f.closed_after = seconds_since(reset_at);
    INFO("route " << route << ": connections_active " << active << " " << f.closed_after << " s after the reset");
    CHECK(active == 0);
    if (!f.known_bug) CHECK(f.closed_after < 5.0);
    require_maps_empty(d, 5s);
    require_fds_back(d, base, 5s);
    require_handed_off(d, route, before, 1);
    f.backend_bytes = st.bytes;
    return f;
}

}  // namespace

TEST_CASE("a client that resets mid-upload or mid-download ends the backend's connection within 5 s, closes both "
          "daemon sockets and leaves no map entry, and the daemon still proxies",
          "[faults][reset]") {
    ANNOUNCE_DATAPATH();
    watched_backend sink(watched_backend::slow_sink), source(watched_backend::endless_source);
    backend_server echo(backend_kind::echo);
    auto& d = start_daemon({{"upload", {sink.address()}}, {"download", {source.address()}}, {"echo", {echo.address()}}});
    require_echo_works(d, "echo", 0xec40, 64 * KiB);  // a first connection: what the daemon opens lazily is open
    REQUIRE(wait_inactive(d, "echo") == 0);
    const auto base = count_fds(d.pid());

    auto up = reset_mid_transfer(d, "upload", sink, true, base);
    auto down = reset_mid_transfer(d, "download", source, false, base);
    require_echo_works(d, "echo", 0xec41, 64 * KiB);
    require_clean_stop(d);
    auto line = [](const reset_figures& f) {
        return "backend saw " + f.backend_saw + (f.backend_after >= 0 ? " after " + fixed(f.backend_after, 3) + " s" : "") +
               ", daemon closed both in " + fixed(f.closed_after, 3) + " s" + (f.known_bug ? " (KNOWN BUG)" : "");
    };
    summary("client reset mid-transfer", "upload: " + line(up) + "; download: " + line(down));
}

// ---------------------------------------------------------------------------------------------------------
// 2. A black-holed backend before a working one

TEST_CASE("with a black-holed first backend and a working second one, every client is served by the working one "
          "within about the 1 s connect timeout, and each timeout is counted",
          "[faults][blackhole]") {
    ANNOUNCE_DATAPATH();
    backend_server echo(backend_kind::echo);
    std::unique_ptr<blackhole_netns> netns;
    std::unique_ptr<held_listener> held;
    std::string hole, how;
    try {
        netns = std::make_unique<blackhole_netns>();
        hole = netns->address(fresh_port(AF_INET));
        how = "netns " + netns->name() + ", SYNs answered by nobody";
    } catch (const std::exception& e) {
        netns.reset();
        held = std::make_unique<held_listener>();
        hole = held->address();
        how = "held_listener (full accept queue on loopback)";
        loud(std::string("black hole: no test network namespace (") + e.what() +
             "); using a loopback listener that drops SYNs instead");
    }
    std::cout << "  black hole " << hole << ": " << how << std::endl;

    auto& d = start_daemon({{"failover", {hole, echo.address()}, "1s"}});
    auto m0 = d.metrics();
    auto before = connections_of(m0, "failover");
    const double timeouts0 = connect_errors(m0, "failover", "timeout");
    const double others0 = connect_errors(m0, "failover", "refused") + connect_errors(m0, "failover", "unreachable") +
                           connect_errors(m0, "failover", "other");

    constexpr int n = 8;
    std::vector<std::string> errors(n);
    std::vector<double> took(n, -1);
    std::vector<unique_fd> kept(n);
    std::vector<std::thread> clients;
    const std::uint16_t port = d.port("failover");
    for (int i = 0; i < n; ++i)
        clients.emplace_back([&, i] {
            const auto t0 = clock::now();
            try {
                auto fd = connect_tcp("127.0.0.1", port, 10s);
                // No half-close: one before the hand-off would legitimately leave the sockmap path.
                errors[i] = echo_check(fd.get(), payload(0xb1ac + i), 16 * KiB, clock::now() + 10s, false);
                // Nor a close: the whole echo can come back through the pre-insertion forwarding, and a client
                // that closes then is no longer ESTABLISHED at the insert (it runs on splice, rightly).
                kept[i] = std::move(fd);
            } catch (const std::exception& e) {
                errors[i] = e.what();
            }
            took[i] = seconds_since(t0);
        });
    for (auto& t : clients) t.join();
    wait_handed_off(d, "failover", before, n);
    kept.clear();

    int slow = 0;
    double slowest = 0, fastest = 1e9;
    for (int i = 0; i < n; ++i) {
        INFO("client " << i << ": " << errors[i] << " after " << took[i] << " s");
        CHECK(errors[i] == "");
        CHECK(took[i] < 2.5);  // the 1 s connect timeout, then the working backend
        if (took[i] >= 0.9) ++slow;
        slowest = std::max(slowest, took[i]);
        fastest = std::min(fastest, took[i]);
    }
    double timeouts = 0;
    run_until(
        [&] {
            timeouts = connect_errors(d.metrics(), "failover", "timeout") - timeouts0;
            return timeouts >= slow;
        },
        5s);
    auto m1 = d.metrics();
    const double others = connect_errors(m1, "failover", "refused") + connect_errors(m1, "failover", "unreachable") +
                          connect_errors(m1, "failover", "other") - others0;
    std::cout << "  " << n << " clients served; " << slow << " waited for the black hole first (slowest " << slowest
              << " s, fastest " << fastest << " s); connect timeouts counted: " << timeouts << std::endl;
    CHECK(slow >= 1);         // round robin sent some clients to the black hole first
    CHECK(timeouts == slow);  // each of them is one counted timeout, nothing else
    CHECK(others == 0);
    if (held) CHECK(held->accepted() == 0);
    require_handed_off(d, "failover", before, n);
    CHECK(wait_inactive(d, "failover") == 0);
    require_maps_empty(d);
    require_clean_stop(d);
    summary("black-holed backend", std::to_string(n) + " clients served, " + std::to_string(slow) +
                                       " via the 1 s timeout (slowest " + fixed(slowest, 3) + " s, fastest " +
                                       fixed(fastest, 3) + " s), timeouts counted " + fixed(timeouts, 0) + "; " + how);
}

// ---------------------------------------------------------------------------------------------------------
// 3. SIGTERM under load

TEST_CASE("SIGTERM during 20 paced transfers: every transfer completes intact, new connections are refused, and "
          "the daemon exits 0 within drain_timeout",
          "[faults][sigterm]") {
    ANNOUNCE_DATAPATH();
    backend_server echo(backend_kind::echo);
    constexpr auto drain_timeout = 10s;
    auto& d = start_daemon({{"load", {echo.address()}}}, {.drain_timeout = "10s"});
    const int n = static_cast<int>(env_long("SPLICED_TEST_SIGTERM_CONNECTIONS", 20));
    const std::size_t len = static_cast<std::size_t>(env_long("SPLICED_TEST_SIGTERM_KIB", 4096)) * KiB;
    const auto pace = std::chrono::milliseconds(env_long("SPLICED_TEST_SIGTERM_PACE_MS", 2500));
    auto m0 = d.metrics();
    auto before = connections_of(m0, "load");
    const double promoted0 = promotions_of(m0, "load");

    std::vector<std::string> errors(static_cast<std::size_t>(n), "not run");
    std::vector<std::atomic<std::uint64_t>> echoed(static_cast<std::size_t>(n));
    std::vector<clock::time_point> finished(static_cast<std::size_t>(n));
    std::vector<std::thread> clients;
    const auto start = clock::now();
    const std::uint16_t port = d.port("load");
    for (int i = 0; i < n; ++i)
        clients.emplace_back([&, i] {
            const auto k = static_cast<std::size_t>(i);
            try {
                auto fd = connect_tcp("127.0.0.1", port, 10s);
                errors[k] = paced_echo(fd.get(), payload(0x5167e + i), len, pace, start + 30s, echoed[k]);
            } catch (const std::exception& e) {
                errors[k] = e.what();
            }
            finished[k] = clock::now();
        });
    struct joiner {
        std::vector<std::thread>& threads;
        ~joiner() {
            for (auto& t : threads)
                if (t.joinable()) t.join();
        }
    } join_clients{clients};

    // Mid-way: every pair handed off and about 40% of the pace gone.
    const bool all_up = wait_handed_off(d, "load", before, n);
    std::this_thread::sleep_until(start + pace * 2 / 5);
    std::uint64_t least = len, most = 0;
    for (auto& e : echoed) {
        least = std::min<std::uint64_t>(least, e);
        most = std::max<std::uint64_t>(most, e);
    }
    const double promoted = promotions_of(d.metrics(), "load") - promoted0;
    if (all_up) require_handed_off(d, "load", before, n);
    const auto term_at = clock::now();
    d.process->send_signal(SIGTERM);
    const double term_into = std::chrono::duration<double>(term_at - start).count();
    std::cout << "  SIGTERM " << term_into << " s into the transfers; echoed so far per connection: " << least << ".."
              << most << " of " << len << " bytes" << std::endl;
    if (datapath() == "auto")
        std::cout << "  auto: " << promoted << " of the " << n << " paced transfers had moved to sockmap by then"
                  << std::endl;
    CHECK(all_up);
    CHECK(most < len);  // none had finished: the signal came mid-transfer

    // New connections are refused once the listeners are closed: at once, while the transfers still run (a daemon
    // that kept accepting would only refuse once it exits, after them).
    std::string last_error;
    const bool refusing = run_until(
        [&] {
            try {
                auto fd = d.connect("load", 2s);
                last_error = "connected";
            } catch (const std::exception& e) {
                last_error = e.what();
            }
            return last_error.find("refused") != std::string::npos;
        },
        1s, 10ms);
    const double refused_after = seconds_since(term_at);
    const auto still_running = std::count_if(echoed.begin(), echoed.end(), [&](auto& e) { return e < len; });
    INFO("last connect after SIGTERM: " << last_error);
    CHECK(refusing);
    INFO("transfers still running when the first connect was refused: " << still_running << " of " << n);
    CHECK(still_running == n);
    for (int i = 0; i < 5; ++i) {
        INFO("connect " << i + 1 << " after the first refusal");
        CHECK_THROWS_WITH(d.connect("load", 2s), Catch::Contains("refused"));
    }
    CHECK(d.process->running());  // still draining: the transfers are not done

    for (auto& t : clients) t.join();
    clock::time_point last_done = start;
    int failed = 0;
    for (int i = 0; i < n; ++i) {
        const auto k = static_cast<std::size_t>(i);
        INFO("transfer " << i << ": " << errors[k]);
        CHECK(errors[k] == "");
        if (!errors[k].empty()) ++failed;
        last_done = std::max(last_done, finished[k]);
    }
    const int status = d.process->wait_exit(drain_timeout + 3s - std::chrono::duration_cast<std::chrono::milliseconds>(
                                                                     clock::now() - term_at));
    const double exit_after = seconds_since(term_at);
    const double done_after = std::chrono::duration<double>(last_done - term_at).count();
    auto notified = d.process->notifications();
    const bool stopping = std::find(notified.begin(), notified.end(), "STOPPING=1") != notified.end();
    std::cout << "  " << n - failed << " of " << n << " transfers of " << len << " B intact, the last one done "
              << done_after << " s after SIGTERM; first refused connect " << refused_after << " s after it; spliced "
              << (status < 0 ? "still running" : d.process->exit_description()) << " " << exit_after
              << " s after SIGTERM" << std::endl;
    INFO("log:\n" << d.process->log_tail());
    CHECK(status == 0);
    CHECK(exit_after < std::chrono::duration<double>(drain_timeout).count() + exit_margin);
    CHECK(exit_after - done_after < exit_margin);  // it left soon after the last connection, not at the timeout
    CHECK(stopping);
    if (status < 0) d.process->stop(5s);
    summary("SIGTERM under load", std::to_string(n - failed) + "/" + std::to_string(n) + " transfers of " +
                                      std::to_string(len / KiB) + " KiB intact; SIGTERM at " + fixed(term_into) +
                                      " s, refused from +" + fixed(refused_after, 3) + " s, last transfer done +" +
                                      fixed(done_after) + " s, exit " + std::to_string(status) + " at +" +
                                      fixed(exit_after) + " s (drain_timeout 10 s)");
}

TEST_CASE("connections still open when drain_timeout passes are reset on both sides, not ended as if complete",
          "[faults][sigterm]") {
    ANNOUNCE_DATAPATH();
    backend_server echo(backend_kind::echo);
    watched_backend sink(watched_backend::slow_sink);
    held_listener blackhole;  // never released: a session still connecting when the drain timeout passes
    auto& d = start_daemon({{"echo", {echo.address()}},
                            {"upload", {sink.address()}},
                            {"connecting", {blackhole.address()}, "10s"}},
                           {.drain_timeout = "1s"});
    auto m0 = d.metrics();
    auto echo_before = connections_of(m0, "echo");
    auto upload_before = connections_of(m0, "upload");

    // A paced echo meant to last 8 s (the client's view), and an upload to a slow backend (the backend's view).
    std::string echo_result = "not run";
    std::atomic<std::uint64_t> echoed{0};
    std::thread client([&, port = d.port("echo")] {
        try {
            auto fd = connect_tcp("127.0.0.1", port, 10s);
            echo_result = paced_echo(fd.get(), payload(0xd7a1), 4 * MiB, 8s, clock::now() + 20s, echoed);
        } catch (const std::exception& e) {
            echo_result = e.what();
        }
    });
    struct joiner {
        std::thread& t;
        ~joiner() {
            if (t.joinable()) t.join();
        }
    } join_client{client};
    auto up = d.connect("upload", 10s);
    REQUIRE(wait_handed_off(d, "upload", upload_before, 1));
    REQUIRE(wait_handed_off(d, "echo", echo_before, 1));
    REQUIRE(run_until([&] { return sink.state().accepted == 1; }, 5s));
    const auto chunk = payload(0xd7a2).bytes(0, 256 * KiB);
    REQUIRE(send_all(up.get(), chunk.data(), chunk.size()));
    REQUIRE(run_until([&] { return echoed > 0; }, 5s));

    auto connecting = d.connect("connecting", 10s);
    std::this_thread::sleep_for(100ms);

    const auto term_at = clock::now();
    d.process->send_signal(SIGTERM);
    client.join();
    watched_backend::outcome st;
    run_until(
        [&] {
            st = sink.state();
            return st.ended;
        },
        10s, 5ms);
    const int status = d.process->wait_exit(10s);
    const double exit_after = seconds_since(term_at);
    const auto client_end = wait_closed(up.get(), 5s);
    std::cout << "  echo client: " << echo_result << " (" << echoed << " of " << 4 * MiB << " B echoed); upload "
              << "backend saw " << (st.ended ? st.how : "nothing") << ", upload client saw " << to_string(client_end)
              << "; spliced " << d.process->exit_description() << " " << exit_after << " s after SIGTERM" << std::endl;
    INFO("log:\n" << d.process->log_tail());
    // A cut stream must not end like a complete one: ECONNRESET, not EOF, on both sides of each connection.
    CHECK_THAT(echo_result, Catch::Contains("Connection reset by peer"));
    CHECK(st.how == "reset");
    CHECK(client_end == end_kind::reset);
    CHECK(status == 0);
    CHECK(exit_after >= 0.9);
    CHECK(exit_after < 1.0 + exit_margin);
    // Every cut connection gets its one access-log line, with its id, the path it ran on and end=shutdown: the
    // connections an audit most needs are the ones that were cut.
    for (const char* route : {"echo", "upload", "connecting"}) {
        const auto lines = access_lines(d, route);
        INFO("route " << route << ": " << lines.size() << " access-log line(s)" << (lines.empty() ? "" : ": ")
                      << (lines.empty() ? "" : lines.front()));
        REQUIRE(lines.size() == 1);
        CHECK_THAT(lines[0], Catch::Contains(" conn="));
        CHECK_THAT(lines[0], Catch::Contains(" end=shutdown"));
        if (std::string(route) == "connecting") CHECK_THAT(lines[0], Catch::Contains(" datapath=- "));
        else CHECK_THAT(lines[0], !Catch::Contains(" datapath=- "));
    }
    CHECK(connecting.get() >= 0);
    summary("drain timeout passed", "echo client: " + echo_result + "; upload backend saw " + st.how +
                                        ", its client " + to_string(client_end) + "; exit " + std::to_string(status) +
                                        " after " + fixed(exit_after) + " s (drain_timeout 1 s)");
}

// ---------------------------------------------------------------------------------------------------------
// 4. Connection churn

namespace {

// Short connections from `threads` threads until `n` are done: connect (from a spread source address), echo `len`
// bytes in two round trips, half-close, read the EOF, close. Returns the failures (the first few described).
struct churn_result {
    std::uint64_t failed = 0;
    std::string first_errors;
    double seconds = 0;
};

churn_result churn(std::uint16_t port, std::uint64_t n, int threads, std::size_t len, std::uint64_t seed,
                   clock::time_point deadline) {
    churn_result out;
    constexpr std::size_t second_part = 16;
    std::atomic<std::uint64_t> next{0}, failed{0};
    std::mutex mutex;
    const auto dest = loopback(port);
    const auto start = clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
        pool.emplace_back([&] {
            std::vector<std::uint8_t> out_buf(len), in_buf(len);
            for (std::uint64_t i; (i = next++) < n;) {
                std::string error;
                if (clock::now() >= deadline) {
                    error = "not started: the run's time budget is spent";
                } else {
                    try {
                        auto fd = spread_socket(i, false);
                        set_io_timeout(fd.get(), 10s);
                        if (connect(fd.get(), reinterpret_cast<const sockaddr*>(&dest), sizeof dest) != 0)
                            throw std::runtime_error(std::string("connect: ") + std::strerror(errno));
                        payload(seed + i).fill(0, out_buf.data(), len);
                        // Two round trips: the first echo may come back through userspace before the daemon hands
                        // the pair off (it forwards what is queued first), the second one only after that. A
                        // half-close before the hand-off would legitimately leave the sockmap path.
                        for (std::size_t off : {std::size_t(0), len - second_part}) {
                            const std::size_t part = off == 0 ? len - second_part : second_part;
                            if (!send_all(fd.get(), out_buf.data() + off, part))
                                throw std::runtime_error(std::string("send: ") + std::strerror(errno));
                            long got = recv_exact(fd.get(), in_buf.data() + off, part);
                            if (got != static_cast<long>(part))
                                throw std::runtime_error("echo: " + std::to_string(got) + " of " + std::to_string(part) +
                                                         " bytes (" + std::strerror(errno) + ")");
                        }
                        if (in_buf != out_buf) throw std::runtime_error("echo differs from what was sent");
                        shutdown(fd.get(), SHUT_WR);
                        char extra;
                        if (recv(fd.get(), &extra, 1, 0) != 0) throw std::runtime_error("no EOF after the echo");
                    } catch (const std::exception& e) {
                        error = e.what();
                    }
                }
                if (!error.empty() && ++failed <= 5) {
                    std::lock_guard lock(mutex);
                    out.first_errors += "  connection " + std::to_string(i) + ": " + error + "\n";
                }
            }
        });
    for (auto& t : pool) t.join();
    out.failed = failed;
    out.seconds = seconds_since(start);
    return out;
}

}  // namespace

TEST_CASE("50,000 short connections (connect, 1 KiB echo, close) all come back intact, and afterwards the daemon "
          "holds no more descriptors, map entries or open connections than before",
          "[faults][churn]") {
    ANNOUNCE_DATAPATH();
    // Under AddressSanitizer the daemon runs several times slower: fewer connections keep the run bounded.
    const long default_n = sanitized ? 10000 : 50000;
    const auto n = static_cast<std::uint64_t>(env_long("SPLICED_TEST_CHURN_N", default_n));
    const int threads = static_cast<int>(env_long("SPLICED_TEST_CHURN_THREADS", 8));
    if (static_cast<long>(n) != 50000)
        loud("churn: " + std::to_string(n) + " connections instead of 50,000 (" +
             (std::getenv("SPLICED_TEST_CHURN_N") ? std::string("SPLICED_TEST_CHURN_N")
                                                  : std::string("AddressSanitizer build: the daemon is several times "
                                                                "slower; SPLICED_TEST_CHURN_N overrides")) +
             ")");
    echo_peer peer(4);  // four backend ports: the daemon's TIME_WAITs spread over four destinations
    auto& d = start_daemon({{"churn", peer.addresses()}}, {.access_log = "off"});
    const auto started = connections_of(d.metrics(), "churn");

    // Warm-up: thread stacks, allocator arenas and the pipe pool reach their working size.
    constexpr std::uint64_t warmup = 500;
    auto w = churn(d.port("churn"), warmup, threads, KiB, 0xc0ffee, clock::now() + 60s);
    INFO("warm-up failures:\n" << w.first_errors);
    REQUIRE(w.failed == 0);
    REQUIRE(wait_inactive(d, "churn") == 0);
    const auto base = count_fds(d.pid());
    const long rss0 = rss_kib(d.pid());
    const auto peer0 = peer.query();

    auto r = churn(d.port("churn"), n, threads, KiB, 0x5eed0000, clock::now() + 150s);
    const double rate = static_cast<double>(n) / r.seconds;
    std::cout << "  " << n - r.failed << " of " << n << " connections intact in " << r.seconds << " s: " << rate
              << " connections/s (" << threads << " client threads)" << std::endl;
    INFO("failures (first 5):\n" << r.first_errors);
    CHECK(r.failed == 0);

    const double active = wait_inactive(d, "churn", 10s);
    CHECK(active == 0);
    require_maps_empty(d);
    const auto fds = wait_fds_back(d, base);
    const long rss1 = rss_kib(d.pid());
    const auto peer1 = peer.query();
    std::cout << "  daemon descriptors: " << base.text() << " before, " << fds.text() << " after; RSS " << rss0
              << " KiB before, " << rss1 << " KiB after (" << (rss1 - rss0) << " KiB, "
              << fixed(double(rss1 - rss0) * 1024 / double(n), 1) << " B per connection)" << std::endl;
    check_fds_back(fds, base);
    // A leak of even 256 B per connection would show; under ASan the quarantine holds freed memory on purpose.
    if (!sanitized) CHECK(rss1 - rss0 < static_cast<long>(n * 256 / 1024) + 8 * 1024);
    CHECK(peer1.accepted - peer0.accepted == n);
    CHECK(peer1.open == 0);
    require_handed_off(d, "churn", started, static_cast<double>(warmup + n));
    require_clean_stop(d);
    summary("connection churn", std::to_string(n) + " connections in " + fixed(r.seconds) + " s = " + fixed(rate, 0) +
                                    " conn/s (" + std::to_string(threads) + " threads), " +
                                    std::to_string(r.failed) + " failed; fds " + std::to_string(base.total()) + " -> " +
                                    std::to_string(fds.total()) + "; RSS +" + std::to_string(rss1 - rss0) + " KiB (" +
                                    fixed(double(rss1 - rss0) * 1024 / double(n), 1) + " B/conn)");
}

// ---------------------------------------------------------------------------------------------------------
// 5. Many idle connections

namespace {

// Opens connections [from, to) of `clients` (non-blocking, spread sources), each echoing 16 bytes once they are up.
// Returns "" or what went wrong.
std::string open_and_echo(std::vector<unique_fd>& clients, std::size_t from, std::size_t to, std::uint16_t port,
                          std::uint64_t offset) {
    const auto dest = loopback(port);
    const auto deadline = clock::now() + 20s;
    for (std::size_t i = from; i < to; ++i) {
        clients[i] = spread_socket(i, true);
        if (connect(clients[i].get(), reinterpret_cast<const sockaddr*>(&dest), sizeof dest) != 0 &&
            errno != EINPROGRESS)
            return "connect " + std::to_string(i) + ": " + std::strerror(errno);
    }
    // Connected (writable), then 16 bytes out, then the same 16 bytes back.
    enum stage { connecting, waiting_echo, done };
    std::vector<stage> stages(to - from, connecting);
    std::vector<pollfd> pfds;
    std::size_t left = to - from;
    std::uint8_t buf[16];
    while (left > 0) {
        if (clock::now() >= deadline)
            return std::to_string(left) + " of " + std::to_string(to - from) + " connections not echoed within 20 s";
        pfds.clear();
        for (std::size_t i = from; i < to; ++i)
            if (stages[i - from] != done)
                pfds.push_back({clients[i].get(), static_cast<short>(stages[i - from] == connecting ? POLLOUT : POLLIN), 0});
        if (poll(pfds.data(), pfds.size(), 200) <= 0) continue;
        std::size_t k = 0;
        for (std::size_t i = from; i < to; ++i) {
            if (stages[i - from] == done) continue;
            const pollfd& p = pfds[k++];
            if (!p.revents) continue;
            const payload pl(0x1d1e0000 + i);
            if (stages[i - from] == connecting) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(p.fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err) return "connect " + std::to_string(i) + ": " + std::strerror(err);
                pl.fill(offset, buf, sizeof buf);
                if (send(p.fd, buf, sizeof buf, MSG_NOSIGNAL) != sizeof buf)
                    return "send " + std::to_string(i) + ": " + std::strerror(errno);
                stages[i - from] = waiting_echo;
            } else {
                std::uint8_t got[16];
                ssize_t n = recv(p.fd, got, sizeof got, MSG_PEEK);
                if (n == 0) return "EOF on connection " + std::to_string(i);
                if (n < 0 && errno != EAGAIN) return "recv " + std::to_string(i) + ": " + std::strerror(errno);
                if (n < static_cast<ssize_t>(sizeof got)) continue;  // the rest is on its way
                recv(p.fd, got, sizeof got, 0);
                pl.fill(offset, buf, sizeof buf);
                if (std::memcmp(got, buf, sizeof got) != 0) return "echo differs on connection " + std::to_string(i);
                stages[i - from] = done;
                --left;
            }
        }
    }
    return "";
}

// Echoes 16 more bytes on every open connection (1000 at a time). Returns "" or what went wrong.
std::string echo_on_all(std::vector<unique_fd>& clients, std::uint64_t offset) {
    for (std::size_t from = 0; from < clients.size(); from += 1000) {
        const std::size_t to = std::min(clients.size(), from + 1000);
        const auto deadline = clock::now() + 20s;
        std::uint8_t buf[16];
        for (std::size_t i = from; i < to; ++i) {
            payload(0x1d1e0000 + i).fill(offset, buf, sizeof buf);
            if (send(clients[i].get(), buf, sizeof buf, MSG_NOSIGNAL) != sizeof buf)
                return "send " + std::to_string(i) + ": " + std::strerror(errno);
        }
        std::vector<bool> done(to - from, false);
        std::size_t left = to - from;
        std::vector<pollfd> pfds;
        while (left > 0) {
            if (clock::now() >= deadline) return std::to_string(left) + " connections did not echo within 20 s";
            pfds.clear();
            for (std::size_t i = from; i < to; ++i)
                if (!done[i - from]) pfds.push_back({clients[i].get(), POLLIN, 0});
            if (poll(pfds.data(), pfds.size(), 200) <= 0) continue;
            std::size_t k = 0;
            for (std::size_t i = from; i < to; ++i) {
                if (done[i - from]) continue;
                if (!pfds[k++].revents) continue;
                std::uint8_t got[16];
                ssize_t n = recv(clients[i].get(), got, sizeof got, MSG_PEEK);
                if (n == 0) return "EOF on connection " + std::to_string(i);
                if (n < static_cast<ssize_t>(sizeof got)) continue;
                recv(clients[i].get(), got, sizeof got, 0);
                payload(0x1d1e0000 + i).fill(offset, buf, sizeof buf);
                if (std::memcmp(got, buf, sizeof got) != 0) return "echo differs on connection " + std::to_string(i);
                done[i - from] = true;
                --left;
            }
        }
    }
    return "";
}

}  // namespace

TEST_CASE("10,000 idle connections (or as many as the daemon's descriptor limit fits) stay open and working; "
          "closing them returns the daemon to its descriptors, map entries and open connections before",
          "[faults][idle]") {
    ANNOUNCE_DATAPATH();
    echo_peer peer(2);
    auto& d = start_daemon({{"idle", peer.addresses()}}, {.access_log = "off"});
    require_echo_works(d, "idle", 0x1d1e, 1024);  // warm-up, and a proof that the route works
    REQUIRE(wait_inactive(d, "idle") == 0);
    auto m0 = d.metrics();
    const auto before = connections_of(m0, "idle");
    const double promoted0 = promotions_of(m0, "idle");

    // Descriptors per connection in the daemon: two sockets, plus two pipes (four fds) on splice. On auto the pair
    // starts on splice and drops its pipes when it moves to sockmap: batches wait for that, so at most a batch
    // holds pipes at a time.
    constexpr std::size_t batch = 200;
    const long limit = fd_limit(d.pid());
    const auto base = count_fds(d.pid());
    const long per_conn = datapath() == "splice" ? 6 : 2;
    const long reserve = 64 + (uses_pipes() ? pooled_pipe_fds : 0) + (datapath() == "auto" ? long(batch) * 4 : 0);
    const long fit = (limit - base.total() - reserve) / per_conn;
    const long wanted = env_long("SPLICED_TEST_IDLE_N", 10000);
    const auto n = static_cast<std::size_t>(std::max(0L, std::min(wanted, fit)));
    if (static_cast<long>(n) < wanted)
        loud("idle connections: holding " + std::to_string(n) + ", not " + std::to_string(wanted) +
             ": the daemon's RLIMIT_NOFILE is " + std::to_string(limit) + " (this machine's hard limit, which the "
             "test cannot raise), it holds " + std::to_string(base.total()) + " descriptors already, and the " +
             datapath() + " path needs " + std::to_string(per_conn) + " per connection (" + std::to_string(reserve) +
             " kept in reserve)");
    else
        std::cout << "  holding " << n << " idle connections (daemon RLIMIT_NOFILE " << limit << ")" << std::endl;
    REQUIRE(n >= 1000);
    const long rss0 = rss_kib(d.pid());

    std::vector<unique_fd> clients(n);
    const auto t_open = clock::now();
    for (std::size_t from = 0; from < n; from += batch) {
        const std::size_t to = std::min(n, from + batch);
        auto error = open_and_echo(clients, from, to, d.port("idle"), 0);
        INFO("opening connections " << from << ".." << to << "; daemon descriptors " << count_fds(d.pid()).text());
        REQUIRE(error == "");
        if (datapath() == "auto") {
            double promoted = 0;
            bool caught_up = run_until(
                [&] {
                    promoted = promotions_of(d.metrics(), "idle") - promoted0;
                    return promoted >= double(to);
                },
                10s, 10ms);
            INFO("auto: " << promoted << " of " << to << " idle connections moved to sockmap");
            REQUIRE(caught_up);
        }
    }
    const double open_secs = seconds_since(t_open);

    // All established end to end, on the path under test.
    double active = 0;
    bool all_active = run_until(
        [&] {
            active = active_of(d.metrics(), "idle");
            return active == double(n);
        },
        10s, 50ms);
    INFO("connections_active " << active << " of " << n);
    REQUIRE(all_active);
    require_handed_off(d, "idle", before, double(n));
    if (datapath() == "auto") CHECK(promotions_of(d.metrics(), "idle") - promoted0 == double(n));
    auto peer_stats = peer.query();
    CHECK(peer_stats.open == n);
    if (uses_maps()) {
        map_entries e;
        bool all_in = run_until(
            [&] {
                e = entries_of(d.pid());
                return e.sockhash == 2 * n && e.peers == 2 * n;
            },
            10s, 100ms);
        INFO("sockhash " << e.sockhash << ", peers " << e.peers << " entries; expected " << 2 * n << " each");
        CHECK(all_in);
    }
    std::this_thread::sleep_for(500ms);  // let the daemon settle (freed frames, trimmed buffers) before measuring
    const long rss1 = rss_kib(d.pid());
    const auto held = count_fds(d.pid());
    const double kib_per_conn = double(rss1 - rss0) / double(n);
    const double fds_per_conn = double(held.total() - base.total()) / double(n);
    std::cout << "  " << n << " idle connections open in " << open_secs << " s; daemon RSS " << rss0 << " -> " << rss1
              << " KiB = " << fixed(kib_per_conn) << " KiB per connection; descriptors " << base.text() << " -> "
              << held.text() << " = " << fixed(fds_per_conn) << " per connection" << std::endl;

    // Still working after all that time idle (on auto: now through the redirect).
    auto echo_error = echo_on_all(clients, 16);
    CHECK(echo_error == "");

    const auto t_close = clock::now();
    clients.clear();  // plain close: FIN from every client
    active = wait_inactive(d, "idle", 30s);
    const double close_secs = seconds_since(t_close);
    CHECK(active == 0);
    require_maps_empty(d, 10s);
    const auto after = wait_fds_back(d, base, 10s);
    check_fds_back(after, base);
    CHECK(run_until([&] { return peer.query().open == 0; }, 10s, 50ms));
    const long rss2 = rss_kib(d.pid());
    std::cout << "  all closed in " << close_secs << " s; descriptors " << after.text() << ", RSS " << rss2 << " KiB"
              << std::endl;
    require_clean_stop(d);
    summary("idle connections", std::to_string(n) + (static_cast<long>(n) < wanted ? " (fd limit)" : "") +
                                    " held; RSS " + fixed(kib_per_conn) + " KiB/conn (" + std::to_string(rss0) + " -> " +
                                    std::to_string(rss1) + " KiB); fds " + fixed(fds_per_conn) + "/conn (" +
                                    std::to_string(base.total()) + " -> " + std::to_string(held.total()) + " -> " +
                                    std::to_string(after.total()) + "); opened in " + fixed(open_secs) +
                                    " s, closed in " + fixed(close_secs) + " s");
}

// ---------------------------------------------------------------------------------------------------------
// 5. Hostile peers: each costs only its own connection, never the process, never a spinning CPU, never a stream
// that ends cleanly but short

namespace {

// A listener whose connections are accepted and then never read from (nor written to); closes them at destruction.
class never_reading_backend {
public:
    never_reading_backend() {
        listen_.reset(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        auto sin = loopback(0);
        socklen_t len = sizeof sin;
        int small = 64 * 1024;  // inherited by accepted sockets: the proxy's writes block soon
        setsockopt(listen_.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
        if (!listen_ || bind(listen_.get(), reinterpret_cast<sockaddr*>(&sin), len) != 0 || listen(listen_.get(), 16) != 0 ||
            getsockname(listen_.get(), reinterpret_cast<sockaddr*>(&sin), &len) != 0)
            throw std::runtime_error(std::string("never-reading backend: ") + std::strerror(errno));
        port_ = ntohs(sin.sin_port);
        thread_ = std::thread([this] {
            while (!stop_) {
                pollfd p{listen_.get(), POLLIN, 0};
                if (poll(&p, 1, 20) != 1) continue;
                int c = accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC);
                std::lock_guard lock(mutex_);
                if (c >= 0) held_.emplace_back(c);
            }
        });
    }
    ~never_reading_backend() {
        stop_ = true;
        thread_.join();
    }
    std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
    std::size_t accepted() {
        std::lock_guard lock(mutex_);
        return held_.size();
    }
    // TCP state of the n-th accepted connection (-1 if there is none).
    int state(std::size_t n) {
        std::lock_guard lock(mutex_);
        return n < held_.size() ? tcp_state(held_[n].get()) : -1;
    }

private:
    unique_fd listen_;
    std::uint16_t port_ = 0;
    std::atomic<bool> stop_{false};
    std::mutex mutex_;
    std::vector<unique_fd> held_;
    std::thread thread_;
};


// Reads until EOF, an error or the deadline, pausing `pause` after the first `pause_after` bytes; returns what came
// and how it ended.
struct read_outcome {
    std::string bytes;
    end_kind how = end_kind::timeout;
};
read_outcome read_to_end(int fd, std::size_t pause_after, std::chrono::milliseconds pause, clock::time_point deadline) {
    read_outcome out;
    std::vector<char> buf(64 * KiB);
    bool paused = false;
    set_nonblocking(fd, true);
    while (clock::now() < deadline) {
        if (!paused && out.bytes.size() >= pause_after) {
            std::this_thread::sleep_for(pause);
            paused = true;
        }
        pollfd p{fd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0) continue;
        const std::size_t want = paused ? buf.size() : std::min(buf.size(), pause_after - out.bytes.size());
        ssize_t n = recv(fd, buf.data(), std::max<std::size_t>(want, 1), 0);
        if (n == 0) {
            out.how = end_kind::eof;
            return out;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            out.how = errno == ECONNRESET ? end_kind::reset : end_kind::error;
            return out;
        }
        out.bytes.append(buf.data(), static_cast<std::size_t>(n));
    }
    return out;
}

std::string as_string(const std::vector<std::uint8_t>& v) { return std::string(v.begin(), v.end()); }

// Asks a `source` backend for `n` bytes.
void request_source(int fd, std::uint64_t n) {
    std::uint8_t req[8];
    for (int i = 0; i < 8; ++i) req[i] = static_cast<std::uint8_t>(n >> (56 - 8 * i));
    REQUIRE(send_all(fd, req, sizeof req));
}

}  // namespace

TEST_CASE("with no metrics section, clients that half-close and then reset while the backend still streams to "
          "them cost only their own connection: the daemon survives (no SIGPIPE) and goes on serving",
          "[faults][hostile]") {
    ANNOUNCE_DATAPATH();
    backend_server source(backend_kind::source);
    backend_server echo(backend_kind::echo);
    auto& d = start_daemon({{"source", {source.address()}}, {"echo", {echo.address()}}}, {.metrics = false});
    for (int i = 0; i < 8; ++i) {
        auto fd = d.connect("source", 10s);
        request_source(fd.get(), 256 * MiB);
        shutdown(fd.get(), SHUT_WR);
        std::vector<char> buf(64 * KiB);
        std::size_t got = 0;
        while (got < MiB) {
            ssize_t n = recv(fd.get(), buf.data(), buf.size(), 0);
            if (n <= 0) break;
            got += static_cast<std::size_t>(n);
        }
        fd.reset();  // unread bytes queued: close() sends RST, and the daemon's next write to it fails
        std::this_thread::sleep_for(50ms);
        INFO("round " << i << "; log:\n" << d.process->log_tail());
        REQUIRE(d.process->running());
    }
    std::this_thread::sleep_for(300ms);
    INFO("spliced: " << d.process->exit_description() << "; log:\n" << d.process->log_tail());
    REQUIRE(d.process->running());
    auto fd = d.connect("echo", 10s);
    CHECK(echo_check(fd.get(), payload(0x5197), 256 * KiB, clock::now() + 20s, true) == "");
    require_clean_stop(d);
    summary("SIGPIPE", "8 clients reset mid-download with no metrics section; daemon alive, echo intact");
}

TEST_CASE("an urgent byte in either direction goes on in order as an ordinary byte, the rest of the stream and the "
          "FIN follow, and no worker spins",
          "[faults][hostile][urgent]") {
    ANNOUNCE_DATAPATH();
    backend_server sink(backend_kind::sink);
    // A backend that sends a head, one urgent byte, a tail, then half-closes and waits for the client's close.
    unique_fd listener(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    auto sin = loopback(0);
    socklen_t len = sizeof sin;
    REQUIRE(bind(listener.get(), reinterpret_cast<sockaddr*>(&sin), len) == 0);
    REQUIRE(listen(listener.get(), 4) == 0);
    REQUIRE(getsockname(listener.get(), reinterpret_cast<sockaddr*>(&sin), &len) == 0);
    const std::string urgent_backend = "127.0.0.1:" + std::to_string(ntohs(sin.sin_port));
    auto& d = start_daemon({{"upload", {sink.address()}}, {"download", {urgent_backend}}});
    const std::string head = as_string(payload(0x0b1).bytes(0, 1000));
    const std::string tail = as_string(payload(0x0b2).bytes(0, MiB));
    const double cpu0 = cpu_seconds(d.pid());

    // Upload: head, urgent byte, 1 MiB, half-close; the sink answers the SHA-256 of everything it read.
    {
        auto fd = d.connect("upload", 20s);
        REQUIRE(send_all(fd.get(), head.data(), head.size()));
        std::this_thread::sleep_for(20ms);
        REQUIRE(send(fd.get(), "!", 1, MSG_OOB | MSG_NOSIGNAL) == 1);
        REQUIRE(send_all(fd.get(), tail.data(), tail.size()));
        shutdown(fd.get(), SHUT_WR);
        std::uint8_t got[32];
        const long n = recv_exact(fd.get(), got, sizeof got);
        sha256 want;
        const std::string all = head + "!" + tail;
        want.update(reinterpret_cast<const std::uint8_t*>(all.data()), all.size());
        const auto expected = want.finish();
        INFO("the sink's digest arrived with " << n << " of 32 bytes (it answers only after the FIN)");
        REQUIRE(n == 32);
        CHECK(std::equal(std::begin(got), std::end(got), expected.begin()));
    }
    // Download: the backend sends the urgent byte.
    {
        auto fd = d.connect("download", 20s);
        unique_fd b(accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
        REQUIRE(b);
        REQUIRE(send_all(b.get(), head.data(), head.size()));
        std::this_thread::sleep_for(20ms);
        REQUIRE(send(b.get(), "?", 1, MSG_OOB | MSG_NOSIGNAL) == 1);
        REQUIRE(send_all(b.get(), tail.data(), tail.size()));
        shutdown(b.get(), SHUT_WR);
        auto got = read_to_end(fd.get(), SIZE_MAX, 0ms, clock::now() + 15s);
        CHECK(to_string(got.how) == std::string("EOF"));
        CHECK(got.bytes.size() == head.size() + 1 + tail.size());
        CHECK(got.bytes == head + "?" + tail);
    }
    std::this_thread::sleep_for(1s);  // a worker stuck on an urgent mark would burn this whole second
    const double cpu = cpu_seconds(d.pid()) - cpu0;
    std::cout << "  daemon CPU over both transfers and 1 s after: " << cpu << " s" << std::endl;
    CHECK(cpu < 0.8);
    CHECK(wait_inactive(d, "upload") == 0);
    CHECK(wait_inactive(d, "download") == 0);
    require_maps_empty(d);
    require_clean_stop(d);
    summary("urgent byte", "1 MiB after an urgent byte both ways intact with FIN; daemon CPU " + fixed(cpu, 3) + " s");
}

TEST_CASE("an urgent byte a client sends before its upstream is connected is forwarded once, in order, not "
          "duplicated with the bytes before it",
          "[faults][hostile][urgent]") {
    ANNOUNCE_DATAPATH();
    held_listener early;  // completes the upstream connect about a second after release()
    auto& d = start_daemon({{"early", {early.address()}, "5s"}});
    auto fd = d.connect("early", 20s);
    const std::string head = as_string(payload(0x0b3).bytes(0, 3000));
    const std::string tail = as_string(payload(0x0b4).bytes(0, 60 * KiB));
    REQUIRE(send_all(fd.get(), head.data(), head.size()));
    REQUIRE(send(fd.get(), "!", 1, MSG_OOB | MSG_NOSIGNAL) == 1);
    REQUIRE(send_all(fd.get(), tail.data(), tail.size()));
    std::this_thread::sleep_for(100ms);
    early.release();
    const std::string want = head + "!" + tail;
    // Then a second exchange once the pair runs on its path.
    auto got = read_to_end(fd.get(), SIZE_MAX, 0ms, clock::now() + 1s);  // nothing may come before the connect
    for (auto t0 = clock::now(); got.bytes.size() < want.size() && seconds_since(t0) < 10;) {
        auto more = read_to_end(fd.get(), SIZE_MAX, 0ms, clock::now() + 200ms);
        got.bytes += more.bytes;
        if (more.how != end_kind::timeout) break;
    }
    CHECK(got.bytes.size() == want.size());
    CHECK(got.bytes == want);
    const std::string more = as_string(payload(0x0b5).bytes(0, 5000));
    REQUIRE(send_all(fd.get(), more.data(), more.size()));
    shutdown(fd.get(), SHUT_WR);
    auto rest = read_to_end(fd.get(), SIZE_MAX, 0ms, clock::now() + 10s);
    CHECK(rest.bytes == more);  // and nothing more: no skb redirected a second time
    CHECK(to_string(rest.how) == std::string("EOF"));
    require_clean_stop(d);
    summary("urgent byte before the upstream connect", "echo of " + std::to_string(want.size()) + " + " +
                                                           std::to_string(more.size()) + " bytes intact, once");
}

TEST_CASE("idle means no progress either way: a client reading slowly gets the whole stream and a clean EOF, and "
          "one that stalls past the idle timeout gets a reset, never a short stream with a FIN",
          "[faults][hostile][idle]") {
    ANNOUNCE_DATAPATH();
    backend_server source(backend_kind::source);
    auto& d = start_daemon({{"source", {source.address()}, "2s", "2s"}});
    const std::uint64_t n = 8 * MiB;
    const std::string want = as_string(source_payload(n).bytes(0, n));
    double stalled_took = 0;
    read_outcome stalled, slow;
    {
        // Reads 64 KiB, then nothing for 5 s (past idle: 2 s), then on.
        auto fd = d.connect("source", 20s);
        request_source(fd.get(), n);
        const auto t0 = clock::now();
        stalled = read_to_end(fd.get(), 64 * KiB, 5s, clock::now() + 30s);
        stalled_took = seconds_since(t0);
        INFO("stalled reader: " << stalled.bytes.size() << " of " << n << " bytes, then " << to_string(stalled.how));
        CHECK(stalled.how == end_kind::reset);
        CHECK(stalled.bytes.size() < n);
        CHECK(want.compare(0, stalled.bytes.size(), stalled.bytes) == 0);  // what came is a prefix
    }
    {
        // Reads 256 KiB every 250 ms: about 8 s for the whole stream, four times the idle timeout, never idle.
        auto fd = d.connect("source", 20s);
        int small = 64 * 1024;
        setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
        request_source(fd.get(), n);
        set_nonblocking(fd.get(), true);
        std::vector<char> buf(256 * KiB);
        const auto deadline = clock::now() + 40s;
        while (clock::now() < deadline) {
            std::size_t took_now = 0;
            bool ended = false;
            while (took_now < buf.size()) {
                pollfd p{fd.get(), POLLIN, 0};
                if (poll(&p, 1, 100) <= 0) break;
                ssize_t k = recv(fd.get(), buf.data(), buf.size() - took_now, 0);
                if (k == 0) slow.how = end_kind::eof;
                if (k < 0 && (errno == EAGAIN || errno == EINTR)) continue;
                if (k < 0) slow.how = errno == ECONNRESET ? end_kind::reset : end_kind::error;
                if (k <= 0) {
                    ended = true;
                    break;
                }
                slow.bytes.append(buf.data(), static_cast<std::size_t>(k));
                took_now += static_cast<std::size_t>(k);
            }
            if (ended) break;
            std::this_thread::sleep_for(250ms);
        }
        INFO("slow reader: " << slow.bytes.size() << " of " << n << " bytes, then " << to_string(slow.how));
        CHECK(slow.how == end_kind::eof);
        CHECK(slow.bytes.size() == n);
        CHECK(slow.bytes == want);
    }
    CHECK(wait_inactive(d, "source") == 0);
    const auto lines = access_lines(d, "source");
    INFO("access log:\n" << [&] {
        std::string all;
        for (auto& l : lines) all += l + "\n";
        return all;
    }());
    REQUIRE(lines.size() == 2);
    CHECK_THAT(lines[0], Catch::Contains("end=idle_timeout"));
    CHECK_THAT(lines[1], Catch::Contains("end=completed"));
    require_maps_empty(d);
    require_clean_stop(d);
    summary("idle timeout vs slow readers", "stalled reader: " + std::to_string(stalled.bytes.size()) + " B then " +
                                                to_string(stalled.how) + " after " + fixed(stalled_took) +
                                                " s; slow reader: all " + std::to_string(slow.bytes.size()) +
                                                " B then " + to_string(slow.how));
}

TEST_CASE("a client that uploads and resets while its upstream connect is still in progress leaves the backend a "
          "reset (or nothing), never a FIN after a truncated upload",
          "[faults][hostile]") {
    ANNOUNCE_DATAPATH();
    held_listener held;
    auto& d = start_daemon({{"held", {held.address()}, "5s"}});
    auto fd = d.connect("held", 10s);
    const auto data = payload(0x7e5e7).bytes(0, 64 * KiB);
    REQUIRE(send_all(fd.get(), data.data(), data.size()));
    std::this_thread::sleep_for(100ms);
    close_with_reset(fd);
    std::this_thread::sleep_for(100ms);
    held.release();  // the daemon's connect goes through ~1 s later; the echo backend sees what it forwards
    // held_listener echoes: a FIN reaching it makes it half-close back; a reset ends it. Read the end from the
    // access log and the backend's side: the pair must end as a client reset.
    CHECK(wait_inactive(d, "held", 10s) == 0);
    const auto lines = access_lines(d, "held");
    INFO("access log: " << (lines.empty() ? "(none)" : lines.back()));
    REQUIRE(lines.size() == 1);
    CHECK_THAT(lines[0], !Catch::Contains("end=completed"));
    require_maps_empty(d);
    require_clean_stop(d);
    summary("client reset during the upstream connect", lines[0].substr(lines[0].find(" end=") + 1));
}

TEST_CASE("a backend that never reads does not pin a session whose client has gone: the idle timeout ends it",
          "[faults][hostile][idle]") {
    ANNOUNCE_DATAPATH();
    never_reading_backend backend;
    auto& d = start_daemon({{"stuck", {backend.address()}, "2s", "2s"}});
    {
        auto fd = d.connect("stuck", 10s);
        const auto data = payload(0x5eed).bytes(0, 8 * MiB);
        set_nonblocking(fd.get(), true);
        std::size_t sent = 0;
        for (auto t0 = clock::now(); sent < data.size() && seconds_since(t0) < 2;) {
            ssize_t k = send(fd.get(), data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
            if (k > 0) sent += static_cast<std::size_t>(k);
            else std::this_thread::sleep_for(5ms);
        }
        std::cout << "  client queued " << sent << " bytes towards a backend that reads nothing, then closed"
                  << std::endl;
    }  // closes: FIN (or RST with unread bytes)
    const auto t0 = clock::now();
    const double active = wait_inactive(d, "stuck", 15s);
    const double took = seconds_since(t0);
    CHECK(active == 0);
    CHECK(took < 8.0);
    CHECK(run_until([&] { return backend.state(0) == TCP_CLOSE; }, 5s));  // reset, not a FIN
    require_maps_empty(d);
    require_clean_stop(d);
    summary("backend that never reads", "session ended " + fixed(took) + " s after its client left (idle 2 s)");
}

TEST_CASE("a pair blocked on a client that reads nothing does not keep waking the daemon", "[faults][hostile]") {
    ANNOUNCE_DATAPATH();
    backend_server source(backend_kind::source);
    auto& d = start_daemon({{"source", {source.address()}}});
    auto fd = d.connect("source", 20s);
    int small = 64 * 1024;
    setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    request_source(fd.get(), 64 * MiB);
    REQUIRE(run_until([&] { return source.accepted() == 1; }, 5s));
    std::this_thread::sleep_for(3s);  // the queues fill; on auto the promoter backs off
    const long s0 = context_switches(d.pid());
    const double c0 = cpu_seconds(d.pid());
    std::this_thread::sleep_for(3s);
    const long wakes = context_switches(d.pid()) - s0;
    const double cpu = cpu_seconds(d.pid()) - c0;
    std::cout << "  blocked pair: " << wakes << " voluntary context switches and " << cpu << " s CPU in 3 s"
              << std::endl;
    CHECK(wakes < 150);  // a 1 ms retry loop makes ~1000
    CHECK(cpu < 0.1);
    fd.reset();
    CHECK(wait_inactive(d, "source") == 0);
    require_clean_stop(d);
    summary("blocked pair", std::to_string(wakes) + " wake-ups, " + fixed(cpu, 3) + " s CPU in 3 s");
}

TEST_CASE("a metrics client that connects and says nothing does not block a scrape", "[faults][hostile][metrics]") {
    ANNOUNCE_DATAPATH();
    backend_server echo(backend_kind::echo);
    auto& d = start_daemon({{"echo", {echo.address()}}});
    auto silent = connect_tcp("127.0.0.1", d.metrics_port(), 10s);
    std::this_thread::sleep_for(100ms);
    const auto t0 = clock::now();
    std::string error;
    try {
        auto fd = connect_tcp("127.0.0.1", d.metrics_port(), 3s);
        const std::string req = "GET /metrics HTTP/1.0\r\n\r\n";
        REQUIRE(send_all(fd.get(), req.data(), req.size()));
        auto got = read_to_end(fd.get(), SIZE_MAX, 0ms, clock::now() + 3s);
        if (got.bytes.find("spliced_build_info") == std::string::npos)
            error = "no metrics within 3 s (" + std::to_string(got.bytes.size()) + " bytes, " + to_string(got.how) + ")";
    } catch (const std::exception& e) {
        error = e.what();
    }
    CHECK(error == "");
    std::cout << "  scrape beside a silent client took " << seconds_since(t0) << " s" << std::endl;
    silent.reset();
    require_clean_stop(d);
}

TEST_CASE("scrapes that keep coming while the daemon stops read nothing freed (ASan checks it) and the exit is clean",
          "[faults][hostile][metrics]") {
    ANNOUNCE_DATAPATH();
    backend_server echo(backend_kind::echo);
    auto& d = start_daemon({{"echo", {echo.address()}}});
    std::atomic<bool> stop{false};
    std::atomic<int> scrapes{0};
    std::thread scraper([&] {
        while (!stop) {
            try {
                d.metrics();
                ++scrapes;
            } catch (const std::exception&) {
                std::this_thread::sleep_for(1ms);
            }
        }
    });
    std::this_thread::sleep_for(300ms);
    const int status = d.process->stop(20s);
    stop = true;
    scraper.join();
    INFO("log:\n" << d.process->log_tail());
    CHECK(status == 0);
    CHECK(scrapes > 0);
}

TEST_CASE("SIGHUPs sent every 0.2 ms from the daemon's start do not end it", "[faults][hostile][signals]") {
    ANNOUNCE_DATAPATH();
    backend_server echo(backend_kind::echo);
    int sent = 0;
    daemon_options opts;
    // From the daemon's first log line on (its main() is running: a signal before that, while the dynamic loader
    // runs, is the kernel's default action for any program) until READY=1.
    opts.process.while_starting = [&sent](pid_t pid) {
        struct stat st{};
        if (stat(("/proc/" + std::to_string(pid) + "/fd/2").c_str(), &st) != 0 || st.st_size == 0) return;
        kill(pid, SIGHUP);
        ++sent;
    };
    auto& d = start_daemon({{"echo", {echo.address()}}}, opts);
    for (int i = 0; i < 5; ++i) d.process->send_signal(SIGHUP);
    std::this_thread::sleep_for(200ms);
    INFO(sent << " SIGHUPs during startup; spliced " << d.process->exit_description());
    REQUIRE(d.process->running());
    // The BPF probe keeps a sockmap or auto daemon starting for tens of ms after its first log line: there, some
    // SIGHUPs must have landed in that window. On splice and copy it may be shorter than one try.
    if (uses_maps()) CHECK(sent > 0);
    auto fd = d.connect("echo", 10s);
    CHECK(echo_check(fd.get(), payload(0x4b), 64 * KiB, clock::now() + 10s, true) == "");
    require_clean_stop(d);
    summary("SIGHUP at startup", std::to_string(sent) + " SIGHUPs before READY, 5 after: still serving");
}

// ---------------------------------------------------------------------------------------------------------

// On failure, prints the tail of the log of the daemon the case started and keeps its temporary directory; then
// stops that daemon (SIGKILL) if it is still running.
void after_case(const std::string& name, bool failed) {
    if (!current) return;
    if (failed) {
        current->dir.keep();
        std::cerr << "---- spliced log (tail) after failed case \"" << name << "\" ----\n"
                  << current->process->log_tail(60) << "---- end of spliced log; config and log kept in "
                  << current->dir.path() << " ----\n";
    }
    current.reset();  // SIGKILLs a daemon a failed case left running
}

bool after_suite(bool) { return true; }  // each case stops its own daemon

}  // namespace it
