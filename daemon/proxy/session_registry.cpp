// The sessions of one worker thread that are still open.
#include "proxy/session_registry.hpp"

namespace spliced::proxy {

void session_registry::add(entry& e) {
    e.prev_ = nullptr;
    e.next_ = head_;
    if (head_) head_->prev_ = &e;
    head_ = &e;
}

void session_registry::remove(entry& e) {
    if (e.prev_) e.prev_->next_ = e.next_;
    else if (head_ == &e) head_ = e.next_;
    if (e.next_) e.next_->prev_ = e.prev_;
    e.prev_ = e.next_ = nullptr;
}

std::size_t session_registry::cut_all() {
    std::size_t n = 0;
    for (entry* e = head_; e; ++n) {
        entry* next = e->next_;  // a session cut may end (and leave the list) at once
        e->cut();
        e = next;
    }
    return n;
}

void session_registry::report_all() {
    for (entry* e = head_; e; e = e->next_) e->report_bytes();
}

std::size_t session_registry::finish_all() {
    std::size_t n = 0;
    for (entry* e = head_; e; ++n) {
        entry* next = e->next_;  // a session its pair owned goes at once
        e->finish_cut();
        e = next;
    }
    return n;
}

}  // namespace spliced::proxy
