"""Rebuild the index when the corpus changes, with ``watchfiles`` (debounced).

``watch_corpus()`` blocks (the ``qa index watch`` command); ``CorpusWatcher``
runs it in a daemon thread for an app, and can make an :class:`Engine` swap to
each new index as soon as it is built::

    watcher = CorpusWatcher("corpus", "index", engine=get_engine("index")).start()
    ...
    watcher.stop()

A burst of events (an editor's save writes a temp file, renames it, writes
again) triggers one rebuild once the corpus has been quiet for ``debounce_ms``.
Only files a reader handles (``qa.corpus.SUFFIXES``: .txt .md .pdf .html .htm .docx; and folders) count; hidden
files and the index folder itself (which may live inside the corpus) do not.
The rebuild is ``build_index()``: incremental, under the build lock, and a
no-op when nothing really changed.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qa.build import build_index
from qa.corpus import SUFFIXES
from qa.types import CorpusError, Manifest

if TYPE_CHECKING:
    from qa.answer import Engine

log = logging.getLogger(__name__)

DEBOUNCE_MS = 400  # quiet time after the last change before rebuilding
MAX_WAIT_MS = 5000  # rebuild after this long even if changes keep coming
_POLL_MS = 50  # how often watchfiles looks for new events inside a burst


class SourceFilter:
    """Which file events can change the index: sources and folders, not the index or hidden files."""

    def __init__(self, corpus: Path, index: Path) -> None:
        self.corpus = corpus.resolve()
        self.index = index.resolve()

    def __call__(self, path: str | os.PathLike[str], exists: bool | None = None) -> bool:
        p = Path(path)
        if p == self.index or p.is_relative_to(self.index):
            return False
        try:
            parts = p.relative_to(self.corpus).parts
        except ValueError:
            return False
        if not parts or any(part.startswith(".") for part in parts):
            return False
        if p.suffix.lower() in SUFFIXES:
            return True
        # A folder moved or deleted takes its sources with it; a deleted path
        # can no longer say whether it was one, so count suffix-less names.
        return p.is_dir() if (exists if exists is not None else p.exists()) else not p.suffix


def watch_corpus(
    corpus: str | os.PathLike[str],
    index: str | os.PathLike[str],
    *,
    debounce_ms: int = DEBOUNCE_MS,
    max_wait_ms: int = MAX_WAIT_MS,
    stop_event: threading.Event | None = None,
    on_build: Callable[[Manifest], None] | None = None,
    on_error: Callable[[Exception], None] | None = None,
    on_ready: Callable[[], None] | None = None,
    model: str | None = None,
) -> None:
    """Keep the index built from ``corpus`` until ``stop_event`` is set (or Ctrl-C).

    Starts watching, then brings the index up to date (so nothing changed
    before the watch began is missed), calls ``on_ready``, and rebuilds after
    each burst of changes. ``on_build(manifest)`` is called for each new index
    version, its ``build`` report saying what changed; ``on_error(exc)`` when
    a rebuild fails (the previous index stays live and watching goes on).

    >>> watch_corpus("corpus", "index", on_build=lambda m: print(m.build))  # doctest: +SKIP
    """
    corpus, index = Path(corpus), Path(index)
    if debounce_ms < 0:
        raise ValueError(f"debounce_ms must be 0 or more; got {debounce_ms}")
    if not corpus.is_dir():
        raise CorpusError(f"corpus folder {str(corpus)!r} does not exist or is not a folder")
    wanted = SourceFilter(corpus, index)
    version: str | None = None

    def rebuild(reason: str) -> None:
        nonlocal version
        try:
            manifest = build_index(corpus, index, model=model)
        except Exception as exc:  # keep watching: the previous index is still whole
            log.warning("rebuild of %s failed: %s", index, exc)
            if on_error is not None:
                on_error(exc)
            return
        if manifest.version == version or manifest.build.get("noop"):
            version = manifest.version
            log.info("index %s is fresh (%s)", index, reason)
            return
        version = manifest.version
        log.info("rebuilt %s (%s): %s", index, reason, manifest.build)
        if on_build is not None:
            on_build(manifest)

    pending: set[str] = set()
    first_change = last_change = 0.0
    ready = False
    # rust_timeout: with no event at all for that long, watchfiles yields an
    # empty set, which is how a quiet corpus (the end of a burst) is noticed.
    for changes in _changes(
        corpus.resolve(),
        watch_filter=None,
        debounce=max_wait_ms,
        step=_POLL_MS,
        rust_timeout=max(debounce_ms, _POLL_MS),
        yield_on_timeout=True,
        stop_event=stop_event,
    ):
        now = time.monotonic()
        if not ready:
            # The watch is registered by now: catch up with what happened before it.
            ready = True
            rebuild("start")
            if on_ready is not None:
                on_ready()
        relevant = {path for _, path in changes if wanted(path)}
        if relevant:
            if not pending:
                first_change = now
            pending |= relevant
            last_change = now
        if not pending:
            continue
        quiet = not relevant and (now - last_change) * 1000 >= debounce_ms
        if quiet or (now - first_change) * 1000 >= max_wait_ms:
            names = sorted(Path(p).name for p in pending)
            pending.clear()
            rebuild(f"{len(names)} changed: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}")


_UNDECODABLE = re.compile(r'Unable to decode path "(.*)" to string')


def _changes(folder: Path, **options: Any) -> Iterator[set[tuple[Any, str]]]:
    """``watchfiles.watch(folder, **options)``, going on after a path it cannot decode.

    watchfiles raises on a file name that is not UTF-8 (``bad\\xffname.txt``) and
    stops watching: the change is reported here with the name as the error
    spells it (undecodable bytes as ``\\xNN``), and watching starts again; the
    rebuild it triggers walks the whole corpus, so nothing in between is missed.
    """
    from watchfiles import Change, watch

    while True:
        try:
            yield from watch(folder, **options)
            return
        except RuntimeError as exc:
            found = _UNDECODABLE.search(str(exc))
            if found is None:
                raise
            log.info("a file name that is not UTF-8 changed: %s", found.group(1))
            yield {(Change.modified, found.group(1))}


class CorpusWatcher:
    """Runs :func:`watch_corpus` in a daemon thread; ``start()`` / ``stop()``.

    With an ``engine``, each new index version is loaded in the background and
    swapped in right after it is built (``Engine.refresh``), so the next
    question is answered from it. ``builds`` counts rebuilds, ``last_manifest``
    and ``last_error`` hold the latest outcome (for a status panel).
    """

    def __init__(
        self,
        corpus: str | os.PathLike[str],
        index: str | os.PathLike[str],
        *,
        engine: Engine | None = None,
        debounce_ms: int = DEBOUNCE_MS,
        on_build: Callable[[Manifest], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
        model: str | None = None,
    ) -> None:
        if debounce_ms < 0:
            raise ValueError(f"debounce_ms must be 0 or more; got {debounce_ms}")
        self.corpus = Path(corpus)
        self.index = Path(index)
        self.engine = engine
        self.debounce_ms = debounce_ms
        self.model = model
        self._on_build = on_build
        self._on_error = on_error
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.builds = 0
        self.last_manifest: Manifest | None = None
        self.last_error: Exception | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, *, wait: float | None = 30.0) -> CorpusWatcher:
        """Start watching; by default wait (up to ``wait`` s) until watching and the index is fresh."""
        if self.running:
            return self
        self._stop.clear()
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name="qa-corpus-watch", daemon=True)
        self._thread.start()
        if wait:
            self._ready.wait(wait)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop watching (a rebuild under way finishes first, up to ``timeout`` s)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def __enter__(self) -> CorpusWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _built(self, manifest: Manifest) -> None:
        self.builds += 1
        self.last_manifest = manifest
        self.last_error = None
        if self.engine is not None:
            self.engine.refresh()
        if self._on_build is not None:
            self._on_build(manifest)

    def _failed(self, exc: Exception) -> None:
        self.last_error = exc
        if self._on_error is not None:
            self._on_error(exc)

    def _run(self) -> None:
        try:
            watch_corpus(
                self.corpus,
                self.index,
                debounce_ms=self.debounce_ms,
                stop_event=self._stop,
                on_build=self._built,
                on_error=self._failed,
                on_ready=self._ready.set,
                model=self.model,
            )
        except Exception as exc:  # a daemon thread's exception would vanish; say it
            log.error("watching %s stopped: %s", self.corpus, exc)
            self.last_error = exc
        finally:
            self._ready.set()  # never leave start() waiting
