#!/usr/bin/env python3
"""Initial sync of a downstream server (MS-WSUSSS), root -> branch, of a generated catalog.

Builds the release binary, generates a catalog of N updates at a root (every deployable update
approved for All Computers), serves it, and runs `wsus-edge sync` for a fresh branch: on
loopback, then through the WAN emulator (`wsus-edge wan-emulator --relay`, default 20 ms each
way = 40 ms RTT, 50 Mbit/s). Reports per run: wall time, SOAP calls, answer bytes (what crossed
the link towards the branch), the branch's peak RSS (the sync process, from wait4) and the
root's peak RSS (VmHWM) and CPU time spent answering.

    python3 benches/sync/initial.py [--updates 10000] [--delay 20ms] [--rate 50Mbit/s] [--no-wan]

Everything listens on 127.0.0.1; the work directory is removed at the end.
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


def write_config(path, name, data, http, admin, upstream=None):
    text = (f'[node]\nname = "{name}"\ndata_dir = "{data}"\n'
            f'[listen]\nhttp = "127.0.0.1:{http}"\nadmin = "127.0.0.1:{admin}"\n')
    if upstream:
        text += (f'[upstream]\nurl = "{upstream}"\nsync_interval = "0s"\ntimeout = "120s"\n'
                 f'[cache]\nprefetch = "none"\n[reports]\nrollup_interval = "0s"\n')
    else:
        # The root answers downstream servers without credentials: on loopback, what is
        # measured is the sync, not its authentication.
        text += '[downstream]\nallow_anonymous = true\n'

    with open(path, "w") as f:
        f.write(text)


def run(args, **kw):
    return subprocess.run([BIN, *args], check=True, capture_output=True, text=True, **kw)


def sync(work, label, upstream, root_pid):
    key = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
    data = os.path.join(work, f"branch-{key}")
    conf = os.path.join(work, f"branch-{key}.toml")
    write_config(conf, f"branch-{key}", data, free_port(), free_port(), upstream)
    cpu_before = cpu_seconds(root_pid)
    started = time.perf_counter()
    proc = subprocess.Popen([BIN, "--config", conf, "sync"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    out, err = proc.stdout.read(), proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"sync failed:\n{out}\n{err}")
    wire = re.search(r"wire\s+(\d+) SOAP calls, ([\d.]+ \S+) of answers", out)
    docs = re.search(r"update documents\s+(\d+) fetched", out)
    return {
        "run": label,
        "seconds": round(elapsed, 2),
        "soap_calls": int(wire.group(1)),
        "answers": wire.group(2),
        "documents": int(docs.group(1)),
        "branch_peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "root_peak_rss_mib": round(proc_status(root_pid, "VmHWM") / 2**20, 1),
        "root_cpu_seconds": round(cpu_seconds(root_pid) - cpu_before, 2),
        "output": out,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--updates", type=int, default=10000)
    ap.add_argument("--delay", default="20ms", help="one-way delay of the emulated WAN")
    ap.add_argument("--rate", default="50Mbit/s", help="bandwidth of the emulated WAN")
    ap.add_argument("--no-wan", action="store_true")
    a = ap.parse_args()

    subprocess.run(["cargo", "build", "--release", "--locked", "-q"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="wsus-edge-sync-")
    procs = []
    try:
        http, admin = free_port(), free_port()
        root_conf = os.path.join(work, "root.toml")
        write_config(root_conf, "root", os.path.join(work, "root"), http, admin)
        t = time.perf_counter()
        run(["--config", root_conf, "import", "--generate", str(a.updates),
             "--payload-bytes", "64MiB"])
        run(["--config", root_conf, "approve", "--all", "--group", "All Computers"])
        print(f"root catalog of {a.updates} updates generated and approved in "
              f"{time.perf_counter() - t:.1f} s", flush=True)
        root = subprocess.Popen([BIN, "--config", root_conf, "serve"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(root)
        wait_ready(admin, root)
        results = [sync(work, "loopback", f"http://127.0.0.1:{http}", root.pid)]
        if not a.no_wan:
            relay = subprocess.Popen(
                [BIN, "wan-emulator", "--relay", f"127.0.0.1:0=127.0.0.1:{http}",
                 "--delay", a.delay, "--rate", a.rate],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            procs.append(relay)
            ready = relay.stdout.readline().strip()
            addr = ready.removeprefix("wan-emulator ready relay=")
            if addr == ready:
                sys.exit(f"wan-emulator: {ready!r}")
            results.append(sync(work, f"wan {a.delay} each way, {a.rate}", f"http://{addr}",
                                root.pid))
        for r in results:
            print(f"\n== {r['run']}\n{r.pop('output').rstrip()}")
        print("\n| run | time | SOAP calls | answers | documents | branch peak RSS | "
              "root peak RSS | root CPU |")
        print("|---|---|---|---|---|---|---|---|")
        for r in results:
            print(f"| {r['run']} | {r['seconds']} s | {r['soap_calls']} | {r['answers']} | "
                  f"{r['documents']} | {r['branch_peak_rss_mib']} MiB | "
                  f"{r['root_peak_rss_mib']} MiB | {r['root_cpu_seconds']} s |")
        print(json.dumps(results))
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
