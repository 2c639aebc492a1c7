#!/usr/bin/env python3
"""Idle-connection client for the memory test of tests/bench/run.

Opens N TCP connections to --connect (at most --inflight connects at a time), then follows
commands on stdin, one per line, answering each with one JSON line on stdout:
  (start)  -> {"connected": ok, "failed": k, "secs": t}
  ping     -> sends one byte on every connection, waits for it to come back:
              {"echoed": ok, "missing": k, "secs": t}
  close    -> closes all with RST (SO_LINGER 0, so no TIME_WAIT), {"closed": n}, then exits.
Every wait is bounded by --timeout seconds.
"""
import argparse
import errno
import json
import resource
import selectors
import socket
import struct
import sys
import time


def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def connect_all(addr, n, inflight, timeout):
    sel = selectors.DefaultSelector()
    done, failed, pending, started = [], 0, 0, 0
    t0 = time.monotonic()
    deadline = t0 + timeout
    while (started < n or pending) and time.monotonic() < deadline:
        while started < n and pending < inflight:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            rc = s.connect_ex(addr)
            started += 1
            if rc in (0, errno.EINPROGRESS):
                sel.register(s, selectors.EVENT_WRITE)
                pending += 1
            else:
                s.close()
                failed += 1
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            sel.unregister(s)
            pending -= 1
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                done.append(s)
            else:
                s.close()
                failed += 1
    for key in list(sel.get_map().values()):
        key.fileobj.close()
        failed += 1
    return done, failed, time.monotonic() - t0


def ping_all(socks, timeout):
    t0 = time.monotonic()
    sel = selectors.DefaultSelector()
    for s in socks:
        try:
            s.send(b"x")
            sel.register(s, selectors.EVENT_READ)
        except OSError:
            pass
    echoed = 0
    deadline = t0 + timeout
    while sel.get_map() and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            try:
                data = s.recv(16)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            sel.unregister(s)
            if data:
                echoed += 1
    return echoed, len(socks) - echoed, time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connect", required=True, help="ADDR:PORT")
    ap.add_argument("-n", type=int, required=True)
    ap.add_argument("--inflight", type=int, default=128)
    ap.add_argument("--timeout", type=float, default=60)
    a = ap.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(a.n + 1024, hard), hard))
    host, port = a.connect.rsplit(":", 1)
    socks, failed, secs = connect_all((host, int(port)), a.n, a.inflight, a.timeout)
    say({"connected": len(socks), "failed": failed, "secs": round(secs, 3)})
    linger0 = struct.pack("ii", 1, 0)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "ping":
            ok, missing, secs = ping_all(socks, a.timeout)
            say({"echoed": ok, "missing": missing, "secs": round(secs, 3)})
        elif cmd == "close":
            for s in socks:
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)
                except OSError:
                    pass
                s.close()
            say({"closed": len(socks)})
            return
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
