// The standard process_* metrics (CPU, memory, descriptors, start time), read from /proc at scrape time.
#include "metrics/process.hpp"

#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <prometheus/client_metric.h>
#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>
#include <prometheus/metric_type.h>
#include <string>
#include <sys/resource.h>
#include <unistd.h>
#include <vector>

namespace spliced::metrics {

namespace {

// The whole of a small /proc file, read with one descriptor (none is spare when descriptors run out).
std::string read_proc(const char* path) {
    int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return {};
    std::string out;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof(buf));
        if (n <= 0) break;
        out.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    return out;
}

prometheus::MetricFamily family(const char* name, const char* help, prometheus::MetricType type, double value) {
    prometheus::MetricFamily f;
    f.name = name;
    f.help = help;
    f.type = type;
    prometheus::ClientMetric m;
    if (type == prometheus::MetricType::Counter) m.counter.value = value;
    else m.gauge.value = value;
    f.metric.push_back(std::move(m));
    return f;
}

class process_collectable final : public prometheus::Collectable {
public:
    std::vector<prometheus::MetricFamily> Collect() const override {
        using prometheus::MetricType;
        std::vector<prometheus::MetricFamily> out;
        const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
        const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
        // /proc/self/stat: fields after the command (which may hold spaces) start at field 3.
        const std::string stat = read_proc("/proc/self/stat");
        if (auto close = stat.rfind(')'); close != std::string::npos) {
            std::vector<std::string> f;
            std::size_t i = close + 2;
            while (i < stat.size()) {
                auto sp = stat.find(' ', i);
                if (sp == std::string::npos) sp = stat.size();
                f.push_back(stat.substr(i, sp - i));
                i = sp + 1;
            }
            // f[0] is field 3 (state): utime 14, stime 15, starttime 22, vsize 23, rss 24.
            if (f.size() > 21) {
                const double cpu = (std::stod(f[11]) + std::stod(f[12])) / ticks;
                out.push_back(family("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
                                     MetricType::Counter, cpu));
                out.push_back(family("process_virtual_memory_bytes", "Virtual memory size in bytes.", MetricType::Gauge,
                                     std::stod(f[20])));
                out.push_back(family("process_resident_memory_bytes", "Resident memory size in bytes.",
                                     MetricType::Gauge, std::stod(f[21]) * page));
                const std::string boot = read_proc("/proc/stat");
                if (auto at = boot.find("\nbtime "); at != std::string::npos) {
                    const double btime = std::stod(boot.substr(at + 7));
                    out.push_back(family("process_start_time_seconds",
                                         "Start time of the process since unix epoch in seconds.", MetricType::Gauge,
                                         btime + std::stod(f[19]) / ticks));
                }
            }
        }
        if (DIR* d = ::opendir("/proc/self/fd")) {
            double n = 0;
            while (const dirent* e = ::readdir(d))
                if (e->d_name[0] != '.') ++n;
            ::closedir(d);
            out.push_back(family("process_open_fds", "Number of open file descriptors.", MetricType::Gauge, n - 1));
        }
        rlimit lim{};
        if (::getrlimit(RLIMIT_NOFILE, &lim) == 0)
            out.push_back(family("process_max_fds", "Maximum number of open file descriptors.", MetricType::Gauge,
                                 static_cast<double>(lim.rlim_cur)));
        return out;
    }
};

}  // namespace

std::shared_ptr<prometheus::Collectable> make_process_collectable() { return std::make_shared<process_collectable>(); }

}  // namespace spliced::metrics
