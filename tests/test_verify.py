"""The shipped answer-sentence verifier: its checksum, offline ONNX loading, what it tells apart, and its training."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qa.embed import threads
from qa.verify import DEFAULT_VERIFIER, VerifierError, load_verifier

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_SHA256 = "71eb91ee43207e42ca34253246f70967d63634e663ba7c55ed7756349ce2e675"

SOLD = "Mitsubishi Motors sold about 280,000 vehicles in Southeast Asia last fiscal year, more than Nissan or Renault."
STAKE = "Nissan became Mitsubishi Motors’ top shareholder in 2016, taking a 34% stake."
STRONG = "He apparently has decided that Mitsubishi Motors is now strong enough to contribute."


def test_shipped_verifier_matches_its_recorded_checksum_and_card() -> None:
    assert hashlib.sha256(DEFAULT_VERIFIER.read_bytes()).hexdigest() == SHIPPED_SHA256
    assert DEFAULT_VERIFIER.stat().st_size <= 25 * 1024 * 1024
    info = json.loads(DEFAULT_VERIFIER.with_name("verifier.json").read_text())
    assert info["base"].startswith("all-MiniLM-L6-v2") and info["layers"] == 6
    card = DEFAULT_VERIFIER.with_name("verifier.md").read_text()
    assert SHIPPED_SHA256 in card and "CC BY-SA 4.0" in card


def test_verifier_tells_the_answer_from_same_topic_sentences() -> None:
    verifier = load_verifier()
    scores = verifier.scores("How many vehicles did Mitsubishi sell in Southeast Asia?", [STAKE, SOLD, STRONG])
    assert scores.argmax() == 1 and scores[1] > 0 > max(scores[0], scores[2])
    # Same topic, no answer: every sentence is judged not to answer.
    assert verifier.scores("Who is the CEO of Mitsubishi Motors?", [SOLD, STAKE, STRONG]).max() < 0
    assert verifier.scores("Anything?", []).shape == (0,)


def test_a_question_is_verified_the_same_alone_and_while_others_are() -> None:
    # Alone it runs on every core; while other questions are verified, on one thread each.
    from concurrent.futures import ThreadPoolExecutor

    verifier = load_verifier()
    question = "How many vehicles did Mitsubishi sell in Southeast Asia?"
    pairs = [STRONG, SOLD, " ".join([STAKE] * 3)]
    alone = verifier.scores(question, pairs).tolist()
    with ThreadPoolExecutor(8) as pool:
        busy = list(pool.map(lambda _: verifier.scores(question, pairs).tolist(), range(16)))
    assert all(scores == pytest.approx(alone, abs=1e-4) for scores in busy)
    assert threads() == 1 or verifier._sessions._one is not None  # the one-thread path did run


def test_verifier_loads_without_torch_and_a_bad_file_is_a_clear_error(tmp_path: Path) -> None:
    code = (
        "import sys; from qa.verify import load_verifier; load_verifier().scores('Who?', ['Nobody.']); "
        "print([m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    bad = tmp_path / "verifier-int8.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(VerifierError, match="cannot load the verifier"):
        load_verifier(bad)
    with pytest.raises(VerifierError, match="no verifier model"):
        load_verifier(tmp_path / "missing.onnx")


def test_training_command_runs_end_to_end_on_a_tiny_slice(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    rows = []
    for i, article in enumerate(["A.txt", "B.txt", "C.txt"]):
        rows += [
            {"article": article, "question": f"How many vehicles were sold in year {i}?", "sentence": SOLD,
             "label": 1, "kind": "gold"},
            {"article": article, "question": f"How many vehicles were sold in year {i}?", "sentence": STRONG,
             "label": 0, "kind": "retrieved"},
        ]  # fmt: skip
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "train_verifier.py"), str(pairs), "--out", str(out),
         "--layers", "1", "--epochs", "1", "--batch", "4", "--folds", "3", "--holdout", "0", "--bucket"],
        capture_output=True, text=True, timeout=600, check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    info = json.loads((out / "verifier.json").read_text())
    assert info["held_out_articles"] == ["A.txt"] and info["pairs"] == 4
    assert info["bucket"] == 50 and info["steps"] == 1  # length buckets keep the batch count
    assert info["held_out_top1_int8"] is not None
    trained = load_verifier(out / "verifier-int8.onnx")
    assert trained.scores("How many vehicles?", [SOLD, STRONG]).shape == (2,)
