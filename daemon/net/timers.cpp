// The timers of one worker's event core: a min-heap of deadlines.
#include "net/timers.hpp"

#include <algorithm>

namespace spliced::net {

timer::~timer() {
    if (owner_ && armed()) owner_->cancel(*this);
}

void timers::place(std::size_t i, timer* t) {
    heap_[i] = t;
    t->slot_ = i;
}

void timers::up(std::size_t i) {
    timer* t = heap_[i];
    while (i > 0) {
        const std::size_t parent = (i - 1) / 2;
        if (heap_[parent]->deadline_ <= t->deadline_) break;
        place(i, heap_[parent]);
        i = parent;
    }
    place(i, t);
}

void timers::down(std::size_t i) {
    timer* t = heap_[i];
    const std::size_t n = heap_.size();
    for (;;) {
        std::size_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && heap_[child + 1]->deadline_ < heap_[child]->deadline_) ++child;
        if (t->deadline_ <= heap_[child]->deadline_) break;
        place(i, heap_[child]);
        i = child;
    }
    place(i, t);
}

void timers::remove_at(std::size_t i) {
    timer* gone = heap_[i];
    timer* last = heap_.back();
    heap_.pop_back();
    gone->slot_ = timer::none;
    if (gone == last) return;
    place(i, last);
    if (i > 0 && last->deadline_ < heap_[(i - 1) / 2]->deadline_) up(i);
    else down(i);
}

void timers::arm(timer& t, clock::time_point at) {
    t.owner_ = this;
    t.deadline_ = at;
    if (t.armed()) {
        up(t.slot_);
        down(t.slot_);
        return;
    }
    heap_.push_back(&t);
    t.slot_ = heap_.size() - 1;
    up(t.slot_);
}

void timers::cancel(timer& t) {
    if (t.armed() && t.owner_ == this) remove_at(t.slot_);
}

int timers::next_timeout_ms(clock::time_point now) const {
    if (heap_.empty()) return -1;
    const auto left = heap_.front()->deadline_ - now;
    if (left <= clock::duration::zero()) return 0;
    // Rounded up: waking a little late is fine, a little early only costs a loop turn.
    return static_cast<int>(std::min<std::int64_t>(
        std::chrono::ceil<std::chrono::milliseconds>(left).count(), 24 * 3600 * 1000));
}

std::size_t timers::fire_expired(clock::time_point now) {
    std::size_t fired = 0;
    while (!heap_.empty() && heap_.front()->deadline_ <= now) {
        timer* t = heap_.front();
        remove_at(0);
        ++fired;
        t->fire();  // may arm timers, this one included
    }
    return fired;
}

}  // namespace spliced::net
