"""Plain text and Markdown: the file's text as decoded; Markdown headings give heading paths."""

from __future__ import annotations

import bisect
import re

from qa.readers.base import Extracted, Layout, decode

# The title is the rest of the line; its closing run of spaces and #s is stripped in Python.
# (A lazy title before a [ \t#]*$ tail backtracked: "# " and 50,000 spaces took 10 s.)
_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*)$", re.MULTILINE)
_FENCE = re.compile(r"^ {0,3}(```|~~~)", re.MULTILINE)


def read(name: str, raw: bytes) -> Extracted:
    text, encoding = decode(raw, name)
    return Extracted(text, encoding)


def heading_paths(text: str) -> tuple[tuple[int, str], ...]:
    """``(offset, path)`` for each ATX heading (``## Title``) outside code fences.

    Linear in the text: fences before a heading are counted by bisection, not rescanned.
    """
    fences = [m.start() for m in _FENCE.finditer(text)]
    stack: list[tuple[int, str]] = []
    found: list[tuple[int, str]] = []
    for m in _ATX.finditer(text):
        if bisect.bisect_left(fences, m.start()) % 2:  # inside a fenced code block
            continue
        title = m.group(2).rstrip(" \t#") or m.group(2)[:1]
        level, title = len(m.group(1)), " ".join(title.split())
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
        found.append((m.start(), " > ".join(t for _, t in stack)))
    return tuple(found)


def read_markdown(name: str, raw: bytes) -> Extracted:
    extracted = read(name, raw)
    headings = heading_paths(extracted.text)
    return Extracted(extracted.text, extracted.encoding, Layout(headings=headings) if headings else None)
