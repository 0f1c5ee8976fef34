"""PDF with pypdfium2: text in reading order, every character mapped to its page and box.

What is stored is built from the page's characters: lines are found from the
characters' positions, columns from the gutters between lines, and pages are
read band by band (a full-width title splits a page into bands), each band
column by column. Running heads and footers (lines in the top or bottom
margin that repeat on other pages, page numbers), printer slugs and rotated
margin text are left out. A word hyphenated across lines is joined
("compo-" + "nent" -> "component") and keeps both pieces' boxes; ligatures
(U+FB00-FB06) are spelled out (pdfium decomposes most; any left are NFKC-normalised).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from qa.readers.base import Extracted, Layout, UnreadableFileError

log = logging.getLogger(__name__)

MARGIN = 0.09  # top and bottom bands (fraction of the page height) where running heads live
PROGRESS_EVERY = 50  # pages between progress log lines
_SOFT_HYPHENS = "\ufffe\x02\u00ad"  # pdfium marks a hyphen it saw at a line end with U+FFFE
_TERMINAL = '.!?:;"”’)]'
_CLOSERS = "\"'”’)] "
_DIGITS = re.compile(r"\d+")
_REFERENCES = re.compile(
    r"(?:^|(?<=\n\n))(?:References|REFERENCES|Bibliography|BIBLIOGRAPHY|Literature [Cc]ited|Works [Cc]ited)"
    r"(?:\s+1\.?)?[ \t]*(?=\n\n|$)"
)
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


def _page_lines(textpage, page_no: int, size: tuple[float, float] = (1e4, 1e4)) -> list[_Line]:  # type: ignore[no-untyped-def]
    """The page's characters grouped into lines, in content order; text off the page is dropped."""
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
        if not ch.isspace() and not (-50 < box[0] < size[0] + 50 and -50 < box[1] < size[1] + 50):
            continue  # off the page: invisible, and would stretch the layout (a hostile file's x = 1e9)
        if line.has_box and box[2] > box[0]:
            mid = (box[1] + box[3]) / 2
            h = line.height
            last = next((b for b in reversed(line.boxes) if b[2] > b[0]), None)
            off_line = not (line.y0 - 0.3 * h <= mid <= line.y1 + 0.3 * h)
            backwards = last is not None and box[0] < last[0] - 2 * h
            far = last is not None and box[0] - last[2] > 0.8 * h  # wider than a word space: a gutter
            if off_line or backwards or far:
                close()
        if ch == "\t":
            ch = " "
        if (
            not ch.isspace()
            and line.chars
            and not line.chars[-1].isspace()
            and _raised_apart("".join(line.chars[-3:-1]), line.chars[-1], line.boxes[-1], ch, box)
        ):
            line.add(" ", (0.0, 0.0, 0.0, 0.0))  # "8MCAS is" (footnote 8) is read "8 MCAS is"
        for part in unicodedata.normalize("NFKC", ch) if "\ufb00" <= ch <= "\ufb06" else ch:
            line.add(part, box)
    close()
    return [ln for ln in lines if ln.has_box]


_MARKS = set("0123456789*\u2020\u2021\u00a7,")  # what a footnote or reference mark is written with


def _raised_apart(before: str, a: str, a_box: tuple[float, ...], b: str, b_box: tuple[float, ...]) -> bool:
    """Whether one of two touching characters is a superscript mark (a footnote or reference
    number) and the other is not: a space keeps the mark from gluing to the word beside it.

    ``before`` is the text before ``a``. A mark after a word of fewer than three
    letters is a unit's or a formula's exponent (km², Ca²⁺) and stays.
    """
    if a not in _MARKS and b not in _MARKS:
        return False
    if b in _MARKS and not (before[-2:] + a).isalpha():
        return False
    (small, s_box), (big, g_box) = sorted(((a, a_box), (b, b_box)), key=lambda c: c[1][3] - c[1][1])
    small_h, big_h = s_box[3] - s_box[1], g_box[3] - g_box[1]
    if small_h <= 0 or small not in _MARKS or big in _MARKS or small_h > 0.8 * big_h:
        return False
    return s_box[1] - g_box[1] > 0.2 * big_h  # its bottom is raised: a superscript, not a subscript


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


@dataclass(frozen=True)
class _Block:
    """A run of lines read top to bottom: a column, or part of one."""

    id: int
    left: float  # the column's edges, for telling short and indented lines
    right: float


def _gutters(lines: list[_Line]) -> list[list[_Line]]:
    """Split lines at vertical gutters (at least 6 pt wide, crossed by no line), left to right."""
    left = min(ln.x0 for ln in lines)
    right = max(ln.x1 for ln in lines)
    cover = np.zeros(int(right - left) + 2, dtype=np.int32)
    for ln in lines:
        cover[int(ln.x0 - left) : int(ln.x1 - left) + 1] += 1
    cuts = []
    run = 0
    for x, c in enumerate(cover.tolist()):
        if c == 0:
            run += 1
        else:
            if run >= 6:
                cuts.append(left + x - run / 2)
            run = 0
    groups = [[ln for ln in lines if lo <= ln.x0 < hi] for lo, hi in zip([-1e9, *cuts], [*cuts, 1e9], strict=True)]
    groups = [g for g in groups if g]
    # A gutter only separates columns when the text on each side is wide enough to be a column.
    merged: list[list[_Line]] = []

    def narrow(group: list[_Line]) -> bool:
        return max(ln.x1 for ln in group) - min(ln.x0 for ln in group) < 0.15 * (right - left)

    for g in groups:
        if merged and (narrow(g) or narrow(merged[-1])):
            merged[-1] = merged[-1] + g
        else:
            merged.append(g)
    return merged


def _rows(lines: list[_Line]) -> list[list[_Line]]:
    """Split lines at horizontal whitespace (taller than half a line) that crosses the whole region."""
    ordered = sorted(lines, key=lambda ln: -ln.y1)
    heights = sorted(ln.height for ln in lines)
    need = 0.5 * heights[len(heights) // 2]
    groups: list[list[_Line]] = [[ordered[0]]]
    low = ordered[0].y0
    for ln in ordered[1:]:
        if low - ln.y1 > need:
            groups.append([ln])
        else:
            groups[-1].append(ln)
        low = min(low, ln.y0)
    return groups


def _reading_order(lines: list[_Line]) -> list[tuple[_Line, _Block]]:
    """Lines in reading order by recursive XY-cut: columns first, then horizontal gaps.

    Cutting at gutters first keeps a column whole even when its paragraphs
    line up with gaps in the next column; a title, table or footer across
    the columns blocks every gutter, so the page is cut above and below it
    and the parts are cut into columns again.
    """
    ordered: list[tuple[_Line, _Block]] = []
    count = 0

    def cut(group: list[_Line], edges: tuple[float, float], depth: int) -> None:
        nonlocal count
        if depth < 12 and len(group) > 1:
            columns = _gutters(group)
            if len(columns) > 1:
                for col in columns:
                    cut(col, (min(ln.x0 for ln in col), max(ln.x1 for ln in col)), depth + 1)
                return
            rows = _rows(group)
            if len(rows) > 1:
                for row in rows:
                    cut(row, edges, depth + 1)
                return
        block = _Block(count, *edges)
        count += 1
        ordered.extend((ln, block) for ln in sorted(group, key=lambda ln: (-round(ln.y1), ln.x0)))

    if lines:
        cut(lines, (min(ln.x0 for ln in lines), max(ln.x1 for ln in lines)), 0)
    return ordered


def read(name: str, raw: bytes) -> Extracted:
    """Read a PDF's text layer; UnreadableFileError when it has none or cannot be opened."""
    pdf = _open(name, raw)
    try:
        title = _title(pdf)
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
                width, height = page.get_size()
                sizes.append((width, height))
                textpage = page.get_textpage()
                try:
                    pages.append(_page_lines(textpage, i + 1, (width, height)))
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
    extracted = _assemble(pages, sizes)
    return Extracted(extracted.text, extracted.encoding, extracted.layout, title)


def _title(pdf) -> str:  # type: ignore[no-untyped-def]
    """The title in the PDF's metadata, when it reads like one (not a file name or a tool's default)."""
    try:
        title = " ".join(str(pdf.get_metadata_value("Title") or "").split())
    except Exception:  # damaged metadata is no reason to skip the text
        return ""
    if (
        len(title) < 4
        or len(title) > 300
        or re.search(r"\.(?:docx?|pdf|indd|tex|dvi)$|^untitled|^microsoft", title, re.I)
    ):
        return ""
    return title


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
    hyphenated: set[str] = set()  # words written with a hyphen somewhere inside a line: keep their hyphen when split
    for lines in pages:
        for ln in lines:
            hyphenated.update(m.group(0).lower() for m in re.finditer(r"\w+-\w+", ln.text))

    def emit(sep: str) -> None:
        for ch in sep:
            chars.append(ch)
            page_of.append(0)
            line_of.append(-1)
            boxes.append(none)

    def separator(prev: _Line, pb: _Block, ln: _Line, lb: _Block) -> str:
        """What goes between two lines: "" (one word), " " (same paragraph), "\n\n", or "-" (drop hyphen)."""
        h = max(prev.height, ln.height)
        short = prev.x1 < pb.right - 2 * h
        ends = prev.text.rstrip(_CLOSERS)[-1:] in ".!?:;"
        indented = ln.x0 > lb.left + 0.6 * h
        # a short line without end punctuation before a capital: a run-in title ("Background")
        titled = prev.x1 < pb.right - 0.4 * (pb.right - pb.left) and prev.text[-1:].isalnum() and ln.text[:1].isupper()
        moved = prev.page != ln.page or pb.left != lb.left
        gap = not moved and prev.y0 - ln.y1 > 0.9 * h
        resized = abs(prev.height - ln.height) > 0.08 * h  # a heading, a masthead, footnotes
        if _joins_word(prev, ln):
            word = (prev.text.rsplit(" ", 1)[-1] + ln.text.split(" ", 1)[0]).lower()
            return "" if word.rstrip(_TERMINAL + ",") in hyphenated else "-"
        if _hyphen_end(prev) or (prev.chars[-1] == "–" and ln.text[:1].isalnum()):
            return ""  # "FAA-" + "2020", "737–" + "9": one token split by the line end
        if gap or resized or titled or (short and ends) or (indented and (ends or moved)):
            return "\n\n"
        return " "  # one paragraph: the splitter would end a sentence at a newline

    # Footnotes set below an unfinished paragraph wait until that paragraph ends
    # (it goes on in the next column or page), so they do not cut its sentences.
    sequence: list[tuple[_Line, _Block]] = []
    pending: list[tuple[_Line, _Block]] = []
    last_body: tuple[_Line, _Block] | None = None
    weights = Counter[float]()  # the body text's line height: the one most characters have
    for lines in pages:
        for ln in lines:
            weights[round(ln.height * 2) / 2] += len(ln.chars)
    body_height = weights.most_common(1)[0][0]
    for lines in pages:
        ordered = _reading_order([ln for ln in lines if id(ln) not in furniture])
        if not ordered:
            continue
        page_weights = Counter[float]()
        for ln, _ in ordered:
            page_weights[round(ln.height * 2) / 2] += len(ln.chars)
        # The larger of the page's and the document's: a page of long footnotes, or a
        # document whose reference list outweighs its body, still finds the body size.
        body = max(body_height, page_weights.most_common(1)[0][0])
        deferring = False
        for i, (ln, block) in enumerate(ordered):
            small = ln.height < 0.92 * body
            before = ordered[i - 1][0] if i else None
            deferring = small and (
                deferring
                or (
                    before is not None
                    and before.height >= 0.92 * body
                    and before.text.rstrip(_CLOSERS)[-1:] not in ".!?:;"
                    and ln.y1 <= before.y0
                    and ln.y1 < 0.6 * sizes[ln.page - 1][1]
                )
            )
            if deferring:
                pending.append((ln, block))
                continue
            if pending and last_body is not None and separator(*last_body, ln, block) == "\n\n":
                sequence.extend(pending)
                pending.clear()
            sequence.append((ln, block))
            last_body = (ln, block)
    sequence.extend(pending)

    previous: tuple[_Line, _Block] | None = None
    for line_no, (ln, block) in enumerate(sequence):
        if previous is not None:
            sep = separator(*previous, ln, block)
            if sep == "-":
                chars.pop()  # the hyphen: its box goes with it
                page_of.pop()
                line_of.pop()
                boxes.pop()
            else:
                emit(sep)
        for ch, box in zip(ln.chars, ln.boxes, strict=True):
            chars.append(ch)
            page_of.append(ln.page)
            line_of.append(line_no)
            boxes.append(box)
        previous = (ln, block)
    text = "".join(chars)
    # A paper's reference list: titles of other works, which answer no question about this one.
    found = list(_REFERENCES.finditer(text))
    context = ((found[-1].start(), len(text)),) if found and found[-1].start() > 0.2 * len(text) else ()
    layout = Layout(
        char_page=np.array(page_of, dtype=np.int32),
        char_line=np.array(line_of, dtype=np.int32),
        char_box=np.array(boxes, dtype=np.float32).reshape(-1, 4),
        page_sizes=tuple(sizes),
        context=context,
    )
    return Extracted(text, "pdf", layout)
