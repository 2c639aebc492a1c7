// The one place that includes Asio: aliases every other file uses.
#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

namespace spliced::net {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
template <typename T = void>
using awaitable = asio::awaitable<T>;
using asio::use_awaitable;
// Completion token that yields (error_code, results...) instead of throwing.
inline constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);
using namespace asio::experimental::awaitable_operators;

}  // namespace spliced::net
