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

from pathlib import Path

from qa.readers.base import Box, Extracted, Layout, Reader, UnreadableFileError, decode, join_blocks

__all__ = [
    "SUFFIXES",
    "Box",
    "Extracted",
    "Layout",
    "Reader",
    "UnreadableFileError",
    "decode",
    "join_blocks",
    "max_bytes",
    "read_bytes",
    "read_file",
]

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
VERSION = 4  # bump when a reader's output changes, so indexes re-read their files


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
