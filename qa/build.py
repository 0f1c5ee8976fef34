"""Build or refresh an index from a corpus folder, re-embedding only what changed."""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from qa import store
from qa.corpus import SPLITTER, corpus_files, document_title, read_document, split_document
from qa.embed import default_model, get_encoder
from qa.sparse import SparseIndex
from qa.store import StoredDocument
from qa.types import CorpusError, IndexStateError, Manifest, Sentence

log = logging.getLogger(__name__)

# Each citable sentence gets one vector per view. "sentence" is the sentence
# alone; "window" prefixes the document title and the sentence before it in
# the passage, so a sentence that only makes sense in context ("The vehicle
# will be sold ...", "Utilising the tech giant's Azure ...") can still be
# found. Context comes from before only: that is where what a sentence refers
# to was said. See README, "Retrieval settings".
EMBEDDING = {"views": ["sentence", "window"], "before": 1, "after": 0, "title": True}


def settings() -> dict[str, Any]:
    return {"splitter": SPLITTER, "embedding": EMBEDDING}


@dataclass(frozen=True)
class Status:
    """How an index compares with its corpus."""

    state: str  # "fresh", "stale", "missing" or "corrupted"
    reason: str = ""
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    manifest: Manifest | None = None

    @property
    def fresh(self) -> bool:
        return self.state == "fresh"


def scan_sources(corpus: Path) -> dict[str, str]:
    """Document id -> sha256 of the file's bytes, for every corpus file we can read."""
    sources = {}
    for doc_id, path in corpus_files(corpus):
        try:
            sources[doc_id] = store.sha256_file(path)
        except OSError as exc:
            log.warning("skipping %s: %s", doc_id, exc.strerror)
    return sources


def index_status(
    corpus: str | os.PathLike[str],
    index: str | os.PathLike[str],
    *,
    model: str | None = None,
    verify: bool = True,
) -> Status:
    """Compare the index with the corpus: fresh, stale (and which files), missing or corrupted."""
    index = Path(index)
    try:
        folder = store.current_folder(index)
        if folder is None:
            return Status("missing", f"no index has been built in {index}")
        manifest = store.read_manifest(folder)
        if verify:
            store.verify_files(folder, manifest)
    except IndexStateError as exc:
        return Status("corrupted", str(exc))
    model = model or default_model()
    if manifest.model != model:
        return Status("stale", f"built with model {manifest.model!r}, configured {model!r}", manifest=manifest)
    if manifest.settings != settings():
        return Status("stale", "built with other splitter or embedding settings", manifest=manifest)
    current = scan_sources(Path(corpus))
    old = manifest.sources
    added = sorted(set(current) - set(old))
    removed = sorted(set(old) - set(current))
    changed = sorted(d for d in set(current) & set(old) if current[d] != old[d])
    if added or removed or changed:
        parts = [f"{len(x)} {name}" for x, name in ((added, "added"), (changed, "changed"), (removed, "removed")) if x]
        return Status("stale", "sources differ: " + ", ".join(parts), added, changed, removed, manifest)
    return Status("fresh", "", manifest=manifest)


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


def _key(model: str, text: str) -> str:
    return hashlib.sha256(f"{model}\x1f{text}".encode()).hexdigest()[:32]


def build_index(
    corpus: str | os.PathLike[str],
    index: str | os.PathLike[str],
    *,
    force: bool = False,
    model: str | None = None,
) -> Manifest:
    """Build the index for a corpus folder; a no-op when it is already fresh.

    Only sentences whose embedded text changed are embedded again; the rest
    reuse their stored vectors. ``force`` rebuilds even a fresh index (still
    reusing vectors when model and settings are unchanged).

    >>> build_index("corpus", "index").documents
    1
    """
    corpus, index = Path(corpus), Path(index)
    model = model or default_model()
    if not corpus.is_dir():
        raise CorpusError(f"corpus folder {str(corpus)!r} does not exist or is not a folder")
    with store.build_lock(index):
        store.prune(index)
        status = index_status(corpus, index, model=model)
        if status.fresh and not force and status.manifest:
            log.info("index %s is fresh; nothing to do", index)
            return status.manifest
        if status.state != "missing":
            log.info("rebuilding %s: %s", index, status.reason or status.state)
        manifest = _build(corpus, index, model, status)
        store.prune(index)
        return manifest


def _previous(index: Path, model: str) -> store.IndexData | None:
    """The current index, if it can be reused (same model, loads and verifies)."""
    try:
        folder = store.current_folder(index)
        if folder is None:
            return None
        data = store.load_folder(folder)
    except IndexStateError as exc:
        log.warning("not reusing the previous index: %s", exc)
        return None
    return data if data.manifest.model == model else None


def _build(corpus: Path, index: Path, model: str, status: Status) -> Manifest:
    started = time.perf_counter()
    old = _previous(index, model)
    same_split = old is not None and old.manifest.settings.get("splitter") == SPLITTER
    old_sentences: dict[str, list[Sentence]] = {}
    if old is not None and same_split:
        for s in old.sentences:
            old_sentences.setdefault(s.doc, []).append(s)
    old_vectors: dict[str, int] = {}
    if old is not None:
        old_vectors = {k: i for i, k in enumerate(old.vector_keys)}

    documents: list[StoredDocument] = []
    sentences: list[Sentence] = []
    views: list[tuple[int, str]] = []
    report = {"added": 0, "changed": 0, "removed": 0, "unchanged": 0, "skipped": []}
    sources: dict[str, str] = {}
    for doc_id, path in corpus_files(corpus):
        previous = old.documents.get(doc_id) if old else None
        try:
            sha = store.sha256_file(path)
        except OSError as exc:
            log.warning("skipping %s: %s", doc_id, exc.strerror)
            report["skipped"].append(doc_id)
            continue
        if previous is not None and previous.sha256 == sha and doc_id in old_sentences:
            stored, doc_sentences = previous, old_sentences[doc_id]
        else:
            doc = read_document(doc_id, path)
            if doc is None:
                report["skipped"].append(doc_id)
                continue
            passages, doc_sentences = split_document(doc)
            stored = StoredDocument(doc.id, doc.sha256, doc.encoding, document_title(doc, passages), doc.text)
        sources[doc_id] = sha
        if old is None or doc_id not in old.manifest.sources:
            report["added"] += 1
        elif old.manifest.sources[doc_id] != sha:
            report["changed"] += 1
        else:
            report["unchanged"] += 1
        offset = len(sentences)
        documents.append(stored)
        sentences.extend(doc_sentences)
        views.extend((offset + i, text) for i, text in embedding_views(stored.title, doc_sentences))
    if old is not None:
        report["removed"] = len(set(old.manifest.sources) - set(sources))
    if not documents:
        raise CorpusError(f"corpus folder {str(corpus)!r} holds no readable .txt or .md files")

    encoder = get_encoder(model)
    keys = [_key(model, text) for _, text in views]
    todo = [i for i, k in enumerate(keys) if k not in old_vectors]
    dimension = encoder.dimension
    vectors = np.zeros((len(views), dimension), dtype=np.float32)
    if old is not None and len(todo) < len(views):
        reused_rows = [i for i, k in enumerate(keys) if k in old_vectors]
        old_rows = np.array([old_vectors[keys[i]] for i in reused_rows], dtype=np.int64)
        vectors[reused_rows] = old.vectors.reconstruct_batch(old_rows)
    if todo:
        log.info("embedding %d texts", len(todo))
        vectors[todo] = encoder.encode([views[i][1] for i in todo])
    report["embedded"] = len(todo)
    report["reused"] = len(views) - len(todo)

    citable = np.array([i for i, s in enumerate(sentences) if s.citable], dtype=np.int32)
    sparse = SparseIndex.build([sentences[i].text for i in citable])
    report["seconds"] = round(time.perf_counter() - started, 3)
    manifest = Manifest(
        format_version=store.FORMAT_VERSION,
        version=datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8],
        built_at=datetime.now(UTC).isoformat(timespec="seconds"),
        model=model,
        dimension=dimension,
        corpus=str(corpus.resolve()),
        settings=settings(),
        sources=sources,
        files={},
        documents=len(documents),
        sentences=len(sentences),
        vectors=len(views),
        build=report,
    )
    manifest = store.write_folder(
        index,
        manifest,
        documents,
        sentences,
        vectors,
        np.array([i for i, _ in views], dtype=np.int32),
        keys,
        sparse,
        citable,
    )
    log.info("built %s: %s", index, report)
    return manifest
