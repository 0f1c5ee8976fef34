"""Offline question answering over source texts, citing exact source spans.

>>> from qa import answer
>>> answer("How many vehicles did Mitsubishi sell in Southeast Asia?").sources[0].text[:22]
'Mitsubishi Motors sold'
"""

from __future__ import annotations

import logging

from qa.answer import MAX_K, MAX_QUESTION_CHARS, Engine, answer, get_engine
from qa.build import Status, build_index, index_status
from qa.types import (
    Answer,
    CorpusError,
    Document,
    IndexBusyError,
    IndexStateError,
    Manifest,
    Passage,
    Phrase,
    QAError,
    QuestionError,
    Sentence,
    Source,
)

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "MAX_K",
    "MAX_QUESTION_CHARS",
    "Answer",
    "CorpusError",
    "Document",
    "Engine",
    "IndexBusyError",
    "IndexStateError",
    "Manifest",
    "Passage",
    "Phrase",
    "QAError",
    "QuestionError",
    "Sentence",
    "Source",
    "Status",
    "answer",
    "build_index",
    "get_engine",
    "index_status",
]
