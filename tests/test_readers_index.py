"""PDF, HTML and Word sources through the index: stored locations, citations by page, incremental rebuilds."""

from __future__ import annotations

import json

from click.testing import CliRunner

from qa import answer, build_index
from qa.cli import main
from qa.store import current_folder, load_folder
from tests.pdf_writer import column_page, make_pdf
from tests.test_readers import PAGE, make_docx
from ui.render import chat_reply

INTRO = [
    "Otters are semiaquatic mammals that live",
    "along rivers and coasts of every continent",
    "except Australia and Antarctica.",
]
DIET = ["The giant otter eats about four kilograms", "of fish every day to keep warm in the water."]


def otter_pdf(diet: list[str] = DIET) -> bytes:
    head = "Otter Review / Vol. 9"
    return make_pdf(
        [
            column_page([INTRO], head=head + " / Page 1", foot="Jkt 1 Frm 1"),
            column_page(
                [["Sea otters hold hands while they sleep so", "that they do not drift apart at night."]],
                head=head + " / Page 2",
                foot="Jkt 1 Frm 2",
            ),
            column_page([diet], head=head + " / Page 3", foot="Jkt 1 Frm 3"),
        ]
    )


def test_pdf_html_docx_sources_are_cited_with_page_or_heading(make_corpus, tmp_path):
    corpus = make_corpus({"otters.pdf": otter_pdf(), "ferrets.html": PAGE, "care.docx": make_docx()})
    index = tmp_path / "index"
    manifest = build_index(corpus, index)
    assert manifest.documents == 3

    a = answer("How much fish does the giant otter eat every day?", index=index)
    top = a.sources[0]
    assert not a.abstained and top.doc == "otters.pdf" and top.page == 3 and top.pages == (3,)
    assert top.boxes and all(b[0] == 3 for b in top.boxes)
    d = top.to_dict()
    assert d["page"] == 3 and d["pages"] == [3] and d["heading"] is None and len(d["boxes"][0]) == 5
    json.dumps(a.to_dict())
    assert "[1] otters.pdf, page 3, characters" in chat_reply(a).replace("\\", "")  # Markdown-escaped

    h = answer("What do ferrets like as a treat?", index=index).sources[0]
    assert h.doc == "ferrets.html" and h.page is None and h.heading == "Ferrets > Diet > Treats"
    w = answer("How wide should a ferret cage be?", index=index).sources[0]
    assert w.doc == "care.docx" and w.heading == "Chapter 1 - Care > B. Housing"

    # The stored index keeps the locations; loading gives them back unchanged.
    data = load_folder(current_folder(index))  # type: ignore[arg-type]
    diet = next(s for s in data.sentences if "four kilograms" in s.text)
    assert diet.pages == (3,) and diet.boxes == top.boxes
    stored = data.documents["otters.pdf"].text
    assert stored[diet.start : diet.end] == diet.text

    result = CliRunner().invoke(main, ["ask", "--index", str(index), "How much fish does the giant otter eat?"])
    assert result.exit_code == 0 and "otters.pdf, page 3 chars" in result.output


def test_changed_pdf_reembeds_only_its_changed_sentences(make_corpus, tmp_path):
    corpus = make_corpus(
        {"otters.pdf": otter_pdf(), "notes.md": "# Notes\n\nOtters use rocks as tools to open shells.\n"}
    )
    index = tmp_path / "index"
    first = build_index(corpus, index)
    edited = ["The giant otter eats about three kilograms", "of fish every day to keep warm in the water."]
    (corpus / "otters.pdf").write_bytes(otter_pdf(edited))
    second = build_index(corpus, index)
    assert second.build["changed"] == 1 and second.build["unchanged"] == 1
    assert second.build["sentences_embedded"] == 1  # only the edited sentence
    assert second.build["sentences_reused"] == first.build["sentences_embedded"] - 1
    assert build_index(corpus, index).build["noop"]
    a = answer("How much fish does the giant otter eat every day?", index=index)
    assert "three kilograms" in a.sources[0].text and a.sources[0].page == 3


def test_page_image_boxes_the_sentence_and_panel_shows_it():
    import io

    from PIL import Image

    from qa import Answer, Source
    from ui.render import page_png, panel, panel_html

    raw = otter_pdf()
    box = (3, 50.0, 685.0, 250.0, 697.0)
    png = page_png(raw, 3, [box], crop=False)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    scale = image.width / 612
    x, y = int(150 * scale), int((792 - 697) * scale) - 2  # the top edge of the box
    assert any(image.getpixel((x, y + d))[0] > 180 and image.getpixel((x, y + d))[1] < 90 for d in range(-3, 4))
    source = Source("otters.pdf", 0, 5, "Otter", 0.9, 0, 5, 3, (3,), None, (box,))
    answer = Answer("Q?", "Otter [1]", False, [source])
    p = panel(answer, lambda s: "Otter", lambda s: "data:image/png;base64,AAAA")
    assert p.sources[0].where == "page 3" and p.sources[0].image
    html = panel_html(p)
    assert (
        '<img class="qa-page" data-rank="1" src="data:image/png;base64,AAAA"' in html
        and '<span class="qa-where">page 3</span>' in html
        and "[1] characters 0–5</details>" in html  # offsets in a collapsed details line
    )
    hostile = panel(answer, lambda s: "Otter", lambda s: 'javascript:alert(1)" onerror="x')
    assert "<img" not in panel_html(hostile)  # only PNG data: URIs become images


def test_watcher_rebuilds_when_a_pdf_is_added_and_the_engine_swaps(make_corpus, tmp_path):
    import time

    from qa.answer import Engine
    from qa.watch import CorpusWatcher

    corpus = make_corpus({"notes.md": "# Notes\n\nOtters use rocks as tools to open shells.\n"})
    index = tmp_path / "index"
    build_index(corpus, index)
    engine = Engine(index, corpus)
    watcher = CorpusWatcher(corpus, index, engine=engine, debounce_ms=200).start()
    try:
        (corpus / "otters.pdf").write_bytes(otter_pdf())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (watcher.last_manifest and watcher.last_manifest.documents == 2):
            time.sleep(0.1)
        assert watcher.last_manifest is not None and watcher.last_manifest.documents == 2
        top = engine.answer("How much fish does the giant otter eat every day?").sources[0]
        assert top.doc == "otters.pdf" and top.page == 3
    finally:
        watcher.stop()


def test_chat_shows_a_pdf_page_only_while_the_file_is_the_indexed_one(make_corpus, tmp_path):
    from qa import answer
    from qa.answer import Engine
    from ui.service import ChatService

    corpus = make_corpus({"otters.pdf": otter_pdf()})
    index = tmp_path / "index"
    build_index(corpus, index)
    service = ChatService(Engine(index))
    source = answer("How much fish does the giant otter eat every day?", index=index).sources[0]
    first = service.page_image(source)
    assert first is not None and first.startswith("data:image/png;base64,")
    assert service.page_image(source) == first  # the same picture again
    # Edited after the build: its boxes would be wrong, so the passage shows without a picture.
    (corpus / "otters.pdf").write_bytes(otter_pdf(["The giant otter eats about three kilograms", "of fish daily."]))
    assert service.page_image(source) is None
