#!/usr/bin/env python3
"""spliced on the sockmap path with only the privileges the systemd unit grants.

Starts the built daemon as nobody:nogroup through setpriv(1) with CAP_BPF, CAP_NET_ADMIN and
CAP_NET_BIND_SERVICE as its only capabilities (effective, permitted, inheritable, ambient and
bounding set), no_new_privs, and RLIMIT_MEMLOCK 0 (BPF memory is charged to the memory cgroup since
Linux 5.11, so the unit asks for no memlock limit). Its one route listens on a port below 1024 with
`datapath: sockmap` and forwards to a local echo backend. Checks: the process's credentials, an
echoed payload, the daemon log saying the route runs on sockmap, the access log line with
datapath=sockmap end=completed, the metric; then a reload by SIGHUP (what the unit's ExecReload= sends,
after --check-config, which runs as nobody too) that adds a second address below 1024, bound with the
capabilities kept, with echoes through both; and exit 0 on SIGTERM.

Usage: run.py --binary build/spliced. Root only (it needs setpriv to switch users); otherwise exits 77.
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

SKIP = 77
BUDGET_S = 20.0
CAPS = ["bpf", "net_admin", "net_bind_service"]
CAP_BITS = {"net_bind_service": 10, "net_admin": 12, "bpf": 39}
WANT_MASK = sum(1 << CAP_BITS[c] for c in CAPS)


def fail(msg, logs=()):
    print(f"FAIL: {msg}", flush=True)
    for name, path in logs:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        print(f"--- {name} ---\n{text}--- end of {name} ---")
    sys.exit(1)


def free_low_port(taken=()):
    """A free TCP port on 127.0.0.1 below 1024 (7xx first, then the rest of 600-999)."""
    for port in list(range(700, 800)) + list(range(600, 700)) + list(range(800, 1000)):
        if port in taken:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    fail("no free port below 1024 on 127.0.0.1")


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class EchoServer:
    """Echoes every byte back until the client half-closes, then half-closes too."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.echo, args=(conn,), daemon=True).start()

    @staticmethod
    def echo(conn):
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    conn.shutdown(socket.SHUT_WR)
                    return
                conn.sendall(data)

    def close(self):
        self.sock.close()


def read_status(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def wait_for(predicate, timeout, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return predicate()
        time.sleep(0.05)
    return predicate()


def text_of(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)
    started = time.monotonic()

    if os.geteuid() != 0:
        print("SKIP: needs root to start spliced as nobody with capabilities (setpriv)")
        return SKIP
    for tool in ("setpriv", "prlimit"):
        if not shutil.which(tool):
            fail(f"{tool} (util-linux) is missing")

    tmp = tempfile.mkdtemp(prefix="spliced-priv.")
    os.chmod(tmp, 0o755)  # the daemon runs as nobody and reads its config from here
    daemon_log = os.path.join(tmp, "daemon.log")
    access_log = os.path.join(tmp, "access.log")
    logs = (("daemon log", daemon_log), ("access log", access_log))
    echo = EchoServer()
    listen_port = free_low_port()
    metrics_port = free_port()
    config = os.path.join(tmp, "spliced.yaml")

    def write_config(ports):
        with open(config + ".new", "w") as f:
            f.write(
                "datapath: sockmap\n"
                "workers: 1\n"
                "drain_timeout: 2s\n"
                f"metrics: {{ listen: 127.0.0.1:{metrics_port} }}\n"
                "log: { level: info, access_log: stdout }\n"
                "routes:\n"
                "  - name: unprivileged\n"
                f"    listen: [{', '.join(f'127.0.0.1:{p}' for p in ports)}]\n"
                "    datapath: sockmap\n"
                "    backends:\n"
                f"      - address: 127.0.0.1:{echo.port}\n"
            )
        os.chmod(config + ".new", 0o644)
        os.rename(config + ".new", config)

    write_config([listen_port])

    caps = ",".join(["-all"] + ["+" + c for c in CAPS])
    as_unit = ["prlimit", "--memlock=0:0", "--",
               "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
               f"--inh-caps={caps}", f"--ambient-caps={caps}", f"--bounding-set={caps}", "--no-new-privs", "--"]
    # The unit's ExecStartPre= (and first ExecReload=), with the same credentials.
    check = subprocess.run(as_unit + [binary, "--check-config", "--config", config], capture_output=True, text=True)
    if check.returncode != 0:
        fail(f"--check-config as nobody exited {check.returncode}: {check.stderr.strip()}")
    cmd = as_unit + [binary, "--config", config]
    out = open(access_log, "w")
    err = open(daemon_log, "w")
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    try:
        if not wait_for(lambda: " ready" in text_of(daemon_log), 10, proc):
            fail(f"spliced did not get ready (exit status {proc.poll()})", logs)
        # prlimit and setpriv exec: the process is spliced itself.
        st = read_status(proc.pid)
        uids = st["Uid"].split()
        gids = st["Gid"].split()
        if set(uids) != {"65534"} or set(gids) != {"65534"}:
            fail(f"runs as uid {uids} gid {gids}, not nobody:nogroup", logs)
        if st.get("Groups", "") != "":
            fail(f"supplementary groups {st['Groups']!r} were not cleared", logs)
        for key in ("CapEff", "CapPrm", "CapInh", "CapAmb", "CapBnd"):
            if int(st[key], 16) != WANT_MASK:
                fail(f"{key} is {st[key]}, expected {WANT_MASK:016x} (bpf, net_admin, net_bind_service)", logs)
        if st.get("NoNewPrivs") != "1":
            fail("no_new_privs is not set", logs)
        with open(f"/proc/{proc.pid}/limits") as f:
            memlock = next(l for l in f if l.startswith("Max locked memory")).split()
        if memlock[3:5] != ["0", "0"]:
            fail(f"RLIMIT_MEMLOCK is {memlock[3:5]}, expected 0 0", logs)

        dlog = text_of(daemon_log)
        route_line = re.search(r"route unprivileged: datapath (\S+) \(([^)]*)\)", dlog)
        if not route_line or route_line.group(1) != "sockmap":
            fail("the daemon log does not say route unprivileged runs on sockmap", logs)
        if f"listening on 127.0.0.1:{listen_port}" not in dlog:
            fail(f"the daemon log does not say it listens on 127.0.0.1:{listen_port}", logs)

        # Request/response rounds, each waiting for its echo: the pair is in the SOCKHASH before the
        # first byte (a client that half-closed before the upstream connected would run on splice), and
        # nothing outruns the egress bound (a flat-out sender on loopback is moved to copy).
        def echo_through(port):
            sizes = [1, 100, 1000, 4096, 16384, 65536, 7, 30000]
            with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                for size in sizes:
                    payload = os.urandom(size)
                    c.sendall(payload)
                    got = bytearray()
                    while len(got) < size:
                        chunk = c.recv(size - len(got))
                        if not chunk:
                            fail(f"port {port}: connection closed after {len(got)} of {size} echoed bytes", logs)
                        got += chunk
                    if bytes(got) != payload:
                        fail(f"port {port}: echo of {size} bytes differs", logs)
                c.shutdown(socket.SHUT_WR)
                if c.recv(1) != b"":
                    fail(f"port {port}: bytes after the echo instead of EOF", logs)
            return sum(sizes)

        echoed = echo_through(listen_port)

        line_re = re.compile(r"conn=\d+ route=unprivileged .* datapath=(\S+) .* end=(\S+)")
        if not wait_for(lambda: line_re.search(text_of(access_log)), 5, proc):
            fail("no access log line for the connection", logs)
        m = line_re.search(text_of(access_log))
        if m.group(1) != "sockmap" or m.group(2) != "completed":
            fail(f"access log says datapath={m.group(1)} end={m.group(2)}, expected sockmap, completed", logs)

        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        metric_re = re.compile(
            r'^spliced_connections_total\{(?=[^}]*route="unprivileged")(?=[^}]*datapath="sockmap")[^}]*\} 1(\.0)?$',
            re.M)
        if not metric_re.search(metrics):
            fail("spliced_connections_total{route=unprivileged,datapath=sockmap} is not 1", logs)

        # A reload with the same credentials: SIGHUP (what ExecReload= sends) adds a second address below
        # 1024, which the daemon binds then, with the capabilities it kept.
        second_port = free_low_port(taken={listen_port})
        write_config([listen_port, second_port])
        proc.send_signal(signal.SIGHUP)
        if not wait_for(lambda: "reload done" in text_of(daemon_log) or "reload failed" in text_of(daemon_log), 10, proc):
            fail("no reload result in the daemon log within 10 s of SIGHUP", logs)
        if "reload failed" in text_of(daemon_log):
            fail("the reload failed", logs)
        echoed += echo_through(second_port)
        echoed += echo_through(listen_port)
        if not wait_for(lambda: len(line_re.findall(text_of(access_log))) >= 3, 5, proc):
            fail("no access log lines for the connections after the reload", logs)
        ends = [(m.group(1), m.group(2)) for m in line_re.finditer(text_of(access_log))]
        if any(e != ("sockmap", "completed") for e in ends):
            fail(f"after the reload, access log datapath/end: {ends}", logs)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        if not re.search(r'^spliced_config_reloads_total\{[^}]*result="success"[^}]*\} 1(\.0)?$', metrics, re.M):
            fail("spliced_config_reloads_total{result=success} is not 1", logs)

        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            fail("spliced did not stop within 10 s of SIGTERM", logs)
        if rc != 0:
            fail(f"spliced exited {rc} after SIGTERM", logs)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close()
        err.close()
        echo.close()
        shutil.rmtree(tmp, ignore_errors=True)  # a failure printed the logs already

    elapsed = time.monotonic() - started
    if elapsed > BUDGET_S:
        fail(f"took {elapsed:.1f} s, over the {BUDGET_S:.0f} s budget", logs)
    print(f"SUMMARY privileges: uid=65534 caps={'+'.join(CAPS)} memlock=0 listen=127.0.0.1:{listen_port} "
          f"datapath=sockmap echo={echoed}B over 3 connections access_log=datapath=sockmap,end=completed "
          f"reload=+127.0.0.1:{second_port} ok exit=0 in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
