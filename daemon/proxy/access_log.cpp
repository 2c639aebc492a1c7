// The access log: one record per connection, in one format.
#include "proxy/access_log.hpp"

#include <spdlog/spdlog.h>

namespace spliced::proxy {

void write(spdlog::logger& log, const access_record& r) {
    log.info("conn={} route={} client={} backend={} datapath={} duration_ms={} bytes_in={} bytes_out={} end={}", r.id,
             r.route, r.client, r.backend, r.datapath, r.duration_ms, r.bytes_in, r.bytes_out, sys::name_of(r.end));
}

}  // namespace spliced::proxy
