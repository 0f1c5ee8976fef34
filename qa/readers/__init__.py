"""Readers: one module per file format, each turning a file into text plus locations.

A reader returns the document text exactly as the index stores it (offsets
into it are what sentences cite) and, where the format has them, where each
stretch of that text sits in the original: for PDF the page and box of every
character, for Markdown, HTML and Word the heading path of each passage.

The reader is chosen by the file's suffix and checks the content: a ``.pdf``
that is not a PDF raises ``UnreadableFileError`` with a message naming it.

>>> read_file("report.pdf", Path("corpus/report.pdf")).layout.page_of(0)
1
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from qa.types import CorpusError

# A box on a page: (page number from 1, left, bottom, right, top) in PDF points,
# origin at the page's bottom-left corner (PDF user space, as pypdfium2 gives it).
Box = tuple[int, float, float, float, float]


class UnreadableFileError(CorpusError):
    """A corpus file that cannot be read (wrong content, damaged, encrypted, no text)."""


@dataclass(frozen=True, eq=False)
class Layout:
    """Where the stored text sits in the original file.

    ``char_page[i]`` is the page (from 1) of character i, 0 for characters the
    reader inserted (line breaks, paragraph breaks); ``char_line[i]`` a line
    number unique in the document; ``char_box[i]`` the character's box
    (left, bottom, right, top; zeros when it has none). ``headings`` are
    ``(offset, path)`` pairs sorted by offset: from ``offset`` on, the text
    sits under the heading path ``path`` ("Chapter 3 > Claims"). ``context``
    ranges are searchable context that is never cited (a reference list).
    """

    char_page: np.ndarray | None = None
    char_line: np.ndarray | None = None
    char_box: np.ndarray | None = None
    headings: tuple[tuple[int, str], ...] = ()
    page_sizes: tuple[tuple[float, float], ...] = field(default=())
    context: tuple[tuple[int, int], ...] = ()  # ranges kept for context, never cited (a reference list)

    def citable_at(self, offset: int) -> bool:
        """False inside a range the reader marked as context only (a paper's reference list)."""
        return not any(start <= offset < end for start, end in self.context)

    @cached_property
    def _heading_offsets(self) -> list[int]:
        return [h[0] for h in self.headings]

    def heading_at(self, offset: int) -> str | None:
        """The heading path the text at ``offset`` sits under, or None."""
        i = bisect.bisect_right(self._heading_offsets, offset) - 1
        return self.headings[i][1] if i >= 0 and self.headings[i][1] else None

    def pages(self, start: int, end: int) -> tuple[int, ...]:
        """The pages (from 1) the text ``[start, end)`` lies on, in order."""
        if self.char_page is None:
            return ()
        found = np.unique(self.char_page[start:end])
        return tuple(int(p) for p in found if p > 0)

    def page_of(self, offset: int) -> int | None:
        pages = self.pages(offset, offset + 1)
        return pages[0] if pages else None

    def boxes(self, start: int, end: int) -> tuple[Box, ...]:
        """One box per line piece of ``[start, end)``: the union of its characters' boxes."""
        if self.char_page is None or self.char_line is None or self.char_box is None:
            return ()
        pages = self.char_page[start:end]
        lines = self.char_line[start:end]
        boxes = self.char_box[start:end]
        found: dict[int, list[float]] = {}
        page_of: dict[int, int] = {}
        for page, line, box in zip(pages.tolist(), lines.tolist(), boxes.tolist(), strict=True):
            if page <= 0 or box[2] <= box[0]:
                continue
            if line not in found:
                found[line] = list(box)
                page_of[line] = page
            else:
                b = found[line]
                b[0], b[1], b[2], b[3] = min(b[0], box[0]), min(b[1], box[1]), max(b[2], box[2]), max(b[3], box[3])
        return tuple(
            (page_of[line], *(round(v, 2) for v in found[line]))  # type: ignore[misc]
            for line in sorted(found, key=lambda n: (page_of[n], n))
        )


@dataclass(frozen=True, eq=False)
class Extracted:
    """What a reader gives back: the text as stored, how it was decoded, where it sits."""

    text: str
    encoding: str
    layout: Layout | None = None
    title: str = ""  # the file's own title (PDF metadata, <title>, Word properties), when it has one


Reader = Callable[[str, bytes], Extracted]


def join_blocks(blocks: list[tuple[str, int]]) -> tuple[str, Layout]:
    """Blocks ``(text, heading level or 0)`` joined by blank lines, with each heading's path.

    A heading closes the headings of its level and deeper; its path ("Duck > Etymology")
    starts at its offset in the joined text.
    """
    parts: list[str] = []
    headings: list[tuple[int, str]] = []
    stack: list[tuple[int, str]] = []
    offset = 0
    for text, level in blocks:
        if level:
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, " ".join(text.split())))
            headings.append((offset, " > ".join(t for _, t in stack)))
        parts.append(text)
        offset += len(text) + 2
    return "\n\n".join(parts), Layout(headings=tuple(headings))


# Larger files are skipped with a message naming them (README "Guarantees and limits"): text and
# HTML over 10 MB; PDF and Word files, mostly images and fonts, over 200 MB.
MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_PACKED_FILE_BYTES = 200 * 1024 * 1024
_PACKED_SUFFIXES = (".pdf", ".docx")


def max_bytes(name: str) -> int:
    """The largest file of this name's format that is read."""
    return MAX_PACKED_FILE_BYTES if name.lower().endswith(_PACKED_SUFFIXES) else MAX_FILE_BYTES


def _reader(suffix: str) -> Reader:
    if suffix == ".pdf":
        from qa.readers import pdf

        return pdf.read
    if suffix in (".html", ".htm"):
        from qa.readers import html

        return html.read
    if suffix == ".docx":
        from qa.readers import docx

        return docx.read
    if suffix == ".md":
        from qa.readers import text

        return text.read_markdown
    from qa.readers import text

    return text.read


SUFFIXES = (".txt", ".md", ".pdf", ".html", ".htm", ".docx")
VERSION = 3  # bump when a reader's output changes, so indexes re-read their files


def read_bytes(name: str, raw: bytes) -> Extracted:
    """Read a file's bytes with the reader its name's suffix picks.

    Raises ``UnreadableFileError`` with a one-sentence reason naming ``name``.
    """
    reader = _reader(Path(name).suffix.lower())
    try:
        return reader(name, raw)
    except UnreadableFileError:
        raise
    except (MemoryError, RecursionError, Exception) as exc:  # a damaged file must not stop the build
        raise UnreadableFileError(f"{name} cannot be read ({type(exc).__name__}: {exc})") from exc


def read_file(name: str, path: Path) -> Extracted:
    return read_bytes(name, path.read_bytes())
