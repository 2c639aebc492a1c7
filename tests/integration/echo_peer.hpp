// An epoll echo backend in a child process, so thousands of backend connections stay out of the test process's
// descriptor budget.
#pragma once

#include "harness.hpp"

#include <cstdint>
#include <string>
#include <sys/types.h>
#include <vector>

namespace it {

// The child is this test binary run again with --echo-peer (its main calls echo_peer_child_main first). Each
// connection echoes until EOF, then half-closes and closes; a reset or error just closes it.
class echo_peer {
public:
    // Starts the child with `ports` listening ports on 127.0.0.1 and waits (bounded) until they listen.
    explicit echo_peer(int ports = 1);
    // Closes the command pipe (the child exits on EOF); SIGKILLs it if it is still there after 5 s.
    ~echo_peer();
    echo_peer(const echo_peer&) = delete;
    echo_peer& operator=(const echo_peer&) = delete;

    pid_t pid() const { return pid_; }
    // "127.0.0.1:PORT" for every listening port.
    std::vector<std::string> addresses() const;

    struct stats {
        std::uint64_t open = 0;      // connections open now
        std::uint64_t accepted = 0;  // since start
        std::uint64_t echoed = 0;    // bytes echoed since start
    };
    // Asks the child (bounded); throws std::runtime_error if it does not answer.
    stats query();

private:
    std::string read_line(std::chrono::milliseconds budget);
    pid_t pid_ = -1;
    unique_fd commands_;  // the child's stdin
    unique_fd replies_;   // the child's stdout
    std::string buffered_;
    std::vector<std::uint16_t> ports_;
};

// If argv[1] is --echo-peer, runs the child side and returns its exit status; otherwise returns -1.
int echo_peer_child_main(int argc, char** argv);

}  // namespace it
