"""Compare HTML main-text extraction on the saved Wikipedia page: qa's selectolax rules vs trafilatura.

    PYTHONPATH=. .venv/bin/python bench/html_extractors.py [EXTRA_SITE_PACKAGES]

trafilatura is not a dependency; install it anywhere (``pip install --target
/tmp/trafi trafilatura lxml_html_clean``) and pass that folder. Gold: the
article's paragraphs (``<p>`` over 80 characters inside ``.mw-parser-output``);
chrome: strings of the page's menus, footer and reference list.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

PAGE = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "documents" / "wikipedia-duck.html"
CHROME = [
    "Jump to content", "Main page", "Random article", "Donate", "Create account", "Log in", "Privacy policy",
    "This page was last edited", "Creative Commons", "Toggle", "Edit links", "Redirected from", "Retrieved",
    "Wikimedia Foundation",
]  # fmt: skip
_NOTES = re.compile(r"\[\d+\]|\[[a-z]\]")


def main() -> None:
    from selectolax.lexbor import LexborHTMLParser

    from qa.readers import read_bytes

    if len(sys.argv) > 1:
        sys.path.append(sys.argv[1])
    raw = PAGE.read_bytes()
    tree = LexborHTMLParser(raw.decode())
    body = max(tree.css(".mw-parser-output"), key=lambda n: len(n.text()))
    paras = [_NOTES.sub("", " ".join(p.text().split())).strip() for p in body.css("p")]
    paras = [p for p in paras if len(p) > 80]

    def report(name: str, text: str, seconds: float) -> None:
        flat = " ".join(text.split())
        kept = sum(1 for p in paras if p[:60] in _NOTES.sub("", flat))
        leaks = [c for c in CHROME if c in flat]
        print(f"{name}: {seconds * 1000:.0f} ms, {len(text):,} chars, paragraphs {kept}/{len(paras)}, chrome {leaks}")

    t = time.perf_counter()
    report("qa.readers.html (selectolax rules)", read_bytes(PAGE.name, raw).text, time.perf_counter() - t)
    try:
        import trafilatura
    except ImportError:
        print("trafilatura: not installed (see the docstring)")
        return
    t = time.perf_counter()
    report("trafilatura.extract", trafilatura.extract(raw.decode()) or "", time.perf_counter() - t)


if __name__ == "__main__":
    main()
