// Runner for the sockmap kernel-fact tests: they need CAP_BPF + CAP_NET_ADMIN, else exit 77.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <cstdio>
#include <unistd.h>

int main(int argc, char** argv) {
    if (::geteuid() != 0) {
        std::fprintf(stderr, "SKIPPED: the sockmap kernel tests need root (CAP_BPF + CAP_NET_ADMIN)\n");
        return 77;
    }
    std::printf("sockmap kernel-fact tests (data path: sockmap)\n");
    return Catch::Session().run(argc, argv);
}
