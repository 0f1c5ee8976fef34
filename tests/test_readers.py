"""Readers on generated files: PDF layout and damage, HTML main text, DOCX structure, Markdown headings."""

from __future__ import annotations

import io
import logging
import zipfile

import pytest

from qa.corpus import corpus_files, read_corpus, read_document, split_document
from qa.readers import UnreadableFileError, read_bytes
from tests.pdf_writer import Text, column_page, make_pdf

LEFT = [
    "Ferrets sleep for about fourteen hours a",
    "day and are most active at dawn. A com-",
    "pact nest box keeps them calm.",
    "    Young ferrets are called kits.",
]
RIGHT = ["Kits open their eyes after five weeks", "and are weaned at eight weeks."]


def two_column_pdf() -> bytes:
    return make_pdf(
        [
            column_page([LEFT, RIGHT], head="Ferret Journal / Vol. 3 / June 2020", foot="Printer slug Jkt 0001 Frm 1"),
            [
                *column_page(
                    [["Ferrets were domesticated about", "2,500 years ago."]],
                    head="Ferret Journal / Vol. 3 / June 2020",
                    foot="Printer slug Jkt 0001 Frm 2",
                ),
                Text(20, 300, "jbell on DSK with PROPOSALS", 8, rotated=True),
                Text(300, 30, "2", 8),
            ],
        ]
    )


def test_pdf_reads_columns_in_order_without_running_heads():
    text = read_bytes("ferrets.pdf", two_column_pdf()).text
    assert (
        text.index("Ferrets sleep") < text.index("Young ferrets") < text.index("Kits open") < text.index("domesticated")
    )
    for chrome in ("Ferret Journal", "Jkt", "Printer slug", "jbell", "PROPOSALS"):
        assert chrome not in text
    assert "compact nest box" in text  # hyphenated across lines, joined for search
    assert "\n2\n" not in text and not text.rstrip().endswith("2")  # the page number


def test_pdf_sentences_know_their_page_and_boxes():
    import pypdfium2 as pdfium

    raw = two_column_pdf()
    extracted = read_bytes("ferrets.pdf", raw)
    layout = extracted.layout
    assert layout is not None
    start = extracted.text.index("A compact nest box")
    end = extracted.text.index("calm.") + len("calm.")
    assert layout.pages(start, end) == (1,)
    boxes = layout.boxes(start, end)
    assert len(boxes) == 2  # "A com-" on one line, "pact nest box keeps them calm." on the next
    pdf = pdfium.PdfDocument(raw)
    textpage = pdf[0].get_textpage()
    inside = "".join(textpage.get_text_bounded(*box[1:]) for box in boxes)
    assert "".join(inside.split()).replace("-", "") == "Acompactnestboxkeepsthemcalm."
    later = extracted.text.index("domesticated")
    assert layout.pages(later, later + 5) == (2,)


def test_pdf_with_no_text_layer_is_skipped_with_a_reason(make_corpus, caplog):
    corpus = make_corpus({"scan.pdf": make_pdf([[]], image_only=True), "notes.txt": "Ferrets are small mammals."})
    with caplog.at_level(logging.WARNING):
        docs = list(read_corpus(corpus))
    assert [d.id for d in docs] == ["notes.txt"]
    assert "scan.pdf" in caplog.text and "no text layer" in caplog.text


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"This is not a PDF at all, only text with a .pdf name.", "not a PDF"),
        (make_pdf([[Text(50, 700, "Secret text.")]], encrypted=True), "encrypted"),
        (b"%PDF-1.4\n1 0 obj << /Type /Catalog", "damaged"),
        (b"%PDF-1.7\n" + bytes(range(256)) * 20, "damaged"),
    ],
    ids=["not-a-pdf", "encrypted", "truncated", "garbage"],
)
def test_bad_pdfs_are_skipped_with_a_message_naming_them(tmp_path, caplog, raw, reason):
    path = tmp_path / "bad.pdf"
    path.write_bytes(raw)
    with caplog.at_level(logging.WARNING):
        assert read_document("bad.pdf", path) is None
    assert "bad.pdf" in caplog.text and reason in caplog.text


def test_pdf_cut_anywhere_is_read_or_reported_never_raised(tmp_path, caplog):
    raw = two_column_pdf()
    path = tmp_path / "cut.pdf"
    for cut in range(10, len(raw), len(raw) // 12):
        path.write_bytes(raw[:cut])
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            doc = read_document("cut.pdf", path)
        assert doc is not None or "skipping cut.pdf: cut.pdf " in caplog.text


def test_thousand_page_pdf_reads_with_progress(caplog):
    pages = [[Text(72, 700, f"Page {i} says that ferret number {i} likes tunnels.")] for i in range(1, 1001)]
    raw = make_pdf(pages)
    with caplog.at_level(logging.INFO, logger="qa.readers.pdf"):
        extracted = read_bytes("big.pdf", raw)
    assert "ferret number 1000 likes tunnels" in extracted.text
    assert extracted.layout is not None and extracted.layout.page_of(extracted.text.index("number 1000")) == 1000
    assert sum("reading big.pdf: page" in r.getMessage() for r in caplog.records) >= 10


def test_corpus_files_accepts_the_new_formats(make_corpus):
    corpus = make_corpus({n: "x" for n in ("a.pdf", "b.html", "c.htm", "d.docx", "e.md", "f.txt", "g.odt")})
    assert [d for d, _ in corpus_files(corpus)] == ["a.pdf", "b.html", "c.htm", "d.docx", "e.md", "f.txt"]


# --- HTML ---------------------------------------------------------------------

PAGE = """<!doctype html><html><head><title>Ferrets - Wiki</title><style>p{color:red}</style>
<script>window.__pwned = 1</script></head><body>
<header><nav><a href="/">Main page</a> <a href="/random">Random article</a></nav></header>
<main><h1>Ferrets</h1>
<p>The ferret is a small, domesticated species   belonging to the family Mustelidae.</p>
<h2>Diet</h2><p>Ferrets are obligate carnivores and eat &lt;script&gt;alert(1)&lt;/script&gt; nothing else.</p>
<ul><li>They eat meat.</li><li>They drink water.</li></ul>
<h3>Treats</h3><p>Ferrets like egg yolk as a treat.</p>
<div class="navbox">Mammals navigation: Cats Dogs Ferrets</div>
</main>
<footer>This page was last edited on 1 June 2020. Privacy policy.</footer></body></html>"""


def test_html_keeps_main_text_with_heading_paths():
    extracted = read_bytes("ferrets.html", PAGE.encode())
    text = extracted.text
    assert "species belonging to the family Mustelidae." in text  # whitespace collapsed as shown
    for chrome in ("Main page", "Random article", "last edited", "Privacy", "navigation", "__pwned", "color:red"):
        assert chrome not in text
    assert "<script>alert(1)</script>" in text  # text that looks like markup stays text
    assert extracted.layout is not None
    assert extracted.layout.heading_at(text.index("egg yolk")) == "Ferrets > Diet > Treats"
    assert extracted.layout.heading_at(text.index("They eat meat")) == "Ferrets > Diet"


def test_html_sentences_carry_their_heading(tmp_path):
    path = tmp_path / "ferrets.html"
    path.write_text(PAGE, encoding="utf-8")
    doc = read_document("ferrets.html", path)
    assert doc is not None
    _, sentences = split_document(doc)
    yolk = next(s for s in sentences if "egg yolk" in s.text)
    assert yolk.citable and yolk.heading == "Ferrets > Diet > Treats" and yolk.pages == ()
    assert all(doc.text[s.start : s.end] == s.text for s in sentences)


# --- DOCX ---------------------------------------------------------------------


def make_docx() -> bytes:
    import docx

    d = docx.Document()
    d.sections[0].header.paragraphs[0].text = "Ferret Handbook header text"
    d.sections[0].footer.paragraphs[0].text = "Ferret Handbook / Page 1- / Effective 2020"
    d.add_paragraph("Table of Contents")
    d.add_paragraph("CHAPTER 1 - CARE1-1")
    d.add_paragraph("A. FEEDING1-2")
    d.add_heading("Chapter 1 - Care", level=1)
    d.add_heading("A. Feeding", level=2)
    d.add_paragraph("Ferrets should be fed twice a day with high-protein food.")
    d.add_paragraph("Give fresh water every day.", style="List Bullet")
    table = d.add_table(rows=2, cols=2)
    table.cell(0, 0).text = "Kits need three meals a day."
    table.cell(0, 1).text = "Adults need two meals a day."
    table.cell(1, 0).text = "Old ferrets need soft food."
    table.cell(1, 1).text = "Sick ferrets need a vet."
    d.add_heading("B. Housing", level=2)
    d.add_paragraph("A cage should be at least one metre wide.")
    out = io.BytesIO()
    d.save(out)
    return out.getvalue()


def test_docx_reads_paragraphs_lists_and_cells_in_order_without_toc_or_footer():
    extracted = read_bytes("care.docx", make_docx())
    text = extracted.text
    order = ["twice a day", "fresh water", "three meals", "two meals", "soft food", "a vet", "one metre"]
    assert [text.index(o) for o in order] == sorted(text.index(o) for o in order)
    for chrome in ("header text", "Page 1-", "CARE1-1", "FEEDING1-2", "Table of Contents"):
        assert chrome not in text
    assert extracted.layout is not None
    assert extracted.layout.heading_at(text.index("one metre")) == "Chapter 1 - Care > B. Housing"
    assert extracted.layout.heading_at(text.index("three meals")) == "Chapter 1 - Care > A. Feeding"


def test_docx_that_is_not_a_zip_or_is_a_zip_bomb_is_refused(tmp_path, caplog, monkeypatch):
    from qa.readers import docx as docx_reader

    (tmp_path / "fake.docx").write_bytes(b"Just some text pretending to be Word.")
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("word/document.xml", b"\0" * 30_000_000)  # compresses about 1000:1
    (tmp_path / "bomb.docx").write_bytes(bomb.getvalue())
    with caplog.at_level(logging.WARNING):
        assert read_document("fake.docx", tmp_path / "fake.docx") is None
        assert read_document("bomb.docx", tmp_path / "bomb.docx") is None
    assert "fake.docx is not a Word .docx file" in caplog.text
    assert "bomb.docx would unpack to 30,000,000 bytes" in caplog.text
    assert docx_reader.MAX_UNPACKED >= 100_000_000  # real documents are far smaller


# --- Markdown -----------------------------------------------------------------


def test_markdown_headings_give_heading_paths(tmp_path):
    md = (
        "# Ferrets\n\nFerrets are playful animals.\n\n## Sleep\n\n"
        "They sleep fourteen hours a day.\n\n```\n# not a heading\n```\n"
    )
    path = tmp_path / "f.md"
    path.write_text(md, encoding="utf-8")
    doc = read_document("f.md", path)
    assert doc is not None
    _, sentences = split_document(doc)
    sleep = next(s for s in sentences if "fourteen" in s.text)
    assert sleep.heading == "Ferrets > Sleep"
    assert next(s for s in sentences if "playful" in s.text).heading == "Ferrets"


def test_plain_text_has_no_location(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("# Not a heading in plain text\n\nFerrets are playful animals.", encoding="utf-8")
    doc = read_document("a.txt", path)
    assert doc is not None
    _, sentences = split_document(doc)
    assert all(s.heading is None and s.pages == () for s in sentences)


def test_reader_errors_never_escape_as_tracebacks(tmp_path, caplog):
    (tmp_path / "x.html").write_bytes(b"\x00\x01binary")
    with caplog.at_level(logging.WARNING):
        assert read_document("x.html", tmp_path / "x.html") is None
    assert "x.html" in caplog.text
    with pytest.raises(UnreadableFileError, match=r"empty\.pdf"):
        read_bytes("empty.pdf", b"")


def test_text_placed_off_the_page_is_ignored():
    raw = make_pdf(
        [[Text(72, 700, "Ferrets are playful."), Text(1e9, 700, "Hidden far away."), Text(72, -5e8, "Below.")]]
    )
    assert read_bytes("off.pdf", raw).text == "Ferrets are playful."


def test_pdf_ligatures_are_spelled_out_for_search():
    raw = make_pdf([[Text(72, 700, "The o°ce has a ±oor plan.")]], ligatures=True)  # ° -> U+FB01, ± -> U+FB02
    extracted = read_bytes("lig.pdf", raw)
    assert extracted.text == "The ofice has a floor plan."
    assert not any("\ufb00" <= c <= "\ufb06" for c in extracted.text)
    assert extracted.layout is not None and len(extracted.layout.boxes(4, 9)) == 1  # "ofice" keeps its box


def test_pdf_footnote_marks_do_not_glue_to_words():
    # A raised, smaller footnote number ("8" before "MCAS") is searchable apart from
    # the word; a subscript (the 2 of H2O) is not a footnote mark and stays.
    raw = make_pdf(
        [
            [
                Text(50, 700, "Trim moves the stabilizer."),
                Text(50, 660, "8", size=6),
                Text(53.5, 657, "MCAS is a function of the Speed Trim System."),
                Text(50, 640, "H"),
                Text(57.3, 637, "2", size=6),
                Text(60.7, 640, "O is water."),
            ]
        ]
    )
    extracted = read_bytes("notes.pdf", raw)
    assert "8 MCAS is a function of the Speed Trim System." in extracted.text
    assert "H2O is water." in extracted.text
