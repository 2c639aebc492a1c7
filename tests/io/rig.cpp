// A pair on real loopback sockets, driven turn by turn from the test's thread.
#include "rig.hpp"

#include <cerrno>
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

namespace io_test {

datapath::sockmap_engine* engine() {
    static std::unique_ptr<datapath::sockmap_engine> e = [] {
        datapath::engine_error error;
        return datapath::sockmap_engine::load(datapath::default_capacity, error);
    }();
    return e.get();
}

std::string pattern(std::size_t n, unsigned seed) {
    std::string s(n, '\0');
    for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 2654435761u + seed) >> 13);
    return s;
}

loopback::loopback() {
    listener_.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    addr_.sin_family = AF_INET;
    addr_.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr_);
    REQUIRE(::bind(listener_.get(), reinterpret_cast<sockaddr*>(&addr_), sizeof(addr_)) == 0);
    REQUIRE(::listen(listener_.get(), 16) == 0);
    REQUIRE(::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&addr_), &len) == 0);
}

tcp_conn loopback::connect() {
    tcp_conn c;
    c.connector.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(::connect(c.connector.get(), reinterpret_cast<sockaddr*>(&addr_), sizeof(addr_)) == 0);
    c.acceptor.reset(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    REQUIRE(c.acceptor);
    return c;
}

rig::rig(datapath::sockmap_engine* e) : resources(core, e) {
    // The client connects to the proxy (whose socket is the accepted end); the proxy connects to the backend.
    auto c = lo.connect();
    auto u = lo.connect();
    client_end = std::move(c.connector);
    backend_end = std::move(u.acceptor);
    for (int fd : {client_end.get(), backend_end.get()}) REQUIRE_FALSE(sys::set_oob_inline(fd));
    for (int fd : {c.acceptor.get(), u.connector.get()}) {
        REQUIRE_FALSE(sys::set_oob_inline(fd));
        REQUIRE_FALSE(sys::set_nodelay(fd, true));
    }
    REQUIRE(::fcntl(u.connector.get(), F_SETFL, O_NONBLOCK) == 0);
    proxy_client_socket = std::make_unique<net::core_socket>(core, std::move(c.acceptor));
    proxy_upstream_socket = std::make_unique<net::core_socket>(core, std::move(u.connector));
    REQUIRE(proxy_client_socket->ok());
    REQUIRE(proxy_upstream_socket->ok());
    // What the session does when its pair ends: close both, with a reset unless both streams ended cleanly.
    owner.on_end = [this] {
        const bool clean = pair->report().reason == datapath::end_reason::completed;
        for (auto* s : {proxy_client_socket.get(), proxy_upstream_socket.get()}) {
            if (!clean) s->reset_on_close();
            s->close();
        }
    };
}

rig::~rig() { pair.reset(); }

void rig::engage(datapath::plan how, std::chrono::milliseconds idle, const std::string& pending,
                 std::uint64_t consumed, std::chrono::milliseconds lifetime) {
    turn();  // the registrations' first events: both sockets writable
    const datapath::pair_settings settings{how, idle, consumed, 1, "test", lifetime};
    pair.emplace(resources, *proxy_client_socket, *proxy_upstream_socket, settings, owner);
    pair->engage(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(pending.data()), pending.size()));
}

bool rig::until(const std::function<bool()>& pred, std::chrono::milliseconds budget) {
    const auto deadline = clock_type::now() + budget;
    while (!pred()) {
        if (clock_type::now() >= deadline) return false;
        core.turn(1);
    }
    return true;
}

void rig::send_all(int fd, const std::string& data) {
    std::size_t off = 0;
    const auto deadline = clock_type::now() + 10s;
    while (off < data.size()) {
        const ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) off += static_cast<std::size_t>(n);
        else REQUIRE((n < 0 && errno == EAGAIN));
        REQUIRE(clock_type::now() < deadline);
        core.turn(0);
    }
}

rig::got rig::read(int fd, std::size_t want, std::chrono::milliseconds budget) {
    got out;
    const auto deadline = clock_type::now() + budget;
    std::vector<char> buf(256 * 1024);
    while (out.bytes.size() < want && clock_type::now() < deadline) {
        const ssize_t n = ::recv(fd, buf.data(), std::min(buf.size(), want - out.bytes.size()), MSG_DONTWAIT);
        if (n > 0) {
            out.bytes.append(buf.data(), static_cast<std::size_t>(n));
            continue;
        }
        if (n == 0) {
            out.eof = true;
            break;
        }
        if (errno != EAGAIN) {
            out.error = errno;
            break;
        }
        core.turn(1);
    }
    return out;
}

std::string rig::transfer(int from, int to, const std::string& data, std::chrono::milliseconds budget) {
    std::string got;
    std::size_t sent = 0;
    std::vector<char> buf(256 * 1024);
    const auto deadline = clock_type::now() + budget;
    while (got.size() < data.size() && clock_type::now() < deadline) {
        if (sent < data.size()) {
            const ssize_t n = ::send(from, data.data() + sent, std::min<std::size_t>(data.size() - sent, 128 * 1024),
                                     MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0) sent += static_cast<std::size_t>(n);
        }
        const ssize_t m = ::recv(to, buf.data(), buf.size(), MSG_DONTWAIT);
        if (m > 0) got.append(buf.data(), static_cast<std::size_t>(m));
        if (m == 0) break;
        core.turn(0);
    }
    return got;
}

std::string diff(const std::string& got, const std::string& want) {
    if (got == want) return "";
    std::size_t i = 0;
    while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
    return "got " + std::to_string(got.size()) + " bytes, want " + std::to_string(want.size()) +
           "; first difference at offset " + std::to_string(i);
}

int open_pipes() {
    int n = 0;
    DIR* d = ::opendir("/proc/self/fd");
    if (!d) return -1;
    while (dirent* e = ::readdir(d)) {
        char target[256];
        const std::string path = std::string("/proc/self/fd/") + e->d_name;
        const ssize_t len = ::readlink(path.c_str(), target, sizeof target - 1);
        if (len > 0 && std::string(target, static_cast<std::size_t>(len)).rfind("pipe:", 0) == 0) ++n;
    }
    ::closedir(d);
    return n;
}

void reset(sys::unique_fd& fd) {
    REQUIRE_FALSE(sys::set_linger_reset(fd.get()));
    fd.reset();
}

}  // namespace io_test
