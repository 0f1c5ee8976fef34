"""Abbreviations a document defines are searchable by their long form in its other sentences."""

from __future__ import annotations

from pathlib import Path

from qa import build_index
from qa.sparse import abbreviations, expand_abbreviations
from qa.store import current_folder, load_folder

HANDBOOK = (
    "Interpreters at the meeting of creditors\n\n"
    "Individuals with limited English proficiency (“LEP”) may seek assistance in order to participate "
    "in the meeting of creditors. Meetings are held in federal buildings.\n\n"
    "The LEP individual may not use family members, friends or the debtor’s attorney as interpreters. "
    "The service is paid for by the program.\n"
)


def test_a_sentence_using_an_abbreviation_is_found_by_its_long_form(make_corpus, tmp_path: Path) -> None:
    corpus, index = make_corpus({"handbook.txt": HANDBOOK}), tmp_path / "index"
    build_index(corpus, index)
    data = load_folder(current_folder(index))
    rows, _ = data.sparse.matches(data.sparse.tokenize("proficiency"))  # in two sentences' words: one says "LEP"
    found = {data.sentences[int(data.sparse_rows[r])].text for r in rows}
    assert any(t.startswith("The LEP individual may not use family members") for t in found)
    assert all("proficiency" not in s.text for s in data.sentences if s.text.startswith("The LEP"))  # cited as written


def test_only_definitions_are_abbreviations() -> None:
    defined = abbreviations(
        [
            "Deep vein thrombosis (DVT) and low molecular weight heparins (LMWHs) are discussed.",
            "It opened (1998) in a town (see map) with two sites (i) and (ii), run by the U.S. (USA).",
        ]
    )
    assert defined == {"DVT": "Deep vein thrombosis", "LMWHs": "low molecular weight heparins"}
    assert expand_abbreviations(["LMWHs prevent DVT.", "No short forms here."], defined) == [
        "LMWHs prevent DVT. low molecular weight heparins Deep vein thrombosis",
        "No short forms here.",
    ]
