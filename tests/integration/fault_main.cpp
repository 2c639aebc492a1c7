// Runner for the fault-injection tests: reads the run's settings, skips (77) without privileges, runs the echo
// peer child when asked to (--echo-peer), and cleans up after each case.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "echo_peer.hpp"
#include "fault_suite.hpp"

#include <csignal>
#include <cstdlib>
#include <iostream>
#include <sys/resource.h>
#include <unistd.h>

namespace it {
run_settings& settings() {
    static run_settings s;
    return s;
}
}  // namespace it

namespace {

// Each case starts its own daemon: show its log if the case failed, then stop it.
struct end_of_case : Catch::TestEventListenerBase {
    using TestEventListenerBase::TestEventListenerBase;
    void testCaseEnded(const Catch::TestCaseStats& stats) override {
        it::end_fault_case(stats.testInfo.name, !stats.totals.assertions.allOk());
    }
};

}  // namespace

CATCH_REGISTER_LISTENER(end_of_case)

int main(int argc, char* argv[]) {
    if (int rc = it::echo_peer_child_main(argc, argv); rc >= 0) return rc;

    const char* binary = std::getenv("SPLICED_BINARY");
    const char* datapath = std::getenv("SPLICED_TEST_DATAPATH");
    if (!binary || !*binary || !datapath || !*datapath) {
        std::cerr << "fault tests need SPLICED_BINARY=/path/to/spliced and "
                     "SPLICED_TEST_DATAPATH=sockmap|splice|copy|auto in the environment\n";
        return 2;
    }
    std::string path = datapath;
    if (path != "sockmap" && path != "splice" && path != "copy" && path != "auto") {
        std::cerr << "SPLICED_TEST_DATAPATH must be sockmap, splice, copy or auto, not '" << path << "'\n";
        return 2;
    }
    if (access(binary, X_OK) != 0) {
        std::cerr << "SPLICED_BINARY=" << binary << " is not an executable file\n";
        return 2;
    }
    it::settings() = {binary, path};
    std::cout << "fault tests on data path: " << path << " (binary " << binary << ")" << std::endl;

    if ((path == "sockmap" || path == "auto") && geteuid() != 0) {
        std::cout << "\n**********************************************************************\n"
                     "SKIPPED: sockmap and auto tests need root (CAP_BPF+CAP_NET_ADMIN)\n"
                     "**********************************************************************\n"
                  << std::endl;
        return 77;
    }

    std::signal(SIGPIPE, SIG_IGN);
    // Thousands of client descriptors here; the daemon and the echo peer inherit the limit too.
    rlimit nofile{};
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max;
        setrlimit(RLIMIT_NOFILE, &nofile);
    }
    return Catch::Session().run(argc, argv) ? 1 : 0;
}
