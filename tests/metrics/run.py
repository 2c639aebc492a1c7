#!/usr/bin/python3
"""Metrics suite: the whole /metrics contract, scraped from the real binary and by a real Prometheus.

    tests/metrics/run.py --binary build/spliced [--budget 90]

Root only (exit 77 otherwise: the sockmap route). Without prometheus/promtool (Debian package
`prometheus`): exit 77, or a failure when $CI is set. One daemon with a route per data path (sockmap,
splice, copy, auto); every process is started here and stopped by its PID. Cases:

 1. every family whose labels come from the config exists at 0 before any traffic, for every route and
    backend; `promtool check metrics` has no complaint about a live scrape.
 2. bytes_total moves while a long connection is open (on every data path: open connections are counted
    at least every 10 s) and is exact once they end; the two histograms count the connections and their
    connects; sockmap_entries is 2 while the sockmap connection is open and 0 after; sockmap_capacity;
    the process_* metrics are sane.
 3. a real `prometheus` server (temp config and data dir, loopback) scrapes spliced and its query API
    returns spliced_connections_total for a route.
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from blackbox import DATAPATHS as PATHS, interop, parse_samples  # noqa: E402
import blackbox  # noqa: E402

from run import Case, Failure, Procs, free_ports, wait_until, LO  # noqa: E402


def scrape_text(port):
    with urllib.request.urlopen(f"http://{LO}:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def samples(text):
    return parse_samples(text)


def value(text, name, **labels):
    return blackbox.metric(parse_samples(text), name, **labels)


def has(text, name, **labels):
    return blackbox.has_series(parse_samples(text), name, **labels)


class LongConnection:
    """A client that sends `chunk` bytes every `every` s and reads the echo, until stop()."""

    def __init__(self, port, chunk=64 * 1024, every=0.1):
        self.s = socket.create_connection((LO, port), timeout=10)
        self.sent = self.received = 0
        self.errors = []
        self.stopping = threading.Event()
        self.chunk, self.every = chunk, every
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.writer = threading.Thread(target=self._write, daemon=True)
        self.reader.start()
        self.writer.start()

    def _write(self):
        data = os.urandom(self.chunk)
        try:
            while not self.stopping.is_set():
                self.s.sendall(data)
                self.sent += len(data)
                time.sleep(self.every)
            self.s.shutdown(socket.SHUT_WR)
        except OSError as e:
            self.errors.append(repr(e))

    def _read(self):
        try:
            while True:
                b = self.s.recv(1 << 20)
                if not b:
                    return
                self.received += len(b)
        except OSError as e:
            self.errors.append(repr(e))

    def stop(self):
        self.stopping.set()
        self.writer.join(10)
        self.reader.join(10)
        self.s.close()


def case_families(w):
    c = Case("1. every configured family exists at 0 from the start; promtool check metrics")
    print(c.title, flush=True)
    text = scrape_text(w.mport)
    missing = []
    for path in PATHS:
        r = f"r_{path}"
        for name, labels in (("spliced_connections_total", {"route": r, "datapath": "splice"}),
                             ("spliced_connections_active", {"route": r}),
                             ("spliced_bytes_total", {"route": r, "direction": "in"}),
                             ("spliced_bytes_total", {"route": r, "direction": "out"}),
                             ("spliced_connection_duration_seconds_count", {"route": r}),
                             ("spliced_upstream_connect_seconds_count", {"route": r}),
                             ("spliced_upstream_connect_errors_total", {"route": r, "backend": w.backend_addr,
                                                                        "reason": "refused"}),
                             ("spliced_backend_up", {"route": r, "backend": w.backend_addr}),
                             ("spliced_backend_connections_active", {"route": r, "backend": w.backend_addr}),
                             ("spliced_health_checks_total", {"route": r, "backend": w.backend_addr,
                                                              "result": "success"}),
                             ("spliced_route_no_backend_up_total", {"route": r}),
                             ("spliced_queue_timeouts_total", {"route": r}),
                             ("spliced_proxy_protocol_errors_total", {"route": r, "reason": "malformed"}),
                             ("spliced_sockmap_fallbacks_total", {"route": r, "reason": "map_full"}),
                             ("spliced_sockmap_promotions_total", {"route": r}),
                             ("spliced_sockmap_demotions_total", {"route": r})):
            if not has(text, name, **labels):
                missing.append(f"{name}{labels}")
    for name in ("spliced_config_reloads_total", "spliced_config_last_reload_success_timestamp_seconds",
                 "spliced_sockmap_entries", "spliced_sockmap_capacity", "spliced_sockmap_peer_miss_total",
                 "spliced_build_info", "process_cpu_seconds_total", "process_resident_memory_bytes",
                 "process_open_fds", "process_max_fds", "process_start_time_seconds"):
        if not has(text, name):
            missing.append(name)
    c.check(not missing, "every family is there" + (f"; missing: {missing}" if missing else ""))
    moved = [(n, ls, v) for n, ls, v in samples(text) if v != 0 and n.startswith("spliced_") and
             n not in ("spliced_build_info", "spliced_config_last_reload_success_timestamp_seconds",
                       "spliced_sockmap_capacity", "spliced_backend_up")
             and not n.endswith("_bucket") and "le" not in ls]
    c.check(not moved, "and at 0 before any traffic" + (f"; not: {moved[:3]}" if moved else ""))
    r = subprocess.run([w.promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    out = (r.stdout + r.stderr).decode().strip()
    c.check(r.returncode == 0 and not out, f"promtool check metrics: rc={r.returncode}" + (f": {out}" if out else
                                                                                         ", no complaint"))
    return c


def case_values(w):
    c = Case("2. byte counters move while connections are open; histograms, sockmap entries, process metrics")
    print(c.title, flush=True)
    conns = {p: LongConnection(w.ports[p]) for p in PATHS}
    time.sleep(1)
    text = scrape_text(w.mport)
    entries = value(text, "spliced_sockmap_entries")
    c.check(entries >= 2, f"spliced_sockmap_entries with the sockmap connection open: {entries:.0f}")
    c.check(value(text, "spliced_sockmap_capacity") == 2 * 4096, "spliced_sockmap_capacity = 2 x sockmap.capacity")
    # Within the 10 s period plus a margin, each route's counters have moved while its connection is open.
    try:
        wait_until(lambda: all(value(scrape_text(w.mport), "spliced_bytes_total", route=f"r_{p}", direction="in") > 0
                               for p in PATHS), 12, "bytes_total of every route to move", step=0.5)
        text = scrape_text(w.mport)
        moving = {p: int(value(text, "spliced_bytes_total", route=f"r_{p}", direction="in")) for p in PATHS}
        c.check(all(conns[p].stopping.is_set() is False for p in PATHS),
                f"bytes_total{{direction=in}} moved while the connections are open: {moving}")
    except Failure as e:
        c.check(False, str(e))
    for conn in conns.values():
        conn.stop()
    time.sleep(0.5)
    text = scrape_text(w.mport)
    problems = []
    for p in PATHS:
        conn = conns[p]
        got_in = value(text, "spliced_bytes_total", route=f"r_{p}", direction="in")
        got_out = value(text, "spliced_bytes_total", route=f"r_{p}", direction="out")
        if conn.errors or got_in != conn.sent or got_out != conn.received or conn.sent != conn.received:
            problems.append(f"{p}: sent {conn.sent} received {conn.received}, counted in {got_in:.0f} out "
                            f"{got_out:.0f} {conn.errors}")
    c.check(not problems, "once they end, bytes_total is exact both ways on every path" +
            (f": {problems}" if problems else ""))
    n_dur = {p: value(text, "spliced_connection_duration_seconds_count", route=f"r_{p}") for p in PATHS}
    n_conn = {p: value(text, "spliced_upstream_connect_seconds_count", route=f"r_{p}") for p in PATHS}
    long_ok = all(value(text, "spliced_connection_duration_seconds_bucket", route=f"r_{p}", le="1") == 0 for p in PATHS)
    c.check(all(v == 1 for v in n_dur.values()) and all(v == 1 for v in n_conn.values()) and long_ok,
            f"histograms: one connection per route ({n_dur}), one connect each, none under 1 s")
    c.check(value(text, "spliced_sockmap_entries") == 0, f"spliced_sockmap_entries after they ended: "
            f"{value(text, 'spliced_sockmap_entries'):.0f}")
    rss = value(text, "process_resident_memory_bytes")
    start = value(text, "process_start_time_seconds")
    fds = value(text, "process_open_fds")
    cpu = value(text, "process_cpu_seconds_total")
    c.check(1 << 20 < rss < 1 << 32 and abs(start - w.started) < 30 and 5 < fds < value(text, "process_max_fds")
            and cpu > 0, f"process: rss {rss / 1e6:.1f} MB, start {start - w.started:+.1f} s from launch, {fds:.0f} fds,"
            f" cpu {cpu:.2f} s")
    return c


PROM_CFG = """\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: spliced
    static_configs:
      - targets: ["{lo}:{port}"]
"""


def case_prometheus(w):
    c = Case("3. a real Prometheus scrapes spliced")
    print(c.title, flush=True)
    (pport,) = free_ports(1)
    cfg = os.path.join(w.tmp, "prometheus.yml")
    with open(cfg, "w") as f:
        f.write(PROM_CFG.format(lo=LO, port=w.mport))
    p = w.procs.start("prometheus", [w.prometheus, f"--config.file={cfg}", f"--storage.tsdb.path={w.tmp}/prom-data",
                                     f"--web.listen-address={LO}:{pport}"])
    q = urllib.request.quote('spliced_connections_total{route="r_splice",datapath="splice"}')

    def query():
        w.procs.check_alive("prometheus", p)
        try:
            with urllib.request.urlopen(f"http://{LO}:{pport}/api/v1/query?query={q}", timeout=2) as r:
                data = json.loads(r.read())
        except OSError:
            return None
        res = data.get("data", {}).get("result", [])
        return res[0] if res else None

    try:
        got = wait_until(query, 30, "Prometheus to return spliced_connections_total", step=0.5)
        c.check(float(got["value"][1]) >= 1, f"its query API returns spliced_connections_total"
                f"{{route=\"r_splice\"}} = {got['value'][1]} (job {got['metric'].get('job')})")
    except Failure as e:
        c.check(False, str(e) + "\n" + interop.tail(w.procs.err("prometheus"), 10))
    return c


def main():
    args = blackbox.arguments(__doc__, 90, per_datapath=False)
    code, tools = blackbox.require("metrics", "the sockmap route", [("prometheus", "prometheus"),
                                                                     ("promtool", "prometheus")])
    if code is not None:
        return code
    w = blackbox.World("metrics", args.binary, None)
    w.prometheus, w.promtool = tools["prometheus"], tools["promtool"]
    w.procs = Procs(w.tmp)  # one daemon for all cases: stopped at the end, not after each case
    w.cleanups.append(w.procs.stop_all)
    echo = interop.EchoServer("echo")
    w.servers.append(echo)
    w.backend_addr = f"{LO}:{echo.port}"
    ports = free_ports(len(PATHS) + 1)
    w.mport, w.ports = ports[0], dict(zip(PATHS, ports[1:]))
    conf = (f"workers: 2\nsockmap: {{ capacity: 4096 }}\nmetrics:\n  listen: {LO}:{w.mport}\n"
            f"log: {{ level: info, access_log: stdout }}\nroutes:\n")
    for p in PATHS:
        conf += (f"  - name: r_{p}\n    listen: \"{LO}:{w.ports[p]}\"\n    datapath: {p}\n"
                 f"    backends:\n      - address: {w.backend_addr}\n")
    w.started = time.time()
    interop.BUDGET = interop.Budget(args.budget)
    try:
        interop.Daemon(w.procs, w.binary, w.tmp, conf).close()
    except Failure as e:
        print(f"metrics: FAIL: spliced did not start: {e}")
        w.procs.stop_all()
        echo.close()
        return 1
    return blackbox.run_cases(w, [case_families, case_values, case_prometheus], args)


if __name__ == "__main__":
    sys.exit(main())
