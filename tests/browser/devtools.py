"""Headless Chromium (Debian's package) driven over the DevTools protocol, for the checks of
this directory: a browser that opens pages, evaluates script in them, fills and clicks as a
person would, and waits for each page to load; and the one way a check says how it went.
"""

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket

failures = []


def check(what, ok, detail=""):
    """Print one line for a check; remember a failure."""
    print(("ok   " if ok else "FAIL ") + what + ("" if ok else f": {detail}"), flush=True)
    if not ok:
        failures.append(what)


def finish():
    """The count of failures, and the exit status they make."""
    print(f"{len(failures)} failures")
    sys.exit(1 if failures else 0)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """One headless Chromium with a profile of its own (its cookies die with it)."""

    def __init__(self):
        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        if binary is None:
            sys.exit("chromium is not installed")
        self.profile = tempfile.mkdtemp(prefix="wsus-edge-chromium-")
        port = free_port()
        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             f"--remote-debugging-port={port}", f"--user-data-dir={self.profile}",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        page = None
        deadline = time.time() + 30
        while page is None and time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=1) as r:
                    page = next((t for t in json.load(r) if t["type"] == "page"), None)
            except OSError:
                time.sleep(0.1)
        if page is None:
            self.close()
            sys.exit("chromium did not open its DevTools port")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30)
        self.ids = iter(range(1, 1_000_000))
        self.command("Page.enable")

    def command(self, method, **params):
        n = next(self.ids)
        self.ws.send(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == n:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def until_loaded(self):
        while True:
            message = json.loads(self.ws.recv())
            if message.get("method") == "Page.loadEventFired":
                return

    def evaluate(self, expression):
        result = self.command("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def text(self):
        """What the page shows."""
        return self.evaluate("document.body.innerText")

    def open(self, url):
        self.command("Page.navigate", url=url)
        self.until_loaded()

    def click(self, selector):
        """Click the element `selector` finds and wait for the page it leads to."""
        found = self.evaluate(
            f"(() => {{ const a = document.querySelector({json.dumps(selector)});"
            f" if (!a) return false; a.click(); return true; }})()")
        check(f"something to click: {selector}", found is True)
        if found:
            self.until_loaded()
        return found is True

    def fill(self, selector, value):
        """Set the value of the field `selector` finds (as typing or choosing would)."""
        found = self.evaluate(
            f"(() => {{ const f = document.querySelector({json.dumps(selector)});"
            f" if (!f) return false; f.value = {json.dumps(value)}; return f.value; }})()")
        check(f"a field to fill: {selector}", found == value, found)

    def close(self):
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)
