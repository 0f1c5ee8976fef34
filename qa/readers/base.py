"""What every reader shares: the result type, the error, heading paths from blocks, text decoding."""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from qa.layout import Box, Layout
from qa.types import CorpusError

__all__ = ["Box", "Extracted", "Layout", "Reader", "UnreadableFileError", "check_text", "decode", "join_blocks"]

log = logging.getLogger("qa.readers")

_BOMS = (  # longest first: a UTF-32-LE BOM starts like a UTF-16-LE one
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)


class UnreadableFileError(CorpusError):
    """A corpus file that cannot be read (wrong content, damaged, encrypted, no text)."""


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


def decode(raw: bytes, name: str) -> tuple[str, str]:
    """Decode file bytes: UTF-16/32 with a BOM, UTF-8 (BOM or not), else cp1252, else Latin-1.

    Raises UnreadableFileError for bytes that are not text (NULs or many
    control characters).
    """
    for bom, codec in _BOMS:
        if raw.startswith(bom):
            try:
                return check_text(raw.decode(codec), name), codec  # the BOM is dropped
            except UnicodeDecodeError as exc:
                raise UnreadableFileError(
                    f"{name} starts with a {codec.upper()} byte-order mark but is not {codec.upper()} ({exc.reason})"
                ) from None
    try:
        text, encoding = raw.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        for encoding in ("cp1252", "latin-1"):
            try:
                text = raw.decode(encoding)
                break
            except UnicodeDecodeError:
                continue
        log.warning("%s is not UTF-8; read it as %s", name, encoding)
    return check_text(text, name), encoding


def check_text(text: str, name: str, kind: str = "a text file") -> str:
    """``text``, unless it reads as binary (a NUL, or control characters over 1% of it): UnreadableFileError."""
    controls = sum(1 for c in text if unicodedata.category(c) == "Cc" and c not in "\t\n\r\f")
    if "\x00" in text or controls > max(2, len(text) // 100):
        raise UnreadableFileError(f"{name} is not {kind} (binary content)")
    return text
