#!/usr/bin/python3
"""Interop suite: spliced between real peers nobody here wrote (HAProxy, nginx stream, OpenSSL, curl).

    tests/interop/run.py --binary build/spliced --datapath sockmap|splice|copy|auto

Root only (exit 77 otherwise). Missing peers: exit 77, or a failure when $CI is set. Python 3 standard
library only. Everything runs on loopback; configs, logs and certificates live in one temp dir; every
process is started here and stopped by its PID. Cases:

 1. SNI routing: three routes share one listen address (a.example.com, *.example.com, a default) in
    front of three Python TLS echo servers with a certificate each, and a fourth route
    (www.example.com) in front of `openssl s_server -www`. openssl s_client, Python's ssl client
    (1 MiB sha256 echo) and curl check which server each name reaches, and the access log's route.
 2. PROXY accept from HAProxy (send-proxy and send-proxy-v2): the access log's client= is the
    original client (bound to 127.0.0.2), the echo is intact.
 3. PROXY send (v1, v2) to HAProxy (accept-proxy) and nginx stream (listen ... proxy_protocol): their
    logs show the original client (127.0.0.3) and spliced's listen address; and a TLS connection
    through a v2 route shows HAProxy the SNI (AUTHORITY TLV) and spliced's conn id (UNIQUE_ID TLV).
 4. PROXY accept + SNI: HAProxy send-proxy-v2 (and send-proxy) in front of an SNI-routed address
    that accepts PROXY headers: right certificate per name, echo intact, original client logged.
"""

import argparse
import hashlib
import os
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

SKIP = 77
NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
LO = "127.0.0.1"


class Failure(Exception):
    pass


class Budget:
    def __init__(self, seconds):
        self.start = time.monotonic()
        self.deadline = self.start + seconds
        self.seconds = seconds

    def left(self, cap):
        """min(cap, the time left); fails once the budget is spent."""
        rem = self.deadline - time.monotonic()
        if rem <= 0:
            raise Failure(f"time budget of {self.seconds:.0f} s exceeded")
        return min(cap, rem)

    def elapsed(self):
        return time.monotonic() - self.start


BUDGET = None  # set in main


def wait_until(pred, cap, what, step=0.05):
    """Polls pred() until it returns something truthy, at most `cap` seconds (and the budget)."""
    end = time.monotonic() + BUDGET.left(cap)
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= end:
            raise Failure(f"timed out after {cap:.0f} s waiting for {what}")
        time.sleep(step)


def sha(b):
    return hashlib.sha256(b).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------
# Processes


class Procs:
    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []  # (name, Popen)

    def start(self, name, argv, env=None):
        out = open(os.path.join(self.tmp, f"{name}.stdout"), "wb")
        err = open(os.path.join(self.tmp, f"{name}.stderr"), "wb")
        try:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=self.tmp)
        finally:
            out.close()
            err.close()
        self.procs.append((name, p))
        return p

    def out(self, name):
        return read_text(os.path.join(self.tmp, f"{name}.stdout"))

    def err(self, name):
        return read_text(os.path.join(self.tmp, f"{name}.stderr"))

    def check_alive(self, name, p):
        if p.poll() is not None:
            raise Failure(f"{name} exited with status {p.returncode}; stderr:\n{tail(self.err(name), 20)}\n"
                          f"stdout:\n{tail(self.out(name), 10)}")

    def stop_all(self):
        for name, p in reversed(self.procs):
            if p.poll() is not None:
                continue
            try:
                p.terminate()  # by PID: Popen.terminate sends SIGTERM to p.pid
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    print(f"warning: {name} (pid {p.pid}) did not exit after SIGKILL", flush=True)
            except OSError:
                pass


def read_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def tail(text, n):
    lines = text.splitlines()[-n:]
    return "\n".join("    | " + l for l in lines) if lines else "    | (empty)"


def free_ports(n):
    """n distinct free loopback ports (bind to port 0, read the port, close)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((LO, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_connectable(port, proc_name, proc, procs, cap=10):
    def probe():
        procs.check_alive(proc_name, proc)
        try:
            with socket.create_connection((LO, port), timeout=0.5):
                return True
        except OSError:
            return False

    wait_until(probe, cap, f"{proc_name} to accept on {LO}:{port}", step=0.05)


# ---------------------------------------------------------------------------------------------------
# Peers written here: plain and TLS echo servers (threads; each echoes until EOF, then closes)


class EchoServer:
    def __init__(self, name, tls_ctx=None):
        self.name = name
        self.ctx = tls_ctx
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((LO, 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.errors = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.settimeout(30)
            if self.ctx is not None:
                c = self.ctx.wrap_socket(c, server_side=True)
            while True:
                try:
                    b = c.recv(65536)
                except (ssl.SSLEOFError, ConnectionResetError):
                    break
                if not b:
                    break
                c.sendall(b)
            if self.ctx is None:
                c.shutdown(socket.SHUT_WR)
        except (OSError, ssl.SSLError) as e:
            self.errors.append(repr(e))
        finally:
            c.close()

    def close(self):
        self.closed = True
        self.sock.close()


# ---------------------------------------------------------------------------------------------------
# Clients


def bound_socket(source, timeout):
    s = socket.socket()
    if source:
        s.bind((source, 0))
    s.settimeout(timeout)
    return s


def plain_echo(port, source, nbytes):
    """Connects from `source`, sends nbytes of random data (a sender thread), half-closes, reads to EOF.
    Returns (client_port, problem or None)."""
    data = os.urandom(nbytes)
    s = bound_socket(source, BUDGET.left(10))
    try:
        s.connect((LO, port))
        cport = s.getsockname()[1]
        send_err = []

        def sender():
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
            except OSError as e:
                send_err.append(repr(e))

        t = threading.Thread(target=sender, daemon=True)
        t.start()
        got = bytearray()
        end = time.monotonic() + BUDGET.left(15)
        while True:
            if time.monotonic() > end:
                return cport, f"no EOF after {len(got)} of {nbytes} echoed bytes within 15 s"
            try:
                b = s.recv(65536)
            except socket.timeout:
                continue
            except OSError as e:
                return cport, f"recv failed after {len(got)} of {nbytes} bytes: {e!r}"
            if not b:
                break
            got += b
        t.join(5)
        if send_err:
            return cport, f"send failed: {send_err[0]}"
        if bytes(got) != data:
            return cport, (f"echo differs: sent {nbytes} B sha256 {sha(data)}, got {len(got)} B sha256 "
                           f"{sha(bytes(got))}")
        return cport, None
    except OSError as e:
        return None, f"connect/echo via {LO}:{port} from {source}: {e!r}"
    finally:
        s.close()


def client_ctx():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def tls_echo(port, name, nbytes, source=None):
    """TLS to port with SNI `name` (None: no SNI); sends nbytes of random data, then reads back exactly
    nbytes (non-blocking, interleaved). Returns (client_port, peer_cert_der, problem or None)."""
    data = os.urandom(nbytes)
    raw = bound_socket(source, BUDGET.left(10))
    cport, der = None, None
    try:
        raw.connect((LO, port))
        cport = raw.getsockname()[1]
        s = client_ctx().wrap_socket(raw, server_hostname=name)
        der = s.getpeercert(binary_form=True)
        s.setblocking(False)
        sent, got = 0, bytearray()
        end = time.monotonic() + BUDGET.left(20)
        while len(got) < nbytes:
            if time.monotonic() > end:
                return cport, der, f"stalled: sent {sent} B, read back {len(got)} of {nbytes} B within 20 s"
            progress = False
            if sent < nbytes:
                try:
                    sent += s.send(data[sent:sent + 65536])
                    progress = True
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                    pass
            try:
                b = s.recv(65536)
                if not b:
                    return cport, der, f"EOF after {len(got)} of {nbytes} echoed bytes (sent {sent})"
                got += b
                progress = True
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
            if not progress:
                select.select([s], [s] if sent < nbytes else [], [], 0.2)
        if bytes(got) != data:
            return cport, der, (f"echo differs: sent {nbytes} B sha256 {sha(data)}, got {len(got)} B sha256 "
                                f"{sha(bytes(got))}")
        return cport, der, None
    except (OSError, ssl.SSLError) as e:
        return cport, der, f"TLS via {LO}:{port} (SNI {name!r}): {e!r}"
    finally:
        raw.close()


def s_client_cn(tools, port, name):
    """openssl s_client's view: the CN of the certificate it got (None and the output's tail if none)."""
    argv = [tools["openssl"], "s_client", "-connect", f"{LO}:{port}"]
    argv += ["-noservername"] if name is None else ["-servername", name]
    try:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=BUDGET.left(10))
    except subprocess.TimeoutExpired:
        return None, "openssl s_client timed out"
    out = r.stdout.decode("utf-8", "replace")
    m = re.search(r"^subject=.*?CN\s*=\s*([^,/\n]+)", out, re.M)
    if not m:
        return None, f"rc={r.returncode}, no subject= line; stderr:\n{tail(r.stderr.decode('utf-8', 'replace'), 5)}"
    return m.group(1).strip(), None


# ---------------------------------------------------------------------------------------------------
# Logs


def access_lines(procs):
    lines = []
    for line in procs.out("spliced").splitlines():
        if "conn=" in line and " route=" in line:
            lines.append(dict(re.findall(r"(\w+)=(\S+)", line)) | {"_raw": line.strip()})
    return lines


def access_line_for(procs, client, cap=5):
    """The spliced access-log line whose client= is `client`; raises Failure with what was logged."""
    try:
        return wait_until(lambda: next((l for l in access_lines(procs) if l.get("client") == client), None), cap,
                          f"an access-log line with client={client}")
    except Failure as e:
        recent = "\n".join("    | " + l["_raw"] for l in access_lines(procs)[-6:]) or "    | (none)"
        raise Failure(f"{e}; the last access-log lines:\n{recent}")


def new_access_line(procs, before, cap=5):
    """The first access-log line after the first `before` ones."""
    lines = wait_until(lambda: (lambda ls: ls if len(ls) > before else None)(access_lines(procs)), cap,
                       "a new access-log line")
    return lines[before]


class Case:
    def __init__(self, title):
        self.title = title
        self.results = []  # (ok, text)

    def check(self, ok, text):
        self.results.append((bool(ok), text))
        print(f"    {'ok  ' if ok else 'FAIL'} {text}", flush=True)
        return ok

    def expect_line(self, procs, client, route, nbytes=None):
        """The access-log line for `client` names `route`, ended completed, and (plain payload) counted
        nbytes each way."""
        try:
            l = access_line_for(procs, client)
        except Failure as e:
            return self.check(False, f"access log for client={client}: {e}")
        problems = []
        if l.get("route") != route:
            problems.append(f"route={l.get('route')} (expected {route})")
        if l.get("end") != "completed":
            problems.append(f"end={l.get('end')} (expected completed)")
        if nbytes is not None:
            for k in ("bytes_in", "bytes_out"):
                if l.get(k) != str(nbytes):
                    problems.append(f"{k}={l.get(k)} (expected {nbytes})")
        return self.check(not problems, f"access log client={client} route={route}"
                          + (": " + "; ".join(problems) + "\n    | " + l["_raw"] if problems else
                             f" datapath={l.get('datapath')} end=completed"))

    @property
    def passed(self):
        return self.results and all(ok for ok, _ in self.results)


# ---------------------------------------------------------------------------------------------------
# Setup


def find_tools():
    tools, missing = {}, []
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin"
    for t in ("haproxy", "nginx", "openssl", "curl"):
        p = shutil.which(t, path=path)
        if p:
            tools[t] = p
        else:
            missing.append(t)
    if "nginx" in tools and not os.path.exists(NGINX_STREAM_MODULE):
        missing.append(f"nginx stream module {NGINX_STREAM_MODULE} (Debian package libnginx-mod-stream)")
    return tools, missing


def make_cert(tools, tmp, slug, cn):
    key, crt = os.path.join(tmp, f"{slug}.key"), os.path.join(tmp, f"{slug}.pem")
    r = subprocess.run([tools["openssl"], "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
                        "-days", "2", "-keyout", key, "-out", crt], capture_output=True, timeout=BUDGET.left(20))
    if r.returncode != 0:
        raise Failure(f"openssl req for {cn} failed: {r.stderr.decode('utf-8', 'replace')}")
    with open(crt) as f:
        der = ssl.PEM_cert_to_DER_cert(f.read())
    return key, crt, der


def route(name, listen, backend, *, sni=None, accept=False, send=None, handshake=None):
    r = [f"  - name: {name}", f"    listen: \"{LO}:{listen}\""]
    if sni:
        r.append("    match: { sni: [" + ", ".join(f'"{n}"' for n in sni) + "] }")
    if accept:
        r.append("    accept_proxy_protocol: true")
        r.append('    trusted_proxies: ["127.0.0.0/8"]')
    if send:
        r.append(f"    send_proxy_protocol: {send}")
    r.append("    timeouts: { connect: 2s, idle: 30s" + (f", handshake: {handshake}" if handshake else "") + " }")
    r.append("    backends:")
    r.append(f"      - address: {LO}:{backend}")
    return "\n".join(r)


class Daemon:
    """The one wrapper of a spliced under test: its config in `tmp` (checked with --check-config first), started
    by `procs` with a NOTIFY_SOCKET that stays open (READY=1 waited for, RELOADING/READY of reloads collected),
    reloaded by SIGHUP, its logs read back."""

    def __init__(self, procs, binary, tmp, conf_text):
        self.procs, self.tmp = procs, tmp
        self.conf = os.path.join(tmp, "spliced.yaml")
        self.write(conf_text)
        r = subprocess.run([binary, "--check-config", "--config", self.conf], capture_output=True,
                           timeout=BUDGET.left(10))
        if r.returncode != 0:
            raise Failure(f"spliced --check-config refused the config (rc={r.returncode}):\n"
                          f"{tail((r.stdout + r.stderr).decode('utf-8', 'replace'), 10)}")
        self.notify_path = os.path.join(tmp, "notify.sock")
        self.ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.ns.bind(self.notify_path)
        self.ns.setblocking(False)
        self.messages = []
        env = dict(os.environ, NOTIFY_SOCKET=self.notify_path)
        env.pop("WATCHDOG_USEC", None)
        env.pop("WATCHDOG_PID", None)
        self.proc = procs.start("spliced", [binary, "--config", self.conf], env=env)
        wait_until(lambda: self._ready_count() >= 1, 15, "READY=1 on NOTIFY_SOCKET", step=0.02)

    def write(self, text):
        tmp = self.conf + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, self.conf)  # atomically, as an editor or config manager would

    def drain_notify(self):
        while True:
            try:
                self.messages.append(self.ns.recv(4096).decode("utf-8", "replace"))
            except BlockingIOError:
                return

    def _ready_count(self):
        self.procs.check_alive("spliced", self.proc)
        self.drain_notify()
        return sum("READY=1" in m.split("\n") for m in self.messages)

    def reload(self, cap=5):
        """SIGHUP, then waits for the READY=1 that ends the reload."""
        before = self._ready_count()
        self.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: self._ready_count() > before, cap, "READY=1 after SIGHUP", step=0.005)

    def log(self):
        return self.procs.out("spliced") + self.procs.err("spliced")

    def close(self):
        self.ns.close()


HAPROXY_CFG = """\
global
    log stdout format raw local0
    maxconn 512

defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s

# Case 2: HAProxy sends PROXY headers to spliced (accept_proxy_protocol).
listen c2_v1
    bind {lo}:{h2v1}
    server s1 {lo}:{l2} send-proxy
listen c2_v2
    bind {lo}:{h2v2}
    server s1 {lo}:{l2} send-proxy-v2

# Case 3: spliced sends PROXY headers to HAProxy.
listen c3_acc
    bind {lo}:{h3} accept-proxy
    log global
    log-format "c3_acc %ci:%cp dst=%fi:%fp"
    server s1 {lo}:{echo}
listen c3_tls
    bind {lo}:{h3tls} accept-proxy
    log global
    log-format "c3_tls %ci:%cp dst=%fi:%fp authority=%[fc_pp_authority] unique_id=%[fc_pp_unique_id]"
    server s1 {lo}:{tls_star}

# Case 4: HAProxy sends PROXY headers to an SNI-routed spliced address.
listen c4_v2
    bind {lo}:{h4v2}
    server s1 {lo}:{l4} send-proxy-v2
listen c4_v1
    bind {lo}:{h4v1}
    server s1 {lo}:{l4} send-proxy
"""

NGINX_CONF = """\
load_module {module};
user root;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log info;

events {{
    worker_connections 128;
}}

stream {{
    log_format pp '$proxy_protocol_addr:$proxy_protocol_port dst=$proxy_protocol_server_addr:$proxy_protocol_server_port';
    server {{
        listen {lo}:{n3} proxy_protocol;
        proxy_pass {lo}:{echo};
        proxy_half_close on;
        proxy_timeout 30s;
        access_log {tmp}/nginx-access.log pp;
    }}
}}
"""


# ---------------------------------------------------------------------------------------------------
# Cases


def case_sni(w):
    c = Case("1. SNI routing: exact > wildcard > default on one listen address (s_client, ssl, curl)")
    print(c.title, flush=True)
    names = [  # (SNI, expected server)
        ("a.example.com", "a"), ("A.EXAMPLE.COM", "a"), ("a.example.com.", "a"),
        ("x.example.com", "star"), ("A.B.EXAMPLE.COM.", "star"), ("www.example.com", "www"),
        ("example.com", "default"), ("other.org", "default"), (None, "default"),
    ]
    routes = {"a": "c1_a", "star": "c1_star", "default": "c1_default", "www": "c1_www"}
    for name, want in names:
        before = len(access_lines(w.procs))
        cn, why = s_client_cn(w.tools, w.ports["l1"], name)
        how = f"-servername {name}" if name else "-noservername"
        c.check(cn == w.cn[want], f"s_client {how}: CN {cn} (expected {w.cn[want]})" + (f": {why}" if why else ""))
        try:
            l = new_access_line(w.procs, before)
            c.check(l.get("route") == routes[want],
                    f"  its access-log line: route={l.get('route')} (expected {routes[want]})"
                    + ("" if l.get("route") == routes[want] else "\n    | " + l["_raw"]))
        except Failure as e:
            c.check(False, f"  its access-log line: {e}")
    for name, want in names:
        if want == "www":
            continue
        cport, der, why = tls_echo(w.ports["l1"], name, 1 << 20)
        got = next((k for k, v in w.der.items() if v == der), None)
        c.check(got == want and why is None,
                f"ssl client SNI {name!r}: certificate {got} (expected {want}), 1 MiB sha256 echo "
                + ("intact" if why is None else f"FAILED: {why}"))
        if cport:
            c.expect_line(w.procs, f"{LO}:{cport}", routes[want])
    # An address whose only route has match.sni (c3_hap_tls: *.example.com): an unmatched name is closed.
    cport, der, why = tls_echo(w.ports["c3_hap_tls"], "other.org", 1024)
    c.check(der is None and why is not None, "no default route: SNI 'other.org' on c3_hap_tls's address is closed "
            + ("before a certificate" if der is None and why else f"but got {'a certificate' if der else 'no error'}"
               f" ({why})"))
    if cport:
        try:
            l = access_line_for(w.procs, f"{LO}:{cport}")
            ok = l.get("end") == "no_route" and l.get("backend") == "-"
            c.check(ok, f"  its access-log line: end={l.get('end')} backend={l.get('backend')} (expected "
                    "end=no_route backend=-)" + ("" if ok else "\n    | " + l["_raw"]))
        except Failure as e:
            c.check(False, f"  its access-log line: {e}")
    before = len(access_lines(w.procs))
    port = w.ports["l1"]
    try:
        r = subprocess.run([w.tools["curl"], "-sk", "--max-time", "10", "--resolve", f"www.example.com:{port}:{LO}",
                            f"https://www.example.com:{port}/"], capture_output=True, timeout=BUDGET.left(15))
        body = r.stdout.decode("utf-8", "replace")
        ok = r.returncode == 0 and "s_server -www" in body
        c.check(ok, "curl https://www.example.com/ returns the openssl s_server -www page"
                + ("" if ok else f": rc={r.returncode}, body:\n{tail(body, 5)}\n stderr:\n"
                                 f"{tail(r.stderr.decode('utf-8', 'replace'), 5)}"))
    except subprocess.TimeoutExpired:
        c.check(False, "curl timed out")
    try:
        l = new_access_line(w.procs, before)
        c.check(l.get("route") == "c1_www", f"  curl's access-log line: route={l.get('route')} (expected c1_www)"
                + ("" if l.get("route") == "c1_www" else "\n    | " + l["_raw"]))
    except Failure as e:
        c.check(False, f"  curl's access-log line: {e}")
    return c


def case_accept(w):
    c = Case("2. PROXY accept from HAProxy (send-proxy, send-proxy-v2)")
    print(c.title, flush=True)
    for label, port in (("send-proxy (v1)", w.ports["h2v1"]), ("send-proxy-v2", w.ports["h2v2"])):
        cport, why = plain_echo(port, "127.0.0.2", 64 << 10)
        c.check(why is None, f"haproxy {label}: 64 KiB echo from 127.0.0.2, half-close, EOF: "
                + ("intact" if why is None else why))
        if cport:
            c.expect_line(w.procs, f"127.0.0.2:{cport}", "c2_accept", 64 << 10)
    return c


def peer_log_line(path_or_fn, prefix, cap=5):
    get = path_or_fn if callable(path_or_fn) else (lambda: read_text(path_or_fn))
    return wait_until(lambda: next((l for l in get().splitlines() if l.startswith(prefix)), None), cap,
                      f"a log line starting {prefix!r}")


def case_send(w):
    c = Case("3. PROXY send (v1, v2) to HAProxy accept-proxy and nginx stream proxy_protocol")
    print(c.title, flush=True)
    hap_log = lambda: w.procs.out("haproxy")
    ngx_log = os.path.join(w.tmp, "nginx-access.log")
    for rname, peer in (("c3_hap_v1", "haproxy"), ("c3_hap_v2", "haproxy"),
                        ("c3_ngx_v1", "nginx"), ("c3_ngx_v2", "nginx")):
        listen = w.ports[rname]
        cport, why = plain_echo(listen, "127.0.0.3", 64 << 10)
        c.check(why is None, f"route {rname} -> {peer}: 64 KiB echo from 127.0.0.3: " + ("intact" if why is None else why))
        if not cport:
            continue
        c.expect_line(w.procs, f"127.0.0.3:{cport}", rname, 64 << 10)
        src = f"127.0.0.3:{cport}"
        prefix, log = (f"c3_acc {src} ", hap_log) if peer == "haproxy" else (f"{src} ", ngx_log)
        try:
            line = peer_log_line(log, prefix)
            want_dst = f"dst={LO}:{listen}"
            c.check(want_dst in line.split(), f"  {peer}'s log names the client {src} and destination "
                    f"{LO}:{listen}: {line!r}")
        except Failure as e:
            text = hap_log() if peer == "haproxy" else read_text(ngx_log)
            c.check(False, f"  {peer}'s log has no line for the client {src}: {e}; its log:\n{tail(text, 6)}"
                    + (f"\n  nginx error log:\n{tail(read_text(os.path.join(w.tmp, 'nginx-error.log')), 6)}"
                       if peer == "nginx" else ""))
    # v2 TLVs: a TLS client's SNI (AUTHORITY) and spliced's conn id (UNIQUE_ID), as HAProxy decodes them.
    name = "tlv.example.com"
    cport, der, why = tls_echo(w.ports["c3_hap_tls"], name, 256 << 10, source="127.0.0.3")
    got = next((k for k, v in w.der.items() if v == der), None)
    c.check(got == "star" and why is None, f"route c3_hap_tls (v2, SNI {name}) -> haproxy -> TLS echo: certificate "
            f"{got} (expected star), 256 KiB echo " + ("intact" if why is None else f"FAILED: {why}"))
    if cport:
        src = f"127.0.0.3:{cport}"
        ok = c.expect_line(w.procs, f"127.0.0.3:{cport}", "c3_hap_tls")
        conn = next((l.get("conn") for l in access_lines(w.procs) if l.get("client") == src), None)
        try:
            line = peer_log_line(hap_log, f"c3_tls {src} ")
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            want = {"dst": f"{LO}:{w.ports['c3_hap_tls']}", "authority": name, "unique_id": conn}
            bad = [f"{k}={fields.get(k)} (expected {v})" for k, v in want.items() if fields.get(k) != v]
            c.check(not bad, f"  haproxy's log: PROXY v2 source {src}, AUTHORITY {name}, UNIQUE_ID {conn}"
                    + (": " + "; ".join(bad) + f"\n    | {line}" if bad else ""))
        except Failure as e:
            c.check(False, f"  haproxy's log has no line for {src}: {e}; its log:\n{tail(hap_log(), 6)}")
    return c


def case_accept_sni(w):
    c = Case("4. PROXY accept + SNI: HAProxy send-proxy-v2 / send-proxy -> SNI-routed spliced address")
    print(c.title, flush=True)
    routes = {"a": "c4_a", "star": "c4_star", "default": "c4_default"}
    for label, port in (("send-proxy-v2", w.ports["h4v2"]), ("send-proxy", w.ports["h4v1"])):
        for name, want in (("a.example.com", "a"), ("x.example.com", "star"), ("A.B.EXAMPLE.COM.", "star"),
                           ("other.org", "default"), (None, "default")):
            cport, der, why = tls_echo(port, name, 256 << 10, source="127.0.0.4")
            got = next((k for k, v in w.der.items() if v == der), None)
            c.check(got == want and why is None, f"haproxy {label}, SNI {name!r}: certificate {got} (expected "
                    f"{want}), 256 KiB sha256 echo " + ("intact" if why is None else f"FAILED: {why}"))
            if cport:
                c.expect_line(w.procs, f"127.0.0.4:{cport}", routes[want])
    return c


# ---------------------------------------------------------------------------------------------------


class World:
    pass


def setup(w, binary, datapath):
    tools, tmp, procs = w.tools, w.tmp, w.procs
    w.cn, w.der, keys = {}, {}, {}
    for slug, cn in (("a", "a.example.com"), ("star", "star.example.com"), ("default", "default.example.com"),
                     ("www", "www.example.com")):
        key, crt, der = make_cert(tools, tmp, slug, cn)
        w.cn[slug], w.der[slug], keys[slug] = cn, der, (crt, key)
    w.servers = {}
    for slug in ("a", "star", "default"):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*keys[slug])
        w.servers[slug] = EchoServer(f"tls-{slug}", ctx)
    w.servers["echo"] = EchoServer("echo")
    names = ["l1", "l2", "c3_hap_v1", "c3_hap_v2", "c3_ngx_v1", "c3_ngx_v2", "c3_hap_tls", "l4",
             "www", "h2v1", "h2v2", "h3", "h3tls", "h4v2", "h4v1", "n3"]
    w.ports = dict(zip(names, free_ports(len(names))))
    P = w.ports
    tls = {k: w.servers[k].port for k in ("a", "star", "default")}
    echo = w.servers["echo"].port

    # openssl s_server -www behind route c1_www
    crt, key = keys["www"]
    sserver = procs.start("s_server", [tools["openssl"], "s_server", "-www", "-accept", f"{LO}:{P['www']}",
                                       "-cert", crt, "-key", key])
    wait_connectable(P["www"], "s_server", sserver, procs)

    routes = [
        route("c1_a", P["l1"], tls["a"], sni=["a.example.com"], handshake="5s"),
        route("c1_star", P["l1"], tls["star"], sni=["*.example.com"], handshake="5s"),
        route("c1_www", P["l1"], P["www"], sni=["www.example.com"], handshake="5s"),
        route("c1_default", P["l1"], tls["default"], handshake="5s"),
        route("c2_accept", P["l2"], echo, accept=True, handshake="5s"),
        route("c3_hap_v1", P["c3_hap_v1"], P["h3"], send="v1"),
        route("c3_hap_v2", P["c3_hap_v2"], P["h3"], send="v2"),
        route("c3_ngx_v1", P["c3_ngx_v1"], P["n3"], send="v1"),
        route("c3_ngx_v2", P["c3_ngx_v2"], P["n3"], send="v2"),
        route("c3_hap_tls", P["c3_hap_tls"], P["h3tls"], sni=["*.example.com"], send="v2", handshake="5s"),
        route("c4_a", P["l4"], tls["a"], sni=["a.example.com"], accept=True, handshake="5s"),
        route("c4_star", P["l4"], tls["star"], sni=["*.example.com"], accept=True, handshake="5s"),
        route("c4_default", P["l4"], tls["default"], accept=True, handshake="5s"),
    ]
    conf = (f"datapath: {datapath}\ndrain_timeout: 2s\nlog:\n  level: info\n  access_log: stdout\nroutes:\n"
            + "\n".join(routes) + "\n")
    Daemon(procs, binary, tmp, conf).close()

    hcfg = os.path.join(tmp, "haproxy.cfg")
    with open(hcfg, "w") as f:
        f.write(HAPROXY_CFG.format(lo=LO, h2v1=P["h2v1"], h2v2=P["h2v2"], l2=P["l2"], h3=P["h3"], echo=echo,
                                   h3tls=P["h3tls"], tls_star=tls["star"], h4v2=P["h4v2"], h4v1=P["h4v1"],
                                   l4=P["l4"]))
    hap = procs.start("haproxy", [tools["haproxy"], "-db", "-f", hcfg])
    wait_connectable(P["h3"], "haproxy", hap, procs)

    ncfg = os.path.join(tmp, "nginx.conf")
    with open(ncfg, "w") as f:
        f.write(NGINX_CONF.format(module=NGINX_STREAM_MODULE, tmp=tmp, lo=LO, n3=P["n3"], echo=echo))
    ngx = procs.start("nginx", [tools["nginx"], "-c", ncfg, "-p", tmp, "-e", os.path.join(tmp, "nginx-error.log"),
                                "-g", "daemon off; master_process off;"])
    wait_connectable(P["n3"], "nginx", ngx, procs)
    time.sleep(0.2)  # let the probes' log lines land before the cases count lines


def main():
    global BUDGET
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", required=True)
    ap.add_argument("--datapath", required=True, choices=["sockmap", "splice", "copy", "auto"])
    ap.add_argument("--budget", type=float, default=60.0, help="seconds for the whole suite (default 60)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()

    if os.geteuid() != 0:
        print("interop: needs root (spliced's sockmap path, binding 127.0.0.x sources, peers as root); skipped")
        return SKIP
    tools, missing = find_tools()
    if missing:
        if os.environ.get("CI"):
            print(f"interop: FAIL: missing under CI: {', '.join(missing)} (scripts/install-deps installs them)")
            print("0 passed, 1 failed")
            return 1
        print(f"interop: missing {', '.join(missing)}; skipped (apt-get install haproxy nginx-light "
              f"libnginx-mod-stream openssl curl)")
        return SKIP
    binary = os.path.abspath(args.binary)
    if not os.access(binary, os.X_OK):
        print(f"interop: FAIL: {binary} is not an executable")
        print("0 passed, 1 failed")
        return 1

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    BUDGET = Budget(args.budget)
    tmp = tempfile.mkdtemp(prefix="spliced-interop-")
    w = World()
    w.tools, w.tmp, w.procs, w.servers = tools, tmp, Procs(tmp), {}
    cases = [case_sni, case_accept, case_send, case_accept_sni]
    results = []
    print(f"interop: datapath={args.datapath} binary={binary} tmp={tmp}", flush=True)
    for t, flag in (("haproxy", "-v"), ("nginx", "-v"), ("openssl", "version"), ("curl", "--version")):
        try:
            v = subprocess.run([tools[t], flag], capture_output=True, timeout=5)
            print(f"  {t}: {(v.stdout + v.stderr).decode('utf-8', 'replace').splitlines()[0]}")
        except (subprocess.TimeoutExpired, IndexError, OSError):
            print(f"  {t}: {tools[t]} (version unknown)")
    try:
        try:
            setup(w, binary, args.datapath)
        except Failure as e:
            print(f"FAIL setup: {e}", flush=True)
            results = [(f.__name__, False) for f in cases]
        else:
            for f in cases:
                try:
                    c = f(w)
                    ok = c.passed
                except Failure as e:
                    print(f"    FAIL {e}", flush=True)
                    ok = False
                for name in ("spliced", "haproxy", "nginx", "s_server"):
                    p = next((p for n, p in w.procs.procs if n == name), None)
                    if p is not None and p.poll() is not None:
                        print(f"    FAIL {name} exited with status {p.returncode}; stderr:\n{tail(w.procs.err(name), 15)}")
                        ok = False
                print(f"{'PASS' if ok else 'FAIL'} {f.__name__}", flush=True)
                results.append((f.__name__, ok))
    finally:
        w.procs.stop_all()
        loud = [l for l in w.procs.err("spliced").splitlines() if re.search(r"\[(warning|warn|error|critical)\]", l)]
        if loud:
            print(f"spliced daemon log: {len(loud)} warning/error line(s) (informational):\n" + tail("\n".join(loud), 10))
        for s in w.servers.values():
            s.close()
        errs = [f"{s.name}: {e}" for s in w.servers.values() for e in s.errors]
        if errs:
            print("echo servers' errors (informational):\n" + "\n".join("  " + e for e in errs[:10]))
        failed = [n for n, ok in results if not ok]
        if failed or args.keep:
            print(f"logs kept in {tmp} (spliced.stdout = access log, spliced.stderr = daemon log)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    passed = sum(1 for _, ok in results if ok)
    print(f"interop datapath={args.datapath}: run time {BUDGET.elapsed():.1f} s (budget {args.budget:.0f} s)")
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if results and passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
