"""Reading and splitting: exact offsets, encodings, prose detection."""

from __future__ import annotations

import logging
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qa.corpus import corpus_files, read_corpus, split_document
from qa.types import Document

from .conftest import ARTICLE_ID


def doc(text: str, doc_id: str = "d.txt") -> Document:
    return Document(doc_id, text, "0" * 64)


def test_article_offsets_round_trip(article_text: str) -> None:
    passages, sentences = split_document(doc(article_text, ARTICLE_ID))
    assert passages and sentences
    for p in passages:
        assert article_text[p.start : p.end] == p.text
    for s in sentences:
        assert article_text[s.start : s.end] == s.text
        assert s.passage_start <= s.start < s.end <= s.passage_end
        assert s.text == s.text.strip()


def test_article_sentences_are_whole(article_text: str) -> None:
    _, sentences = split_document(doc(article_text))
    texts = [s.text for s in sentences]
    assert (
        "Mitsubishi Motors sold about 280,000 vehicles in Southeast Asia last fiscal year, "
        "more than Nissan or Renault." in texts
    )
    assert "Nissan will gain access starting in August." in texts
    assert any(t.startswith("Beginning in 2019, Mitsubishi Motors will supply its\xa0popular") for t in texts)


def test_page_chrome_and_title_are_not_citable(article_text: str) -> None:
    _, sentences = split_document(doc(article_text))
    citable = [s.text for s in sentences if s.citable]
    for chrome in ("Leave a Reply", "Log", "Connecting to", "Google photo", "You are commenting", "Fill in"):
        assert not any(t.startswith(chrome) for t in citable), chrome
    assert "Mitsubishi partner Nissan-Renault Alliance for Southeast Asia" not in citable
    assert sum(s.citable for s in sentences) == 21


def test_abbreviations_quotes_and_numbers() -> None:
    text = (
        "Title line\n\nMr. Smith paid $1.5 million, i.e. 280,000 euros, to the U.S. firm on Jan. 5. "
        "“It is done,” he said. She left.\n"
    )
    _, sentences = split_document(doc(text))
    assert [s.text for s in sentences if s.citable] == [
        "Mr. Smith paid $1.5 million, i.e. 280,000 euros, to the U.S. firm on Jan. 5.",
        "“It is done,” he said.",
        "She left.",
    ]


def test_markdown_headings_and_lists_stand_alone() -> None:
    text = "# Guide\n\nIntro sentence is here.\n\n## Setup\n- Install the package first\n- Then run the tool now\n"
    _, sentences = split_document(doc(text))
    by_text = {s.text: s.citable for s in sentences}
    assert by_text["# Guide"] is False
    assert by_text["## Setup"] is False
    assert by_text["Intro sentence is here."] is True


def test_a_paragraph_seen_before_is_cited_at_its_new_place() -> None:
    # Paragraphs are split once and remembered by text: a second document holding
    # the same paragraph elsewhere still gets exact offsets into its own text.
    shared = "The plant opened in 1998. It employs 400 people."
    first = doc(f"Report\n\n{shared}\n")
    second = doc(f"Another title here\n\nA different opening sentence.\n\n{shared}\n\nClosing words are here.\n")
    for d in (first, second, first):
        _, sentences = split_document(d)
        assert all(d.text[s.start : s.end] == s.text for s in sentences)
        assert "It employs 400 people." in [s.text for s in sentences if s.citable]


awkward = st.text(alphabet=st.sampled_from(list("ab .,!?\n\r\t\xa0“”’'\"()#-*1230:;…é漢\u2028")), max_size=300)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(awkward)
def test_offsets_hold_on_generated_text(text: str) -> None:
    passages, sentences = split_document(doc(text))
    for p in passages:
        assert text[p.start : p.end] == p.text
    for s in sentences:
        assert text[s.start : s.end] == s.text
        assert s.text.strip() == s.text and s.text


def test_encodings_empty_and_binary_files(make_corpus, caplog) -> None:
    corpus = make_corpus(
        {
            "utf8.txt": "Plain UTF-8 text about cars.",
            "bom.md": "\ufeffA file with a byte order mark.".encode(),
            "latin1.txt": "The price was £5 and the café closed.".encode("latin-1"),
            "empty.txt": "",
            "blank.txt": "  \n\n ",
            "binary.txt": bytes(range(256)) * 4,
            "notes.csv": "ignored,file",
            "sub/dir/deep.txt": "Nested files are read too.",
        }
    )
    with caplog.at_level(logging.WARNING):
        docs = {d.id: d for d in read_corpus(corpus)}
    assert sorted(docs) == ["bom.md", "latin1.txt", "sub/dir/deep.txt", "utf8.txt"]
    assert docs["latin1.txt"].text == "The price was £5 and the café closed."
    assert docs["bom.md"].text.startswith("A file")
    assert "latin1.txt is not UTF-8" in caplog.text
    assert "binary.txt" in caplog.text


def test_symlink_outside_corpus_is_not_followed(make_corpus, tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("Outside text.", encoding="utf-8")
    corpus = make_corpus({"in.txt": "Inside text."})
    (corpus / "link.txt").symlink_to(outside)
    (corpus / "inner-link.txt").symlink_to(corpus / "in.txt")
    assert [d for d, _ in corpus_files(corpus)] == ["in.txt", "inner-link.txt"]
