"""Build or refresh an index from a corpus folder, re-embedding only what changed."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from qa import ann, progress, store
from qa.corpus import SPLITTER, document_title, read_document, source_path, split_document, walk_corpus
from qa.embed import Encoder, default_model, get_encoder, threads
from qa.progress import eta
from qa.readers import Reader
from qa.readers.sandbox import ReaderSandbox
from qa.sparse import SparseIndex, abbreviations, expand_abbreviations
from qa.store import StoredDocument
from qa.types import CorpusError, IndexStateError, Manifest, QAError, Sentence

log = logging.getLogger(__name__)

# Each citable sentence gets one vector per view. "sentence" is the sentence
# alone; "window" prefixes the document title and the sentence before it in
# the passage, so a sentence that only makes sense in context ("The vehicle
# will be sold ...", "Utilising the tech giant's Azure ...") can still be
# found. Context comes from before only: that is where what a sentence refers
# to was said. See docs/design.md, "Retrieval settings".
EMBEDDING: dict[str, Any] = {"views": ["sentence", "window"], "before": 1, "after": 0, "title": True}


# What BM25 reads beside each sentence: bump when it changes, so indexes rebuild their BM25.
LEXICAL = {"abbreviations": 1}


def settings() -> dict[str, Any]:
    return {"splitter": SPLITTER, "embedding": EMBEDDING, "lexical": LEXICAL}


def bm25_texts(sentences: list[Sentence]) -> list[str]:
    """What BM25 indexes for each citable sentence, in order: its text, plus the long form of each
    abbreviation its document defines ("limited English proficiency (LEP)") that it uses unspelled."""
    out: list[str] = []
    for _, group in itertools.groupby(sentences, key=lambda s: s.doc):
        doc_sentences = list(group)
        defined = abbreviations([s.text for s in doc_sentences])
        out.extend(expand_abbreviations([s.text for s in doc_sentences if s.citable], defined))
    return out


@dataclass(frozen=True)
class SourceScan:
    """One walk of a corpus: each readable file's id, path, sha256 and stat, and the files skipped with why."""

    files: list[tuple[str, str, str, list[int] | None]]  # (doc id, path, sha256, stat; None: changed just now)
    skipped: dict[str, str]  # doc id -> reason


@dataclass(frozen=True)
class Status:
    """How an index compares with its corpus."""

    state: str  # "fresh", "stale", "missing" or "corrupted"
    reason: str = ""
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    manifest: Manifest | None = None
    # The corpus as this comparison walked and hashed it, for the build that follows (None: not walked).
    scan: SourceScan | None = field(default=None, repr=False, compare=False)

    @property
    def fresh(self) -> bool:
        return self.state == "fresh"


# (path, size, mtime_ns, ctime_ns, inode) -> sha256: a file whose stat is unchanged is not read again.
# The ctime is in the key, as in git: putting a file's mtime back (cp -p, touch -r) changes it.
_hashes: dict[tuple[str, int, int, int, int], str] = {}
_hashes_lock = threading.Lock()
_HASHES_KEPT = 200_000  # raised to twice the largest recorded corpus (see _recall)


def _hash_and_stat(path: str | os.PathLike[str], st: os.stat_result | None = None) -> tuple[str, list[int] | None]:
    """(sha256, [size, mtime_ns, ctime_ns, inode]); the stat is None for a file changed in the last seconds.

    ``st`` is the file's stat when the corpus walk has taken it already.
    """
    st = st or os.stat(path)
    # abspath, not resolve(): resolving every path costs more than hashing a small file (10k-file corpora);
    # the inode in the key already tells two files apart.
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    # A file changed within the last seconds could change again with the same
    # size and timestamps (coarse clocks): only remember settled files, as git does.
    settled = time.time() - max(st.st_mtime, st.st_ctime) > 2
    with _hashes_lock:
        known = _hashes.get(key)
    if known is None:
        known = store.sha256_file(path)
        if settled:
            _remember({key: known})
    return known, [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino] if settled else None


def _remember(hashes: dict[tuple[str, int, int, int, int], str]) -> None:
    with _hashes_lock:
        if len(_hashes) + len(hashes) > _HASHES_KEPT:
            _hashes.clear()
        _hashes.update(hashes)


_recalled: dict[str, str] = {}  # corpus -> the manifest version whose hashes were last remembered


def _recall(corpus: Path, manifest: Manifest) -> None:
    """Remember the hashes the manifest recorded for files whose stat it recorded too (another process's build)."""
    global _HASHES_KEPT
    if _recalled.get(str(corpus)) == manifest.version:
        return
    _recalled[str(corpus)] = manifest.version
    _HASHES_KEPT = max(_HASHES_KEPT, 2 * len(manifest.stats))  # a corpus bigger than the memo would never fit
    _remember(
        {
            (os.path.abspath(source_path(corpus, doc_id)), size, mtime, ctime, inode): manifest.sources[doc_id]
            for doc_id, (size, mtime, ctime, inode) in manifest.stats.items()  # only sources' (Manifest.from_dict)
        }
    )


def scan_corpus(corpus: Path) -> SourceScan:
    """Walk the corpus and hash each file (a file whose stat is unchanged is not read again)."""
    walk = walk_corpus(corpus)  # a file it skips (a pipe, too big, a link loop) is never opened
    files, skipped = [], dict(walk.skipped)
    for doc_id, path, st in walk.files:
        try:
            sha, stat = _hash_and_stat(path, st)
        except OSError as exc:
            log.warning("skipping %s: %s", doc_id, exc.strerror)
            skipped[doc_id] = exc.strerror or str(exc)
            continue
        files.append((doc_id, path, sha, stat))
    return SourceScan(files, skipped)


def index_status(
    corpus: str | os.PathLike[str],
    index: str | os.PathLike[str],
    *,
    model: str | None = None,
    verify: bool = True,
    full: bool = False,
) -> Status:
    """Compare the index with the corpus: fresh, stale (and which files), missing or corrupted.

    ``verify`` checks the index files' checksums (files over 64 MB by a sampled
    fingerprint; ``full`` reads their whole sha256).
    """
    index = Path(index)
    try:
        folder = store.current_folder(index)
        if folder is None:
            return Status("missing", f"no index has been built in {index}")
        manifest = store.read_manifest(folder)
        if verify:
            store.verify_files(folder, manifest, full=full)
    except store.IndexFormatError as exc:  # an earlier release's index: rebuilt, reusing its vectors
        return Status("stale", str(exc))
    except IndexStateError as exc:
        return Status("corrupted", str(exc))
    model = model or default_model()
    if manifest.model != model:
        return Status("stale", f"built with model {manifest.model!r}, configured {model!r}", manifest=manifest)
    try:
        export = get_encoder(model).export_id
    except QAError as exc:
        return Status("stale", f"cannot check the encoder: {exc}", manifest=manifest)
    if manifest.encoder.get("export") != export:
        built_by = manifest.encoder.get("export") or "sentence-transformers (torch)"
        return Status("stale", f"embedded by encoder {built_by}, configured {export}", manifest=manifest)
    if manifest.settings != settings():
        return Status("stale", "built with other splitter or embedding settings", manifest=manifest)
    _recall(Path(corpus), manifest)
    scan = scan_corpus(Path(corpus))
    current = {doc_id: sha for doc_id, _, sha, _ in scan.files}
    old = manifest.sources
    added = sorted(set(current) - set(old))
    removed = sorted(set(old) - set(current))
    changed = sorted(d for d in set(current) & set(old) if current[d] != old[d])
    if added or removed or changed:
        parts = [f"{len(x)} {name}" for x, name in ((added, "added"), (changed, "changed"), (removed, "removed")) if x]
        return Status("stale", "sources differ: " + ", ".join(parts), added, changed, removed, manifest, scan)
    return Status("fresh", "", manifest=manifest, scan=scan)


def _collapse(text: str) -> str:
    return " ".join(text.split())


def embedding_views(title: str, sentences: list[Sentence]) -> list[tuple[int, str]]:
    """``(sentence position, text to embed)`` for each view of each citable sentence."""
    views: list[tuple[int, str]] = []
    before, after = int(EMBEDDING["before"]), int(EMBEDDING["after"])
    for i, s in enumerate(sentences):
        if not s.citable:
            continue
        if "sentence" in EMBEDDING["views"]:
            views.append((i, _collapse(s.text)))
        if "window" in EMBEDDING["views"]:
            same = [
                j
                for j in range(max(0, i - before), min(len(sentences), i + after + 1))
                if sentences[j].passage_start == s.passage_start and sentences[j].citable
            ]
            parts = [sentences[j].text for j in same]
            if EMBEDDING["title"] and title:
                parts.insert(0, title + ".")
            views.append((i, _collapse(" ".join(parts))))
    return views


def _key(encoder: str, text: str) -> str:
    """Content key of an embedded text: the encoder export that embeds it, and the text."""
    return hashlib.sha256(f"{encoder}\x1f{text}".encode()).hexdigest()[:32]


def build_index(
    corpus: str | os.PathLike[str],
    index: str | os.PathLike[str],
    *,
    force: bool = False,
    model: str | None = None,
    steps: BuildSteps | None = None,
) -> Manifest:
    """Build the index for a corpus folder; a no-op when it is already fresh.

    Only sentences whose embedded text changed are embedded again; the rest
    reuse their stored vectors. ``force`` rebuilds even a fresh index (still
    reusing vectors when model and settings are unchanged). ``steps`` runs the
    reading and the embedding elsewhere (``qa.cluster.RaySteps``: on a Ray
    cluster); by default they run in this process.

    >>> build_index("corpus", "index").documents
    1
    """
    corpus, index = Path(corpus), Path(index)
    model = model or default_model()
    if not corpus.is_dir():
        raise CorpusError(f"corpus folder {str(corpus)!r} does not exist or is not a folder")
    started = time.perf_counter()
    try:
        store.claim(index)  # before the lock file: refuse a user's folder without writing into it
    except OSError as exc:
        raise IndexStateError(f"cannot write the index folder {index}: {exc.strerror or exc}") from exc
    with store.build_lock(index):
        store.prune(index)
        status = index_status(corpus, index, model=model)
        if status.fresh and not force and status.manifest:
            log.info("index %s is fresh; nothing to do", index)
            return _no_op(status.manifest, started)
        if status.state == "corrupted":
            log.warning("rebuilding %s: %s", index, status.reason)
        elif status.state != "missing":
            log.info("rebuilding %s: %s", index, status.reason or status.state)
        manifest = _build(corpus, index, model, status, started, steps)
        store.prune(index)
        return manifest


def _no_op(manifest: Manifest, started: float) -> Manifest:
    """The fresh index's manifest, its ``build`` report saying this call did nothing.

    (The manifest on disk keeps the report of the build that made it.)
    """
    skipped = list(manifest.build.get("skipped", []))
    report = {
        "noop": True, "added": 0, "changed": 0, "renamed": 0, "removed": 0,
        "unchanged": len(set(manifest.sources) - set(skipped)), "skipped": skipped,
        "skipped_reasons": dict(manifest.build.get("skipped_reasons", {})),
        "embedded": 0, "reused": 0, "sentences_embedded": 0, "sentences_reused": 0,
        "seconds": round(time.perf_counter() - started, 3),
    }  # fmt: skip
    return dataclasses.replace(manifest, build=report)


def _previous(index: Path, model: str, status: Status) -> store.IndexData | store.StoredVectors | None:
    """What the next build can reuse from the current index.

    The whole index when it loads (its checksums were just verified by
    ``index_status`` unless it is corrupted); when some file is corrupted, just
    its vectors if those files are intact, so a damaged sentence column does
    not cost re-embedding the corpus; the same for an index of the previous
    format. None when built by another model.
    """
    try:
        folder = store.current_folder(index)
        if folder is None:
            return None
        manifest = store.read_manifest(folder, any_format=True)
    except IndexStateError as exc:
        log.warning("not reusing the previous index: %s", exc)
        return None
    if manifest.model != model or manifest.encoder.get("export") != get_encoder(model).export_id:
        return None
    try:
        if manifest.format_version == store.FORMAT_VERSION:
            # index_status verified every checksum already, unless it found a corrupted file
            return store.load_folder(folder, verify=status.state == "corrupted")
        if manifest.format_version == 2:  # the previous release's: its splits and vectors are reused
            return store.load_previous_format(folder, manifest)
    except IndexStateError as exc:
        log.warning("not reusing the previous index's sentences: %s", exc)
    try:
        return store.load_vectors(folder, manifest)
    except IndexStateError as exc:
        log.warning("not reusing the previous index's vectors: %s", exc)
        return None


def _count_files(
    report: dict[str, Any], old_sources: dict[str, str], sources: dict[str, str], indexed: list[str]
) -> None:
    """Count indexed files as added, changed, renamed or unchanged, and the removed ones.

    A new name whose bytes equal those of a file gone since the last build is a rename.
    """
    gone = Counter(old_sources[d] for d in old_sources if d not in sources)
    for doc_id in indexed:
        if doc_id in old_sources:
            report["unchanged" if old_sources[doc_id] == sources[doc_id] else "changed"] += 1
        elif gone[sources[doc_id]] > 0:
            gone[sources[doc_id]] -= 1
            report["renamed"] += 1
        else:
            report["added"] += 1
    report["removed"] = sum(gone.values())


class _OldKeys:
    """The previous index's content keys, sorted once, on first use.

    The early embedder asks which new keys they hold (at a hand-over only);
    the build then asks at which rows. Both share the one sort.
    """

    def __init__(self, keys: np.ndarray | None) -> None:
        self._keys = np.asarray(keys).reshape(-1) if keys is not None else np.zeros(0, dtype="S32")
        self._order: np.ndarray | None = None
        self._sorted = self._keys

    def _sort(self) -> tuple[np.ndarray, np.ndarray]:
        if self._order is None:
            self._order = np.argsort(self._keys, kind="stable")
            self._sorted = self._keys[self._order]
        return self._order, self._sorted

    def holds(self, keys: np.ndarray) -> np.ndarray:
        """For each key, whether the previous index has a vector for it."""
        if not len(self._keys) or not len(keys):
            return np.zeros(len(keys), dtype=bool)
        _, sorted_old = self._sort()
        at = np.minimum(np.searchsorted(sorted_old, keys), len(sorted_old) - 1)
        return np.asarray(sorted_old[at] == keys)

    def rows(self, keys: np.ndarray) -> np.ndarray:
        """For each content key, a row of the previous index with that key, or -1.

        A key held by several new rows (a text repeated across documents) gets
        distinct old rows as long as the old index has as many, so an updated IVF
        index keeps every vector in place instead of adding copies again.
        """
        if not len(self._keys) or not len(keys):
            return np.full(len(keys), -1, dtype=np.int64)
        old_order, sorted_old = self._sort()
        lo = np.searchsorted(sorted_old, keys, side="left")
        hi = np.searchsorted(sorted_old, keys, side="right")
        # occurrence: 0 for the first new row with a key, 1 for the second, ...
        new_order = np.argsort(keys, kind="stable")
        sorted_new = keys[new_order]
        starts = np.flatnonzero(np.r_[True, sorted_new[1:] != sorted_new[:-1]])
        group_start = np.repeat(starts, np.diff(np.r_[starts, len(keys)]))
        occurrence = np.empty(len(keys), dtype=np.int64)
        occurrence[new_order] = np.arange(len(keys)) - group_start
        found = hi > lo
        pick = np.where(found, lo + np.minimum(occurrence, np.maximum(hi - lo - 1, 0)), 0)
        return np.where(found, old_order[pick], -1).astype(np.int64)


# While files are read and split (Python, one core), their new texts are embedded beside it on
# one thread, in chunks of this many; the rest on every core once the split is done.
_EARLY_CHUNK = 512


class _EarlyEmbedder:
    """Embeds the texts of files split anew on one thread while the main thread splits the rest.

    One chunk at a time: a chunk is handed over only when the last one is
    done, so what is left when the split ends goes to every core. Texts the
    previous index holds vectors for are left to be reused. On one core there
    is nothing to overlap, and it does nothing.
    """

    def __init__(self, encoder: Encoder, old_keys: _OldKeys, *, overlap: bool = True) -> None:
        self._encoder = encoder
        self._old_keys = old_keys
        self._pending: dict[str, str] = {}  # key -> text, not handed over yet
        self._handed: set[str] = set()
        self._jobs: list[tuple[list[str], Future[np.ndarray]]] = []
        overlap = overlap and threads() > 1
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qa-embed") if overlap else None

    def add(self, key: str, text: str) -> None:
        if self._pool is None or key in self._handed:
            return
        self._pending[key] = text
        if len(self._pending) < _EARLY_CHUNK or (self._jobs and not self._jobs[-1][1].done()):
            return
        candidates = list(self._pending)
        for candidate, stored in zip(candidates, self._old_keys.holds(np.array(candidates, dtype="S32")), strict=True):
            if stored:
                del self._pending[candidate]
        if len(self._pending) >= _EARLY_CHUNK:
            keys = list(itertools.islice(self._pending, _EARLY_CHUNK))
            texts = [self._pending.pop(k) for k in keys]
            self._handed.update(keys)
            self._jobs.append((keys, self._pool.submit(self._encoder.encode, texts, documents=True, workers=1)))

    def submitted(self) -> set[str]:
        """Keys handed over (embedded, or being embedded)."""
        return self._handed

    def results(self) -> dict[str, np.ndarray]:
        """The early vectors by key (waits for a chunk still running)."""
        vectors: dict[str, np.ndarray] = {}
        for keys, job in self._jobs:
            vectors.update(zip(keys, job.result(), strict=True))
        return vectors

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


SplitFile = tuple[StoredDocument, list[Sentence]] | str  # a file read and split, or why it was skipped


def split_file(doc_id: str, path: str, reader: Reader | None = None) -> SplitFile:
    """A new or changed corpus file read (by ``reader``, as ``read_document`` takes it) and split; else why not."""
    reasons: dict[str, str] = {}
    doc = read_document(doc_id, path, skipped=reasons, reader=reader)
    if doc is None:
        return reasons.get(doc_id) or "unreadable"
    passages, sentences = split_document(doc)
    return StoredDocument(doc.id, doc.sha256, doc.encoding, document_title(doc, passages), doc.text), sentences


class BuildSteps(Protocol):
    """Where a build's heavy work runs: reading and splitting new files, embedding new texts.

    The rest of a build (what to reuse, BM25, the search index, the manifest,
    the atomic switch-over) runs in the calling process whatever runs these.
    """

    def split(self, files: Sequence[tuple[str, str]]) -> Iterator[SplitFile]:
        """``split_file`` of each ``(doc_id, path)``, yielded in the order given."""
        ...

    def embed(self, texts: list[str], on_progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Unit float32 document vectors, a row per text, by the index's encoder export; counts texts done."""
        ...


class _LocalSteps:
    """Files read one after another in this process (bytes by ``reader``); texts embedded on every core."""

    def __init__(self, encoder: Encoder, reader: Reader) -> None:
        self.encoder, self.reader = encoder, reader

    def split(self, files: Sequence[tuple[str, str]]) -> Iterator[SplitFile]:
        return (split_file(doc_id, path, self.reader) for doc_id, path in files)  # lazily: early embedding beside

    def embed(self, texts: list[str], on_progress: Callable[[int], None] | None = None) -> np.ndarray:
        return self.encoder.encode(texts, documents=True, on_progress=on_progress)


def _build(
    corpus: Path, index: Path, model: str, status: Status, started: float, steps: BuildSteps | None = None
) -> Manifest:
    old = _previous(index, model, status)
    encoder = get_encoder(model)
    old_keys = _OldKeys(old.vector_keys if old is not None else None)
    early = _EarlyEmbedder(encoder, old_keys, overlap=steps is None)  # other steps bring their own cores
    sandbox = None
    if steps is None:  # read here: each file in a worker process, under a memory and a time budget
        sandbox = ReaderSandbox()
        steps = _LocalSteps(encoder, sandbox.read)
    try:
        scan = status.scan or scan_corpus(corpus)  # walked already unless the index could not be compared
        return _build_with(scan, corpus, index, model, old, old_keys, encoder, early, started, steps)
    finally:
        early.close()
        if sandbox is not None:
            sandbox.close()


@dataclasses.dataclass
class _Split:
    """A build's documents as read or reused: what gets embedded and written."""

    documents: list[StoredDocument] = dataclasses.field(default_factory=list)
    sentences: list[Sentence] = dataclasses.field(default_factory=list)
    views: list[tuple[int, str]] = dataclasses.field(default_factory=list)  # (sentence position, embedded text)
    keys: list[str] = dataclasses.field(default_factory=list)  # each view's content key
    sources: dict[str, str] = dataclasses.field(default_factory=dict)  # doc id -> file sha256
    stats: dict[str, list[int]] = dataclasses.field(default_factory=dict)  # doc id -> [size, mtime, ctime, inode]
    report: dict[str, Any] = dataclasses.field(default_factory=dict)


def _build_with(
    scan: SourceScan,
    corpus: Path,
    index: Path,
    model: str,
    old: store.IndexData | store.StoredVectors | None,
    old_keys: _OldKeys,
    encoder: Encoder,
    early: _EarlyEmbedder,
    started: float,
    steps: BuildSteps,
) -> Manifest:
    """Read (or reuse) every file, embed what is new, write the version: the three steps of a build."""
    split = _read_and_split(scan, old, encoder, early, steps)
    if not split.documents:
        raise CorpusError(f"corpus folder {str(corpus)!r} holds no readable documents (.txt, .md, .pdf, .html, .docx)")
    old_rows = old_keys.rows(np.array(split.keys, dtype="S32"))
    vectors, encoder_info = _vectors(split, old, old_rows, encoder, early, steps)
    manifest = _write(corpus, index, model, old, split, vectors, encoder_info, old_rows, started)
    log.info("built %s: %s", index, split.report)
    return manifest


def _read_and_split(
    scan: SourceScan,
    old: store.IndexData | store.StoredVectors | None,
    encoder: Encoder,
    early: _EarlyEmbedder,
    steps: BuildSteps,
) -> _Split:
    """Every corpus file, split; a file whose bytes the old index holds (here or under another name) is reused.

    First the files to reuse are found; the rest go to ``steps`` in one list
    to be read and split. Texts of files split just now go to ``early`` to be
    embedded while the next files are read.
    """
    old_data = old if isinstance(old, store.IndexData) else None
    same_split = old_data is not None and old_data.manifest.settings.get("splitter") == SPLITTER
    old_documents: Mapping[str, StoredDocument] = {}
    old_sha: dict[str, str] = {}  # old document id -> its file's sha256, for documents with sentences
    by_sha: dict[str, str] = {}  # file sha256 -> an old document id with those bytes (renames)
    if old_data is not None and same_split:
        old_documents = old_data.documents
        table, docs = old_data.sentences, old_data.documents
        # Columns, not objects: only the documents reused below become Sentence objects.
        old_sha = {d: sha for d, sha in zip(docs.ids, docs.sha256s, strict=True) if table.rows_of(d)}
        by_sha = {sha: d for d, sha in old_sha.items()}
    old_sources = old.manifest.sources if old is not None else {}

    split = _Split()
    report = split.report
    report.update({"added": 0, "changed": 0, "renamed": 0, "removed": 0, "unchanged": 0, "skipped": []})
    reasons: dict[str, str] = {}  # doc id -> why it was skipped, for the build report
    split_started = time.perf_counter()
    report["skipped"].extend(scan.skipped)
    reasons.update(scan.skipped)
    plan: list[tuple[str, str | None]] = []  # (doc id, the old document whose split it reuses, or None: read it)
    for doc_id, _, sha, stat in scan.files:
        # A file we skip is still recorded in ``sources`` so that the index is
        # fresh until it changes (otherwise it would look "added" forever).
        split.sources[doc_id] = sha
        if stat is not None:
            split.stats[doc_id] = stat
        plan.append((doc_id, doc_id if old_sha.get(doc_id) == sha else by_sha.get(sha)))
    paths = {doc_id: path for doc_id, path, _, _ in scan.files}
    read = steps.split([(doc_id, paths[doc_id]) for doc_id, source_id in plan if source_id is None])
    progress_at = time.monotonic() + 2.0
    reading = progress.Bar(len(plan), "reading files", "file")  # drawn only in a terminal (qa.progress)
    for n, (doc_id, source_id) in enumerate(plan, 1):
        reading.update()
        if time.monotonic() >= progress_at:  # a big corpus shows it is moving, file by file
            left = eta(split_started, n - 1, len(plan))
            log.info("reading %d/%d files: %s%s", n, len(plan), doc_id, f" ({left})" if left else "")
            progress_at = time.monotonic() + 2.0
        if source_id is not None:
            # Unchanged bytes (here or under the old name): reuse the split, not re-read it.
            previous = old_documents[source_id]
            stored = dataclasses.replace(previous, id=doc_id)
            assert old_data is not None  # by_sha and old_sha are empty without it
            doc_sentences = old_data.sentences.of_document(source_id)
            if source_id != doc_id:
                doc_sentences = [dataclasses.replace(s, doc=doc_id) for s in doc_sentences]
        else:
            result = next(read)
            if isinstance(result, str):
                report["skipped"].append(doc_id)
                reasons[doc_id] = result
                continue
            stored, doc_sentences = result
        offset = len(split.sentences)
        split.documents.append(stored)
        split.sentences.extend(doc_sentences)
        for i, text in embedding_views(stored.title, doc_sentences):
            split.views.append((offset + i, text))
            split.keys.append(_key(encoder.export_id, text))
            if source_id is None:  # split just now: where the split's time goes, and new texts come from
                early.add(split.keys[-1], text)
    reading.close()
    report["split_seconds"] = round(time.perf_counter() - split_started, 3)
    # A skipped file whose bytes did not change is not read again: its reason comes from the last build.
    old_reasons = old.manifest.build.get("skipped_reasons", {}) if old is not None else {}
    report["skipped"].sort()
    report["skipped_reasons"] = {d: reasons.get(d) or old_reasons.get(d) or "unreadable" for d in report["skipped"]}
    _count_files(report, old_sources, split.sources, [d.id for d in split.documents])
    return split


def _vectors(
    split: _Split,
    old: store.IndexData | store.StoredVectors | None,
    old_rows: np.ndarray,
    encoder: Encoder,
    early: _EarlyEmbedder,
    steps: BuildSteps,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Every view's vector: read from the old index when its key is there, else embedded (each text once)."""
    views, keys, report = split.views, split.keys, split.report
    todo = np.flatnonzero(old_rows < 0).tolist()  # embedded now; the rest reuse old_rows
    # Loading the model only to learn its dimension would cost a CLI rebuild seconds.
    dimension = old.manifest.dimension if old is not None and not todo else encoder.dimension
    encoder_info = old.manifest.encoder if old is not None and not todo else encoder.describe()
    vectors = np.zeros((len(views), dimension), dtype=np.float32)
    if old is not None and len(todo) < len(views):
        reused = np.flatnonzero(old_rows >= 0)
        order = np.argsort(old_rows[reused], kind="stable")  # read the memory-mapped rows in file order
        vectors[reused[order]] = np.asarray(old.matrix[old_rows[reused[order]]], dtype=np.float32)
    if todo:
        unique = list(dict.fromkeys(keys[i] for i in todo))  # the same text twice is embedded once
        text_of = {keys[i]: views[i][1] for i in todo}
        begun = early.submitted()
        rest = [k for k in unique if k not in begun]
        log.info("embedding %d texts (%d begun while reading the files)", len(unique), len(unique) - len(rest))
        embed_started = time.perf_counter()
        with progress.Bar(len(rest), "embedding texts", "text") as embedding:
            vectors_of_rest = steps.embed([text_of[k] for k in rest], on_progress=embedding.update)
        encoded = dict(zip(rest, vectors_of_rest, strict=True))
        encoded.update(early.results())
        report["embed_seconds"] = round(time.perf_counter() - embed_started, 3)  # after the split
        report["embedded_while_reading"] = len(unique) - len(rest)
        vectors[todo] = np.stack([encoded[keys[i]] for i in todo])
    report["embedded"] = len(todo)
    report["reused"] = len(views) - len(todo)
    touched = {views[i][0] for i in todo}
    report["sentences_embedded"] = len(touched)
    report["sentences_reused"] = len({pos for pos, _ in views}) - len(touched)
    return vectors, encoder_info


def _write(
    corpus: Path,
    index: Path,
    model: str,
    old: store.IndexData | store.StoredVectors | None,
    split: _Split,
    vectors: np.ndarray,
    encoder_info: dict[str, Any],
    old_rows: np.ndarray,
    started: float,
) -> Manifest:
    """BM25 and the search index over the new version, then its folder, written atomically."""
    old_data = old if isinstance(old, store.IndexData) else None
    report = split.report
    citable = np.array([i for i, s in enumerate(split.sentences) if s.citable], dtype=np.int32)
    bm25_started = time.perf_counter()
    sparse = SparseIndex.build(bm25_texts(split.sentences))
    report["bm25_seconds"] = round(time.perf_counter() - bm25_started, 3)
    previous_search = old_data.vectors if old_data is not None else None
    search_index, search = ann.build(
        vectors, previous_search, old_data.manifest.search if old_data is not None else None, old_rows
    )
    manifest = Manifest(
        format_version=store.FORMAT_VERSION,
        version=datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8],
        built_at=datetime.now(UTC).isoformat(timespec="seconds"),
        model=model,
        encoder=encoder_info,
        dimension=int(vectors.shape[1]),
        corpus=str(corpus.resolve()),
        settings=settings(),
        sources=split.sources,
        stats=split.stats,
        files={},
        documents=len(split.documents),
        sentences=len(split.sentences),
        vectors=len(split.views),
        build=report,
        search=search,
    )
    return store.write_folder(
        index,
        manifest,
        split.documents,
        split.sentences,
        vectors,
        np.array([i for i, _ in split.views], dtype=np.int32),
        split.keys,
        sparse,
        citable,
        search=search_index,
        started=started,
    )
