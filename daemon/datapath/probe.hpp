// Decides whether the sockmap data path is usable here: kernel floor, BPF load/attach, live self-test.
#pragma once

#include "datapath/sockmap.hpp"

#include <memory>
#include <string>
#include <vector>

namespace spliced::datapath {

struct kernel_version {
    int major = 0, minor = 0, patch = 0;
    std::string release;
};
kernel_version running_kernel();
// At or above the floor that fixed the sockmap backlog data-loss and duplication bugs
// (6.16, or 6.12.34+ on the 6.12 stable series).
bool kernel_meets_floor(const kernel_version& k);

struct probe_report {
    struct check {
        std::string name;
        bool ok = false;
        std::string detail;
    };
    std::vector<check> checks;
    bool loaded = false;       // the engine loaded and attached
    bool usable = false;       // loaded, self-test passed and kernel at the floor: `auto` may pick it
    std::string summary;       // one line: why sockmap is or is not used
};

// Loads the engine with room for `capacity` connections and runs the self-test on a loopback
// pair. Returns the engine when it loaded (even if the self-test failed: a forced
// `datapath: sockmap` may still use it), else nullptr.
std::unique_ptr<sockmap_engine> probe_sockmap(probe_report& report, std::uint32_t capacity = default_capacity);

}  // namespace spliced::datapath
