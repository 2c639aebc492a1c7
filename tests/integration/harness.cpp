// Black-box test harness: the daemon process, its metrics and BPF maps, sockets, payloads, and backend servers.
#include "harness.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <dirent.h>
#include <fcntl.h>
#include <filesystem>
#include <limits>
#include <fstream>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <set>
#include <sstream>
#include <stdexcept>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace it {

namespace {

std::string errno_text(int e) { return std::string(std::strerror(e)) + " (errno " + std::to_string(e) + ")"; }

[[noreturn]] void throw_errno(const std::string& what) {
    int e = errno;
    throw std::runtime_error(what + ": " + errno_text(e));
}

// Fills a sockaddr for an IPv4 or IPv6 literal; returns its length, 0 if `host` is neither.
socklen_t make_addr(const std::string& host, std::uint16_t port, sockaddr_storage& ss) {
    std::memset(&ss, 0, sizeof ss);
    auto* in4 = reinterpret_cast<sockaddr_in*>(&ss);
    if (inet_pton(AF_INET, host.c_str(), &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(port);
        return sizeof(sockaddr_in);
    }
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&ss);
    if (inet_pton(AF_INET6, host.c_str(), &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        return sizeof(sockaddr_in6);
    }
    return 0;
}

std::uint16_t local_port(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) throw_errno("getsockname");
    if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
    return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
}

// A listening socket on 127.0.0.1, ephemeral port.
unique_fd listen_loopback(int backlog, bool nonblocking) {
    unique_fd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0));
    if (!fd) throw_errno("socket");
    sockaddr_storage ss;
    socklen_t len = make_addr("127.0.0.1", 0, ss);
    if (bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) throw_errno("bind 127.0.0.1:0");
    if (listen(fd.get(), backlog) != 0) throw_errno("listen");
    return fd;
}

std::uint64_t mix64(std::uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

int milliseconds_until(clock::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
    return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, 1000000));
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------

void unique_fd::reset(int fd) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
}

bool run_until(const std::function<bool()>& pred, std::chrono::milliseconds budget, std::chrono::milliseconds step) {
    const auto deadline = clock::now() + budget;
    for (;;) {
        if (pred()) return true;
        if (clock::now() >= deadline) return false;
        std::this_thread::sleep_for(step);
    }
}

double seconds_since(clock::time_point start) {
    return std::chrono::duration<double>(clock::now() - start).count();
}

std::uint16_t free_port(int family) {
    unique_fd fd(socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) throw_errno("socket");
    sockaddr_storage ss;
    socklen_t len = make_addr(family == AF_INET ? "127.0.0.1" : "::1", 0, ss);
    if (bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) throw_errno("bind port 0");
    return local_port(fd.get());
}

temp_dir::temp_dir() {
    char tmpl[] = "/tmp/spliced-it.XXXXXX";
    if (!mkdtemp(tmpl)) throw_errno("mkdtemp");
    path_ = tmpl;
}

temp_dir::~temp_dir() {
    if (keep_ || std::getenv("SPLICED_TEST_KEEP_TMP")) return;
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
}

void write_file(const std::string& path, std::string_view content) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << content;
    if (!out) throw std::runtime_error("cannot write " + path);
}

std::string file_tail(const std::string& path, std::size_t lines) {
    std::ifstream in(path);
    if (!in) return "(cannot read " + path + ")\n";
    std::deque<std::string> last;
    for (std::string line; std::getline(in, line);) {
        last.push_back(std::move(line));
        if (last.size() > lines) last.pop_front();
    }
    std::string out;
    for (auto& l : last) out += l + "\n";
    return out;
}

// ---------------------------------------------------------------------------------------------------------

void payload::fill(std::uint64_t offset, std::uint8_t* out, std::size_t len) const {
    std::uint64_t block = offset / 8;
    unsigned skip = offset % 8;
    while (len) {
        std::uint64_t w = mix64(seed_ + block * 0x9e3779b97f4a7c15ULL);
        for (unsigned j = skip; j < 8 && len; ++j, --len) *out++ = static_cast<std::uint8_t>(w >> (8 * j));
        skip = 0;
        ++block;
    }
}

std::vector<std::uint8_t> payload::bytes(std::uint64_t offset, std::size_t len) const {
    std::vector<std::uint8_t> v(len);
    fill(offset, v.data(), len);
    return v;
}

digest payload::sha(std::uint64_t len) const {
    sha256 h;
    std::vector<std::uint8_t> chunk(1 << 20);
    for (std::uint64_t off = 0; off < len;) {
        std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk.size(), len - off));
        fill(off, chunk.data(), n);
        h.update(chunk.data(), n);
        off += n;
    }
    return h.finish();
}

// ---------------------------------------------------------------------------------------------------------

void set_io_timeout(int fd, std::chrono::milliseconds t) {
    timeval tv{};
    tv.tv_sec = t.count() / 1000;
    tv.tv_usec = (t.count() % 1000) * 1000;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

void set_nonblocking(int fd, bool on) {
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK);
}

unique_fd connect_tcp(const std::string& host, std::uint16_t port, std::chrono::milliseconds io_timeout) {
    return connect_tcp(host, port, io_timeout, nullptr);
}

unique_fd connect_tcp(const std::string& host, std::uint16_t port, std::chrono::milliseconds io_timeout,
                      const std::function<void(int)>& prepare) {
    sockaddr_storage ss;
    socklen_t len = make_addr(host, port, ss);
    if (!len) throw std::runtime_error("not an IP literal: " + host);
    unique_fd fd(socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) throw_errno("socket");
    set_io_timeout(fd.get(), io_timeout);
    if (prepare) prepare(fd.get());
    int r;
    do r = connect(fd.get(), reinterpret_cast<sockaddr*>(&ss), len);
    while (r != 0 && errno == EINTR);
    if (r != 0) throw_errno("connect " + host + ":" + std::to_string(port));
    return fd;
}

bool send_all(int fd, const void* data, std::size_t len) {
    auto p = static_cast<const char*>(data);
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        p += n;
        len -= static_cast<std::size_t>(n);
    }
    return true;
}

long recv_exact(int fd, void* data, std::size_t len) {
    auto p = static_cast<char*>(data);
    std::size_t got = 0;
    while (got < len) {
        ssize_t n = recv(fd, p + got, len - got, 0);
        if (n == 0) break;
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        got += static_cast<std::size_t>(n);
    }
    return static_cast<long>(got);
}

const char* to_string(end_kind e) {
    switch (e) {
    case end_kind::eof: return "EOF";
    case end_kind::reset: return "reset";
    case end_kind::timeout: return "timeout (still open)";
    case end_kind::error: return "error";
    case end_kind::data: return "data";
    }
    return "?";
}

end_kind wait_closed(int fd, std::chrono::milliseconds budget, bool stop_on_data) {
    const auto deadline = clock::now() + budget;
    char buf[16384];
    for (;;) {
        pollfd p{fd, POLLIN | POLLRDHUP, 0};
        int r = poll(&p, 1, milliseconds_until(deadline));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return end_kind::error;
        if (r == 0) return end_kind::timeout;
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0) return end_kind::eof;
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                if (clock::now() >= deadline) return end_kind::timeout;
                continue;
            }
            return errno == ECONNRESET ? end_kind::reset : end_kind::error;
        }
        if (stop_on_data) return end_kind::data;
    }
}

std::string echo_check(int fd, const payload& p, std::size_t len, clock::time_point deadline, bool half_close,
                       const std::function<bool()>& may_half_close) {
    set_nonblocking(fd, true);
    struct restore {
        int fd;
        ~restore() { set_nonblocking(fd, false); }
    } restore_blocking{fd};

    constexpr std::size_t chunk = 64 * 1024;
    std::vector<std::uint8_t> out(chunk), in(chunk), expected(chunk);
    std::size_t out_off = 0, out_len = 0;  // current outgoing chunk: bytes [sent, sent + out_len - out_off)
    std::size_t sent = 0, received = 0;
    bool shut = false, eof = false, gated = false;

    for (;;) {
        if (sent == len && half_close && !shut) {
            gated = may_half_close && !may_half_close();
            if (!gated) {
                if (shutdown(fd, SHUT_WR) != 0) return "shutdown(SHUT_WR): " + errno_text(errno);
                shut = true;
            }
        }
        if (sent == len && received == len && (!half_close || eof)) return "";
        if (eof) return "EOF after " + std::to_string(received) + " of " + std::to_string(len) + " echoed bytes";

        int left = milliseconds_until(deadline);
        if (left == 0)
            return "deadline passed: sent " + std::to_string(sent) + ", echoed " + std::to_string(received) +
                   " of " + std::to_string(len) + (gated ? " (still waiting for leave to half-close)" : "");
        if (gated) left = std::min(left, 10);  // look at the gate again soon
        pollfd pfd{fd, POLLIN, 0};
        if (sent < len) pfd.events |= POLLOUT;
        int r = poll(&pfd, 1, left);
        if (r < 0) {
            if (errno == EINTR) continue;
            return "poll: " + errno_text(errno);
        }
        if (r == 0) continue;
        if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = recv(fd, in.data(), in.size(), 0);
            if (n == 0) {
                eof = true;
            } else if (n < 0) {
                if (errno != EAGAIN && errno != EINTR)
                    return "recv after " + std::to_string(received) + " echoed bytes: " + errno_text(errno);
            } else {
                auto got = static_cast<std::size_t>(n);
                if (received + got > len) return "more bytes echoed than sent";
                p.fill(received, expected.data(), got);
                auto mismatch = std::mismatch(in.begin(), in.begin() + n, expected.begin());
                if (mismatch.first != in.begin() + n)
                    return "echoed byte differs at offset " +
                           std::to_string(received + static_cast<std::size_t>(mismatch.first - in.begin()));
                received += got;
            }
        }
        if ((pfd.revents & POLLOUT) && sent < len) {
            if (out_off == out_len) {
                out_len = std::min(chunk, len - sent);
                out_off = 0;
                p.fill(sent, out.data(), out_len);
            }
            ssize_t n = send(fd, out.data() + out_off, out_len - out_off, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno != EAGAIN && errno != EINTR)
                    return "send after " + std::to_string(sent) + " bytes: " + errno_text(errno);
            } else {
                out_off += static_cast<std::size_t>(n);
                sent += static_cast<std::size_t>(n);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------

void conn_threads::spawn(int fd, std::function<void(int)> fn) {
    std::lock_guard lock(mutex_);
    if (stopping_) {
        ::close(fd);
        return;
    }
    reap_locked();
    live_fds_.push_back(fd);
    auto done = std::make_shared<std::atomic<bool>>(false);
    threads_.push_back({std::thread([this, fd, fn = std::move(fn), done] {
                            fn(fd);
                            {
                                std::lock_guard lock(mutex_);
                                live_fds_.erase(std::find(live_fds_.begin(), live_fds_.end(), fd));
                                ::close(fd);
                            }
                            done->store(true);
                        }),
                        done});
}

void conn_threads::reap_locked() {
    for (auto i = threads_.begin(); i != threads_.end();) {
        if (i->done->load()) {
            i->thread.join();
            i = threads_.erase(i);
        } else {
            ++i;
        }
    }
}

void conn_threads::stop() {
    std::list<entry> all;
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
        for (int fd : live_fds_) shutdown(fd, SHUT_RDWR);
        all.swap(threads_);
    }
    for (auto& e : all) e.thread.join();
}

void echo_connection(int fd, std::atomic<std::uint64_t>* counter) {
    std::vector<char> buf(64 * 1024);
    for (;;) {
        ssize_t n = recv(fd, buf.data(), buf.size(), 0);
        if (n == 0) {
            shutdown(fd, SHUT_WR);
            return;
        }
        if (n < 0) {
            if (errno == EINTR) continue;
            return;
        }
        if (counter) *counter += static_cast<std::uint64_t>(n);
        if (!send_all(fd, buf.data(), static_cast<std::size_t>(n))) return;
    }
}

payload source_payload(std::uint64_t n) { return payload(0x50a3ce5eed000000ULL ^ n); }

backend_server::backend_server(backend_kind kind) : kind_(kind) {
    listen_fd_ = listen_loopback(SOMAXCONN, false);
    if (kind == backend_kind::slow_sink) {
        // Inherited by accepted sockets: what the slow reader holds stays small and known.
        int rcvbuf = 64 * 1024;  // the kernel doubles it
        setsockopt(listen_fd_.get(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    }
    port_ = local_port(listen_fd_.get());
    acceptor_ = std::thread([this] { accept_loop(); });
}

std::string backend_server::address() const { return "127.0.0.1:" + std::to_string(port_); }

void backend_server::stop() {
    if (stopping_.exchange(true)) return;
    shutdown(listen_fd_.get(), SHUT_RDWR);  // wakes accept()
    if (acceptor_.joinable()) acceptor_.join();
    conns_.stop();
    listen_fd_.reset();
}

void backend_server::accept_loop() {
    while (!stopping_) {
        int c = accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) {
            if (stopping_) return;
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE) {
                std::this_thread::sleep_for(10ms);
                continue;
            }
            return;
        }
        ++accepted_;
        set_io_timeout(c, 60s);
        conns_.spawn(c, [this](int fd) { serve(fd); });
    }
}

void backend_server::serve(int fd) {
    switch (kind_) {
    case backend_kind::echo: echo_connection(fd, &bytes_received_); return;
    case backend_kind::banner:
        if (send_all(fd, banner_text.data(), banner_text.size())) echo_connection(fd, &bytes_received_);
        return;
    case backend_kind::sink:
    case backend_kind::slow_sink: {
        sha256 h;
        std::vector<char> buf(256 * 1024);
        for (;;) {
            const bool slow = kind_ == backend_kind::slow_sink && throttled_;
            if (slow) std::this_thread::sleep_for(10ms);
            ssize_t n = recv(fd, buf.data(), slow ? slow_sink_rate / 100 : buf.size(), 0);
            if (n == 0) break;
            if (n < 0) {
                if (errno == EINTR) continue;
                return;
            }
            h.update(buf.data(), static_cast<std::size_t>(n));
            bytes_received_ += static_cast<std::uint64_t>(n);
        }
        auto d = h.finish();
        send_all(fd, d.data(), d.size());
        return;
    }
    case backend_kind::source: {
        std::uint8_t len_be[8];
        if (recv_exact(fd, len_be, 8) != 8) return;
        std::uint64_t n = 0;
        for (auto b : len_be) n = n << 8 | b;
        auto p = source_payload(n);
        sha256 h;
        std::vector<std::uint8_t> buf(256 * 1024);
        for (std::uint64_t off = 0; off < n;) {
            auto k = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), n - off));
            p.fill(off, buf.data(), k);
            h.update(buf.data(), k);
            if (!send_all(fd, buf.data(), k)) return;
            off += k;
        }
        shutdown(fd, SHUT_WR);
        auto sent_digest = h.finish();
        std::vector<std::uint8_t> reply;
        std::uint8_t tmp[64];
        for (;;) {
            ssize_t k = recv(fd, tmp, sizeof tmp, 0);
            if (k == 0) break;
            if (k < 0) {
                if (errno == EINTR) continue;
                ++source_mismatched_;
                return;
            }
            reply.insert(reply.end(), tmp, tmp + k);
            if (reply.size() > 64) break;
        }
        if (reply.size() == 32 && std::equal(reply.begin(), reply.end(), sent_digest.begin()))
            ++source_matched_;
        else
            ++source_mismatched_;
        return;
    }
    case backend_kind::reset: {
        std::vector<char> buf(reset_after_bytes);
        recv_exact(fd, buf.data(), buf.size());
        linger l{1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);  // close() now sends RST
        return;
    }
    }
}

// ---------------------------------------------------------------------------------------------------------

held_listener::held_listener() {
    listen_fd_ = listen_loopback(0, true);
    port_ = local_port(listen_fd_.get());
    acceptor_ = std::thread([this] { accept_loop(); });
    hold();
}

std::string held_listener::address() const { return "127.0.0.1:" + std::to_string(port_); }

void held_listener::accept_pending_locked() {
    for (;;) {
        int c = accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC);  // accepted sockets are blocking
        if (c < 0) return;
        ++accepted_;
        set_io_timeout(c, 60s);
        conns_.spawn(c, [](int fd) { echo_connection(fd); });
    }
}

void held_listener::accept_loop() {
    while (!stopping_) {
        bool accepting;
        {
            std::lock_guard lock(mutex_);
            accepting = accepting_;
            if (accepting) accept_pending_locked();
        }
        if (!accepting) {
            std::this_thread::sleep_for(10ms);  // the held queue stays readable: do not spin on poll()
            continue;
        }
        pollfd p{listen_fd_.get(), POLLIN, 0};
        poll(&p, 1, 50);
    }
}

void held_listener::hold() {
    std::lock_guard lock(mutex_);
    accept_pending_locked();
    accepting_ = false;
    dummy_ = connect_tcp("127.0.0.1", port_, 2s);
    // The dummy is queued once the listener has its final ACK; from then on the queue is full.
    pollfd p{listen_fd_.get(), POLLIN, 0};
    if (poll(&p, 1, 2000) != 1) throw std::runtime_error("held_listener: dummy connection never queued");
}

void held_listener::release() {
    std::lock_guard lock(mutex_);
    pollfd p{listen_fd_.get(), POLLIN, 0};
    if (poll(&p, 1, 2000) == 1) {
        int c = accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC);
        if (c >= 0) ::close(c);
    }
    dummy_.reset();
    accepting_ = true;
}

void held_listener::stop() {
    if (stopping_.exchange(true)) return;
    if (acceptor_.joinable()) acceptor_.join();
    conns_.stop();
    dummy_.reset();
    listen_fd_.reset();
}

// ---------------------------------------------------------------------------------------------------------

daemon_process::daemon_process(const std::string& binary, const std::string& config_path,
                               const std::string& log_path, const std::string& notify_path,
                               std::chrono::milliseconds ready_budget, const process_options& options)
    : log_path_(log_path) {
    // Everything the child needs is prepared before fork(): the test process has threads.
    std::vector<std::string> args = {binary, "--config", config_path};
    std::vector<std::string> envs;
    auto replaced = [&](const char* e) {
        for (const auto& mine : options.env)
            if (auto eq = mine.find('='); eq != std::string::npos && std::strncmp(e, mine.c_str(), eq + 1) == 0)
                return true;
        return std::strncmp(e, "NOTIFY_SOCKET=", 14) == 0;
    };
    for (char** e = environ; *e; ++e)
        if (!replaced(*e)) envs.emplace_back(*e);
    envs.insert(envs.end(), options.env.begin(), options.env.end());
    envs.push_back("NOTIFY_SOCKET=" + notify_path);
    const rlim_t nofile = options.nofile;
    std::vector<char*> argv, envp;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : envs) envp.push_back(e.data());
    envp.push_back(nullptr);

    notify_.reset(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    const int notify = notify_.get();
    if (notify < 0) throw_errno("socket(AF_UNIX)");
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    if (notify_path.size() >= sizeof sun.sun_path) throw std::runtime_error("notify path too long");
    std::memcpy(sun.sun_path, notify_path.c_str(), notify_path.size() + 1);
    ::unlink(notify_path.c_str());
    if (bind(notify, reinterpret_cast<sockaddr*>(&sun), sizeof sun) != 0) throw_errno("bind " + notify_path);

    unique_fd log(::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!log) throw_errno("open " + log_path);
    unique_fd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));

    const pid_t parent = getpid();
    pid_ = fork();
    if (pid_ < 0) throw_errno("fork");
    if (pid_ == 0) {
        // Child: async-signal-safe calls only.
        prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the test run
        if (getppid() != parent) _exit(126);
        dup2(devnull.get(), 0);
        dup2(log.get(), 1);
        dup2(log.get(), 2);
        close_range(3, ~0U, 0);
        if (nofile) {
            rlimit limit{nofile, nofile};
            if (setrlimit(RLIMIT_NOFILE, &limit) != 0) _exit(125);  // "exit status 125" in the report
        }
        signal(SIGPIPE, SIG_DFL);  // the test process ignores it; exec would keep that
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, nullptr);
        execve(argv[0], argv.data(), envp.data());
        _exit(127);
    }

    const auto deadline = clock::now() + ready_budget;
    for (;;) {
        if (reap(false)) {
            throw std::runtime_error("spliced exited before READY=1 (" + exit_description() + "); log " + log_path_ +
                                     ":\n" + log_tail());
        }
        if (clock::now() >= deadline) {
            kill(pid_, SIGKILL);
            reap(true);
            throw std::runtime_error("spliced sent no READY=1 within " + std::to_string(ready_budget.count()) +
                                     " ms; log " + log_path_ + ":\n" + log_tail());
        }
        if (options.while_starting) options.while_starting(pid_);
        pollfd p{notify, POLLIN, 0};
        if (options.while_starting) std::this_thread::sleep_for(std::chrono::microseconds(200));
        if (poll(&p, 1, options.while_starting ? 0 : 100) == 1) {
            read_notifications();
            if (std::find(notified_.begin(), notified_.end(), "READY=1") != notified_.end()) {
                // Drained from now on, as systemd does: the socket queues only a few datagrams
                // (net.unix.max_dgram_qlen), and a full queue blocks the daemon's sd_notify().
                notify_reader_ = std::thread([this] {
                    while (!stop_reading_.load()) {
                        pollfd q{notify_.get(), POLLIN, 0};
                        if (poll(&q, 1, 10) == 1) read_notifications();
                    }
                });
                return;
            }
        }
    }
}

void daemon_process::read_notifications() {
    std::lock_guard lock(notify_mutex_);
    char buf[4096];
    for (;;) {
        ssize_t n = recv(notify_.get(), buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        std::istringstream lines(std::string(buf, static_cast<std::size_t>(n)));
        for (std::string line; std::getline(lines, line);)
            if (!line.empty()) notified_.push_back(line);
    }
}

std::vector<std::string> daemon_process::notifications() {
    read_notifications();
    std::lock_guard lock(notify_mutex_);
    return notified_;
}

daemon_process::~daemon_process() {
    stop_reading_ = true;
    if (notify_reader_.joinable()) notify_reader_.join();
    if (pid_ > 0 && !exited_) {
        kill(pid_, SIGKILL);
        reap(true);
    }
}

bool daemon_process::reap(bool block) {
    if (exited_) return true;
    int st = 0;
    pid_t r;
    do r = waitpid(pid_, &st, block ? 0 : WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == pid_) {
        exited_ = true;
        wait_status_ = st;
    }
    return exited_;
}

bool daemon_process::running() { return !reap(false); }

std::string daemon_process::exit_description() const {
    if (!exited_) return "still running";
    if (WIFEXITED(wait_status_)) return "exit status " + std::to_string(WEXITSTATUS(wait_status_));
    if (WIFSIGNALED(wait_status_)) return "killed by signal " + std::to_string(WTERMSIG(wait_status_));
    return "wait status " + std::to_string(wait_status_);
}

int daemon_process::stop(std::chrono::milliseconds budget) {
    if (!exited_) {
        kill(pid_, SIGTERM);
        if (!run_until([&] { return reap(false); }, budget, 20ms)) {
            kill(pid_, SIGKILL);
            reap(true);
            return -1;
        }
    }
    return exit_code();
}

int daemon_process::exit_code() const {
    if (WIFEXITED(wait_status_)) return WEXITSTATUS(wait_status_);
    if (WIFSIGNALED(wait_status_)) return 128 + WTERMSIG(wait_status_);
    return -1;
}

void daemon_process::send_signal(int sig) {
    if (!reap(false)) kill(pid_, sig);
}

int daemon_process::wait_exit(std::chrono::milliseconds budget) {
    if (!run_until([&] { return reap(false); }, budget, 5ms)) return -1;
    return exit_code();
}

// ---------------------------------------------------------------------------------------------------------

metrics_snapshot metrics_snapshot::parse(std::string_view text) {
    metrics_snapshot snap;
    std::size_t line_no = 0;
    while (!text.empty()) {
        auto nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
        ++line_no;
        while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t'))
            line.remove_suffix(1);
        while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
        if (line.empty() || line.front() == '#') continue;

        auto bad = [&](const char* why) {
            return std::runtime_error("metrics line " + std::to_string(line_no) + ": " + why + ": " +
                                      std::string(line));
        };
        sample s;
        std::size_t i = 0;
        while (i < line.size() && line[i] != '{' && line[i] != ' ' && line[i] != '\t') ++i;
        s.name = std::string(line.substr(0, i));
        if (s.name.empty()) throw bad("no metric name");
        if (i < line.size() && line[i] == '{') {
            ++i;
            for (;;) {
                while (i < line.size() && (line[i] == ' ' || line[i] == ',')) ++i;
                if (i >= line.size()) throw bad("unterminated label set");
                if (line[i] == '}') {
                    ++i;
                    break;
                }
                std::size_t eq = line.find('=', i);
                if (eq == std::string_view::npos) throw bad("label without '='");
                std::string key(line.substr(i, eq - i));
                while (!key.empty() && key.back() == ' ') key.pop_back();
                i = eq + 1;
                while (i < line.size() && line[i] == ' ') ++i;
                if (i >= line.size() || line[i] != '"') throw bad("label value not quoted");
                ++i;
                std::string value;
                for (;; ++i) {
                    if (i >= line.size()) throw bad("unterminated label value");
                    char c = line[i];
                    if (c == '"') break;
                    if (c == '\\' && i + 1 < line.size()) {
                        char e = line[++i];
                        value += e == 'n' ? '\n' : e;
                    } else {
                        value += c;
                    }
                }
                ++i;
                s.labels[key] = value;
            }
        }
        while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
        std::size_t end = i;
        while (end < line.size() && line[end] != ' ' && line[end] != '\t') ++end;
        std::string number(line.substr(i, end - i));
        if (number.empty()) throw bad("no value");
        char* stop = nullptr;
        s.value = std::strtod(number.c_str(), &stop);
        if (stop != number.c_str() + number.size()) throw bad("value is not a number");
        snap.samples.push_back(std::move(s));
    }
    return snap;
}

namespace {
bool labels_match(const sample& s, const std::map<std::string, std::string>& match) {
    for (auto& [k, v] : match) {
        auto it = s.labels.find(k);
        if (it == s.labels.end() || it->second != v) return false;
    }
    return true;
}
}  // namespace

double metrics_snapshot::sum(std::string_view name, const std::map<std::string, std::string>& match) const {
    double total = 0;
    for (auto& s : samples)
        if (s.name == name && labels_match(s, match)) total += s.value;
    return total;
}

bool metrics_snapshot::has(std::string_view name, const std::map<std::string, std::string>& match) const {
    return std::any_of(samples.begin(), samples.end(),
                       [&](const sample& s) { return s.name == name && labels_match(s, match); });
}

std::string http_get(const std::string& host, std::uint16_t port, const std::string& path) {
    std::string where = host + ":" + std::to_string(port) + path;
    auto fd = connect_tcp(host, port, 5s);
    std::string request = "GET " + path + " HTTP/1.0\r\nHost: " + host + ":" + std::to_string(port) +
                          "\r\nConnection: close\r\n\r\n";
    if (!send_all(fd.get(), request.data(), request.size())) throw_errno("send to " + where);
    std::string response;
    char buf[16384];
    for (;;) {
        ssize_t n = recv(fd.get(), buf, sizeof buf, 0);
        if (n == 0) break;
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno("recv from " + where);
        }
        response.append(buf, static_cast<std::size_t>(n));
    }
    auto header_end = response.find("\r\n\r\n");
    if (header_end == std::string::npos) throw std::runtime_error("no HTTP header from " + where);
    std::string head = response.substr(0, header_end);
    std::string body = response.substr(header_end + 4);
    auto status_end = head.find("\r\n");
    std::string status = head.substr(0, status_end);
    if (status.find(" 200") == std::string::npos) throw std::runtime_error("GET " + where + ": " + status);
    std::string lower = head;
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    if (lower.find("transfer-encoding: chunked") != std::string::npos) {
        std::string plain;
        std::size_t i = 0;
        for (;;) {
            auto eol = body.find("\r\n", i);
            if (eol == std::string::npos) throw std::runtime_error("bad chunked body from " + where);
            std::size_t size = std::stoul(body.substr(i, eol - i), nullptr, 16);
            if (size == 0) break;
            plain += body.substr(eol + 2, size);
            i = eol + 2 + size + 2;
        }
        body = std::move(plain);
    }
    return body;
}

metrics_snapshot scrape(const std::string& host, std::uint16_t port) {
    return metrics_snapshot::parse(http_get(host, port, "/metrics"));
}

// ---------------------------------------------------------------------------------------------------------

map_census count_map_entries(pid_t pid, std::string_view name) {
    map_census census;
    auto fail = [&](int err, std::string what) {
        if (!census.error) {
            census.error = err;
            census.what = std::move(what);
        }
    };
    std::string dir = "/proc/" + std::to_string(pid) + "/fdinfo";
    std::set<std::uint32_t> ids;
    if (DIR* d = opendir(dir.c_str())) {
        while (dirent* e = readdir(d)) {
            if (e->d_name[0] == '.') continue;
            std::ifstream in(dir + "/" + e->d_name);
            for (std::string line; std::getline(in, line);)
                if (line.rfind("map_id:", 0) == 0) ids.insert(static_cast<std::uint32_t>(std::stoul(line.substr(7))));
        }
        closedir(d);
    } else {
        fail(errno, "opendir " + dir);
        return census;
    }
    for (auto id : ids) {
        int fd = bpf_map_get_fd_by_id(id);
        if (fd < 0) {
            int err = errno ? errno : -fd;
            if (err != ENOENT) fail(err, "bpf_map_get_fd_by_id(" + std::to_string(id) + ")");
            continue;
        }
        unique_fd map(fd);
        bpf_map_info info{};
        std::uint32_t len = sizeof info;
        if (int r = bpf_obj_get_info_by_fd(fd, &info, &len); r != 0) {
            fail(errno ? errno : -r, "bpf_obj_get_info_by_fd(map " + std::to_string(id) + ")");
            continue;
        }
        if (std::string_view(info.name) != name) continue;
        ++census.maps;
        std::vector<std::uint8_t> key(info.key_size), next(info.key_size);
        int r = bpf_map_get_next_key(fd, nullptr, next.data());
        for (std::uint64_t guard = 0; r == 0 && guard < 100'000'000; ++guard) {
            ++census.entries;
            key.swap(next);
            r = bpf_map_get_next_key(fd, key.data(), next.data());
        }
        if (r != 0 && errno != ENOENT) fail(errno, "bpf_map_get_next_key(" + std::string(name) + ")");
    }
    return census;
}

// ---------------------------------------------------------------------------------------------------------

std::string fd_census::text() const {
    return std::to_string(total()) + " (" + std::to_string(sockets) + " sockets, " + std::to_string(pipes) +
           " pipes, " + std::to_string(other) + " other)";
}

std::string fd_census::others() const {
    std::string out;
    for (auto& [kind, n] : other_kinds) out += (out.empty() ? "" : ", ") + kind + " x" + std::to_string(n);
    return out;
}

fd_census count_fds(pid_t pid) {
    fd_census census;
    std::string dir = "/proc/" + std::to_string(pid) + "/fd";
    DIR* d = opendir(dir.c_str());
    if (!d) return census;
    char target[256];
    while (dirent* e = readdir(d)) {
        if (e->d_name[0] == '.') continue;
        ssize_t n = readlinkat(dirfd(d), e->d_name, target, sizeof target - 1);
        if (n < 0) continue;  // closed meanwhile
        std::string_view t(target, static_cast<std::size_t>(n));
        if (t.rfind("socket:", 0) == 0) ++census.sockets;
        else if (t.rfind("pipe:", 0) == 0) ++census.pipes;
        else {
            ++census.other;
            ++census.other_kinds[std::string(t)];
        }
    }
    closedir(d);
    return census;
}

long rss_kib(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(in, line);)
        if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
    return -1;
}

double cpu_seconds(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto close = stat.rfind(')');  // the command name may hold spaces and parentheses
    if (close == std::string::npos) return -1;
    std::istringstream fields(stat.substr(close + 2));  // from field 3 (state) on
    std::string field;
    unsigned long long utime = 0, stime = 0;
    for (int i = 3; i <= 15 && fields >> field; ++i) {
        if (i == 14) utime = std::stoull(field);
        if (i == 15) stime = std::stoull(field);
    }
    return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

long context_switches(pid_t pid) {
    const std::string dir = "/proc/" + std::to_string(pid) + "/task";
    long total = 0;
    DIR* d = opendir(dir.c_str());
    if (!d) return -1;
    while (dirent* e = readdir(d)) {
        if (e->d_name[0] == '.') continue;
        std::ifstream in(dir + "/" + e->d_name + "/status");
        for (std::string line; std::getline(in, line);)
            if (line.rfind("voluntary_ctxt_switches:", 0) == 0) total += std::stol(line.substr(24));
    }
    closedir(d);
    return total;
}

std::size_t count_lines(const std::string& path, std::string_view needle) {
    std::ifstream in(path);
    std::size_t n = 0;
    for (std::string line; std::getline(in, line);) n += line.find(needle) != std::string::npos;
    return n;
}

long fd_limit(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/limits");
    for (std::string line; std::getline(in, line);) {
        if (line.rfind("Max open files", 0) != 0) continue;
        std::istringstream fields(line.substr(14));
        std::string soft;
        fields >> soft;
        return soft == "unlimited" ? std::numeric_limits<long>::max() : std::stol(soft);
    }
    return -1;
}

path_counts connections_of(const metrics_snapshot& m, const std::string& route) {
    auto count = [&](const char* path) {
        return m.sum("spliced_connections_total", {{"route", route}, {"datapath", path}});
    };
    return {count("sockmap"), count("splice"), count("copy")};
}

std::string describe(const path_counts& before, const path_counts& after) {
    std::ostringstream s;
    s << "sockmap +" << after.sockmap - before.sockmap << ", splice +" << after.splice - before.splice << ", copy +"
      << after.copy - before.copy;
    return s.str();
}

std::string daemon_config::yaml() const {
    const char* level = std::getenv("SPLICED_TEST_LOG_LEVEL");
    std::ostringstream y;
    y << "datapath: " << datapath << "\n"
      << "workers: " << workers << "\n"
      << "drain_timeout: " << drain_timeout << "\n";
    if (metrics_port) y << "metrics:\n  listen: 127.0.0.1:" << *metrics_port << "\n";
    y << "log:\n"
      << "  level: " << (level && *level ? level : log_level.c_str()) << "\n"
      << "  access_log: " << access_log << "\n";
    if (sockmap_capacity) y << "sockmap:\n  capacity: " << *sockmap_capacity << "\n";
    y << "routes:\n";
    for (const auto& r : routes) {
        y << "  - name: " << r.name << "\n    listen: [";
        for (std::size_t i = 0; i < r.listen.size(); ++i) y << (i ? ", " : "") << "\"" << r.listen[i] << "\"";
        y << "]\n";
        if (!r.timeouts.empty()) y << "    timeouts: { " << r.timeouts << " }\n";
        y << r.extra << "    backends:\n";
        for (const auto& b : r.backends) y << "      - address: " << b << "\n";
    }
    return y.str();
}

}  // namespace it
