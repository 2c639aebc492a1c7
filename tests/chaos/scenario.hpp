// Randomized socket-level fault scenarios: what the client and the backend of one proxied connection do, drawn
// from a seed with a fixed PRNG (xoshiro256** seeded by splitmix64, integer arithmetic only), so a seed names the
// same scenario on every machine, compiler and standard library.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace chaos {

// The daemon's route timeouts in the campaign's config. The connect timeout outlasts a SYN retransmission (1 s),
// so a backend whose accept queue is held for a moment still gets the connection.
constexpr std::uint32_t connect_timeout_ms = 2000;
constexpr std::uint32_t idle_timeout_ms = 3000;
// Every side of a scenario ends within this (from the scenario's start); a side still waiting then reports a hang.
constexpr std::uint32_t scenario_cap_ms = 10000;
// A backend connection that has not arrived this long after the scenario began (plus any hold and accept delay)
// never came.
constexpr std::uint32_t accept_budget_ms = 4000;

constexpr std::uint64_t KiB = 1024;
constexpr std::uint64_t MiB = 1024 * KiB;

class rng {
public:
    explicit rng(std::uint64_t seed);
    std::uint64_t next();
    // Uniform in [0, n); 0 if n is 0.
    std::uint64_t below(std::uint64_t n);
    // Uniform in [lo, hi].
    std::uint64_t between(std::uint64_t lo, std::uint64_t hi) { return lo + below(hi - lo + 1); }
    bool percent(unsigned p) { return below(100) < p; }
    // Spread over the magnitudes between lo (>= 1) and hi: as likely in [1, 2) KiB as in [512, 1024) KiB.
    std::uint64_t log_uniform(std::uint64_t lo, std::uint64_t hi);

private:
    std::uint64_t s_[4];
};

std::uint64_t splitmix64(std::uint64_t& state);

enum class step_kind {
    write,      // n bytes of the side's stream, in as many send() calls as the socket needs
    urgent,     // the next byte of the stream with MSG_OOB
    pause,      // n ms (reading goes on as the read policy says)
    wait_peer,  // until the first byte from the peer is readable (or EOF/RST), at most n ms
    shutdown,   // shutdown(SHUT_WR)
};

struct step {
    step_kind kind;
    std::uint64_t n = 0;
};

// What a side does once its steps are done.
enum class ending {
    drain,  // reads until EOF or RST (whatever its read policy), then close()
    close,  // close() at once, read or not
    reset,  // SO_LINGER {1, 0} + close(): an RST
};

enum class read_mode {
    eager,  // reads whatever arrives
    slow,   // slow_chunk bytes every slow_every_ms
    late,   // nothing until its steps are done
    never,  // nothing at all (only with an ending that is not drain)
};

// A window (from the side's start) in which the side does not read.
struct stall {
    std::uint32_t at_ms = 0, len_ms = 0;
};

struct side_plan {
    std::string style;  // how it was drawn: "normal", "vanish", "reset at once", ...
    std::vector<step> steps;
    ending end = ending::drain;
    read_mode reads = read_mode::eager;
    std::uint32_t slow_chunk = 0, slow_every_ms = 0;
    std::vector<stall> stalls;
    int rcvbuf = 0;  // SO_RCVBUF before the handshake (client: its socket; backend: its listener); 0: default

    // Bytes of the stream the steps write (the urgent byte included).
    std::uint64_t total() const;
    bool shuts_down() const;
    // Offset of the urgent byte in the stream, if the side sends one.
    std::optional<std::uint64_t> urgent_offset() const;
};

struct scenario {
    std::uint64_t seed = 0;
    side_plan client, backend;
    // The backend listener's accept queue is kept full this long from the start (0: not at all): the daemon's
    // upstream SYN is dropped and its retransmission (~1 s later) connects, so the client acts during the
    // upstream connect.
    std::uint32_t hold_ms = 0;
    // The backend accepts the (established) connection only this long after it may.
    std::uint32_t accept_delay_ms = 0;
    std::string profile;  // a scenario-wide shape drawn over both sides ("bulk into a stall"), if any

    std::uint64_t client_stream_seed() const;
    std::uint64_t backend_stream_seed() const;
    // Neither side resets or closes before its end of stream: both must then get the other's complete stream
    // and a clean EOF, and no reset.
    bool polite() const { return client.end == ending::drain && backend.end == ending::drain; }
    // The client resets before it reads anything: the daemon may not have connected upstream at all.
    bool client_resets_early() const;
};

scenario generate(std::uint64_t seed);

std::string describe(const side_plan& p);
// One line of tags for triage: "client reset during upstream connect, backend normal; urgent from backend; ...".
std::string tags(const scenario& s);
// Several lines: the seed, the scenario-wide settings, each side's plan.
std::string describe(const scenario& s);

const char* to_string(read_mode m);
const char* to_string(ending e);

}  // namespace chaos
