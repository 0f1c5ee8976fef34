"""Word .docx with python-docx: paragraphs, headings, lists and table cells in order.

Headers and footers are not part of the body, so they never reach the text.
A table of contents is left out: TOC-styled paragraphs, and the paragraphs
between a "Contents" / "Table of Contents" title and the first heading
(the handbook's TOC is typed as plain paragraphs, "A. PURPOSE1-1").
The archive is checked before it is opened: a file that is not a zip, or
one that would unpack to more than ``MAX_UNPACKED`` bytes (a zip bomb), is
refused with a message.
"""

from __future__ import annotations

import io
import re
import zipfile

from qa.readers.base import Extracted, UnreadableFileError, join_blocks

MAX_UNPACKED = 512 * 1024 * 1024  # bytes a .docx may unpack to
MAX_RATIO = 200  # larger compression ratios on big members look like a zip bomb
_TOC_TITLE = re.compile(r"^\s*(?:table of )?contents\s*$", re.IGNORECASE)
_TOC_ENTRY = re.compile(r"\d+(?:-\d+)?\s*$")
_HEADING_STYLE = re.compile(r"^(?:heading|überschrift|titre)\s*(\d)$", re.IGNORECASE)
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


def _check_zip(name: str, raw: bytes) -> None:
    if not raw.startswith(b"PK"):
        raise UnreadableFileError(f"{name} is not a Word .docx file (not a zip archive)")
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UnreadableFileError(f"{name} is a damaged .docx file ({exc})") from None
    unpacked = sum(i.file_size for i in infos)
    bomb = any(i.file_size > 10_000_000 and i.file_size > MAX_RATIO * max(i.compress_size, 1) for i in infos)
    if unpacked > MAX_UNPACKED or bomb:
        raise UnreadableFileError(f"{name} would unpack to {unpacked:,} bytes (a zip bomb?); refusing to open it")
    if "word/document.xml" not in {i.filename for i in infos}:
        raise UnreadableFileError(f"{name} is not a Word .docx file (no word/document.xml inside)")


def _heading_level(paragraph) -> int:  # type: ignore[no-untyped-def]
    try:
        style = paragraph.style.name if paragraph.style is not None else ""
    except (KeyError, ValueError):
        return 0
    if style == "Title":
        return 1
    m = _HEADING_STYLE.match(style or "")
    return int(m.group(1)) if m else 0


def _is_toc_style(paragraph) -> bool:  # type: ignore[no-untyped-def]
    try:
        style = paragraph.style.name if paragraph.style is not None else ""
    except (KeyError, ValueError):
        return False
    return (style or "").lower().startswith("toc")


def read(name: str, raw: bytes) -> Extracted:
    """The body of a .docx: one passage per paragraph or table cell, headings as titles."""
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    _check_zip(name, raw)
    try:
        document = docx.Document(io.BytesIO(raw))
    except Exception as exc:  # python-docx raises KeyError, ValueError, lxml errors, ...
        raise UnreadableFileError(f"{name} is a damaged .docx file ({type(exc).__name__})") from None

    blocks: list[tuple[str, int]] = []

    def paragraphs(element, parent):  # type: ignore[no-untyped-def]
        for child in element.iterchildren():
            if child.tag == _W + "p":
                yield Paragraph(child, parent)
            elif child.tag == _W + "tbl":
                table = Table(child, parent)
                for row in table.rows:
                    seen = set()
                    for cell in row.cells:
                        if id(cell._tc) in seen:  # a merged cell appears once per grid column
                            continue
                        seen.add(id(cell._tc))
                        yield from paragraphs(cell._tc, cell)
            elif child.tag == _W + "sdt":
                content = child.find(_W + "sdtContent")
                gallery = child.find(f"{_W}sdtPr/{_W}docPartObj/{_W}docPartGallery")
                if gallery is not None and "Contents" in (gallery.get(_W + "val") or ""):
                    continue  # a Word-generated table of contents
                if content is not None:
                    yield from paragraphs(content, parent)

    in_toc = False
    for p in paragraphs(document.element.body, document):
        text = p.text
        if not text.strip():
            continue
        level = _heading_level(p)
        if _is_toc_style(p):
            continue
        if _TOC_TITLE.match(text):
            in_toc = True
            continue
        if in_toc:
            if level:
                in_toc = False
            elif _TOC_ENTRY.search(text) or not any(c.islower() for c in text):
                continue
            else:
                in_toc = False
        blocks.append((text, level))
    if not blocks:
        raise UnreadableFileError(f"{name} holds no text")
    text, layout = join_blocks(blocks)
    try:
        title = " ".join((document.core_properties.title or "").split())
    except (KeyError, ValueError):
        title = ""
    return Extracted(text, "docx", layout, title)
