"""Where a document's stored text sits in its original file: pages, boxes and heading paths.

Readers build a ``Layout``; documents carry it; the web chat draws from it.
It depends on nothing else in ``qa``.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

# A box on a page: (page number from 1, left, bottom, right, top) in PDF points,
# origin at the page's bottom-left corner (PDF user space, as pypdfium2 gives it).
Box = tuple[int, float, float, float, float]


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
