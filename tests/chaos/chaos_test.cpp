// The chaos campaign: many short randomized scenarios (scenario.cpp) through one daemon on the data path under
// test, several at a time. Each scenario is one client connection and the backend connection it reaches; its two
// sides run scripted peers (side.cpp) and the oracle (oracle.cpp) judges what they saw. Each batch of scenarios
// then checks the daemon as a whole: alive, nothing left behind (descriptors, BPF map entries, active
// connections), idle CPU, one access log line per connection.
//
// Every scenario of a batch has a route of its own (r0, r1, ...), each with its own backend listener, so the
// connection a backend listener accepts is that scenario's. Between batches the daemon has no connection open
// (checked), so nothing of one batch reaches the next.
#include <catch2/catch.hpp>

#include "harness.hpp"
#include "oracle.hpp"
#include "scenario.hpp"
#include "side.hpp"
#include "suite.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <mutex>
#include <netinet/in.h>
#include <optional>
#include <poll.h>
#include <set>
#include <sstream>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

namespace chaos {

namespace {

using namespace std::chrono_literals;
using it::datapath;
using it::unique_fd;
using it::uses_maps;

#if defined(__SANITIZE_ADDRESS__)
constexpr bool sanitized = true;  // the daemon is built the same way: about 3x slower
#else
constexpr bool sanitized = false;
#endif

constexpr int workers = 2;
// Empty pipes the splice path keeps per worker thread (daemon/datapath/splice_pump.cpp pool_limit), two fds each.
constexpr int pooled_pipe_fds = workers * 64 * 2;
// Routes (and so scenarios) per batch.
constexpr int batch_routes = 48;
// Full reports (with the merged trace) for this many failing scenarios; the rest get their violations only.
constexpr int traced_failures = 4;
constexpr int described_failures = 30;
constexpr int max_restarts = 3;

// Pooled pipes may stay: splice, auto, and sockmap too (its fallbacks to splice: a client that half-closed before
// the upstream connected, a full map, a sender that never pauses).
bool uses_pipes() { return datapath() != "copy"; }

const char* env(const char* name) {
    const char* v = std::getenv(name);
    return v && *v ? v : nullptr;
}

struct options {
    double seconds = 40;
    long scenarios = -1;  // -1: as many as the seconds allow
    std::uint64_t first_seed = 1;
    std::optional<std::uint64_t> only_seed;  // SPLICED_CHAOS_SEED: one scenario (repeat times), traced
    long repeat = 1;
    int concurrency = 12;
    bool metrics = true;
};

options read_options() {
    options o;
    const char* seconds = env("SPLICED_CHAOS_SECONDS");
    const char* count = env("SPLICED_CHAOS_SCENARIOS");
    if (seconds) o.seconds = std::atof(seconds);
    if (count) {
        o.scenarios = std::max(1L, std::atol(count));
        if (!seconds) o.seconds = 0;  // a count alone: no time budget
    }
    if (const char* v = env("SPLICED_CHAOS_FIRST_SEED")) o.first_seed = std::strtoull(v, nullptr, 0);
    if (const char* v = env("SPLICED_CHAOS_SEED")) {
        o.only_seed = std::strtoull(v, nullptr, 0);
        o.repeat = 1;
        if (const char* r = env("SPLICED_CHAOS_REPEAT")) o.repeat = std::clamp(std::atol(r), 1L, 10000L);
        o.scenarios = o.repeat;
        o.seconds = 0;
    }
    if (o.only_seed) o.concurrency = 1;  // a replay runs alone unless told otherwise
    if (const char* v = env("SPLICED_CHAOS_CONCURRENCY")) o.concurrency = std::clamp(std::atoi(v), 1, batch_routes);
    if (env("SPLICED_CHAOS_NO_METRICS")) o.metrics = false;
    return o;
}

std::string fixed(double v, int decimals = 1) {
    std::ostringstream s;
    s << std::fixed << std::setprecision(decimals) << v;
    return s.str();
}

// free_port() may hand out a port twice: draw until it is new to this run.
std::uint16_t fresh_port() {
    static std::set<std::uint16_t> taken;
    for (;;)
        if (auto p = it::free_port(AF_INET); taken.insert(p).second) return p;
}

// ---------------------------------------------------------------------------------------------------------
// A scenario's backend listener

// 127.0.0.1, ephemeral port, backlog 0 (one queued connection fills the accept queue: hold() can then make the
// kernel drop the daemon's SYN), SO_OOBINLINE (inherited by accepted sockets, and set again on them).
class backend_listener {
public:
    backend_listener() { open(0, 0); }

    // A scenario's backend with its own SO_RCVBUF gets it before the handshake, from a listener opened anew on
    // the same port: set on the accepted socket instead, it would shrink a window already offered, and the
    // kernel would drop what the daemon sends into it (then retransmit after growing timeouts).
    void use_rcvbuf(int rcvbuf) {
        if (rcvbuf != rcvbuf_) open(port_, rcvbuf);
    }
    std::uint16_t port() const { return port_; }

    // Fills the accept queue with a connection of our own; false if it did not get queued.
    bool hold() {
        try {
            dummy_ = it::connect_tcp("127.0.0.1", port_, 2s);
        } catch (const std::exception&) {
            return false;
        }
        pollfd p{fd_.get(), POLLIN, 0};
        return ::poll(&p, 1, 2000) == 1;
    }
    // Takes the dummy out of the queue: the next SYN gets in.
    void release() {
        if (!dummy_) return;
        unique_fd taken(::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        dummy_.reset();
    }
    // The next connection, or an empty fd once `deadline` passed.
    unique_fd accept_until(clock::time_point deadline) {
        for (;;) {
            unique_fd c(::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
            if (c) return c;
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
            if (left <= 0) return {};
            pollfd p{fd_.get(), POLLIN, 0};
            ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 100)));
        }
    }
    // Closes whatever is queued (a connection that came after its scenario gave up on it); returns how many.
    int drain() {
        release();
        int n = 0;
        while (unique_fd(::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK))) ++n;
        return n;
    }

private:
    void open(std::uint16_t port, int rcvbuf) {
        fd_.reset();
        dummy_.reset();
        fd_.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        sockaddr_in sin{};
        sin.sin_family = AF_INET;
        sin.sin_port = htons(port);
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof sin;
        int one = 1;
        if (!fd_ || ::setsockopt(fd_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
            ::setsockopt(fd_.get(), SOL_SOCKET, SO_OOBINLINE, &one, sizeof one) != 0 ||
            (rcvbuf && ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) != 0) ||
            ::bind(fd_.get(), reinterpret_cast<sockaddr*>(&sin), len) != 0 || ::listen(fd_.get(), 0) != 0 ||
            ::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&sin), &len) != 0)
            throw std::runtime_error(std::string("backend listener: ") + std::strerror(errno));
        port_ = ntohs(sin.sin_port);
        rcvbuf_ = rcvbuf;
    }

    unique_fd fd_;
    unique_fd dummy_;
    std::uint16_t port_ = 0;
    int rcvbuf_ = 0;
};

// ---------------------------------------------------------------------------------------------------------
// The daemon: one for the whole campaign, a route per scenario slot

class campaign_daemon {
public:
    campaign_daemon(bool metrics, const std::vector<std::uint16_t>& backend_ports) : metrics_(metrics) {
        for (int attempt = 1;; ++attempt) {
            metrics_port_ = metrics ? fresh_port() : 0;
            listen_ports_.clear();
            for (std::size_t i = 0; i < backend_ports.size(); ++i) listen_ports_.push_back(fresh_port());
            write_config(backend_ports);
            try {
                start();
                return;
            } catch (const std::exception& e) {
                if (attempt < 3 && std::string(e.what()).find("in use") != std::string::npos) {
                    std::cout << "spliced could not bind a port (taken meanwhile?); retrying with fresh ports" << std::endl;
                    continue;
                }
                throw;
            }
        }
    }

    it::temp_dir dir;

    // Starts (again, after a death) with the same config; each start logs to a file of its own.
    void start() {
        std::lock_guard lock(mutex_);
        log_path_ = dir.file(starts_ == 0 ? "spliced.log" : "spliced." + std::to_string(starts_) + ".log");
        ++starts_;
        process_ = std::make_unique<it::daemon_process>(it::settings().binary, dir.file("spliced.yaml"), log_path_,
                                                        dir.file("notify.sock"));
    }
    int starts() const { return starts_; }
    bool alive() {
        std::lock_guard lock(mutex_);
        return process_->running();
    }
    std::string exit_description() {
        std::lock_guard lock(mutex_);
        return process_->exit_description();
    }
    pid_t pid() const { return process_->pid(); }
    it::daemon_process& process() { return *process_; }
    const std::string& log_path() const { return log_path_; }
    std::string access_log() const { return dir.file("access.log"); }
    bool metrics() const { return metrics_; }
    std::uint16_t port(int route) const { return listen_ports_.at(static_cast<std::size_t>(route)); }
    it::metrics_snapshot scrape() const { return it::scrape("127.0.0.1", metrics_port_); }

private:
    void write_config(const std::vector<std::uint16_t>& backend_ports) {
        it::daemon_config c;
        c.datapath = datapath();
        c.workers = workers;
        c.log_level = "warn";
        c.access_log = access_log();
        if (metrics_) c.metrics_port = metrics_port_;
        for (std::size_t i = 0; i < backend_ports.size(); ++i)
            c.routes.push_back({"r" + std::to_string(i), {"127.0.0.1:" + std::to_string(listen_ports_[i])},
                                "connect: " + std::to_string(connect_timeout_ms) + "ms, idle: " +
                                    std::to_string(idle_timeout_ms) + "ms",
                                "", {"127.0.0.1:" + std::to_string(backend_ports[i])}});
        it::write_file(dir.file("spliced.yaml"), c.yaml());
    }

    bool metrics_;
    std::uint16_t metrics_port_ = 0;
    std::vector<std::uint16_t> listen_ports_;
    std::mutex mutex_;  // running() reaps: one caller at a time
    std::unique_ptr<it::daemon_process> process_;
    std::string log_path_;
    int starts_ = 0;
};

std::unique_ptr<campaign_daemon> the_daemon;  // released by after_case (SIGKILLs a daemon a failed run left)

// ---------------------------------------------------------------------------------------------------------
// One scenario

struct scenario_run {
    scenario sc;
    int route = 0;
    int batch = 0;
    bool started = false;
    clock::time_point t0{};
    double seconds = 0;
    side_result client, backend;
    bool alive_before = true, alive_after = true;
    double daemon_cpu = -1;  // CPU seconds the daemon used meanwhile (measured when scenarios run one at a time)
    std::vector<access_entry> log;  // the access log lines of its connection
    std::vector<std::string> violations;
};

void run_backend(backend_listener& listener, scenario_run& run, clock::time_point deadline) {
    const auto& sc = run.sc;
    auto& r = run.backend;
    if (sc.hold_ms) {
        std::this_thread::sleep_until(run.t0 + std::chrono::milliseconds(sc.hold_ms));
        listener.release();
        trace(r, run.t0, "backend listener released (accept queue no longer full)");
    }
    const auto may_accept = run.t0 + std::chrono::milliseconds(sc.hold_ms + sc.accept_delay_ms);
    std::this_thread::sleep_until(may_accept);
    unique_fd fd = listener.accept_until(std::min(deadline, may_accept + std::chrono::milliseconds(accept_budget_ms)));
    if (!fd) {
        trace(r, run.t0, "backend: no connection came");
        return;
    }
    r.connected = true;
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_OOBINLINE, &one, sizeof one);
    trace(r, run.t0, "backend accepted the daemon's connection");
    side_setup setup{"backend", sc.backend, it::payload(sc.backend_stream_seed()), it::payload(sc.client_stream_seed()),
                     run.t0, deadline};
    run_side(fd, setup, r);
}

void run_client(campaign_daemon& d, scenario_run& run, clock::time_point deadline) {
    const auto& sc = run.sc;
    auto& r = run.client;
    unique_fd fd;
    try {
        fd = it::connect_tcp("127.0.0.1", d.port(run.route), 5s, [&](int s) {
            int one = 1;
            ::setsockopt(s, SOL_SOCKET, SO_OOBINLINE, &one, sizeof one);
            if (sc.client.rcvbuf) ::setsockopt(s, SOL_SOCKET, SO_RCVBUF, &sc.client.rcvbuf, sizeof sc.client.rcvbuf);
        });
    } catch (const std::exception& e) {
        r.connect_error = e.what();
        return;
    }
    r.connected = true;
    sockaddr_in sin{};
    socklen_t len = sizeof sin;
    if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&sin), &len) == 0) r.local_port = ntohs(sin.sin_port);
    trace(r, run.t0, "client connected from port " + std::to_string(r.local_port));
    side_setup setup{"client", sc.client, it::payload(sc.client_stream_seed()), it::payload(sc.backend_stream_seed()),
                     run.t0, deadline};
    run_side(fd, setup, r);
}

void run_scenario(campaign_daemon& d, backend_listener& listener, scenario_run& run, bool alone) {
    run.started = true;
    run.alive_before = d.alive();
    try {
        listener.use_rcvbuf(run.sc.backend.rcvbuf);
    } catch (const std::exception& e) {
        run.violations.push_back(std::string("test setup: ") + e.what());
    }
    const double cpu0 = alone ? it::cpu_seconds(d.pid()) : -1;
    if (run.sc.hold_ms && !listener.hold()) run.violations.push_back("test setup: could not fill the backend's accept queue");
    run.t0 = clock::now();
    const auto deadline = run.t0 + std::chrono::milliseconds(scenario_cap_ms);
    std::thread backend([&] { run_backend(listener, run, deadline); });
    run_client(d, run, deadline);
    backend.join();
    run.seconds = it::seconds_since(run.t0);
    run.alive_after = d.alive();
    if (alone && run.alive_after) {
        run.daemon_cpu = it::cpu_seconds(d.pid()) - cpu0;
        // Alone, a scenario moves at most a few MiB: a daemon busy most of the time is spinning.
        if (run.daemon_cpu > 0.3 && run.daemon_cpu > 0.5 * run.seconds)
            run.violations.push_back("the daemon used " + std::to_string(static_cast<long>(run.daemon_cpu * 1000)) +
                                     " ms of CPU during this " + std::to_string(static_cast<long>(run.seconds * 1000)) +
                                     " ms scenario (a spinning worker?)");
    }
}

// ---------------------------------------------------------------------------------------------------------
// Reports

bool no_metrics_run = false;  // SPLICED_CHAOS_NO_METRICS: replays need it too

std::string replay_command(std::uint64_t seed) {
    return "SPLICED_CHAOS_SEED=" + std::to_string(seed) + (no_metrics_run ? " SPLICED_CHAOS_NO_METRICS=1" : "") +
           " SPLICED_BINARY=" + it::settings().binary + " SPLICED_TEST_DATAPATH=" + datapath() + " " +
           "build/tests/chaos_tests";
}

// Both sides' traces in time order (each line starts with "+<ms>ms").
std::vector<std::string> merged_trace(const scenario_run& run) {
    std::vector<std::pair<double, const std::string*>> lines;
    for (const auto* t : {&run.client.trace, &run.backend.trace})
        for (const auto& l : *t) lines.emplace_back(l.size() > 1 && l[0] == '+' ? std::atof(l.c_str() + 1) : 0, &l);
    std::stable_sort(lines.begin(), lines.end(), [](auto& a, auto& b) { return a.first < b.first; });
    std::vector<std::string> out;
    for (auto& [t, l] : lines) out.push_back(*l);
    return out;
}

void print_run(const scenario_run& run, bool with_trace) {
    std::ostringstream o;
    o << (run.violations.empty() ? "passed" : "FAILED") << " seed " << run.sc.seed << " [" << datapath() << "] (batch "
      << run.batch << ", route r" << run.route << ", " << fixed(run.seconds, 2) << " s"
      << (run.daemon_cpu >= 0 ? ", daemon CPU " + std::to_string(static_cast<long>(run.daemon_cpu * 1000)) + " ms" : "")
      << "):\n";
    for (auto& v : run.violations) o << "  - " << v << "\n";
    o << "  tags: " << tags(run.sc) << "\n  " << describe(run.sc) << "\n  what happened:\n" << describe_outcome(run.client, run.backend, run.t0) << "\n";
    for (auto& e : run.log) o << "  access log: " << e.line << "\n";
    if (run.log.empty()) o << "  access log: (no line for this connection)\n";
    if (with_trace) {
        o << "  trace:\n";
        for (auto& l : merged_trace(run)) o << "    " << l << "\n";
    }
    o << "  replay: " << replay_command(run.sc.seed) << "\n";
    std::cout << o.str() << std::flush;
}

// ---------------------------------------------------------------------------------------------------------
// Batch checks

// Reads the access log lines added since the last call.
class access_log_reader {
public:
    explicit access_log_reader(std::string path) : path_(std::move(path)) {}
    std::vector<access_entry> read_new() {
        std::vector<access_entry> out;
        std::ifstream in(path_, std::ios::binary);
        if (!in) return out;
        in.seekg(static_cast<std::streamoff>(offset_));
        std::string chunk((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        std::size_t used = 0;
        for (std::size_t nl; (nl = chunk.find('\n', used)) != std::string::npos; used = nl + 1) {
            access_entry e;
            if (parse_access_line(chunk.substr(used, nl - used), e)) out.push_back(std::move(e));
        }
        offset_ += used;  // a partial last line is read again next time
        return out;
    }

private:
    std::string path_;
    std::size_t offset_ = 0;
};

bool fds_back(const it::fd_census& now, const it::fd_census& base) {
    return now.sockets <= base.sockets && now.other <= base.other &&
           now.pipes <= base.pipes + (uses_pipes() ? pooled_pipe_fds : 0);
}

template <typename Runs>
std::string seeds_of(const Runs& runs) {
    std::string s;
    for (auto* r : runs) s += (s.empty() ? "" : " ") + std::to_string(r->sc.seed);
    return s.empty() ? "-" : s;
}

std::string counts_text(const std::map<std::string, long>& m) {
    std::string s;
    for (auto& [k, v] : m) s += (s.empty() ? "" : ", ") + k + " " + std::to_string(v);
    return s;
}

// The campaign's state across batches: the daemon, the backend listeners, what was seen so far.
class campaign {
public:
    campaign(const options& opt, campaign_daemon& d, std::vector<std::unique_ptr<backend_listener>>& listeners)
        : opt_(opt), d_(d), listeners_(listeners), access_(d.access_log()) {
        take_baseline();
    }

    struct batch_result {
        std::size_t ran = 0;
        bool daemon_died = false;
        std::vector<std::uint64_t> suspects;  // seeds running when it died
    };

    // Runs the scenarios of `seeds` (at most one per route), `concurrency` at a time, stopping early when the time
    // budget is spent or the daemon died; then checks the batch and reports. `counted`: part of the campaign's
    // totals (not a replay of suspects).
    batch_result run_batch(const std::vector<std::uint64_t>& seeds, int concurrency, bool counted) {
        ++batches_;
        const int size = static_cast<int>(seeds.size());
        std::vector<scenario_run> runs(seeds.size());
        for (int i = 0; i < size; ++i) {
            auto& r = runs[static_cast<std::size_t>(i)];
            r.sc = generate(seeds[static_cast<std::size_t>(i)]);
            r.route = i;
            r.batch = batches_;
        }
        const double cpu0 = it::cpu_seconds(d_.pid());
        const auto began = clock::now();
        std::atomic<int> next{0};
        std::atomic<bool> died{false};
        std::vector<std::thread> pool;
        for (int w = 0; w < std::min(concurrency, size); ++w)
            pool.emplace_back([&] {
                for (int i; !died && !out_of_time() && (i = next++) < size;) {
                    auto& r = runs[static_cast<std::size_t>(i)];
                    run_scenario(d_, *listeners_[static_cast<std::size_t>(i)], r, concurrency == 1);
                    if (!r.alive_after) died = true;  // the rest of the batch would only fail to connect
                }
            });
        for (auto& t : pool) t.join();
        const double busy = d_.alive() ? it::cpu_seconds(d_.pid()) - cpu0 : -1;
        const double wall = it::seconds_since(began);
        std::vector<scenario_run*> ran;
        for (auto& r : runs)
            if (r.started) ran.push_back(&r);
        batch_result result;
        result.ran = ran.size();
        const bool alive = check_batch(ran, result);
        // The scenarios move a few MiB per batch, which costs the daemon some tens of ms of CPU (a few times that
        // sanitized): a daemon busy for a good part of the batch had a worker spinning, if only for a while (the
        // scenario that made it spin ends; run alone, a scenario's own CPU is checked and names it).
        if (alive && concurrency > 1 && busy > (sanitized ? std::max(2.0, 0.5 * wall) : std::max(1.0, 0.25 * wall))) {
            std::vector<const scenario_run*> failed;
            for (auto* r : ran) {
                auto v = judge(r->sc, r->client, r->backend, r->log.empty() ? nullptr : &r->log.front());
                if (!v.empty() || !r->violations.empty()) failed.push_back(r);
            }
            fail_batch("batch " + std::to_string(batches_) + ": the daemon used " + fixed(busy, 2) + " s of CPU in the " +
                       fixed(wall, 2) + " s its scenarios ran (a worker spinning for a while?); replay alone the "
                       "scenarios that failed in this batch to see which one: seeds " + seeds_of(failed));
        }
        for (auto* r : ran) listeners_[static_cast<std::size_t>(r->route)]->drain();
        report(ran, counted);
        std::cout << "  batch " << batches_ << ": " << ran.size() << " scenarios, " << scenarios_ << " in all, "
                  << failed_ << " failed, " << fixed(it::seconds_since(start_)) << " s; daemon CPU "
                  << fixed(busy, 2) << " s in " << fixed(wall, 2) << " s" << std::endl;
        if (!alive) restart();
        return result;
    }

    // After a death: runs each suspect alone (bounded) to name the scenario that kills the daemon.
    void find_killer(const std::vector<std::uint64_t>& suspects) {
        const auto begun = clock::now();
        std::cout << "replaying the " << suspects.size() << " scenarios that were running when spliced died, one at a time"
                  << std::endl;
        for (auto seed : suspects) {
            if (it::seconds_since(begun) > 60 || !d_.alive()) break;
            auto result = run_batch({seed}, 1, false);
            if (result.daemon_died) {
                const std::string w = "seed " + std::to_string(seed) + " alone kills spliced: " + replay_command(seed);
                failures_.push_back(w);
                std::cout << "FAILED " << w << std::endl;
                return;
            }
        }
        std::cout << "none of them killed spliced when run alone (an interleaving, or a timing that did not recur)"
                  << std::endl;
    }

    bool out_of_time() const { return opt_.seconds > 0 && it::seconds_since(start_) >= opt_.seconds; }
    bool can_go_on() const { return d_.starts() <= max_restarts; }
    std::size_t counted_scenarios() const { return static_cast<std::size_t>(scenarios_); }
    long failed() const { return failed_; }
    const std::vector<std::string>& batch_failures() const { return failures_; }
    const std::vector<std::uint64_t>& failed_seeds() const { return failed_seeds_; }

    std::string summary() const {
        std::string seeds;
        for (std::size_t i = 0; i < failed_seeds_.size() && i < 200; ++i)
            seeds += (i ? " " : "") + std::to_string(failed_seeds_[i]);
        if (failed_seeds_.size() > 200) seeds += " ...";
        std::ostringstream o;
        o << "SUMMARY [" << datapath() << (sanitized ? ", sanitized build" : "") << (opt_.metrics ? "" : ", no metrics")
          << "] chaos: " << scenarios_ << " scenarios (" << polite_ << " polite) in " << fixed(it::seconds_since(start_))
          << " s, " << batches_ << " batches; daemon ends: " << counts_text(daemon_ends_)
          << "; client saw: " << counts_text(client_ends_) << "; backend saw: " << counts_text(backend_ends_)
          << "; failed scenarios " << failed_ << (failed_ ? " (seeds " + seeds + ")" : "") << ", failed batch checks "
          << failures_.size() << ", daemon deaths " << deaths_;
        return o.str();
    }

private:
    void take_baseline() {
        if (d_.metrics()) {
            try {
                (void)d_.scrape();  // the metrics endpoint's thread and sockets exist from here on
            } catch (const std::exception&) {
            }
        }
        std::this_thread::sleep_for(100ms);
        baseline_ = it::count_fds(d_.pid());
    }

    void restart() {
        if (d_.starts() > max_restarts) {
            std::cout << "spliced died " << d_.starts() << " times: the campaign stops here" << std::endl;
            return;
        }
        std::cout << "restarting spliced (the dead one's log is kept: " << d_.log_path() << ")" << std::endl;
        d_.dir.keep();
        d_.start();
        take_baseline();
    }

    void fail_batch(const std::string& what) {
        failures_.push_back(what);
        std::cout << "FAILED " << what << std::endl;
    }

    // The daemon-wide invariants after a batch; false if the daemon died.
    bool check_batch(std::vector<scenario_run*>& ran, batch_result& result) {
        const std::string batch = "batch " + std::to_string(batches_);
        // 1. The daemon is alive.
        const bool alive = d_.alive();
        if (!alive) {
            ++deaths_;
            result.daemon_died = true;
            std::vector<scenario_run*> suspects;
            for (auto* r : ran)
                if (r->alive_before && !r->alive_after) suspects.push_back(r);
            for (auto* r : suspects) {
                result.suspects.push_back(r->sc.seed);
                r->violations.push_back(
                    "the daemon died during this scenario (" + d_.exit_description() + "; " +
                    std::to_string(suspects.size()) + " scenarios were running then)");
            }
            fail_batch(batch + ": spliced died (" + d_.exit_description() + ") during one of the scenarios with seeds " +
                       seeds_of(suspects) + "; its log:\n" + d_.process().log_tail(30));
        }

        // 2. One access log line per connection. A batch has one connection per route, so a line belongs to its
        // route's scenario; its client= must then be that scenario's client (the daemon logs "?" when the client
        // was gone before it asked for the address).
        std::map<std::string, scenario_run*> by_route;
        for (auto* r : ran)
            if (r->client.connected) by_route["r" + std::to_string(r->route)] = r;
        std::vector<std::string> strays;
        auto collect = [&] {
            for (auto& e : access_.read_new()) {
                auto it = by_route.find(e.route);
                const bool ours = it != by_route.end() &&
                                  (e.client == "?" || e.client == "127.0.0.1:" + std::to_string(it->second->client.local_port));
                if (ours) it->second->log.push_back(std::move(e));
                else strays.push_back(e.line);
            }
            return std::all_of(by_route.begin(), by_route.end(), [](auto& kv) { return !kv.second->log.empty(); });
        };
        if (alive) it::run_until(collect, 5s, 20ms);
        else collect();
        std::vector<const scenario_run*> unlogged;
        for (auto& [route, r] : by_route) {
            if (r->log.empty()) unlogged.push_back(r);
            if (alive && r->log.size() != 1)
                r->violations.push_back("the access log has " + std::to_string(r->log.size()) +
                                        " lines for this connection after the batch (want 1)");
        }
        for (auto& line : strays) std::cout << "  access log line of no scenario of this batch: " << line << std::endl;
        if (!alive) return false;

        // 3. Nothing left behind: descriptors, map entries, active connections.
        it::fd_census fds;
        double active = 0;
        std::uint64_t entries[3] = {0, 0, 0};
        auto clean = [&] {
            fds = it::count_fds(d_.pid());
            if (d_.metrics()) {
                try {
                    active = d_.scrape().sum("spliced_connections_active");
                } catch (const std::exception&) {
                    active = -1;
                }
            }
            if (uses_maps()) {
                const char* names[3] = {"sockhash", "peers", "budget"};
                for (int m = 0; m < 3; ++m) entries[m] = it::count_map_entries(d_.pid(), names[m]).entries;
            }
            return fds_back(fds, baseline_) && active == 0 && entries[0] + entries[1] + entries[2] == 0;
        };
        if (!it::run_until(clean, 5s, 50ms)) {
            std::ostringstream w;
            w << batch << ": left behind 5 s after its scenarios ended: descriptors " << fds.text() << " vs baseline "
              << baseline_.text() << " (+" << (uses_pipes() ? pooled_pipe_fds : 0) << " pooled pipe fds allowed)";
            if (d_.metrics()) w << ", spliced_connections_active " << active;
            if (uses_maps()) w << ", map entries sockhash " << entries[0] << " peers " << entries[1] << " budget " << entries[2];
            w << "; connections without an access log line: seeds " << seeds_of(unlogged);
            fail_batch(w.str());
        }

        // 4. Idle CPU: no traffic now, so a worker that uses CPU is spinning.
        const double cpu0 = it::cpu_seconds(d_.pid());
        std::this_thread::sleep_for(1s);
        const double cpu = it::cpu_seconds(d_.pid()) - cpu0;
        if (cpu >= (sanitized ? 0.1 : 0.05))
            fail_batch(batch + ": the daemon used " + std::to_string(static_cast<long>(cpu * 1000)) +
                       " ms of CPU in 1 s with no traffic (a spinning worker?); connections without an access log "
                       "line: seeds " + seeds_of(unlogged) + "; seeds of the batch: " + seeds_of(ran));
        return true;
    }

    // 5. Each scenario's own invariants, the counts, the failure reports.
    void report(std::vector<scenario_run*>& ran, bool counted) {
        const bool single = opt_.only_seed.has_value();
        for (auto* r : ran) {
            const access_entry* entry = r->log.empty() ? nullptr : &r->log.front();
            auto v = judge(r->sc, r->client, r->backend, entry);
            r->violations.insert(r->violations.begin(), v.begin(), v.end());
            if (counted) {
                ++scenarios_;
                polite_ += r->sc.polite();
                ++daemon_ends_[entry ? entry->end : r->client.connected ? "(no log line)" : "(not connected)"];
                ++client_ends_[to_string(r->client.end)];
                ++backend_ends_[r->backend.connected ? to_string(r->backend.end) : "(no connection)"];
            }
            if (r->violations.empty()) {
                if (single) print_run(*r, true);
                continue;
            }
            if (counted) {
                ++failed_;
                failed_seeds_.push_back(r->sc.seed);
            }
            if (single || described_ < described_failures) {
                print_run(*r, single || traced_ < traced_failures);
                ++described_;
                traced_ += !single;
            } else {
                std::cout << "FAILED seed " << r->sc.seed << " (" << tags(r->sc) << "): " << r->violations.front()
                          << (r->violations.size() > 1 ? " (+" + std::to_string(r->violations.size() - 1) + " more)" : "")
                          << std::endl;
            }
        }
    }

    const options& opt_;
    campaign_daemon& d_;
    std::vector<std::unique_ptr<backend_listener>>& listeners_;
    access_log_reader access_;
    it::fd_census baseline_;
    const clock::time_point start_ = clock::now();
    int batches_ = 0, described_ = 0, traced_ = 0;
    long scenarios_ = 0, failed_ = 0, deaths_ = 0, polite_ = 0;
    std::map<std::string, long> daemon_ends_, client_ends_, backend_ends_;  // access log end=; what the sides read
    std::vector<std::uint64_t> failed_seeds_;
    std::vector<std::string> failures_;  // batch-level violations, with the seeds they concern
};

}  // namespace

// ---------------------------------------------------------------------------------------------------------

TEST_CASE("randomized socket-level fault campaign") {
    const options opt = read_options();
    const bool single = opt.only_seed.has_value();
    no_metrics_run = !opt.metrics;
    std::cout << "[" << datapath() << "] chaos campaign: "
              << (single ? "seed " + std::to_string(*opt.only_seed) + " x" + std::to_string(opt.repeat)
                         : "seeds from " + std::to_string(opt.first_seed) +
                               (opt.scenarios > 0 ? ", " + std::to_string(opt.scenarios) + " scenarios" : "") +
                               (opt.seconds > 0 ? ", " + fixed(opt.seconds, 0) + " s budget" : ""))
              << ", " << opt.concurrency << " at a time, " << (opt.metrics ? "metrics on" : "NO metrics listener")
              << (sanitized ? ", sanitized build" : "") << std::endl;

    std::vector<std::unique_ptr<backend_listener>> listeners;
    std::vector<std::uint16_t> backend_ports;
    for (int i = 0; i < batch_routes; ++i) {
        listeners.push_back(std::make_unique<backend_listener>());
        backend_ports.push_back(listeners.back()->port());
    }
    try {
        the_daemon = std::make_unique<campaign_daemon>(opt.metrics, backend_ports);
    } catch (const std::exception& e) {
        FAIL("cannot start spliced: " << e.what());
    }
    auto& d = *the_daemon;
    std::cout << "  spliced pid " << d.pid() << ", config " << d.dir.file("spliced.yaml") << std::endl;
    if (uses_maps()) {
        auto census = it::count_map_entries(d.pid(), "sockhash");
        if (census.error == EPERM || census.error == EACCES) {
            std::cout << "SKIPPED: reading the daemon's BPF maps needs root (" << census.what << ")" << std::endl;
            the_daemon.reset();
            std::exit(77);
        }
        INFO(census.what << ": " << std::strerror(census.error));
        REQUIRE(census.error == 0);
        INFO("spliced holds no BPF map named 'sockhash' although the config says datapath: " << datapath());
        REQUIRE(census.maps >= 1);
    }

    campaign c(opt, d, listeners);
    std::uint64_t next_seed = single ? *opt.only_seed : opt.first_seed;
    const std::size_t wanted = opt.scenarios > 0 ? static_cast<std::size_t>(opt.scenarios) : 1'000'000'000;
    while (c.counted_scenarios() < wanted && !c.out_of_time() && c.can_go_on()) {
        std::vector<std::uint64_t> seeds;
        const std::size_t n = std::min<std::size_t>(wanted - c.counted_scenarios(), batch_routes);
        for (std::size_t i = 0; i < n; ++i) seeds.push_back(single ? *opt.only_seed : next_seed + i);
        auto result = c.run_batch(seeds, opt.concurrency, true);
        if (!single) next_seed += result.ran;  // the ones not run come first in the next batch
        if (result.daemon_died && !single && c.can_go_on()) c.find_killer(result.suspects);
    }
    std::cout << c.summary() << std::endl;

    // The daemon ends cleanly on SIGTERM.
    if (d.alive()) {
        const int status = d.process().stop(20s);
        INFO("spliced on SIGTERM: " << d.process().exit_description());
        CHECK(status == 0);
    }
    {
        std::ifstream log(d.log_path());
        std::size_t sanitizer_reports = 0;
        for (std::string line; std::getline(log, line);)
            sanitizer_reports += line.find("runtime error:") != std::string::npos ||
                                 line.find("ERROR: AddressSanitizer") != std::string::npos ||
                                 line.find("ERROR: LeakSanitizer") != std::string::npos;
        INFO("sanitizer reports in " << d.log_path());
        CHECK(sanitizer_reports == 0);
    }
    std::string failed_seeds;
    for (auto s : c.failed_seeds()) failed_seeds += " " + std::to_string(s);
    INFO("failed scenarios (replay one with " << replay_command(c.failed_seeds().empty() ? 0 : c.failed_seeds().front())
                                              << "):" << failed_seeds);
    CHECK(c.failed() == 0);
    std::string batch_failures;
    for (auto& f : c.batch_failures()) batch_failures += "\n" + f;
    INFO("failed batch checks:" << batch_failures);
    CHECK(c.batch_failures().empty());
    CHECK(c.counted_scenarios() > 0);
}

}  // namespace chaos

namespace it {

void after_case(const std::string& case_name, bool failed) {
    if (!chaos::the_daemon) return;
    if (failed) {
        chaos::the_daemon->dir.keep();
        print_log_tail(case_name, chaos::the_daemon->process().log_tail(60));
        std::cerr << "config, daemon log and access log kept in " << chaos::the_daemon->dir.path() << "\n";
    }
    chaos::the_daemon.reset();
}

bool after_suite(bool) { return true; }

}  // namespace it
