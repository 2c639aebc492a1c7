// Series whose values live elsewhere and are read when scraped: the BPF program's per-CPU counters (summed),
// the SOCKHASH's fill. The app adds one sampler per series at startup.
#pragma once

#include <functional>
#include <memory>
#include <prometheus/collectable.h>
#include <prometheus/metric_type.h>
#include <string>
#include <vector>

namespace spliced::metrics {

class bpf_collector final : public prometheus::Collectable {
public:
    // Adds a series `name` (no labels) whose value `value()` gives at each scrape. Before serving only.
    void add(std::string name, std::string help, prometheus::MetricType type, std::function<double()> value);
    std::vector<prometheus::MetricFamily> Collect() const override;

private:
    struct sampler {
        std::string name, help;
        prometheus::MetricType type;
        std::function<double()> value;
    };
    std::vector<sampler> samplers_;
};

}  // namespace spliced::metrics
