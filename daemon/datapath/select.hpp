// Which data path each route runs: the sockmap probe, once at start (the engine if it loaded, and why sockmap
// is or is not used), and each route's plan from it and what the route asks for.
#pragma once

#include "config/config.hpp"
#include "datapath/engage.hpp"
#include "datapath/probe.hpp"

#include <memory>
#include <optional>

namespace spliced::datapath {

class selector {
public:
    // Probes sockmap when a route of `c` may use it (datapath auto or sockmap) and logs what it found. The
    // engine is kept only where a route can use it: usable, or forced by a sockmap route (with a warning).
    explicit selector(const config::config& c);

    // The plan of route `r`; throws std::runtime_error when it cannot run here (sockmap forced without the
    // engine, splice where splice(2) does not work on TCP sockets). `log`: says which path and why.
    plan plan_for(const config::route& r, bool log) const;

    sockmap_engine* engine() const { return engine_.get(); }

private:
    kind resolve(const config::route& r) const;

    std::unique_ptr<sockmap_engine> engine_;
    std::optional<probe_report> report_;  // of the probe at start; reloads plan with it
};

}  // namespace spliced::datapath
