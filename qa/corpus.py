"""Read a corpus folder and split its documents into passages and sentences.

Offsets are ``str`` indices into the document text exactly as decoded; the
splitter never changes the text, it only finds boundaries in it.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import logging
import os
import re
import stat
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from qa import readers
from qa.readers import UnreadableFileError
from qa.types import CorpusError, Document, Passage, Sentence

log = logging.getLogger(__name__)

SUFFIXES = readers.SUFFIXES  # .txt .md .pdf .html .htm .docx
# Version 4: bounded splitting (version 3 on the robustness branch) and the readers (version 3 on theirs).
SPLITTER = {"name": "pysbd", "version": 4, "readers": readers.VERSION}  # bump when splitting changes
# pysbd is quadratic on text without sentence punctuation (100 KB took 8.7 s,
# 1 MB about 15 minutes): it only ever sees pieces this long, cut at a sentence
# end, a line break or a space (2,000 characters split in ~10 ms).
MAX_SPLIT_CHARS = 2000
# Passages split before, remembered by text (``_passage_pieces``): at most this many, each
# under CACHED_PASSAGE_CHARS (a typical paragraph is a few hundred): about 130 MB at worst.
PASSAGE_CACHE = 1 << 15
CACHED_PASSAGE_CHARS = 4_000
# Per-format file size limits live with the readers (``qa.readers.max_bytes``).
MAX_FILE_BYTES = readers.MAX_FILE_BYTES
MAX_PACKED_FILE_BYTES = readers.MAX_PACKED_FILE_BYTES

# A blank line (possibly holding spaces, \r or NBSP) and the whitespace after.
_BLANK_LINE = re.compile(r"\n[^\S\n]*\n\s*")
_HEADING = re.compile(r"#{1,6}\s")
_LIST_ITEM = re.compile(r"(?:[-*+•]|\d{1,3}[.)])\s")
_WORD = re.compile(r"[^\W\d_]{2,}")
_PLACEHOLDER = re.compile(r"%[sd]|\{\d*\}|\{\{|\}\}")
_CLOSERS = "\"'”’»)]"
_TERMINAL = ".!?…"
_SENTENCE_END = re.compile(r"[.!?…][\"'”’»)\]]*\s")
# (path, reason) pairs already warned about: a corpus walk runs on every status check.
_warned: set[tuple[str, str]] = set()


def _warn_once(path: str, reason: str) -> None:
    if (path, reason) not in _warned:
        _warned.add((path, reason))
        log.warning("skipping %s: %s", path, reason)


# --- document ids ---------------------------------------------------------------
# A document id is the file's path under the corpus, "/"-separated, as text that
# every UTF-8 encoder accepts. A name byte that is not UTF-8 (which
# ``os.fsdecode`` turns into a lone surrogate, U+DC80-U+DCFF) is written
# ``\xNN``; a backslash that would read as the start of such an escape is
# doubled. Names without either (nearly all) are their own ids, and every id
# maps back to exactly one path (``source_path``).
_UNDECODED = re.compile("[\udc80-\udcff]")  # an undecodable byte, as os.fsdecode gives it
_ESCAPE_LIKE = re.compile(r"x[0-9a-fA-F]{2}")
_ESCAPED = re.compile(r"\\(\\|x[0-9a-fA-F]{2})")


def doc_id_for(relative: str) -> str:
    r"""The document id of a corpus-relative path as ``os`` gives it (surrogate-escaped bytes).

    >>> doc_id_for(os.fsdecode(b"bad\xffname.txt"))
    'bad\\xffname.txt'
    """
    if "\\" not in relative and not _UNDECODED.search(relative):
        return relative
    out: list[str] = []
    for i, c in enumerate(relative):
        if _UNDECODED.match(c):
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        elif c == "\\":
            after = relative[i + 1 : i + 4]
            ambiguous = after[:1] == "\\" or _UNDECODED.match(after[:1]) or _ESCAPE_LIKE.match(after)
            out.append("\\\\" if ambiguous else c)
        else:
            out.append(c)
    return "".join(out)


def path_for(doc_id: str) -> str:
    """The corpus-relative path (``os.fsdecode`` form) of a document id: ``doc_id_for``'s inverse."""
    if "\\" not in doc_id:
        return doc_id

    def unescape(m: re.Match[str]) -> str:
        code = m.group(1)
        if code == "\\":
            return code
        byte = int(code[1:], 16)
        return chr(0xDC00 + byte) if byte >= 0x80 else chr(byte)

    return _ESCAPED.sub(unescape, doc_id)


def source_path(corpus: str | os.PathLike[str], doc_id: str) -> Path:
    """Where the file of ``doc_id`` lies in ``corpus``."""
    return Path(corpus, path_for(doc_id))


def shown_path(path: str | os.PathLike[str]) -> str:
    """A path for a message: undecodable bytes as ``\\xNN`` (a lone surrogate fails any UTF-8 log file)."""
    return doc_id_for(os.fspath(path))


# --- the corpus walk ----------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusWalk:
    """What a walk of the corpus found: files to hash and read, and files skipped with the reason.

    ``files`` are ``(doc_id, path, stat)``: the one ``stat`` each got (links
    followed), which says it is a regular file within its format's size limit.
    """

    files: list[tuple[str, str, os.stat_result]]
    skipped: dict[str, str]


def _not_regular(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
             (stat.S_ISBLK, "a device"), (stat.S_ISDIR, "a folder"))  # fmt: skip
    kind = next((name for test, name in kinds if test(mode)), "not a plain file")
    return f"not a regular file ({kind})"


def _os_reason(exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    return f"symlink loop ({reason})" if exc.errno == errno.ELOOP else reason


def size_reason(size: int, limit: int) -> str:
    return f"{size / 2**20:.1f} MB is over the {limit // 2**20} MB file size limit"


def corpus_files(corpus: str | os.PathLike[str]) -> list[tuple[str, Path]]:
    """Return ``(doc_id, path)`` for every file a reader handles (``SUFFIXES``), sorted by id.

    Hidden files and folders are ignored; symlinks are followed only when
    they resolve inside the corpus folder; what is not a regular file, or is
    over its size limit, is skipped with a warning (``walk_corpus``).
    """
    return [(doc_id, Path(path)) for doc_id, path, _ in walk_corpus(corpus).files]


def walk_corpus(corpus: str | os.PathLike[str]) -> CorpusWalk:
    """Every file under ``corpus`` a reader handles, each checked by one ``stat`` before anything opens it.

    One ``scandir`` per folder gives each entry's name and type; a candidate
    (its suffix is in ``SUFFIXES``) then gets one ``stat``, through a symlink:
    a named pipe, socket or device, a file over its format's size limit
    (``readers.max_bytes``), a dangling link or a link loop is skipped with
    the reason, and nothing ever opens it. This is what a freshness check of
    10k files walks: one ``stat`` a file.
    """
    root = Path(corpus)
    if not root.is_dir():
        raise CorpusError(f"corpus folder {str(root)!r} does not exist or is not a folder")
    real_root = root.resolve()
    found: list[tuple[str, str, os.stat_result]] = []
    skipped: dict[str, str] = {}

    def skip(doc_id: str, reason: str, shown: str | None = None) -> None:
        skipped[doc_id] = reason
        _warn_once(shown or doc_id, reason)

    folders = [(str(root), "")]  # (folder path, its document id prefix)
    while folders:
        folder, prefix = folders.pop()
        try:
            with os.scandir(folder) as listing:
                entries = list(listing)
        except OSError as exc:  # a folder we cannot list, or whose path is over the system's length limit
            _warn_once(shown_path(exc.filename or folder), f"cannot list this folder ({exc.strerror or exc})")
            continue
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            doc_id = prefix + doc_id_for(name)
            try:
                is_dir, is_link = entry.is_dir(), entry.is_symlink()
            except OSError as exc:  # a link loop: named only when it looks like a document
                if name.lower().endswith(SUFFIXES):
                    skip(doc_id, _os_reason(exc))
                continue
            if is_dir:
                if not is_link:  # linked folders are not walked into
                    folders.append((entry.path, f"{doc_id}/"))
                continue
            if not name.lower().endswith(SUFFIXES):
                continue
            if is_link:
                try:
                    outside = not Path(entry.path).resolve(strict=True).is_relative_to(real_root)
                except OSError as exc:  # a link loop, a dangling link, a path over the system's length limit
                    skip(doc_id, _os_reason(exc))
                    continue
                if outside:
                    target = shown_path(os.readlink(entry.path))
                    skip(doc_id, "symlink points outside the corpus", f"{doc_id} -> {target}")
                    continue
            try:
                st = entry.stat()  # follows a link; the only stat this file gets before it is opened
            except OSError as exc:
                skip(doc_id, exc.strerror or str(exc))
                continue
            if not stat.S_ISREG(st.st_mode):
                skip(doc_id, _not_regular(st.st_mode))
                continue
            limit = readers.max_bytes(name)
            if st.st_size > limit:
                skip(doc_id, size_reason(st.st_size, limit))
                continue
            found.append((doc_id, entry.path, st))
    found.sort(key=lambda item: item[0])
    return CorpusWalk(found, dict(sorted(skipped.items())))


def read_corpus(corpus: str | os.PathLike[str]) -> Iterator[Document]:
    """Yield the corpus's readable, non-empty documents in a stable order.

    A file that cannot be read is skipped with a warning naming it.
    """
    for doc_id, path in corpus_files(corpus):
        doc = read_document(doc_id, path)
        if doc is not None:
            yield doc


def read_source(path: str | os.PathLike[str], limit: int) -> bytes:
    """A corpus file's bytes, checked again on the open file: a regular file of at most ``limit`` bytes.

    The file is opened without blocking (a named pipe put in its place since
    the walk does not hang the build) and read no further than ``limit``.
    Raises ``UnreadableFileError`` for anything else.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnreadableFileError(_not_regular(st.st_mode))
        if st.st_size > limit:
            raise UnreadableFileError(size_reason(st.st_size, limit))
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    raw = b"".join(chunks)
    if len(raw) > limit:  # it grew since the fstat
        raise UnreadableFileError(size_reason(len(raw), limit))
    return raw


def read_document(
    doc_id: str,
    path: str | os.PathLike[str],
    *,
    skipped: dict[str, str] | None = None,
    reader: readers.Reader | None = None,
) -> Document | None:
    """Read one file; None (with a logged warning) when it cannot be used.

    ``skipped`` (if given) gets ``doc_id -> reason`` for a file that is not used:
    "empty", "binary content", "over the 10 MB file size limit", or the system's error.
    ``reader`` reads the bytes (``readers.read_bytes`` in this process by default;
    a build passes a ``readers.sandbox.ReaderSandbox``'s, which holds each file to
    a memory and a time budget).
    """
    try:
        raw = read_source(path, readers.max_bytes(doc_id))
        extracted = (reader or readers.read_bytes)(doc_id, raw)
        text, encoding = extracted.text, extracted.encoding
    except (OSError, UnreadableFileError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if isinstance(exc, UnreadableFileError) and "binary content" in reason:
            reason = "binary content, not text"
        log.warning("skipping %s: %s", doc_id, reason)
        if skipped is not None:
            skipped[doc_id] = reason
        return None
    if not text.strip():
        log.info("skipping %s: empty", doc_id)
        if skipped is not None:
            skipped[doc_id] = "empty"
        return None
    if len(text) > 1 << 20:  # splitting a big document takes seconds: say which one
        log.info("splitting %s (%.1f M characters)", doc_id, len(text) / 2**20)
    return Document(doc_id, text, hashlib.sha256(raw).hexdigest(), encoding, extracted.layout, extracted.title)


# --- splitting ----------------------------------------------------------------


@lru_cache(maxsize=1)
def _segmenter():  # type: ignore[no-untyped-def]
    import pysbd

    return pysbd.Segmenter(language="en", clean=False, char_span=True)


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def passage_spans(text: str) -> Iterator[tuple[int, int]]:
    """Paragraph spans: text separated by blank lines, whitespace trimmed."""
    pos = 0
    for m in _BLANK_LINE.finditer(text):
        start, end = _strip(text, pos, m.start())
        if start < end:
            yield start, end
        pos = m.end()
    start, end = _strip(text, pos, len(text))
    if start < end:
        yield start, end


def _blocks(text: str, start: int, end: int) -> Iterator[tuple[int, int, bool]]:
    """Split a passage into runs of lines; headings and list items stand alone.

    Yields ``(start, end, is_heading)``.
    """
    line_start = start
    block_start = start
    for line in text[start:end].splitlines(keepends=True):
        line_end = line_start + len(line)
        stripped = line.strip()
        if _HEADING.match(stripped) or _LIST_ITEM.match(stripped):
            if block_start < line_start:
                yield block_start, line_start, False
            yield line_start, line_end, bool(_HEADING.match(stripped))
            block_start = line_end
        line_start = line_end
    if block_start < end:
        yield block_start, end, False


def _bounded_pieces(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    """Cut ``text[start:end]`` into pieces of at most MAX_SPLIT_CHARS for pysbd.

    A cut goes after the last sentence end in the second half of the piece,
    else at its last line break, else its last whitespace, else anywhere.
    """
    while end - start > MAX_SPLIT_CHARS:
        lo, hi = start + MAX_SPLIT_CHARS // 2, start + MAX_SPLIT_CHARS
        window = text[lo:hi]
        ends = [m.end() for m in _SENTENCE_END.finditer(window)]
        if ends:
            cut = lo + ends[-1]
        elif (nl := window.rfind("\n")) >= 0:
            cut = lo + nl + 1
        else:
            spaces = [i for i, c in enumerate(window) if c.isspace()]
            cut = lo + spaces[-1] + 1 if spaces else hi
        yield start, cut
        start = cut
    yield start, end


def _sentence_spans(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    """Sentence spans inside ``text[start:end]`` found by pysbd, in bounded pieces."""
    for piece_start, piece_end in _bounded_pieces(text, start, end):
        yield from _pysbd_spans(text, piece_start, piece_end)


def _pysbd_spans(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    chunk = text[start:end]
    cursor = 0
    for seg in _segmenter().segment(chunk):
        seg_text = seg.sent
        # pysbd's spans are usually exact; when not, find the text ourselves.
        pos = seg.start if chunk[seg.start : seg.end] == seg_text else chunk.find(seg_text, cursor)
        if pos < 0:
            continue
        s, e = _strip(text, start + pos, start + pos + len(seg_text))
        if s < e:
            yield s, e
        cursor = pos + len(seg_text)


def is_prose(sentence: str) -> bool:
    """Whether a sentence reads as running text rather than page chrome.

    Prose has at least three words, is at least half letters, has balanced brackets,
    holds no template placeholders and ends like a sentence.
    """
    words = _WORD.findall(sentence)
    if len(words) < 3 or _PLACEHOLDER.search(sentence):
        return False
    visible = [c for c in sentence if not c.isspace()]
    if sum(c.isalpha() for c in visible) < 0.5 * len(visible):
        return False
    if sentence.count("(") != sentence.count(")") or sentence.count("[") != sentence.count("]"):
        return False
    stem = sentence.rstrip(_CLOSERS + " \u00a0")
    return bool(stem) and (stem[-1] in _TERMINAL or bool(_LIST_ITEM.match(sentence)))


def _template_key(text: str) -> tuple[str, ...]:
    return tuple(w.lower() for w in _WORD.findall(text)[:4])


def _split_passage(passage: str) -> tuple[tuple[int, int, bool], ...]:
    """A passage's headings and sentences as ``(start, end, is_prose)``, offsets into the passage."""
    found: list[tuple[int, int, bool]] = []
    for b_start, b_end, heading in _blocks(passage, 0, len(passage)):
        if heading:
            found.append((*_strip(passage, b_start, b_end), False))
        else:
            found.extend((s, e, is_prose(passage[s:e])) for s, e in _sentence_spans(passage, b_start, b_end))
    return tuple(found)


# A passage's split depends on its text alone, so a passage seen before (an
# edited file's unchanged paragraphs, while watching; a paragraph repeated
# across documents) is not split again: pysbd is most of a build's splitting time.
_passage_pieces = lru_cache(maxsize=PASSAGE_CACHE)(_split_passage)


def split_document(doc: Document) -> tuple[list[Passage], list[Sentence]]:
    """Split a document into passages and sentences with exact offsets.

    A passage is prose when at least 3/4 of its characters are in prose
    sentences and it does not repeat a short template (``You are commenting
    using your X account``) three or more times in the document. Only
    sentences of prose passages are citable; the rest (titles, headings,
    comment forms, navigation) stay as context.
    """
    text = doc.text
    spans = list(passage_spans(text))
    keys = Counter(_template_key(text[s:e]) for s, e in spans if e - s < 200)
    passages: list[Passage] = []
    sentences: list[Sentence] = []
    for p_start, p_end in spans:
        passage = text[p_start:p_end]
        pieces = _passage_pieces(passage) if len(passage) <= CACHED_PASSAGE_CHARS else _split_passage(passage)
        found = [(p_start + s, p_start + e, ok) for s, e, ok in pieces]
        prose_chars = sum(e - s for s, e, ok in found if ok)
        total_chars = sum(e - s for s, e, _ in found) or 1
        repeated = len(passage) < 200 and keys[_template_key(passage)] >= 3
        prose = prose_chars >= 0.75 * total_chars and not repeated
        passages.append(Passage(doc.id, p_start, p_end, passage, prose))
        for s, e, _ in found:
            sentence_text = text[s:e]
            citable = prose and len(_WORD.findall(sentence_text)) >= 2
            citable = citable and (doc.layout is None or doc.layout.citable_at(s))
            sentence = Sentence(doc.id, s, e, sentence_text, p_start, p_end, citable)
            if doc.layout is not None:
                located = doc.layout
                sentence = dataclasses.replace(
                    sentence, pages=located.pages(s, e), boxes=located.boxes(s, e), heading=located.heading_at(s)
                )
            sentences.append(sentence)
    return passages, sentences


def document_title(doc: Document, passages: list[Passage]) -> str:
    """The document's title: the one its file declares, else a first passage that is one unpunctuated line."""
    if doc.title:
        return doc.title
    if passages:
        first = passages[0].text
        stem = first.rstrip(_CLOSERS)
        if "\n" not in first and stem and stem[-1] not in _TERMINAL and len(first) <= 200:
            return first.lstrip("# ").strip()
    return ""
