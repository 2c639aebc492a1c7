#!/usr/bin/python3
"""Backend pool suite: balancers, active and passive health, connection limits and the queue, hostnames,
end to end through the real binary, on one data path.

    tests/pool/run.py --binary build/spliced --datapath sockmap|splice|copy|auto [--budget 90]

Root only (exit 77 otherwise: binding many 127.0.0.x sources, a network namespace). Without redis-server:
exit 77, or a failure when $CI is set. One daemon per case, each in its own temp dir; every process is
started here and stopped by its PID. Cases:

 1. balancers: smooth round robin with weights 1:2:3 (+ one weight 0) over 60 connections gives exactly
    10/20/30/0; least_conn with 40 held connections over weights 1:1:2 gives 10/10/20; source_hash sends
    each of 37 source addresses in 127.0.0.0/8 to the same backend every time; random with weights 1:3
    over 80 held connections.
 2. active health with real redis-servers (send "PING\\r\\n", expect "+PONG"): a redis that answers
    -NOAUTH is down; killing one is noticed within fall x interval + timeout while PING clients see no
    error; restarted, it is up after rise checks.
 3. all backends down: spliced still tries each one, the client is closed, and
    spliced_route_no_backend_up_total counts it.
 4. passive: a backend whose SYNs are dropped (a full listen queue inside a network namespace made
    here) is ejected after `failures` connect timeouts; later clients pay no connect timeout.
 5. limits: route max_connections under a burst of twice the limit from many threads (exactly the
    limit served at once; the rest wait in the listen queue, then get through); backend max_connections
    with a FIFO queue (a freed slot goes to the oldest waiter; a waiter past timeouts.queue is closed
    and counted in spliced_queue_timeouts_total).
 6. hostnames: a backend hostname from /etc/hosts with two addresses becomes two backends.
"""

import os
import random
import re
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from blackbox import interop, metric, scrape  # noqa: E402
import blackbox  # noqa: E402

from run import Case, Failure, Procs, free_ports, wait_until, LO  # noqa: E402


# ---------------------------------------------------------------------------------------------------
# Helpers


class CountingEcho:
    """An echo server on (host, port) that counts connections: accepted, open now and the most open at once."""

    def __init__(self, host=LO, port=0):
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(512)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.accepted = self.open = self.peak = 0
        self.conns = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self):
        return f"{self.host}:{self.port}"

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self.open += 1
                self.peak = max(self.peak, self.open)
                self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        counted = True

        def done():
            nonlocal counted
            if counted:
                with self.lock:
                    self.open -= 1
                counted = False

        try:
            c.settimeout(30)
            while True:
                b = c.recv(65536)
                if not b:
                    break
                c.sendall(b)
            # No longer open as of now: before the FIN that lets spliced end the session and give its slot to
            # another connection (counting after it would race that connection's accept).
            done()
            c.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            done()
            c.close()

    def close(self):
        self.closed = True
        self.sock.close()


def start_daemon(w, name, datapath, routes, metrics_port=None):
    """A spliced with `routes` (YAML text of the routes list) in its own temp dir; returns (procs, proc)."""
    tmp = os.path.join(w.tmp, name)
    os.makedirs(tmp)
    procs = Procs(tmp)
    w.all_procs.append(procs)
    conf = f"datapath: {datapath}\nworkers: 2\ndrain_timeout: 1s\nlog:\n  level: info\n  access_log: stdout\n"
    if metrics_port:
        conf += f"metrics:\n  listen: {LO}:{metrics_port}\n"
    conf += "routes:\n" + routes
    d = interop.Daemon(procs, w.binary, tmp, conf)
    d.close()
    return procs, d.proc


def backends_used(procs, route, since=0, until=None):
    """{backend: count} from the access log lines of `route` (after the first `since` lines, up to line `until`)."""
    counts = {}
    for line in interop.access_lines(procs)[since:until]:
        if line.get("route") == route:
            counts[line.get("backend")] = counts.get(line.get("backend"), 0) + 1
    return counts


def echo_once(port, source=None, payload=b"ping", timeout=5):
    """Connects (from `source`), sends `payload`, reads it back, closes; None or the problem."""
    s = interop.bound_socket(source, timeout)
    try:
        s.connect((LO, port))
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            b = s.recv(65536)
            if not b:
                return f"EOF after {len(got)} of {len(payload)} echoed bytes"
            got += b
        return None if got == payload else f"echo differs: {got!r}"
    except OSError as e:
        return f"{e!r}"
    finally:
        s.close()


class Held:
    """A client connection that sent a byte and keeps the socket open."""

    def __init__(self, port, timeout=5):
        self.s = socket.create_connection((LO, port), timeout=timeout)
        self.s.sendall(b"h")

    def echoed(self, wait):
        """True once the byte came back within `wait` seconds."""
        self.s.settimeout(wait)
        try:
            return self.s.recv(1) == b"h"
        except (socket.timeout, OSError):
            return False

    def ended(self, wait):
        """'eof', 'reset' or None (still open) within `wait` seconds."""
        self.s.settimeout(wait)
        try:
            return "eof" if self.s.recv(1) == b"" else None
        except socket.timeout:
            return None
        except ConnectionResetError:
            return "reset"

    def close(self):
        self.s.close()


def daemon_log(procs):
    return procs.out("spliced") + procs.err("spliced")


def client_end(port, wait=3):
    """Connects, sends a byte and returns how the connection ended within `wait` s: 'eof', 'reset' or None."""
    try:
        h = Held(port)
    except ConnectionResetError:  # reset before connect() returned
        return "reset"
    try:
        return h.ended(wait)
    finally:
        h.close()


def wait_access_lines(procs, n, cap=5):
    return wait_until(lambda: len(interop.access_lines(procs)) >= n, cap, f"{n} access-log lines")


# ---------------------------------------------------------------------------------------------------
# Cases


def case_balancers(w):
    c = Case("1. balancers: smooth weighted round robin, least_conn, source_hash, random")
    print(c.title, flush=True)
    rr = [CountingEcho() for _ in range(4)]
    lc = [CountingEcho() for _ in range(3)]
    sh = [CountingEcho() for _ in range(5)]
    rnd = [CountingEcho() for _ in range(2)]
    w.servers += rr + lc + sh + rnd
    l_rr, l_lc, l_sh, l_rnd = free_ports(4)

    def route(name, listen, balance, servers, weights):
        lines = [f"  - name: {name}", f'    listen: "{LO}:{listen}"', f"    balance: {balance}", "    backends:"]
        lines += [f"      - {{ address: \"{s.address}\", weight: {wt} }}" for s, wt in zip(servers, weights)]
        return "\n".join(lines) + "\n"

    procs, _ = start_daemon(w, "balancers", w.datapath,
                            route("rr", l_rr, "round_robin", rr, [1, 2, 3, 0])
                            + route("lc", l_lc, "least_conn", lc, [1, 1, 2])
                            + route("sh", l_sh, "source_hash", sh, [1] * 5)
                            + route("rnd", l_rnd, "random", rnd, [1, 3]))
    problems = [p for p in (echo_once(l_rr) for _ in range(60)) if p]
    got = [s.accepted for s in rr]
    c.check(not problems and got == [10, 20, 30, 0],
            f"round_robin 1:2:3:0 over 60 connections: {got} (expected [10, 20, 30, 0])"
            + (f"; {len(problems)} failed: {problems[0]}" if problems else ""))

    held = [Held(l_lc) for _ in range(40)]
    served = sum(h.echoed(5) for h in held)
    got = [s.accepted for s in lc]
    c.check(served == 40 and got == [10, 10, 20],
            f"least_conn 1:1:2 with 40 held connections: {got} (expected [10, 10, 20]), {served}/40 echoed")
    for h in held:
        h.close()

    # 37 sources (not a multiple of the 5 backends), in a new order each round: only hashing keeps a source
    # on one backend.
    sources = [f"127.0.{i // 200 + 1}.{i % 200 + 10}" for i in range(37)]
    before = len(interop.access_lines(procs))
    failures = []
    order = random.Random(11)
    for rnd_i in range(3):
        order.shuffle(sources)
        for src in sources:
            p = echo_once(l_sh, source=src)
            if p:
                failures.append(p)
    wait_access_lines(procs, before + 3 * len(sources))
    per_source = {}
    for line in interop.access_lines(procs)[before:]:
        if line.get("route") == "sh":
            per_source.setdefault(line["client"].rsplit(":", 1)[0], set()).add(line["backend"])
    unstable = {s: b for s, b in per_source.items() if len(b) != 1}
    used = sorted(sum(1 for b in per_source.values() if s.address in b) for s in sh)
    c.check(not failures and len(per_source) == 37 and not unstable and min(used) > 0,
            f"source_hash: 37 sources x 3 connections, each source always on one backend "
            f"({len(unstable)} not); sources per backend {used}" + (f"; failed: {failures[0]}" if failures else ""))

    # Power of two choices weighs load: over connections held open, the shares follow the weights.
    held = [Held(l_rnd) for _ in range(80)]
    served = sum(h.echoed(5) for h in held)
    share = rnd[1].accepted / max(1, rnd[0].accepted + rnd[1].accepted)
    c.check(served == 80 and 0.65 <= share <= 0.85,
            f"random 1:3 over 80 held connections: {[s.accepted for s in rnd]}, heavier share {share:.2f} "
            f"(expected 0.65..0.85)")
    for h in held:
        h.close()
    return c


def redis_server(w, procs, name, port, password=None):
    argv = [w.redis, "--port", str(port), "--bind", LO, "--save", "", "--appendonly", "no",
            "--dir", procs.tmp, "--daemonize", "no"]
    if password:
        argv += ["--requirepass", password]
    p = procs.start(name, argv)
    interop.wait_connectable(port, name, p, procs)
    return p


def redis_ping(port):
    """PING through spliced; None or the problem."""
    try:
        with socket.create_connection((LO, port), timeout=3) as s:
            s.sendall(b"PING\r\n")
            got = s.recv(64)
            return None if got.startswith(b"+PONG") else f"reply {got!r}"
    except OSError as e:
        return repr(e)


def case_health(w):
    c = Case("2. active health checks against real redis-servers (PING / +PONG)")
    print(c.title, flush=True)
    listen, mport, ra, rb, rc = free_ports(5)
    tmp = os.path.join(w.tmp, "redis")
    os.makedirs(tmp)
    rprocs = Procs(tmp)
    w.all_procs.append(rprocs)
    pa = redis_server(w, rprocs, "redis-a", ra)
    redis_server(w, rprocs, "redis-b", rb, password="sekrit")  # answers PING with -NOAUTH
    redis_server(w, rprocs, "redis-c", rc)
    interval, timeout, rise, fall = 0.3, 0.2, 2, 2
    routes = (f"  - name: kv\n    listen: \"{LO}:{listen}\"\n"
              f"    health_check: {{ interval: 300ms, timeout: 200ms, rise: {rise}, fall: {fall}, "
              f"send: \"PING\\r\\n\", expect: \"+PONG\" }}\n"
              f"    backends:\n"
              + "".join(f"      - address: {LO}:{p}\n" for p in (ra, rb, rc)))
    procs, _ = start_daemon(w, "health", w.datapath, routes, metrics_port=mport)
    A, B, C = (f"{LO}:{p}" for p in (ra, rb, rc))
    try:
        wait_until(lambda: metric(mport, "spliced_backend_up", backend=B) == 0, 3, "the NOAUTH redis to be down")
        c.check(metric(mport, "spliced_backend_up", backend=A) == 1 and
                metric(mport, "spliced_backend_up", backend=C) == 1,
                "a redis answering -NOAUTH to PING is down, the two answering +PONG are up")
    except Failure as e:
        c.check(False, str(e))
    c.check("backend " + B + " is down: first health check failed" in daemon_log(procs),
            "its state change is logged at warn with the reason")
    before = len(interop.access_lines(procs))
    pings = [redis_ping(listen) for _ in range(20)]
    wait_access_lines(procs, before + 20)
    used = backends_used(procs, "kv", before)
    c.check(not any(pings) and B not in used, f"20 PINGs through spliced all answered, none sent to the down "
            f"one: {used}" + (f"; {next(p for p in pings if p)}" if any(pings) else ""))

    # Kill A while clients keep PINGing: none of them may see an error.
    errors, stop = [], threading.Event()

    # Each PING is a new client. None is in flight at the moment of the kill itself (a connection already
    # open to the redis that dies is cut with it, whatever the proxy): every client from the kill on must
    # get its answer.
    in_flight = threading.Lock()

    def pinger():
        while not stop.is_set():
            with in_flight:
                p = redis_ping(listen)
            if p:
                errors.append(p)
            time.sleep(0.01)

    t = threading.Thread(target=pinger, daemon=True)
    t.start()
    time.sleep(0.1)
    with in_flight:
        killed = time.monotonic()
        pa.terminate()
        pa.wait(5)
    try:
        wait_until(lambda: metric(mport, "spliced_backend_up", backend=A) == 0, 5, "the killed redis to be down",
                   step=0.02)
        took = time.monotonic() - killed
        bound = fall * interval + timeout
        c.check(took <= bound + 0.15, f"killed redis marked down after {took:.2f} s (fall x interval + timeout = "
                f"{bound:.2f} s, +0.15 s for the scrape polling)")
    except Failure as e:
        c.check(False, str(e))
    before = len(interop.access_lines(procs))
    time.sleep(0.3)
    restarted = time.monotonic()
    redis_server(w, rprocs, "redis-a2", ra)
    came_up = None  # the access-log lines when it was seen up: later connections may go to it
    try:
        wait_until(lambda: metric(mport, "spliced_backend_up", backend=A) == 1, 5, "the restarted redis to be up",
                   step=0.02)
        came_up = len(interop.access_lines(procs))
        took = time.monotonic() - restarted
        c.check(took <= rise * interval + timeout + 0.15,
                f"restarted redis up after {took:.2f} s ({rise} passing checks at {interval} s)")
    except Failure as e:
        c.check(False, str(e))
    stop.set()
    t.join(5)
    used_while_down = backends_used(procs, "kv", before, came_up)
    c.check(not errors, f"PING clients from the kill to after the restart: {len(errors)} errors"
            + (f" (first: {errors[0]})" if errors else ""))
    c.check(used_while_down.get(A, 0) <= 1 and B not in used_while_down,
            f"connections while it was down or coming up went elsewhere: {used_while_down}")
    checks = metric(mport, "spliced_health_checks_total", backend=B, result="failure")
    c.check(checks >= 3, f"spliced_health_checks_total{{backend={B},result=failure}} = {checks:.0f}")
    errors_metric = metric(mport, "spliced_upstream_connect_errors_total", backend=B)
    c.check(errors_metric == 0, f"health checks do not count as upstream connect errors: {errors_metric:.0f}")
    return c


def case_all_down(w):
    c = Case("3. all backends down: each is still tried; the client is closed and the connection counted")
    print(c.title, flush=True)
    listen, mport, d1, d2 = free_ports(4)
    routes = (f"  - name: dead\n    listen: \"{LO}:{listen}\"\n"
              f"    health_check: {{ interval: 200ms, timeout: 100ms, rise: 1, fall: 1 }}\n"
              f"    backends:\n      - address: {LO}:{d1}\n      - address: {LO}:{d2}\n")
    procs, _ = start_daemon(w, "all-down", w.datapath, routes, metrics_port=mport)
    try:
        wait_until(lambda: metric(mport, "spliced_backend_up", route="dead") == 0 and
                   len(re.findall(r"is down", daemon_log(procs))) >= 2, 3, "both backends to be down")
    except Failure as e:
        c.check(False, str(e))
    results = [client_end(listen) for _ in range(3)]
    c.check(all(r in ("eof", "reset") for r in results), f"3 clients closed at once: {results}")
    counted = metric(mport, "spliced_route_no_backend_up_total", route="dead")
    refused = metric(mport, "spliced_upstream_connect_errors_total", route="dead", reason="refused")
    c.check(counted == 3 and refused == 6, f"spliced_route_no_backend_up_total = {counted:.0f} (expected 3), "
            f"refused connects {refused:.0f} (expected 6: both tried for each)")
    return c


class BlackHole:
    """A network namespace with a veth pair and, inside, a listener whose accept queue is full: SYNs to it
    are dropped, so connects time out."""

    def __init__(self, w):
        self.ns = f"spliced-pool-{os.getpid()}"
        self.host_if, self.ns_if = f"spp{os.getpid() % 100000}a", f"spp{os.getpid() % 100000}b"
        self.host_ip, self.ns_ip, self.port = "10.213.77.1", "10.213.77.2", 9000
        self.proc = None

        def ip(*args):
            r = subprocess.run(["ip", *args], capture_output=True, timeout=10)
            if r.returncode != 0:
                raise Failure(f"ip {' '.join(args)}: {r.stderr.decode().strip()}")

        ip("netns", "add", self.ns)
        self.made = True
        ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if, "netns", self.ns)
        ip("addr", "add", f"{self.host_ip}/24", "dev", self.host_if)
        ip("link", "set", self.host_if, "up")
        ip("-n", self.ns, "addr", "add", f"{self.ns_ip}/24", "dev", self.ns_if)
        ip("-n", self.ns, "link", "set", self.ns_if, "up")
        ip("-n", self.ns, "link", "set", "lo", "up")
        script = ("import socket,time\n"
                  f"l=socket.socket(); l.bind(('{self.ns_ip}',{self.port})); l.listen(0)\n"
                  f"d=socket.socket(); d.setblocking(False)\n"
                  f"try: d.connect(('{self.ns_ip}',{self.port}))\nexcept BlockingIOError: pass\n"
                  "print('ready', flush=True)\ntime.sleep(120)\n")
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, sys.executable, "-c", script],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        if self.proc.stdout.readline().strip() != b"ready":
            raise Failure("the black-hole listener in the namespace did not start")
        time.sleep(0.1)

    @property
    def address(self):
        return f"{self.ns_ip}:{self.port}"

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=10)


def case_passive(w):
    c = Case("4. passive health: a black-holed backend is ejected after `failures` connect timeouts")
    print(c.title, flush=True)
    hole = BlackHole(w)
    w.cleanups.append(hole.close)
    # The black hole is really one: a direct connect times out.
    probe = socket.socket()
    probe.settimeout(0.5)
    try:
        probe.connect((hole.ns_ip, hole.port))
        c.check(False, "a direct connect to the black hole succeeded")
    except socket.timeout:
        pass
    except OSError as e:
        c.check(False, f"a direct connect to the black hole failed at once ({e!r}), not by timeout")
    finally:
        probe.close()
    good = CountingEcho()
    w.servers.append(good)
    listen, mport = free_ports(2)
    routes = (f"  - name: pas\n    listen: \"{LO}:{listen}\"\n    timeouts: {{ connect: 800ms }}\n"
              f"    passive: {{ failures: 2, eject: 30s }}\n"
              f"    backends:\n      - address: {hole.address}\n      - address: {good.address}\n")
    procs, _ = start_daemon(w, "passive", w.datapath, routes, metrics_port=mport)
    times, problems = [], []
    for _ in range(10):
        t0 = time.monotonic()
        p = echo_once(listen, timeout=5)
        times.append(time.monotonic() - t0)
        if p:
            problems.append(p)
    slow = sum(1 for t in times if t >= 0.7)
    c.check(not problems, f"10 clients through a route whose first backend is black-holed: all echoed"
            + (f"; {problems[0]}" if problems else ""))
    c.check(slow == 2 and all(t < 0.4 for t in times[4:]),
            f"only the first 2 paid the 0.8 s connect timeout: {', '.join(f'{t:.2f}' for t in times)} s")
    up = metric(mport, "spliced_backend_up", backend=hole.address)
    c.check(up == 0 and "2 consecutive failed connects" in daemon_log(procs),
            f"the black hole is down (spliced_backend_up = {up:.0f}) and the ejection logged with its reason")
    return c


def case_limits(w):
    c = Case("5. limits: route max_connections under a burst, backend max_connections with a FIFO queue")
    print(c.title, flush=True)
    echo = CountingEcho()
    b1, b2 = CountingEcho(), CountingEcho()
    w.servers += [echo, b1, b2]
    l_route, l_be, mport = free_ports(3)
    limit = 8
    routes = (f"  - name: lim\n    listen: \"{LO}:{l_route}\"\n    max_connections: {limit}\n"
              f"    backends:\n      - address: {echo.address}\n"
              f"  - name: q\n    listen: \"{LO}:{l_be}\"\n    timeouts: {{ queue: 1500ms }}\n"
              f"    backends:\n      - {{ address: \"{b1.address}\", max_connections: 2 }}\n"
              f"      - {{ address: \"{b2.address}\", max_connections: 2 }}\n")
    procs, _ = start_daemon(w, "limits", w.datapath, routes, metrics_port=mport)

    # A burst of 2x the limit from as many threads at once.
    held, errs = [None] * (2 * limit), []
    go = threading.Barrier(2 * limit)

    def connect(i):
        try:
            go.wait(5)
            held[i] = Held(l_route)
        except (OSError, threading.BrokenBarrierError) as e:
            errs.append(repr(e))

    ts = [threading.Thread(target=connect, args=(i,)) for i in range(2 * limit)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    time.sleep(0.5)
    peaks = []
    for _ in range(5):
        peaks.append(metric(mport, "spliced_connections_active", route="lim"))
        time.sleep(0.05)
    echoed = [h for h in held if h and h.echoed(0.5)]
    c.check(not errs and len(echoed) == limit and echo.peak == limit and max(peaks) == limit,
            f"burst of {2 * limit} clients against max_connections {limit}: {len(echoed)} served at once, backend "
            f"peak {echo.peak}, spliced_connections_active {max(peaks):.0f}" + (f"; {errs[0]}" if errs else ""))
    for h in echoed:
        h.close()
    rest = [h for h in held if h and h not in echoed]
    late = sum(h.echoed(3) for h in rest)
    c.check(late == limit and echo.peak == limit,
            f"the {limit} that waited in the listen queue are served once places free up: {late}; peak still "
            f"{echo.peak}")
    for h in rest:
        h.close()

    # Backend limits: 2 backends x 2 slots, then a FIFO.
    four = [Held(l_be) for _ in range(4)]
    c.check(all(h.echoed(3) for h in four) and b1.open == 2 and b2.open == 2,
            f"4 clients fill both backends' 2 slots: {b1.open} + {b2.open}")
    gauge = metric(mport, "spliced_backend_connections_active", route="q")
    c.check(gauge == 4, f"spliced_backend_connections_active of the route: {gauge:.0f} (a connection counts on its "
            f"backend whatever its data path)")
    fifth = Held(l_be)
    time.sleep(0.1)
    sixth = Held(l_be)
    c.check(not fifth.echoed(0.3), "a 5th client waits in the queue")
    # Free one slot: the oldest waiter must get it.
    four[0].close()
    t0 = time.monotonic()
    fifth_ok = fifth.echoed(2)
    waited = time.monotonic() - t0
    c.check(fifth_ok and not sixth.echoed(0.2),
            f"a slot freed by a closing connection goes to the oldest waiter ({waited * 1000:.0f} ms), not the "
            f"newer one")
    end = sixth.ended(3)
    timeouts = metric(mport, "spliced_queue_timeouts_total", route="q")
    lines = [l for l in interop.access_lines(procs) if l.get("route") == "q" and l.get("end") == "queue_timeout"]
    c.check(end in ("eof", "reset") and timeouts == 1 and len(lines) == 1,
            f"the newer waiter is closed ({end}) after timeouts.queue 1.5 s; spliced_queue_timeouts_total = "
            f"{timeouts:.0f}; access log end=queue_timeout: {len(lines)}")
    c.check(b1.peak <= 2 and b2.peak <= 2, f"no backend ever had more than its 2: peaks {b1.peak}, {b2.peak}")
    for h in four[1:] + [fifth, sixth]:
        h.close()
    return c


HOSTS_MARK = "# spliced pool test"


def case_hostnames(w):
    c = Case("6. hostnames: every address of a name in /etc/hosts becomes a backend")
    print(c.title, flush=True)
    name = f"pool-{os.getpid()}.spliced.test"
    s7, s8 = CountingEcho("127.0.0.7"), None
    s8 = CountingEcho("127.0.0.8", s7.port)
    w.servers += [s7, s8]
    with open("/etc/hosts", "a") as f:
        f.write(f"127.0.0.8 {name} {HOSTS_MARK}\n127.0.0.7 {name} {HOSTS_MARK}\n")
    w.cleanups.append(remove_hosts_entries)
    listen, mport = free_ports(2)
    routes = (f"  - name: named\n    listen: \"{LO}:{listen}\"\n"
              f"    backends:\n      - address: {name}:{s7.port}\n")
    procs, _ = start_daemon(w, "hostnames", w.datapath, routes, metrics_port=mport)
    problems = [p for p in (echo_once(listen) for _ in range(10)) if p]
    c.check(not problems and s7.accepted == 5 and s8.accepted == 5,
            f"{name} (127.0.0.7 and 127.0.0.8) over 10 connections: {s7.accepted} / {s8.accepted}")
    series = sorted(ls["backend"] for n, ls, _ in scrape(mport) if n == "spliced_backend_up")
    c.check(series == [s7.address, s8.address], f"per-backend series are keyed by address, in order: {series}")
    return c


def remove_hosts_entries():
    with open("/etc/hosts") as f:
        lines = f.readlines()
    with open("/etc/hosts", "w") as f:
        f.writelines(l for l in lines if HOSTS_MARK not in l)


# ---------------------------------------------------------------------------------------------------


def main():
    args = blackbox.arguments(__doc__, 90)
    code, tools = blackbox.require("pool", "127.0.0.x sources, a network namespace, spliced's sockmap path",
                                   [("redis-server", "redis-server")])
    if code is not None:
        return code
    w = blackbox.World("pool", args.binary, args.datapath)
    w.redis = tools["redis-server"]
    return blackbox.run_cases(w, [case_balancers, case_health, case_all_down, case_passive, case_limits,
                                  case_hostnames], args)


if __name__ == "__main__":
    sys.exit(main())
