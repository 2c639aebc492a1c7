// An exclusive claim on a listen address among the spliced processes of one network namespace. Listeners
// use SO_REUSEPORT, so a second spliced could bind the same address and the kernel would hash part of
// the first one's new connections into its queues (lost if it then stops); a claim refuses it before it
// binds anything.
#pragma once

#include "net/address.hpp"
#include "sys/fd.hpp"

namespace spliced::net {

class listen_claim {
public:
    // Claims `addr` for this process (until the claim is destroyed, or the process ends); throws
    // std::runtime_error naming the address and, where it can tell, the process that holds it.
    explicit listen_claim(const address& addr);

private:
    sys::unique_fd fd_;  // an abstract unix socket bound to a name made of the address
};

}  // namespace spliced::net
