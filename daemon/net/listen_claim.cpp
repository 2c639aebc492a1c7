// An exclusive claim on a listen address among the spliced processes of one network namespace.
#include "net/listen_claim.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>

namespace spliced::net {

namespace {

// The abstract socket address of a claim (no file: it goes with the last descriptor, whatever ends the
// process; one namespace per network namespace, like the listen addresses themselves).
std::string claim_name(const address& addr) { return "spliced/listen/" + addr.text(); }

sockaddr_un claim_address(const std::string& name, socklen_t& length) {
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    std::memcpy(un.sun_path + 1, name.data(), std::min(name.size(), sizeof(un.sun_path) - 1));
    length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + std::min(name.size(), sizeof(un.sun_path) - 1));
    return un;
}

// The pid of a process that holds the abstract unix socket `name`, or 0 if it cannot be told: its inode
// from /proc/net/unix (this network namespace's), then the process with a descriptor on that inode.
pid_t holder_of(const std::string& name) {
    std::ifstream table("/proc/net/unix");
    std::string line, inode;
    while (inode.empty() && std::getline(table, line)) {
        // "Num RefCount Protocol Flags Type St Inode Path": the path of an abstract socket starts with '@'.
        std::istringstream fields(line);
        std::string field[8];
        for (auto& f : field) fields >> f;
        if (field[7] == "@" + name) inode = field[6];
    }
    if (inode.empty()) return 0;
    const std::string target = "socket:[" + inode + "]";
    std::error_code ec;
    for (const auto& proc : std::filesystem::directory_iterator("/proc", ec)) {
        const std::string pid = proc.path().filename();
        if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
        std::error_code fd_ec;
        for (const auto& fd : std::filesystem::directory_iterator(proc.path() / "fd", fd_ec)) {
            std::error_code link_ec;
            if (std::filesystem::read_symlink(fd.path(), link_ec) == target) return static_cast<pid_t>(std::stol(pid));
        }
    }
    return 0;
}

}  // namespace

listen_claim::listen_claim(const address& addr) {
    socklen_t length = 0;
    const std::string name = claim_name(addr);  // at most 15 + 47 bytes ("[v6]:port"): it fits
    const sockaddr_un un = claim_address(name, length);
    fd_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd_) throw std::runtime_error("cannot claim listen address " + addr.text() + ": socket: " + std::strerror(errno));
    if (::bind(fd_.get(), reinterpret_cast<const sockaddr*>(&un), length) != 0) {
        const int err = errno;
        if (err != EADDRINUSE)
            throw std::runtime_error("cannot claim listen address " + addr.text() + ": " + std::strerror(err));
        const pid_t pid = holder_of(name);
        throw std::runtime_error("listen address " + addr.text() + " is already served by another spliced" +
                                 (pid > 0 ? " (pid " + std::to_string(pid) + ")" : std::string()) +
                                 "; two on one address would share its connections");
    }
}

}  // namespace spliced::net
