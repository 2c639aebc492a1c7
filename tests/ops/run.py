#!/usr/bin/python3
"""Operations suite: what an operator's ordinary day does to a running spliced (reloads of a busy or
checked pool, routes that go away, a second start by mistake, a config gone wrong), through the real
binary. What it checks happens before a data path is engaged, so it runs once, on the default (auto).

    tests/ops/run.py --binary build/spliced [--budget 120]

Root only (exit 77 otherwise, like the other black-box suites). One daemon per case, each in its own temp
dir, told READY/RELOADING through a NOTIFY_SOCKET kept open here; every process is started here and
stopped by its PID. Cases:

 1. the backend queue across a reload: a client queued for a full backend after a SIGHUP is served as
    soon as the connection holding the slot (accepted before the reload) ends, not at its queue timeout.
 2. a reload that removes health_check: the backend the check held down is up at once (spliced_backend_up
    1) and takes new connections.
 3. a storm of 20 reloads keeps each backend's check schedule: no burst of health checks.
 4. a reload that drops a route and a backend: their series stay while a connection of the dropped
    route is open and leave /metrics once it ends; the kept ones keep their values.
 5. a second spliced on the same config is refused before it binds anything (with and without
    metrics:), naming the first one's pid, while a client loop through the first sees no reset.
 6. a reload with a config over the node cap, or with an access_log that cannot be opened, is refused
    with file:line:col; the daemon's memory after the refused reload stays near what it was; the log's
    missing directory is not created.
"""

import os
import re
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from blackbox import ConnectLoop, Daemon, EchoServer, interop, metric, scrape, has_series  # noqa: E402
import blackbox  # noqa: E402

from run import Case, free_ports, wait_until, LO  # noqa: E402


class PongServer:
    """Answers every read with "+PONG\\r\\n" (a redis PING check passes), counting connections."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind((LO, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def _serve(c):
        try:
            c.settimeout(10)
            while c.recv(4096):
                c.sendall(b"+PONG\r\n")
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.sock.close()


def head(metrics_port=None, extra=""):
    text = "workers: 2\ndrain_timeout: 2s\nlog:\n  level: info\n  access_log: stdout\n" + extra
    if metrics_port:
        text += f"metrics:\n  listen: {LO}:{metrics_port}\n"
    return text + "routes:\n"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def echo_once(port, payload=b"x", timeout=5):
    with socket.create_connection((LO, port), timeout=timeout) as s:
        s.sendall(payload)
        return s.recv(64)


# ---------------------------------------------------------------------------------------------------
# Cases


def case_queue(w):
    c = Case("1. a client queued for a full backend after a reload gets the slot the old table's connection frees")
    print(c.title, flush=True)
    e1 = EchoServer("e1")
    w.servers.append(e1)
    (la,) = free_ports(1)
    conf = head() + (f"  - name: q\n    listen: \"{LO}:{la}\"\n    timeouts: {{ queue: 4s }}\n    backends:\n"
                     f"      - {{ address: \"{LO}:{e1.port}\", max_connections: 1 }}\n")
    d = Daemon(w, "queue", conf)
    a = socket.create_connection((LO, la), timeout=5)
    a.sendall(b"a")
    c.check(a.recv(8) == b"a", "client A holds the backend's one slot")
    d.reload()
    b = socket.create_connection((LO, la), timeout=10)
    b.sendall(b"b")
    b.settimeout(0.4)
    try:
        early = b.recv(8)
    except socket.timeout:
        early = None
    c.check(early is None, f"client B, accepted after the reload, waits in the queue ({early!r})")
    a.close()
    closed = time.monotonic()
    b.settimeout(5)
    try:
        got = b.recv(8)
    except OSError as e:
        got = repr(e).encode()
    waited = time.monotonic() - closed
    c.check(got == b"b" and waited < 1.5, f"B is served {waited:.2f} s after A closed (queue timeout 4 s): {got!r}")
    b.close()
    wait_until(lambda: len(interop.access_lines(d.procs)) >= 2, 5, "two access-log lines")
    ends = sorted(l.get("end") for l in interop.access_lines(d.procs))
    c.check(ends == ["completed", "completed"], f"both end completed: {ends}")
    d.close()
    return c


def case_health_removed(w):
    c = Case("2. a reload that removes health_check brings the backend the check held down back at once")
    print(c.title, flush=True)
    good, bad = PongServer(), EchoServer("bad")  # the echo server answers PING with PING: the check fails
    w.servers += [good, bad]
    la, mport = free_ports(2)
    route = (f"  - name: h\n    listen: \"{LO}:{la}\"\n{{check}}    backends:\n"
             f"      - address: {LO}:{good.port}\n      - address: {LO}:{bad.port}\n")
    check = "    health_check: { interval: 1s, timeout: 500ms, rise: 1, fall: 1, send: \"PING\\r\\n\", expect: \"+PONG\" }\n"
    d = Daemon(w, "health-removed", head(mport) + route.format(check=check))
    bad_key = f"{LO}:{bad.port}"
    wait_until(lambda: metric(mport, "spliced_backend_up", route="h", backend=bad_key) == 0 and
               metric(mport, "spliced_health_checks_total", route="h", backend=bad_key, result="failure") >= 1,
               5, "the echo backend marked down by its check")
    c.check(True, "the check marks the backend that echoes PING down")
    d.write(head(mport) + route.format(check=""))
    d.reload()
    up = metric(mport, "spliced_backend_up", route="h", backend=bad_key)
    c.check(up == 1, f"right after the reload without health_check: spliced_backend_up = {up:.0f}")
    before = bad.accepted
    for _ in range(4):
        try:
            echo_once(la, b"hi")
        except OSError:
            pass
    c.check(bad.accepted - before == 2, f"round robin sends it 2 of 4 new connections ({bad.accepted - before})")
    c.check(re.search(r"backend 127\.0\.0\.1:%d is up: its route has no health check any more" % bad.port, d.log()),
            "the change is logged at warn with why")
    d.close()
    return c


def case_check_schedule(w):
    c = Case("3. 20 reloads in a row keep each backend's check schedule")
    print(c.title, flush=True)
    p1, p2 = PongServer(), PongServer()
    w.servers += [p1, p2]
    la, mport = free_ports(2)
    conf = head(mport) + (f"  - name: s\n    listen: \"{LO}:{la}\"\n"
                          "    health_check: { interval: 2s, timeout: 500ms, send: \"PING\\r\\n\", expect: \"+PONG\" }\n"
                          f"    backends:\n      - address: {LO}:{p1.port}\n      - address: {LO}:{p2.port}\n")
    d = Daemon(w, "schedule", conf)
    wait_until(lambda: metric(mport, "spliced_health_checks_total", route="s") >= 2, 5, "the first checks")
    started = time.monotonic()
    first = metric(mport, "spliced_health_checks_total", route="s")
    for _ in range(20):
        d.reload()
    time.sleep(0.5)
    elapsed = time.monotonic() - started
    checks = metric(mport, "spliced_health_checks_total", route="s") - first
    due = 2 * (int(elapsed / 2) + 1)
    c.check(checks <= due, f"{checks:.0f} checks during 20 reloads in {elapsed:.1f} s (2 backends every 2 s: at most "
            f"{due} due; a check per backend per reload would be 40)")
    d.close()
    return c


def case_removed_series(w):
    c = Case("4. a dropped route's and backend's series leave /metrics once their last connection ends")
    print(c.title, flush=True)
    e1, e2 = EchoServer("e1"), EchoServer("e2")
    w.servers += [e1, e2]
    lk, lg, mport = free_ports(3)

    def conf(with_gone):
        text = head(mport) + (f"  - name: keep\n    listen: \"{LO}:{lk}\"\n    backends:\n"
                              f"      - address: {LO}:{e1.port}\n")
        if with_gone:
            text += f"      - address: {LO}:{e2.port}\n"
            text += f"  - name: gone\n    listen: \"{LO}:{lg}\"\n    backends:\n      - address: {LO}:{e2.port}\n"
        return text

    d = Daemon(w, "series", conf(True))
    for _ in range(2):
        echo_once(lk)
    held = socket.create_connection((LO, lg), timeout=5)
    held.sendall(b"x")
    held.recv(1)
    kept_before = metric(mport, "spliced_connections_total", route="keep")
    d.write(conf(False))
    d.reload()
    s = scrape(mport)
    c.check(has_series(s, "spliced_connections_active", route="gone"),
            "while a connection of the dropped route is open, its series stay")
    held.sendall(b"y")
    c.check(held.recv(1) == b"y", "and that connection still echoes")
    held.close()
    e2_key = f"{LO}:{e2.port}"

    def gone():
        s = scrape(mport)
        left = [(n, ls) for n, ls, _ in s if ls.get("route") == "gone" or
                (ls.get("route") == "keep" and ls.get("backend") == e2_key)]
        return None if left else s

    s = wait_until(gone, 5, "no series of route gone or of keep's dropped backend")
    c.check(True, "once it ended: no series with route=\"gone\", none for keep's dropped backend")
    kept_after = metric(s, "spliced_connections_total", route="keep")
    c.check(kept_after == kept_before and has_series(s, "spliced_backend_up", route="keep", backend=f"{LO}:{e1.port}"),
            f"route keep's series keep their values: connections_total {kept_before:.0f} -> {kept_after:.0f}")
    # The dropped route comes back: its series are back, at 0.
    d.write(conf(True))
    d.reload()
    back = metric(mport, "spliced_connections_total", route="gone")
    c.check(has_series(scrape(mport), "spliced_backend_up", route="gone") and back == 0,
            f"a reload that names it again brings its series back at 0 ({back:.0f})")
    d.close()
    return c


def case_second_start(w):
    c = Case("5. a second spliced on the same config is refused before it binds; the first loses nothing")
    print(c.title, flush=True)
    e1 = EchoServer("e1")
    w.servers.append(e1)
    for with_metrics in (True, False):
        la, mport = free_ports(2)
        conf = head(mport if with_metrics else None) + (
            f"  - name: a\n    listen: \"{LO}:{la}\"\n    backends:\n      - address: {LO}:{e1.port}\n")
        d = Daemon(w, f"first-{'metrics' if with_metrics else 'plain'}", conf)
        loop = ConnectLoop(la, 3)
        refusals, messages = 0, set()
        for _ in range(15):
            r = subprocess.run([w.binary, "--config", d.conf], capture_output=True, timeout=20,
                               env=dict(os.environ, NOTIFY_SOCKET=""))
            refusals += r.returncode != 0
            m = re.search(r"listen address \S+ is already served by another spliced \(pid (\d+)\)", r.stderr.decode())
            last = (r.stderr.decode().strip().splitlines() or [f"exit {r.returncode}, no message"])[-1]
            messages.add(m.group(1) if m else last[-160:])
        loop.stop()
        what = "with metrics:" if with_metrics else "without metrics:"
        c.check(refusals == 15 and messages == {str(d.proc.pid)},
                f"{what} 15 second starts exit non-zero, naming the first one's pid: {sorted(messages)}")
        c.check(not loop.problems and loop.ok > 50, f"{what} through the first meanwhile: {loop.report()}")
        d.close()
    return c


def case_bad_reload(w):
    c = Case("6. an oversized or unloggable config is refused by a reload with its position; memory stays")
    print(c.title, flush=True)
    e1 = EchoServer("e1")
    w.servers.append(e1)
    la, mport = free_ports(2)
    good = head(mport) + f"  - name: a\n    listen: \"{LO}:{la}\"\n    backends:\n      - address: {LO}:{e1.port}\n"
    d = Daemon(w, "bad-reload", good)
    echo_once(la)
    before = rss_kib(d.proc.pid)
    # Over the node cap (4,000,000) but under the size cap (32 MiB): refused while it is read.
    with open(d.conf + ".new", "w") as f:
        f.write(good + "extra: [" + ",".join(["1"] * 5_000_000) + "]\n")
    os.rename(d.conf + ".new", d.conf)
    d.reload(cap=30)
    m = re.search(r"reload failed, the running config stays: (\S+):(\d+):(\d+): the config has more than 4000000 YAML "
                  r"nodes", d.log())
    c.check(m, "the reload is refused past the node cap, with file:line:col" + (f": {m.group(0)[-90:]}" if m else ""))
    after = rss_kib(d.proc.pid)
    if blackbox.sanitized(w.binary):
        print(f"    (RSS {before // 1024} -> {after // 1024} MiB not checked: AddressSanitizer keeps freed memory)")
    else:
        c.check(after - before < 64 * 1024,
                f"RSS {before // 1024} MiB before, {after // 1024} MiB after the refused reload")
    c.check(echo_once(la) == b"x", "the old config keeps serving")
    missing = os.path.join(d.tmp, "no-such-dir")
    d.write(good.replace("access_log: stdout", f"access_log: {missing}/access.log"))
    d.reload()
    m = re.search(r"reload failed, the running config stays: \S+:5:15: log.access_log: cannot open '[^']+': No such "
                  r"file or directory", d.log())
    c.check(m, "an access_log in a missing directory is refused at 5:15" + (f": {m.group(0)[-80:]}" if m else ""))
    c.check(not os.path.exists(missing), "and its directory is not created")
    failures = metric(mport, "spliced_config_reloads_total", result="failure")
    c.check(failures == 2, f"both counted as failures ({failures:.0f})")
    d.close()
    return c


def main():
    args = blackbox.arguments(__doc__, 120, per_datapath=False)
    code, _ = blackbox.require("ops", "many loopback connections and the sockmap probe of auto")
    if code is not None:
        return code
    w = blackbox.World("ops", args.binary, None)
    return blackbox.run_cases(w, [case_queue, case_health_removed, case_check_schedule, case_removed_series,
                                  case_second_start, case_bad_reload], args)


if __name__ == "__main__":
    sys.exit(main())
