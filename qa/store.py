"""The index on disk: versioned folders, checksums, atomic switch-over.

Layout of an index folder::

    index/
      CURRENT              name of the live version folder (replaced atomically)
      index.lock           held while a build runs
      v-<version>/
        manifest.json      Manifest: model, settings, search index, source and file checksums
        documents.json     document columns: id, sha256, encoding, title
        documents.utf8      every document's text, UTF-8, one after the other
        document_offsets.npy  document row -> byte offset in documents.utf8 (and the end)
        sentences/*.npy    sentence columns (row i = sentence id i): doc row, start,
                           end, passage_start, passage_end, citable, extra; and
                           document_first (document row -> its first sentence row)
        sentence_extra.jsonl  pages, boxes and heading of the sentences that have them
        vectors.faiss      the index searched first: IndexFlatIP of unit vectors
                           (several per sentence), or IVF for large corpora (qa.ann)
        vectors.npy        with IVF only: the vectors themselves (float16), for exact scores
        centrality.npy     vector row -> cosine with the corpus centroid
        vector_sentence.npy  row -> sentence id (int32)
        vector_keys.npy    row -> content key (model + embedded text), for reuse
        bm25/              bm25s arrays (.npy) and vocabulary (JSON)

Everything is read memory-mapped or on demand, never parsed row by row, so
loading takes the same time for 1,000 sentences or 1,000,000 (docs/benchmarks.md "Scale").

A build writes a ``.tmp-*`` folder, renames it to ``v-<version>`` and then
replaces ``CURRENT``; a reader either sees the old version or the new one.

The index deletes only what it created: ``.qa-index`` in the root marks the
folder as an index (written by the first build; a folder with ``CURRENT`` or a
``v-*/manifest.json`` made by an earlier release counts too), a ``.tmp-*``
folder is removed only when it holds the ``.qa-build`` marker a build writes
first, and a ``v-*`` folder only when its name is a build's
(``v-YYYYMMDDTHHMMSS-xxxxxxxx``) and it holds a manifest. A build refuses a
non-empty folder that is not an index.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import hashlib
import json
import logging
import mmap
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np

from qa.sparse import SparseIndex
from qa.types import Box, IndexBusyError, IndexStateError, Manifest, Sentence

log = logging.getLogger(__name__)

# 2: sentences carry pages, boxes and heading paths; 3: columns and memory-mapped arrays, IVF search when large
FORMAT_VERSION = 3
SENTENCE_COLUMNS = ("doc", "start", "end", "passage_start", "passage_end", "citable", "extra", "document_first")
LARGE_FILE = 64 << 20  # bytes: a larger file is checked at load by a sampled fingerprint, not a full sha256
SAMPLE_BLOCKS = 64
EXACT_DTYPE = np.float16  # vectors kept beside an approximate index: half the memory (docs/benchmarks.md "Scale")
CURRENT = "CURRENT"
LOCK = "index.lock"
MARKER = ".qa-index"  # in the index root: this folder is an index
BUILD_MARKER = ".qa-build"  # in a temp folder: a build made it
_VERSION_NAME = re.compile(r"v-\d{8}T\d{6}-[0-9a-f]{8}")
_CURRENT_TMP = re.compile(rf"\.{CURRENT}\.\d+\.tmp")
LOCK_TIMEOUT = 600.0  # seconds; $QA_LOCK_TIMEOUT overrides


class IndexFormatError(IndexStateError):
    """The index was written by an earlier release in another format: rebuild it."""


def lock_timeout() -> float:
    """Seconds a build waits for another build's lock: ``$QA_LOCK_TIMEOUT`` or 600."""
    raw = os.environ.get("QA_LOCK_TIMEOUT", "")
    try:
        return float(raw) if raw.strip() else LOCK_TIMEOUT
    except ValueError:
        raise IndexBusyError(f"QA_LOCK_TIMEOUT must be a number of seconds; got {raw!r}") from None


@dataclass(frozen=True)
class StoredDocument:
    id: str
    sha256: str
    encoding: str
    title: str
    text: str


class DocumentTable(Mapping[str, StoredDocument]):
    """Document id -> :class:`StoredDocument`, each text read from one memory-mapped file when asked for.

    Ids, checksums and titles are small and held in memory; the texts stay on
    disk (``documents.utf8``, UTF-8, ``document_offsets.npy`` byte offsets), so
    a corpus of any size loads in the time it takes to read its ids.
    """

    def __init__(self, columns: dict[str, list[str]], blob: bytes | mmap.mmap, offsets: np.ndarray) -> None:
        self.ids: list[str] = columns["id"]
        self.sha256s: list[str] = columns["sha256"]
        self._encodings, self._titles = columns["encoding"], columns["title"]
        self._blob, self._offsets = blob, offsets
        self._position = {d: i for i, d in enumerate(self.ids)}
        if len(self._position) != len(self.ids) or len(offsets) != len(self.ids) + 1:
            raise ValueError("document ids, titles and text offsets differ in number")
        # Sentences and rendering ask for the same few documents again and again.
        self.text = functools.lru_cache(maxsize=256)(self._text)

    def _text(self, position: int) -> str:
        return bytes(self._blob[int(self._offsets[position]) : int(self._offsets[position + 1])]).decode("utf-8")

    def position(self, doc_id: str) -> int | None:
        """The document's row (its sentences' ``doc`` column value), or None."""
        return self._position.get(doc_id)

    def __getitem__(self, doc_id: str) -> StoredDocument:
        i = self._position[doc_id]
        return StoredDocument(doc_id, self.sha256s[i], self._encodings[i], self._titles[i], self.text(i))

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._position

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self.ids)


class SentenceTable(Sequence[Sentence]):
    """The index's sentences as memory-mapped columns; ``table[i]`` makes the :class:`Sentence` of row i.

    Fixed-width fields are ``.npy`` columns; a sentence's text is its
    document's text between ``start`` and ``end`` (so ``doc_text[start:end] ==
    text`` by construction); pages, boxes and heading, which few sentences
    have, are JSON lines in ``sentence_extra.jsonl`` found by byte offset.
    """

    def __init__(self, columns: dict[str, np.ndarray], extra: bytes | mmap.mmap, documents: DocumentTable) -> None:
        self._doc, self._start, self._end = columns["doc"], columns["start"], columns["end"]
        self._pstart, self._pend = columns["passage_start"], columns["passage_end"]
        self._citable, self._extra_at = columns["citable"], columns["extra"]
        self._first = columns["document_first"]  # document row -> its first sentence row (and the end)
        self._extra, self._documents = extra, documents
        n = len(self._doc)
        if any(len(c) != n for c in (self._start, self._end, self._pstart, self._pend, self._citable, self._extra_at)):
            raise ValueError("sentence columns differ in length")
        if len(self._first) != len(documents) + 1 or (n and int(self._first[-1]) != n):
            raise ValueError("sentence columns and documents differ")

    def __len__(self) -> int:
        return len(self._doc)

    @overload
    def __getitem__(self, i: int) -> Sentence: ...
    @overload
    def __getitem__(self, i: slice) -> list[Sentence]: ...
    def __getitem__(self, i: int | slice) -> Sentence | list[Sentence]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"sentence {i} is out of range")
        d, start, end = int(self._doc[i]), int(self._start[i]), int(self._end[i])
        return Sentence(
            self._documents.ids[d],
            start,
            end,
            self._documents.text(d)[start:end],
            int(self._pstart[i]),
            int(self._pend[i]),
            bool(self._citable[i]),
            *self._located(int(self._extra_at[i])),
        )

    def _located(self, at: int) -> tuple[tuple[int, ...], tuple[Box, ...], str | None]:
        """(pages, boxes, heading) from the side file, for a sentence that has them (``at`` >= 0)."""
        if at < 0:
            return (), (), None
        row = json.loads(bytes(self._extra[at : self._extra.find(b"\n", at)]))
        boxes = tuple(tuple(b) for b in row.get("boxes", ()))
        return tuple(row.get("pages", ())), boxes, row.get("heading")  # type: ignore[return-value]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def rows_of(self, doc_id: str) -> range:
        """The rows of one document's sentences (they are stored document by document)."""
        d = self._documents.position(doc_id)
        return range(0) if d is None else range(int(self._first[d]), int(self._first[d + 1]))

    def of_document(self, doc_id: str) -> list[Sentence]:
        """One document's sentences, read column slice by column slice (a rebuild asks for every document)."""
        rows = self.rows_of(doc_id)
        if not rows:
            return []
        a, b = rows.start, rows.stop
        text = self._documents.text(int(self._doc[a]))
        columns = (self._start, self._end, self._pstart, self._pend, self._citable, self._extra_at)
        starts, ends, pstarts, pends, citable, extra = (c[a:b].tolist() for c in columns)
        return [
            Sentence(doc_id, s, e, text[s:e], ps, pe, c, *self._located(x))
            for s, e, ps, pe, c, x in zip(starts, ends, pstarts, pends, citable, extra, strict=True)
        ]

    def find(self, doc_id: str, start: int) -> int | None:
        """The row of the sentence of ``doc_id`` that starts at ``start``, or None."""
        rows = self.rows_of(doc_id)
        if not rows:
            return None
        starts = self._start[rows.start : rows.stop]
        j = int(np.searchsorted(starts, start))
        return rows.start + j if j < len(starts) and int(starts[j]) == start else None

    def same_passage(self, i: int, j: int) -> bool:
        return bool(self._doc[i] == self._doc[j] and self._pstart[i] == self._pstart[j])

    def citable(self) -> np.ndarray:
        return np.asarray(self._citable)


@dataclass(frozen=True)
class IndexData:
    """Everything a loaded index holds, read-only once built (arrays memory-mapped, not writeable)."""

    folder: Path
    manifest: Manifest
    documents: DocumentTable
    sentences: SentenceTable
    vectors: Any  # faiss index searched first: IndexFlatIP (exact) or IVF (approximate, see qa.ann)
    matrix: np.ndarray  # (vectors, dimension): the vectors themselves, for exact scores of candidates
    centrality: np.ndarray  # per vector: cosine with the corpus centroid, computed at build
    vector_sentence: np.ndarray
    vector_keys: np.ndarray  # row -> content key (32 hex digits as bytes), for reuse
    sparse: SparseIndex
    sparse_rows: np.ndarray  # BM25 row -> sentence id


@dataclass(frozen=True)
class StoredVectors:
    """Only the vectors of an index and their content keys: what a build reuses."""

    manifest: Manifest
    matrix: np.ndarray
    vector_keys: np.ndarray


def sha256_file(path: str | os.PathLike[str]) -> str:
    """sha256 of a regular file's bytes; OSError ("not a regular file") for a pipe, socket or device.

    The file is opened without blocking, so a named pipe put in a file's place
    raises instead of waiting for a writer forever.
    """
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with open(fd, "rb") as f:  # closes fd on every path, the not-a-regular-file one included
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", os.fspath(path))
        os.set_blocking(fd, True)
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sample_digest(path: Path) -> str:
    """A fast fingerprint of a large file: its size and sha256 of 64 spread 64 KiB blocks, head and tail.

    It finds a truncated, extended or overwritten file in milliseconds; a
    single flipped bit between blocks is only found by the full checksum
    (``verify_files(..., full=True)``, ``qa index status --full-check``).
    """
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    block = 1 << 16
    with path.open("rb") as f:
        for k in range(SAMPLE_BLOCKS + 1):
            f.seek(max(0, min(size - block, (size - block) * k // SAMPLE_BLOCKS)))
            digest.update(f.read(block))
    return f"sample:{digest.hexdigest()}"


def current_folder(index: Path) -> Path | None:
    """The live version folder, or None when no index has been built."""
    try:
        name = (index / CURRENT).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise IndexStateError(f"cannot read {index / CURRENT}: {exc.strerror}") from exc
    folder = index / name
    if not name.startswith("v-") or "/" in name or not folder.is_dir():
        raise IndexStateError(f"{index / CURRENT} names {name!r}, which is not an index version folder")
    return folder


def read_manifest(folder: Path, *, any_format: bool = False) -> Manifest:
    """The folder's manifest; IndexFormatError when an earlier release wrote it (unless ``any_format``)."""
    path = folder / "manifest.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        manifest = Manifest.from_dict(data)
    except FileNotFoundError as exc:
        raise IndexStateError(f"{path} is missing") from exc
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise IndexStateError(f"{path} is unreadable or corrupted: {exc}") from exc
    if manifest.format_version != FORMAT_VERSION and not any_format:
        raise IndexFormatError(
            f"{path} has format version {manifest.format_version}; this program reads {FORMAT_VERSION}"
        )
    return manifest


def verify_files(folder: Path, manifest: Manifest, *, full: bool = False) -> None:
    """Raise IndexStateError naming the first index file whose checksum differs.

    Files over LARGE_FILE bytes are checked by their sampled fingerprint
    unless ``full``: sha256 of gigabytes would cost seconds at every load.
    """
    for name, expected in manifest.files.items():
        path = folder / name
        sampled = manifest.samples.get(name) if not full else None
        try:
            actual = sample_digest(path) if sampled else sha256_file(path)
        except OSError as exc:
            raise IndexStateError(f"index file {path} is unreadable: {exc.strerror}") from exc
        if actual != (sampled or expected):
            raise IndexStateError(f"index file {path} is corrupted (checksum mismatch)")


def file_stamps(folder: Path, manifest: Manifest) -> dict[str, tuple[int, int, int]]:
    """(size, mtime in ns, inode) of each index file: what changes when a file is rewritten or truncated.

    A file that cannot be stat'ed gets (-1, -1, -1).
    """
    stamps: dict[str, tuple[int, int, int]] = {}
    for name in manifest.files:
        try:
            st = os.stat(folder / name)
            stamps[name] = (st.st_size, st.st_mtime_ns, st.st_ino)
        except OSError:
            stamps[name] = (-1, -1, -1)
    return stamps


def _read_only_map(path: Path) -> bytes | mmap.mmap:
    with path.open("rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return b""  # mmap refuses an empty file
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def _array(path: Path) -> np.ndarray:
    # A plain ndarray view of the read-only map: np.memmap's own indexing costs microseconds a call.
    return np.load(path, mmap_mode="r", allow_pickle=False).view(np.ndarray)


def load_folder(folder: Path, *, verify: bool = True) -> IndexData:
    """Load one version folder; IndexStateError when anything is wrong with it.

    Nothing is parsed row by row: columns and vectors are memory-mapped
    read-only (pages shared between processes), documents read when asked for.
    """
    import faiss

    from qa import ann

    manifest = read_manifest(folder)
    if verify:
        verify_files(folder, manifest)
    try:
        doc_columns = json.loads((folder / "documents.json").read_text(encoding="utf-8"))
        documents = DocumentTable(
            doc_columns, _read_only_map(folder / "documents.utf8"), _array(folder / "document_offsets.npy")
        )
        columns = {name: _array(folder / "sentences" / f"{name}.npy") for name in SENTENCE_COLUMNS}
        sentences = SentenceTable(columns, _read_only_map(folder / "sentence_extra.jsonl"), documents)
        # Memory-mapped, read-only: loads in milliseconds, and processes serving one index share its pages.
        vectors: Any = faiss.read_index(str(folder / "vectors.faiss"), faiss.IO_FLAG_MMAP_IFC)
        if (folder / "vectors.npy").exists():
            matrix = _array(folder / "vectors.npy")
        else:  # an exact index holds the vectors itself: a read-only view of FAISS's storage
            n, d = vectors.ntotal, vectors.d
            matrix = faiss.rev_swig_ptr(vectors.get_xb(), n * d).reshape(n, d) if n else np.zeros((0, d), np.float32)
            matrix.flags.writeable = False
        ann.prepare(vectors, manifest.search)
        centrality = _array(folder / "centrality.npy")
        vector_sentence = _array(folder / "vector_sentence.npy")
        vector_keys = _array(folder / "vector_keys.npy")
        sparse = SparseIndex.load(folder / "bm25")
        sparse_rows = _array(folder / "sparse_rows.npy")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:
        raise IndexStateError(f"index in {folder} is unreadable or corrupted: {exc}") from exc
    n = vectors.ntotal
    if not (
        n == len(vector_sentence) == len(vector_keys) == len(matrix) == len(centrality)
        and len(sentences) == manifest.sentences
        and len(documents) == manifest.documents
    ):
        raise IndexStateError(f"index in {folder} is inconsistent (counts differ from its manifest)")
    return IndexData(
        folder, manifest, documents, sentences, vectors, matrix, centrality, vector_sentence, vector_keys, sparse,
        sparse_rows,
    )  # fmt: skip


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def load_previous_format(folder: Path, manifest: Manifest) -> IndexData:
    """A format-2 index, parsed into memory: what the rebuild into this format reuses (splits and vectors).

    Only a build reads it; answering never does (``load_folder`` refuses it).
    """
    import faiss

    if manifest.format_version != 2:
        raise IndexFormatError(f"index in {folder} has format version {manifest.format_version}; not reusable")
    verify_files(folder, manifest)
    try:
        docs = list(_read_jsonl(folder / "documents.jsonl"))
        texts = [d["text"].encode("utf-8") for d in docs]
        offsets = np.zeros(len(docs) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(t) for t in texts])
        columns = {name: [d[name] for d in docs] for name in ("id", "sha256", "encoding", "title")}
        documents = DocumentTable(columns, b"".join(texts), offsets)
        rows = list(_read_jsonl(folder / "sentences.jsonl"))
        doc = np.array([documents.position(r["doc"]) for r in rows], dtype=np.int32)
        extra, extra_at = bytearray(), np.full(len(rows), -1, dtype=np.int64)
        for i, r in enumerate(rows):
            located = {k: r[k] for k in ("pages", "boxes", "heading") if r.get(k)}
            if located:
                extra_at[i] = len(extra)
                extra += json.dumps(located, ensure_ascii=False).encode("utf-8") + b"\n"
        offsets_of = ("start", "end", "passage_start", "passage_end")
        sentence_columns: dict[str, np.ndarray] = {
            "doc": doc,
            **{k: np.array([r[k] for r in rows], dtype=np.int64) for k in offsets_of},
            "citable": np.array([r["citable"] for r in rows], dtype=np.bool_),
            "extra": extra_at,
            "document_first": np.searchsorted(doc, np.arange(len(docs) + 1)).astype(np.int64),
        }
        if len(doc) and np.any(np.diff(doc) < 0):
            raise ValueError("sentences are not stored document by document")
        sentences = SentenceTable(sentence_columns, bytes(extra), documents)
        flat: Any = faiss.read_index(str(folder / "vectors.faiss"))
        matrix = flat.reconstruct_n(0, flat.ntotal) if flat.ntotal else np.zeros((0, flat.d), np.float32)
        keys = np.array(json.loads((folder / "vector_keys.json").read_text(encoding="utf-8")), dtype="S32")
        data = IndexData(
            folder, manifest, documents, sentences, flat, matrix, centrality_of(matrix),
            np.load(folder / "vector_sentence.npy", allow_pickle=False), keys.reshape(-1),
            SparseIndex.load(folder / "bm25"), np.load(folder / "sparse_rows.npy", allow_pickle=False),
        )  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:
        raise IndexStateError(f"index in {folder} is unreadable or corrupted: {exc}") from exc
    if len(matrix) != len(keys) or len(sentences) != manifest.sentences:
        raise IndexStateError(f"index in {folder} is inconsistent (counts differ from its manifest)")
    return data


def load_vectors(folder: Path, manifest: Manifest) -> StoredVectors:
    """Load just the vectors and their keys, verifying only those files.

    Reads the previous format too (a FAISS IndexFlatIP and ``vector_keys.json``),
    so an index built by the earlier release is rebuilt without embedding again.
    """
    import faiss

    legacy = manifest.format_version < 3
    wanted = ("vectors.faiss", "vector_keys.json") if legacy else ("vectors.npy", "vectors.faiss", "vector_keys.npy")
    names = [n for n in wanted if n in manifest.files]
    verify_files(folder, dataclasses.replace(manifest, files={n: manifest.files[n] for n in names}))
    try:
        if legacy:
            flat = faiss.read_index(str(folder / "vectors.faiss"))
            matrix = flat.reconstruct_n(0, flat.ntotal) if flat.ntotal else np.zeros((0, flat.d), np.float32)
            keys = np.array(json.loads((folder / "vector_keys.json").read_text(encoding="utf-8")), dtype="S32")
        else:
            if "vectors.npy" in names:
                matrix = _array(folder / "vectors.npy")
            else:
                flat = faiss.read_index(str(folder / "vectors.faiss"))
                matrix = flat.reconstruct_n(0, flat.ntotal) if flat.ntotal else np.zeros((0, flat.d), np.float32)
            keys = _array(folder / "vector_keys.npy")
    except (OSError, ValueError, RuntimeError) as exc:
        raise IndexStateError(f"index in {folder} is unreadable or corrupted: {exc}") from exc
    if len(matrix) != len(keys):
        raise IndexStateError(f"index in {folder} is inconsistent (vectors and keys differ in number)")
    return StoredVectors(manifest, matrix, keys.reshape(-1))


def write_folder(
    index: Path,
    manifest: Manifest,
    documents: Sequence[StoredDocument],
    sentences: Sequence[Sentence],
    vectors: np.ndarray,
    vector_sentence: np.ndarray,
    vector_keys: Sequence[str],
    sparse: SparseIndex,
    sparse_rows: np.ndarray,
    *,
    search: Any = None,
    started: float | None = None,
) -> Manifest:
    """Write a new version folder and make it current, atomically.

    ``search`` is the FAISS index to search (qa.ann.build); None writes an
    exact IndexFlatIP of ``vectors``. Returns the manifest with the checksums
    of the files written. With ``started`` (a ``time.perf_counter()`` value),
    the build report's ``seconds`` is set just before the manifest is written,
    so it counts the writing of the other files.
    """
    import faiss

    try:
        claim(index)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=index))
    except OSError as exc:
        raise IndexStateError(f"cannot write the index folder {index}: {exc.strerror or exc}") from exc
    try:
        (tmp / BUILD_MARKER).write_text("made by a qa index build\n", encoding="utf-8")
        _write_documents(tmp, documents)
        _write_sentences(tmp, documents, sentences)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, manifest.dimension)
        if search is None:
            search = faiss.IndexFlatIP(manifest.dimension)
            if len(vectors):
                search.add(vectors)
        else:  # an approximate index keeps codes, not the vectors: those are kept beside it
            np.save(tmp / "vectors.npy", vectors.astype(EXACT_DTYPE), allow_pickle=False)
        faiss.write_index(search, str(tmp / "vectors.faiss"))
        np.save(tmp / "centrality.npy", centrality_of(vectors), allow_pickle=False)
        np.save(tmp / "vector_sentence.npy", vector_sentence.astype(np.int32), allow_pickle=False)
        np.save(tmp / "vector_keys.npy", np.array(vector_keys, dtype="S32").reshape(-1), allow_pickle=False)
        sparse.save(tmp / "bm25")
        np.save(tmp / "sparse_rows.npy", sparse_rows.astype(np.int32), allow_pickle=False)
        paths = [p for p in sorted(tmp.rglob("*")) if p.is_file() and p.name != BUILD_MARKER]
        # the marker stays: a killed build is found by it
        files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in paths}
        samples = {p.relative_to(tmp).as_posix(): sample_digest(p) for p in paths if p.stat().st_size > LARGE_FILE}
        manifest = dataclasses.replace(manifest, files=files, samples=samples)
        if started is not None:
            manifest = dataclasses.replace(
                manifest, build={**manifest.build, "seconds": round(time.perf_counter() - started, 3)}
            )
        (tmp / "manifest.json").write_text(json.dumps(manifest.to_dict(), indent=2), encoding="utf-8")
        _fsync_tree(tmp)
        final = index / f"v-{manifest.version}"
        os.rename(tmp, final)
        _replace_text(index / CURRENT, final.name)
    except OSError as exc:  # disk full, permissions: the previous version stays live
        shutil.rmtree(tmp, ignore_errors=True)
        raise IndexStateError(f"cannot write the index in {index}: {exc.strerror or exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def centrality_of(vectors: np.ndarray) -> np.ndarray:
    """Each vector's cosine with the corpus centroid (docs/design.md "Retrieval settings": centrality)."""
    if not len(vectors):
        return np.zeros(0, dtype=np.float32)
    centroid = vectors.mean(axis=0)
    centroid /= max(float(np.linalg.norm(centroid)), 1e-9)
    return (vectors @ centroid).astype(np.float32)


def _write_documents(tmp: Path, documents: Sequence[StoredDocument]) -> None:
    offsets = np.zeros(len(documents) + 1, dtype=np.int64)
    # Not ".txt": an index folder inside its corpus would index its own copy of the texts.
    with (tmp / "documents.utf8").open("wb") as f:
        for i, d in enumerate(documents):
            offsets[i + 1] = offsets[i] + f.write(d.text.encode("utf-8"))
    np.save(tmp / "document_offsets.npy", offsets, allow_pickle=False)
    columns = {
        "id": [d.id for d in documents], "sha256": [d.sha256 for d in documents],
        "encoding": [d.encoding for d in documents], "title": [d.title for d in documents],
    }  # fmt: skip
    (tmp / "documents.json").write_text(json.dumps(columns, ensure_ascii=False), encoding="utf-8")


def _write_sentences(tmp: Path, documents: Sequence[StoredDocument], sentences: Sequence[Sentence]) -> None:
    position = {d.id: i for i, d in enumerate(documents)}
    n = len(sentences)
    doc = np.fromiter((position[s.doc] for s in sentences), dtype=np.int32, count=n)
    if n and np.any(np.diff(doc) < 0):
        raise ValueError("sentences must be stored document by document, in document order")
    columns: dict[str, np.ndarray] = {
        "doc": doc,
        "start": np.fromiter((s.start for s in sentences), dtype=np.int64, count=n),
        "end": np.fromiter((s.end for s in sentences), dtype=np.int64, count=n),
        "passage_start": np.fromiter((s.passage_start for s in sentences), dtype=np.int64, count=n),
        "passage_end": np.fromiter((s.passage_end for s in sentences), dtype=np.int64, count=n),
        "citable": np.fromiter((s.citable for s in sentences), dtype=np.bool_, count=n),
        "document_first": np.searchsorted(doc, np.arange(len(documents) + 1)).astype(np.int64),
    }
    extra_at = np.full(n, -1, dtype=np.int64)
    with (tmp / "sentence_extra.jsonl").open("wb") as f:
        at = 0
        for i, s in enumerate(sentences):
            row: dict[str, Any] = {}
            if s.pages:
                row["pages"], row["boxes"] = list(s.pages), [list(b) for b in s.boxes]
            if s.heading:
                row["heading"] = s.heading
            if row:
                extra_at[i] = at
                at += f.write(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
    columns["extra"] = extra_at
    (tmp / "sentences").mkdir()
    for name in SENTENCE_COLUMNS:
        np.save(tmp / "sentences" / f"{name}.npy", columns[name], allow_pickle=False)


def prune(index: Path, keep: int = 2) -> None:
    """Remove what killed builds left (temp folders and files) and old version folders.

    Keeps the live version and the newest others up to ``keep`` in all, so a
    process still loading the previous version finds it. Only call with the
    build lock held.
    """
    try:
        live = current_folder(index)
    except IndexStateError as exc:  # a broken CURRENT: the build about to run replaces it
        log.warning("%s; keeping every version folder", exc)
        live, keep = None, 1 << 30
    for tmp in index.glob(".tmp-*"):
        if (tmp / BUILD_MARKER).is_file() and not tmp.is_symlink():
            log.info("removing unfinished build %s", tmp)
            shutil.rmtree(tmp, ignore_errors=True)
    for tmp in index.glob(f".{CURRENT}.*.tmp"):  # _replace_text killed before its rename
        if _CURRENT_TMP.fullmatch(tmp.name) and tmp.is_file():
            tmp.unlink(missing_ok=True)
    # Version names start with the build time, so name order is build order
    # (a folder's mtime is not: renaming it into place does not touch it).
    versions = sorted(
        (p for p in index.glob("v-*") if p != live and _is_version(p)), key=lambda p: p.name, reverse=True
    )
    for old in versions[max(keep - 1, 0) :]:
        log.info("removing old index version %s", old)
        shutil.rmtree(old, ignore_errors=True)


def _is_version(folder: Path) -> bool:
    """A version folder a build made: its name and a manifest (never a user's ``v-0001-backup``)."""
    return (
        _VERSION_NAME.fullmatch(folder.name) is not None
        and not folder.is_symlink()
        and (folder / "manifest.json").is_file()
    )


def is_index(index: Path) -> bool:
    """Whether ``index`` holds an index: the marker, or what an earlier release left (CURRENT, versions)."""
    if (index / MARKER).is_file() or (index / CURRENT).is_file():
        return True
    return any(_is_version(p) for p in index.glob("v-*"))


def claim(index: Path) -> None:
    """Make ``index`` an index folder, or refuse one that holds someone else's files.

    A missing or empty folder gets the marker; an index made by an earlier
    release gets it too. Anything else raises IndexStateError and nothing in it
    is touched.
    """
    if (index / MARKER).is_file():
        return
    if index.exists() and not index.is_dir():
        raise IndexStateError(f"cannot write the index folder {index}: it is a file; pick another --index folder")
    ours = {LOCK, MARKER}
    if index.is_dir() and not is_index(index) and any(p.name not in ours for p in index.iterdir()):
        raise IndexStateError(
            f"{index} is not empty and is not a qa index; refusing to build there, "
            "pick an empty or new folder for --index"
        )
    index.mkdir(parents=True, exist_ok=True)
    (index / MARKER).write_text(
        "This folder is a qa index. qa removes only the v-* and .tmp-* folders it created here.\n",
        encoding="utf-8",
    )


@contextlib.contextmanager
def build_lock(index: Path, timeout: float | None = None) -> Iterator[None]:
    """Hold the index's build lock; IndexBusyError after ``timeout`` seconds.

    The default timeout is ``$QA_LOCK_TIMEOUT`` (read at each call), else 600 s.
    """
    from filelock import FileLock, Timeout

    if timeout is None:
        timeout = lock_timeout()
    lock = FileLock(str(index / LOCK))
    try:
        index.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.warning(
                "waiting for another build of %s to finish (it holds %s; up to %.0f s)", index, index / LOCK, timeout
            )
            lock.acquire(timeout=timeout)
    except Timeout as exc:  # a TimeoutError, so an OSError: caught first
        raise IndexBusyError(
            f"another build of {index} has held {index / LOCK} for over {timeout:.0f} s; "
            "wait for it to finish (or remove the lock file if no build is running)"
        ) from exc
    except OSError as exc:
        raise IndexStateError(f"cannot write the index folder {index}: {exc.strerror or exc}") from exc
    try:
        yield
    finally:
        lock.release()


def _replace_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_tree(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            with p.open("rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
