// Series whose values live elsewhere (BPF maps) and are read when scraped.
#include "metrics/bpf_collector.hpp"

#include <prometheus/client_metric.h>
#include <prometheus/metric_family.h>

namespace spliced::metrics {

void bpf_collector::add(std::string name, std::string help, prometheus::MetricType type, std::function<double()> value) {
    samplers_.push_back({std::move(name), std::move(help), type, std::move(value)});
}

std::vector<prometheus::MetricFamily> bpf_collector::Collect() const {
    std::vector<prometheus::MetricFamily> out;
    for (const auto& s : samplers_) {
        prometheus::MetricFamily f;
        f.name = s.name;
        f.help = s.help;
        f.type = s.type;
        prometheus::ClientMetric m;
        if (s.type == prometheus::MetricType::Counter) m.counter.value = s.value();
        else m.gauge.value = s.value();
        f.metric.push_back(std::move(m));
        out.push_back(std::move(f));
    }
    return out;
}

}  // namespace spliced::metrics
