// A route as the sessions see it: its config, the data path planned for it, its series, its backend pool and
// its connection limit.
#pragma once

#include "config/config.hpp"
#include "datapath/engage.hpp"
#include "log/log.hpp"
#include "proxy/admission.hpp"
#include "proxy/backend_pool.hpp"
#include "proxy/route_metrics.hpp"

#include <memory>
#include <vector>

namespace spliced::proxy {

struct route_runtime {
    // `states`: one per backend, `queue`: the route's backend queue (both fresh, or carried over from an
    // earlier table); `limit`: the route's max_connections place count (carried over too), null without
    // max_connections.
    route_runtime(config::route c, datapath::plan p, route_metrics m, std::vector<std::shared_ptr<backend_state>> states,
                  std::shared_ptr<backend_queue> queue, std::shared_ptr<proxy::admission> limit);
    config::route cfg;
    datapath::plan plan;
    route_metrics metrics;
    std::shared_ptr<backend_pool> pool;
    std::shared_ptr<proxy::admission> admission;  // null without max_connections
    log::lines_per_second refusal_log{5};          // refused connections: a few lines a second, not one each
};

}  // namespace spliced::proxy
