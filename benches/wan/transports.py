#!/usr/bin/env python3
"""HTTP/3 against HTTP/2-over-TCP on the branch <-> upstream link, through an emulated bad WAN.

Two network namespaces (branch, upstream) joined by the project's WAN emulator in its packet
form (`wsus-edge wan-emulator --tun`): every IP packet, TCP and UDP alike, crosses the same
emulated link (one-way delay, bandwidth cap, router queue, random loss). So the kernel's TCP meets
the loss end to end, exactly as QUIC does.

A wsus-edge root (TLS, so HTTP/2 over TCP and HTTP/3 over UDP) holds a cold object; for each loss
level and each transport a fresh wsus-edge branch fetches it through the link:
  - TTFB of the first range: `Range: bytes=0-1048575` on the cold object (one slice fetched);
  - fill time: then a full GET, until the last byte (every slice fetched, verified, committed).
Transports: HTTP/3 (QUIC, the upstream paces with BBR), and HTTP/2 over TCP with the upstream's
kernel congestion control set to Cubic (the usual server default, and Windows') and to BBR.

Needs root (network namespaces, TUN, sysctl), ip, curl, openssl, cargo. Loopback only: nothing
leaves the machine. Standard library only.

    sudo python3 benches/wan/transports.py                 # 256 MiB, 0 / 0.5 / 2 % loss
    sudo python3 benches/wan/transports.py --size 64       # quicker
Exit: 0 measured (whatever the verdict), 1 a run failed (wrong bytes, node died), 2 usage.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
MiB = 1 << 20
NS_BR, NS_UP = "wsbench-br", "wsbench-up"
DEV_BR, DEV_UP = "wsbA", "wsbB"
IP_BR, IP_UP = "10.77.0.1", "10.77.0.2"
VARIANTS = [  # (key, label, upstream.transport, upstream's TCP congestion control)
    ("h3", "HTTP/3 (QUIC, BBR)", "quic", None),
    ("h2-cubic", "HTTP/2 over TCP, Cubic", "tcp", "cubic"),
    ("h2-bbr", "HTTP/2 over TCP, BBR", "tcp", "bbr"),
]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Failure(Exception):
    pass


def run(argv, check=True, **kw):
    p = subprocess.run(argv, capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise Failure(f"{' '.join(argv)} -> {p.returncode}: {p.stderr.strip()}")
    return p


def in_ns(ns, argv):
    return ["ip", "netns", "exec", ns] + argv


def sysctl(ns, key, value=None):
    base = in_ns(ns, ["sysctl", "-n"]) if ns else ["sysctl", "-n"]
    if value is None:
        return run(base + [key]).stdout.strip()
    run((in_ns(ns, ["sysctl", "-qw"]) if ns else ["sysctl", "-qw"]) + [f"{key}={value}"])


class Bench:
    def __init__(self, args):
        self.args = args
        self.procs = []
        self.tmp = tempfile.mkdtemp(prefix="wsus-edge-wan-", dir="/tmp")
        self.bin = os.path.join(REPO, "target", "release", "wsus-edge")
        self.saved_allowed = None
        self.results = []

    # ---------------------------------------------------------------- processes
    def spawn(self, argv, name, ready, stdin=None):
        out = open(os.path.join(self.tmp, f"{name}.out"), "w")
        err = open(os.path.join(self.tmp, f"{name}.err"), "w")
        p = subprocess.Popen(argv, stdout=out, stderr=err, stdin=stdin or subprocess.DEVNULL,
                             start_new_session=True)
        self.procs.append(p)
        end = time.time() + 30
        while time.time() < end:
            if p.poll() is not None:
                raise Failure(f"{name} exited {p.returncode}: {open(err.name).read()[-2000:]}")
            text = open(out.name).read()
            m = re.search(ready, text)
            if m:
                return p, m
            time.sleep(0.05)
        raise Failure(f"{name}: not ready within 30 s")

    def stop(self, p):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p in self.procs:
            self.procs.remove(p)

    # ---------------------------------------------------------------- set-up
    def setup(self):
        a = self.args
        for d in ("root", "src"):
            os.makedirs(os.path.join(self.tmp, d))
        # A CA and the root's certificate for its namespace address.
        ca_key, ca, key, csr, crt = (os.path.join(self.tmp, n) for n in
                                     ("ca.key", "ca.pem", "root.key", "root.csr", "root.pem"))
        run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
             "-days", "2", "-subj", "/CN=bench-ca"])
        run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
             "-subj", "/CN=bench-root"])
        ext = os.path.join(self.tmp, "ext.cnf")
        with open(ext, "w") as f:
            f.write(f"subjectAltName=IP:{IP_UP}\n")
        run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
             "-out", crt, "-days", "2", "-extfile", ext])
        self.ca = ca
        # The object: random bytes named by their SHA-1.
        log(f"generating a {a.size} MiB object")
        h = hashlib.sha1()
        src = os.path.join(self.tmp, "src", "object.cab")
        with open(src, "wb") as f:
            for _ in range(a.size):
                b = os.urandom(MiB)
                h.update(b)
                f.write(b)
        self.sha1 = h.hexdigest()
        self.path = f"/Content/{self.sha1[-2:].upper()}/{self.sha1.upper()}.cab"
        root_conf = os.path.join(self.tmp, "root.toml")
        with open(root_conf, "w") as f:
            f.write(f'[node]\nname = "bench-root"\ndata_dir = "{self.tmp}/root"\n'
                    f'[listen]\nhttp = "0.0.0.0:8530"\nhttps = "0.0.0.0:8531"\nadmin = "127.0.0.1:8540"\n'
                    f'[tls]\ncert = "{crt}"\nkey = "{key}"\n[cache]\nmemory_bytes = "{a.size + 64}MiB"\n')
        run([self.bin, "--config", root_conf, "import", os.path.join(self.tmp, "src")])
        os.unlink(src)

        # Namespaces and the link between them.
        for ns in (NS_BR, NS_UP):
            run(["ip", "netns", "add", ns])
            run(in_ns(ns, ["ip", "link", "set", "lo", "up"]))
        self.emulator, _ = self.spawn(
            [self.bin, "wan-emulator", "--tun", f"{DEV_BR},{DEV_UP}", "--delay", f"{int(round(a.rtt / 2))}ms",
             "--rate", a.rate, "--queue", a.queue], "emulator", r"wan-emulator ready", stdin=subprocess.PIPE)
        for dev, ns, ip in ((DEV_BR, NS_BR, IP_BR), (DEV_UP, NS_UP, IP_UP)):
            run(["ip", "link", "set", dev, "netns", ns])
            run(in_ns(ns, ["ip", "addr", "add", f"{ip}/30", "dev", dev]))
            run(in_ns(ns, ["ip", "link", "set", dev, "up"]))
        # Cubic must be allowed for a namespace to choose it.
        self.saved_allowed = sysctl(None, "net.ipv4.tcp_allowed_congestion_control")
        allowed = set(self.saved_allowed.split()) | {"cubic", "bbr"}
        sysctl(None, "net.ipv4.tcp_allowed_congestion_control", " ".join(sorted(allowed)))
        self.root, _ = self.spawn(in_ns(NS_UP, [self.bin, "--config", root_conf, "serve"]), "root",
                                  r"wsus-edge ready")

    def set_loss(self, loss):
        self.emulator.stdin.write(f"loss {loss}%\n".encode())
        self.emulator.stdin.flush()

    # ---------------------------------------------------------------- one run
    def curl(self, extra, out, max_time):
        fmt = "%{http_code} %{time_starttransfer} %{time_total} %{size_download}"
        p = run(in_ns(NS_BR, ["curl", "-s", "-o", out, "--max-time", str(max_time), "-w", fmt] + extra
                      + [f"http://127.0.0.1:8530{self.path}"]), check=False)
        parts = p.stdout.split()
        if len(parts) != 4:
            raise Failure(f"curl: {p.stdout!r} {p.stderr!r}")
        return {"status": int(parts[0]), "ttfb": float(parts[1]), "total": float(parts[2]),
                "bytes": int(float(parts[3])), "rc": p.returncode}

    def one(self, loss, variant, rep):
        key, label, transport, cc = variant
        if cc:
            sysctl(NS_UP, "net.ipv4.tcp_congestion_control", cc)
        data = os.path.join(self.tmp, f"branch-{key}-{loss}-{rep}")
        conf = data + ".toml"
        with open(conf, "w") as f:
            f.write(f'[node]\nname = "bench-branch"\ndata_dir = "{data}"\n'
                    f'[listen]\nhttp = "127.0.0.1:8530"\nadmin = "127.0.0.1:8540"\n'
                    f'[upstream]\nurl = "https://{IP_UP}:8531"\ntransport = "{transport}"\nca = "{self.ca}"\nsync_interval = "0s"\n'
                    f'[cache]\nmemory_bytes = "256MiB"\nprefetch = "none"\n[reports]\nrollup_interval = "0s"\n')
        branch, _ = self.spawn(in_ns(NS_BR, [self.bin, "--config", conf, "serve"]), f"branch-{key}",
                               r"wsus-edge ready")
        body = os.path.join(self.tmp, "body")
        try:
            first = self.curl(["-H", "Range: bytes=0-1048575"], "/dev/null", 60)
            if first["status"] != 206 or first["bytes"] != MiB:
                raise Failure(f"{label}: first range answered {first}")
            whole = self.curl([], body, self.args.cap)
            size = self.args.size * MiB
            complete = whole["status"] == 200 and whole["bytes"] == size and whole["rc"] == 0
            if complete:
                h = hashlib.sha1()
                with open(body, "rb") as f:
                    while chunk := f.read(4 * MiB):
                        h.update(chunk)
                if h.hexdigest() != self.sha1:
                    raise Failure(f"{label}: wrong bytes")
            metrics = run(in_ns(NS_BR, ["curl", "-s", "http://127.0.0.1:8540/metrics"])).stdout
            used = sorted(set(re.findall(r'transport="(http\d)"', metrics)))
        finally:
            self.stop(branch)
            shutil.rmtree(data, ignore_errors=True)
            if os.path.exists(body):
                os.unlink(body)
        rate = whole["bytes"] * 8 / whole["total"] / 1e6 if whole["total"] else 0.0
        r = {"loss_pct": loss, "variant": key, "label": label, "rep": rep, "ttfb_first_range_s": first["ttfb"],
             "fill_s": whole["total"] if complete else None, "bytes": whole["bytes"], "mbit_s": rate,
             "complete": complete, "protocols_used": used}
        if not complete:
            # Cut off at --cap: the time the whole object would take at the rate reached.
            r["fill_estimate_s"] = size * 8 / (rate * 1e6) if rate else None
        log(f"   loss {loss}% {label:24s} first range TTFB {first['ttfb']:.3f} s, fill "
            + (f"{whole['total']:.1f} s" if complete else f"cut at {whole['total']:.0f} s "
               f"({whole['bytes'] / MiB:.0f} MiB)")
            + f", {rate:.1f} Mbit/s, used {','.join(used)}")
        return r

    # ---------------------------------------------------------------- the table
    def table(self):
        by = {}
        for r in self.results:
            by.setdefault((r["loss_pct"], r["variant"]), []).append(r)

        def med(vals):
            vals = sorted(v for v in vals if v is not None)
            return vals[len(vals) // 2] if vals else None

        def fill(rs):
            done = [r["fill_s"] for r in rs if r["complete"]]
            if len(done) == len(rs):
                return med(done), f"{med(done):.1f}"
            est = med([r.get("fill_estimate_s") or r["fill_s"] for r in rs])
            return est, f">{self.args.cap} (≈{est:.0f} at its rate)" if est else "n/a"

        lines = ["| loss | transport | TTFB first range (s) | fill 256 MiB (s) | Mbit/s | TCP time ÷ HTTP/3 time |",
                 "|---|---|---|---|---|---|"]
        if self.args.size != 256:
            lines[0] = lines[0].replace("256 MiB", f"{self.args.size} MiB")
        for loss in self.args.losses:
            h3 = fill(by.get((loss, "h3"), []))[0] if by.get((loss, "h3")) else None
            for key, label, _, _ in VARIANTS:
                rs = by.get((loss, key))
                if not rs:
                    continue
                t, shown = fill(rs)
                ratio = "" if key == "h3" or not (t and h3) else f"{t / h3:.2f}×"
                lines.append(f"| {loss}% | {label} | {med([r['ttfb_first_range_s'] for r in rs]):.3f} | "
                             f"{shown} | {med([r['mbit_s'] for r in rs]):.1f} | {ratio} |")
        return "\n".join(lines)

    def cleanup(self):
        for p in list(self.procs):
            self.stop(p)
        for ns in (NS_BR, NS_UP):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        if self.saved_allowed:
            subprocess.run(["sysctl", "-qw", f"net.ipv4.tcp_allowed_congestion_control={self.saved_allowed}"],
                           capture_output=True)
        if not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256, help="object size in MiB (default 256)")
    ap.add_argument("--rtt", type=int, default=40, help="round-trip time in ms, even (default 40)")
    ap.add_argument("--rate", default="50Mbit/s", help="link rate each way (default 50Mbit/s)")
    ap.add_argument("--queue", default="100ms", help="router queue as link time (default 100ms)")
    ap.add_argument("--loss", default="0,0.5,2", help="loss levels in %% (default 0,0.5,2)")
    ap.add_argument("--reps", type=int, default=1, help="runs per loss level and transport")
    ap.add_argument("--cap", type=int, default=150, help="seconds a fill may take before it is cut")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir and logs")
    ap.add_argument("--json", help="write every measurement to this file")
    args = ap.parse_args()
    args.losses = [float(x) if "." in x else int(x) for x in args.loss.split(",")]
    if os.geteuid() != 0:
        print("needs root: network namespaces, TUN devices, sysctl", file=sys.stderr)
        return 2
    missing = [t for t in ("ip", "curl", "openssl", "cargo") if not shutil.which(t)]
    if missing:
        print(f"missing: {' '.join(missing)}", file=sys.stderr)
        return 2
    if not args.no_build:
        log("cargo build --release --features wan-tun ...")
        if subprocess.run(["cargo", "build", "--release", "--features", "wan-tun"], cwd=REPO).returncode != 0:
            return 1
    bench = Bench(args)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda s, f: (_ for _ in ()).throw(KeyboardInterrupt()))
    failed = None
    t0 = time.time()
    try:
        bench.setup()
        log(f"link: {args.rtt:g} ms RTT, {args.rate}, queue {args.queue}; object {args.size} MiB")
        for loss in args.losses:
            bench.set_loss(loss)
            for rep in range(args.reps):
                order = VARIANTS if (rep + args.losses.index(loss)) % 2 == 0 else list(reversed(VARIANTS))
                for variant in order:
                    bench.results.append(bench.one(loss, variant, rep))
    except (Failure, KeyboardInterrupt) as e:
        failed = str(e) or "interrupted"
        log(f"!! {failed}")
    finally:
        bench.cleanup()
    print(f"\n## HTTP/3 vs HTTP/2 over TCP through the emulated WAN ({args.rtt:g} ms RTT, {args.rate}, "
          f"queue {args.queue}; {time.time() - t0:.0f} s)\n")
    print(bench.table())
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": bench.results, "failed": failed}, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
