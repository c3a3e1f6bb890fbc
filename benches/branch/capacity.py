#!/usr/bin/env python3
"""Branch capacity: how many Windows clients one node serves, per core of the node.

For each catalog size (default 2,000 and 10,000 generated updates, every deployable one
approved for All Computers) this starts a node pinned to --node-cpus and runs
`wsus-edge simulate` pinned to --sim-cpus, three times:

1. closed loop: --clients first scans, --concurrency at a time, then --rescans rescans of each
   client (each renews its cookie, as a client does its expired one the next day). The node's
   CPU is read from /proc when the first scans end (simulate prints them before rescanning)
   and at the end: CPU per first scan and per rescan, how busy the node's cores were, and the
   rate each phase reached (its capacity, when the node's cores were the ones busy);
2. and 3. open loop at 50% and 90% of those rates (`--rate`, `--rescan-rate`): SOAP latency
   p99 of first scans and of rescans at that load.

From the CPU per scan it derives what a 2-core node takes: rescans per hour at half its CPU,
and the CPU of 100,000 daily rescans in one hour. Reports peak RSS (VmHWM).

The clients ask answers in the first of --codings (xpress, as Windows does); each other coding
listed gets one more closed-loop run, for the bytes on the wire and the node's CPU per scan of
each coding side by side.

    python3 benches/branch/capacity.py [--updates 2000,10000] [--clients 200] [--rescans 20]
        [--codings xpress,gzip,none] [--node-cpus 0] [--sim-cpus 1] [--json FILE] [--no-build]

The node's own CPU per scan is what the figures rest on; when the simulator's CPUs are the
busy ones (it says "CPUs busy" of its own), the rates are the simulator's, not the node's,
and the table says how busy the node was. Everything listens on 127.0.0.1; the work directory
is removed at the end.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target", "release", "wsus-edge")
sys.path.insert(0, os.path.join(ROOT, "benches"))
from node_process import cpu_seconds, free_port, proc_status, wait_ready  # noqa: E402


def peak_rss_mib(pid):
    return proc_status(pid, "VmHWM") / 2**20


def cpus_in(spec):
    """How many CPUs a taskset list names ("0", "1-3", "0,2")."""
    n = 0
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


def seconds(text):
    """A duration as simulate prints it (`850 µs`, `12 ms`, `1.5 s`, `2m3s`) in seconds."""
    total = 0.0
    for value, unit in re.findall(r"([\d.]+)\s*(ns|µs|ms|s|m|h|d)(?![a-zµ])", text):
        total += float(value) * {"ns": 1e-9, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60,
                                 "h": 3600, "d": 86400}[unit]
    return total


def simulate(a, http, node_pid, coding, rate=None, rescan_rate=None):
    """One simulate run; the node's CPU over each phase, and what simulate printed."""
    args = ["taskset", "-c", a.sim_cpus, BIN, "simulate", "--server",
            f"http://127.0.0.1:{http}", "--clients", str(a.clients), "--concurrency",
            str(a.concurrency), "--rescans", str(a.rescans), "--seed", str(a.seed),
            "--accept-encoding", coding]
    if rate:
        args += ["--rate", f"{rate:.3f}"]
    if rescan_rate:
        args += ["--rescan-rate", f"{rescan_rate:.3f}"]
    cpu0, t0 = cpu_seconds(node_pid), time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines, marks = [], []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        # The first scans' summary ends with their offered updates; the rescans' with their
        # latency line.
        if line.startswith(("offered updates", "rescan SOAP calls")):
            marks.append((cpu_seconds(node_pid), time.monotonic()))
    err = proc.stderr.read()
    if proc.wait() != 0:
        sys.exit("simulate failed:\n" + "\n".join(lines) + "\n" + err)
    out = "\n".join(lines)
    first = re.search(r"^scans\s+(\d+) in (.+?) \(([\d.]+) scans/s\)", out, re.M)
    first_p = re.search(r"^SOAP calls\s+\d+ \(latency p50 (.+?), p99 (.+?)\)", out, re.M)
    re_ = re.search(r"^rescans\s+(\d+) in (.+?) \(([\d.]+) scans/s\).*?(\d+) deployments "
                    r"changed", out, re.M)
    re_p = re.search(r"^rescan SOAP calls\s+\d+ \(latency p50 (.+?), p99 (.+?)\)", out, re.M)
    sim = re.search(r"^simulator CPU\s+([\d.]+) s \(([\d.]+) ms per scan, ([\d.]+) CPUs", out,
                    re.M)
    wire = dict(re.findall(r"^(SOAP answers|rescan answers)\s+[\d.]+ MiB on the wire "
                           r"\(([\d.]+) KiB per scan\)", out, re.M))
    (c1, t1), (c2, t2) = marks[0], marks[-1]
    r = {
        "first_scans": int(first.group(1)),
        "first_rate": float(first.group(3)),
        "first_p99_s": seconds(first_p.group(2)),
        "node_cpu_per_first_ms": (c1 - cpu0) * 1e3 / int(first.group(1)),
        "node_busy_first": (c1 - cpu0) / (t1 - t0) / cpus_in(a.node_cpus),
        "sim_cpus_busy": float(sim.group(3)),
        "answer_kib_per_first": float(wire["SOAP answers"]),
        "output": out,
    }
    if re_:
        r.update({
            "rescans": int(re_.group(1)),
            "rescan_rate": float(re_.group(3)),
            "changed": int(re_.group(4)),
            "rescan_p99_s": seconds(re_p.group(2)),
            "node_cpu_per_rescan_ms": (c2 - c1) * 1e3 / int(re_.group(1)),
            "node_busy_rescan": (c2 - c1) / (t2 - t1) / cpus_in(a.node_cpus),
            "answer_kib_per_rescan": float(wire["rescan answers"]),
        })
    return r


def measure(a, work, updates):
    data = os.path.join(work, f"node-{updates}")
    conf = os.path.join(work, f"node-{updates}.toml")
    http, admin = free_port(), free_port()
    with open(conf, "w") as f:
        # No scrub: its reads would be counted as the clients' CPU.
        f.write(f'[node]\nname = "capacity"\ndata_dir = "{data}"\n'
                f'[listen]\nhttp = "127.0.0.1:{http}"\nadmin = "127.0.0.1:{admin}"\n'
                f'[cache]\nscrub_rate = 0\n')
    t = time.perf_counter()
    for args in (["import", "--generate", str(updates), "--payload-bytes", "64MiB"],
                 ["approve", "--all", "--group", "All Computers"]):
        subprocess.run([BIN, "--config", conf, *args], check=True, capture_output=True)
    print(f"catalog of {updates} updates generated and approved in "
          f"{time.perf_counter() - t:.1f} s", flush=True)
    log = open(os.path.join(work, f"node-{updates}.log"), "w")
    node = subprocess.Popen(["taskset", "-c", a.node_cpus, BIN, "--config", conf, "serve"],
                            stdout=log, stderr=log)
    try:
        wait_ready(admin, node)
        coding, *others = a.codings.split(",")
        closed = simulate(a, http, node.pid, coding)
        print(f"\n== {updates} updates, closed loop, {coding}\n{closed['output']}", flush=True)
        loads = {}
        for share in (0.5, 0.9):
            run = simulate(a, http, node.pid, coding, share * closed["first_rate"],
                           share * closed["rescan_rate"])
            print(f"\n== {updates} updates, {share:.0%} of those rates\n{run['output']}",
                  flush=True)
            loads[share] = run
        rss = peak_rss_mib(node.pid)
        codings = {coding: closed}
        for other in others:
            codings[other] = simulate(a, http, node.pid, other)
            print(f"\n== {updates} updates, closed loop, {other}\n{codings[other]['output']}",
                  flush=True)
        return {"updates": updates, "closed": closed, "loads": loads, "codings": codings,
                "node_peak_rss_mib": rss}
    finally:
        node.terminate()
        node.wait(timeout=30)
        log.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--updates", default="2000,10000", help="catalog sizes, comma-separated")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--rescans", type=int, default=20, help="rescans of each client")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--codings", default="xpress",
                    help="codings the clients ask answers in (xpress, gzip, none), "
                         "comma-separated; the first for the whole measurement")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--node-cpus", default="0", help="taskset list for the node")
    ap.add_argument("--sim-cpus", default="1", help="taskset list for the simulator")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked", "-q"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="wsus-edge-capacity-")
    try:
        results = [measure(a, work, int(n)) for n in a.updates.split(",")]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    cores = cpus_in(a.node_cpus)
    print(f"\nnode on CPU {a.node_cpus}, simulate on CPU {a.sim_cpus}; {a.clients} clients, "
          f"{a.rescans} rescans each, concurrency {a.concurrency}")
    print("\n| catalog | phase | rate reached | node CPU per scan | node busy | "
          "simulator CPUs busy | p99 at 50% | p99 at 90% |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        c, l = r["closed"], r["loads"]
        print(f"| {r['updates']} | first scans | {c['first_rate']:.1f}/s | "
              f"{c['node_cpu_per_first_ms']:.1f} ms | {c['node_busy_first']:.0%} | "
              f"{c['sim_cpus_busy']:.2f} | {l[0.5]['first_p99_s'] * 1e3:.0f} ms | "
              f"{l[0.9]['first_p99_s'] * 1e3:.0f} ms |")
        print(f"| {r['updates']} | rescans | {c['rescan_rate']:.1f}/s | "
              f"{c['node_cpu_per_rescan_ms']:.2f} ms | {c['node_busy_rescan']:.0%} | | "
              f"{l[0.5]['rescan_p99_s'] * 1e3:.0f} ms | {l[0.9]['rescan_p99_s'] * 1e3:.0f} ms |")
    print("\n| catalog | node peak RSS | first scans per hour, 2 cores at 50% | "
          "rescans per hour, 2 cores at 50% | 100,000 rescans in one hour |")
    print("|---|---|---|---|---|")
    for r in results:
        c = r["closed"]
        # Half of two cores for an hour, in ms of CPU.
        budget_ms = 0.5 * 2 * 3600e3
        rescan_share = 100_000 * c["node_cpu_per_rescan_ms"] / (2 * 3600e3)
        print(f"| {r['updates']} | {r['node_peak_rss_mib']:.0f} MiB | "
              f"{budget_ms / c['node_cpu_per_first_ms']:,.0f} | "
              f"{budget_ms / c['node_cpu_per_rescan_ms']:,.0f} | "
              f"{rescan_share:.1%} of 2 cores |")
    if len(a.codings.split(",")) > 1:
        print("\n| catalog | answers in | on the wire per first scan | node CPU per first scan | "
              "on the wire per rescan | node CPU per rescan |")
        print("|---|---|---|---|---|---|")
        for r in results:
            for coding, c in r["codings"].items():
                print(f"| {r['updates']} | {coding} | {c['answer_kib_per_first'] / 1024:.2f} MiB | "
                      f"{c['node_cpu_per_first_ms']:.1f} ms | "
                      f"{c['answer_kib_per_rescan']:.1f} KiB | "
                      f"{c['node_cpu_per_rescan_ms']:.2f} ms |")
    if a.json:
        for r in results:
            for run in [*r["codings"].values(), *r["loads"].values()]:
                run.pop("output", None)
        with open(a.json, "w") as f:
            json.dump({"node_cpus": a.node_cpus, "sim_cpus": a.sim_cpus, "cores": cores,
                       "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
