// Runner of the socket-level tier. The [sockmap] cases need the BPF engine (root: CAP_BPF + CAP_NET_ADMIN):
// asked for without it, they are skipped with 77.
#define CATCH_CONFIG_RUNNER
#include "rig.hpp"

#include <csignal>
#include <cstdio>
#include <string_view>

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);  // as the daemon does: a send to a reset peer is an EPIPE
    for (int i = 1; i < argc; ++i)
        if (std::string_view(argv[i]).find("[sockmap]") != std::string_view::npos && !io_test::engine()) {
            std::fprintf(stderr, "SKIPPED: the [sockmap] cases need the BPF engine, which did not load (root needed)\n");
            return 77;
        }
    return Catch::Session().run(argc, argv);
}
