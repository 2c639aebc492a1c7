// Black-box test harness: the daemon process, its metrics and BPF maps, sockets, payloads, and backend servers.
#pragma once

#include "sha256.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <thread>
#include <utility>
#include <vector>

namespace it {

using clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// ---------------------------------------------------------------------------------------------------------
// Small utilities

// Owns one file descriptor.
class unique_fd {
public:
    unique_fd() = default;
    explicit unique_fd(int fd) : fd_(fd) {}
    unique_fd(unique_fd&& o) noexcept : fd_(o.release()) {}
    unique_fd& operator=(unique_fd&& o) noexcept {
        reset(o.release());
        return *this;
    }
    ~unique_fd() { reset(); }
    int get() const { return fd_; }
    int release() { return std::exchange(fd_, -1); }
    void reset(int fd = -1);
    explicit operator bool() const { return fd_ >= 0; }

private:
    int fd_ = -1;
};

// Polls `pred` every `step` until it holds or `budget` has passed; returns its last value.
bool run_until(const std::function<bool()>& pred, std::chrono::milliseconds budget,
               std::chrono::milliseconds step = 20ms);

// Seconds since `start`, as a double, for timing assertions.
double seconds_since(clock::time_point start);

// A TCP port on the loopback address of `family` that was free a moment ago (bind 0, read it, close).
std::uint16_t free_port(int family);

// A private directory under /tmp, removed with its files on destruction.
class temp_dir {
public:
    temp_dir();
    ~temp_dir();
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
    const std::string& path() const { return path_; }
    // Leaves the directory in place (for a failed run's logs).
    void keep() { keep_ = true; }
    std::string file(std::string_view name) const { return path_ + "/" + std::string(name); }

private:
    std::string path_;
    bool keep_ = false;
};

void write_file(const std::string& path, std::string_view content);

// The last `lines` lines of a text file (for failure reports).
std::string file_tail(const std::string& path, std::size_t lines);

// ---------------------------------------------------------------------------------------------------------
// Deterministic payloads

// An endless pseudo-random byte stream named by its seed; byte i is the same however the stream is cut.
class payload {
public:
    explicit payload(std::uint64_t seed) : seed_(seed) {}
    void fill(std::uint64_t offset, std::uint8_t* out, std::size_t len) const;
    std::vector<std::uint8_t> bytes(std::uint64_t offset, std::size_t len) const;
    // SHA-256 of the first `len` bytes.
    digest sha(std::uint64_t len) const;

private:
    std::uint64_t seed_;
};

// ---------------------------------------------------------------------------------------------------------
// Blocking sockets with timeouts

// Sets SO_RCVTIMEO and SO_SNDTIMEO (the latter also bounds connect()).
void set_io_timeout(int fd, std::chrono::milliseconds t);
void set_nonblocking(int fd, bool on);

// Connects to host:port (IPv4 or IPv6 literal); throws std::runtime_error with the reason on failure.
unique_fd connect_tcp(const std::string& host, std::uint16_t port, std::chrono::milliseconds io_timeout = 30s);
// The same, calling prepare(fd) on the new socket before connect() (options that must be set before the
// handshake or before the first byte can arrive: SO_RCVBUF, SO_OOBINLINE, ...).
unique_fd connect_tcp(const std::string& host, std::uint16_t port, std::chrono::milliseconds io_timeout,
                      const std::function<void(int)>& prepare);

// Sends everything (MSG_NOSIGNAL); false on error or timeout, errno kept.
bool send_all(int fd, const void* data, std::size_t len);
// Reads exactly len bytes unless EOF comes first; returns the count read, or -1 on error/timeout (errno kept).
long recv_exact(int fd, void* data, std::size_t len);

// How a socket ended, as seen by a reader.
enum class end_kind { eof, reset, timeout, error, data };
const char* to_string(end_kind e);

// Waits (reading and discarding, poll-bounded by `budget`) until the peer closes: EOF or RST.
// Returns `data` if bytes arrived and `stop_on_data` is set.
end_kind wait_closed(int fd, std::chrono::milliseconds budget, bool stop_on_data = false);

// Sends `len` bytes of `p` and checks that the same bytes come back, interleaving send and receive with
// poll() on a non-blocking socket. With half_close, shuts down writing once the last byte is sent and
// may_half_close (if given; polled every 10 ms) allows it, then requires EOF after the full echo. Returns an
// empty string on success, else what went wrong.
std::string echo_check(int fd, const payload& p, std::size_t len, clock::time_point deadline, bool half_close,
                       const std::function<bool()>& may_half_close = nullptr);

// ---------------------------------------------------------------------------------------------------------
// In-process backends

// Threads serving accepted connections, one each; finished ones are reaped as new ones start.
class conn_threads {
public:
    ~conn_threads() { stop(); }
    // Runs fn(fd) on its own thread; the fd is closed when fn returns.
    void spawn(int fd, std::function<void(int)> fn);
    // Shuts down every live connection (waking its thread) and joins them all.
    void stop();

private:
    struct entry {
        std::thread thread;
        std::shared_ptr<std::atomic<bool>> done;
    };
    void reap_locked();
    std::mutex mutex_;
    std::list<entry> threads_;
    std::vector<int> live_fds_;
    bool stopping_ = false;
};

enum class backend_kind {
    echo,    // echoes until EOF, then half-closes and closes
    sink,    // reads until EOF, replies the 32-byte SHA-256 of what it read, closes
    source,  // reads an 8-byte big-endian N, sends N bytes of source_payload(N), half-closes, then reads a
             // 32-byte digest until EOF and records whether it matches what it sent
    banner,  // sends banner_text on accept, then echoes
    reset,   // reads 64 KiB, then closes with SO_LINGER {1,0} (RST)
    slow_sink,  // a sink that reads about slow_sink_rate bytes/s (128 KiB receive buffer) while throttled,
                // then at full speed
};

inline constexpr std::string_view banner_text = "220 spliced-test ready\r\n";
inline constexpr std::size_t reset_after_bytes = 64 * 1024;
inline constexpr std::size_t slow_sink_rate = 1000 * 1000;
payload source_payload(std::uint64_t n);

// A backend of one kind on 127.0.0.1 (ephemeral port): an accept thread plus a thread per connection.
class backend_server {
public:
    explicit backend_server(backend_kind kind);
    ~backend_server() { stop(); }
    backend_server(const backend_server&) = delete;
    backend_server& operator=(const backend_server&) = delete;
    void stop();
    std::uint16_t port() const { return port_; }
    std::string address() const;
    std::uint64_t accepted() const { return accepted_; }
    std::uint64_t source_matched() const { return source_matched_; }
    std::uint64_t source_mismatched() const { return source_mismatched_; }
    // Bytes received by all connections so far (echo, banner, sink, reset, slow_sink).
    std::uint64_t bytes_received() const { return bytes_received_; }
    // slow_sink: reads at full speed from now on (throttled again by throttle()).
    void unthrottle() { throttled_ = false; }
    void throttle() { throttled_ = true; }

private:
    void accept_loop();
    void serve(int fd);

    backend_kind kind_;
    unique_fd listen_fd_;
    std::uint16_t port_ = 0;
    std::atomic<bool> stopping_{false};
    std::atomic<std::uint64_t> accepted_{0}, source_matched_{0}, source_mismatched_{0}, bytes_received_{0};
    std::atomic<bool> throttled_{true};
    conn_threads conns_;
    std::thread acceptor_;
};

// A listener whose accept queue is kept full (listen backlog 0 plus one dummy client nobody accepts), so the
// kernel drops every further SYN: connects to it hang. release() accepts the dummy and echoes everything after
// (a retransmitted SYN then gets through, ~1 s after the first); hold() fills the queue again.
class held_listener {
public:
    held_listener();
    ~held_listener() { stop(); }
    held_listener(const held_listener&) = delete;
    held_listener& operator=(const held_listener&) = delete;
    void hold();
    void release();
    void stop();
    std::uint16_t port() const { return port_; }
    std::string address() const;
    // Echo connections accepted since start (dummies not counted).
    std::uint64_t accepted() const { return accepted_; }

private:
    void accept_loop();
    void accept_pending_locked();

    unique_fd listen_fd_;
    unique_fd dummy_;
    std::uint16_t port_ = 0;
    std::mutex mutex_;
    bool accepting_ = false;
    std::atomic<bool> stopping_{false};
    std::atomic<std::uint64_t> accepted_{0};
    conn_threads conns_;
    std::thread acceptor_;
};

// Serves one echo connection: echoes until EOF, then half-closes. Adds what it received to *counter if given.
void echo_connection(int fd, std::atomic<std::uint64_t>* counter = nullptr);

// ---------------------------------------------------------------------------------------------------------
// The daemon under test

// What the daemon process gets besides its arguments.
// A test daemon's config: the global keys, then its routes. The log level is SPLICED_TEST_LOG_LEVEL's when set.
struct daemon_config {
    struct route {
        std::string name;
        std::vector<std::string> listen;  // "127.0.0.1:1234", "[::1]:1234"
        std::string timeouts;             // the mapping's inside: "connect: 2s, idle: 1h"
        std::string extra;                // more route keys, each line indented by 4 spaces
        std::vector<std::string> backends;
    };
    std::string datapath;
    int workers = 2;
    std::string drain_timeout = "5s";
    std::optional<std::uint16_t> metrics_port;  // none: no metrics section
    std::string log_level = "info";
    std::string access_log = "stdout";
    std::optional<std::uint32_t> sockmap_capacity;
    std::vector<route> routes;
    std::string yaml() const;
};

struct process_options {
    unsigned long nofile = 0;      // RLIMIT_NOFILE (soft and hard); 0: the test process's own
    std::vector<std::string> env;  // "NAME=value", replacing the test process's NAME
    // Called every 0.2 ms while the daemon starts (until READY=1), with its pid: e.g. to signal it early.
    std::function<void(pid_t)> while_starting = {};
};

// spliced running in the foreground, stdout+stderr to a log file, readiness via NOTIFY_SOCKET.
class daemon_process {
public:
    // Starts `binary --config config_path` and waits for READY=1 (throws std::runtime_error with the log tail
    // if it exits first or the budget passes).
    daemon_process(const std::string& binary, const std::string& config_path, const std::string& log_path,
                   const std::string& notify_path, std::chrono::milliseconds ready_budget = 15s,
                   const process_options& options = {});
    ~daemon_process();
    daemon_process(const daemon_process&) = delete;
    daemon_process& operator=(const daemon_process&) = delete;

    pid_t pid() const { return pid_; }
    const std::string& log_path() const { return log_path_; }
    std::string log_tail(std::size_t lines = 40) const { return file_tail(log_path_, lines); }
    // True while the process has not exited (reaps it if it has).
    bool running();
    // How it ended, once it has ("exit status N" / "killed by signal N").
    std::string exit_description() const;
    // SIGTERM, then waits up to `budget` for the exit; returns the exit status, 128+signal if a signal ended
    // it, or -1 if it had to be SIGKILLed after the budget.
    int stop(std::chrono::milliseconds budget = 20s);
    // Sends `sig` (no-op once it has exited).
    void send_signal(int sig);
    // Waits up to `budget` for the exit without signalling; returns the exit status (128+signal if a signal ended
    // it), or -1 if it is still running.
    int wait_exit(std::chrono::milliseconds budget);
    // Every sd_notify line received so far ("READY=1", "STOPPING=1", ...).
    std::vector<std::string> notifications();

private:
    bool reap(bool block);
    int exit_code() const;
    void read_notifications();
    unique_fd notify_;  // kept open like systemd's, so later notifications do not fail
    std::vector<std::string> notified_;
    std::mutex notify_mutex_;
    std::thread notify_reader_;  // drains the socket once the daemon is ready
    std::atomic<bool> stop_reading_{false};
    pid_t pid_ = -1;
    bool exited_ = false;
    int wait_status_ = 0;
    std::string log_path_;
};

// ---------------------------------------------------------------------------------------------------------
// Metrics

struct sample {
    std::string name;
    std::map<std::string, std::string> labels;
    double value = 0;
};

// One scrape of a Prometheus text exposition.
class metrics_snapshot {
public:
    // Throws std::runtime_error on a malformed sample line.
    static metrics_snapshot parse(std::string_view text);
    // Sum over samples named `name` whose labels include every pair of `match`; 0 if none.
    double sum(std::string_view name, const std::map<std::string, std::string>& match = {}) const;
    bool has(std::string_view name, const std::map<std::string, std::string>& match = {}) const;
    std::vector<sample> samples;
};

// HTTP/1.0 GET; returns the body of a 200 response, throws otherwise.
std::string http_get(const std::string& host, std::uint16_t port, const std::string& path);
metrics_snapshot scrape(const std::string& host, std::uint16_t port);

// ---------------------------------------------------------------------------------------------------------
// BPF maps held by a process

// A route's spliced_connections_total by data path.
struct path_counts {
    double sockmap = 0, splice = 0, copy = 0;
    double total() const { return sockmap + splice + copy; }
    double on(const std::string& path) const {
        return path == "sockmap" ? sockmap : path == "splice" ? splice : path == "copy" ? copy : -1;
    }
};
path_counts connections_of(const metrics_snapshot& m, const std::string& route);
// "sockmap +1, splice +0, copy +0"
std::string describe(const path_counts& before, const path_counts& after);

struct map_census {
    int maps = 0;               // distinct maps with that name held open by the process
    std::uint64_t entries = 0;  // keys in all of them
    int error = 0;              // errno of the first failure (EPERM: not allowed), 0 if none
    std::string what;           // which step failed
};

// Finds every BPF map named `name` that `pid` holds (via /proc/pid/fdinfo map_id lines) and counts its keys.
map_census count_map_entries(pid_t pid, std::string_view name);

// ---------------------------------------------------------------------------------------------------------
// What a process holds

// Descriptors open in a process, by kind (from the /proc/PID/fd links).
struct fd_census {
    int sockets = 0;
    int pipes = 0;
    int other = 0;  // files, eventfd, epoll, BPF maps and programs, ...
    std::map<std::string, int> other_kinds;  // link target ("anon_inode:[eventfd]", a path) -> count
    int total() const { return sockets + pipes + other; }
    std::string text() const;  // "N (S sockets, P pipes, O other)"
    std::string others() const;  // "anon_inode:[eventfd] x3, /dev/null x1, ..."
};
fd_census count_fds(pid_t pid);

// Resident set size (VmRSS) in KiB, -1 if unreadable.
long rss_kib(pid_t pid);
// CPU seconds (user + system) the process has used so far (/proc/PID/stat fields 14 and 15); -1 if unreadable.
double cpu_seconds(pid_t pid);
// Voluntary context switches of all the process's threads so far (how often they slept and woke).
long context_switches(pid_t pid);
// Lines of a text file that contain `needle`.
std::size_t count_lines(const std::string& path, std::string_view needle);

// The soft RLIMIT_NOFILE of a process (from /proc/PID/limits), -1 if unreadable.
long fd_limit(pid_t pid);

}  // namespace it
