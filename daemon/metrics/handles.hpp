// Typed handles on series: one series, or one per value of an enum label. Made once (proxy/route_metrics.hpp,
// registry.cpp), kept, and used without a lookup on the hot path.
#pragma once

#include "sys/enum_names.hpp"

#include <array>
#include <cstdint>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <type_traits>

namespace spliced::metrics {

// A counter, gauge or histogram series.
template <typename T>
struct one {
    using metric = T;
    T* series = nullptr;
    void inc(double by = 1) const { series->Increment(by); }
    void dec() const
        requires std::is_same_v<T, prometheus::Gauge>
    { series->Decrement(); }
    void set(double v) const
        requires std::is_same_v<T, prometheus::Gauge>
    { series->Set(v); }
    void observe(double v) const
        requires std::is_same_v<T, prometheus::Histogram>
    { series->Observe(v); }
};

// One series per value of enum E (its label values are E's names).
template <typename E, typename T = prometheus::Counter>
struct by {
    std::array<T*, sys::enum_count<E>> series{};
    void inc(E e, double n = 1) const { series[static_cast<std::size_t>(e)]->Increment(n); }
};

// The handle type for a family member of metrics::families: one<T> for Family<T>&.
template <typename F>
struct one_of;
template <typename T>
struct one_of<prometheus::Family<T>&> {
    using type = one<T>;
};

}  // namespace spliced::metrics
