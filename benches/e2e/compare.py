#!/usr/bin/env python3
"""End-to-end comparison: wsus-edge against the reference nginx cache, same machine, same run.

Builds wsus-edge (cargo build --release), then in a fresh temp dir under /tmp, on loopback only:
an nginx origin (unthrottled and throttled to 50 MB/s per connection), the nginx cache under test
(whole object with proxy_cache_lock 1h; slice 1m) and two wsus-edge nodes (upstream = fast origin,
upstream = throttled origin). Runs the workloads W1 W3 W5 W6 W8 WDO (see README.md beside this file),
alternating the servers per repetition, and prints a markdown table of wsus-edge / nginx ratios
with PASS/MISS per target, CPU per request and per byte first; --json FILE writes every measurement.

Pinning: the server under test (wsus-edge, or nginx with one worker per CPU) runs on the server
CPUs, the origin on the origin CPUs and every load generator (wrk, bigclient, curl, this script) on
the client CPUs, disjoint sets (taskset, sched_setaffinity), so that a client never takes the
server's cycles. Defaults: CPU 0 for the servers on a machine of 2 or 3 CPUs, CPUs 0-1 on a larger
one, the rest for origin and clients; --server-cpus, --origin-cpus and --client-cpus (or
SERVER_CPUS, ORIGIN_CPUS, CLIENT_CPUS in the environment) choose. wsus-edge's async workers follow
its CPU set (tokio sizes its pool from the affinity mask). SCALE repeats W1 and W3 with the servers
on 1, 2 and 4 CPUs, as many as leave one for the clients.

Python 3 standard library only. Needs nginx, wrk, curl, gcc, cargo on PATH.
Exit: 0 every target PASS; 3 some target MISS; 1 a workload failed (error, crash, wrong bytes);
2 usage error or missing tool.
"""

import argparse
import hashlib
import http.client
import json
import math
import os
import platform
import random
import resource
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
SMALL_SIZE = 4 * KiB
SMALL_COUNT = 200
BIG_SIZE = 256 * MiB
SLICE = 4 * MiB  # wsus-edge default cache.slice_bytes: the "+1 chunk" of the origin-bytes target
W6_CLIENTS = 100
W6_HASHED = 3  # clients whose body is written to a file and hashed
W8_RANGE = (BIG_SIZE - MiB, BIG_SIZE - 1)  # bytes=267386880-268435455, the last MiB
WDO_PEERS = 16  # Delivery Optimization peers asking for pieces of one object at once
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg=""):
    print(msg, file=sys.stderr, flush=True)


class Failure(Exception):
    """A workload could not be measured or wsus-edge misbehaved (crash, error, wrong bytes)."""


# ----------------------------------------------------------------------------------------------
# processes: every child is registered and ended on exit, Ctrl-C, SIGTERM or an exception


class Procs:
    def __init__(self):
        self.items = []  # (Popen, name, is_server)

    def spawn(self, argv, name, server=False, **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(argv, start_new_session=True, **kw)
        self.items.append((p, name, server))
        return p

    def forget(self, p):
        self.items = [it for it in self.items if it[0] is not p]

    def stop(self, p, grace=10.0):
        """SIGTERM, wait, then SIGKILL the process and whatever children it still has (by pid)."""
        if p.poll() is not None:
            self.forget(p)
            return
        kids = children(p.pid)
        try:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        for k in kids:
            try:
                os.kill(k, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.forget(p)

    def stop_all(self):
        # clients first, then the servers
        for p, _, server in list(self.items):
            if not server:
                if p.poll() is None:
                    p.kill()
                    p.wait()
                self.forget(p)
        for p, _, _ in list(reversed(self.items)):
            self.stop(p)


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            if int(rest[1]) == pid:
                out.append(int(d))
        except (OSError, IndexError, ValueError):
            pass
    return out


def parse_cpus(text):
    """'0-1,4' -> [0, 1, 4]."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    return sorted(set(out))


def cpu_list(cpus):
    return ",".join(str(c) for c in cpus)


def nginx_affinity(cpus):
    """worker_cpu_affinity with one mask per worker (bit i = CPU i, rightmost bit CPU 0)."""
    return "worker_cpu_affinity " + " ".join("1" + "0" * c for c in cpus) + ";"


def cpu_ticks(pids):
    t = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            t += int(rest[11]) + int(rest[12])  # utime + stime (fields 14, 15), all threads
        except (OSError, IndexError, ValueError):
            pass
    return t


def proc_status_kib(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_hwm(pids):
    for p in pids:
        try:
            with open(f"/proc/{p}/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
        except OSError:
            pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, logfile, timeout=15.0):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise Failure(f"{what} exited with {proc.returncode} at start-up:\n{tail(logfile)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise Failure(f"{what}: port {port} not open after {timeout}s:\n{tail(logfile)}")


def tail(path, n=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log)"


# ----------------------------------------------------------------------------------------------
# HTTP helpers (standard library)


def http_get(port, path, headers=None, keep_body=False, timeout=120):
    """GET, reading the body in 1 MiB chunks. Returns (status, headers, length, sha1hex, body|None)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        h, n, chunks = hashlib.sha1(), 0, []
        while True:
            b = r.read(MiB)
            if not b:
                break
            h.update(b)
            n += len(b)
            if keep_body:
                chunks.append(b)
        return r.status, {k.lower(): v for k, v in r.getheaders()}, n, h.hexdigest(), (b"".join(chunks) if keep_body else None)
    finally:
        c.close()


def metrics(admin_port):
    """Sum of the wsus-edge counters we cross-check with the origin log."""
    try:
        st, _, _, _, body = http_get(admin_port, "/metrics", keep_body=True, timeout=10)
    except OSError:
        return {}
    out = {}
    for line in body.decode(errors="replace").splitlines():
        m = re.match(r"^(wsus_edge_[a-z_]+)(\{[^}]*\})?\s+([0-9.eE+-]+)$", line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out


# ----------------------------------------------------------------------------------------------
# servers


class Server:
    """Something we measure: a port plus the pids whose CPU/RSS we account."""

    def __init__(self, key, label, port, pids_fn, edge=None, tls=False):
        self.key, self.label, self.port, self._pids, self.edge = key, label, port, pids_fn, edge
        self.tls = tls

    def pids(self):
        return self._pids()


class Nginx:
    """One nginx (the origin or the cache under test) started on `cpus`; the cache's template gets
    one worker per CPU, each bound to its own."""

    def __init__(self, bench, name, template, subst):
        self.bench, self.name, self.template, self.subst = bench, name, template, subst
        self.conf = os.path.join(bench.tmp, "conf", f"nginx-{name}.conf")
        self.errlog = os.path.join(bench.logdir, f"{name}-error.log")
        self.proc = None

    def render(self, cpus):
        text = open(os.path.join(HERE, self.template)).read()
        pinned = self.bench.pinned
        subst = dict(self.subst, WORKERS=len(cpus) if pinned else 2,
                     AFFINITY=nginx_affinity(cpus) if pinned else "worker_cpu_affinity auto;")
        for k, v in subst.items():
            text = text.replace(f"@@{k}@@", str(v))
        left = re.findall(r"@@[A-Z_]+@@", text)
        if left:
            raise Failure(f"{self.template}: unreplaced placeholders {left}")
        with open(self.conf, "w") as f:
            f.write(text)

    def start(self, ports, cpus):
        self.ports = ports
        self.render(cpus)
        argv = ["nginx", "-p", self.bench.tmp, "-e", self.errlog, "-c", self.conf]
        t = subprocess.run(argv + ["-t"], capture_output=True, text=True)
        if t.returncode != 0:
            raise Failure(f"nginx -t ({self.name}) failed:\n{t.stderr}")
        self.proc = self.bench.procs.spawn(self.bench.pin(argv, cpus), f"nginx-{self.name}", server=True,
                                           stdout=subprocess.DEVNULL,
                                           stderr=open(os.path.join(self.bench.logdir, f"{self.name}-stderr.log"), "w"))
        for p in ports:
            wait_port(p, self.proc, f"nginx {self.name}", self.errlog)

    def restart(self, cpus):
        self.bench.procs.stop(self.proc)
        self.start(self.ports, cpus)

    def pids(self):
        if not self.proc or self.proc.poll() is not None:
            return []
        return [self.proc.pid] + children(self.proc.pid)


class HeadCapture:
    """The server's own answer time, request to response head, from a packet capture on lo:
    with a hundred clients on few CPUs, curl's time to first byte also counts how long each curl
    waited for a CPU to read an answer that had already arrived. Needs tcpdump and the right to
    capture (root); without them W6 reports curl's figure alone."""

    def __init__(self, bench, port):
        self.bench, self.port, self.proc = bench, port, None
        self.file = os.path.join(bench.tmp, f"heads-{port}.pcap")

    @staticmethod
    def available():
        return shutil.which("tcpdump") is not None and os.geteuid() == 0

    def __enter__(self):
        # Only small packets pass the filter: the servers' SYN-ACKs, the requests (PSH towards
        # the port) and the packets that begin with "HTTP" (a response head).
        f = (f"(tcp dst port {self.port} and (tcp[tcpflags] & tcp-push != 0)) or "
             f"(tcp src port {self.port} and tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x48545450)")
        self.proc = self.bench.procs.spawn(
            self.bench.pin(["tcpdump", "-i", "lo", "-n", "-B", "16384", "-w", self.file, f], self.bench.client_cpus),
            "tcpdump", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # Ready once it says it listens; a capture that never starts is reported, not waited on.
        line = self.proc.stderr.readline()
        if "listening" not in line:
            self.bench.procs.stop(self.proc)
            self.proc = None
        return self

    def __exit__(self, *exc):
        if self.proc:
            time.sleep(0.2)  # the last heads are in the kernel's buffer
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.bench.procs.forget(self.proc)

    def latencies(self):
        """Seconds from each connection's first request packet to its first response head."""
        if not self.proc or not os.path.exists(self.file):
            return []
        out = subprocess.run(["tcpdump", "-r", self.file, "-n", "-tt"], capture_output=True, text=True).stdout
        req, head = {}, {}
        for line in out.splitlines():
            m = re.match(r"(\d+\.\d+) IP 127\.0\.0\.1\.(\d+) > 127\.0\.0\.1\.(\d+):", line)
            if not m:
                continue
            t, src, dst = float(m.group(1)), int(m.group(2)), int(m.group(3))
            if dst == self.port:
                req.setdefault(src, t)
            elif src == self.port:
                head.setdefault(dst, t)
        return sorted(head[c] - req[c] for c in req if c in head and head[c] >= req[c])


class Edge:
    """One wsus-edge node (release binary) with its own data_dir and upstream."""

    def __init__(self, bench, name, upstream_port):
        self.bench, self.name, self.upstream_port = bench, name, upstream_port
        self.dir = os.path.join(bench.tmp, f"edge-{name}")
        os.makedirs(self.dir, exist_ok=True)
        self.conf = os.path.join(self.dir, "wsus-edge.toml")
        with open(self.conf, "w") as f:
            f.write(
                f'[node]\nname = "bench-{name}"\ndata_dir = "{self.dir}/data"\n\n'
                f'[listen]\nhttp = "127.0.0.1:0"\nadmin = "127.0.0.1:0"\nhttps = "127.0.0.1:0"\n\n'
                f'[tls]\ncert = "{bench.cert}"\nkey = "{bench.key}"\n\n'
                f'[upstream]\nurl = "http://127.0.0.1:{upstream_port}"\nsync_interval = "0s"\n\n'
                f'[cache]\nmemory_bytes = "1GiB"\nprefetch = "none"\n[reports]\nrollup_interval = "0s"\n'
            )
        self.proc = None
        self.cpus = bench.server_cpus
        self.port = self.admin = self.https = None
        self.starts = 0
        self.deaths = []  # what we saw when it was found dead

    def start(self, cpus=None):
        if cpus is not None:
            self.cpus = cpus
        self.starts += 1
        out = os.path.join(self.dir, f"stdout.{self.starts}.log")
        self.stderr = os.path.join(self.dir, f"stderr.{self.starts}.log")
        env = dict(os.environ, WSUS_EDGE_LOG="warn")
        env.pop("RUST_LOG", None)
        self.proc = self.bench.procs.spawn(self.bench.pin([self.bench.binary, "serve", "--config", self.conf], self.cpus),
                                           f"wsus-edge-{self.name}",
                                           server=True, stdout=open(out, "w"), stderr=open(self.stderr, "w"),
                                           env=env, cwd=self.dir)
        end = time.time() + 30
        while time.time() < end:
            if self.proc.poll() is not None:
                raise Failure(f"wsus-edge {self.name} exited with {self.proc.returncode} at start-up:\n{tail(self.stderr)}")
            m = re.search(r"wsus-edge ready http=(\S+):(\d+) admin=(\S+):(\d+)", open(out).read())
            if m:
                new_port = int(m.group(2))
                if self.port is not None and new_port != self.port:
                    self.bench.port_changed = True
                self.port, self.admin = new_port, int(m.group(4))
                t = re.search(r"https=\S+:(\d+)", open(out).read())
                self.https = int(t.group(1)) if t else None
                break
            time.sleep(0.05)
        else:
            raise Failure(f"wsus-edge {self.name}: no ready line within 30 s:\n{tail(self.stderr)}")
        st = http_get(self.admin, "/readyz", timeout=5)[0]
        if st != 200:
            raise Failure(f"wsus-edge {self.name}: /readyz answered {st}")

    def ensure_alive(self):
        """If the node died, record it (exit status, log tail) and start it again; returns False then."""
        if self.proc.poll() is None:
            return True
        death = {"instance": self.name, "exit": self.proc.returncode, "at": time.strftime("%H:%M:%S"),
                 "stderr_tail": tail(self.stderr, 30)}
        self.deaths.append(death)
        self.bench.problems.append(f"wsus-edge {self.name} died (exit {self.proc.returncode}); log tail:\n{death['stderr_tail']}")
        log(f"!! wsus-edge {self.name} died with exit {self.proc.returncode}; restarting")
        self.bench.procs.forget(self.proc)
        self.start()
        return False

    def restart(self, cpus):
        """Stopped and started on `cpus` (SCALE): a new port is expected, not a sign of a death."""
        self.bench.procs.stop(self.proc)
        self.port = None
        self.start(cpus)

    def pids(self):
        return [self.proc.pid] if self.proc and self.proc.poll() is None else []


# ----------------------------------------------------------------------------------------------
# the benchmark


def pct(sorted_vals, p):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_vals:
        return float("nan")
    return sorted_vals[max(0, math.ceil(p / 100 * len(sorted_vals)) - 1)]


def median(v):
    v = [x for x in v if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return statistics.median(v) if v else float("nan")


def parse_wrk(text):
    def ms(v):
        m = re.match(r"([\d.]+)(us|ms|s|m)$", v)
        return float(m.group(1)) * {"us": 1e-3, "ms": 1, "s": 1e3, "m": 6e4}[m.group(2)]

    r = {}
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise Failure(f"cannot parse wrk output:\n{text[-2000:]}")
    r["requests"] = int(m.group(1))
    b = re.search(r"requests in [\d.]+\w+, ([\d.]+)(B|KB|MB|GB|TB) read", text)
    r["bytes"] = float(b.group(1)) * {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}[b.group(2)] if b else None
    r["secs"] = float(m.group(2)) * {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60}[m.group(3)]
    r["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    r["p50_ms"] = ms(re.search(r"\s50%\s+(\S+)", text).group(1))
    r["p99_ms"] = ms(re.search(r"\s99%\s+(\S+)", text).group(1))
    e = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    r["non2xx"] = int(e.group(1)) if e else 0
    s = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    r["socket_errors"] = sum(int(x) for x in s.groups()) if s else 0
    return r


class Bench:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.procs = Procs()
        self.problems = []  # wsus-edge misbehaviour, printed and in the JSON
        self.errors = []  # workloads that could not be measured
        self.results = {}
        self.rows = []
        self.port_changed = False
        self.pinned = not args.no_pin
        self.all_cpus = sorted(os.sched_getaffinity(0))
        self.server_cpus, self.origin_cpus, self.client_cpus = args.cpus

    def pin(self, argv, cpus):
        """argv started on `cpus` (nothing changes when pinning is off)."""
        return ["taskset", "-c", cpu_list(cpus)] + argv if self.pinned else argv

    def pin_self(self):
        """This script, and every load generator it starts, on the client CPUs."""
        if self.pinned:
            os.sched_setaffinity(0, self.client_cpus)

    # ---------------------------------------------------------------- set-up
    def setup(self):
        self.tmp = tempfile.mkdtemp(prefix="wsus-edge-e2e-", dir="/tmp")
        for d in ("conf", "log", "run", "cache", "ngtmp", "www", "bodies", "bin"):
            os.makedirs(os.path.join(self.tmp, d), exist_ok=True)
        self.www = os.path.join(self.tmp, "www")
        self.logdir = os.path.join(self.tmp, "log")
        self.origin_log = os.path.join(self.logdir, "origin-access.log")
        log(f"temp dir {self.tmp}")

        cc = subprocess.run(["gcc", "-O2", "-pthread", "-o", os.path.join(self.tmp, "bin", "bigclient"),
                             os.path.join(HERE, "bigclient.c")], capture_output=True, text=True)
        if cc.returncode != 0:
            raise Failure(f"gcc bigclient.c failed:\n{cc.stderr}")
        self.bigclient = os.path.join(self.tmp, "bin", "bigclient")

        self.make_content()

        # W7: one certificate and key for both servers' HTTPS (P-256, as wsus-edge cert makes).
        self.cert, self.key = os.path.join(self.tmp, "conf", "cert.pem"), os.path.join(self.tmp, "conf", "key.pem")
        ssl = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                              "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE",
                              "-keyout", self.key, "-out", self.cert], capture_output=True, text=True)
        if ssl.returncode != 0:
            raise Failure(f"openssl req failed:\n{ssl.stderr}")
        p = {k: free_port() for k in ("ORIGIN_FAST", "ORIGIN_SLOW", "WHOLE", "WHOLE_SLOW", "SLICE", "SLICE_SLOW",
                                      "WHOLE_TLS")}
        self.ports = p
        user_line = "user root;" if os.geteuid() == 0 else "# not root: workers run as the invoking user"
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nofile = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
        common = {"USER_LINE": user_line, "NOFILE": nofile, "RUN": os.path.join(self.tmp, "run"), "LOG": self.logdir,
                  "NGTMP": os.path.join(self.tmp, "ngtmp"), "WWW": self.www, "CACHE": os.path.join(self.tmp, "cache")}
        self.origin = Nginx(self, "origin", "nginx-origin.conf.in",
                            dict(common, PORT_FAST=p["ORIGIN_FAST"], PORT_SLOW=p["ORIGIN_SLOW"]))
        self.origin.start([p["ORIGIN_FAST"], p["ORIGIN_SLOW"]], self.origin_cpus)
        self.ngx = Nginx(self, "cache", "nginx-cache.conf.in",
                         dict(common, ORIGIN_FAST=p["ORIGIN_FAST"], ORIGIN_SLOW=p["ORIGIN_SLOW"],
                              PORT_WHOLE=p["WHOLE"], PORT_WHOLE_SLOW=p["WHOLE_SLOW"],
                              PORT_SLICE=p["SLICE"], PORT_SLICE_SLOW=p["SLICE_SLOW"],
                              PORT_WHOLE_TLS=p["WHOLE_TLS"], CERT=self.cert, KEY=self.key))
        self.ngx.start([p["WHOLE"], p["WHOLE_SLOW"], p["SLICE"], p["SLICE_SLOW"], p["WHOLE_TLS"]], self.server_cpus)

        self.edge_fast = Edge(self, "fast", p["ORIGIN_FAST"])
        self.edge_slow = Edge(self, "slow", p["ORIGIN_SLOW"])
        self.edge_fast.start()
        self.edge_slow.start()
        log(f"origin :{p['ORIGIN_FAST']} (fast) :{p['ORIGIN_SLOW']} (50 MB/s/conn); nginx whole :{p['WHOLE']}/"
            f":{p['WHOLE_SLOW']}, slice :{p['SLICE']}/:{p['SLICE_SLOW']}; wsus-edge fast :{self.edge_fast.port} "
            f"slow :{self.edge_slow.port}")

        ng = self.ngx.pids
        self.S = {
            "edge": Server("edge", "wsus-edge", None, lambda: self.edge_fast.pids(), self.edge_fast),
            "edge_slow": Server("edge_slow", "wsus-edge", None, lambda: self.edge_slow.pids(), self.edge_slow),
            "whole": Server("whole", "nginx whole", p["WHOLE"], ng),
            "edge_tls": Server("edge_tls", "wsus-edge TLS", None, lambda: self.edge_fast.pids(), self.edge_fast, tls=True),
            "whole_tls": Server("whole_tls", "nginx whole TLS", p["WHOLE_TLS"], ng, tls=True),
            "whole_slow": Server("whole_slow", "nginx whole (lock 1h)", p["WHOLE_SLOW"], ng),
            "slice": Server("slice", "nginx slice 1m", p["SLICE"], ng),
            "slice_slow": Server("slice_slow", "nginx slice 1m", p["SLICE_SLOW"], ng),
        }

    def port_of(self, s):
        if s.edge:
            return s.edge.https if s.tls else s.edge.port
        return s.port

    def make_content(self):
        t0 = time.time()
        self.small = []
        for _ in range(SMALL_COUNT):
            data = os.urandom(SMALL_SIZE)
            self.small.append((self.put(data, "cab"), hashlib.sha1(data).hexdigest()))
        # Big objects: one random base of 256 MiB - 4 KiB, copied, plus a distinct random 4 KiB tail
        # per object: every object has its own SHA-1 (wsus-edge keys by digest), and the digest costs
        # one hash of the base plus 4 KiB per object.
        self.base = os.path.join(self.tmp, "base.bin")
        h = hashlib.sha1()
        with open(self.base, "wb") as f:
            left = BIG_SIZE - 4 * KiB
            while left:
                b = os.urandom(min(left, 16 * MiB))
                h.update(b)
                f.write(b)
                left -= len(b)
        self.base_sha = h
        self.hot, self.hot_sha = self.new_big("exe")
        with open(self.www + self.hot, "rb") as f:
            f.seek(BIG_SIZE - 8 * MiB)
            self.hot_end = f.read()  # last 8 MiB, for checking ranges without re-reading the file
        log(f"content: {SMALL_COUNT} x 4 KiB + 256 MiB hot object in {time.time() - t0:.1f}s")

    def put(self, data, ext):
        d = hashlib.sha1(data).hexdigest().upper()
        return self.write_at(d, ext, data=data)

    def write_at(self, digest_upper, ext, data=None, src=None, tail_bytes=None):
        rel = f"/Content/{digest_upper[-2:]}/{digest_upper}.{ext}"
        path = self.www + rel
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if src:
            shutil.copyfile(src, path)
            with open(path, "ab") as f:
                f.write(tail_bytes)
        else:
            with open(path, "wb") as f:
                f.write(data)
        return rel

    def new_big(self, ext="psf"):
        tail_bytes = os.urandom(4 * KiB)
        h = self.base_sha.copy()
        h.update(tail_bytes)
        d = h.hexdigest()
        return self.write_at(d.upper(), ext, src=self.base, tail_bytes=tail_bytes), d

    def drop_origin_file(self, rel):
        try:
            os.unlink(self.www + rel)
        except OSError:
            pass

    # ---------------------------------------------------------------- host limits
    def host_limits(self):
        info = {"nproc": os.cpu_count(), "kernel": platform.release()}
        try:
            with open("/proc/cpuinfo") as f:
                m = re.search(r"model name\s*:\s*(.*)", f.read())
                info["cpu"] = m.group(1).strip() if m else "?"
            with open("/proc/meminfo") as f:
                info["mem_gib"] = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
            info["loadavg"] = open("/proc/loadavg").read().split()[:3]
        except OSError:
            pass
        secs = 1.5 if self.quick else 3
        out = subprocess.run([self.bigclient, "probe", str(secs)], capture_output=True, text=True, timeout=30).stdout
        m = re.search(r"loopback_GBps=([\d.]+)", out)
        info["loopback_GBps_1stream"] = float(m.group(1)) if m else None
        info["pinning"] = ({"server_cpus": cpu_list(self.server_cpus), "origin_cpus": cpu_list(self.origin_cpus),
                            "client_cpus": cpu_list(self.client_cpus)} if self.pinned else None)
        self.results["host"] = info
        print(f"host: {info['nproc']} CPUs ({info.get('cpu', '?')}), {info.get('mem_gib', '?')} GiB RAM, "
              f"kernel {info['kernel']}, load {' '.join(info.get('loadavg', []))}; "
              f"loopback TCP 1 stream {info['loopback_GBps_1stream']} GB/s ({secs:g} s probe)", flush=True)
        print(self.pinning_line(), flush=True)

    def pinning_line(self):
        if not self.pinned:
            return "pinning: off (servers and clients share every CPU)"
        return (f"pinning: servers on CPU {cpu_list(self.server_cpus)} (nginx: {len(self.server_cpus)} worker{'s' if len(self.server_cpus) > 1 else ''}), "
                f"origin on {cpu_list(self.origin_cpus)}, clients on {cpu_list(self.client_cpus)}")

    # ---------------------------------------------------------------- measurement primitives
    def check_alive(self):
        for e in (self.edge_fast, self.edge_slow):
            e.ensure_alive()
        for n in (self.origin, self.ngx):
            if n.proc.poll() is not None:
                raise Failure(f"nginx {n.name} died:\n{tail(n.errlog)}")

    def run_client(self, argv, timeout, env=None):
        p = self.procs.spawn(argv, argv[0], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=dict(os.environ, **(env or {})))
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
            raise Failure(f"{argv[0]} did not finish within {timeout}s")
        finally:
            self.procs.forget(p)
        return p.returncode, out

    def measured(self, server, fn):
        """Run fn() with CPU accounting over the server's processes."""
        self.check_alive()
        pids = server.pids()
        c0, t0 = cpu_ticks(pids), time.time()
        r = fn()
        r["server_cpu_s"] = (cpu_ticks(pids) - c0) / CLK_TCK
        r["wall_s"] = time.time() - t0
        if server.edge and server.edge.proc.poll() is not None:
            server.edge.ensure_alive()
            raise Failure(f"wsus-edge {server.edge.name} died during the measurement")
        return r

    def wrk(self, server, secs, script, url_path="/", env=None, conns=64):
        port = self.port_of(server)
        threads = max(1, min(4, len(self.client_cpus))) if self.pinned else 2
        scheme = "https" if server.tls else "http"
        argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{secs}s", "--latency"] + (
            ["-s", os.path.join(HERE, script)] if script else []) + [f"{scheme}://127.0.0.1:{port}{url_path}"]
        rc, out = self.run_client(argv, timeout=secs + 30, env=env)
        if rc != 0:
            raise Failure(f"wrk exited {rc}:\n{out[-2000:]}")
        return parse_wrk(out)

    def order(self, rep, keys):
        """A B, B A, A B, …: the server that goes first alternates per repetition."""
        return keys if rep % 2 == 0 else list(reversed(keys))

    def origin_mark(self):
        try:
            return os.path.getsize(self.origin_log)
        except OSError:
            return 0

    def origin_since(self, mark, rel):
        """Origin requests and body bytes for one object since mark (from the origin access log)."""
        name = rel.rsplit("/", 1)[1]
        reqs = byts = 0
        statuses = {}
        with open(self.origin_log, "rb") as f:
            f.seek(mark)
            for line in f.read().decode(errors="replace").splitlines():
                m = re.match(r'^\S+ (\d+) "[A-Z]+ (\S+) [^"]*" (\d+) (\d+) "([^"]*)"', line)
                if not m or not m.group(2).endswith("/" + name):
                    continue
                reqs += 1
                byts += int(m.group(4))
                statuses[m.group(3)] = statuses.get(m.group(3), 0) + 1
        return reqs, byts, statuses

    def sleep_between(self):
        time.sleep(0.5 if self.quick else 1.0)

    # ---------------------------------------------------------------- warming + correctness checks
    def warm_small(self, server):
        port = self.port_of(server)
        bad = []
        for rnd in range(2):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            for rel, sha in self.small:
                c.request("GET", rel)
                r = c.getresponse()
                body = r.read()
                cache = r.getheader("X-Cache")
                if r.status != 200 or hashlib.sha1(body).hexdigest() != sha:
                    bad.append(f"{rel}: status {r.status}, {len(body)} bytes, sha1 {'ok' if hashlib.sha1(body).hexdigest() == sha else 'WRONG'}")
                elif rnd == 1 and cache is not None and cache != "HIT":
                    bad.append(f"{rel}: nginx X-Cache {cache} on the second GET")
            c.close()
        if bad:
            raise Failure(f"{server.label}: warming the 4 KiB objects: {len(bad)} bad answers, e.g. {bad[:3]}")

    def warm_big(self, server, rel, sha):
        port = self.port_of(server)
        for rnd in range(2):
            st, h, n, got, _ = http_get(port, rel)
            if st != 200 or n != BIG_SIZE or got != sha:
                raise Failure(f"{server.label}: GET {rel} (warm {rnd + 1}) -> {st}, {n} bytes, sha1 "
                              f"{'ok' if got == sha else 'WRONG ' + got}")
        if "x-cache" in h and h["x-cache"] != "HIT":
            log(f"   note: {server.label} answered X-Cache {h['x-cache']} on the second GET of the hot object")

    def check_ranges(self, server, n=6):
        """A few random ranges of the hot object, compared byte for byte (within its last 8 MiB)."""
        port = self.port_of(server)
        rnd = random.Random(7)
        for _ in range(n):
            a = rnd.randrange(BIG_SIZE - 8 * MiB, BIG_SIZE - MiB)
            b = a + MiB - 1
            st, h, length, _, body = http_get(port, self.hot, {"Range": f"bytes={a}-{b}"}, keep_body=True)
            want = self.hot_end[a - (BIG_SIZE - 8 * MiB): b + 1 - (BIG_SIZE - 8 * MiB)]
            if st != 206 or body != want or h.get("content-range") != f"bytes {a}-{b}/{BIG_SIZE}":
                raise Failure(f"{server.label}: Range bytes={a}-{b} -> {st}, {length} bytes, Content-Range "
                              f"{h.get('content-range')}, body {'ok' if body == want else 'WRONG'}")

    def wrk_series(self, wl, E, N, reps, secs, script, env):
        """wrk against wsus-edge (E) and nginx (N), alternating, reps times; non-2xx answers or
        socket errors of wsus-edge are problems."""
        runs = {"edge": [], "nginx": []}
        for rep in range(reps):
            for key in self.order(rep, ["edge", "nginx"]):
                s = E if key == "edge" else N
                r = self.measured(s, lambda: self.wrk(s, secs, script, env=env))
                r["cpu_s_per_10k"] = r["server_cpu_s"] / (r["requests"] / 1e4) if r["requests"] else float("nan")
                r["rep"] = rep
                runs[key].append(r)
                log(f"   {wl} rep {rep} {s.label:14s} {r['rps']:9.0f} req/s  p99 {r['p99_ms']:7.2f} ms  "
                    f"CPU {r['cpu_s_per_10k']:.3f} s/10k  non2xx {r['non2xx']} sockerr {r['socket_errors']}")
                self.sleep_between()
        self.results[wl] = runs
        for r in runs["edge"]:
            if r["non2xx"] or r["socket_errors"]:
                self.problems.append(f"{wl} wsus-edge rep {r['rep']}: {r['non2xx']} non-2xx answers, "
                                     f"{r['socket_errors']} socket errors")
        return runs

    # ---------------------------------------------------------------- W1
    def w1(self):
        secs, reps = (4, 1) if self.quick else (8, 3)
        E, N = self.S["edge"], self.S["whole"]
        for s in (E, N):
            self.warm_small(s)
        runs = self.wrk_series("W1", E, N, reps, secs, "cycle.lua", {"E2E_PATHS": self.w1_paths()})
        self.add_ratio_row("W1 4 KiB hits, 200 URLs, 64 conns", "server CPU-s / 10k req", runs, "cpu_s_per_10k", "{:.3f}",
                           "<=", 0.8, "nginx whole")
        self.add_ratio_row("", "req/s", runs, "rps", "{:.0f}", ">=", 1.2)
        self.add_ratio_row("", "p99 latency (ms)", runs, "p99_ms", "{:.2f}")

    def w1_paths(self):
        paths = os.path.join(self.tmp, "w1-paths.txt")
        with open(paths, "w") as f:
            f.write("\n".join(rel for rel, _ in self.small) + "\n")
        return paths

    # ---------------------------------------------------------------- W3
    def w3(self):
        secs, reps = (3, 1) if self.quick else (6, 3)
        E, N = self.S["edge"], self.S["whole"]
        for s in (E, N):
            self.warm_big(s, self.hot, self.hot_sha)
        self.results["W3"] = {}
        for conns in (8, 64):
            runs = self.w3_series(E, N, conns, reps, secs)
            self.results["W3"][f"c{conns}"] = runs
            wl = f"W3 256 MiB hits, {conns} conns"
            self.add_ratio_row(wl, "server CPU-s / GB", runs, "cpu_s_per_GB", "{:.3f}", "<=", 1.0, "nginx whole")
            self.add_ratio_row("", "GB/s", runs, "GBps", "{:.2f}", ">=", 1.0)
            limit = 64 + conns
            worst = max(r["rss_growth_MiB"] for r in runs["edge"])
            self.rows.append(dict(workload="", metric="peak RSS MiB (growth during run)",
                                  edge=f"{median([r['peak_rss_MiB'] for r in runs['edge']]):.0f} (+{worst:.0f})",
                                  nginx=f"{median([r['peak_rss_MiB'] for r in runs['nginx']]):.0f} "
                                        f"(+{max(r['rss_growth_MiB'] for r in runs['nginx']):.0f})",
                                  ratio="", target=f"growth <= {limit} MiB", verdict="PASS" if worst <= limit else "MISS"))

    def w3_series(self, E, N, conns, reps, secs, tag="W3"):
        """bigclient fetching the hot object over `conns` connections, wsus-edge (E) and nginx (N)
        alternating, reps times: GB/s, CPU-s per GB, peak RSS and its growth."""
        runs = {"edge": [], "nginx": []}
        for rep in range(reps):
            for key in self.order(rep, ["edge", "nginx"]):
                s = E if key == "edge" else N
                pids = s.pids()
                rss0 = sum(proc_status_kib(p, "VmRSS") for p in pids)
                reset_hwm(pids)

                def go():
                    rc, out = self.run_client([self.bigclient, "get", "127.0.0.1", str(self.port_of(s)), self.hot,
                                               str(conns), str(secs)], timeout=secs + 30)
                    m = dict(kv.split("=") for kv in out.split() if "=" in kv)
                    if rc != 0 or "bytes" not in m:
                        raise Failure(f"bigclient failed ({rc}): {out[-1000:]}")
                    return {k: float(v) for k, v in m.items()}

                r = self.measured(s, go)
                hwm = sum(proc_status_kib(p, "VmHWM") for p in pids)
                r["GBps"] = r["bytes"] / r["secs"] / 1e9
                r["cpu_s_per_GB"] = r["server_cpu_s"] / (r["bytes"] / 1e9) if r["bytes"] else float("nan")
                r["rss_before_MiB"] = rss0 / 1024
                r["peak_rss_MiB"] = hwm / 1024
                r["rss_growth_MiB"] = (hwm - rss0) / 1024
                r["rep"] = rep
                runs[key].append(r)
                log(f"   {tag} c={conns} rep {rep} {s.label:12s} {r['GBps']:.2f} GB/s  CPU {r['cpu_s_per_GB']:.3f} s/GB  "
                    f"peak RSS {r['peak_rss_MiB']:.0f} MiB (+{r['rss_growth_MiB']:.0f})  bad {r['bad']:.0f} errs {r['errs']:.0f}")
                if key == "edge" and (r["bad"] or r["errs"] > conns):
                    self.problems.append(f"{tag} c={conns} wsus-edge rep {rep}: {r['bad']:.0f} non-200 answers, "
                                         f"{r['errs']:.0f} connection errors")
                self.sleep_between()
        return runs

    # ---------------------------------------------------------------- W7
    def w7(self):
        """W1's 4 KiB hits (wrk) and W3's 256 MiB hits (8 curl connections) over HTTPS: wsus-edge's
        listener and nginx's, the same certificate, TLS 1.3, the suite the client prefers."""
        secs, reps = (4, 1) if self.quick else (8, 3)
        E, N = self.S["edge_tls"], self.S["whole_tls"]
        for s in (self.S["edge"], self.S["whole"]):
            self.warm_small(s)
            self.warm_big(s, self.hot, self.hot_sha)
        runs = self.wrk_series("W7 small", E, N, reps, secs, "cycle.lua", {"E2E_PATHS": self.w1_paths()})
        self.add_ratio_row("W7 HTTPS 4 KiB hits, 200 URLs, 64 conns", "server CPU-s / 10k req", runs, "cpu_s_per_10k",
                           "{:.3f}", "<=", 1.0, "nginx whole TLS")
        self.add_ratio_row("", "req/s", runs, "rps", "{:.0f}", ">=", 1.0)
        big = {"edge": [], "nginx": []}
        rounds = 1 if self.quick else 2
        for rep in range(reps):
            for key in self.order(rep, ["edge", "nginx"]):
                s = E if key == "edge" else N
                url = f"https://127.0.0.1:{self.port_of(s)}{self.hot}"

                def go():
                    # 8 connections, each fetching the whole object `rounds` times (curl, keep-alive).
                    fmt = "%{http_code} %{size_download}\\n"
                    t0 = time.time()
                    ps = [self.procs.spawn(["curl", "-k", "-s", "--max-time", "120", "-w", fmt]
                                           + ["-o", "/dev/null", url] * rounds, "curl",
                                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                          for _ in range(8)]
                    outs = []
                    for p in ps:
                        o, _ = p.communicate(timeout=180)
                        self.procs.forget(p)
                        outs.append(o)
                    secs = time.time() - t0
                    lines = [line.split() for o in outs for line in o.splitlines() if line.strip()]
                    good = [int(b) for c, b in lines if c == "200" and int(b) == BIG_SIZE]
                    return {"secs": secs, "bytes": sum(good), "objects": len(good), "bad": 8 * rounds - len(good)}

                r = self.measured(s, go)
                r["GBps"] = r["bytes"] / r["secs"] / 1e9
                r["cpu_s_per_GB"] = r["server_cpu_s"] / (r["bytes"] / 1e9) if r["bytes"] else float("nan")
                r["rep"] = rep
                big[key].append(r)
                log(f"   W7 big rep {rep} {s.label:16s} {r['GBps']:.2f} GB/s  CPU {r['cpu_s_per_GB']:.3f} s/GB  "
                    f"{r['objects']} whole objects, {r['bad']} bad")
                if key == "edge" and r["bad"]:
                    self.problems.append(f"W7 big wsus-edge rep {rep}: {r['bad']} of {8 * rounds} GETs not a whole 200")
                self.sleep_between()
        self.results["W7"] = {"small": runs, "big": big}
        self.add_ratio_row("W7 HTTPS 256 MiB hits, 8 conns", "server CPU-s / GB", big, "cpu_s_per_GB", "{:.3f}",
                           "<=", 1.0, "nginx whole TLS")
        self.add_ratio_row("", "GB/s", big, "GBps", "{:.2f}", ">=", 1.0)

    # ---------------------------------------------------------------- SCALE
    def scale(self):
        """W1 and W3 (64 connections) with the servers on 1, 2 and 4 CPUs (those that leave at least one
        CPU to the clients), each server against its own 1-CPU figure."""
        if not self.pinned:
            raise Failure("SCALE needs pinning (drop --no-pin)")
        # The run's server CPUs first, then CPUs that are neither the origin's nor (yet) the servers'.
        base_client = self.args.cpus[2]
        pool = self.server_cpus + [c for c in self.all_cpus if c not in self.server_cpus and c not in self.origin_cpus]
        counts = [k for k in (1, 2, 4) if len(pool) >= k and any(c not in pool[:k] for c in base_client)]
        secs, reps = (3, 1) if self.quick else (6, 3)
        E, N = self.S["edge"], self.S["whole"]
        series = {}
        for k in counts:
            server = pool[:k]
            client = [c for c in base_client if c not in server]
            log(f"   SCALE: servers on CPU {cpu_list(server)}, clients on {cpu_list(client)}")
            self.client_cpus = client
            self.pin_self()
            self.edge_fast.restart(server)
            self.ngx.restart(server)
            for s in (E, N):
                self.warm_small(s)
                self.warm_big(s, self.hot, self.hot_sha)
            w1 = self.wrk_series(f"SCALE{k} W1", E, N, reps, secs, "cycle.lua", {"E2E_PATHS": self.w1_paths()})
            w3 = self.w3_series(E, N, 64, reps, secs, tag=f"SCALE{k} W3")
            series[k] = {"server_cpus": cpu_list(server), "client_cpus": cpu_list(client), "W1": w1, "W3": w3}
        self.results["SCALE"] = series
        # Back to the run's own pinning for whatever runs next.
        self.client_cpus = base_client
        self.pin_self()
        self.edge_fast.restart(self.server_cpus)
        self.ngx.restart(self.server_cpus)
        for wl, key, fmt, metric in (("W1", "rps", "{:.0f}", "req/s"), ("W1", "cpu_s_per_10k", "{:.3f}", "CPU-s / 10k req"),
                                     ("W3", "GBps", "{:.2f}", "GB/s (64 conns)"), ("W3", "cpu_s_per_GB", "{:.3f}", "CPU-s / GB")):
            base = {side: median([r[key] for r in series[counts[0]][wl][side]]) for side in ("edge", "nginx")}
            for i, k in enumerate(counts):
                runs = series[k][wl]
                med = {side: median([r[key] for r in runs[side]]) for side in ("edge", "nginx")}
                ratios = [a[key] / b[key] for a, b in zip(runs["edge"], runs["nginx"]) if b[key]]
                self.rows.append(dict(
                    workload=f"SCALE {wl} {metric}" if i == 0 else "", metric=f"{k} server CPU{'s' if k > 1 else ''} "
                    f"(÷ 1 CPU)", edge=f"{fmt.format(med['edge'])} ({med['edge'] / base['edge']:.2f}×)",
                    nginx=f"{fmt.format(med['nginx'])} ({med['nginx'] / base['nginx']:.2f}×)",
                    ratio=f"{median(ratios):.2f}" + (f" [{min(ratios):.2f}..{max(ratios):.2f}]" if len(ratios) > 1 else ""),
                    target="", verdict=""))

    # ---------------------------------------------------------------- W5
    def w5(self):
        secs, reps = (3, 1) if self.quick else (6, 3)
        E, N = self.S["edge"], self.S["slice"]
        for s in (E, N):
            self.warm_big(s, self.hot, self.hot_sha)
            self.check_ranges(s)
        env = {"E2E_SIZE": str(BIG_SIZE), "E2E_LEN": str(MiB), "E2E_PATH": self.hot}
        runs = self.wrk_series("W5", E, N, reps, secs, "range.lua", env)
        self.check_ranges(E)  # still right after the load
        self.add_ratio_row("W5 random 1 MiB ranges, 64 conns", "server CPU-s / 10k req", runs, "cpu_s_per_10k", "{:.3f}",
                           "<=", 1.0, "nginx slice 1m")
        self.add_ratio_row("", "req/s", runs, "rps", "{:.0f}", ">=", 1.2)
        self.add_ratio_row("", "p99 latency (ms)", runs, "p99_ms", "{:.2f}")

    # ---------------------------------------------------------------- W6
    def stampede(self, server):
        rel, sha = self.new_big()
        port = self.port_of(server)
        url = f"http://127.0.0.1:{port}{rel}"
        fmt = "%{http_code} %{time_starttransfer} %{time_total} %{size_download}\\n"
        mark = self.origin_mark()
        m0 = metrics(server.edge.admin) if server.edge else {}
        max_time = 45
        bodies = [os.path.join(self.tmp, "bodies", f"w6-{i}") for i in range(W6_HASHED)]
        # the hashed clients are spread over the launch order (first, middle, last)
        hashed = {round(j * (W6_CLIENTS - 1) / max(1, W6_HASHED - 1)): bodies[j] for j in range(W6_HASHED)}

        def go():
            ps = []
            t0 = time.time()
            for i in range(W6_CLIENTS):
                out = hashed.get(i, "/dev/null")
                ps.append((self.procs.spawn(["curl", "-s", "-o", out, "--max-time", str(max_time), "-w", fmt, url],
                                            "curl", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True), out))
            lines = []
            for p, out in ps:
                try:
                    o, _ = p.communicate(timeout=max_time + 15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    o, _ = p.communicate()
                self.procs.forget(p)
                lines.append((o.strip(), out, p.returncode))
            return {"wall_all_done_s": time.time() - t0, "lines": lines}

        capture = HeadCapture(self, port) if HeadCapture.available() else None
        if capture:
            with capture:
                r = self.measured(server, go)
            heads = capture.latencies()
            r["head_p50_s"], r["head_p99_s"] = pct(heads, 50), pct(heads, 99)
            r["heads_captured"] = len(heads)
        else:
            r = self.measured(server, go)
        time.sleep(1.0)  # the origin writes its log line when a response ends
        reqs, byts, statuses = self.origin_since(mark, rel)
        m1 = metrics(server.edge.admin) if server.edge else {}
        codes, ttfb, total, complete = {}, [], [], 0
        for line, _, rc in r.pop("lines"):
            parts = line.split()
            if len(parts) != 4:
                codes["curl-fail"] = codes.get("curl-fail", 0) + 1
                continue
            codes[parts[0]] = codes.get(parts[0], 0) + 1
            size = int(float(parts[3]))
            if parts[0] == "200" and size == BIG_SIZE and rc == 0:
                complete += 1
                ttfb.append(float(parts[1]))
                total.append(float(parts[2]))
            else:
                ttfb.append(float(parts[1]) if parts[1] != "0.000000" else float("inf"))
                total.append(float(parts[2]))
        hashes_ok = 0
        for b in bodies:
            h = hashlib.sha1()
            try:
                with open(b, "rb") as f:
                    while True:
                        x = f.read(4 * MiB)
                        if not x:
                            break
                        h.update(x)
                hashes_ok += h.hexdigest() == sha
            except OSError:
                pass
            try:
                os.unlink(b)
            except OSError:
                pass
        ttfb.sort()
        total.sort()
        r.update(object=rel, origin_reqs=reqs, origin_bytes=byts, origin_statuses=statuses,
                 origin_amp=byts / BIG_SIZE, ttfb_p50_s=pct(ttfb, 50), ttfb_p99_s=pct(ttfb, 99), ttfb_max_s=ttfb[-1] if ttfb else None,
                 ttlb_p50_s=pct(total, 50), ttlb_max_s=total[-1] if total else None, complete=complete,
                 clients=W6_CLIENTS, codes=codes, hashed=len(bodies), hashes_ok=hashes_ok)
        if server.edge:
            r["edge_upstream_bytes_metric"] = m1.get("wsus_edge_upstream_bytes_total", 0) - m0.get("wsus_edge_upstream_bytes_total", 0)
            r["edge_upstream_requests_metric"] = m1.get("wsus_edge_upstream_requests_total", 0) - m0.get("wsus_edge_upstream_requests_total", 0)
            if complete != W6_CLIENTS or hashes_ok != len(bodies):
                self.problems.append(f"W6 wsus-edge {rel}: {complete}/{W6_CLIENTS} complete bodies, answers {codes}, "
                                     f"{hashes_ok}/{len(bodies)} sampled bodies with the right SHA-1")
        self.drop_origin_file(rel)
        return r

    def w6(self):
        reps = 1 if self.quick else 2
        keys = ["edge_slow", "whole_slow", "slice_slow"]
        runs = {k: [] for k in keys}
        for rep in range(reps):
            for k in self.order(rep, keys):
                s = self.S[k]
                r = self.stampede(s)
                r["rep"] = rep
                runs[k].append(r)
                log(f"   W6 rep {rep} {s.label:22s} origin {r['origin_reqs']} req / {r['origin_amp']:.3f}x  "
                    f"TTFB p50 {r['ttfb_p50_s']:.3f} p99 {r['ttfb_p99_s']:.3f} s  last byte {r['ttlb_max_s']:.2f} s  "
                    f"complete {r['complete']}/{r['clients']}  sha1 {r['hashes_ok']}/{r['hashed']}  {r['server_cpu_s']:.1f} CPU-s")
                self.sleep_between()
        self.results["W6"] = runs
        for rs in runs.values():
            for r in rs:
                r["cpu_s_per_GB"] = r["server_cpu_s"] / (r["complete"] * BIG_SIZE / 1e9) if r["complete"] else None
                # A server that cuts some clients off ends sooner; this puts the bodies it
                # completed beside the time it took.
                r["delivered_GBps"] = r["complete"] * BIG_SIZE / 1e9 / r["ttlb_max_s"] if r["ttlb_max_s"] else None
        wl = "W6 stampede: 100 clients, cold 256 MiB, 50 MB/s origin"
        lim = (BIG_SIZE + SLICE) / BIG_SIZE
        self.add_multi_row(wl, "server CPU-s / GB served", runs, "cpu_s_per_GB", "{:.3f}", relative=("<=", 1.0, "slice_slow"))
        self.add_multi_row("", "origin requests", runs, "origin_reqs", "{:.0f}")
        self.add_multi_row("", "origin bytes / object", runs, "origin_amp", "{:.3f}", absolute=("<=", lim, f"<= {lim:.4f} (object + 4 MiB)"))
        self.add_multi_row("", "TTFB p50 (s)", runs, "ttfb_p50_s", "{:.3f}")
        self.add_multi_row("", "TTFB p99 (s)", runs, "ttfb_p99_s", "{:.3f}", absolute=("<=", 0.1, "<= 0.1 s"))
        if any(r.get("head_p99_s") is not None for r in runs["edge_slow"]):
            self.add_multi_row("", "server's request to head p99 (s), packet capture", runs, "head_p99_s", "{:.3f}")
        self.add_multi_row("", "time to last byte, max (s)", runs, "ttlb_max_s", "{:.2f}", relative=("<=", 1.0, "slice_slow"))
        self.add_multi_row("", "complete bodies' GB / last byte (GB/s)", runs, "delivered_GBps", "{:.2f}")
        self.add_multi_row("", "server CPU-s", runs, "server_cpu_s", "{:.1f}")
        ok = all(r["complete"] == W6_CLIENTS and r["hashes_ok"] == r["hashed"] for r in runs["edge_slow"])
        self.rows.append(dict(workload="", metric=f"complete bodies (of {W6_CLIENTS}); SHA-1 sample ok",
                              edge=" / ".join(f"{r['complete']}; {r['hashes_ok']}/{r['hashed']}" for r in runs["edge_slow"]),
                              nginx="whole " + " / ".join(f"{r['complete']}; {r['hashes_ok']}/{r['hashed']}" for r in runs["whole_slow"])
                                    + " · slice " + " / ".join(f"{r['complete']}; {r['hashes_ok']}/{r['hashed']}" for r in runs["slice_slow"]),
                              ratio="", target="all complete, hashes ok", verdict="PASS" if ok else "MISS"))

    # ---------------------------------------------------------------- W8
    def range_test(self, server, scenario):
        rel, sha = self.new_big()
        with open(self.www + rel, "rb") as f:
            f.seek(W8_RANGE[0])
            want = f.read()
        port = self.port_of(server)
        url = f"http://127.0.0.1:{port}{rel}"
        fmt = "%{http_code} %{time_starttransfer} %{time_total} %{size_download}"
        body = os.path.join(self.tmp, "bodies", "w8-range")
        mark = self.origin_mark()

        def go():
            bg = None
            if scenario == "inflight":
                bg = self.procs.spawn(["curl", "-s", "-o", "/dev/null", "--max-time", "40", "-w", fmt, url], "curl",
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                time.sleep(0.5)
            rc, out = self.run_client(["curl", "-s", "-o", body, "--max-time", "30", "-w", fmt, "-H",
                                       f"Range: bytes={W8_RANGE[0]}-{W8_RANGE[1]}", url], timeout=45)
            r = {"range_curl": out.strip(), "range_rc": rc}
            if bg:
                o, _ = bg.communicate(timeout=60)
                self.procs.forget(bg)
                r["full_get"] = o.strip()
                p = o.split()
                r["full_ok"] = len(p) == 4 and p[0] == "200" and int(float(p[3])) == BIG_SIZE
            return r

        r = self.measured(server, go)
        time.sleep(1.0)
        reqs, byts, statuses = self.origin_since(mark, rel)
        p = r["range_curl"].split()
        try:
            got = open(body, "rb").read()
            os.unlink(body)
        except OSError:
            got = b""
        r.update(object=rel, scenario=scenario, origin_reqs=reqs, origin_bytes=byts, origin_statuses=statuses,
                 origin_MiB=byts / MiB, status=p[0] if p else None,
                 ttfb_s=float(p[1]) if len(p) == 4 else None, complete_s=float(p[2]) if len(p) == 4 else None,
                 body_ok=(got == want and len(p) == 4 and p[0] == "206"))
        if server.edge and (not r["body_ok"] or r.get("full_ok") is False):
            self.problems.append(f"W8 {scenario} wsus-edge {rel}: range answer {r['range_curl']!r}, body "
                                 f"{'ok' if got == want else f'WRONG ({len(got)} bytes)'}; full GET {r.get('full_get')!r}")
        self.drop_origin_file(rel)
        return r

    def w8(self):
        reps = 1 if self.quick else 3
        keys = ["edge_slow", "whole_slow", "slice_slow"]
        runs = {sc: {k: [] for k in keys} for sc in ("cold", "inflight")}
        for rep in range(reps):
            for sc in ("cold", "inflight"):
                for k in self.order(rep, keys):
                    s = self.S[k]
                    r = self.range_test(s, sc)
                    r["rep"] = rep
                    runs[sc][k].append(r)
                    log(f"   W8 {sc:8s} rep {rep} {s.label:22s} {r['status']} TTFB {r['ttfb_s']} complete {r['complete_s']} s  "
                        f"origin {r['origin_reqs']} req / {r['origin_MiB']:.1f} MiB  body {'ok' if r['body_ok'] else 'WRONG'}"
                        + (f"  full GET {'ok' if r['full_ok'] else 'BAD'}" if 'full_ok' in r else ""))
                    self.sleep_between()
        self.results["W8"] = runs
        lim_mib = (BIG_SIZE + SLICE) / MiB
        for sc, title in (("cold", "W8a last-MiB range, cold object"), ("inflight", "W8b last-MiB range, full GET in flight")):
            rr = runs[sc]
            self.add_multi_row(title, "range completion (s)", rr, "complete_s", "{:.3f}", absolute=("<=", 0.5, "<= 0.5 s"))
            self.add_multi_row("", "range TTFB (s)", rr, "ttfb_s", "{:.3f}")
            self.add_multi_row("", "origin requests", rr, "origin_reqs", "{:.0f}")
            self.add_multi_row("", "origin MiB", rr, "origin_MiB", "{:.1f}", absolute=("<=", lim_mib, "<= 260 (object + 4 MiB)"))
            ok = all(r["body_ok"] and r.get("full_ok", True) for r in rr["edge_slow"])
            self.rows.append(dict(workload="", metric="range body correct" + (" (and full GET)" if sc == "inflight" else ""),
                                  edge="yes" if ok else "NO", nginx="whole " + ("yes" if all(r["body_ok"] for r in rr["whole_slow"]) else "NO")
                                  + " · slice " + ("yes" if all(r["body_ok"] for r in rr["slice_slow"]) else "NO"),
                                  ratio="", target="206 + right bytes", verdict="PASS" if ok else "MISS"))

    # ---------------------------------------------------------------- WDO
    def wdo_run(self, server):
        """Delivery Optimization's pattern on one cold object: WDO_PEERS peers at once, each asking for
        its share of the object's 1 MiB pieces in random order, one range at a time, until the
        whole object has been asked for; every range's completion time, and its bytes checked."""
        rel, sha = self.new_big()
        port = self.port_of(server)
        pieces = list(range(BIG_SIZE // MiB))
        random.shuffle(pieces)
        shares = [pieces[i::WDO_PEERS] for i in range(WDO_PEERS)]
        with open(self.www + rel, "rb") as f:
            want = {}
            for k in pieces:
                f.seek(k * MiB)
                want[k] = hashlib.sha1(f.read(MiB)).digest()
        times, bad = [], []
        import threading
        lock = threading.Lock()

        def peer(share):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            for k in share:
                t0 = time.time()
                try:
                    conn.request("GET", rel, headers={"Range": f"bytes={k * MiB}-{(k + 1) * MiB - 1}"})
                    resp = conn.getresponse()
                    body = resp.read()
                    ok = resp.status == 206 and hashlib.sha1(body).digest() == want[k]
                except (OSError, http.client.HTTPException):
                    ok = False
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                with lock:
                    times.append(time.time() - t0)
                    if not ok:
                        bad.append(k)
            conn.close()

        def go():
            t0 = time.time()
            threads = [threading.Thread(target=peer, args=(sh,)) for sh in shares]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return {"wall_s": time.time() - t0}

        r = self.measured(server, go)
        times.sort()
        r.update(object=rel, ranges=len(times), bad=len(bad), p50_s=pct(times, 50), p99_s=pct(times, 99),
                 max_s=times[-1] if times else None)
        if bad:
            self.problems.append(f"WDO {server.label} {rel}: {len(bad)} ranges failed or wrong")
        self.drop_origin_file(rel)
        return r

    def wdo(self):
        reps = 1 if self.quick else 3
        runs = []
        for rep in range(reps):
            r = self.wdo_run(self.S["edge_slow"])
            r["rep"] = rep
            runs.append(r)
            log(f"   WDO rep {rep} wsus-edge: {r['ranges']} ranges, {r['bad']} bad, p50 {r['p50_s']:.3f} s "
                f"p99 {r['p99_s']:.3f} s max {r['max_s']:.3f} s, all in {r['wall_s']:.2f} s")
            self.sleep_between()
        self.results["WDO"] = runs
        for r in runs:
            r["cpu_s_per_GB"] = r["server_cpu_s"] / (BIG_SIZE / 1e9)
        for key, metric in (("p50_s", "range p50 (s)"), ("p99_s", "range p99 (s)"), ("max_s", "range max (s)"),
                            ("wall_s", "whole object asked for (s)"), ("cpu_s_per_GB", "server CPU-s / GB")):
            v = [r[key] for r in runs]
            self.rows.append(dict(workload="WDO 16 peers x random 1 MiB ranges, cold 256 MiB (50 MB/s/conn origin)"
                                  if key == "p50_s" else "", metric=metric,
                                  edge=f"{median(v):.3f}" + (f" [max {max(v):.3f}]" if len(v) > 1 else ""),
                                  nginx="", ratio="", target="", verdict=""))
        ok = all(r["bad"] == 0 for r in runs)
        self.rows.append(dict(workload="", metric="every range 206 with the right bytes", edge="yes" if ok else "NO",
                              nginx="", ratio="", target="right bytes", verdict="PASS" if ok else "MISS"))

    # ---------------------------------------------------------------- table rows
    def add_ratio_row(self, workload, metric, runs, key, fmt, op=None, limit=None, vs=None):
        """wsus-edge vs one nginx variant: medians of each, median of the per-rep ratios."""
        e, n = runs["edge"], runs["nginx"]
        ratios = [a[key] / b[key] for a, b in zip(e, n) if b[key]]
        ratio = median(ratios)
        verdict, target = "", ""
        if op:
            ok = ratio >= limit if op == ">=" else ratio <= limit
            verdict = "PASS" if ok else "MISS"
            target = f"ratio {op} {limit:g}"
        self.rows.append(dict(workload=workload + (f" (vs {vs})" if vs else ""), metric=metric,
                              edge=fmt.format(median([r[key] for r in e])), nginx=fmt.format(median([r[key] for r in n])),
                              ratio=f"{ratio:.2f}" + (f" [{min(ratios):.2f}..{max(ratios):.2f}]" if len(ratios) > 1 else ""),
                              target=target, verdict=verdict, ratios=ratios))

    def add_multi_row(self, workload, metric, runs, key, fmt, absolute=None, relative=None):
        """wsus-edge vs nginx whole and nginx slice (W6, W8); absolute targets judged on wsus-edge's worst rep,
        relative ones (op, limit, nginx variant) on the median of the per-rep ratios to that variant."""
        ek = [k for k in runs if k.startswith("edge")][0]
        e = runs[ek]

        def val(rs):
            v = [r[key] for r in rs if r.get(key) is not None]
            s = fmt.format(median(v)) if v else "n/a"
            if len(v) > 1:
                s += f" [max {fmt.format(max(v))}]"
            return s

        parts_n, parts_r = [], []
        for nk, name in (("whole_slow", "whole"), ("slice_slow", "slice")):
            parts_n.append(f"{name} {val(runs[nk])}")
            rs = [a[key] / b[key] for a, b in zip(e, runs[nk]) if a.get(key) is not None and b.get(key)]
            parts_r.append(f"÷{name} {median(rs):.2f}" if rs else f"÷{name} n/a")
        verdict, target = "", ""
        if absolute:
            op, lim, target = absolute
            v = [r.get(key) for r in e]
            worst = None if any(x is None for x in v) else (max(v) if op == "<=" else min(v))
            verdict = "MISS" if worst is None else ("PASS" if (worst <= lim if op == "<=" else worst >= lim) else "MISS")
        if relative:
            op, lim, nk = relative
            rs = [a[key] / b[key] for a, b in zip(e, runs[nk]) if a.get(key) is not None and b.get(key)]
            target = f"÷{nk.split('_')[0]} {op} {lim:g}"
            ratio = median(rs) if rs else None
            verdict = "MISS" if ratio is None else ("PASS" if (ratio <= lim if op == "<=" else ratio >= lim) else "MISS")
        self.rows.append(dict(workload=workload, metric=metric, edge=val(e), nginx=" · ".join(parts_n),
                              ratio=" · ".join(parts_r), target=target, verdict=verdict))

    def table(self):
        cols = ["workload", "metric", "wsus-edge", "nginx", "ratio (edge ÷ nginx)", "target", "verdict"]
        keys = ["workload", "metric", "edge", "nginx", "ratio", "target", "verdict"]
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in self.rows:
            lines.append("| " + " | ".join(str(r.get(k, "")) for k in keys) + " |")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 repetition, shorter durations (smoke run)")
    ap.add_argument("--only", default="W1,W3,W5,W6,W7,W8,WDO,SCALE", help="comma-separated workloads, e.g. W1,W8")
    ap.add_argument("--json", help="write every measurement and the table as JSON to this file")
    ap.add_argument("--no-build", action="store_true", help="use target/release/wsus-edge as it is")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, caches, content) after the run")
    ap.add_argument("--server-cpus", default=os.environ.get("SERVER_CPUS"),
                    help="CPUs of the server under test, e.g. 0-1 (default: 0 on 2-3 CPUs, else 0-1)")
    ap.add_argument("--origin-cpus", default=os.environ.get("ORIGIN_CPUS"), help="CPUs of the origin (default: the client CPUs)")
    ap.add_argument("--client-cpus", default=os.environ.get("CLIENT_CPUS"),
                    help="CPUs of the load generators (default: every CPU not the servers')")
    ap.add_argument("--no-pin", action="store_true", help="no pinning: servers and clients share every CPU")
    args = ap.parse_args()

    avail = sorted(os.sched_getaffinity(0))
    server = parse_cpus(args.server_cpus) if args.server_cpus else avail[:1 if len(avail) <= 3 else 2]
    client = parse_cpus(args.client_cpus) if args.client_cpus else [c for c in avail if c not in server]
    origin = parse_cpus(args.origin_cpus) if args.origin_cpus else client
    if not args.no_pin:
        if not client or set(server) & set(client) or set(server) & set(origin):
            print(f"pinning needs disjoint CPU sets: servers {cpu_list(server)}, clients {cpu_list(client)}, origin "
                  f"{cpu_list(origin)} (of {cpu_list(avail)}); or --no-pin", file=sys.stderr)
            return 2
        if not shutil.which("taskset"):
            print("missing tool: taskset (util-linux), or --no-pin", file=sys.stderr)
            return 2
    args.cpus = (server, origin, client)

    known = ["W1", "W3", "W5", "W6", "W7", "W8", "WDO", "SCALE"]
    only = [w.strip().upper() for w in args.only.split(",") if w.strip()]
    bad = [w for w in only if w not in known]
    if bad or not only:
        print(f"--only: unknown workload(s) {bad}; known: {','.join(known)}", file=sys.stderr)
        return 2

    missing = [t for t in ("nginx", "wrk", "curl", "gcc", "cargo", "openssl") if not shutil.which(t)]
    if missing:
        print(f"missing tools: {' '.join(missing)}  (Debian/Ubuntu: apt-get install -y nginx wrk curl gcc; "
              f"cargo from rustup)", file=sys.stderr)
        return 2
    # cold objects (W6: 3 per rep, W8: 6 per rep) plus their cached copies in three servers
    need = (2 + (3 if "W6" in only else 0) * (1 if args.quick else 2) + (6 if "W8" in only else 0) * (1 if args.quick else 3)) * 2 * BIG_SIZE
    free = shutil.disk_usage("/tmp").free
    if free < need + 2 * GiB:
        print(f"/tmp has {free / GiB:.1f} GiB free; this run needs about {(need + 2 * GiB) / GiB:.1f} GiB", file=sys.stderr)
        return 2

    t_start = time.time()
    if not args.no_build:
        log("cargo build --release ...")
        b = subprocess.run(["cargo", "build", "--release"], cwd=REPO)
        if b.returncode != 0:
            print("cargo build --release failed", file=sys.stderr)
            return 1
    binary = os.path.join(REPO, "target", "release", "wsus-edge")
    if not os.access(binary, os.X_OK):
        print(f"{binary} not found", file=sys.stderr)
        return 2

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    # SIGINT explicitly too: a shell starts background jobs with SIGINT ignored
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    bench = Bench(args)
    bench.binary = binary
    failed = False
    interrupted = False
    try:
        t_setup = time.time()
        bench.pin_self()
        bench.setup()
        bench.host_limits()
        log(f"set-up done in {time.time() - t_setup:.1f}s")
        timings = {}
        for w in known:
            if w not in only:
                continue
            t0 = time.time()
            log(f"== {w}")
            try:
                getattr(bench, w.lower())()
            except Failure as e:
                failed = True
                bench.errors.append(f"{w}: {e}")
                log(f"!! {w} failed: {e}")
                bench.rows.append(dict(workload=w, metric="ERROR", edge=str(e).splitlines()[0][:120], verdict="MISS"))
            timings[w] = round(time.time() - t0, 1)
            log(f"   {w} took {timings[w]}s")
        bench.results["timings_s"] = timings
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping every process")
    except Failure as e:
        failed = True
        bench.errors.append(str(e))
        log(f"!! set-up failed: {e}")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        # wsus-edge logs at warn: anything there is worth reading
        edge_log = []
        for e in (getattr(bench, "edge_fast", None), getattr(bench, "edge_slow", None)):
            if not e:
                continue
            if e.proc and e.proc.poll() is not None:
                bench.problems.append(f"wsus-edge {e.name} had exited ({e.proc.returncode}) at the end:\n{tail(e.stderr, 30)}")
            for i in range(1, e.starts + 1):
                for line in open(os.path.join(e.dir, f"stderr.{i}.log"), errors="replace"):
                    if line.strip():
                        edge_log.append(f"[{e.name}#{i}] {line.rstrip()}")
        bench.procs.stop_all()
        tmp = getattr(bench, "tmp", None)
        if tmp and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp:
            log(f"kept {tmp}")
    if interrupted:
        return 130

    total = time.time() - t_start
    print()
    print(f"## wsus-edge vs nginx ({'quick' if args.quick else 'full'} run, {total / 60:.1f} min; ratios = wsus-edge ÷ nginx, "
          f"median of per-repetition ratios [min..max])")
    print()
    print(bench.pinning_line())
    print()
    print(bench.table())
    print()
    if bench.port_changed:
        print("note: a wsus-edge node was restarted during the run and got a new port")
    if bench.problems:
        print("### wsus-edge problems")
        for p in bench.problems:
            print(f"- {p}")
        print()
    if bench.errors:
        print("### workloads that failed")
        for e in bench.errors:
            print(f"- {e}")
        print()
    if edge_log:
        print(f"### wsus-edge stderr (WSUS_EDGE_LOG=warn): {len(edge_log)} lines, first 10")
        for line in edge_log[:10]:
            print(f"    {line}")
        print()
    misses = [r for r in bench.rows if r.get("verdict") == "MISS"]
    passes = [r for r in bench.rows if r.get("verdict") == "PASS"]
    print(f"targets: {len(passes)} PASS, {len(misses)} MISS")

    if args.json:
        doc = {"mode": "quick" if args.quick else "full", "workloads": only, "total_s": round(total, 1),
               "binary": binary, "results": bench.results,
               "rows": [{k: v for k, v in r.items()} for r in bench.rows],
               "problems": bench.problems, "errors": bench.errors, "wsus_edge_log": edge_log[:200],
               "anomaly_wsus_edge_deaths": [d for e in (getattr(bench, "edge_fast", None), getattr(bench, "edge_slow", None)) if e for d in e.deaths]}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1, default=str)
        print(f"JSON: {args.json}")

    if failed or bench.problems:
        return 1
    return 3 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
