// The userspace paths' state machine on real sockets: copy first, splice for bulk, every split of reads and
// writes, partial sends, half-closes, urgent bytes, resets, the idle timeout and the turn budget.
#include "rig.hpp"

#include <fcntl.h>
#include <filesystem>
#include <sys/resource.h>

using namespace io_test;
using datapath::end_reason;
using datapath::kind;

namespace {

// Each userspace plan, named for the test's sections.
const std::pair<const char*, datapath::plan> userspace_plans[] = {{"copy", rig::copy()}, {"splice", rig::splice()}};

int send_buffer_of(int fd) {
    int size = 0;
    REQUIRE_FALSE(sys::send_buffer(fd, size));
    return size;
}

}  // namespace

TEST_CASE("bytes sent one at a time each way arrive whole and in order, and both FINs end the pair as completed") {
    for (const auto& [name, plan] : userspace_plans) {
        SECTION(name) {
            rig r;
            r.engage(plan);
            const std::string request = "GET / HTTP/1.0\r\n\r\n", response = "HTTP/1.0 200 OK\r\n\r\nbody";
            for (char c : request) r.send_all(r.client(), std::string(1, c));
            CHECK(r.read(r.backend(), request.size()).bytes == request);
            for (char c : response) r.send_all(r.backend(), std::string(1, c));
            CHECK(r.read(r.client(), response.size()).bytes == response);
            REQUIRE(::shutdown(r.client(), SHUT_WR) == 0);
            CHECK(r.read(r.backend(), 1).eof);  // the FIN went on after every byte
            CHECK_FALSE(r.ended());             // the other direction is still open
            r.send_all(r.backend(), "late answer");
            CHECK(r.read(r.client(), 11).bytes == "late answer");
            REQUIRE(::shutdown(r.backend(), SHUT_WR) == 0);
            CHECK(r.read(r.client(), 1).eof);
            REQUIRE(r.until([&] { return r.ended(); }));
            CHECK(r.reason() == end_reason::completed);
            CHECK(r.pair->report().from_client == request.size());
            CHECK(r.pair->report().from_upstream == response.size() + 11);
            CHECK(r.owner.handoffs == std::vector<kind>{plan.path});
        }
    }
}

TEST_CASE("the bytes to send first (a PROXY header) reach the backend before any byte of the client") {
    rig r;
    r.send_all(r.client(), "client-spoke-first");
    r.engage(rig::copy(), 10s, "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n");
    CHECK(r.read(r.backend(), 32 + 18).bytes == "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nclient-spoke-first");
}

TEST_CASE("copy first: an exchange of small messages on a splice route never takes a pipe") {
    rig r;
    const int pipes_before = open_pipes();
    r.engage(rig::splice());
    for (int i = 0; i < 50; ++i) {
        const auto msg = pattern(1000, static_cast<unsigned>(i));
        r.send_all(r.client(), msg);
        REQUIRE(r.read(r.backend(), msg.size()).bytes == msg);
        r.send_all(r.backend(), msg);
        REQUIRE(r.read(r.client(), msg.size()).bytes == msg);
    }
    CHECK(open_pipes() == pipes_before);
    CHECK(r.resources.pipes.size() == 0);
}

TEST_CASE("a bulk transfer on splice takes a pipe only after a read filled the copy buffer, and gives it back empty") {
    rig r;
    const int pipes_before = open_pipes();
    r.engage(rig::splice());
    const auto data = pattern(8 << 20, 3);
    CHECK(diff(r.transfer(r.client(), r.backend(), data), data) == "");
    CHECK(open_pipes() > pipes_before);         // a pipe was made for the bulk reads...
    CHECK(r.resources.pipes.size() >= 1);       // ...and is back in the pool, empty
    const auto small = std::string("after the bulk: a small one");
    r.send_all(r.client(), small);
    CHECK(r.read(r.backend(), small.size()).bytes == small);
}

TEST_CASE("a bulk transfer on splice with no descriptor left for a pipe runs on copy, intact, and its path log "
          "says so") {
    rig r;
    r.engage(rig::splice());
    // Descriptors are numbered lowest first: a soft limit just past the highest open one leaves none for a pipe.
    int highest = 0;
    for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd"))
        highest = std::max(highest, std::stoi(e.path().filename().string()));
    rlimit before{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &before) == 0);
    rlimit lowered = before;
    lowered.rlim_cur = static_cast<rlim_t>(highest) + 1;
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &lowered) == 0);
    std::vector<sys::unique_fd> fillers;  // any hole below the limit (the listing's own descriptor, say)
    for (int fd; fillers.size() < 4096 && (fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;)
        fillers.emplace_back(fd);
    int probe[2];
    const bool pipe_refused = ::pipe2(probe, O_CLOEXEC) != 0 && errno == EMFILE;
    INFO("highest descriptor " << highest << ", " << fillers.size() << " holes filled");
    const auto data = pattern(4 << 20, 5);
    const std::string got = r.transfer(r.client(), r.backend(), data);
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &before) == 0);
    REQUIRE(pipe_refused);
    CHECK(diff(got, data) == "");
    CHECK(r.resources.pipes.size() == 0);
    CHECK(r.pair->report().paths.text() == "splice+copy");
}

TEST_CASE("a bulk transfer on copy takes no pipe at all") {
    rig r;
    const int pipes_before = open_pipes();
    r.engage(rig::copy());
    const auto data = pattern(8 << 20, 4);
    CHECK(diff(r.transfer(r.backend(), r.client(), data), data) == "");
    CHECK(open_pipes() == pipes_before);
}

TEST_CASE("a send cut short holds the rest in a buffer of its own until the backend takes it; nothing lost") {
    for (const auto& [name, plan] : userspace_plans) {
        SECTION(name) {
            rig r;
            r.engage(plan);
            const auto data = pattern(48 << 20, 5);
            // The client sends while the backend reads nothing yet: every buffer on the way fills up.
            std::size_t sent = 0;
            for (int i = 0; i < 3000 && sent < data.size(); ++i) {
                const ssize_t n = ::send(r.client(), data.data() + sent, data.size() - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (n > 0) sent += static_cast<std::size_t>(n);
                r.turn(0);
            }
            CHECK(sent < data.size());  // backpressure reached the client: the proxy does not read without end
            // Now the backend reads in small pieces while the client sends the rest.
            std::string got;
            const auto deadline = clock_type::now() + 20s;
            std::vector<char> buf(16384);
            while (got.size() < data.size() && clock_type::now() < deadline) {
                if (sent < data.size()) {
                    const ssize_t n = ::send(r.client(), data.data() + sent, data.size() - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
                    if (n > 0) sent += static_cast<std::size_t>(n);
                }
                const ssize_t m = ::recv(r.backend(), buf.data(), buf.size(), MSG_DONTWAIT);
                if (m > 0) got.append(buf.data(), static_cast<std::size_t>(m));
                r.turn(0);
            }
            CHECK(got.size() == data.size());
            CHECK(diff(got, data) == "");
        }
    }
}

TEST_CASE("a FIN with and without bytes before it: the bytes go on, then the FIN, each direction on its own") {
    for (const auto& [name, plan] : userspace_plans) {
        SECTION(std::string(name) + ", bytes then FIN in one go") {
            rig r;
            r.engage(plan);
            r.send_all(r.client(), "last words");
            REQUIRE(::shutdown(r.client(), SHUT_WR) == 0);
            const auto got = r.read(r.backend(), 100);
            CHECK(diff(got.bytes, "last words") == "");
            CHECK(got.eof);
        }
        SECTION(std::string(name) + ", a FIN alone") {
            rig r;
            r.engage(plan);
            REQUIRE(::shutdown(r.backend(), SHUT_WR) == 0);
            const auto got = r.read(r.client(), 100);
            CHECK(got.bytes.empty());
            CHECK(got.eof);
            r.send_all(r.client(), "still open this way");
            CHECK(r.read(r.backend(), 19).bytes == "still open this way");
        }
        SECTION(std::string(name) + ", a FIN before the pair starts") {
            rig r;
            r.send_all(r.client(), "early");
            REQUIRE(::shutdown(r.client(), SHUT_WR) == 0);
            r.engage(plan);
            const auto got = r.read(r.backend(), 100);
            CHECK(diff(got.bytes, "early") == "");
            CHECK(got.eof);
        }
    }
}

TEST_CASE("an urgent byte goes on in order as an ordinary byte, on every userspace path, bulk or not") {
    for (const auto& [name, plan] : userspace_plans) {
        for (const std::size_t before : {std::size_t{10}, std::size_t{300000}}) {
            SECTION(std::string(name) + ", " + std::to_string(before) + " bytes before the mark") {
                rig r;
                r.engage(plan);
                const auto head = pattern(before, 11), tail = pattern(50000, 12);
                std::string got = r.transfer(r.client(), r.backend(), head);
                REQUIRE(::send(r.client(), "!", 1, MSG_OOB | MSG_NOSIGNAL) == 1);
                got += r.read(r.backend(), 1).bytes;
                got += r.transfer(r.client(), r.backend(), tail);
                CHECK(diff(got, head + "!" + tail) == "");
            }
        }
        SECTION(std::string(name) + ", a mark right before the FIN") {
            rig r;
            r.engage(plan);
            const auto head = pattern(200000, 13);
            r.send_all(r.client(), head);
            REQUIRE(::send(r.client(), "!", 1, MSG_OOB | MSG_NOSIGNAL) == 1);
            REQUIRE(::shutdown(r.client(), SHUT_WR) == 0);
            const auto got = r.read(r.backend(), head.size() + 2);
            CHECK(diff(got.bytes, head + "!") == "");
            CHECK(got.eof);  // ended cleanly, and not short: splice's 0 at the mark was not taken for EOF
        }
    }
}

TEST_CASE("a reset at each step ends the pair at once as that side's reset, and the other side gets a reset too") {
    for (const auto& [name, plan] : userspace_plans) {
        SECTION(std::string(name) + ", the client resets while idle") {
            rig r;
            r.engage(plan);
            reset(r.client_end);
            REQUIRE(r.until([&] { return r.ended(); }));
            CHECK(r.reason() == end_reason::client_reset);
            CHECK(r.read(r.backend(), 1).error == ECONNRESET);
        }
        SECTION(std::string(name) + ", the backend resets while the client streams") {
            rig r;
            r.engage(plan);
            const auto data = pattern(1 << 20, 14);
            r.transfer(r.client(), r.backend(), data.substr(0, 100000));
            reset(r.backend_end);
            for (int i = 0; i < 100 && !r.ended(); ++i) {
                ::send(r.client(), data.data(), 65536, MSG_DONTWAIT | MSG_NOSIGNAL);
                r.turn(1);
            }
            REQUIRE(r.until([&] { return r.ended(); }));
            CHECK(r.reason() == end_reason::upstream_reset);
            const auto got = r.read(r.client(), SIZE_MAX, 2000ms);
            CHECK(got.error == ECONNRESET);
            CHECK_FALSE(got.eof);  // never a FIN after a short stream
        }
        SECTION(std::string(name) + ", the client resets while the proxy holds bytes for a full backend") {
            rig r;
            const int small = 4096;
            REQUIRE(::setsockopt(r.backend(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small) == 0);
            r.engage(plan);
            const auto data = pattern(4 << 20, 15);
            for (int i = 0; i < 300; ++i) {
                ::send(r.client(), data.data(), data.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
                r.turn(0);
            }
            reset(r.client_end);
            REQUIRE(r.until([&] { return r.ended(); }));
            CHECK(r.reason() == end_reason::client_reset);
            const auto got = r.read(r.backend(), SIZE_MAX, 3000ms);
            CHECK(got.error == ECONNRESET);
        }
        SECTION(std::string(name) + ", the client resets after its own FIN, once its answer went out: the "
                                    "backend's FIN then ends the pair completed; bytes sent after it meet the reset") {
            // A TLS client that half-closes, reads its answer and closes resets when the backend's close_notify
            // arrives: nothing of either stream was lost.
            for (const bool more_after : {false, true}) {
                rig r;
                r.engage(plan);
                REQUIRE(::shutdown(r.client(), SHUT_WR) == 0);
                REQUIRE(r.read(r.backend(), 1).eof);
                r.send_all(r.backend(), "answer");
                REQUIRE(r.read(r.client(), 6).bytes == "answer");
                reset(r.client_end);
                for (int i = 0; i < 20; ++i) r.turn(1);
                CHECK_FALSE(r.ended());  // its direction is done: the reset waits for what the backend does
                if (more_after) {
                    for (int i = 0; i < 50 && !r.ended(); ++i) {
                        ::send(r.backend(), "more", 4, MSG_DONTWAIT | MSG_NOSIGNAL);
                        r.turn(1);
                    }
                    REQUIRE(r.until([&] { return r.ended(); }));
                    CHECK(r.reason() == end_reason::client_reset);
                } else {
                    REQUIRE(::shutdown(r.backend(), SHUT_WR) == 0);
                    REQUIRE(r.until([&] { return r.ended(); }));
                    CHECK(r.reason() == end_reason::completed);
                }
            }
        }
        SECTION(std::string(name) + ", the backend resets after the client's FIN went on") {
            rig r;
            r.engage(plan);
            REQUIRE(::shutdown(r.client(), SHUT_WR) == 0);
            REQUIRE(r.read(r.backend(), 1).eof);
            reset(r.backend_end);
            REQUIRE(r.until([&] { return r.ended(); }));
            CHECK(r.reason() == end_reason::upstream_reset);
        }
    }
}

TEST_CASE("a pair that moves nothing ends at its idle timeout; one that keeps moving, or feeds a slow reader, does not") {
    SECTION("idle") {
        rig r;
        const auto start = clock_type::now();
        r.engage(rig::copy(), 200ms);
        REQUIRE(r.until([&] { return r.ended(); }, 2000ms));
        const auto lasted = clock_type::now() - start;
        CHECK(r.reason() == end_reason::idle_timeout);
        CHECK(lasted >= 200ms);
        CHECK(lasted < 400ms);
        CHECK(r.read(r.client(), 1).error == ECONNRESET);
    }
    SECTION("a message every 50 ms keeps it open") {
        rig r;
        r.engage(rig::copy(), 200ms);
        for (int i = 0; i < 12; ++i) {
            r.send_all(r.client(), "ping");
            REQUIRE(r.read(r.backend(), 4).bytes == "ping");
            r.until([] { return false; }, 50ms);
        }
        CHECK_FALSE(r.ended());
    }
    SECTION("a slow reader still being fed is not idle, though userspace moves nothing for longer than the timeout") {
        // The proxy's send queue to the backend is full; the kernel wakes the writer only once half of it is free
        // again, which at this pace takes seconds: meanwhile only the kernel's counters move.
        rig r;
        r.engage(rig::copy(), 300ms);
        const auto data = pattern(32 << 20, 16);
        std::size_t sent = 0;
        std::string got;
        std::vector<char> buf(65536);
        const auto start = clock_type::now();
        auto last_read = start;
        while (clock_type::now() - start < 2500ms && !r.ended()) {
            if (sent < data.size()) {
                const ssize_t n = ::send(r.client(), data.data() + sent, data.size() - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (n > 0) sent += static_cast<std::size_t>(n);
            }
            if (clock_type::now() - last_read >= 50ms) {  // 64 KiB per 50 ms: about 1.3 MB/s (a smaller read opens no window on loopback's 64 KiB MSS)
                last_read = clock_type::now();
                const ssize_t m = ::recv(r.backend(), buf.data(), buf.size(), MSG_DONTWAIT);
                if (m > 0) got.append(buf.data(), static_cast<std::size_t>(m));
            }
            r.turn(5);
        }
        INFO("after " << std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - start).count()
                      << " ms, " << got.size() << " bytes read, reason "
                      << (r.ended() ? datapath::to_string(r.reason()) : "-"));
        CHECK_FALSE(r.ended());
        CHECK(got.size() > 0);
        CHECK(diff(got, data.substr(0, got.size())) == "");
    }
}

TEST_CASE("at its lifetime a pair is reset on both sides, mid-transfer or idle, on every path; none: it runs on") {
    auto check_cut = [](rig& r, std::chrono::milliseconds lifetime, clock_type::time_point start) {
        REQUIRE(r.until([&] { return r.ended(); }, lifetime + 2000ms));
        const auto lasted = clock_type::now() - start;
        CHECK(r.reason() == end_reason::lifetime);
        CHECK(lasted >= lifetime);
        CHECK(lasted < lifetime + 300ms);
        // Both sides get a reset, never a FIN that would pass a cut stream off as whole.
        CHECK(r.read(r.client(), 64 << 20, 2000ms).error == ECONNRESET);
        CHECK(r.read(r.backend(), 64 << 20, 2000ms).error == ECONNRESET);
    };
    for (auto how : {rig::copy(), rig::splice(), rig::automatic()}) {
        INFO("path " << datapath::to_string(how.path) << (how.promote_to_sockmap ? " (auto)" : ""));
        SECTION(std::string("mid-transfer on ") + datapath::to_string(how.path) + (how.promote_to_sockmap ? " auto" : "")) {
            rig r(how.promote_to_sockmap ? engine() : nullptr);
            const auto start = clock_type::now();
            r.engage(how, 10s, "", 0, 300ms);
            // A bulk transfer that outlasts the lifetime: the backend reads it slowly.
            const auto data = pattern(16 << 20, 31);
            std::size_t sent = 0;
            std::vector<char> buf(16384);
            while (!r.ended() && clock_type::now() - start < 2000ms) {
                if (sent < data.size()) {
                    const ssize_t n = ::send(r.client(), data.data() + sent, data.size() - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
                    if (n > 0) sent += static_cast<std::size_t>(n);
                }
                (void)::recv(r.backend(), buf.data(), buf.size(), MSG_DONTWAIT);
                r.turn(5);
            }
            check_cut(r, 300ms, start);
        }
    }
    SECTION("idle on sockmap") {
        rig r(engine());
        const auto start = clock_type::now();
        r.engage(rig::sockmap(), 10s, "", 0, 300ms);
        check_cut(r, 300ms, start);
    }
    SECTION("no lifetime: an idle pair runs on") {
        rig r;
        r.engage(rig::copy(), 10s);
        r.until([] { return false; }, 500ms);
        CHECK_FALSE(r.ended());
    }
}

TEST_CASE("one turn moves at most the turn's budget of a pair, then the pair asks for another turn") {
    rig r;
    const int big = 8 << 20;
    REQUIRE(::setsockopt(r.backend(), SOL_SOCKET, SO_RCVBUF, &big, sizeof big) == 0);
    r.engage(rig::copy());
    const auto data = pattern(2 << 20, 17);
    r.send_all(r.client(), data.substr(0, 1 << 20));  // turns the core meanwhile; let it settle
    r.until([] { return false; }, 20ms);
    int queued = 0;
    REQUIRE_FALSE(sys::receive_queue_bytes(r.backend(), queued));
    const auto before = static_cast<std::size_t>(queued);
    std::size_t sent = 0;
    while (sent < (1u << 20)) {
        const ssize_t n = ::send(r.client(), data.data() + sent, (1u << 20) - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n <= 0) break;
        sent += static_cast<std::size_t>(n);
    }
    r.turn(0);  // one turn: a slice when its socket's event comes, one more after every other ready connection's
    REQUIRE_FALSE(sys::receive_queue_bytes(r.backend(), queued));
    CHECK(static_cast<std::size_t>(queued) - before <= 2 * (256 * 1024 + 64 * 1024));
    CHECK(static_cast<std::size_t>(queued) - before < sent);
    r.until([] { return false; }, 50ms);  // the next turns move the rest
    CHECK(r.read(r.backend(), (1u << 20) + sent).bytes.size() == (1u << 20) + sent);
}

TEST_CASE("no path fixes a socket's send buffer: a slow reader holds what the kernel's autotuning allows, no more") {
    for (const auto& [name, plan] : userspace_plans) {
        SECTION(name) {
            rig r;
            r.engage(plan);
            r.transfer(r.client(), r.backend(), pattern(4 << 20, 18));
            CHECK(send_buffer_of(r.proxy_upstream()) <= 4 << 20);
        }
    }
}
