// What a pair tells its session when it ends.
#include "datapath/report.hpp"

namespace spliced::datapath {

void path_log::ran_on(kind k) {
    if (count_ > 0 && paths_[count_ - 1] == k) return;
    if (count_ < paths_.size()) paths_[count_++] = k;
}

std::string path_log::text() const {
    if (count_ == 0) return "-";
    std::string out;
    for (std::uint8_t i = 0; i < count_; ++i) {
        if (i) out += '+';
        out += to_string(paths_[i]);
    }
    return out;
}

}  // namespace spliced::datapath
