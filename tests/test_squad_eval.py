"""SQuAD-format evaluation: offsets, the exclude hook, rule-made chats and the metrics, by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from qa.answer import Engine
from qa.cli import main
from qa.eval import expected_calibration_error, reliability, tradeoff
from qa.squad import GoldMap, SquadError, follow_up_chats, load_squad, prepare
from tests.squad_tiny import write_tiny_squad


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(tiny SQuAD file, work folder with its index built)."""
    folder = tmp_path_factory.mktemp("squad")
    path = write_tiny_squad(folder)
    prepare(path, folder / "work")
    return path, folder / "work"


def test_answer_spans_map_to_document_offsets(tiny: tuple[Path, Path]) -> None:
    data = load_squad(tiny[0])
    assert len(data.articles) == 3 and len(data.questions) == 21
    texts = {a.doc: a.text for a in data.articles}
    for q in data.questions:
        start, end = q.spans[0]
        assert texts[q.article][start:end] == q.answers[0]
    harbour = data.articles[0]
    assert harbour.doc == "Harbour_Town.txt" and harbour.text.startswith(
        "Harbour Town\n\nHarbour Town is a fishing port"
    )
    # the file on disk is that text exactly, so the index's offsets are the same offsets
    assert (tiny[1] / "corpus" / harbour.doc).read_text(encoding="utf-8") == harbour.text


def test_a_file_that_is_not_squad_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"rows": []}', encoding="utf-8")
    with pytest.raises(SquadError, match="not a SQuAD JSON file"):
        load_squad(bad)
    result = CliRunner().invoke(main, ["eval", "--squad", str(tmp_path / "missing.json")])
    assert result.exit_code == 2 and "cannot read" in result.output


def test_excluded_sentences_are_never_returned(tiny: tuple[Path, Path]) -> None:
    data = load_squad(tiny[0])
    engine = Engine(tiny[1] / "index", tiny[1] / "corpus")
    engine.ranker = None
    retriever = engine.retriever()
    gold = GoldMap(retriever.data.sentences)
    q = next(q for q in data.questions if q.question == "Who is the mayor of Harbour Town?")
    asked = engine._answer(retriever, q.question, [], 5, remember=False)
    assert "The mayor is Ellen Sand." in [s.text for s in asked.sources]
    dropped = engine._answer(retriever, q.question, [], 5, remember=False, exclude=gold.overlapping(q))
    assert all("Ellen Sand" not in s.text for s in dropped.sources)
    off = engine._answer(retriever, q.question, [], 5, remember=False, exclude=gold.article(q.article))
    assert all(s.doc != "Harbour_Town.txt" for s in off.sources)


def test_follow_up_chats_replace_the_title_by_a_pronoun(tiny: tuple[Path, Path]) -> None:
    chats = follow_up_chats(load_squad(tiny[0]))
    assert chats, "the tiny data has questions naming their article's title twice in a paragraph"
    by_last = {c.turns[-1]: c for c in chats}
    assert "Who founded it?" in by_last
    assert by_last["Who founded it?"].turns[0] == "When was Harbour Town founded?"
    assert chats == follow_up_chats(load_squad(tiny[0]))  # by rule: the same every time


def test_reliability_and_ece_by_hand() -> None:
    conf = [0.05, 0.15, 0.12, 0.95, 0.91, 0.55]
    right = [False, True, False, True, False, True]
    table = reliability(conf, right)
    assert [b["n"] for b in table] == [1, 2, 0, 0, 0, 1, 0, 0, 0, 2]
    assert table[1] == {"low": 0.1, "high": 0.2, "n": 2, "confidence": 0.135, "accuracy": 0.5}
    # |0-0.05|*1 + |0.5-0.135|*2 + |1-0.55|*1 + |0.5-0.93|*2, over 6
    assert expected_calibration_error(conf, right) == pytest.approx((0.05 + 0.73 + 0.45 + 0.86) / 6, abs=1e-4)
    assert expected_calibration_error([1.0, 0.0], [True, False]) == 0.0


def test_tradeoff_by_hand() -> None:
    conf = [0.9, 0.8, 0.3, 0.7, 0.2]
    hit = [True, False, True, False, False]
    answerable = [True, True, True, False, False]
    (row,) = tradeoff(conf, hit, answerable, [0.5])
    # answered: 0.9 (right), 0.8 (wrong), 0.7 (unanswerable): precision 1/3; recall 1/3 of answerable
    assert row == {"threshold": 0.5, "precision": 0.3333, "recall": 0.3333,
                   "abstained_answerable": 0.3333, "abstained_unanswerable": 0.5}  # fmt: skip


def test_qa_eval_squad_cross_validates_on_a_tiny_slice(tiny: tuple[Path, Path]) -> None:
    args = ["eval", "--squad", str(tiny[0]), "--work", str(tiny[1]), "--folds", "3", "--chats", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    r = json.loads(result.output)
    assert r["articles"] == 3 and r["questions"] == 21 and r["folds"] == 3
    for name in ("today", "learned"):
        m = r[name]
        assert 0.5 <= m["top1_ranking"] <= 1 and m["top1"] <= m["top1_ranking"] <= m["top3"]
        assert 0 <= m["ece"] <= 1 and sum(b["n"] for b in m["reliability"]) == 3 * 21
        assert {"abstained_dropped", "abstained_off_corpus", "abstained_answerable", "tradeoff"} <= set(m)
        assert m["chats"] >= 1 and 0 <= m["chats_right"] <= m["chats"]
    assert r["learned"]["answer_ms_p50"] > 0
    text = CliRunner().invoke(main, args[:-1])
    assert text.exit_code == 0 and "expected calibration error" in text.output and "top-1" in text.output


def test_collected_candidates_are_cached_without_pickle(tiny: tuple[Path, Path]) -> None:
    caches = list(tiny[1].glob("examples-*.npz"))
    assert caches, "the evaluation keeps its candidates in the work folder"
    with np.load(caches[0], allow_pickle=False) as z:
        assert {"qids", "conditions", "x", "labels"} <= set(z.files)
