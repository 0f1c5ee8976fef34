"""The learned ranker: training end to end, the shipped file, confidence and the verifier hook."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from qa import answer
from qa.answer import Engine
from qa.cli import main
from qa.rank import FEATURES, SHIPPED, RankerError, file_sha256, load_ranker
from qa.squad import prepare
from qa.verify import DEFAULT_VERIFIER
from tests.squad_tiny import write_tiny_squad

# Recorded when qa/models/ranker.json was written by `qa train` (see qa/models/README.md).
SHIPPED_SHA256 = (SHIPPED.parent / "ranker.json.sha256").read_text(encoding="utf-8").split()[0]


def test_train_command_runs_end_to_end_on_a_tiny_slice(tmp_path: Path) -> None:
    squad = write_tiny_squad(tmp_path)
    out = tmp_path / "ranker.json"
    args = ["train", "--squad", str(squad), "--work", str(tmp_path / "work"), "--folds", "3", "--out", str(out),
            "--limit-articles", "3", "--limit-questions", "6"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text(encoding="utf-8"))
    assert saved["format"] == 1 and saved["features"] == list(FEATURES)
    meta = saved["meta"]
    assert meta["data_sha256"] == file_sha256(squad) and meta["folds"] == 3 and meta["questions"] == 18
    assert "qa train" in meta["command"] and meta["date"]
    ranker = load_ranker(out)
    assert 0 < ranker.threshold < 1
    # the fitted ranker answers from the tiny corpus: the right sentence first, a probability as confidence
    engine = Engine(tmp_path / "work" / "index")
    engine.ranker = ranker
    a = engine.answer("Who is the mayor of Harbour Town?")
    assert a.sources[0].text == "The mayor is Ellen Sand." and 0 <= a.confidence <= 1


def test_a_larger_abstain_quantile_raises_the_threshold_and_is_recorded(tmp_path: Path) -> None:
    squad = write_tiny_squad(tmp_path)
    thresholds = {}
    for quantile in (None, "0.3"):
        out = tmp_path / f"ranker-{quantile}.json"
        args = ["train", "--squad", str(squad), "--work", str(tmp_path / "work"), "--folds", "3", "--out", str(out),
                "--limit-articles", "3", "--limit-questions", "6"]  # fmt: skip
        result = CliRunner().invoke(main, args + (["--abstain-quantile", quantile] if quantile else []))
        assert result.exit_code == 0, result.output
        meta = json.loads(out.read_text(encoding="utf-8"))["meta"]
        assert meta["abstain_quantile"] == float(quantile or 0.035)  # qa.train.ABSTAIN_QUANTILE, as documented
        assert ("--abstain-quantile 0.3" in meta["command"]) == (quantile is not None)
        thresholds[quantile] = load_ranker(out).threshold
    assert thresholds["0.3"] > thresholds[None]
    bad = CliRunner().invoke(main, ["train", "--squad", str(squad), "--abstain-quantile", "0.7"])
    assert bad.exit_code == 2 and "0.7" in bad.output


def test_training_with_the_reader_calibrates_on_one_article_corpora_too(tmp_path: Path) -> None:
    from qa.reader import DEFAULT_READER

    squad = write_tiny_squad(tmp_path)
    out = tmp_path / "ranker.json"
    args = ["train", "--squad", str(squad), "--work", str(tmp_path / "work"), "--folds", "3", "--out", str(out),
            "--verifier", str(DEFAULT_READER), "--one-article", "--calibration", "top,margin,verifier_top"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    meta = json.loads(out.read_text(encoding="utf-8"))["meta"]
    assert meta["verifier"] == "reader-int8.onnx" and "each article alone" in meta["calibration_corpora"]
    # every article got an index of its own, and the calibrator saw both sizes' held-out questions
    assert sorted(p.name for p in (tmp_path / "work" / "small").iterdir()) == [
        "Blue_Lantern_Festival", "Copper_Valley_Railway", "Harbour_Town"]  # fmt: skip
    assert meta["calibration_examples"] > 3 * 21  # all-articles (3 ways) plus one-article examples
    one_article = Engine(tmp_path / "work" / "small" / "Harbour_Town" / "index")
    one_article.ranker = load_ranker(out)
    assert one_article.answer("Who is the mayor of Harbour Town?").sources[0].text == "The mayor is Ellen Sand."


def test_shipped_ranker_matches_its_checksum_and_loads_offline() -> None:
    assert file_sha256(SHIPPED) == SHIPPED_SHA256
    ranker = load_ranker()
    assert ranker.features == FEATURES and ranker.meta["data_sha256"] and ranker.meta["command"].startswith("qa train")
    x = np.zeros((3, len(FEATURES)), dtype=np.float32)
    assert 0 <= ranker.rank(np.arange(3), x).confidence <= 1


def test_a_corrupted_ranker_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "ranker.json"
    bad.write_text('{"format": 99}', encoding="utf-8")
    with pytest.raises(RankerError, match="format 99"):
        load_ranker(bad)
    bad.write_text("{", encoding="utf-8")
    with pytest.raises(RankerError, match="not a ranker file"):
        load_ranker(bad)


def test_confidence_is_a_probability_and_off_topic_questions_abstain(article_index: Path) -> None:
    a = answer("How many vehicles did Mitsubishi sell in Southeast Asia?", index=article_index)
    assert not a.abstained and 0 < a.confidence <= 1
    assert answer("What is the capital of Japan?", index=article_index).abstained


class KeywordVerifier:
    """A stand-in verifier with a fixed rule: a high logit for sentences naming a keyword."""

    def __init__(self, keyword: str) -> None:
        self.keyword = keyword
        self.calls = 0

    def scores(self, question: str, sentences: list[str], contexts: list[str] | None = None) -> np.ndarray:
        self.calls += 1
        return np.array([8.0 if self.keyword in s else -8.0 for s in sentences], dtype=np.float32)


def test_the_verifier_logit_is_a_feature_of_the_final_score(tmp_path: Path) -> None:
    squad = write_tiny_squad(tmp_path)
    _, corpus, index = prepare(squad, tmp_path / "work")
    engine = Engine(index, corpus)
    base = load_ranker()
    weights = base.weights.copy()
    weights[FEATURES.index("verifier")] = 10.0  # a ranker trained with a verifier would weigh it
    from dataclasses import replace

    engine.ranker = replace(base, weights=weights)
    question = "When was Harbour Town founded?"
    engine.verifier = KeywordVerifier("14,000")  # points at a wrong sentence of the first-stage top 5
    wrong = engine.answer(question)
    assert engine.verifier.calls == 1 and "14,000" in wrong.sources[0].text
    engine.verifier = KeywordVerifier("1723")
    assert "1723" in engine.answer(question).sources[0].text


def test_the_verifier_reads_the_first_rankers_best_and_the_file_keeps_its_inputs(tmp_path: Path) -> None:
    from dataclasses import replace

    from qa.rank import Ranker, add_verification

    shipped = load_ranker()
    # the shipped file names its calibrator's inputs, the reader's logits among them
    assert shipped.pre_weights is not None and "verifier_top" in shipped.calibration
    # a first ranker that prefers long sentences decides which candidates the verifier reads
    pre = np.zeros(len(FEATURES), dtype=np.float32)
    pre[FEATURES.index("length")] = 1.0
    ranker = replace(shipped, pre_weights=pre, pre_bias=0.0, calibration=("top", "verifier_max"),
                     calibrator=(1.0, 0.5, -1.0), verify_top=2, verify_margin=None)  # fmt: skip
    x = np.zeros((4, len(FEATURES)), dtype=np.float32)
    x[:, FEATURES.index("length")] = [1.0, 4.0, 2.0, 3.0]
    assert list(ranker.verify_rows(x)) == [1, 3]
    verifier = KeywordVerifier("x")

    class Sent:
        def __init__(self, text: str) -> None:
            self.text = text

    verified = add_verification(x, np.arange(4), "q", [Sent(t) for t in "abcd"], verifier, ranker.verify_rows(x))
    read = verified[:, FEATURES.index("verified")]
    assert list(read) == [0.0, 1.0, 0.0, 1.0] and verifier.calls == 1
    # the cascade and the named calibrator inputs survive the file
    path = ranker.save(tmp_path / "r.json")
    again = load_ranker(path)
    assert np.allclose(again.pre_weights, pre) and again.calibration == ("top", "verifier_max")
    assert again.confidence(np.array([2.0, 1.0]), verified[:2]) == ranker.confidence(np.array([2.0, 1.0]), verified[:2])
    data = json.loads(path.read_text(encoding="utf-8"))
    data["calibration_inputs"] = ["top", "mood"]
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(RankerError, match="mood"):
        load_ranker(path)
    assert isinstance(again, Ranker)


class CountingVerifier:
    """The real verifier, counting the sentences each question makes it read."""

    def __init__(self) -> None:
        from qa.verify import load_verifier

        self.inner = load_verifier(DEFAULT_VERIFIER)
        self.reads_context = self.inner.reads_context
        self.read: list[int] = []

    def scores(self, question: str, sentences: list[str], contexts: list[str] | None = None) -> np.ndarray:
        self.read.append(len(sentences))
        return self.inner.scores(question, sentences, contexts)


def test_the_verifier_skips_candidates_far_behind_the_first_rankers_best(tmp_path: Path, article_index: Path) -> None:
    from dataclasses import replace

    from qa.rank import VERIFY_MARGIN, select_verified

    pre = np.zeros(len(FEATURES), dtype=np.float32)
    pre[FEATURES.index("length")] = 1.0  # a first ranker that scores a candidate by its "length" feature
    x = np.zeros((6, len(FEATURES)), dtype=np.float32)
    x[:, FEATURES.index("length")] = [5.0, 0.5, 4.5, 2.0, 0.9, 6.0]
    assert list(select_verified(x, 5, None, pre)) == [5, 0, 2, 3, 4]
    assert list(select_verified(x, 5, 4.0, pre)) == [5, 0, 2, 3]  # 0.9 is 5.1 behind the best, 6.0
    assert list(select_verified(x, 5, 0.0, pre)) == [5]
    assert list(select_verified(x, 3, 4.0, None)) == [0, 1, 2]  # no first ranker: the first-stage order
    ranker = replace(load_ranker(), pre_weights=pre, pre_bias=0.0, verify_margin=4.0)
    assert list(ranker.verify_rows(x)) == [5, 0, 2, 3]
    # the margin survives the file; a file written before margins has the verifier read all five
    path = ranker.save(tmp_path / "r.json")
    assert load_ranker(path).verify_margin == 4.0
    data = json.loads(path.read_text(encoding="utf-8"))
    del data["verify_margin"]
    path.write_text(json.dumps(data), encoding="utf-8")
    assert load_ranker(path).verify_margin is None
    # the shipped ranker: a clear question has the verifier read fewer than five sentences, same answer
    shipped = load_ranker()
    assert shipped.verify_margin == VERIFY_MARGIN
    question = "How many vehicles did Mitsubishi sell in Southeast Asia?"
    engine = Engine(article_index)
    answers = {}
    for margin in (VERIFY_MARGIN, None):
        engine.ranker = replace(shipped, verify_margin=margin)
        engine.verifier = counting = CountingVerifier()
        answers[margin] = engine.answer(question)
        assert len(counting.read) == 1
        assert (counting.read[0] < 5) if margin is not None else (counting.read[0] == 5)
    assert "280,000" in answers[VERIFY_MARGIN].sources[0].text and not answers[VERIFY_MARGIN].abstained
    first, all_five = answers[VERIFY_MARGIN].sources[0], answers[None].sources[0]
    assert (first.doc, first.start, first.end) == (all_five.doc, all_five.start, all_five.end)


def test_a_verifier_retrained_into_the_same_file_is_scored_again(tmp_path: Path) -> None:
    """The SQuAD example cache follows the verifier's content: no stale scores after a retrain in place."""
    squad = write_tiny_squad(tmp_path)
    model = tmp_path / "v" / "verifier-int8.onnx"
    model.parent.mkdir()
    shutil.copy(DEFAULT_VERIFIER, model)

    def train(out: Path) -> np.ndarray:
        args = ["train", "--squad", str(squad), "--work", str(tmp_path / "work"), "--folds", "3", "--out", str(out),
                "--limit-articles", "3", "--limit-questions", "6", "--verifier", str(model)]  # fmt: skip
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        return np.asarray(json.loads(out.read_text(encoding="utf-8"))["weights"], dtype=float)

    before = train(tmp_path / "r1.json")
    saved = json.loads((tmp_path / "r1.json").read_text(encoding="utf-8"))
    assert saved["verify_margin"] == 4.0 and "--verify-margin 4 " in saved["meta"]["command"]
    bad = CliRunner().invoke(main, ["train", "--squad", str(squad), "--verifier", str(model), "--verify-margin", "-1"])
    assert bad.exit_code == 2 and "--verify-margin takes a number of logits" in bad.output
    # retrain into the same folder: a one-layer model on two pairs scores differently
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"article": "A.txt", "question": "Who is the mayor?", "sentence": s, "label": y, "kind": "gold"}
            for s, y in (("The mayor is Ellen Sand.", 1), ("The town has a lighthouse.", 0))]  # fmt: skip
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve().parent.parent / "bench" / "train_verifier.py"), str(pairs),
         "--out", str(model.parent), "--layers", "1", "--epochs", "1", "--batch", "2", "--no-eval"],
        capture_output=True, text=True, timeout=600, check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    after = train(tmp_path / "r2.json")
    assert not np.allclose(before, after)


def test_the_topic_gap_is_how_far_the_best_cosine_falls_below_the_topic_cosine() -> None:
    from qa.rank import TOPIC_COSINE, calibration_inputs

    names = ("best_cosine", "topic_gap")
    x = np.zeros((3, len(FEATURES)), dtype=np.float32)
    x[:, FEATURES.index("dense")] = [0.10, 0.25, 0.20]
    best, gap = calibration_inputs(np.array([1.0, 0.0, -1.0]), x, names)
    assert best == pytest.approx(0.25) and gap == pytest.approx(TOPIC_COSINE - 0.25)
    x[1, FEATURES.index("dense")] = 0.9  # the topic is in the corpus: no gap
    assert calibration_inputs(np.array([1.0, 0.0, -1.0]), x, names)[1] == 0.0
    assert calibration_inputs(np.zeros(0), x[:0], names)[1] == TOPIC_COSINE  # no candidate at all
