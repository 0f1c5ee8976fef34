"""The readers on the real documents in ../shared/data/documents (skipped when absent)."""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from pathlib import Path

import pytest

from qa.corpus import read_document, split_document
from qa.types import Document, Sentence

DOCUMENTS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "documents"
FEDERAL_REGISTER = "federal-register-2020-17221.pdf"
JOURNAL = "bmc-dvt-prophylaxis-trauma-2010.pdf"
SCANNED = "scanned-wikipedia-ocr-printout.pdf"
HANDBOOK = "doj-chapter-13-trustee-handbook-2012.docx"
WIKIPEDIA = "wikipedia-duck.html"

pytestmark = pytest.mark.skipif(
    not (DOCUMENTS / FEDERAL_REGISTER).is_file(), reason=f"the real documents are not in {DOCUMENTS}"
)


@cache
def split(name: str) -> tuple[Document, list[Sentence]]:
    doc = read_document(name, DOCUMENTS / name)
    assert doc is not None, f"{name} was not read"
    return doc, split_document(doc)[1]


ALL = [FEDERAL_REGISTER, JOURNAL, HANDBOOK, WIKIPEDIA]


@pytest.mark.parametrize("name", ALL)
def test_every_sentence_maps_back_exactly(name):
    doc, sentences = split(name)
    assert sum(s.citable for s in sentences) >= 50
    for s in sentences:
        assert doc.text[s.start : s.end] == s.text
        assert doc.text[s.passage_start : s.passage_end].find(s.text) >= 0


def _squash(text: str) -> str:
    # pdfium writes a hyphen at a line end as U+0002 or U+FFFE; the stored text may join the word
    text = unicodedata.normalize("NFKC", text)
    return re.sub(r"[\s\-\x02\ufffe\u00ad]", "", text)


@pytest.mark.parametrize("name", [FEDERAL_REGISTER, JOURNAL])
def test_pdf_boxes_hold_the_sentence_on_its_page(name):
    import pypdfium2 as pdfium

    _, sentences = split(name)
    pdf = pdfium.PdfDocument(str(DOCUMENTS / name))
    textpages = {}
    citable = [s for s in sentences if s.citable]
    for s in citable:
        assert s.pages and s.boxes and s.page == s.pages[0]
        assert {b[0] for b in s.boxes} == set(s.pages)
        inside = ""
        for page, *box in s.boxes:
            if page not in textpages:
                textpages[page] = pdf[page - 1].get_textpage()
            inside += textpages[page].get_text_bounded(*box)
        assert _squash(s.text) in _squash(inside), (s.page, s.text)


def test_federal_register_has_no_running_heads_printer_lines_or_page_numbers():
    doc, sentences = split(FEDERAL_REGISTER)
    for chrome in ("VerDate", "Jkt 250001", "E:\\FR\\FM", "jbell on", "DSKJLSW7X2PROD", "Federal Register /"):
        assert chrome not in doc.text
    for s in sentences:
        assert not re.search(r"\b477(?:0\d|1[0-2])\b", s.text), s.text  # the page numbers 47698-47712
    pages = {p for s in sentences for p in s.pages}
    assert pages == set(range(1, 16)) - {8}  # page 8 is a figure with no text layer of its own
    lion = next(s for s in sentences if "189 fatalities" in s.text)
    assert lion.citable and lion.text.startswith("On October 29, 2018, a Boeing Model 737")
    assert lion.pages == (1, 2)  # the sentence runs from page 1's last column onto page 2
    assert "Soekarno-Hatta" in lion.text  # a hyphenated name broken at a line end keeps its hyphen
    assert any("installing new flight control computer" in s.text for s in sentences)


def test_journal_reads_two_columns_and_drops_its_running_head():
    doc, sentences = split(JOURNAL)
    assert "Page 2 of 4" not in doc.text and "Datta et al. Journal of Trauma" not in doc.text
    text = doc.text
    assert text.index("Multisystem traumatic injury") < text.index("weight heparins (LMWHs) as the primary")
    intro = next(s for s in sentences if "life-threatening" in s.text)  # "life-threa-" + "tening"
    assert intro.citable and intro.page == 1


def test_scanned_pdf_is_reported_not_indexed(caplog):
    with caplog.at_level("WARNING"):
        assert read_document(SCANNED, DOCUMENTS / SCANNED) is None
    assert SCANNED in caplog.text and "no text layer" in caplog.text


def test_handbook_keeps_toc_and_footers_out_and_knows_headings():
    doc, sentences = split(HANDBOOK)
    assert "PURPOSE1-1" not in doc.text and "Table of Contents" not in doc.text
    assert "Effective October 1, 2012" not in doc.text  # the section footers
    first = next(s for s in sentences if s.text.startswith("The United States Trustee appoints and supervises"))
    assert first.citable and first.heading == "CHAPTER 1 – INTRODUCTION > A. PURPOSE"
    assert all(s.pages == () for s in sentences)


def test_wikipedia_navigation_and_footer_are_not_citable():
    doc, sentences = split(WIKIPEDIA)
    citable = " ".join(s.text for s in sentences if s.citable)
    for chrome in (
        "Jump to content", "Main page", "Random article", "Donate", "Create account", "Log in",
        "Privacy policy", "This page was last edited", "Creative Commons", "Contents", "Toggle",
        "Edit links", "Redirected from", "[edit]", "Retrieved",
    ):  # fmt: skip
        assert chrome not in citable, chrome
    assert "Jump to content" not in doc.text and "Privacy policy" not in doc.text
    etymology = next(s for s in sentences if s.text.startswith("The word duck comes from Old English"))
    assert etymology.citable and etymology.heading == "Duck > Etymology"


def test_journal_reference_list_is_context_not_citations():
    doc, sentences = split(JOURNAL)
    reference = next(s for s in sentences if s.text.startswith("Kudsk KA, Fabian TC"))
    assert not reference.citable and doc.text[reference.start : reference.end] == reference.text
    assert any(s.citable and s.text.startswith("Failed retrieval rates") for s in sentences)
