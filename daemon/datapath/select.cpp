// Which data path each route runs: the sockmap probe at start, and each route's plan.
#include "datapath/select.hpp"

#include "datapath/pipe_pool.hpp"

#include <spdlog/spdlog.h>
#include <stdexcept>

namespace spliced::datapath {

namespace {

bool may_use_sockmap(config::datapath_kind k) {
    return k == config::datapath_kind::sockmap || k == config::datapath_kind::auto_select;
}

}  // namespace

selector::selector(const config::config& c) {
    bool wanted = false, forced = false;
    for (const auto& r : c.routes) {
        wanted |= may_use_sockmap(r.datapath);
        forced |= r.datapath == config::datapath_kind::sockmap;
    }
    if (!wanted) return;
    report_.emplace();
    engine_ = probe_sockmap(*report_, c.sockmap.capacity);
    for (const auto& check : report_->checks)
        spdlog::info("sockmap probe: {}: {} ({})", check.name, check.ok ? "ok" : "FAILED", check.detail);
    spdlog::info("{}", report_->summary);
    if (engine_)
        spdlog::info("sockmap: room for {} connections ({} entries per map); past it, new ones run on splice",
                     engine_->capacity(), 2ull * engine_->capacity());
    if (engine_ && !report_->usable) {
        if (forced) spdlog::warn("datapath sockmap is forced although the probe did not pass: {}", report_->summary);
        else engine_.reset();  // auto will not use it: do not keep the maps around
    }
}

kind selector::resolve(const config::route& r) const {
    using config::datapath_kind;
    const bool splice_ok = splice_available();
    switch (r.datapath) {
    case datapath_kind::sockmap:
        if (!engine_)
            throw std::runtime_error("route " + r.name + ": datapath sockmap is unavailable: " +
                                     (report_ ? report_->summary : std::string("not probed at start")));
        return kind::sockmap;
    case datapath_kind::auto_select:
        if (engine_ && report_ && report_->usable) return kind::sockmap;
        return splice_ok ? kind::splice : kind::copy;
    case datapath_kind::splice:
        if (!splice_ok) throw std::runtime_error("route " + r.name + ": splice(2) on TCP sockets is unavailable");
        return kind::splice;
    case datapath_kind::copy: return kind::copy;
    }
    return kind::copy;
}

plan selector::plan_for(const config::route& r, bool log) const {
    kind k = resolve(r);
    const std::string why = r.datapath == config::datapath_kind::auto_select
                                ? (report_ ? report_->summary : std::string("sockmap not probed at start"))
                                : std::string("configured ") + config::to_string(r.datapath);
    // auto with sockmap usable: each connection starts in userspace (copy, splice for bulk) and moves to
    // sockmap once it idles; a parked pair that turns chatty or bulky goes back to userspace copy.
    const bool promote = r.datapath == config::datapath_kind::auto_select && k == kind::sockmap;
    if (promote) {
        k = splice_available() ? kind::splice : kind::copy;
        if (log)
            spdlog::info("route {}: datapath auto: userspace first ({}), sockmap for connections that go idle ({})",
                         r.name, k == kind::splice ? "copy, splice for bulk" : "copy", why);
    } else if (log) {
        spdlog::info("route {}: datapath {} ({})", r.name, to_string(k), why);
    }
    return plan{k, promote};
}

}  // namespace spliced::datapath
