"""The answer() contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qa import MAX_QUESTION_CHARS, Answer, QuestionError, answer


def test_cites_the_280000_vehicles_sentence(article_index: Path, article_text: str) -> None:
    result = answer("How many vehicles did Mitsubishi sell in Southeast Asia?", index=article_index)
    assert isinstance(result, Answer) and not result.abstained
    top = result.sources[0]
    assert "280,000 vehicles" in top.text
    assert article_text[top.start : top.end] == top.text
    assert top.passage_start <= top.start < top.end <= top.passage_end
    assert "280,000" in result.text
    assert [s.score for s in result.sources] == sorted((s.score for s in result.sources), reverse=True)


def test_k_sources_and_json(article_index: Path) -> None:
    result = answer("Who is Carlos Ghosn?", k=5, index=article_index)
    assert len(result.sources) == 5
    data = json.loads(json.dumps(result.to_dict()))
    assert data["sources"][0]["text"] == result.sources[0].text
    assert set(data["sources"][0]) == {
        "doc", "start", "end", "text", "score", "passage_start", "passage_end", "page", "pages", "heading", "boxes",
    }  # fmt: skip
    assert data["sources"][0]["page"] is None and data["sources"][0]["boxes"] == []  # a .txt has no pages


@pytest.mark.parametrize(
    ("question", "k", "message"),
    [
        ("", 3, "empty"),
        ("   \n\t", 3, "empty"),
        ("x" * (MAX_QUESTION_CHARS + 1), 3, "limit is 2,000"),
        ("A fine question?", 0, r"sources \(k\) must be"),
        ("A fine question?", 21, r"sources \(k\) must be"),
        ("A fine question?", "3", r"sources \(k\) must be"),
    ],
)
def test_bad_input_is_a_clear_error_without_touching_the_index(
    tmp_path: Path, question: str, k: object, message: str
) -> None:
    index = tmp_path / "never-built"
    with pytest.raises(QuestionError, match=message):
        answer(question, k=k, index=index)  # type: ignore[arg-type]
    assert not index.exists()
    with pytest.raises(ValueError):  # QuestionError is a ValueError
        answer(question, k=k, index=index)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("history", "message"),
    [("an earlier question", "history must be a list"), ([3], "must be text"), (["x" * 2001], "limit")],
)
def test_bad_history_is_a_clear_error(tmp_path: Path, history: object, message: str) -> None:
    with pytest.raises(QuestionError, match=message):
        answer("A fine question?", history=history, index=tmp_path / "never-built")  # type: ignore[arg-type]
    assert not (tmp_path / "never-built").exists()


def test_a_sentence_repeated_word_for_word_is_listed_once(make_corpus, tmp_path: Path) -> None:
    from qa import build_index
    from qa.answer import Engine

    notice = "Visitors must sign in at the front desk. Badges are returned at the exit."
    corpus = make_corpus(
        {
            "handbook.txt": f"Security\n\n{notice} Cameras watch the car park.",
            "handbook-copy.txt": f"Security again\n\n{notice} Guards patrol at night.",
        }
    )
    build_index(corpus, tmp_path / "index")
    reply = Engine(tmp_path / "index", corpus).answer("Where must visitors sign in?", k=3)
    texts = [s.text for s in reply.sources]
    assert texts[0] == "Visitors must sign in at the front desk."
    assert len(texts) == 3 and len(set(texts)) == 3
