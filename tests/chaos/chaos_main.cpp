// Runner of the chaos campaign (chaos_test.cpp). Besides Catch2's options: --seed N replays one scenario with its
// trace (the same as SPLICED_CHAOS_SEED=N).
#include "suite.hpp"

#include <cstdlib>
#include <cstring>
#include <vector>

int main(int argc, char* argv[]) {
    std::vector<char*> args;
    for (int i = 0; i < argc; ++i) {
        if (std::strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            setenv("SPLICED_CHAOS_SEED", argv[++i], 1);
            continue;
        }
        args.push_back(argv[i]);
    }
    args.push_back(nullptr);
    return it::run_suite(static_cast<int>(args.size()) - 1, args.data(), "chaos tests");
}
