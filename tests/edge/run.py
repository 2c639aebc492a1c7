#!/usr/bin/python3
"""Edge suite: what a route refuses before it reads a byte or connects a backend, through the real binary,
with clients from many loopback sources (127.0.0.0/8 is all local: a client binds 127.x.y.z).

    tests/edge/run.py --binary build/spliced [--budget 120]

Root only (exit 77 otherwise, like the other black-box suites). One daemon per case (per data path in case 1),
each in its own temp dir; every process is started here and stopped by its PID. Cases:

 1. allow and deny, on every data path: a client inside allow is served (256 KiB echoed intact, one access-log
    line); one outside allow and one inside deny (deny wins) are reset before the backend sees a connection,
    are counted in spliced_connections_refused_total{reason="acl"}, and get no access-log line.
 2. a flood of 300 refused connections: every one counted, the daemon log says so in a few lines a second
    (the count of those it held back included), and a client from an allowed source is served meanwhile.
 3. a reload that denies a served source: its open connection goes on, its new ones are refused.
 4. on a PROXY route the accepted header's source is judged, not the socket's peer.
 5. timeouts.lifetime on every data path: a connection still echoing at its lifetime is reset on both sides
    (never a FIN), logged end=lifetime.
 6. keepalive: the proxy's client and upstream sockets of a route with keepalive run its timer (ss -o);
    those of a route without do not.
 7. keepalive reaps a backend that vanished without a FIN or a reset (its veth, in a namespace this suite makes,
    pulled down): the idle client is reset within idle + interval x count, not at the idle timeout.
"""

import errno
import os
import re
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from blackbox import Daemon, EchoServer, interop, metric  # noqa: E402
import blackbox  # noqa: E402

from run import Case, free_ports, wait_until, LO  # noqa: E402


def head(metrics_port, datapath="auto"):
    return (f"datapath: {datapath}\nworkers: 2\ndrain_timeout: 2s\nlog:\n  level: info\n  access_log: stdout\n"
            f"metrics:\n  listen: {LO}:{metrics_port}\nroutes:\n")


def route(name, port, backend, extra=""):
    return f"  - name: {name}\n    listen: \"{LO}:{port}\"\n{extra}    backends:\n      - address: {LO}:{backend}\n"


def connect_from(source, port, timeout=5):
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect((LO, port))
    return s


def echo_from(source, port, payload):
    """What came back for `payload` (sent whole, then a half-close), or the error's name."""
    try:
        with connect_from(source, port) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            got = b""
            while True:
                b = s.recv(65536)
                if not b:
                    return got
                got += b
    except OSError as e:
        return errno.errorcode.get(e.errno, type(e).__name__)


def refused_from(source, port):
    """How a connection from `source` ended: 'reset' when the proxy reset it (before any byte came back)."""
    try:
        with connect_from(source, port) as s:
            try:
                s.sendall(b"hello")
            except OSError:
                return "reset"
            got = s.recv(16)
            return "eof" if got == b"" else f"read {got!r}"
    except ConnectionResetError:
        return "reset"
    except OSError as e:
        return type(e).__name__


def refusals(mport, route_name):
    return metric(mport, "spliced_connections_refused_total", route=route_name, reason="acl")


# ---------------------------------------------------------------------------------------------------
# Cases


def case_allow_deny(w):
    c = Case("1. allow and deny on every data path: served inside, reset outside and when denied, before a backend")
    print(c.title, flush=True)
    payload = os.urandom(256 * 1024)
    for path in ("sockmap", "splice", "copy", "auto"):
        e = EchoServer(f"e-{path}")
        w.servers.append(e)
        la, mport = free_ports(2)
        conf = head(mport, path) + route("r", la, e.port,
                                         "    allow: [\"127.0.0.0/30\"]\n    deny: [\"127.0.0.2\"]\n")
        d = Daemon(w, f"acl-{path}", conf)
        c.check(refusals(mport, "r") == 0, f"{path}: the refused series is there at 0 from the start")
        c.check(echo_from("127.0.0.1", la, payload) == payload, f"{path}: 127.0.0.1 (in allow) is served intact")
        outside = refused_from("127.0.0.5", la)
        denied = refused_from("127.0.0.2", la)
        c.check(outside == "reset", f"{path}: 127.0.0.5 (outside allow) is reset: {outside}")
        c.check(denied == "reset", f"{path}: 127.0.0.2 (in allow and in deny: deny wins) is reset: {denied}")
        wait_until(lambda: refusals(mport, "r") == 2, 5, "two refusals counted")
        c.check(e.accepted == 1, f"{path}: the backend saw only the served client's connection ({e.accepted})")
        lines = interop.access_lines(d.procs)
        c.check(len(lines) == 1 and lines[0].get("client", "").startswith("127.0.0.1:"),
                f"{path}: one access-log line, the served client's ({len(lines)})")
        c.check(re.search(r"route r: client 127\.0\.0\.5:\d+ refused by allow/deny", d.log()),
                f"{path}: the daemon log names the refused client")
        d.close()
    return c


def case_flood(w):
    c = Case("2. 300 refused connections: all counted, a few log lines a second, an allowed client still served")
    print(c.title, flush=True)
    e = EchoServer("e")
    w.servers.append(e)
    la, mport = free_ports(2)
    d = Daemon(w, "flood", head(mport) + route("r", la, e.port, "    deny: [\"127.0.1.0/24\"]\n"))
    started = time.monotonic()
    outcomes = {}
    for i in range(300):
        o = refused_from(f"127.0.1.{1 + i % 250}", la)
        outcomes[o] = outcomes.get(o, 0) + 1
    took = time.monotonic() - started
    c.check(outcomes == {"reset": 300}, f"every flood connection was reset: {outcomes} in {took:.1f} s")
    c.check(echo_from("127.0.0.1", la, b"still here") == b"still here", "127.0.0.1 is served meanwhile")
    wait_until(lambda: refusals(mport, "r") == 300, 5, "300 refusals counted")
    c.check(e.accepted == 1, f"the backend saw one connection ({e.accepted})")
    time.sleep(1.1)  # the next second's first refusal says how many were held back before it
    refused_from("127.0.1.1", la)
    wait_until(lambda: refusals(mport, "r") == 301, 5, "301 refusals counted")
    lines = re.findall(r"refused by allow/deny \((\d+) more refused connections not logged\)", d.log())
    seconds = int(took) + 2
    c.check(1 <= len(lines) <= 5 * (seconds + 1), f"{len(lines)} log lines for 301 refusals in about {seconds} s")
    c.check(len(lines) + sum(int(n) for n in lines) == 301,
            f"the lines and the counts they carry add up to 301 ({len(lines)} + {sum(int(n) for n in lines)})")
    c.check(len(interop.access_lines(d.procs)) == 1, "the access log has only the served client")
    d.close()
    return c


def case_reload(w):
    c = Case("3. a reload that denies a served source: its open connection goes on, new ones are refused")
    print(c.title, flush=True)
    e = EchoServer("e")
    w.servers.append(e)
    la, mport = free_ports(2)
    conf = head(mport) + route("r", la, e.port, "    allow: [\"127.0.0.0/8\"]\n")
    d = Daemon(w, "reload", conf)
    held = connect_from("127.0.0.7", la)
    held.sendall(b"before")
    c.check(held.recv(16) == b"before", "127.0.0.7 is served")
    d.write(conf.replace("    allow: [\"127.0.0.0/8\"]\n", "    allow: [\"127.0.0.0/8\"]\n    deny: [\"127.0.0.7\"]\n"))
    d.reload()
    c.check(refused_from("127.0.0.7", la) == "reset", "a new connection from 127.0.0.7 is refused after the reload")
    held.sendall(b"after")
    c.check(held.recv(16) == b"after", "the one it had open goes on")
    held.close()
    c.check(echo_from("127.0.0.8", la, b"x") == b"x", "127.0.0.8 is still served")
    wait_until(lambda: refusals(mport, "r") == 1, 5, "one refusal counted")
    d.close()
    return c


def case_proxy_source(w):
    c = Case("4. a PROXY route judges the accepted header's source, not the socket's peer")
    print(c.title, flush=True)
    e = EchoServer("e")
    w.servers.append(e)
    la, mport = free_ports(2)
    d = Daemon(w, "proxy", head(mport) + route("p", la, e.port,
                                                "    accept_proxy_protocol: true\n    allow: [\"10.0.0.0/8\"]\n"))

    def through(src):
        header = f"PROXY TCP4 {src} 10.0.0.1 40000 443\r\n".encode()
        return echo_from("127.0.0.1", la, header + b"payload")

    c.check(through("10.9.9.9") == b"payload", "a header from 10.9.9.9 (in allow) is served")
    got = through("192.0.2.1")
    # The reset meets the client's send, its half-close or its read, whichever comes first.
    c.check(got in ("ECONNRESET", "EPIPE", "ENOTCONN"), f"a header from 192.0.2.1 (outside allow) is reset: {got!r}")
    wait_until(lambda: refusals(mport, "p") == 1, 5, "one refusal counted")
    c.check(e.accepted == 1, f"the backend saw one connection ({e.accepted})")
    d.close()
    return c


def case_lifetime(w):
    c = Case("5. timeouts.lifetime on every data path: a busy connection is reset on both sides, end=lifetime")
    print(c.title, flush=True)
    for path in ("sockmap", "splice", "copy", "auto"):
        e = EchoServer(f"e-{path}")
        w.servers.append(e)
        la, mport = free_ports(2)
        d = Daemon(w, f"lifetime-{path}", head(mport, path) + route("r", la, e.port, "    timeouts: { lifetime: 1s }\n"))
        s = connect_from("127.0.0.1", la)
        started, echoed, outcome = time.monotonic(), 0, "still open"
        try:
            while time.monotonic() - started < 5:
                s.sendall(b"x" * 1000)
                got = s.recv(65536)
                if not got:
                    outcome = "EOF"
                    break
                echoed += len(got)
                time.sleep(0.01)
        except OSError as ex:
            outcome = errno.errorcode.get(ex.errno, type(ex).__name__)
        lasted = time.monotonic() - started
        s.close()
        c.check(outcome in ("ECONNRESET", "EPIPE") and 0.9 <= lasted <= 2.0,
                f"{path}: the client was reset after {lasted:.2f} s ({outcome}, {echoed} bytes echoed before)")
        wait_until(lambda: interop.access_lines(d.procs), 5, "the access-log line")
        line = interop.access_lines(d.procs)[0]
        c.check(line.get("end") == "lifetime", f"{path}: access log end={line.get('end')} datapath={line.get('datapath')}")
        d.close()
    return c


def keepalive_timers(port_filter):
    """The ss -o timers of the established sockets `port_filter` selects (e.g. 'sport = :8080')."""
    out = subprocess.run(["ss", "-tnoH", "state", "established", port_filter], capture_output=True, text=True).stdout
    return re.findall(r"timer:\((\w+),", out)


def case_keepalive(w):
    c = Case("6. keepalive: the client and upstream sockets of a route with keepalive run its timer, others do not")
    print(c.title, flush=True)
    e = EchoServer("e")
    w.servers.append(e)
    la, lb, mport = free_ports(3)
    conf = head(mport) + route("ka", la, e.port, "    keepalive: { idle: 30s, interval: 5s, count: 3 }\n") + \
        route("plain", lb, e.port)
    d = Daemon(w, "keepalive", conf)
    for port, name, want in ((la, "ka", ["keepalive"]), (lb, "plain", [])):
        s = connect_from("127.0.0.1", port)
        s.sendall(b"x")
        c.check(s.recv(8) == b"x", f"{name}: served")
        client_side = keepalive_timers(f"sport = :{port}")
        c.check(client_side == want, f"{name}: the proxy's client socket timers {client_side}")
        mine = s.getsockname()[1]
        # The upstream socket: the one connection to the backend whose peer is not the client's (only one open).
        upstream = keepalive_timers(f"dport = :{e.port}")
        c.check(upstream == want, f"{name}: the proxy's upstream socket timers {upstream} (client port {mine})")
        s.close()
        wait_until(lambda: not keepalive_timers(f"dport = :{e.port}") and
                   len(interop.access_lines(d.procs)) == (1 if name == "ka" else 2), 5, "the connection closed")
    d.close()
    return c


class VanishingBackend:
    """An echo server in a network namespace of its own behind a veth pair; vanish() takes the namespace's end
    down, so packets to it go nowhere and nothing answers (no FIN, no reset)."""

    def __init__(self):
        tag = os.getpid() % 100000
        self.ns, self.host_if, self.ns_if = f"spliced-edge-{os.getpid()}", f"spe{tag}a", f"spe{tag}b"
        self.ns_ip, self.port = "10.213.78.2", 9000
        self.proc = None
        self.ip("netns", "add", self.ns)
        self.ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if, "netns", self.ns)
        self.ip("addr", "add", "10.213.78.1/24", "dev", self.host_if)
        self.ip("link", "set", self.host_if, "up")
        self.ip("-n", self.ns, "addr", "add", f"{self.ns_ip}/24", "dev", self.ns_if)
        self.ip("-n", self.ns, "link", "set", self.ns_if, "up")
        self.ip("-n", self.ns, "link", "set", "lo", "up")
        script = ("import socket,threading,time\n"
                  f"l=socket.socket(); l.bind(('{self.ns_ip}',{self.port})); l.listen(8)\n"
                  "def echo(c):\n"
                  "    while True:\n"
                  "        b=c.recv(65536)\n"
                  "        if not b: break\n"
                  "        c.sendall(b)\n"
                  "def serve():\n"
                  "    while True:\n"
                  "        c,_=l.accept(); threading.Thread(target=echo,args=(c,),daemon=True).start()\n"
                  "threading.Thread(target=serve,daemon=True).start()\n"
                  "print('ready', flush=True)\ntime.sleep(120)\n")
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, sys.executable, "-c", script],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        if self.proc.stdout.readline().strip() != b"ready":
            raise interop.Failure("the echo server in the namespace did not start")

    @staticmethod
    def ip(*args):
        r = subprocess.run(["ip", *args], capture_output=True, timeout=10)
        if r.returncode != 0:
            raise interop.Failure(f"ip {' '.join(args)}: {r.stderr.decode().strip()}")

    def vanish(self):
        self.ip("-n", self.ns, "link", "set", self.ns_if, "down")

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=10)


def case_vanished_backend(w):
    c = Case("7. keepalive reaps a backend that vanished (no FIN, no reset) within idle + interval x count")
    print(c.title, flush=True)
    backend = VanishingBackend()
    w.cleanups.append(backend.close)
    la, mport = free_ports(2)
    conf = head(mport) + (f"  - name: r\n    listen: \"{LO}:{la}\"\n"
                          "    keepalive: { idle: 1s, interval: 1s, count: 2 }\n"
                          f"    backends:\n      - address: {backend.ns_ip}:{backend.port}\n")
    d = Daemon(w, "vanished", conf)
    s = connect_from("127.0.0.1", la, timeout=10)
    s.sendall(b"hello")
    c.check(s.recv(16) == b"hello", "served through the backend in the namespace")
    backend.vanish()
    gone = time.monotonic()
    try:
        got = s.recv(16)
        outcome = "EOF" if got == b"" else f"read {got!r}"
    except OSError as e:
        outcome = errno.errorcode.get(e.errno, type(e).__name__)
    waited = time.monotonic() - gone
    s.close()
    # The first probe after 1 s idle, then 2 unanswered probes 1 s apart: about 3 s (the idle timeout is 1 h).
    c.check(outcome == "ECONNRESET" and 2.0 <= waited <= 6.0,
            f"the idle client is reset {waited:.2f} s after the backend vanished ({outcome})")
    wait_until(lambda: interop.access_lines(d.procs), 5, "the access-log line")
    line = interop.access_lines(d.procs)[0]
    c.check(line.get("end") in ("upstream_reset", "error"), f"access log end={line.get('end')}")
    d.close()
    return c


def main():
    args = blackbox.arguments(__doc__, 120, per_datapath=False)
    code, _ = blackbox.require("edge", "the sockmap data path, and loopback sources")
    if code is not None:
        return code
    w = blackbox.World("edge", args.binary, None)
    return blackbox.run_cases(w, [case_allow_deny, case_flood, case_reload, case_proxy_source, case_lifetime,
                                  case_keepalive, case_vanished_backend], args)


if __name__ == "__main__":
    sys.exit(main())
