// Runner for the limits tests: reads the run's settings, skips (77) without the root the BPF paths need, and
// shows the daemon's log after a failed case.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "suite.hpp"

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

// On a failed test case, shows what the case's daemon logged (each case starts and stops its own).
struct daemon_log_on_failure : Catch::TestEventListenerBase {
    using TestEventListenerBase::TestEventListenerBase;
    void testCaseEnded(const Catch::TestCaseStats& stats) override {
        if (stats.totals.assertions.allOk()) return;
        auto tail = it::daemon_log_tail();
        if (!tail.empty())
            std::cerr << "---- spliced log (tail) after failed case \"" << stats.testInfo.name << "\" ----\n"
                      << tail << "---- end of spliced log ----\n";
    }
};

}  // namespace

CATCH_REGISTER_LISTENER(daemon_log_on_failure)

int main(int argc, char* argv[]) {
    const char* binary = std::getenv("SPLICED_BINARY");
    const char* datapath = std::getenv("SPLICED_TEST_DATAPATH");
    if (!binary || !*binary || !datapath || !*datapath) {
        std::cerr << "limits tests need SPLICED_BINARY=/path/to/spliced and "
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
    std::cout << "limits tests on data path: " << path << " (binary " << binary << ")" << std::endl;

    // splice and copy need no privilege: lowering a child's RLIMIT_NOFILE and reading its /proc files is
    // allowed for its owner. sockmap and auto load BPF programs.
    if ((path == "sockmap" || path == "auto") && geteuid() != 0) {
        std::cout << "\n**********************************************************************\n"
                     "SKIPPED: sockmap and auto tests need root (CAP_BPF+CAP_NET_ADMIN)\n"
                     "**********************************************************************\n"
                  << std::endl;
        return 77;
    }

    std::signal(SIGPIPE, SIG_IGN);
    // The test process holds hundreds of client and backend sockets; the daemons get their own limits.
    rlimit nofile{};
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max;
        setrlimit(RLIMIT_NOFILE, &nofile);
    }
    return Catch::Session().run(argc, argv);
}
