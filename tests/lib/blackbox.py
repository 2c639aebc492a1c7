"""What the Python black-box suites (pool, reload, metrics) share: their command line, the case loop with its
report, scraping spliced's /metrics. Their processes, echo servers and log readers come from the interop
suite (tests/interop/run.py), which this module puts on the import path as `interop`.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "interop"))
import run as interop  # noqa: E402

SKIP = 77
DATAPATHS = ("sockmap", "splice", "copy", "auto")


class World:
    """A suite's state, handed to every case: the binary, the data path, a temp dir, what to stop at the end."""

    def __init__(self, name, binary, datapath):
        self.name, self.binary, self.datapath = name, os.path.abspath(binary), datapath
        self.tmp = tempfile.mkdtemp(prefix=f"spliced-{name}-")
        self.all_procs = []  # interop.Procs of every case, stopped after each case and at the end
        self.servers = []    # objects with close(), closed at the end
        self.cleanups = []   # callables, called at the end


def arguments(doc, budget, per_datapath=True):
    """The suites' common command line."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--binary", required=True)
    if per_datapath:
        ap.add_argument("--datapath", required=True, choices=DATAPATHS)
    ap.add_argument("--budget", type=float, default=budget, help=f"seconds for the whole suite (default {budget:.0f})")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--case", type=int, action="append", help="run only case N (repeatable)")
    return ap.parse_args()


def require(name, what_root_is_for, tools=()):
    """None when the suite can run; else the exit code, having said why: 77 (skipped) without root or a tool,
    1 when a tool is missing under CI. `tools`: (name, Debian package) pairs; found ones are returned in a dict
    through the second element of the result."""
    if os.geteuid() != 0:
        print(f"{name}: needs root ({what_root_is_for}); skipped")
        return SKIP, {}
    found, path = {}, os.environ.get("PATH", "") + ":/usr/bin:/usr/sbin"
    for tool, package in tools:
        where = shutil.which(tool, path=path)
        if not where:
            if os.environ.get("CI"):
                print(f"{name}: FAIL: {tool} missing under CI (scripts/install-deps installs {package})")
                return 1, {}
            print(f"{name}: {tool} missing; skipped (apt-get install {package})")
            return SKIP, {}
        found[tool] = where
    return None, found


def sanitized(binary):
    """True for an AddressSanitizer build (its allocator keeps freed memory in quarantine: RSS checks do not apply)."""
    r = subprocess.run(["ldd", binary], capture_output=True, text=True)
    return "libasan" in r.stdout


def run_cases(w, cases, args):
    """Runs the cases (all, or those --case names, 1-based) with the budget; prints each one's time, the last
    daemon's log tail after a failure, and a summary line; returns the exit code."""

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    interop.BUDGET = interop.Budget(args.budget)
    print(f"{w.name}: " + (f"datapath={w.datapath} " if w.datapath else "") + f"binary={w.binary} tmp={w.tmp}",
          flush=True)
    results = []
    try:
        for f in [f for i, f in enumerate(cases, 1) if not args.case or i in args.case]:
            started = time.monotonic()
            try:
                ok = f(w).passed
            except (interop.Failure, OSError) as e:
                print(f"    FAIL {e!r}", flush=True)
                ok = False
            print(f"    ({time.monotonic() - started:.1f} s)", flush=True)
            if not ok and w.all_procs:
                p = w.all_procs[-1]
                log = interop.tail(p.out("spliced") + p.err("spliced"), 15)
                print("    spliced log tail:\n" + "\n".join("    | " + l for l in log.splitlines()), flush=True)
            results.append((f.__name__, ok))
            for procs in w.all_procs:
                procs.stop_all()
    finally:
        for procs in w.all_procs:
            procs.stop_all()
        for s in w.servers:
            s.close()
        for cleanup in w.cleanups:
            try:
                cleanup()
            except Exception as e:  # noqa: BLE001 - report it and go on with the rest
                print(f"cleanup failed: {e!r}", flush=True)
    failed = [n for n, ok in results if not ok]
    print(f"{w.name}: {len(results) - len(failed)} passed, {len(failed)} failed"
          + (f": {', '.join(failed)}" if failed else "") + f" in {interop.BUDGET.elapsed():.1f} s", flush=True)
    if failed or args.keep:
        print(f"logs kept in {w.tmp}")
    else:
        shutil.rmtree(w.tmp, ignore_errors=True)
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------------
# A daemon whose config the case rewrites, and an echo server that counts


class EchoServer(interop.EchoServer):
    """The interop suite's echo server, counting the connections it accepted."""

    def __init__(self, name):
        self.accepted = 0
        super().__init__(name)

    def _serve(self, c):
        self.accepted += 1
        super()._serve(c)


class Daemon(interop.Daemon):
    """interop.Daemon in a directory of its own under the suite's temp dir, stopped with the suite's processes."""

    def __init__(self, w, name, conf_text):
        tmp = os.path.join(w.tmp, name)
        os.makedirs(tmp)
        procs = interop.Procs(tmp)
        w.all_procs.append(procs)
        super().__init__(procs, w.binary, tmp, conf_text)

    def sockhash_ids(self):
        """The ids of the BPF maps named like the SOCKHASH that the daemon holds."""
        ids = set()
        fd_dir = f"/proc/{self.proc.pid}/fdinfo"
        for fd in os.listdir(fd_dir):
            try:
                with open(os.path.join(fd_dir, fd)) as f:
                    info = f.read()
            except OSError:
                continue
            m = re.search(r"map_id:\s*(\d+)", info)
            if m and "map_type:\t18" in info:  # BPF_MAP_TYPE_SOCKHASH
                ids.add(int(m.group(1)))
        return ids


class ConnectLoop:
    """Threads connecting to `port` in a tight loop (connect, a 5-byte echo, close) until stop(): counts what
    went through and what was refused or reset."""

    def __init__(self, port, threads):
        self.port, self.ok, self.problems = port, 0, []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                with socket.create_connection((interop.LO, self.port), timeout=5) as s:
                    s.sendall(b"hello")
                    if s.recv(16) != b"hello":
                        raise OSError("no echo")
                self.ok += 1
            except OSError as e:
                self.problems.append(repr(e))

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def report(self):
        return (f"{self.ok} connections, {len(self.problems)} refused or reset"
                + (f" (first: {self.problems[0]})" if self.problems else ""))


# ---------------------------------------------------------------------------------------------------
# Metrics


def scrape(port, host=interop.LO):
    """The samples of spliced's /metrics: [(name, {label: value}, value)]."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return parse_samples(text)


def parse_samples(text):
    out = []
    for line in text.splitlines():
        m = re.match(r'^(\w+)(?:\{(.*)\})? (\S+)$', line)
        if m:
            out.append((m.group(1), dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or "")), float(m.group(3))))
    return out


def metric(samples_or_port, name, **labels):
    """The sum of `name` over the series whose labels include `labels` (a scrape, or a port to scrape)."""
    samples = scrape(samples_or_port) if isinstance(samples_or_port, int) else samples_or_port
    return sum(v for n, ls, v in samples if n == name and all(ls.get(k) == x for k, x in labels.items()))


def has_series(samples, name, **labels):
    return any(n == name and all(ls.get(k) == x for k, x in labels.items()) for n, ls, _ in samples)
