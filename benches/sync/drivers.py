#!/usr/bin/env python3
"""Drivers on demand against syncing every driver: catalog size and sync time of a branch.

Builds the release binary and generates, at a root, a catalog of N software updates and M
driver updates (`import --generate N --drivers M`; several versions for each of about M/8
device models). Then two branches sync from it on loopback with `wsus-edge sync`:

- "all" (`upstream.drivers = "all"`, as WSUS does): one sync.
- "on-demand": a first sync (software only: no client has listed a device yet), then the
  branch serves C simulated clients whose driver passes list the devices of a generated fleet
  (`simulate --drivers M`: 10 to 17 devices each, drawn from the same device models), then a
  second sync that asks the root for the drivers of those devices only (GetDriverIdList).

Reports per branch: driver and software revisions held, state.db size, and per sync its wall
time, SOAP calls, bytes of answers and documents fetched.

    python3 benches/sync/drivers.py [--updates 200] [--drivers 30000] [--clients 1000]

Everything listens on 127.0.0.1; the work directory is removed at the end.
"""

import argparse
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target", "release", "wsus-edge")
sys.path.insert(0, os.path.join(ROOT, "benches"))
from node_process import free_port, wait_ready  # noqa: E402


def write_config(path, name, data, http, admin, upstream=None, drivers="all"):
    text = (f'[node]\nname = "{name}"\ndata_dir = "{data}"\n'
            f'[listen]\nhttp = "127.0.0.1:{http}"\nadmin = "127.0.0.1:{admin}"\n')
    if upstream:
        text += (f'[upstream]\nurl = "{upstream}"\nsync_interval = "0s"\ntimeout = "120s"\n'
                 f'drivers = "{drivers}"\n'
                 f'[cache]\nprefetch = "none"\n[reports]\nrollup_interval = "0s"\n')
    else:
        text += '[downstream]\nallow_anonymous = true\n'
    with open(path, "w") as f:
        f.write(text)


def run(args):
    return subprocess.run([BIN, *args], check=True, capture_output=True, text=True)


def sync(conf, label):
    started = time.perf_counter()
    out = run(["--config", conf, "sync"]).stdout
    elapsed = time.perf_counter() - started
    wire = re.search(r"wire\s+(\d+) SOAP calls, ([\d.]+ \S+) of answers", out)
    docs = re.search(r"update documents\s+(\d+) fetched", out)
    return {"sync": label, "seconds": round(elapsed, 2), "soap_calls": int(wire.group(1)),
            "answers": wire.group(2), "documents": int(docs.group(1))}


def held(data):
    """(driver revisions, other revisions, state.db MiB) of a node's data folder."""
    db = os.path.join(data, "state.db")
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    counts = dict(con.execute(
        "SELECT update_type = 'Driver', COUNT(*) FROM revisions GROUP BY 1").fetchall())
    con.close()
    return counts.get(1, 0), counts.get(0, 0), round(os.path.getsize(db) / 2**20, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--updates", type=int, default=200)
    ap.add_argument("--drivers", type=int, default=30000)
    ap.add_argument("--clients", type=int, default=1000)
    a = ap.parse_args()

    subprocess.run(["cargo", "build", "--release", "--locked", "-q"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="wsus-edge-drivers-")
    procs = []
    try:
        http, admin = free_port(), free_port()
        root_conf = os.path.join(work, "root.toml")
        write_config(root_conf, "root", os.path.join(work, "root"), http, admin)
        t = time.perf_counter()
        run(["--config", root_conf, "import", "--generate", str(a.updates),
             "--payload-bytes", "16MiB", "--drivers", str(a.drivers)])
        print(f"root: {a.updates} updates and {a.drivers} drivers generated in "
              f"{time.perf_counter() - t:.1f} s", flush=True)
        root = subprocess.Popen([BIN, "--config", root_conf, "serve"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(root)
        wait_ready(admin, root)
        upstream = f"http://127.0.0.1:{http}"

        rows = []
        data = os.path.join(work, "branch-all")
        conf = os.path.join(work, "branch-all.toml")
        write_config(conf, "branch-all", data, free_port(), free_port(), upstream, "all")
        syncs = [sync(conf, "all")]
        rows.append(("all", held(data), syncs))
        print(f"all: {syncs[0]}", flush=True)

        data = os.path.join(work, "branch-on-demand")
        conf = os.path.join(work, "branch-on-demand.toml")
        b_http, b_admin = free_port(), free_port()
        write_config(conf, "branch-on-demand", data, b_http, b_admin, upstream, "on-demand")
        syncs = [sync(conf, "on-demand, before any client")]
        branch = subprocess.Popen([BIN, "--config", conf, "serve"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_ready(b_admin, branch)
        t = time.perf_counter()
        fleet = run(["simulate", "--server", f"http://127.0.0.1:{b_http}", "--clients",
                     str(a.clients), "--concurrency", "16", "--drivers", str(a.drivers)]).stdout
        print(f"{a.clients} clients scanned the on-demand branch in "
              f"{time.perf_counter() - t:.1f} s", flush=True)
        branch.terminate()
        branch.wait(timeout=30)
        device_ids = sqlite3.connect(os.path.join(data, "state.db")).execute(
            "SELECT COUNT(*) FROM device_ids").fetchone()[0]
        syncs.append(sync(conf, f"on-demand, {a.clients} clients' devices"))
        rows.append(("on-demand", held(data), syncs))
        print(f"on-demand: {syncs}", flush=True)

        print(f"\nthe fleet listed {device_ids} distinct device ids\n{fleet.rstrip()}")
        print("\n| branch | driver revisions | other revisions | state.db | sync | time | "
              "SOAP calls | answers | documents |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name, (drivers, other, mib), syncs in rows:
            for s in syncs:
                print(f"| {name} | {drivers} | {other} | {mib} MiB | {s['sync']} | "
                      f"{s['seconds']} s | {s['soap_calls']} | {s['answers']} | "
                      f"{s['documents']} |")
        print(json.dumps({"device_ids": device_ids,
                          "branches": [{"branch": n, "driver_revisions": d,
                                        "other_revisions": o, "state_db_mib": m,
                                        "syncs": s} for n, (d, o, m), s in rows]}))
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
