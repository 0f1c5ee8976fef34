"""The engine's data types and errors.

Every span carries character offsets into its document's text exactly as
decoded, so ``document.text[span.start:span.end] == span.text`` always holds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from qa.layout import Box, Layout

# --- errors -------------------------------------------------------------------


class QAError(Exception):
    """Base class of every error the engine raises on purpose."""


class QuestionError(QAError, ValueError):
    """The question (or an argument next to it) is not one we can answer."""


class CorpusError(QAError):
    """The corpus folder is missing or holds nothing to index."""


class IndexStateError(QAError):
    """The index is missing, stale, corrupted or built by another format."""


class IndexBusyError(QAError):
    """Another process holds the index lock for longer than the timeout."""


# --- the corpus ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Document:
    """One source file, decoded. ``id`` is its path relative to the corpus."""

    id: str
    text: str
    sha256: str
    encoding: str = "utf-8"  # or the format a reader decoded: "pdf", "docx"
    layout: Layout | None = None  # where the text sits in the file (pages, boxes, headings)
    title: str = ""  # the title the file declares (PDF metadata, HTML <title>, Word properties)


@dataclass(frozen=True, slots=True)
class Passage:
    """A paragraph of a document (blank-line separated)."""

    doc: str
    start: int
    end: int
    text: str
    prose: bool = True  # False for titles, headings and page chrome


@dataclass(frozen=True, slots=True)
class Sentence:
    """A sentence of a passage; the unit the index stores and cites."""

    doc: str
    start: int
    end: int
    text: str
    passage_start: int
    passage_end: int
    citable: bool = True  # False: indexed for context only (titles, chrome)
    pages: tuple[int, ...] = ()  # PDF pages (from 1) the sentence lies on
    boxes: tuple[Box, ...] = ()  # its boxes on those pages, one per line piece
    heading: str | None = None  # heading path it sits under ("Chapter 3 > Claims")

    @property
    def page(self) -> int | None:
        return self.pages[0] if self.pages else None


# --- answers ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """A sentence that supports an answer, with where it sits in its document."""

    doc: str
    start: int
    end: int
    text: str
    score: float
    passage_start: int
    passage_end: int
    page: int | None = None  # first PDF page (from 1) of the sentence; None for other formats
    pages: tuple[int, ...] = ()  # every page it lies on (a sentence can cross a page break)
    heading: str | None = None  # heading path of its passage in Markdown, HTML, Word
    boxes: tuple[Box, ...] = ()  # (page, left, bottom, right, top) in PDF points, bottom-left origin

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["pages"] = list(self.pages)
        d["boxes"] = [list(b) for b in self.boxes]
        return d

    @classmethod
    def from_dict(cls, data: Any) -> Source:
        """The source in ``to_dict()``'s data; ValueError naming the first field that does not fit."""
        d = _fields(data, "a source", ("doc", str), ("text", str), ("start", int), ("end", int), ("score", float),
                    ("passage_start", int), ("passage_end", int))  # fmt: skip
        page = data.get("page")
        if page is not None and (isinstance(page, bool) or not isinstance(page, int)):
            raise ValueError("a source's page must be a whole number or null")
        heading = data.get("heading")
        if heading is not None and not isinstance(heading, str):
            raise ValueError("a source's heading must be text or null")
        pages, boxes = data.get("pages", []), data.get("boxes", [])
        if not isinstance(pages, list) or not all(type(p) is int for p in pages):
            raise ValueError("a source's pages must be a list of whole numbers")
        if not isinstance(boxes, list) or not all(
            isinstance(b, list) and len(b) == 5 and all(_is_number(v) for v in b) for b in boxes
        ):
            raise ValueError("a source's boxes must be lists of five numbers")
        return cls(**d, page=page, pages=tuple(pages), heading=heading,
                   boxes=tuple((int(b[0]), *(float(v) for v in b[1:])) for b in boxes))  # type: ignore[misc]  # fmt: skip

    @property
    def location(self) -> str:
        """Where a person finds it: ``report.pdf, page 3`` or ``guide.docx, Setup > Install``."""
        if self.pages:
            if len(self.pages) > 1:
                return f"{self.doc}, pages {self.pages[0]}–{self.pages[-1]}"
            return f"{self.doc}, page {self.pages[0]}"
        if self.heading:
            return f"{self.doc}, {self.heading}"
        return self.doc


@dataclass(frozen=True, slots=True)
class Phrase:
    """The answer itself: a phrase inside the cited sentence, ``document.text[start:end] == text``.

    ``score`` is the reader's probability for this phrase among the sentence's phrases.
    """

    text: str
    doc: str
    start: int
    end: int
    score: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Phrase:
        """The phrase in ``to_dict()``'s data; ValueError naming the first field that does not fit."""
        return cls(**_fields(data, "a phrase", ("text", str), ("doc", str), ("start", int), ("end", int),
                             ("score", float)))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Answer:
    """The reply to one question.

    ``text`` is what a person reads; ``sources`` are ranked best first. When
    ``abstained`` is true the sources do not answer the question and
    ``sources`` (if any) are only the closest, low-confidence matches.
    """

    question: str
    text: str
    abstained: bool
    sources: list[Source] = field(default_factory=list)
    confidence: float = 0.0
    index_version: str = ""
    phrase: Phrase | None = None  # the answer phrase inside sources[0]; None when abstained or unsure
    # The confidence in words (qa.confidence): "confident", "likely", "unsure" or "the sources don't say".
    confidence_label: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "text": self.text,
            "abstained": self.abstained,
            "confidence": self.confidence,
            "confidence_label": self.confidence_label,
            "phrase": self.phrase.to_dict() if self.phrase is not None else None,
            "index_version": self.index_version,
            "sources": [s.to_dict() for s in self.sources],
        }

    @classmethod
    def from_dict(cls, data: Any) -> Answer:
        """The answer in ``to_dict()``'s data (a saved chat, a client's copy); ValueError naming what does not fit.

        >>> a = Answer("Q?", "A. [1]", False, [Source("a.txt", 0, 2, "A.", 0.9, 0, 2)], 0.8)
        >>> Answer.from_dict(a.to_dict()) == a
        True
        """
        d = _fields(data, "an answer", ("question", str), ("text", str), ("abstained", bool),
                    ("confidence", float))  # fmt: skip
        sources = data.get("sources", [])
        if not isinstance(sources, list):
            raise ValueError("an answer's sources must be a list")
        phrase = data.get("phrase")
        version, label = data.get("index_version", ""), data.get("confidence_label", "")
        if not isinstance(version, str) or not isinstance(label, str):
            raise ValueError("an answer's index_version and confidence_label must be text")
        return cls(**d, sources=[Source.from_dict(s) for s in sources], index_version=version,
                   phrase=None if phrase is None else Phrase.from_dict(phrase), confidence_label=label)  # fmt: skip


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fields(data: Any, what: str, *fields: tuple[str, type]) -> dict[str, Any]:
    """``fields`` of ``data`` (a JSON object), each of its type (an int is a float too); ValueError otherwise."""
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a JSON object, not {type(data).__name__}")
    out: dict[str, Any] = {}
    for name, kind in fields:
        value = data.get(name)
        ok = _is_number(value) if kind is float else isinstance(value, kind) and (kind is bool) == (type(value) is bool)
        if not ok:
            raise ValueError(f"{what}'s {name} must be {kind.__name__}, not {type(value).__name__}")
        out[name] = float(value) if kind is float else value  # type: ignore[arg-type]
    return out


@dataclass(frozen=True, slots=True)
class Manifest:
    """What an index folder holds and how it was built (``manifest.json``)."""

    format_version: int
    version: str  # unique id of this build
    built_at: str  # ISO 8601, UTC
    model: str  # the model id a query must be embedded with
    dimension: int
    corpus: str  # absolute path of the corpus folder it was built from
    settings: dict[str, Any]  # splitter and embedding settings
    sources: dict[str, str]  # document id -> sha256 of the file's bytes
    files: dict[str, str]  # index file -> sha256, checked at load
    documents: int
    sentences: int
    vectors: int
    build: dict[str, Any] = field(default_factory=dict)  # what the build did
    # The encoder export that embedded the vectors (runtime, export id, ONNX sha256, max length, pooling):
    # a query is only ever embedded by this one.
    encoder: dict[str, Any] = field(default_factory=dict)
    # The vector search index (qa.ann): {"kind": "flat"} or IVF with its parameters and how they were chosen.
    search: dict[str, Any] = field(default_factory=dict)
    # Index file -> sampled fingerprint, for files too large to sha256 at every load (qa.store.sample_digest).
    samples: dict[str, str] = field(default_factory=dict)
    # Document id -> [size, mtime_ns, ctime_ns, inode] of the file whose sha256 ``sources`` holds, for
    # files settled when hashed: a new process finds them unchanged by stat, without reading them.
    stats: dict[str, list[int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        """The manifest in ``data`` (parsed JSON); ValueError naming the first field of the wrong type."""
        if not isinstance(data, dict):
            raise ValueError(f"a manifest is a JSON object, not {type(data).__name__}")
        known = {k: v for k, v in data.items() if k in _MANIFEST_SCHEMA}
        for name, kind in _MANIFEST_SCHEMA.items():
            if name not in known:
                if name in ("build", "encoder", "search", "samples", "stats"):  # older manifests lack them
                    continue
                raise ValueError(f"field {name!r} is missing")
            value = known[name]
            # bool is an int in Python, but never a valid count or version here
            if isinstance(value, bool) or not isinstance(value, kind):
                raise ValueError(f"field {name!r} is {type(value).__name__}, not {kind.__name__}")
        for name in ("sources", "files", "samples"):
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in known.get(name, {}).items()):
                raise ValueError(f"field {name!r} must map names to checksum strings")
        # Recorded stats only save reading a file: entries that are not four integers for a known
        # source (a damaged field, another release's layout) are dropped, and those files are hashed.
        known["stats"] = {
            d: v
            for d, v in known.get("stats", {}).items()
            if d in known["sources"] and isinstance(v, list) and len(v) == 4 and all(type(n) is int for n in v)
        }
        build = known.get("build", {})
        skipped = build.get("skipped", [])
        reasons = build.get("skipped_reasons", {})
        if not (isinstance(skipped, list) and all(isinstance(d, str) for d in skipped) and isinstance(reasons, dict)):
            raise ValueError("field 'build' has a malformed list of skipped files")
        export = known.get("encoder", {}).get("export")
        if export is not None and not isinstance(export, str):
            raise ValueError("field 'encoder' names its export with something that is not text")
        return cls(**known)


_MANIFEST_SCHEMA: dict[str, type] = {
    "format_version": int, "version": str, "built_at": str, "model": str, "dimension": int, "corpus": str,
    "settings": dict, "sources": dict, "files": dict, "documents": int, "sentences": int, "vectors": int,
    "build": dict, "encoder": dict, "search": dict, "samples": dict, "stats": dict,
}  # fmt: skip
