// The standard process_* metrics (CPU, memory, descriptors, start time), read from /proc at scrape time.
#pragma once

#include <memory>

namespace prometheus {
class Collectable;
}

namespace spliced::metrics {

std::shared_ptr<prometheus::Collectable> make_process_collectable();

}  // namespace spliced::metrics
