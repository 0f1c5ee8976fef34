"""The index on disk: versioned folders, checksums, atomic switch-over.

Layout of an index folder::

    index/
      CURRENT              name of the live version folder (replaced atomically)
      index.lock           held while a build runs
      v-<version>/
        manifest.json      Manifest: model, settings, source and file checksums
        documents.jsonl    one document a line: id, sha256, encoding, title, text
        sentences.jsonl    one sentence a line (row i = sentence id i), with its
                           location when it has one: pages, boxes, heading
        vectors.faiss      IndexFlatIP of unit vectors (several per sentence)
        vector_sentence.npy  row -> sentence id (int32)
        vector_keys.json   row -> content key (model + embedded text), for reuse
        bm25/              bm25s arrays (.npy) and vocabulary (JSON)

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
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qa.sparse import SparseIndex
from qa.types import IndexBusyError, IndexStateError, Manifest, Sentence

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: sentences carry pages, boxes and heading paths
CURRENT = "CURRENT"
LOCK = "index.lock"
MARKER = ".qa-index"  # in the index root: this folder is an index
BUILD_MARKER = ".qa-build"  # in a temp folder: a build made it
_VERSION_NAME = re.compile(r"v-\d{8}T\d{6}-[0-9a-f]{8}")
_CURRENT_TMP = re.compile(rf"\.{CURRENT}\.\d+\.tmp")
LOCK_TIMEOUT = 600.0  # seconds; $QA_LOCK_TIMEOUT overrides


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


@dataclass(frozen=True)
class IndexData:
    """Everything a loaded index holds, read-only once built."""

    folder: Path
    manifest: Manifest
    documents: dict[str, StoredDocument]
    sentences: list[Sentence]
    vectors: Any  # faiss.IndexFlatIP
    vector_sentence: np.ndarray
    vector_keys: list[str]
    sparse: SparseIndex
    sparse_rows: np.ndarray  # BM25 row -> sentence id


@dataclass(frozen=True)
class StoredVectors:
    """Only the vectors of an index and their content keys: what a build reuses."""

    manifest: Manifest
    vectors: Any  # faiss.IndexFlatIP
    vector_keys: list[str]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def read_manifest(folder: Path) -> Manifest:
    path = folder / "manifest.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        manifest = Manifest.from_dict(data)
    except FileNotFoundError as exc:
        raise IndexStateError(f"{path} is missing") from exc
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise IndexStateError(f"{path} is unreadable or corrupted: {exc}") from exc
    if manifest.format_version != FORMAT_VERSION:
        raise IndexStateError(
            f"{path} has format version {manifest.format_version}; this program reads {FORMAT_VERSION}"
        )
    return manifest


def verify_files(folder: Path, manifest: Manifest) -> None:
    """Raise IndexStateError naming the first index file whose checksum differs."""
    for name, expected in manifest.files.items():
        path = folder / name
        try:
            actual = sha256_file(path)
        except OSError as exc:
            raise IndexStateError(f"index file {path} is unreadable: {exc.strerror}") from exc
        if actual != expected:
            raise IndexStateError(f"index file {path} is corrupted (checksum mismatch)")


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def load_folder(folder: Path, *, verify: bool = True) -> IndexData:
    """Load one version folder; IndexStateError when anything is wrong with it."""
    import faiss

    manifest = read_manifest(folder)
    if verify:
        verify_files(folder, manifest)
    try:
        documents = {
            d["id"]: StoredDocument(d["id"], d["sha256"], d["encoding"], d["title"], d["text"])
            for d in _read_jsonl(folder / "documents.jsonl")
        }
        sentences = [
            Sentence(
                r["doc"],
                r["start"],
                r["end"],
                r["text"],
                r["passage_start"],
                r["passage_end"],
                r["citable"],
                tuple(r.get("pages", ())),
                tuple(tuple(b) for b in r.get("boxes", ())),
                r.get("heading"),
            )
            for r in _read_jsonl(folder / "sentences.jsonl")
        ]
        vectors = faiss.read_index(str(folder / "vectors.faiss"))
        vector_sentence = np.load(folder / "vector_sentence.npy", allow_pickle=False)
        vector_keys = json.loads((folder / "vector_keys.json").read_text(encoding="utf-8"))
        sparse = SparseIndex.load(folder / "bm25")
        sparse_rows = np.load(folder / "sparse_rows.npy", allow_pickle=False)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:
        raise IndexStateError(f"index in {folder} is unreadable or corrupted: {exc}") from exc
    if vectors.ntotal != len(vector_sentence) or len(sentences) != manifest.sentences:
        raise IndexStateError(f"index in {folder} is inconsistent (counts differ from its manifest)")
    return IndexData(folder, manifest, documents, sentences, vectors, vector_sentence, vector_keys, sparse, sparse_rows)


def load_vectors(folder: Path, manifest: Manifest) -> StoredVectors:
    """Load just the vectors and their keys, verifying only those two files."""
    import faiss

    names = ("vectors.faiss", "vector_keys.json")
    verify_files(folder, dataclasses.replace(manifest, files={n: manifest.files.get(n, "") for n in names}))
    try:
        vectors = faiss.read_index(str(folder / "vectors.faiss"))
        vector_keys = json.loads((folder / "vector_keys.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RuntimeError) as exc:
        raise IndexStateError(f"index in {folder} is unreadable or corrupted: {exc}") from exc
    if vectors.ntotal != len(vector_keys):
        raise IndexStateError(f"index in {folder} is inconsistent (vectors and keys differ in number)")
    return StoredVectors(manifest, vectors, vector_keys)


def write_folder(
    index: Path,
    manifest: Manifest,
    documents: list[StoredDocument],
    sentences: list[Sentence],
    vectors: np.ndarray,
    vector_sentence: np.ndarray,
    vector_keys: list[str],
    sparse: SparseIndex,
    sparse_rows: np.ndarray,
    *,
    started: float | None = None,
) -> Manifest:
    """Write a new version folder and make it current, atomically.

    Returns the manifest with the checksums of the files written. With
    ``started`` (a ``time.perf_counter()`` value), the build report's
    ``seconds`` is set just before the manifest is written, so it counts the
    writing of the other files.
    """
    import faiss

    try:
        claim(index)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=index))
    except OSError as exc:
        raise IndexStateError(f"cannot write the index folder {index}: {exc.strerror or exc}") from exc
    try:
        (tmp / BUILD_MARKER).write_text("made by a qa index build\n", encoding="utf-8")
        with (tmp / "documents.jsonl").open("w", encoding="utf-8") as f:
            for d in documents:
                f.write(json.dumps(d.__dict__, ensure_ascii=False) + "\n")
        with (tmp / "sentences.jsonl").open("w", encoding="utf-8") as f:
            for s in sentences:
                row = {
                    "doc": s.doc, "start": s.start, "end": s.end, "text": s.text,
                    "passage_start": s.passage_start, "passage_end": s.passage_end, "citable": s.citable,
                }  # fmt: skip
                if s.pages:
                    row["pages"], row["boxes"] = list(s.pages), [list(b) for b in s.boxes]
                if s.heading:
                    row["heading"] = s.heading
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        flat = faiss.IndexFlatIP(manifest.dimension)
        if len(vectors):
            flat.add(np.ascontiguousarray(vectors, dtype=np.float32))
        faiss.write_index(flat, str(tmp / "vectors.faiss"))
        np.save(tmp / "vector_sentence.npy", vector_sentence.astype(np.int32), allow_pickle=False)
        (tmp / "vector_keys.json").write_text(json.dumps(vector_keys), encoding="utf-8")
        sparse.save(tmp / "bm25")
        np.save(tmp / "sparse_rows.npy", sparse_rows.astype(np.int32), allow_pickle=False)
        files = {
            p.relative_to(tmp).as_posix(): sha256_file(p)
            for p in sorted(tmp.rglob("*"))
            if p.is_file() and p.name != BUILD_MARKER  # the marker stays: a killed build is found by it
        }
        manifest = Manifest(**{**manifest.to_dict(), "files": files})
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
