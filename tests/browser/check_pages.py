#!/usr/bin/env python3
"""A person's look at the status pages, in headless Chromium (Debian's package) driven over the
DevTools protocol: load the branch list, follow the links a person would click, and check the
text the browser rendered (innerText: what is visible) and the highlight of a stale branch.
Prints one line per check; exit 0 when all pass.

    check_pages.py ADMIN_URL BRANCH_ID COMPUTER_NAME STALE_NAME APPROVED INSTALLED FAILED

APPROVED: the updates the branch has approved; INSTALLED, FAILED: the installs its one computer
reported that succeeded and failed.

Run by tests/pages.rs against nodes it started.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket

ADMIN, BRANCH, COMPUTER, STALE, APPROVED, INSTALLED, FAILED = sys.argv[1:8]
failures = []


def check(what, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + what + ("" if ok else f": {detail}"), flush=True)
    if not ok:
        failures.append(what)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


browser = shutil.which("chromium") or shutil.which("chromium-browser")
if browser is None:
    sys.exit("chromium is not installed")
profile = tempfile.mkdtemp(prefix="wsus-edge-chromium-")
port = free_port()
proc = subprocess.Popen(
    [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
     f"--remote-debugging-port={port}", f"--user-data-dir={profile}", "about:blank"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    page = None
    deadline = time.time() + 30
    while page is None and time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=1) as r:
                page = next((t for t in json.load(r) if t["type"] == "page"), None)
        except OSError:
            time.sleep(0.1)
    if page is None:
        sys.exit("chromium did not open its DevTools port")
    ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30)
    ids = iter(range(1, 1_000_000))

    def command(method, **params):
        n = next(ids)
        ws.send(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            message = json.loads(ws.recv())
            if message.get("id") == n:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def until_loaded():
        while True:
            message = json.loads(ws.recv())
            if message.get("method") == "Page.loadEventFired":
                return

    def evaluate(expression):
        result = command("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def open_page(url):
        command("Page.navigate", url=url)
        until_loaded()

    def click(selector):
        found = evaluate(f"(() => {{ const a = document.querySelector({json.dumps(selector)});"
                         f" if (!a) return false; a.click(); return true; }})()")
        check(f"a link to follow: {selector}", found is True)
        if found:
            until_loaded()

    command("Page.enable")
    open_page(ADMIN + "/")
    seen = evaluate("document.body.innerText")
    check("the home page lists branches", "Branches" in seen and "this node" in seen, seen)
    check("a stale branch is marked stale", f"{STALE}" in seen and "(stale)" in seen, seen)
    color = evaluate("getComputedStyle(document.querySelector('tr.stale td')).backgroundColor")
    check("the stale branch's row is highlighted", color == "rgb(253, 226, 226)", color)
    fresh = evaluate(f"document.querySelector('a[href=\"/branches/{BRANCH}\"]')"
                     ".closest('tr').className")
    check("a branch that rolled up is not stale", fresh == "", fresh)

    click(f'a[href="/branches/{BRANCH}"]')
    seen = evaluate("document.body.innerText")
    check("the branch page lists its computers", COMPUTER in seen, seen)
    check("the branch page says which computers have errors", "errors" in seen, seen)
    check("the branch page shows what its last rollup counted",
          f"Approved updates\t{APPROVED}" in seen, seen)
    check("the branch page shows its computers by operating system and their installs",
          "Computers by operating system" in seen and f"\t1\t{INSTALLED}\t{FAILED}" in seen, seen)

    click('a[href^="/computers/"]')
    seen = evaluate("document.body.innerText")
    check("a computer's page lists its updates", "Contoso Update" in seen, seen)
    check("a computer's page shows installed and failed updates",
          "installed" in seen and "failed" in seen, seen)

    click('a[href="/updates"]')
    seen = evaluate("document.body.innerText")
    check("the updates page shows compliance", "Contoso Update" in seen and "%" in seen, seen)
    ws.close()
finally:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    shutil.rmtree(profile, ignore_errors=True)

print(f"{len(failures)} failures")
sys.exit(1 if failures else 0)
