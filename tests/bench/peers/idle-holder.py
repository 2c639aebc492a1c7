#!/usr/bin/env python3
"""Idle-connection holder for the memory test of tests/bench/run.

Accepts connections and keeps them open; echoes whatever a connection sends (the test sends one
byte each way); closes with RST (SO_LINGER 0) on EOF so no TIME_WAIT sockets linger into the next
measurement. Writes the number of open connections to --count-file whenever it changes (at most
every 50 ms, written atomically), so the runner can see when all N are established end to end.
"""
import argparse
import errno
import os
import resource
import selectors
import signal
import socket
import struct
import time


def write_count(path, n):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % n)
    os.replace(tmp, path)


def on_term(_sig, _frame):
    raise SystemExit(0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True, help="ADDR:PORT")
    ap.add_argument("--count-file", required=True)
    ap.add_argument("--nofile", type=int, default=65536)
    a = ap.parse_args()

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(a.nofile, hard), hard))
    signal.signal(signal.SIGTERM, on_term)

    host, port = a.listen.rsplit(":", 1)
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, int(port)))
    ls.listen(4096)
    ls.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(ls, selectors.EVENT_READ, None)
    linger0 = struct.pack("ii", 1, 0)
    conns = 0
    written, last_write = -1, 0.0
    write_count(a.count_file, 0)
    while True:
        for key, _ in sel.select(timeout=0.05):
            if key.data is None:
                for _ in range(256):
                    try:
                        c, _addr = ls.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as e:
                        if e.errno in (errno.EMFILE, errno.ENFILE, errno.ECONNABORTED):
                            break
                        raise
                    c.setblocking(False)
                    sel.register(c, selectors.EVENT_READ, "c")
                    conns += 1
                continue
            c = key.fileobj
            try:
                data = c.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if data:
                try:
                    c.send(data)
                except OSError:
                    pass
                continue
            sel.unregister(c)
            try:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)
            except OSError:
                pass
            c.close()
            conns -= 1
        now = time.monotonic()
        if conns != written and now - last_write >= 0.05:
            write_count(a.count_file, conns)
            written, last_write = conns, now


if __name__ == "__main__":
    try:
        main()
    except (KeyboardInterrupt, SystemExit):
        pass
