// The sessions of one worker thread that are still open: what a drain timeout cuts, what the periodic byte
// report reads, and (later) what the admin API lists and kills.
#pragma once

#include <cstddef>

namespace spliced::proxy {

// Used from that worker's thread only (or, once it has stopped, from the thread that stopped it).
class session_registry {
public:
    // What the registry knows of a session.
    class entry {
    public:
        // Asks the session to end now, as cut short: it resets both sides and logs `end=shutdown` (at once once
        // its pair runs; a session still being set up ends within its timeouts).
        virtual void cut() = 0;
        // The same, done at once: for sessions left when the worker has stopped and runs nothing. A session its
        // pair owned is destroyed by it.
        virtual void finish_cut() = 0;
        // Adds the bytes moved since the last call to the route's byte counters (open connections
        // are counted periodically, not only when they end).
        virtual void report_bytes() = 0;

    protected:
        ~entry() = default;

    private:
        friend class session_registry;
        entry* prev_ = nullptr;
        entry* next_ = nullptr;
    };
    void add(entry& e);
    void remove(entry& e);
    // cut() on every open session; returns how many there were.
    std::size_t cut_all();
    // finish_cut() on every open session; returns how many there were.
    std::size_t finish_all();
    // report_bytes() on every open session.
    void report_all();

private:
    entry* head_ = nullptr;
};

}  // namespace spliced::proxy
