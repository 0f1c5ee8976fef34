"""The answer-sentence verifier: a MiniLM cross-encoder run with ONNX Runtime.

It reads ``[CLS] question [SEP] sentence [SEP]`` and gives one logit: does
this sentence answer this question (not only "is it on the same topic").
The shipped model is ``qa/models/verifier-int8.onnx`` (int8, see
``qa/models/README.md`` for its data, licence, training command and figures);
it runs over the first-stage ranker's top few candidates, and its logit is a
feature of the learned ranker and of the calibrated confidence.

>>> v = load_verifier(DEFAULT_VERIFIER)                                # doctest: +SKIP
>>> v.scores("Who founded Nissan?", ["Nissan was founded by ...", "It rained."])  # doctest: +SKIP
array([ 4.1, -7.9], dtype=float32)
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from stat import S_ISREG
from typing import Any, TypeVar

import numpy as np

from qa.embed import DEFAULT_MODEL, OnnxSessions, feeds, model_path
from qa.types import QAError, Sentence

MODELS = Path(__file__).resolve().parent / "models"
DEFAULT_VERIFIER = MODELS / "verifier-int8.onnx"
MAX_LENGTH = 128
CONTEXT_SEP = " [SEP] "  # between the candidate sentence and its context, in the second segment


def context_of(sentences: Sequence[Sentence], i: int, title: str) -> str:
    """What a reader sees before sentence ``i``: its document's title and the sentence before it in its passage.

    The same context the embedding's "window" view gives (``qa.build.embedding_views``): a
    sentence that says "It was founded in 1890" answers "When was X founded?" only in context.
    """
    s = sentences[i]
    parts = [title + "."] if title else []
    if i > 0:
        p = sentences[i - 1]
        if p.doc == s.doc and p.passage_start == s.passage_start and p.citable:
            parts.append(p.text)
    return " ".join(" ".join(parts).split())


def verifier_text(sentence: str, context: str) -> str:
    """The verifier's second segment: the candidate first (truncation cuts context before it), then its context."""
    return sentence + CONTEXT_SEP + context if context else sentence


class VerifierError(QAError):
    """The verifier model is missing, damaged or not a verifier."""


V = TypeVar("V", bound="OnnxVerifier")


class OnnxVerifier:
    """Scores (question, sentence) pairs; thread-safe, loads once."""

    def __init__(self, path: str | Path) -> None:
        from tokenizers import Tokenizer

        self.path = Path(path)
        tokenizer_file = self.path.with_name("tokenizer.json")
        if not tokenizer_file.is_file():  # the shipped model uses the packaged MiniLM's vocabulary
            tokenizer_file = Path(model_path(DEFAULT_MODEL)) / "tokenizer.json"
        try:
            tokenizer = Tokenizer.from_file(str(tokenizer_file))
        except Exception as exc:  # tokenizers raises its own exception type
            raise VerifierError(f"cannot read the verifier's tokenizer {tokenizer_file}: {exc}") from exc
        tokenizer.enable_truncation(max_length=MAX_LENGTH, strategy="only_second")
        tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]") or 0, pad_token="[PAD]")
        self._tokenizer = tokenizer
        self._sessions = OnnxSessions(self.path, VerifierError, "the verifier")
        names = [i.name for i in self._sessions.all.get_inputs()]
        if names != ["input_ids", "attention_mask", "token_type_ids"]:
            raise VerifierError(f"{self.path} is not a verifier model (inputs {names})")
        self.reads_context = bool(self.describe().get("context", False))

    def scores(self, question: str, sentences: list[str], contexts: list[str] | None = None) -> np.ndarray:
        """One logit per sentence: higher means it answers the question.

        ``contexts`` (what precedes each sentence, :func:`context_of`) is read only by a
        model trained with it (``"context": true`` in its ``verifier.json``).
        """
        if not sentences:
            return np.zeros(0, dtype=np.float32)
        if self.reads_context and contexts is not None:
            sentences = [verifier_text(s, c) for s, c in zip(sentences, contexts, strict=True)]
        inputs = feeds(self._tokenizer.encode_batch([(question, s) for s in sentences]))
        # On every core when nothing else runs; on one thread while other questions are answered.
        return np.asarray(self._sessions.run(inputs), dtype=np.float32).reshape(-1)

    def describe(self) -> dict[str, Any]:
        info_file = self.path.with_name("verifier.json")
        try:
            return dict(json.loads(info_file.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return {}


_models: dict[tuple[Path, int, int, int], OnnxVerifier] = {}  # (file, size, mtime, inode)
_lock = threading.Lock()


def load_shared(path: str | Path, kind: type[V], what: str) -> V:
    """The process-wide ``kind`` model for a file (loaded once, shared by threads).

    A file replaced since it was loaded (a model retrained into the same folder) is loaded again.
    """
    resolved = Path(path).resolve()
    try:
        info = resolved.stat()
    except OSError:
        info = None
    if info is None or not S_ISREG(info.st_mode):
        raise VerifierError(f"no {what} model at {resolved}")
    key = (resolved, info.st_size, info.st_mtime_ns, info.st_ino)
    with _lock:
        model = _models.get(key)
        if not isinstance(model, kind):
            for old in [k for k in _models if k[0] == resolved]:
                del _models[old]
            model = _models[key] = kind(resolved)
        return model


def load_verifier(path: str | Path = DEFAULT_VERIFIER) -> OnnxVerifier:
    """The process-wide verifier for a model file (:func:`load_shared`)."""
    return load_shared(path, OnnxVerifier, "verifier")
