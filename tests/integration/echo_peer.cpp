// An epoll echo backend in a child process, so thousands of backend connections stay out of the test process's
// descriptor budget.
#include "echo_peer.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <sstream>
#include <stdexcept>
#include <spawn.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace it {

namespace {

[[noreturn]] void throw_errno(const std::string& what) {
    int e = errno;
    throw std::runtime_error(what + ": " + std::strerror(e));
}

}  // namespace

echo_peer::echo_peer(int ports) {
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) throw_errno("readlink /proc/self/exe");
    self[n] = '\0';

    int to_child[2], from_child[2];
    if (pipe2(to_child, O_CLOEXEC) != 0) throw_errno("pipe2");
    if (pipe2(from_child, O_CLOEXEC) != 0) {
        close(to_child[0]);
        close(to_child[1]);
        throw_errno("pipe2");
    }
    commands_.reset(to_child[1]);
    replies_.reset(from_child[0]);
    unique_fd child_in(to_child[0]), child_out(from_child[1]);

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, child_in.get(), 0);
    posix_spawn_file_actions_adddup2(&actions, child_out.get(), 1);
    std::string count = std::to_string(ports), parent = std::to_string(getpid());
    char* argv[] = {self, const_cast<char*>("--echo-peer"), count.data(), parent.data(), nullptr};
    int r = posix_spawn(&pid_, self, &actions, nullptr, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    if (r != 0) {
        errno = r;
        throw_errno("posix_spawn echo peer");
    }
    // "ports P1 P2 ..." once every listener is up.
    std::istringstream line(read_line(10s));
    std::string word;
    line >> word;
    if (word != "ports") throw std::runtime_error("echo peer: unexpected greeting '" + word + "'");
    for (unsigned p; line >> p;) ports_.push_back(static_cast<std::uint16_t>(p));
    if (ports_.size() != static_cast<std::size_t>(ports)) throw std::runtime_error("echo peer: wrong port count");
}

echo_peer::~echo_peer() {
    if (pid_ <= 0) return;
    commands_.reset();  // EOF on the child's stdin: it exits
    int st = 0;
    bool gone = run_until([&] { return waitpid(pid_, &st, WNOHANG) == pid_; }, 5s, 10ms);
    if (!gone) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &st, 0);
    }
}

std::vector<std::string> echo_peer::addresses() const {
    std::vector<std::string> out;
    for (auto p : ports_) out.push_back("127.0.0.1:" + std::to_string(p));
    return out;
}

std::string echo_peer::read_line(std::chrono::milliseconds budget) {
    const auto deadline = clock::now() + budget;
    for (;;) {
        if (auto nl = buffered_.find('\n'); nl != std::string::npos) {
            std::string line = buffered_.substr(0, nl);
            buffered_.erase(0, nl + 1);
            return line;
        }
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
        if (left <= 0) throw std::runtime_error("echo peer: no answer within " + std::to_string(budget.count()) + " ms");
        pollfd p{replies_.get(), POLLIN, 0};
        int r = poll(&p, 1, static_cast<int>(left));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) continue;
        char buf[512];
        ssize_t n = read(replies_.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) throw std::runtime_error("echo peer: exited (stdout closed)");
        buffered_.append(buf, static_cast<std::size_t>(n));
    }
}

echo_peer::stats echo_peer::query() {
    static const char cmd[] = "stats\n";
    if (write(commands_.get(), cmd, sizeof cmd - 1) != static_cast<ssize_t>(sizeof cmd - 1))
        throw_errno("echo peer: write command");
    std::istringstream line(read_line(10s));
    std::string word;
    stats s;
    line >> word >> s.open >> s.accepted >> s.echoed;
    if (word != "stats" || !line) throw std::runtime_error("echo peer: bad stats answer");
    return s;
}

// ---------------------------------------------------------------------------------------------------------
// The child

namespace {

struct peer_conn {
    std::string pending;  // read, not yet echoed
    bool eof = false;
    bool open = false;
};

int serve_echo(int nports) {
    std::signal(SIGPIPE, SIG_IGN);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) return 3;
    std::vector<int> listeners;
    std::string greeting = "ports";
    for (int i = 0; i < nports; ++i) {
        int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        sockaddr_in sin{};
        sin.sin_family = AF_INET;
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof sin;
        if (l < 0 || bind(l, reinterpret_cast<sockaddr*>(&sin), len) != 0 || listen(l, 4096) != 0 ||
            getsockname(l, reinterpret_cast<sockaddr*>(&sin), &len) != 0) {
            std::perror("echo peer: listen");
            return 3;
        }
        listeners.push_back(l);
        greeting += " " + std::to_string(ntohs(sin.sin_port));
        epoll_event ev{EPOLLIN, {}};
        ev.data.fd = l;
        epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
    }
    greeting += "\n";
    if (write(1, greeting.data(), greeting.size()) != static_cast<ssize_t>(greeting.size())) return 3;
    epoll_event cmd{EPOLLIN, {}};
    cmd.data.fd = 0;
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &cmd);

    std::vector<peer_conn> conns;
    std::uint64_t open = 0, accepted = 0, echoed = 0;
    std::string commands;
    auto is_listener = [&](int fd) {
        for (int l : listeners)
            if (l == fd) return true;
        return false;
    };
    auto close_conn = [&](int fd) {
        epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
        close(fd);
        conns[static_cast<std::size_t>(fd)] = peer_conn{};
        --open;
    };
    // Sends what is pending; then, after EOF, half-closes and closes. Returns false once the fd is closed.
    auto flush = [&](int fd) {
        auto& c = conns[static_cast<std::size_t>(fd)];
        while (!c.pending.empty()) {
            ssize_t n = send(fd, c.pending.data(), c.pending.size(), MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && errno == EAGAIN) break;
            if (n < 0) {
                close_conn(fd);
                return false;
            }
            echoed += static_cast<std::uint64_t>(n);
            c.pending.erase(0, static_cast<std::size_t>(n));
        }
        if (c.pending.empty() && c.eof) {
            shutdown(fd, SHUT_WR);
            close_conn(fd);
            return false;
        }
        // Read again only once everything read so far is echoed: the peer's pace bounds our memory.
        epoll_event ev{c.pending.empty() ? static_cast<std::uint32_t>(EPOLLIN) : static_cast<std::uint32_t>(EPOLLOUT),
                       {}};
        ev.data.fd = fd;
        epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
        return true;
    };

    std::vector<epoll_event> events(256);
    std::vector<char> buf(64 * 1024);
    for (;;) {
        int n = epoll_wait(ep, events.data(), static_cast<int>(events.size()), 1000);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return 3;
        for (int i = 0; i < n; ++i) {
            int fd = events[i].data.fd;
            if (fd == 0) {
                ssize_t k = read(0, buf.data(), buf.size());
                if (k <= 0) return 0;  // the test closed the pipe (or died): done
                commands.append(buf.data(), static_cast<std::size_t>(k));
                for (auto nl = commands.find('\n'); nl != std::string::npos; nl = commands.find('\n')) {
                    std::string c = commands.substr(0, nl);
                    commands.erase(0, nl + 1);
                    std::string answer = c == "stats" ? "stats " + std::to_string(open) + " " + std::to_string(accepted) +
                                                            " " + std::to_string(echoed) + "\n"
                                                      : "error unknown command\n";
                    if (write(1, answer.data(), answer.size()) != static_cast<ssize_t>(answer.size())) return 3;
                }
                continue;
            }
            if (is_listener(fd)) {
                for (int k = 0; k < 256; ++k) {
                    int c = accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0) break;  // EAGAIN, or EMFILE (the test sizes its runs to avoid it)
                    if (static_cast<std::size_t>(c) >= conns.size()) conns.resize(static_cast<std::size_t>(c) + 1024);
                    conns[static_cast<std::size_t>(c)].open = true;
                    ++open;
                    ++accepted;
                    epoll_event ev{EPOLLIN, {}};
                    ev.data.fd = c;
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
                }
                continue;
            }
            auto& c = conns[static_cast<std::size_t>(fd)];
            if (!c.open) continue;
            if (!c.pending.empty() || c.eof) {
                flush(fd);
                continue;
            }
            ssize_t k = recv(fd, buf.data(), buf.size(), 0);
            if (k < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (k < 0) {
                close_conn(fd);
                continue;
            }
            if (k == 0) c.eof = true;
            else c.pending.assign(buf.data(), static_cast<std::size_t>(k));
            flush(fd);
        }
    }
}

}  // namespace

int echo_peer_child_main(int argc, char** argv) {
    if (argc < 2 || std::strcmp(argv[1], "--echo-peer") != 0) return -1;
    if (argc != 4) return 2;
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the test run
    if (getppid() != static_cast<pid_t>(std::atol(argv[3]))) return 0;
    return serve_echo(std::atoi(argv[2]));
}

}  // namespace it
