"""The confidence in words: "confident", "likely", "unsure", or "the sources don't say".

``Answer.confidence`` is the learned ranker's calibrated probability that the
cited sentence answers the question (``qa/rank.py``): of answers given 0.7, about
70% are right. The words are bands of that probability, so they keep their
meaning when the ranker is refit, as long as the refit is calibrated (``qa eval
--squad`` prints its reliability table and ECE):

- below the ranker's abstention threshold: "the sources don't say" (the answer abstains);
- under 0.5: "unsure" (right less often than not);
- 0.5 to 0.8: "likely";
- 0.8 and over: "confident" (right 84-93% of the time in the held-out reliability tables).

How the cut points were chosen: docs/design.md, "Confidence in words". A ranker
file may carry its own (``meta.confidence_words``, ``{"likely": p, "confident": p}``).
Without the learned ranker (``QA_RANKER=none``) the confidence is a cosine, not a
probability: an answer is then "likely" at best, never "confident".

>>> scale = ConfidenceScale(abstain_below=0.037)
>>> scale.label(0.93), scale.label(0.6), scale.label(0.2), scale.label(0.01)
('confident', 'likely', 'unsure', "the sources don't say")
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CONFIDENT = "confident"
LIKELY = "likely"
UNSURE = "unsure"
ABSTAINED = "the sources don't say"
LABELS = (CONFIDENT, LIKELY, UNSURE, ABSTAINED)

# Calibrated probability from which an answer is "likely" (right more often than not) and "confident".
LIKELY_FROM = 0.5
CONFIDENT_FROM = 0.8


@dataclass(frozen=True, slots=True)
class ConfidenceScale:
    """Cut points on ``Answer.confidence``; ``abstain_below`` is the ranker's own threshold.

    The bands never invert: a ranker whose threshold is above 0.5 leaves no
    "unsure" band (``likely_from`` is at least ``abstain_below``).
    """

    abstain_below: float
    likely_from: float = LIKELY_FROM
    confident_from: float = CONFIDENT_FROM
    calibrated: bool = True  # False: the confidence is a raw score, not a probability

    def __post_init__(self) -> None:
        for name in ("abstain_below", "likely_from", "confident_from"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or math.isnan(value):
                raise ValueError(f"{name} must be a number, not {value!r}")
        object.__setattr__(self, "likely_from", max(self.likely_from, self.abstain_below))
        object.__setattr__(self, "confident_from", max(self.confident_from, self.likely_from))

    @classmethod
    def for_ranker(cls, threshold: float, meta: Mapping[str, Any] | None = None) -> ConfidenceScale:
        """The scale of a calibrated ranker: its threshold, and its own cut points when its file names them."""
        words = (meta or {}).get("confidence_words") or {}
        likely = words.get("likely", LIKELY_FROM) if isinstance(words, Mapping) else LIKELY_FROM
        confident = words.get("confident", CONFIDENT_FROM) if isinstance(words, Mapping) else CONFIDENT_FROM
        return cls(float(threshold), float(likely), float(confident))

    @classmethod
    def uncalibrated(cls, threshold: float) -> ConfidenceScale:
        """The scale of a raw score (the first stage alone): answers are "likely" at best."""
        return cls(float(threshold), float(threshold), math.inf, calibrated=False)

    def label(self, confidence: float, abstained: bool | None = None) -> str:
        """The words for a confidence; ``abstained`` (when known) wins over the number.

        >>> ConfidenceScale(0.037).label(0.9, abstained=True)
        "the sources don't say"
        """
        if abstained if abstained is not None else confidence < self.abstain_below:
            return ABSTAINED
        if confidence >= self.confident_from:
            return CONFIDENT
        if confidence >= self.likely_from:
            return LIKELY
        return UNSURE

    def to_dict(self) -> dict[str, Any]:
        """The cut points as plain data (``confident_from`` is null when nothing is "confident")."""
        return {
            "abstain_below": self.abstain_below,
            "likely_from": self.likely_from,
            "confident_from": None if math.isinf(self.confident_from) else self.confident_from,
            "calibrated": self.calibrated,
        }
