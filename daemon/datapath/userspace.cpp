// A direction in userspace: copy, or splice for bulk, read by read.
#include "datapath/userspace.hpp"

#include "datapath/copy_path.hpp"
#include "datapath/splice_path.hpp"

namespace spliced::datapath {

step run_userspace(direction& d, pipe_pool& pool, std::span<char> buffer, std::size_t& budget) {
    for (;;) {
        step s = flush_held(d);
        if (s == step::go_on) s = flush_pipe(d, pool);
        if (s != step::go_on) return s;
        if (d.eof) return step::eof;
        if (budget == 0) return step::yield;
        if (!d.from->readable() || !d.to->writable()) return step::blocked;
        const bool splice = d.bulk && d.may_splice && !d.from->urgent();
        s = splice ? splice_read(d, pool, budget) : copy_read(d, buffer, budget);
        if (s != step::go_on) return s;
    }
}

}  // namespace spliced::datapath
