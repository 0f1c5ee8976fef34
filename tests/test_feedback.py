"""Ratings kept in SQLite (qa.feedback), exported as cases `qa eval` reads; the confidence in words."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from qa import Answer, Phrase, Source
from qa.confidence import ABSTAINED, CONFIDENT, LIKELY, UNSURE, ConfidenceScale
from qa.eval import load_cases
from qa.feedback import FILE_NAME, FeedbackError, FeedbackStore

SENTENCE = "Mitsubishi Motors sold about 280,000 vehicles in Southeast Asia last fiscal year."
SOURCE = Source("article.txt", 100, 100 + len(SENTENCE), SENTENCE, 2.5, 90, 300, heading="Sales")
ANSWERED = Answer(
    "How many vehicles did Mitsubishi sell?", f"280,000 — “{SENTENCE}” [1]", False, [SOURCE], 0.91, "v-1",
    Phrase("280,000", "article.txt", 129, 136, 0.6), "confident",
)  # fmt: skip
ABSTAINED_ANSWER = Answer("What is the capital of France?", "The sources don't answer this question.", True,
                          [SOURCE], 0.01, "v-1", None, ABSTAINED)  # fmt: skip


def qa_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qa.cli", *args], capture_output=True, text=True, timeout=120)


def test_ratings_round_trip_and_export_as_cases_qa_eval_reads(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "data")
    up = store.record(ANSWERED, rating=1)
    down = store.record(ANSWERED, rating=-1, history=["Who owns Mitsubishi?"], comment=" wrong year ")
    unanswerable = store.record(ABSTAINED_ANSWER, rating=1)
    assert (tmp_path / "data" / FILE_NAME).exists() and [up, down, unanswerable] == [1, 2, 3]
    rows = list(store.ratings())
    assert rows[1].comment == "wrong year" and rows[1].history == ["Who owns Mitsubishi?"]
    assert Answer.from_dict(rows[0].answer) == ANSWERED  # the whole answer is kept, phrase and label included

    cases = list(store.export_cases())
    assert cases[0]["question"] == ANSWERED.question and cases[0]["gold"] == [SENTENCE]  # the cited sentence
    assert cases[1]["turns"] == ["Who owns Mitsubishi?", ANSWERED.question] and cases[1]["gold"] is None
    assert cases[1]["review"] and cases[1]["comment"] == "wrong year"
    assert cases[2]["gold"] is None and "review" not in cases[2]  # an abstention rated right: unanswerable
    path = tmp_path / "cases.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in cases), encoding="utf-8")
    loaded = load_cases(path)  # the case marked for review waits for its gold
    assert [(c.id, c.turns, c.gold) for c in loaded] == [
        ("feedback-1", [ANSWERED.question], [SENTENCE]),
        ("feedback-3", [ABSTAINED_ANSWER.question], None),
    ]


def test_a_rating_is_one_transaction_and_bad_values_are_refused(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path)
    for bad in ({"rating": 0}, {"rating": True}, {"rating": 1, "comment": "x" * 3000}, {"rating": 1, "history": "q"}):
        with pytest.raises(FeedbackError):
            store.record(ANSWERED, **bad)  # type: ignore[arg-type]
    # Another connection holding the write lock: the rating waits, then is written whole.
    store.record(ANSWERED, rating=1)
    with sqlite3.connect(store.path) as other:
        assert other.execute("SELECT count(*), min(rating) FROM ratings").fetchone() == (1, 1)
        assert other.execute("PRAGMA user_version").fetchone() == (1,)


def test_the_data_folder_is_never_the_index(tmp_path: Path) -> None:
    with pytest.raises(FeedbackError, match="index folder"):
        FeedbackStore(tmp_path / "index", index=tmp_path / "index")
    with pytest.raises(FeedbackError, match="index folder"):
        FeedbackStore(tmp_path / "index" / "data", index=tmp_path / "index")
    assert FeedbackStore(tmp_path / "data", index=tmp_path / "index").folder == tmp_path / "data"


def test_cli_export_since_and_stats(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path)
    store.record(ANSWERED, rating=1)
    store.record(ABSTAINED_ANSWER, rating=-1)
    with sqlite3.connect(store.path) as conn:  # one rating from an earlier day
        conn.execute("UPDATE ratings SET rated_at = '2020-01-02T10:00:00+00:00' WHERE id = 1")
    exported = qa_cli("feedback", "export", "--data", str(tmp_path))
    assert exported.returncode == 0 and len(exported.stdout.splitlines()) == 2, exported.stderr
    today = datetime.now(UTC).date().isoformat()  # days are UTC days
    recent = qa_cli("feedback", "export", "--data", str(tmp_path), "--since", today)
    assert [json.loads(line)["id"] for line in recent.stdout.splitlines()] == ["feedback-2"]
    stats = qa_cli("feedback", "stats", "--data", str(tmp_path), "--json")
    assert json.loads(stats.stdout) == [
        {"day": "2020-01-02", "state": "answered", "up": 1, "down": 0},
        {"day": today, "state": "abstained", "up": 0, "down": 1},
    ]
    text = qa_cli("feedback", "stats", "--data", str(tmp_path)).stdout
    assert "2020-01-02  answered" in text and "total" in text
    missing = qa_cli("feedback", "export", "--data", str(tmp_path / "none"))
    assert missing.returncode == 0 and missing.stdout == ""


def test_confidence_words_are_bands_of_the_calibrated_probability() -> None:
    scale = ConfidenceScale.for_ranker(0.0372)
    assert [scale.label(p) for p in (0.01, 0.04, 0.49, 0.5, 0.79, 0.8, 0.99)] == [
        ABSTAINED, UNSURE, UNSURE, LIKELY, LIKELY, CONFIDENT, CONFIDENT,
    ]  # fmt: skip
    assert scale.label(0.95, abstained=True) == ABSTAINED
    # A refit ranker keeps the bands' meaning: its threshold moves the abstention cut only, or
    # swallows the "unsure" band when it is above 0.5; its file may name its own cut points.
    assert ConfidenceScale.for_ranker(0.6).label(0.55) == ABSTAINED
    assert ConfidenceScale.for_ranker(0.6).label(0.65) == LIKELY
    own = ConfidenceScale.for_ranker(0.05, {"confidence_words": {"likely": 0.4, "confident": 0.9}})
    assert (own.label(0.45), own.label(0.85), own.label(0.9)) == (LIKELY, LIKELY, CONFIDENT)
    # Without the learned ranker the score is a cosine, not a probability: never "confident".
    raw = ConfidenceScale.uncalibrated(0.40)
    assert (raw.label(0.3), raw.label(0.41), raw.label(0.99)) == (ABSTAINED, LIKELY, LIKELY)


def test_answers_carry_their_confidence_words(article_index: Path) -> None:
    from qa import get_engine

    engine = get_engine(article_index)
    scale = engine.confidence_scale()
    assert scale.abstain_below == engine.threshold() and scale.calibrated
    for question in ("How many vehicles did Mitsubishi sell in Southeast Asia?", "What is the capital of France?"):
        a = engine.answer(question)
        assert a.confidence_label == scale.label(a.confidence, a.abstained)
        assert a.to_dict()["confidence_label"] == a.confidence_label
    assert engine.answer("What is the capital of France?").confidence_label == ABSTAINED
