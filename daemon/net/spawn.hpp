// Starting a coroutine so that nothing escapes it silently: every co_spawn goes through here, and an
// exception that leaves the coroutine is logged with what it was (Beast's awaitable server does the same).
#pragma once

#include "net/asio.hpp"

#include <exception>
#include <spdlog/spdlog.h>
#include <string>
#include <type_traits>
#include <utility>

namespace spliced::net {

// Runs `task` on `ex`. `what` names it in the log line if an exception escapes: a string, or a callable that
// makes one only then (a connection's, which would otherwise cost an allocation per connection).
template <typename Executor, typename What>
void spawn(Executor&& ex, awaitable<void> task, What what) {
    asio::co_spawn(std::forward<Executor>(ex), std::move(task), [what = std::move(what)](std::exception_ptr e) {
        if (!e) return;
        std::string name;
        if constexpr (std::is_invocable_v<const What&>) name = what();
        else name = what;
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& ex) {
            spdlog::error("{} failed: {}", name, ex.what());
        } catch (...) {
            spdlog::error("{} failed", name);
        }
    });
}

}  // namespace spliced::net
