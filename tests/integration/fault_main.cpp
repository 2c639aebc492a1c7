// Runner of the fault-injection suite (fault_test.cpp); the same binary is the echo peer child (--echo-peer).
#include "echo_peer.hpp"
#include "suite.hpp"

int main(int argc, char* argv[]) {
    if (int rc = it::echo_peer_child_main(argc, argv); rc >= 0) return rc;
    return it::run_suite(argc, argv, "fault tests");
}
