// Black-box tests of spliced at its limits, on one data path: out of file descriptors, and the sockmap at capacity.
#include <catch2/catch.hpp>

#include "harness.hpp"
#include "suite.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <iostream>
#include <netinet/in.h>
#include <optional>
#include <poll.h>
#include <sstream>
#include <string_view>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

namespace it {

namespace {

// Where connections are handed off: auto starts each one on splice and may promote it to sockmap later.
bool starts_on_splice() { return datapath() == "splice" || datapath() == "auto"; }


std::string last_log_tail;  // of the last case's daemon, for the runner's failure report

// ---------------------------------------------------------------------------------------------------------
// The process under test, seen from outside


// The descriptor numbers the process has open, ascending (/proc/PID/fd).
std::vector<int> open_fds(pid_t pid) {
    std::vector<int> fds;
    std::string dir = "/proc/" + std::to_string(pid) + "/fd";
    DIR* d = opendir(dir.c_str());
    if (!d) return fds;
    while (dirent* e = readdir(d))
        if (e->d_name[0] != '.') fds.push_back(std::atoi(e->d_name));
    closedir(d);
    std::sort(fds.begin(), fds.end());
    return fds;
}

// The soft RLIMIT_NOFILE that leaves exactly `spare` descriptor numbers free below it. The kernel hands out the
// lowest free number and refuses (EMFILE) any at or above the limit, so this is exactly what the process can
// still open.
rlim_t limit_leaving(const std::vector<int>& fds, int spare) {
    rlim_t limit = 0;
    std::size_t used = 0;  // fds[] entries below `limit`
    for (int free_below = 0; free_below < spare; ++limit) {
        if (used < fds.size() && fds[used] == static_cast<int>(limit))
            ++used;
        else
            ++free_below;
    }
    return limit;
}

// Lowers the process's soft RLIMIT_NOFILE (prlimit(2); its hard limit stays).
void set_soft_nofile(pid_t pid, rlim_t soft) {
    rlimit old{};
    REQUIRE(prlimit(pid, RLIMIT_NOFILE, nullptr, &old) == 0);
    rlimit now{soft, old.rlim_max};
    INFO("prlimit(" << pid << ", RLIMIT_NOFILE, " << soft << "): " << std::strerror(errno));
    REQUIRE(prlimit(pid, RLIMIT_NOFILE, &now, nullptr) == 0);
}

// UBSan reports in a log: how many are the vptr check's false positive when no descriptor is left (see
// one_route_daemon::environment); any other report is returned in `others`.
int tolerated_sanitizer_reports(const std::string& path, std::string& others) {
    std::ifstream in(path);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(std::move(line));
    int tolerated = 0;
    for (std::size_t i = 0; i < lines.size(); ++i) {
        if (lines[i].find("runtime error:") == std::string::npos) continue;
        const bool no_descriptor_vptr = lines[i].find("which does not point to an object of type") != std::string::npos &&
                                        i + 2 < lines.size() && lines[i + 1].find("invalid vptr") != std::string::npos &&
                                        lines[i + 2].find("<memory cannot be printed>") != std::string::npos;
        if (no_descriptor_vptr)
            ++tolerated;
        else
            others += lines[i] + "\n";
    }
    return tolerated;
}


// ---------------------------------------------------------------------------------------------------------
// One daemon per case: an echo backend and one route on the data path under test

struct daemon_options {
    std::string connect_timeout = "2s";
    unsigned workers = 1;
    unsigned long nofile = 0;                // the daemon's RLIMIT_NOFILE; 0: inherited
    std::optional<unsigned> sockmap_capacity;  // sockmap.capacity; unset: the default
    bool access_log = false;                   // into the daemon's log: one line per connection, with its path
};

struct path_counts {
    double sockmap = 0, splice = 0, copy = 0;
    double total() const { return sockmap + splice + copy; }
};

std::string describe(const path_counts& c) {
    std::ostringstream s;
    s << "sockmap " << c.sockmap << ", splice " << c.splice << ", copy " << c.copy;
    return s.str();
}

path_counts operator-(const path_counts& a, const path_counts& b) {
    return {a.sockmap - b.sockmap, a.splice - b.splice, a.copy - b.copy};
}

class one_route_daemon {
public:
    explicit one_route_daemon(daemon_options o) : opts_(std::move(o)) {
        // free_port() only says a port was free a moment ago: on a bind failure, try again with fresh ones.
        for (int attempt = 1;; ++attempt) {
            port_ = free_port(AF_INET);
            do metrics_port_ = free_port(AF_INET);
            while (metrics_port_ == port_);
            write_file(dir_.file("spliced.yaml"), config_text());
            try {
                daemon_ = std::make_unique<daemon_process>(settings().binary, dir_.file("spliced.yaml"),
                                                           dir_.file("spliced.log"), dir_.file("notify.sock"), 15s,
                                                           process_options{opts_.nofile, environment()});
                break;
            } catch (const std::exception& e) {
                if (attempt < 3 && std::string(e.what()).find("in use") != std::string::npos) continue;
                throw;
            }
        }
        std::cout << "  spliced pid " << daemon_->pid() << ", config " << dir_.file("spliced.yaml") << ", log "
                  << dir_.file("spliced.log") << std::endl;
    }
    ~one_route_daemon() { last_log_tail = daemon_ ? daemon_->log_tail(60) : std::string(); }

    daemon_process& process() { return *daemon_; }
    pid_t pid() const { return daemon_->pid(); }
    std::uint16_t port() const { return port_; }
    std::uint16_t metrics_port() const { return metrics_port_; }
    unique_fd connect(std::chrono::milliseconds io_timeout = 30s) const {
        return connect_tcp("127.0.0.1", port_, io_timeout);
    }
    metrics_snapshot metrics() const { return scrape("127.0.0.1", metrics_port_); }
    path_counts connections() const {
        auto m = metrics();
        auto on = [&](const char* path) {
            return m.sum("spliced_connections_total", {{"route", "r"}, {"datapath", path}});
        };
        return {on("sockmap"), on("splice"), on("copy")};
    }
    double sample(const std::string& name, const std::map<std::string, std::string>& labels = {}) const {
        auto match = labels;
        match["route"] = "r";
        return metrics().sum(name, match);
    }
    // Waits (bounded) until `n` more connections than `before` were handed off.
    bool wait_handed_off(const path_counts& before, double n, std::chrono::milliseconds budget = 10s) const {
        return run_until([&] { return connections().total() - before.total() >= n; }, budget, 20ms);
    }
    bool wait_idle(std::chrono::milliseconds budget = 10s) const {
        return run_until([&] { return sample("spliced_connections_active") == 0; }, budget, 50ms);
    }
    // Waits (bounded) until neither BPF map holds an entry; false if one still does.
    bool maps_empty(std::chrono::milliseconds budget = 10s) const {
        return run_until(
            [&] {
                return count_map_entries(pid(), "sockhash").entries == 0 &&
                       count_map_entries(pid(), "peers").entries == 0;
            },
            budget, 50ms);
    }

private:
    // UBSan's vptr check proves an object readable by writing it into a pipe (IsAccessibleMemoryRange): out of
    // descriptors, pipe() fails and the check reports a valid object as one with an invalid vptr whose memory
    // "cannot be printed" (suppressions do not apply: they match the type read through that vptr). A daemon
    // meant to run out of descriptors keeps running past UBSan reports; the case then fails on any report but
    // that one (see tolerated_sanitizer_reports). No effect on a build without UBSan.
    std::vector<std::string> environment() const {
        if (!opts_.nofile) return {};
        const char* mine = std::getenv("UBSAN_OPTIONS");
        std::string options = mine && *mine ? std::string(mine) + ":" : std::string();
        return {"UBSAN_OPTIONS=" + options + "halt_on_error=0"};
    }

    std::string config_text() const {
        daemon_config c;
        c.datapath = datapath();
        c.workers = opts_.workers;
        c.metrics_port = metrics_port_;
        c.access_log = opts_.access_log ? "stdout" : "off";
        c.sockmap_capacity = opts_.sockmap_capacity;
        c.routes.push_back({"r", {"127.0.0.1:" + std::to_string(port_)},
                            "connect: " + opts_.connect_timeout + ", idle: 1h", "", {echo_.address()}});
        return c.yaml();
    }

    daemon_options opts_;
    temp_dir dir_;
    backend_server echo_{backend_kind::echo};
    std::uint16_t port_ = 0, metrics_port_ = 0;
    std::unique_ptr<daemon_process> daemon_;
};

std::string fallbacks_by_reason(const one_route_daemon& d) {
    std::ostringstream s;
    for (const char* reason : {"map_full", "not_established", "busy_sender", "error"})
        s << reason << " " << d.sample("spliced_sockmap_fallbacks_total", {{"reason", reason}}) << " ";
    return s.str();
}

// ---------------------------------------------------------------------------------------------------------
// Clients

// Echo rounds on established connections from a thread, until stopped: 1 KiB each, every 50 ms.
class echo_traffic {
public:
    explicit echo_traffic(const std::vector<unique_fd>& fds) : thread_([this, &fds] { run(fds); }) {}
    ~echo_traffic() { stop(); }
    void stop() {
        stop_ = true;
        if (thread_.joinable()) thread_.join();
    }
    std::uint64_t rounds() const { return rounds_; }
    std::string error() {
        std::lock_guard lock(mutex_);
        return error_;
    }

private:
    void run(const std::vector<unique_fd>& fds) {
        for (std::uint64_t round = 0; !stop_; ++round) {
            for (std::size_t i = 0; i < fds.size(); ++i) {
                auto e = echo_check(fds[i].get(), payload(0xec40000 + round * 64 + i), KiB, clock::now() + 5s, false);
                if (!e.empty()) {
                    std::lock_guard lock(mutex_);
                    error_ = "held connection " + std::to_string(i) + ", round " + std::to_string(round) + ": " + e;
                    return;
                }
            }
            ++rounds_;
            std::this_thread::sleep_for(50ms);
        }
    }
    std::atomic<bool> stop_{false};
    std::atomic<std::uint64_t> rounds_{0};
    std::mutex mutex_;
    std::string error_;
    std::thread thread_;
};

// A burst client: connected (the kernel completes the handshake whether or not spliced accepted it), sent a
// 100-byte ping, and waits for the echo.
struct burst_client {
    enum state_kind { waiting, served, closed, gave_up };
    unique_fd fd;
    std::vector<std::uint8_t> ping;
    std::size_t echoed = 0;
    state_kind state = waiting;
    end_kind end = end_kind::timeout;  // for `closed`: how
};

constexpr std::size_t ping_size = 100;

std::vector<burst_client> open_burst(std::uint16_t port, int n) {
    std::vector<burst_client> clients(n);
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    for (int i = 0; i < n; ++i) {
        auto& c = clients[i];
        c.fd.reset(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        REQUIRE(c.fd);
        int r = ::connect(c.fd.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin);
        INFO("burst connect " << i << ": " << std::strerror(errno));
        REQUIRE((r == 0 || errno == EINPROGRESS));
        c.ping = payload(0xb0000 + i).bytes(0, ping_size);
    }
    for (int i = 0; i < n; ++i) {
        auto& c = clients[i];
        pollfd p{c.fd.get(), POLLOUT, 0};
        INFO("burst connection " << i << " never completed its handshake");
        REQUIRE(poll(&p, 1, 5000) == 1);
        int err = -1;
        socklen_t len = sizeof err;
        getsockopt(c.fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
        INFO("burst connection " << i << ": " << std::strerror(err));
        REQUIRE(err == 0);
        REQUIRE(send(c.fd.get(), c.ping.data(), c.ping.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(ping_size));
    }
    return clients;
}

struct burst_tally {
    int waiting = 0, served = 0, closed = 0, gave_up = 0;
};

burst_tally tally(const std::vector<burst_client>& clients) {
    burst_tally t;
    for (auto& c : clients) {
        switch (c.state) {
        case burst_client::waiting: ++t.waiting; break;
        case burst_client::served: ++t.served; break;
        case burst_client::closed: ++t.closed; break;
        case burst_client::gave_up: ++t.gave_up; break;
        }
    }
    return t;
}

// Reads what arrived on the waiting clients for `budget` (or until none waits). An echo that differs from the
// ping fails the case. With `release`, a client whose echo is complete closes at once, freeing the daemon's
// descriptors for the next one in the listen queue.
void pump(std::vector<burst_client>& clients, std::chrono::milliseconds budget, bool release) {
    const auto deadline = clock::now() + budget;
    std::vector<pollfd> pfds;
    std::vector<std::size_t> index;
    std::uint8_t buf[ping_size];
    while (clock::now() < deadline) {
        pfds.clear();
        index.clear();
        for (std::size_t i = 0; i < clients.size(); ++i) {
            if (clients[i].state != burst_client::waiting) continue;
            pfds.push_back({clients[i].fd.get(), POLLIN, 0});
            index.push_back(i);
        }
        if (pfds.empty()) return;
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
        int r = poll(pfds.data(), pfds.size(), static_cast<int>(std::clamp<long long>(left, 0, 50)));
        if (r <= 0) continue;
        for (std::size_t k = 0; k < pfds.size(); ++k) {
            if (!pfds[k].revents) continue;
            auto& c = clients[index[k]];
            ssize_t n = recv(c.fd.get(), buf, ping_size - c.echoed, MSG_DONTWAIT);
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (n <= 0) {
                c.state = burst_client::closed;
                c.end = n == 0 ? end_kind::eof : errno == ECONNRESET ? end_kind::reset : end_kind::error;
                continue;
            }
            INFO("burst client " << index[k] << ": echo differs from its ping");
            REQUIRE(std::equal(buf, buf + n, c.ping.begin() + static_cast<long>(c.echoed)));
            c.echoed += static_cast<std::size_t>(n);
            if (c.echoed == ping_size) {
                c.state = burst_client::served;
                if (release) c.fd.reset();
            }
        }
    }
}

}  // namespace

void after_case(const std::string& case_name, bool failed) {
    if (failed) print_log_tail(case_name, last_log_tail);
}

bool after_suite(bool) { return true; }  // each case stops its own daemon

// ---------------------------------------------------------------------------------------------------------

TEST_CASE("out of descriptors, spliced pauses accepting without spinning, keeps its established connections "
          "echoing, lets the excess clients wait in the listen queue (the one it accepted without an upstream "
          "descriptor up to the connect timeout), and serves every one of them once descriptors free up",
          "[limits][fd]") {
    ANNOUNCE_DATAPATH();
    // The daemon starts with 128 descriptors; once its held connections are in, its soft limit is lowered to
    // leave room for three connections (two sockets each; small echoes take no pipe). A burst fills that; then
    // accept() fails (EMFILE) and everyone else waits in the listen queue. Then the limit is raised by one: spliced accepts
    // one more client but cannot open its upstream socket, which it must wait for up to the connect timeout
    // (2 s), without accepting anyone else meanwhile.
    constexpr unsigned long start_limit = 128;
    constexpr int held_n = 4, burst_n = 200, give_up_n = 20;
    const int per_connection = 2;  // two sockets (copy first: a pair takes pipes only for bulk, none here)
    const int spare = 2 * per_connection + 2;

    one_route_daemon d({.connect_timeout = "2s", .workers = 1, .nofile = start_limit, .sockmap_capacity = {}});
    const pid_t pid = d.pid();
    const auto before = d.connections();
    const double promotions_before = d.sample("spliced_sockmap_promotions_total");

    std::vector<unique_fd> held;
    for (int i = 0; i < held_n; ++i) {
        held.push_back(d.connect());
        REQUIRE(echo_check(held.back().get(), payload(0x4e1d0 + i), 64 * KiB, clock::now() + 10s, false) == "");
    }
    REQUIRE(d.wait_handed_off(before, held_n));
    if (datapath() == "auto")  // promoted pairs put their pipes back in the pool: count descriptors after that
        CHECK(run_until([&] { return d.sample("spliced_sockmap_promotions_total") - promotions_before == held_n; },
                        5s));
    std::vector<int> fds;
    REQUIRE(run_until(
        [&] {
            auto now = open_fds(pid);
            bool same = now == fds;
            fds = std::move(now);
            return same;
        },
        5s, 100ms));
    const rlim_t limit = limit_leaving(fds, spare);
    INFO("spliced holds " << fds.size() << " descriptors with " << held_n << " connections; soft limit " << limit);
    REQUIRE(limit < start_limit);
    set_soft_nofile(pid, limit);
    const auto warned = [&] { return count_lines(d.process().log_path(), "accept: Too many open files; pausing"); };
    REQUIRE(warned() == 0);

    // Scrapers that connect while no descriptor is left: the metrics endpoint cannot accept them either, and
    // must not spin on it (its CPU counts in the daemon's below).
    std::vector<unique_fd> scrapers;
    for (int i = 0; i < 3; ++i) {
        scrapers.push_back(connect_tcp("127.0.0.1", d.metrics_port(), 5s));
        constexpr std::string_view request = "GET /metrics HTTP/1.0\r\n\r\n";
        send_all(scrapers.back().get(), request.data(), request.size());
    }
    // The burst, with nothing to spare after the first few.
    echo_traffic traffic(held);
    const double cpu_before = cpu_seconds(pid);
    const auto burst_start = clock::now();
    auto burst = open_burst(d.port(), burst_n);
    const auto rounds_before = traffic.rounds();
    pump(burst, 2s, false);
    const auto at_once = tally(burst);
    std::cout << "  exhausted after " << seconds_since(burst_start) << " s: " << at_once.served << " served at once, "
              << at_once.waiting << " waiting, " << at_once.closed << " closed" << std::endl;
    CHECK(at_once.served >= 3);                        // what fit was served at once ...
    CHECK(at_once.waiting == burst_n - at_once.served);  // ... and the rest wait, none is turned away
    CHECK(warned() >= 1);                              // accept() failed, and it said so

    // One descriptor more: one client is accepted and waits for its upstream socket.
    set_soft_nofile(pid, limit + 1);
    pump(burst, 1500ms, false);
    const auto one_more = tally(burst);
    CHECK(one_more.closed == 0);  // within the connect timeout: still waiting, and nobody else was accepted
    CHECK(one_more.served == at_once.served);
    pump(burst, 1500ms, false);  // past the connect timeout: that client is closed; the next one is accepted
    const auto timed_out = tally(burst);
    CHECK(timed_out.closed == 1);

    const double stuck_s = seconds_since(burst_start);
    const double cpu_stuck = cpu_seconds(pid) - cpu_before;
    const auto rounds_stuck = traffic.rounds() - rounds_before;
    std::cout << "  stuck for " << stuck_s << " s: spliced used " << cpu_stuck << " s of CPU; the held connections "
              << "echoed " << rounds_stuck << " rounds meanwhile" << std::endl;
    {
        INFO("held connections: " << traffic.error());
        CHECK(traffic.error().empty());
    }
    CHECK(rounds_stuck >= 20);  // established connections kept working while accepts failed
    CHECK(cpu_stuck < 0.5);     // paused retries, not a loop calling accept() or socket() (a whole core), by the
                                // proxy or by the metrics endpoint with its 3 pending scrapers
    scrapers.clear();
    CHECK(d.process().running());

    // Clients that give up while queued: spliced accepts them later and proxies what they sent and their FIN
    // (it cannot tell a give-up from a half-close); they must not wedge the queue.
    int gave_up = 0;
    for (auto i = burst.rbegin(); i != burst.rend() && gave_up < give_up_n; ++i) {
        if (i->state != burst_client::waiting) continue;
        i->fd.reset();
        i->state = burst_client::gave_up;
        ++gave_up;
    }
    // Release: every served client closes at once, freeing descriptors for the next ones in the queue.
    for (auto& c : burst)
        if (c.state == burst_client::served) c.fd.reset();
    const auto release_start = clock::now();
    pump(burst, 60s, true);
    const double release_s = seconds_since(release_start);
    const auto after = tally(burst);
    int reset = 0;
    for (auto& c : burst) reset += c.state == burst_client::closed && c.end == end_kind::reset;
    std::cout << "  released: after " << release_s << " s, " << after.served << " served, " << after.closed
              << " closed (" << reset << " by RST), " << after.waiting << " still waiting, " << after.gave_up
              << " gave up" << std::endl;
    CHECK(after.waiting == 0);
    CHECK(after.closed <= 2);
    CHECK(after.served + after.closed == burst_n - gave_up);

    // Back to normal: a new connection is served, and the held ones still echo and end cleanly; a scrape works.
    CHECK_NOTHROW(d.metrics());
    traffic.stop();
    CHECK(traffic.error().empty());
    {
        auto fd = d.connect();
        CHECK(echo_check(fd.get(), payload(0x4e1d9), 256 * KiB, clock::now() + 10s, true) == "");
    }
    for (int i = 0; i < held_n; ++i)
        CHECK(echo_check(held[i].get(), payload(0x4e1e0 + i), 64 * KiB, clock::now() + 10s, true) == "");
    held.clear();

    const double handed = held_n + (burst_n - after.closed) + 1;  // gave-ups are handed off too
    REQUIRE(d.wait_handed_off(before, handed));
    CHECK(d.wait_idle());
    const auto delta = d.connections() - before;
    const double local_errors = d.sample("spliced_upstream_connect_errors_total", {{"reason", "local"}});
    const double all_errors = d.sample("spliced_upstream_connect_errors_total");
    const double not_established = d.sample("spliced_sockmap_fallbacks_total", {{"reason", "not_established"}});
    const double all_fallbacks = d.sample("spliced_sockmap_fallbacks_total");
    INFO("connections_total since the case began: " << describe(delta) << "; expected " << handed);
    INFO("sockmap fallbacks: " << fallbacks_by_reason(d));
    CHECK(delta.total() == handed);
    // Each client spliced closed without an upstream is counted once, as a local connect error.
    CHECK(local_errors == after.closed);
    CHECK(all_errors == local_errors);
    if (datapath() == "sockmap") {
        // Gave-ups, and released clients that closed as soon as their echo was back, reach the hand-off
        // half-closed (CLOSE_WAIT): they cannot enter the map and run on splice, or on copy when no pipe is left.
        CHECK(delta.sockmap >= held_n + 1);
        CHECK(delta.splice + delta.copy == not_established);
        CHECK(not_established >= gave_up);
        CHECK(all_fallbacks == not_established);
    } else if (starts_on_splice()) {
        // Copy first: these echoes take no pipe (a pair that finds none for bulk copies on: the io tier's "no
        // descriptor left for a pipe" case), so every connection counts on the route's own path.
        CHECK(delta.sockmap == 0);
        CHECK(delta.splice == handed);
        if (datapath() == "auto") CHECK(d.sample("spliced_sockmap_promotions_total") - promotions_before >= held_n);
    } else {
        CHECK(delta.copy == handed);
    }
    if (uses_maps()) CHECK(d.maps_empty());
    const auto fallbacks = fallbacks_by_reason(d);
    const auto warnings = warned();
    CHECK(d.process().stop(20s) == 0);
    std::string sanitizer_reports;
    const int vptr_false_positives = tolerated_sanitizer_reports(d.process().log_path(), sanitizer_reports);
    CHECK(sanitizer_reports == "");
    if (vptr_false_positives)
        std::cout << "  (" << vptr_false_positives << " UBSan vptr report(s) made while no descriptor was left for "
                  << "its pipe check: ignored)" << std::endl;
    std::cout << "[" << datapath() << "] fd exhaustion: RLIMIT_NOFILE " << start_limit << ", lowered to " << limit
              << " (" << spare << " spare past " << held_n << " held connections), then " << limit + 1
              << "; burst of " << burst_n << ": " << at_once.served << " served at once, " << at_once.waiting
              << " waited in the listen queue, " << gave_up << " gave up there; in the end " << after.served
              << " served, " << after.closed << " closed by spliced (" << reset
              << " by RST; connect errors reason=local: " << local_errors << "); CPU " << cpu_stuck << " s in "
              << stuck_s << " s stuck; accept warnings " << warnings << "; held connections echoed " << rounds_stuck << " rounds while stuck; "
              << "connections_total " << describe(delta)
              << (datapath() == "copy" ? "" : " (those on copy found no pipe left)") << "; sockmap fallbacks "
              << fallbacks << std::endl;
}

TEST_CASE("with sockmap.capacity 4, twenty connections held open all echo intact: four go into the map, the rest "
          "run on splice and are counted as map_full fallbacks; no entry is left, and the next connection gets "
          "the map again",
          "[limits][capacity]") {
    ANNOUNCE_DATAPATH();
    constexpr unsigned capacity = 4;
    constexpr int conns_n = 20;
    const bool on_auto = datapath() == "auto";
    one_route_daemon d({.workers = 2, .sockmap_capacity = capacity, .access_log = true});
    const auto before = d.connections();
    auto promotions = [&] { return d.sample("spliced_sockmap_promotions_total"); };
    auto full = [&] { return d.sample("spliced_sockmap_fallbacks_total", {{"reason", "map_full"}}); };
    const double promotions_before = promotions();

    // One at a time, so the first `capacity` are the ones that get the map.
    std::vector<unique_fd> conns;
    for (int i = 0; i < conns_n; ++i) {
        INFO("connection " << i);
        conns.push_back(d.connect());
        REQUIRE(echo_check(conns.back().get(), payload(0xca90 + i), 64 * KiB, clock::now() + 10s, false) == "");
        REQUIRE(d.wait_handed_off(before, i + 1));
        // auto: the pair turns quiet after its echo; wait until its promotion was made or refused.
        if (on_auto) REQUIRE(run_until([&] { return promotions() - promotions_before + full() == i + 1; }, 5s));
    }
    map_census sockhash, peers;
    if (uses_maps()) {
        sockhash = count_map_entries(d.pid(), "sockhash");
        peers = count_map_entries(d.pid(), "peers");
        CHECK(sockhash.error == 0);
        CHECK(sockhash.entries == 2 * capacity);
        CHECK(peers.entries == 2 * capacity);
    }

    // All twenty at once, 1 MiB each way, then half-close: every byte back, in order, and EOF.
    std::vector<std::string> errors(conns_n);
    {
        std::vector<std::thread> threads;
        for (int i = 0; i < conns_n; ++i)
            threads.emplace_back([&, i] {
                errors[i] = echo_check(conns[i].get(), payload(0xcb90 + i), MiB, clock::now() + 30s, true);
            });
        for (auto& t : threads) t.join();
    }
    int intact = 0;
    for (int i = 0; i < conns_n; ++i) {
        INFO("connection " << i);
        CHECK(errors[i] == "");
        intact += errors[i].empty();
    }
    conns.clear();
    CHECK(d.wait_idle());
    if (uses_maps()) CHECK(d.maps_empty());

    // Room again: the next connection gets the map (on auto, once it turns quiet).
    const auto before_next = d.connections();
    const double promotions_next = promotions();
    {
        auto fd = d.connect();
        CHECK(echo_check(fd.get(), payload(0xcc90), 64 * KiB, clock::now() + 10s, false) == "");
        REQUIRE(d.wait_handed_off(before_next, 1));
        if (on_auto) CHECK(run_until([&] { return promotions() - promotions_next == 1; }, 5s));
        if (uses_maps()) CHECK(count_map_entries(d.pid(), "sockhash").entries == 2);
        CHECK(echo_check(fd.get(), payload(0xcc91), 64 * KiB, clock::now() + 10s, true) == "");
    }
    CHECK(d.wait_idle());
    if (uses_maps()) CHECK(d.maps_empty());

    const auto delta = d.connections() - before;
    const double promoted = promotions() - promotions_before;
    const double fallbacks = d.sample("spliced_sockmap_fallbacks_total");
    INFO("connections_total: " << describe(delta) << "; promotions " << promoted << "; map_full fallbacks "
                               << full() << " of " << fallbacks);
    CHECK(delta.total() == conns_n + 1);
    if (datapath() == "sockmap") {
        CHECK(delta.sockmap == capacity + 1);
        CHECK(delta.splice == conns_n - capacity);  // no socket of theirs entered the map: splice, not copy
        CHECK(delta.copy == 0);
        CHECK(full() == conns_n - capacity);
    } else if (on_auto) {
        CHECK(delta.splice == conns_n + 1);
        CHECK(promoted == capacity + 1);
        CHECK(full() == conns_n - capacity);  // promotions refused: those pairs stayed on splice
    } else {
        // splice and copy never use the map: the capacity changes nothing.
        CHECK((datapath() == "splice" ? delta.splice : delta.copy) == conns_n + 1);
        CHECK(promoted == 0);
    }
    const double map_full = full();
    CHECK(fallbacks == map_full);
    // The access log names every path each connection ran on, the last one to its end: on auto, a promoted
    // pair says splice+sockmap, and a refused promotion leaves the pair on splice (it never entered the map),
    // not on copy.
    auto ran_on = [&](const char* path) {
        const std::string last = std::string("datapath=") + path + " ";
        const std::string moved = std::string("+") + path + " ";
        std::ifstream in(d.process().log_path());
        int n = 0;
        for (std::string line; std::getline(in, line);) {
            const auto at = line.find(" datapath=");
            if (at == std::string::npos || line.find(" end=") == std::string::npos) continue;
            const std::string field = line.substr(at + 1, line.find(' ', at + 1) - at);  // "datapath=... "
            n += field == last || (field.size() > moved.size() && field.compare(field.size() - moved.size(),
                                                                                 moved.size(), moved) == 0);
        }
        return n;
    };
    const int ran_sockmap = ran_on("sockmap"), ran_splice = ran_on("splice"), ran_copy = ran_on("copy");
    INFO("access log: sockmap " << ran_sockmap << ", splice " << ran_splice << ", copy " << ran_copy);
    CHECK(ran_sockmap + ran_splice + ran_copy == conns_n + 1);
    if (datapath() == "sockmap") {
        CHECK(ran_sockmap == capacity + 1);
        CHECK(ran_splice == conns_n - capacity);
        CHECK(ran_copy == 0);
    } else if (on_auto) {
        // The promoted pairs' 1 MiB echo may make them bulky within one of auto's ticks: those go back to
        // userspace copy (splice+sockmap+copy). Either way exactly the promoted ones ran on sockmap.
        std::ifstream in(d.process().log_path());
        int entered = 0;
        for (std::string line; std::getline(in, line);)
            entered += line.find(" end=") != std::string::npos && line.find("+sockmap") != std::string::npos;
        CHECK(entered == static_cast<int>(capacity) + 1);
        CHECK(ran_sockmap + ran_copy == static_cast<int>(capacity) + 1);
        CHECK(ran_splice == conns_n - static_cast<int>(capacity));
    }
    CHECK(d.process().stop(20s) == 0);
    std::cout << "[" << datapath() << "] sockmap capacity " << capacity << " connections (" << 2 * capacity
              << " entries per map): " << conns_n << " held open, " << intact << " echoed 1 MiB intact; "
              << "connections_total " << describe(delta) << "; promotions " << promoted << "; map_full fallbacks "
              << map_full << "; ran on (access log) sockmap " << ran_sockmap << ", splice " << ran_splice << ", copy "
              << ran_copy << "; sockhash/peers entries while held " << sockhash.entries << "/" << peers.entries
              << ", after close 0" << std::endl;
}

}  // namespace it
