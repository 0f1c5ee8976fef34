"""One index folder kept live: built when missing or stale, loaded once, swapped to newer versions.

A :class:`LiveIndex` gives the retriever of the version ``CURRENT`` names. It
builds the index from its corpus when missing or stale, rebuilds once when
the files fail their checksums, and loads a version built later (by this
process or another) in a background thread, while questions keep being
answered from the old one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qa import store
from qa.build import build_index, index_status
from qa.retrieve import Retriever
from qa.types import IndexStateError

log = logging.getLogger("qa.answer")  # its messages belong to answering, as users configure logging

# A question that arrives after a newer index version is on disk waits this long
# for it to load (a running engine swaps to a 41,000-sentence index in 0.03 s) before answering
# from the old one.
SWAP_WAIT_SECONDS = 30.0


class LiveIndex:
    """The live version of one index folder; thread-safe.

    ``warm`` is called after each load, before the version is used: the
    engine loads its models there rather than on the first question.
    """

    def __init__(
        self,
        index: str | os.PathLike[str],
        corpus: str | os.PathLike[str] | None = None,
        warm: Callable[[], Any] | None = None,
    ) -> None:
        self.index = Path(index)
        self.corpus = Path(corpus) if corpus is not None else None
        self.warm = warm
        self._retriever: Retriever | None = None
        self._lock = threading.Lock()
        self._current_stamp: tuple[int, int] | None = None
        self._failed_stamp: tuple[int, int] | None = None  # a version whose load failed: not waited for again
        self._loading: threading.Thread | None = None
        self._status_cache: tuple[Any, float, tuple[str, str]] | None = None
        self._files: tuple[Path, dict[str, tuple[int, int, int]]] | None = None  # a version's files as loaded

    def corpus_folder(self) -> Path | None:
        """The corpus to keep the index fresh with: the one given, else the one it was built from.

        An index whose corpus folder is gone answers as built (None); only an
        index that cannot be read falls back to ``$QA_CORPUS`` or ``./corpus``.
        """
        if self.corpus is not None and self.corpus.is_dir():
            return self.corpus
        with contextlib.suppress(IndexStateError):
            folder = store.current_folder(self.index)
            if folder is not None:
                # any format: an index an earlier release built is rebuilt from its own corpus
                built_from = Path(store.read_manifest(folder, any_format=True).corpus)
                return built_from if built_from.is_dir() else None
        fallback = Path(os.environ.get("QA_CORPUS", "corpus"))
        return fallback if fallback.is_dir() else None

    def ensure_fresh(self) -> None:
        """Build the index if it is missing or stale (logging why).

        Index file checksums are not read here: loading checks them once, and
        a corrupted index is rebuilt then (see :meth:`retriever`).
        """
        corpus = self.corpus_folder()
        if corpus is None:
            if store.current_folder(self.index) is None:
                raise IndexStateError(
                    f"no index in {self.index} and no corpus folder to build it from; "
                    "set QA_CORPUS or run `qa index build --corpus DIR`"
                )
            log.warning("corpus folder not found; answering from the index as built")
            return
        status = index_status(corpus, self.index, verify=False)
        if status.fresh:
            return
        if status.state == "missing":
            log.warning("no index in %s; building one from %s", self.index, corpus)
        else:
            log.warning("index %s is %s (%s); rebuilding", self.index, status.state, status.reason)
        try:
            build_index(corpus, self.index)
        except Exception as exc:  # a full disk, a build already running, an unwritable folder
            if status.state != "stale" or store.current_folder(self.index) is None:
                raise  # nothing whole to answer from
            log.warning("rebuilding failed (%s); answering from the stale version built before", exc)

    def retriever(self) -> Retriever:
        """The live retriever; loads (and builds if needed) on first use.

        When a newer version is on disk (``CURRENT`` changed), waits for it to
        load, up to SWAP_WAIT_SECONDS, so a question asked after a build has
        finished is answered from that build: in this process or another one.
        A version whose load failed is not waited for again.
        """
        current = self._retriever
        if current is not None and self._files_changed(current):
            with self._lock:
                if self._retriever is current:
                    self._reload_changed(current)
                current = self._retriever
        if current is None:
            with self._lock:
                if self._retriever is None:
                    self.ensure_fresh()
                    self._retriever = self._load_or_rebuild()
                current = self._retriever
            return current
        deadline = time.monotonic() + SWAP_WAIT_SECONDS
        # A load in flight is waited for too: it may have read CURRENT's new stamp but not swapped yet.
        while (loading := self._maybe_swap()) is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning("the new index version is still loading; answering from the previous one")
                break
            loading.join(remaining)
        return self._retriever or current

    def _files_changed(self, retriever: Retriever) -> bool:
        """True when a file of the loaded version was rewritten, truncated or removed since it was loaded.

        Reading a memory-mapped file that another program truncated ends the
        process (SIGBUS), so each question checks first. A change between this
        check and the read is not caught: only a build writes into the index.
        """
        data, loaded = retriever.data, self._files
        if loaded is None or loaded[0] != data.folder:  # a newer version is being swapped in
            return False
        return store.file_stamps(data.folder, data.manifest) != loaded[1]

    def _reload_changed(self, retriever: Retriever) -> None:
        """Drop a version whose files changed under it: load ``CURRENT`` again, rebuild, or fail cleanly."""
        log.warning("index files in %s changed after they were loaded; loading the index again", retriever.data.folder)
        self._retriever = None
        try:
            self._retriever = self._load_or_rebuild()
        except IndexStateError as exc:
            raise IndexStateError(
                f"the index in {self.index} was changed by another program and cannot be loaded again ({exc}); "
                "rebuild it with `qa index build --force`"
            ) from exc

    def _load_or_rebuild(self) -> Retriever:
        """Load the index (checking every file's checksum); rebuild it once if that fails."""
        try:
            return self._load()
        except IndexStateError as exc:
            corpus = self.corpus_folder()
            if corpus is None:
                raise
            log.warning("index %s is corrupted (%s); rebuilding", self.index, exc)
            build_index(corpus, self.index)
            return self._load()

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.index / store.CURRENT)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_ino

    def _load(self) -> Retriever:
        stamp = self._stamp()
        folder = store.current_folder(self.index)
        if folder is None:
            raise IndexStateError(f"no index has been built in {self.index}")
        data = store.load_folder(folder)
        files = store.file_stamps(folder, data.manifest)
        retriever = Retriever(data)
        _ = retriever.encoder.model  # load the encoder now, not on the first question
        if self.warm is not None:
            self.warm()
        self._current_stamp = stamp
        self._files = (folder, files)
        log.info("loaded index %s (%s)", folder, retriever.data.manifest.version)
        return retriever

    def _maybe_swap(self) -> threading.Thread | None:
        """Start loading a newer index version in a thread (swapped in when ready); returns the loading thread."""
        stamp = self._stamp()
        loading = self._loading
        if loading is not None and loading.is_alive():
            return loading
        if stamp in (self._current_stamp, self._failed_stamp):
            return None

        def load() -> None:
            try:
                retriever = self._load()
            except Exception as exc:  # keep serving the old index
                log.warning("could not load the new index version: %s", exc)
                self._failed_stamp = stamp  # don't retry on every question; the next build retries
                return
            self._retriever = retriever  # one attribute store: a question sees old or new, never a mix

        with self._lock:
            if self._loading is None or not self._loading.is_alive():
                self._loading = threading.Thread(target=load, name="qa-index-swap", daemon=True)
                self._loading.start()
            return self._loading

    def refresh(self, *, wait: bool = False) -> None:
        """Swap to a newer index version if one was built; questions meanwhile use the old one.

        The load runs in a background thread (``wait`` blocks until it ends). Does
        nothing before the first question has loaded an index. A file watcher calls
        this after each rebuild so the swap does not wait for the next question.
        """
        if self._retriever is None:
            return
        self._maybe_swap()
        loading = self._loading
        if wait and loading is not None:
            loading.join()

    def status(self, *, max_age: float = 0.0) -> dict[str, Any]:
        """The index as a status panel shows it.

        ``version``, ``built_at``, ``documents``, ``sentences`` describe the index
        answering questions now (None before the first load); ``state`` compares
        the index on disk with the corpus (fresh, stale, missing, corrupted);
        ``swapping`` is true while a newer version loads in the background.

        Comparing with the corpus walks it: a comparison made for the same
        version within ``max_age`` seconds is reused (``max_age=math.inf``: once
        per version; a watcher's rebuild makes a new version).
        """
        retriever = self._retriever
        manifest = retriever.data.manifest if retriever is not None else None
        key = (self._stamp(), manifest.version if manifest else None)
        cached = self._status_cache
        if cached is not None and cached[0] == key and time.monotonic() - cached[1] < max_age:
            state, reason = cached[2]
        else:
            corpus = self.corpus_folder()
            if corpus is None:
                state, reason = "unknown", "no corpus folder to compare with"
            else:
                st = index_status(corpus, self.index, model=manifest.model if manifest else None, verify=False)
                state, reason = st.state, st.reason
            self._status_cache = (key, time.monotonic(), (state, reason))
        loading = self._loading
        return {
            "version": manifest.version if manifest else None,
            "built_at": manifest.built_at if manifest else None,
            "documents": manifest.documents if manifest else 0,
            "sentences": manifest.sentences if manifest else 0,
            "state": state,
            "reason": reason,
            "swapping": bool(loading and loading.is_alive()),
        }
