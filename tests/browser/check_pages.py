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

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from devtools import Browser, check, finish  # noqa: E402

ADMIN, BRANCH, COMPUTER, STALE, APPROVED, INSTALLED, FAILED = sys.argv[1:8]

b = Browser()
try:
    b.open(ADMIN + "/")
    seen = b.evaluate("document.body.innerText")
    check("the home page lists branches", "Branches" in seen and "this node" in seen, seen)
    check("a stale branch is marked stale", f"{STALE}" in seen and "(stale)" in seen, seen)
    color = b.evaluate("getComputedStyle(document.querySelector('tr.stale td')).backgroundColor")
    check("the stale branch's row is highlighted", color == "rgb(253, 226, 226)", color)
    fresh = b.evaluate(f"document.querySelector('a[href=\"/branches/{BRANCH}\"]')"
                     ".closest('tr').className")
    check("a branch that rolled up is not stale", fresh == "", fresh)

    b.click(f'a[href="/branches/{BRANCH}"]')
    seen = b.evaluate("document.body.innerText")
    check("the branch page lists its computers", COMPUTER in seen, seen)
    check("the branch page says which computers have errors", "errors" in seen, seen)
    check("the branch page shows what its last rollup counted",
          f"Approved updates\t{APPROVED}" in seen, seen)
    check("the branch page shows its computers by operating system and their installs",
          "Computers by operating system" in seen and f"\t1\t{INSTALLED}\t{FAILED}" in seen, seen)

    b.click('a[href^="/computers/"]')
    seen = b.evaluate("document.body.innerText")
    check("a computer's page lists its updates", "Contoso Update" in seen, seen)
    check("a computer's page shows installed and failed updates",
          "installed" in seen and "failed" in seen, seen)

    b.click('a[href^="/updates/"]')
    seen = b.evaluate("document.body.innerText")
    check("an update's page lists the computer with its state",
          COMPUTER in seen and ("Installed" in seen or "Failed" in seen), seen)
    branch_link = b.evaluate(f"!!document.querySelector('a[href=\"/branches/{BRANCH}\"]')")
    check("an update's page links the computer's branch", branch_link is True, seen)

    b.click('a[href="/updates"]')
    seen = b.evaluate("document.body.innerText")
    check("the updates page shows compliance", "Contoso Update" in seen and "%" in seen, seen)
    check("the updates page says which of how many it shows",
          re.search(r"1–\d+ of \d+", seen) is not None, seen)
    # A search from the page's own form (filled as a person would; the page has no script).
    b.evaluate("document.querySelector('input[name=q]').value = 'KB5000001'")
    b.click('button[type="submit"]')
    seen = b.evaluate("document.body.innerText")
    check("the search box finds an update by its KB number",
          "1–1 of 1" in seen and "KB5000001" in seen, seen)
finally:
    b.close()

finish()
