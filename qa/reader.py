"""The reader: one MiniLM cross-encoder that says whether a sentence answers a question and where the answer is.

It reads ``[CLS] question [SEP] sentence [SEP] context [SEP]`` (the context:
the document's title and the sentence before, :func:`qa.verify.context_of`)
and gives, in one pass, a logit that the sentence answers the question and,
for every token of the sentence, a logit that the answer phrase starts or
ends there. The shipped model is ``qa/models/reader-int8.onnx`` (its card:
``qa/models/reader.md``; trained by ``bench/train_reader.py`` on SQuAD v1.1
train). It stands where the verifier stood: its logit is a feature of the
learned ranker and of the calibrated confidence, and its span gives
``Answer.phrase``.

>>> r = load_reader(DEFAULT_READER)                                                  # doctest: +SKIP
>>> r.read("When was Nissan founded?", ["Nissan was founded in 1933."], [""])[0].phrase  # doctest: +SKIP
(22, 26)
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qa.embed import feeds, model_run
from qa.verify import OnnxVerifier, VerifierError, load_shared, verifier_text

MODELS = Path(__file__).resolve().parent / "models"
DEFAULT_READER = MODELS / "reader-int8.onnx"
MAX_PHRASE_TOKENS = 30  # an answer phrase longer than this is a sentence, not a phrase
_ABBREVIATION = re.compile(r"(?:\b[A-Za-z]\.){2,}$|\b(?:Inc|Ltd|Co|Corp|Jr|Sr|St|Dr|Mr|Mrs|Ms|No)\.$")
_CLOSING = ".,;:!?)]}\"'”’"
_OPENING = "([{\"'“‘"


@dataclass(frozen=True, slots=True)
class Reading:
    """What the reader says of one sentence: its logit, and the likeliest answer phrase inside it.

    ``phrase`` is ``[start, end)`` in the sentence's text (None when the sentence
    has no token the reader could read); ``phrase_score`` is the probability the
    reader gives that phrase among every phrase of the sentence.
    """

    logit: float
    phrase: tuple[int, int] | None
    phrase_score: float


def best_span(
    start: np.ndarray,
    end: np.ndarray,
    offsets: Sequence[tuple[int, int]],
    allowed: np.ndarray,
    per_token: float = 0.0,
) -> tuple[tuple[int, int], float] | None:
    """The best ``[start, end)`` character span over tokens ``allowed`` and its probability (start × end softmax).

    ``per_token``: a penalty on the log probability per token a span spans beyond its first (0: none).
    """
    idx = np.flatnonzero(allowed)
    if len(idx) == 0:
        return None
    s = start[idx].astype(np.float64)
    e = end[idx].astype(np.float64)
    n = len(idx)
    steps = np.arange(n)[None, :] - np.arange(n)[:, None]  # end - start, in tokens
    joint = (s - np.logaddexp.reduce(s))[:, None] + (e - np.logaddexp.reduce(e))[None, :] - per_token * steps
    joint[(steps < 0) | (steps >= MAX_PHRASE_TOKENS)] = -np.inf  # start at or before end, under the limit
    a, b = np.unravel_index(int(np.argmax(joint)), joint.shape)
    return (offsets[idx[a]][0], offsets[idx[b]][1]), float(np.exp(joint[a, b] + per_token * steps[a, b]))


def sentence_tokens(encoding: Any, limit: int) -> np.ndarray:
    """Which tokens of a (question, sentence [SEP] context) encoding lie in the sentence (its first ``limit`` chars)."""
    return np.array(
        [seq == 1 and a < b <= limit for seq, (a, b) in zip(encoding.sequence_ids, encoding.offsets, strict=True)]
    )


def trim(text: str, start: int, end: int) -> tuple[int, int]:
    """``[start, end)`` without surrounding spaces or unpaired punctuation (SQuAD answers carry none)."""
    while start < end and (text[start].isspace() or text[start] in _CLOSING):
        start += 1
    while end > start and (text[end - 1].isspace() or text[end - 1] in _OPENING or text[end - 1] in ".,;:!?"):
        if text[end - 1] == "." and _ABBREVIATION.search(text, start, end):
            break  # "U.S.", "Nissan Motor Co."
        end -= 1
    for left, right in ("()", "[]", "“”", '""'):
        inside = text[start:end]
        if inside.endswith(right) and inside.count(left) < inside.count(right) and left != right:
            end -= 1
    return start, end


class OnnxReader(OnnxVerifier):
    """A verifier that also finds the answer phrase; thread-safe, loads once.

    ``scores`` (the verifier's contract: one logit per sentence) remembers what it
    read, so the phrase of the sentence an answer cites costs no second pass.
    """

    reads_context = True

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        self.reads_context = True
        outputs = [o.name for o in self._sessions.all.get_outputs()]
        if outputs[:3] != ["logit", "start", "end"]:
            raise VerifierError(f"{self.path} is not a reader model (outputs {outputs})")
        self._memo: OrderedDict[tuple[str, str, str], Reading] = OrderedDict()
        self._memo_lock = threading.Lock()

    def read(self, question: str, sentences: list[str], contexts: Sequence[str] | None = None) -> list[Reading]:
        """One :class:`Reading` per sentence."""
        contexts = list(contexts) if contexts is not None else [""] * len(sentences)
        out: list[Reading | None] = []
        todo: list[int] = []
        with self._memo_lock:
            for i, (s, c) in enumerate(zip(sentences, contexts, strict=True)):
                hit = self._memo.get((question, s, c))
                out.append(hit)
                if hit is None:
                    todo.append(i)
        if todo:
            read = [sentences[i] for i in todo]
            logit, start, end, encodings = self._run(question, read, [contexts[i] for i in todo])
            for row, (i, enc) in enumerate(zip(todo, encodings, strict=True)):
                found = best_span(start[row], end[row], enc.offsets, sentence_tokens(enc, len(sentences[i])))
                span, score = (None, 0.0) if found is None else found
                if span is not None:
                    span = trim(sentences[i], *span)
                    if span[0] >= span[1]:
                        span = None
                reading = Reading(float(logit[row]), span, round(score, 4))
                out[i] = reading
                with self._memo_lock:
                    self._memo[(question, sentences[i], contexts[i])] = reading
                    while len(self._memo) > 512:
                        self._memo.popitem(last=False)
        return [r for r in out if r is not None]

    def _run(
        self, question: str, sentences: Sequence[str], contexts: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Any]]:
        """One pass over the pairs: logits, start and end logits per token, and the pairs' encodings."""
        pairs = [(question, verifier_text(s, c)) for s, c in zip(sentences, contexts, strict=True)]
        encodings = self._tokenizer.encode_batch(pairs)
        with model_run() as alone:
            session = self._sessions.all if alone else self._sessions.one()
            logit, start, end = session.run(None, feeds(encodings))[:3]
        return logit, start, end, encodings

    def span_logits(
        self, question: str, sentence: str, context: str = ""
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]], np.ndarray]:
        """One sentence's start and end logits per token, the tokens' offsets, and which tokens are the sentence's.

        What :meth:`read` decodes its phrase from (``best_span``); for measuring other decodings.
        """
        _, start, end, (enc,) = self._run(question, [sentence], [context])
        return start[0], end[0], enc.offsets, sentence_tokens(enc, len(sentence))

    def clear_cache(self) -> None:
        """Forget remembered readings (benchmarks use it so every answer reads)."""
        with self._memo_lock:
            self._memo.clear()

    def scores(self, question: str, sentences: list[str], contexts: list[str] | None = None) -> np.ndarray:
        return np.array([r.logit for r in self.read(question, sentences, contexts)], dtype=np.float32)


def is_reader(path: str | Path) -> bool:
    """Whether a model file is a reader (by its settings file beside it, ``reader.json``, or its name)."""
    p = Path(path)
    return p.name.startswith("reader") or (p.with_name("reader.json").is_file() and not p.name.startswith("verifier"))


def load_reader(path: str | Path = DEFAULT_READER) -> OnnxReader:
    """The process-wide reader for a model file (loaded once, shared by threads; reloaded when replaced)."""
    return load_shared(path, OnnxReader, "reader")
