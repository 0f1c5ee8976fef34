"""Answer quality: context, abstention, follow-ups, and the evaluation metrics."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from qa import answer
from qa.answer import Engine
from qa.cli import main
from qa.eval import Case, evaluate, evaluate_beir, is_hit, load_cases, retrieval_metrics


def top(question: str, index: Path, history: tuple[str, ...] = ()) -> str:
    return " ".join(answer(question, history=history, index=index).sources[0].text.split())


# --- retrieval that understands context -----------------------------------------


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("Which cloud platform will the alliance use?", "Utilising the tech giant’s Azure cloud"),
        ("Under which brand will the minivan be sold?", "The vehicle will be sold as a different model"),
        ("What cheating scandal hit Mitsubishi?", "fuel economy falsification scandal"),
        ("What percentage of Mitsubishi Motors does Nissan own?", "taking a 34% stake"),
    ],
)
def test_sentences_that_need_their_context_are_found(article_index: Path, question: str, expected: str) -> None:
    assert expected in top(question, article_index)


def test_headline_does_not_win_vague_questions(article_index: Path) -> None:
    for question in ("What did Mitsubishi do?", "What is happening with the alliance?", "What did Nissan do?"):
        assert top(question, article_index) != "Mitsubishi becomes part of the RenaultNissan Alliance."


# --- abstention ---------------------------------------------------------------------


@pytest.mark.parametrize("question", ["Who discovered penicillin?", "How do I change a flat tyre on a bike?"])
def test_off_topic_questions_abstain(article_index: Path, question: str) -> None:
    result = answer(question, index=article_index)
    assert result.abstained
    assert "don't answer" in result.text and "low confidence" in result.text
    assert result.sources  # the closest matches are still listed


def test_answerable_question_does_not_abstain(article_index: Path) -> None:
    result = answer("Which company makes batteries for the alliance's electric cars in China?", index=article_index)
    assert not result.abstained and "Contemporary Amperex Technology" in result.sources[0].text


def test_a_terse_paraphrase_still_finds_the_sentence_that_answers(article_index: Path) -> None:
    # The reader is less sure of it (confidence 0.035, under the 0.0417 threshold: docs/benchmarks.md),
    # so it may abstain; the sentence that answers is still the one shown first.
    result = answer("Who makes batteries for the alliance?", index=article_index)
    assert "Contemporary Amperex Technology" in result.sources[0].text


# --- follow-up questions ------------------------------------------------------------


def test_follow_up_uses_the_earlier_question(article_index: Path) -> None:
    history = ("Which minivan will Mitsubishi supply to Nissan?",)
    result = answer("Where is it built?", history=history, index=article_index)
    assert not result.abstained
    assert "Indonesia-built Xpander minivan" in result.sources[0].text


def test_follow_up_finds_the_next_sentence(article_index: Path) -> None:
    history = ("Where will Mitsubishi open training facilities?",)
    assert "Nissan will gain access starting in August." in top("When will Nissan gain access?", article_index, history)


def test_standalone_question_ignores_unrelated_history(article_index: Path) -> None:
    question = "How many vehicles did Mitsubishi sell in Southeast Asia?"
    alone = answer(question, index=article_index)
    after = answer(question, history=("Who is Carlos Ghosn?", "When was the alliance formed?"), index=article_index)
    assert after.sources == alone.sources
    off_topic = answer("What is the capital of Japan?", history=("Who is Carlos Ghosn?",), index=article_index)
    assert off_topic.abstained


# --- evaluation metrics ---------------------------------------------------------------


def test_is_hit_collapses_whitespace_and_rejects_long_sources() -> None:
    assert is_hit("sold\xa0about  280,000\nvehicles in Asia.", ["about 280,000 vehicles"])
    assert not is_hit("sold about 280,000 cars.", ["280,000 vehicles"])
    assert not is_hit("x " * 200 + "280,000 vehicles", ["280,000 vehicles"])  # 416 characters


def test_retrieval_metrics_match_hand_computed_values() -> None:
    qrels = {"q1": {"d1": 1, "d2": 1}, "q2": {"d9": 1}}
    run = {"q1": {"d3": 3.0, "d1": 2.0, "d2": 1.0}, "q2": {"d4": 1.0}}
    # q1: DCG = 1/log2(3) + 1/log2(4) = 1.13093; ideal = 1 + 1/log2(3) = 1.63093 -> 0.69342; q2: 0.
    metrics = retrieval_metrics(run, qrels)
    assert metrics["ndcg@10"] == pytest.approx((0.69342 + 0.0) / 2, abs=1e-4)
    assert metrics["recall@10"] == pytest.approx(0.5)
    assert metrics["recall@100"] == pytest.approx(0.5)


def test_evaluate_counts_hits_abstentions_and_follow_ups(make_corpus, tmp_path: Path) -> None:
    corpus = make_corpus(
        {"zoo.txt": "The zoo has three elephants. They arrived from Kenya in 2019.\n\nPenguins live in the cold hall."}
    )
    engine = Engine(tmp_path / "index", corpus)
    cases = [
        Case("a", ["How many elephants does the zoo have?"], ["three elephants"]),
        Case("b", ["Where do the penguins live?"], ["cold hall"]),
        Case("c", ["Who won the chess world championship?"], None),
        Case("d", ["How many elephants does the zoo have?", "Where did they come from?"], ["from Kenya"]),
    ]
    summary = evaluate(cases, engine).summary()
    assert (summary["answerable"], summary["top1"], summary["top3"]) == (2, 2, 2)
    assert summary["abstention_recall"] == 1.0 and summary["abstention_precision"] == 1.0
    assert (summary["follow_ups"], summary["follow_up_correct"]) == (1, 1)
    assert summary["misses"] == []


def test_qa_eval_command(make_corpus, tmp_path: Path) -> None:
    corpus = make_corpus({"zoo.txt": "The zoo has three elephants. Penguins live in the cold hall."})
    questions = tmp_path / "q.jsonl"
    rows = [
        {"id": "1", "question": "How many elephants are there?", "gold": ["three elephants"]},
        {"id": "2", "question": "Who painted the Mona Lisa?", "gold": None},
    ]
    questions.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    assert [c.gold for c in load_cases(questions)] == [["three elephants"], None]
    result = CliRunner(env={"QA_CORPUS": str(corpus)}).invoke(
        main, ["eval", str(questions), "--index", str(tmp_path / "index")]
    )
    assert result.exit_code == 0, result.output
    assert "top-1 1/1" in result.output and "abstained 1/1 unanswerable" in result.output
    bad = CliRunner().invoke(main, ["eval", str(tmp_path / "missing.jsonl")])
    assert bad.exit_code == 2 and "cannot read" in bad.output


def test_beir_evaluation_on_a_tiny_data_set(tmp_path: Path) -> None:
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    docs = [
        {"_id": "d1", "title": "Elephants", "text": "Elephants are the largest land animals. They live in Africa."},
        {"_id": "d2", "title": "Penguins", "text": "Penguins cannot fly. They swim in cold southern seas."},
        {"_id": "d3", "title": "Volcanoes", "text": "Volcanoes erupt molten rock. Lava cools into basalt."},
    ]
    with gzip.open(folder / "corpus.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(json.dumps(d) for d in docs))
    queries = [
        {"_id": "q1", "text": "Which birds swim but cannot fly?"},
        {"_id": "q2", "text": "What does lava become?"},
    ]
    (folder / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries), encoding="utf-8")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\nq2\td3\t1\n")
    result = evaluate_beir(folder, work=tmp_path / "work")
    assert result["queries"] == 2 and result["documents"] == 3
    assert result["dense"]["ndcg@10"] == pytest.approx(1.0)
    assert result["shipped"]["ndcg@10"] == pytest.approx(1.0)
