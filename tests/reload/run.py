#!/usr/bin/python3
"""Hot reload suite: SIGHUP with connections open, through the real binary, on one data path.

    tests/reload/run.py --binary build/spliced --datapath sockmap|splice|copy|auto [--budget 120]

Root only (exit 77 otherwise). One daemon per case, each in its own temp dir, told READY/RELOADING through
a NOTIFY_SOCKET kept open here; every process is started here and stopped by its PID. Cases:

 1. integrity: sha256-checked echo transfers (both directions through spliced) and a ping-pong client stay
    intact across 20 reloads between two configs; they end `completed`; the SOCKHASH map id is unchanged
    (sockmap, auto); on auto the ping-pong connection is promoted while the reloads go on.
 2. no refusal: a client connecting in a tight loop through an address present in both configs sees no
    refused or reset connection during 20 reloads.
 3. a route added, a route removed (its established connection keeps running, its port refuses new
    ones), a backend list changed (new connections go to the new list).
 4. a broken file: the old config keeps serving, the error is logged with file:line:col, counted as
    result="failure"; RELOADING=1 with MONOTONIC_USEC, then READY=1, for every reload.
 5. a new address that cannot be bound: nothing changes (the other edits of that file are not applied).
 6. SIGHUP during a drain is ignored: the draining connection runs on to its end.
 7. a backend's weight set to 0 by a reload takes no new connection; its open ones run on.
"""

import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from blackbox import ConnectLoop, Daemon, EchoServer, interop, metric  # noqa: E402
import blackbox  # noqa: E402

from run import Case, Failure, Procs, free_ports, wait_until, LO  # noqa: E402


def config(datapath, routes, metrics_port=None, extra=""):
    """A config text; `routes` is a list of (name, listen port, [backend ports])."""
    text = f"datapath: {datapath}\nworkers: 2\ndrain_timeout: 3s\nlog:\n  level: info\n  access_log: stdout\n" + extra
    if metrics_port:
        text += f"metrics:\n  listen: {LO}:{metrics_port}\n"
    text += "routes:\n"
    for name, listen, backends in routes:
        text += f"  - name: {name}\n    listen: \"{LO}:{listen}\"\n    timeouts: {{ idle: 30s }}\n    backends:\n"
        text += "".join(f"      - address: {LO}:{b}\n" for b in backends)
    return text


def echo_transfer(port, nbytes, pace, result, key):
    """Sends nbytes (a sender thread, in 64 KiB steps `pace` s apart), half-closes, reads the echo to EOF;
    result[key] = None or the problem."""
    data = os.urandom(nbytes)
    try:
        s = socket.create_connection((LO, port), timeout=30)
    except OSError as e:
        result[key] = f"connect: {e!r}"
        return
    errors = []

    def sender():
        try:
            for off in range(0, nbytes, 65536):
                s.sendall(data[off:off + 65536])
                time.sleep(pace)
            s.shutdown(socket.SHUT_WR)
        except OSError as e:
            errors.append(repr(e))

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    got = hashlib.sha256()
    n = 0
    try:
        while True:
            b = s.recv(1 << 20)
            if not b:
                break
            got.update(b)
            n += len(b)
    except OSError as e:
        errors.append(f"recv after {n} bytes: {e!r}")
    t.join(30)
    s.close()
    if errors:
        result[key] = errors[0]
    elif n != nbytes or got.digest() != hashlib.sha256(data).digest():
        result[key] = f"echo of {nbytes} bytes came back as {n} bytes, sha256 {'same' if n == nbytes else 'differs'}"
    else:
        result[key] = None


def ping_pong(port, seconds, result, key, pause_after_first=0.0):
    """14-byte ping-pongs every 10 ms for `seconds`, then a half-close; result[key] = None or the problem.
    `pause_after_first`: silence after the first round trip (an auto route moves an idle connection to sockmap)."""
    try:
        s = socket.create_connection((LO, port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        end, i = time.monotonic() + seconds, 0
        while time.monotonic() < end:
            msg = b"ping %09d" % i
            s.sendall(msg)
            got = b""
            while len(got) < len(msg):
                b = s.recv(64)
                if not b:
                    raise OSError(f"EOF after {i} round trips")
                got += b
            if got != msg:
                raise OSError(f"round trip {i} came back as {got!r}")
            i += 1
            time.sleep(pause_after_first if i == 1 and pause_after_first else 0.01)
        s.shutdown(socket.SHUT_WR)
        if s.recv(1) != b"":
            raise OSError("no EOF at the end")
        s.close()
        result[key] = None
    except OSError as e:
        result[key] = repr(e)


def lines_of(d, route=None):
    return [l for l in interop.access_lines(d.procs) if route is None or l.get("route") == route]


# ---------------------------------------------------------------------------------------------------
# Cases


def case_integrity(w):
    c = Case("1. transfers and a ping-pong client stay intact across 20 reloads")
    print(c.title, flush=True)
    e1 = EchoServer("e1")
    w.servers.append(e1)
    la, lx = free_ports(2)
    confs = [config(w.datapath, [("a", la, [e1.port])]),
             config(w.datapath, [("a", la, [e1.port]), ("x", lx, [e1.port])])]
    d = Daemon(w, "integrity", confs[0])
    maps_before = d.sockhash_ids()
    results, threads = {}, []
    for i in range(4):
        threads.append(threading.Thread(target=echo_transfer, args=(la, 8 << 20, 0.02, results, f"transfer {i}")))
    threads.append(threading.Thread(target=ping_pong, args=(la, 3.5, results, "ping-pong", 0.6)))
    for t in threads:
        t.start()
    time.sleep(0.3)
    for i in range(20):
        d.write(confs[(i + 1) % 2])
        d.reload()
        time.sleep(0.1)
    for t in threads:
        t.join(60)
    bad = {k: v for k, v in results.items() if v}
    c.check(len(results) == 5 and not bad, f"4 x 8 MiB echo transfers and a 3.5 s ping-pong across 20 reloads: "
            + (f"{bad}" if bad else "all intact"))
    wait_until(lambda: len(lines_of(d, "a")) >= 5, 5, "5 access-log lines")
    ends = sorted(l.get("end") for l in lines_of(d, "a"))
    paths = sorted(l.get("datapath") for l in lines_of(d, "a"))
    c.check(ends == ["completed"] * 5, f"each ended completed: {ends}; data paths {paths}")
    if w.datapath in ("sockmap", "auto"):
        maps_after = d.sockhash_ids()
        c.check(maps_before and maps_before == maps_after,
                f"the SOCKHASH map id is the same before and after: {sorted(maps_before)} / {sorted(maps_after)}")
    if w.datapath == "auto":
        # Promoted in its 0.6 s pause, then back to userspace copy once its 10 ms ping-pongs made it chatty.
        c.check("splice+sockmap+copy" in paths,
                f"the ping-pong connection was promoted during the reloads, and demoted as it turned chatty: {paths}")
    if w.datapath == "sockmap":
        c.check(all(p.startswith("sockmap") for p in paths), f"all of them started on sockmap: {paths}")
    reloads = len(re.findall(r"reload done", d.log()))
    c.check(reloads == 20, f"20 reloads done ({reloads})")
    d.close()
    return c


def case_no_refusal(w):
    c = Case("2. a client connecting in a tight loop sees no refusal or reset during 20 reloads")
    print(c.title, flush=True)
    e1, e2 = EchoServer("e1"), EchoServer("e2")
    w.servers += [e1, e2]
    la, lb = free_ports(2)
    confs = [config(w.datapath, [("a", la, [e1.port])]),
             config(w.datapath, [("a", la, [e2.port]), ("b", lb, [e1.port])])]
    d = Daemon(w, "no-refusal", confs[0])
    loop = ConnectLoop(la, 2)
    time.sleep(0.2)
    for i in range(20):
        d.write(confs[(i + 1) % 2])
        d.reload()
        time.sleep(0.05)
    time.sleep(0.2)
    loop.stop()
    c.check(not loop.problems and loop.ok > 100, f"through a kept address during 20 reloads: {loop.report()}")
    c.check(e1.accepted > 0 and e2.accepted > 0, f"both backend lists were used: {e1.accepted} / {e2.accepted}")
    d.close()
    return c


def case_routes(w):
    c = Case("3. a route added, a route removed, a backend list changed")
    print(c.title, flush=True)
    e1, e2, e3 = EchoServer("e1"), EchoServer("e2"), EchoServer("e3")
    w.servers += [e1, e2, e3]
    la, lb, lc = free_ports(3)
    d = Daemon(w, "routes", config(w.datapath, [("a", la, [e1.port]), ("b", lb, [e2.port])]))
    held = socket.create_connection((LO, lb), timeout=5)
    held.sendall(b"before")
    c.check(held.recv(16) == b"before", "a connection on route b is established")
    d.write(config(w.datapath, [("a", la, [e3.port]), ("c", lc, [e2.port])]))
    d.reload()
    held.sendall(b"after")
    c.check(held.recv(16) == b"after", "after the reload that removed route b, its connection still echoes")
    try:
        socket.create_connection((LO, lb), timeout=2).close()
        c.check(False, "route b's port still accepts new connections")
    except ConnectionRefusedError:
        c.check(True, "route b's port refuses new connections")
    before_e1, before_e3 = e1.accepted, e3.accepted
    problems = [p for p in (interop.plain_echo(la, None, 1000)[1] for _ in range(5)) if p]
    c.check(not problems and e3.accepted - before_e3 == 5 and e1.accepted == before_e1,
            f"route a's new connections go to its new backend list: {e3.accepted - before_e3} of 5 to the new one, "
            f"{e1.accepted - before_e1} to the old")
    _, p = interop.plain_echo(lc, None, 1000)
    c.check(p is None, "the added route c serves" + (f": {p}" if p else ""))
    held.shutdown(socket.SHUT_WR)
    c.check(held.recv(16) == b"", "the removed route's connection ends cleanly")
    held.close()
    wait_until(lambda: lines_of(d, "b"), 5, "route b's access-log line")
    l = lines_of(d, "b")[0]
    c.check(l.get("end") == "completed" and l.get("bytes_in") == "11",
            f"and is logged on route b: end={l.get('end')} bytes_in={l.get('bytes_in')}")
    d.close()
    return c


def case_broken(w):
    c = Case("4. a broken file keeps the running config; RELOADING=1 / MONOTONIC_USEC / READY=1")
    print(c.title, flush=True)
    e1 = EchoServer("e1")
    w.servers.append(e1)
    la, mport = free_ports(2)
    good = config(w.datapath, [("a", la, [e1.port])], metrics_port=mport)
    d = Daemon(w, "broken", good)
    d.write(good.replace("routes:\n", "routes:\n  - name: [oops\n"))
    d.messages.clear()
    t0 = time.clock_gettime(time.CLOCK_MONOTONIC)
    d.reload()
    t1 = time.clock_gettime(time.CLOCK_MONOTONIC)
    m = re.search(r"reload failed, the running config stays: (\S+):(\d+):(\d+): (.*)", d.log())
    c.check(m and m.group(1).endswith("spliced.yaml"), "the error is logged with file:line:col: "
            + (m.group(0) if m else "(no such line)"))
    _, p = interop.plain_echo(la, None, 1000)
    c.check(p is None, "the old config keeps serving" + (f": {p}" if p else ""))
    failures = metric(mport, "spliced_config_reloads_total", result="failure")
    c.check(failures == 1, f"spliced_config_reloads_total{{result=\"failure\"}} = {failures:.0f}")
    msgs = "\n".join(d.messages).split("\n")
    usec = next((int(x.split("=", 1)[1]) for x in msgs if x.startswith("MONOTONIC_USEC=")), None)
    c.check("RELOADING=1" in msgs and usec is not None and t0 * 1e6 <= usec <= t1 * 1e6
            and msgs.index("RELOADING=1") < msgs.index("READY=1"),
            f"notifications: {[m for m in msgs if m]} (MONOTONIC_USEC within the SIGHUP's window)")
    d.write(good)
    d.reload()
    ok = metric(mport, "spliced_config_reloads_total", result="success")
    # A burst of SIGHUPs: the ones that come during a reload make one more reload after it, not one each.
    for _ in range(10):
        d.proc.send_signal(signal.SIGHUP)
    time.sleep(1)
    burst = metric(mport, "spliced_config_reloads_total", result="success") - ok
    c.check(1 <= burst <= 5, f"10 SIGHUPs at once are coalesced: {burst:.0f} reloads")
    stamp = metric(mport, "spliced_config_last_reload_success_timestamp_seconds")
    c.check(ok == 1 and abs(stamp - time.time()) < 30, f"a good file again: success = {ok:.0f}, last success "
            f"timestamp {stamp:.0f}")
    d.close()
    return c


def case_unbindable(w):
    c = Case("5. a new address that cannot be bound: nothing changes")
    print(c.title, flush=True)
    e1, e2 = EchoServer("e1"), EchoServer("e2")
    w.servers += [e1, e2]
    la, lbusy, mport = free_ports(3)
    squatter = socket.socket()  # without SO_REUSEPORT: spliced's bind of this port fails
    squatter.bind((LO, lbusy))
    squatter.listen(1)
    d = Daemon(w, "unbindable", config(w.datapath, [("a", la, [e1.port])], metrics_port=mport))
    d.write(config(w.datapath, [("a", la, [e2.port]), ("busy", lbusy, [e1.port])], metrics_port=mport))
    d.reload()
    before = e2.accepted
    problems = [p for p in (interop.plain_echo(la, None, 100)[1] for _ in range(3)) if p]
    c.check(not problems and e2.accepted == before, f"route a still goes to its old backend ({e2.accepted - before} "
            f"of 3 to the new one)")
    c.check(re.search(r"reload failed, the running config stays: cannot listen on 127\.0\.0\.1:%d" % lbusy, d.log()),
            "the failure names the address")
    c.check(metric(mport, "spliced_config_reloads_total", result="failure") == 1, "counted as a failure")
    squatter.close()
    d.close()
    return c


def case_drain(w):
    c = Case("6. SIGHUP during a drain is ignored")
    print(c.title, flush=True)
    e1 = EchoServer("e1")
    w.servers.append(e1)
    (la,) = free_ports(1)
    d = Daemon(w, "drain", config(w.datapath, [("a", la, [e1.port])]))
    held = socket.create_connection((LO, la), timeout=5)
    held.sendall(b"x")
    held.recv(1)
    d.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    d.proc.send_signal(signal.SIGHUP)
    d.proc.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    held.sendall(b"still")
    got = held.recv(16)
    c.check(got == b"still" and d.proc.poll() is None, f"the draining connection still echoes ({got!r})")
    held.shutdown(socket.SHUT_WR)
    held.recv(1)
    held.close()
    try:
        rc = d.proc.wait(5)
    except subprocess.TimeoutExpired:
        rc = None
    c.check(rc == 0, f"the daemon exits 0 once it is done (exit {rc})")
    c.check("SIGHUP while draining: ignored" in d.log() and "reload" not in d.log().split("SIGTERM", 1)[1],
            "both SIGHUPs were logged as ignored, no reload ran")
    d.close()
    return c


def case_weight_zero(w):
    c = Case("7. weight 0 by reload: the backend takes no new connection, its open ones run on")
    print(c.title, flush=True)
    e1, e2 = EchoServer("e1"), EchoServer("e2")
    w.servers += [e1, e2]
    (la,) = free_ports(1)

    def conf(w1):
        return (f"datapath: {w.datapath}\nworkers: 2\nlog:\n  level: info\n  access_log: stdout\nroutes:\n"
                f"  - name: a\n    listen: \"{LO}:{la}\"\n    backends:\n"
                f"      - {{ address: \"{LO}:{e1.port}\", weight: {w1} }}\n      - address: {LO}:{e2.port}\n")

    d = Daemon(w, "weight-zero", conf(1))
    held = []
    while e1.accepted == 0 and len(held) < 4:  # round robin: one of the first two lands on e1
        s = socket.create_connection((LO, la), timeout=5)
        s.sendall(b"x")
        s.recv(1)
        held.append(s)
    d.write(conf(0))
    d.reload()
    before1, before2 = e1.accepted, e2.accepted
    problems = [p for p in (interop.plain_echo(la, None, 1000)[1] for _ in range(6)) if p]
    c.check(not problems and e1.accepted == before1 and e2.accepted - before2 == 6,
            f"after weight 0: {e1.accepted - before1} new connections to it, {e2.accepted - before2} to the other")
    ok = True
    for s in held:
        s.sendall(b"still")
        ok &= s.recv(16) == b"still"
        s.close()
    c.check(ok, f"its {len(held)} open connection(s) still echo")
    d.close()
    return c


def main():
    args = blackbox.arguments(__doc__, 120)
    code, _ = blackbox.require("reload", "spliced's sockmap path, its BPF maps")
    if code is not None:
        return code
    w = blackbox.World("reload", args.binary, args.datapath)
    return blackbox.run_cases(w, [case_integrity, case_no_refusal, case_routes, case_broken, case_unbindable,
                                  case_drain, case_weight_zero], args)


if __name__ == "__main__":
    sys.exit(main())
