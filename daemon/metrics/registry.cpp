// The metrics registry: the families, the series kept by name, the process-wide series, the /metrics endpoint.
#include "metrics/registry.hpp"

#include "metrics/exposer.hpp"
#include "metrics/process.hpp"

#include <chrono>
#include <prometheus/collectable.h>
#include <prometheus/text_serializer.h>
#include <sstream>

namespace spliced::metrics {

families::families(prometheus::Registry& r)
    :
#define SPLICED_FAMILY_INIT(type, member, name, help, buckets) \
    member(prometheus::Build##type().Name(name).Help(help).Register(r)),
      SPLICED_FAMILIES(SPLICED_FAMILY_INIT)
#undef SPLICED_FAMILY_INIT
      unused_(0) {
}

registry::registry()
    : registry_(std::make_shared<prometheus::Registry>()),
      families_(std::make_unique<metrics::families>(*registry_)),
      table_(std::make_shared<series_table>()),
      collectables_(std::make_shared<std::vector<std::shared_ptr<prometheus::Collectable>>>()) {
    auto& f = *families_;
    f.build_info.Add({{"version", SPLICED_VERSION}}).Set(1);
    reloads_success_ = {&f.config_reloads_total.Add({{"result", "success"}})};
    reloads_failure_ = {&f.config_reloads_total.Add({{"result", "failure"}})};
    last_success_ = {&f.config_last_reload_success_timestamp_seconds.Add({})};
}

registry::~registry() = default;

void registry::config_loaded() {
    last_success_.set(std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
}

void registry::config_reloaded(bool success) {
    (success ? reloads_success_ : reloads_failure_).inc();
    if (success) config_loaded();
}

void registry::add_collectable(std::shared_ptr<prometheus::Collectable> c) { collectables_->push_back(std::move(c)); }

void registry::serve(const net::address& listen) {
    // Serialized on the endpoint's thread at each scrape.
    auto body = [registry = registry_, more = collectables_, process = make_process_collectable()] {
        std::vector<prometheus::MetricFamily> families = registry->Collect();
        for (const auto& c : *more)
            for (auto& f : c->Collect()) families.push_back(std::move(f));
        for (auto& f : process->Collect()) families.push_back(std::move(f));
        std::ostringstream out;
        prometheus::TextSerializer().Serialize(out, families);
        return out.str();
    };
    exposer_ = std::make_unique<exposer>(listen, std::move(body));
}

void registry::stop_serving() { exposer_.reset(); }

}  // namespace spliced::metrics
