// The worker threads: each with its own io_context, its own SO_REUSEPORT listener on every listen address and
// the sessions it accepted. A reload's route table goes in on every worker's own thread.
#pragma once

#include "net/asio.hpp"
#include "proxy/route_table.hpp"
#include "proxy/session.hpp"

#include <atomic>
#include <memory>
#include <vector>

namespace spliced::app {

class workers {
public:
    // `env`: what every session gets (its `live` and `data` are set per worker); `engine`: the sockmap engine,
    // null when not loaded.
    workers(unsigned count, proxy::session_env env, datapath::sockmap_engine* engine);
    ~workers();
    workers(const workers&) = delete;
    workers& operator=(const workers&) = delete;

    // Listeners on every address of `table`, on every worker (throws naming an address it cannot bind).
    void open(const proxy::route_table& table);
    // Starts the threads: accept loops, sessions, the byte reports.
    void start();

    struct listener_slot;
    // What a reload binds before anything changes: each worker's listener on the addresses of `table` it has
    // not yet (throws naming an address it cannot bind; nothing is in use until swap()).
    class added {
    public:
        added();
        ~added();

    private:
        friend class workers;
        std::vector<std::vector<std::shared_ptr<listener_slot>>> per_worker_;
    };
    std::unique_ptr<added> bind_new(const proxy::route_table& table);
    // On every worker's thread: `table`'s routes on the kept listeners, the added ones accepting, the others
    // closed (their sessions run on), the next sessions' access log. Returns once every worker did.
    net::awaitable<void> swap(const proxy::route_table& table, std::unique_ptr<added> listeners,
                              std::shared_ptr<spdlog::logger> access_log);

    void stop_accepting();  // every listener closes: a drain
    void cut_sessions();    // every open session is cut short (reset, access-log line)
    // Stops and joins the threads; then sessions still open end at once (reset, access-log line). Returns how
    // many did.
    std::size_t stop();
    unsigned size() const { return static_cast<unsigned>(workers_.size()); }

private:
    struct worker;
    // On `w`'s thread (or before it runs): the slot's listener goes into `w`'s event core.
    void start_accepting(worker& w, listener_slot& slot);

    std::vector<std::unique_ptr<worker>> workers_;
    std::atomic<std::uint64_t> next_id_{1};
    bool stopped_ = false;
};

}  // namespace spliced::app
