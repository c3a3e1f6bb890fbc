#!/usr/bin/env python3
"""An administrator approves from the browser, in headless Chromium driven over the DevTools
protocol: sign in with a name and an admin token, filter the update list by classification from
its own form, tick the first two updates, approve them for a group with a deadline, find the
approval on each update's page and the change in the audit log under the name signed in with.
Prints one line per check and, for the test that runs it, one line `approved ID` per update
approved; exit 0 when all pass.

    check_approvals.py ADMIN_URL TOKEN CLASSIFICATION GROUP DEADLINE

DEADLINE: as a browser's date-and-time field holds it ("2027-01-15T18:00"), taken as UTC.

Run by tests/pages.rs against a node it started.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from devtools import Browser, check, finish  # noqa: E402

ADMIN, TOKEN, CLASSIFICATION, GROUP, DEADLINE = sys.argv[1:6]
NAME = "Dana Admin"

b = Browser()
try:
    # Signing in from the link every page has.
    b.open(ADMIN + "/updates")
    b.click("a#signin")
    b.fill("#name", NAME)
    b.fill("#token", TOKEN)
    b.click("#signin-submit")
    check("signed in, the pages say who", f"Signed in as {NAME}" in b.text(), b.text())
    cookie = b.evaluate("document.cookie")
    check("the session cookie is out of a page script's reach (HttpOnly)",
          "wsus_edge_session" not in (cookie or ""), cookie)

    # The list, filtered by classification from its own form.
    b.open(ADMIN + "/updates")
    chosen = b.evaluate(
        "(() => { const s = document.querySelector('form[action=\"/updates\"] "
        "select[name=classification]'); const o = [...s.options].find(o => o.text === "
        + json.dumps(CLASSIFICATION) + "); if (!o) return null; s.value = o.value; "
        "return o.text; })()")
    check("the filter offers the classification", chosen == CLASSIFICATION, chosen)
    b.click('form[action="/updates"] button[type=submit]')
    rows = b.evaluate(
        "[...document.querySelectorAll('#decide table tr')].slice(1).map(r => "
        "[...r.cells].map(c => c.innerText.trim()))")
    check("the list shows updates of that classification only",
          bool(rows) and all(r[3] == CLASSIFICATION for r in rows), rows)

    # Two of them approved for a group, with a deadline.
    boxes = b.evaluate(
        "[...document.querySelectorAll('#decide input[name=update]')].slice(0, 2)"
        ".map(c => { c.checked = true; return c.value; })")
    check("two updates ticked", isinstance(boxes, list) and len(boxes) == 2, boxes)
    b.fill("#decide-decision", "approve")
    b.fill("#decide-group", GROUP)
    b.fill("#decide-deadline", DEADLINE)
    b.click("#decide-apply")
    check("back on the filtered list after the change",
          b.evaluate("location.pathname + location.search").startswith("/updates?"),
          b.evaluate("location.href"))

    # Each update's page shows the approval and its deadline.
    for update in boxes or []:
        b.open(f"{ADMIN}/updates/{update}")
        seen = b.text()
        check(f"update {update} is approved for {GROUP} by the deadline",
              f"{GROUP}\tInstall\t{DEADLINE}:00Z" in seen, seen)
        print(f"approved {update}", flush=True)

    # The audit log says who did it.
    b.open(ADMIN + "/audit")
    first = b.evaluate(
        "[...document.querySelectorAll('#audit tr')][1].innerText")
    check("the audit log's newest entry is the approval, by name",
          first is not None and NAME in first and "approve" in first and GROUP in first
          and all(u in first for u in boxes or []), first)
finally:
    b.close()

finish()
