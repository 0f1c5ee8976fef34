"""PDF with pypdfium2: text in reading order, every character mapped to its page and box.

What is stored is built from the page's characters: lines are found from the
characters' positions, columns from the gutters between lines, and pages are
read band by band (a full-width title splits a page into bands), each band
column by column. Running heads and footers (lines in the top or bottom
margin that repeat on other pages, page numbers), printer slugs and rotated
margin text are left out. A word hyphenated across lines is joined
("compo-" + "nent" -> "component") and keeps both pieces' boxes; ligatures
(U+FB00-FB06) are spelled out.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from qa.readers import Extracted, Layout, UnreadableFileError

log = logging.getLogger(__name__)

MARGIN = 0.09  # top and bottom bands (fraction of the page height) where running heads live
PROGRESS_EVERY = 50  # pages between progress log lines
_SOFT_HYPHENS = "\ufffe\x02\u00ad"  # pdfium marks a hyphen it saw at a line end with U+FFFE
_TERMINAL = ".!?:;\"”’)]"
_CLOSERS = "\"'”’)] "
_DIGITS = re.compile(r"\d+")
_PAGE_NUMBER = re.compile(r"^(?:page\s*)?[#ivxlc]+(?:\s*(?:of|/)\s*#)?$", re.IGNORECASE)


@dataclass
class _Line:
    page: int
    chars: list[str] = field(default_factory=list)
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    soft_hyphen: bool = False  # ends with a hyphen pdfium says breaks a word
    x0: float = 1e9
    y0: float = 1e9
    x1: float = -1e9
    y1: float = -1e9

    def add(self, ch: str, box: tuple[float, float, float, float]) -> None:
        self.chars.append(ch)
        self.boxes.append(box)
        if box[2] > box[0]:
            self.x0, self.y0 = min(self.x0, box[0]), min(self.y0, box[1])
            self.x1, self.y1 = max(self.x1, box[2]), max(self.y1, box[3])

    @property
    def text(self) -> str:
        return "".join(self.chars)

    @property
    def height(self) -> float:
        return max(self.y1 - self.y0, 1.0)

    @property
    def has_box(self) -> bool:
        return self.x1 > self.x0

    def trimmed(self) -> _Line:
        while self.chars and self.chars[-1].isspace():
            self.chars.pop()
            self.boxes.pop()
        while self.chars and self.chars[0].isspace():
            self.chars.pop(0)
            self.boxes.pop(0)
        return self


def _open(name: str, raw: bytes):  # type: ignore[no-untyped-def]
    import pypdfium2 as pdfium

    if b"%PDF-" not in raw[:1024]:
        raise UnreadableFileError(f"{name} is not a PDF file (no %PDF- header)")
    try:
        pdf = pdfium.PdfDocument(raw)
    except pdfium.PdfiumError as exc:
        if "password" in str(exc).lower() or "security" in str(exc).lower():
            raise UnreadableFileError(f"{name} is encrypted (password-protected) and cannot be read") from None
        raise UnreadableFileError(f"{name} is a damaged PDF that cannot be opened ({exc})") from None
    if len(pdf) == 0:
        pdf.close()
        raise UnreadableFileError(f"{name} is a damaged PDF with no readable pages")
    return pdf


def _page_lines(textpage, page_no: int) -> list[_Line]:  # type: ignore[no-untyped-def]
    """The page's characters grouped into lines, in content order."""
    import pypdfium2.raw as pdfium_c

    lines: list[_Line] = []
    line = _Line(page_no)

    def close() -> None:
        nonlocal line
        if line.trimmed().chars:
            lines.append(line)
        line = _Line(page_no)

    for i in range(textpage.count_chars()):
        code = pdfium_c.FPDFText_GetUnicode(textpage, i)
        ch = chr(code) if code < 0x110000 else "\ufffd"
        if ch in "\r\n":
            close()
            continue
        if ch in _SOFT_HYPHENS:
            line.add("-", textpage.get_charbox(i, loose=True))
            line.soft_hyphen = True
            close()
            continue
        if abs(pdfium_c.FPDFText_GetCharAngle(textpage, i)) > 0.01:
            continue  # rotated text: margin notes such as "jbell on DSK... with PROPOSALS"
        if unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn") and ch not in "\t":
            continue
        box = textpage.get_charbox(i, loose=True) if not ch.isspace() else (0.0, 0.0, 0.0, 0.0)
        if line.has_box and box[2] > box[0]:
            mid = (box[1] + box[3]) / 2
            h = line.height
            last = next((b for b in reversed(line.boxes) if b[2] > b[0]), None)
            off_line = not (line.y0 - 0.3 * h <= mid <= line.y1 + 0.3 * h)
            backwards = last is not None and box[0] < last[0] - 2 * h
            far = last is not None and box[0] - last[2] > 2.5 * h
            if off_line or backwards or far:
                close()
        if ch == "\t":
            ch = " "
        for part in unicodedata.normalize("NFKC", ch) if "\ufb00" <= ch <= "\ufb06" else ch:
            line.add(part, box)
    close()
    return [ln for ln in lines if ln.has_box]


def _key(line: _Line) -> str:
    return " ".join(_DIGITS.sub("#", line.text).lower().split())


def _furniture(pages: list[list[_Line]], heights: list[float]) -> set[int]:
    """ids of lines that are running heads, footers, page numbers or printer slugs."""
    in_margin: list[list[_Line]] = []
    for lines, h in zip(pages, heights, strict=True):
        in_margin.append([ln for ln in lines if ln.y0 > h * (1 - MARGIN) or ln.y1 < h * MARGIN])
    pages_with = Counter(k for lines in in_margin for k in {_key(ln) for ln in lines})
    repeat = 2 if len(pages) <= 4 else max(2, len(pages) // 5)
    out = set()
    for lines in in_margin:
        for ln in lines:
            key = _key(ln)
            if (len(pages) > 1 and pages_with[key] >= repeat) or _PAGE_NUMBER.match(key.replace(" ", "")):
                out.add(id(ln))
    return out


def _columns(lines: list[_Line]) -> list[tuple[float, float]]:
    """Column x-ranges of a band of lines, split at gutters that (almost) no line crosses."""
    left = min(ln.x0 for ln in lines)
    right = max(ln.x1 for ln in lines)
    cover = np.zeros(int(right - left) + 2, dtype=np.int32)
    for ln in lines:
        cover[int(ln.x0 - left) : int(ln.x1 - left) + 1] += 1
    noise = max(1, int(0.08 * cover.max()))  # a stray line across the gutter does not close it
    cols: list[tuple[float, float]] = []
    start: int | None = None
    gap = 0
    for x, c in enumerate(cover.tolist()):
        if c >= noise:
            if start is None:
                start = x
            elif gap >= 6:  # a gutter at least 6 pt wide
                cols.append((left + start, left + x - gap))
                start = x
            gap = 0
        elif start is not None:
            gap += 1
    if start is not None:
        cols.append((left + start, right))
    # A gutter only separates columns when each side is wide enough to hold text.
    merged: list[tuple[float, float]] = []
    for c in cols:
        if merged and (c[1] - c[0] < 0.15 * (right - left) or merged[-1][1] - merged[-1][0] < 0.15 * (right - left)):
            merged[-1] = (merged[-1][0], c[1])
        else:
            merged.append(c)
    return merged or [(left, right)]


def _reading_order(lines: list[_Line]) -> list[tuple[_Line, int]]:
    """Lines in reading order, each with a block number (same number: same column of the same band).

    Lines wider than 60% of the text area (titles, abstracts, full-width
    tables) split the page into bands; each band is read column by column.
    """
    if not lines:
        return []
    left = min(ln.x0 for ln in lines)
    right = max(ln.x1 for ln in lines)
    ordered: list[tuple[_Line, int]] = []
    band: list[_Line] = []
    block = 0

    def flush() -> None:
        nonlocal block
        if not band:
            return
        cols = _columns(band)
        placed = []
        for ln in band:
            c = next((i for i, (_, b) in enumerate(cols) if ln.x0 < b + 3), len(cols) - 1)
            placed.append((ln, block + c))
        placed.sort(key=lambda item: (item[1], -item[0].y1))
        ordered.extend(placed)
        block += len(cols)
        band.clear()

    for ln in sorted(lines, key=lambda ln: -ln.y1):
        if ln.x1 - ln.x0 > 0.6 * (right - left):
            flush()
            ordered.append((ln, block))
            block += 1
        else:
            band.append(ln)
    flush()
    return ordered


def read(name: str, raw: bytes) -> Extracted:
    """Read a PDF's text layer; UnreadableFileError when it has none or cannot be opened."""
    pdf = _open(name, raw)
    try:
        total = len(pdf)
        pages: list[list[_Line]] = []
        sizes: list[tuple[float, float]] = []
        for i in range(total):
            if total >= PROGRESS_EVERY * 2 and i and i % PROGRESS_EVERY == 0:
                log.info("reading %s: page %d of %d", name, i, total)
            try:
                page = pdf[i]
            except Exception as exc:  # pdfium raises its own error type for a damaged page
                log.warning("%s: page %d cannot be read (%s); skipping it", name, i + 1, exc)
                pages.append([])
                sizes.append((612.0, 792.0))
                continue
            try:
                sizes.append(tuple(page.get_size()))  # type: ignore[arg-type]
                textpage = page.get_textpage()
                try:
                    pages.append(_page_lines(textpage, i + 1))
                finally:
                    textpage.close()
            finally:
                page.close()
    finally:
        pdf.close()
    if not any(pages):
        raise UnreadableFileError(
            f"{name} has no text layer (a scanned or image-only PDF); OCR is not supported, so it is skipped"
        )
    empty = [i + 1 for i, lines in enumerate(pages) if not lines]
    if empty:
        log.info("%s: %d page(s) without text (images only?): %s", name, len(empty), empty[:10])
    return _assemble(pages, sizes)


def _hyphen_end(line: _Line) -> bool:
    return line.soft_hyphen or (line.chars[-1] == "-" and len(line.chars) > 1 and line.chars[-2].isalpha())


def _joins_word(prev: _Line, nxt: _Line) -> bool:
    return _hyphen_end(prev) and len(prev.chars) > 1 and prev.chars[-2].isalpha() and nxt.text[:1].islower()


def _assemble(pages: list[list[_Line]], sizes: list[tuple[float, float]]) -> Extracted:
    furniture = _furniture(pages, [h for _, h in sizes])
    chars: list[str] = []
    page_of: list[int] = []
    line_of: list[int] = []
    boxes: list[tuple[float, float, float, float]] = []
    none = (0.0, 0.0, 0.0, 0.0)
    hyphenated = set()  # words written with a hyphen somewhere inside a line: keep their hyphen when split
    for lines in pages:
        for ln in lines:
            hyphenated.update(m.group(0).lower() for m in re.finditer(r"\w+-\w+", ln.text))

    def emit(sep: str) -> None:
        for ch in sep:
            chars.append(ch)
            page_of.append(0)
            line_of.append(-1)
            boxes.append(none)

    prev: _Line | None = None
    prev_col = 0
    col_right: dict[tuple[int, int], float] = {}
    col_left: dict[tuple[int, int], float] = {}
    line_no = 0
    for lines, (width, _) in zip(pages, sizes, strict=True):
        body = [ln for ln in lines if id(ln) not in furniture]
        ordered = _reading_order(body)
        for ln, col in ordered:
            key = (ln.page, col)
            col_right[key] = max(col_right.get(key, 0.0), ln.x1)
        for ln, col in ordered:
            col_left[(ln.page, col)] = min(col_left.get((ln.page, col), 1e9), ln.x0)
        for ln, col in ordered:
            if prev is not None:
                h = max(prev.height, ln.height)
                short = prev.x1 < col_right[(prev.page, prev_col)] - 2 * h
                ends = prev.text.rstrip(_CLOSERS)[-1:] in ".!?:;"
                indented = ln.x0 > col_left[(ln.page, col)] + 0.6 * h
                col_width = col_right[(prev.page, prev_col)] - col_left[(prev.page, prev_col)]
                # a short line without end punctuation before a capital: a run-in title ("Background")
                titled = (
                    prev.x1 < col_right[(prev.page, prev_col)] - 0.4 * col_width
                    and prev.text.rstrip()[-1:].isalnum()
                    and ln.text[:1].isupper()
                )
                moved = prev.page != ln.page or prev_col != col
                gap = prev.y0 - ln.y1 > 0.9 * h and not moved
                resized = abs(prev.height - ln.height) > 0.08 * h  # a heading, a masthead, footnotes
                if _joins_word(prev, ln):
                    word = (prev.text.rsplit(" ", 1)[-1] + ln.text.split(" ", 1)[0]).lower()
                    if word.rstrip(_TERMINAL + ",") in hyphenated:
                        pass  # "well-" + "known": keep the hyphen, join without a break
                    else:
                        chars.pop()  # the hyphen: its box goes with it
                        page_of.pop()
                        line_of.pop()
                        boxes.pop()
                elif _hyphen_end(prev) or (prev.chars[-1] == "–" and ln.text[:1].isalnum()):
                    pass  # "FAA-" + "2020", "737–" + "9": one token split by the line end
                elif gap or resized or titled or (short and ends) or (indented and (ends or moved)):
                    emit("\n\n")
                else:
                    emit(" ")  # one paragraph: the splitter would end a sentence at a newline
            for ch, box in zip(ln.chars, ln.boxes, strict=True):
                chars.append(ch)
                page_of.append(ln.page)
                line_of.append(line_no)
                boxes.append(box)
            line_no += 1
            prev, prev_col = ln, col
    text = "".join(chars)
    layout = Layout(
        char_page=np.array(page_of, dtype=np.int32),
        char_line=np.array(line_of, dtype=np.int32),
        char_box=np.array(boxes, dtype=np.float32).reshape(-1, 4),
        page_sizes=tuple(sizes),
    )
    return Extracted(text, "pdf", layout)
