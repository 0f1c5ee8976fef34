"""The web chat in a real browser: Debian's Chromium driven by Playwright, fully offline."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from playwright.sync_api import expect

from .conftest import HOSTILE_IMG, HOSTILE_SCRIPT, HOSTILE_SENTENCE, ROOT, UNICODE_SENTENCE
from .test_app import SOLD

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SCREENSHOT = ROOT / "docs" / "screenshot.png"  # rewritten only by `make screenshot` (QA_SCREENSHOT=1)
ABSTAINED_SCREENSHOT = ROOT / "docs" / "screenshot-abstained.png"  # the same
ANSWER_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing; `make test` installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):  # type: ignore[no-untyped-def]
    """A fresh page that may only talk to this machine; anything else is blocked and recorded."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.outside = []  # type: ignore[attr-defined]

    def local_only(route):  # type: ignore[no-untyped-def]
        host = urlparse(route.request.url).hostname
        if route.request.url.startswith(("data:", "blob:")) or host in {"127.0.0.1", "localhost"}:
            route.continue_()
        else:
            page.outside.append(route.request.url)  # type: ignore[attr-defined]
            route.abort()

    page.route("**/*", local_only)
    yield page
    context.close()


def ask(page, question: str) -> None:  # type: ignore[no-untyped-def]
    """Type a question and press Enter, as a person would; wait until its answer is in the chat."""
    before = page.locator("#qa-chat .message-row").count()
    box = page.locator("#qa-question textarea")
    box.fill(question)
    box.press("Enter")
    page.wait_for_function(
        "n => document.querySelectorAll('#qa-chat .message-row').length >= n + 2",
        arg=before,
        timeout=ANSWER_TIMEOUT_MS,
    )
    page.locator("#qa-sources .qa-source").first.wait_for(timeout=ANSWER_TIMEOUT_MS)


def open_app(page, url: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(url)
    page.locator("#qa-question textarea").wait_for(timeout=ANSWER_TIMEOUT_MS)


def test_question_answered_with_the_source_sentence_highlighted(page, article_app: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    open_app(page, article_app)
    assert "fresh" in page.locator("#qa-status").inner_text()
    ask(page, "How many vehicles did Mitsubishi sell in Southeast Asia?")
    highlighted = page.locator('#qa-sources mark.answer[data-rank="1"]')
    assert highlighted.text_content() == SOLD
    assert "280,000 vehicles" in page.locator("#qa-chat").inner_text()
    assert page.outside == []  # the page needs nothing from the internet

    shot = tmp_path / "answered.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("QA_SCREENSHOT"):  # a tracked file: `make test` must leave it alone
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copy(shot, SCREENSHOT)


def test_follow_up_and_clear(page, article_app: str) -> None:  # type: ignore[no-untyped-def]
    open_app(page, article_app)
    ask(page, "Which minivan will Nissan get from Mitsubishi?")
    ask(page, "Which brand will it be sold under?")
    highlighted = page.locator('#qa-sources mark.answer[data-rank="1"]')
    assert highlighted.text_content() == "The vehicle will be sold as a different model under the Nissan brand."
    page.locator("#qa-clear").click()
    page.wait_for_function("() => document.querySelectorAll('#qa-chat .message-row').length === 0")
    assert page.locator("#qa-sources mark").count() == 0


def test_example_question_comes_from_the_corpus_and_is_answered_when_clicked(page, article_app: str) -> None:  # type: ignore[no-untyped-def]
    open_app(page, article_app)
    example = page.locator("#qa-examples button").first
    # shown cut short; its label is drawn after the page loads, so wait for it as the user would
    expect(example).to_have_text(re.compile(r"^What does “mitsubishi joins renault nissan"), timeout=ANSWER_TIMEOUT_MS)
    example.click()
    page.locator("#qa-sources .qa-source").first.wait_for(timeout=ANSWER_TIMEOUT_MS)
    assert "mitsubishi" in page.locator("#qa-chat").inner_text()


def test_off_topic_question_says_the_sources_dont_say_and_highlights_no_answer(
    page, article_app: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    open_app(page, article_app)
    ask(page, "What is the capital of France?")
    shot = tmp_path / "abstained.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("QA_SCREENSHOT"):  # a tracked file: only `make screenshot` rewrites it
        shutil.copy(shot, ABSTAINED_SCREENSHOT)
    assert "Confidence: the sources don't say" in page.locator("#qa-chat").inner_text()
    assert "The sources don't say" in page.locator("#qa-sources").inner_text()
    assert page.locator("#qa-sources mark.answer").count() == 0
    assert page.locator("#qa-sources mark.related").count() >= 1  # the closest passages, shown as related
    marked = page.locator("#qa-sources mark.related").first
    assert marked.evaluate("m => getComputedStyle(m).backgroundColor") == "rgba(0, 0, 0, 0)"  # not the answer colour


def test_factual_question_shows_its_phrase_in_bold_and_one_answer_highlight(page, article_app: str) -> None:  # type: ignore[no-untyped-def]
    open_app(page, article_app)
    ask(page, "How many vehicles did Mitsubishi sell in Southeast Asia?")
    reply = page.locator("#qa-chat .message-row").last
    bold = reply.locator("strong").first
    assert bold.inner_text() == "280,000"  # the reply leads with the phrase
    assert bold.evaluate("b => Number(getComputedStyle(b).fontWeight)") >= 600
    assert page.locator("#qa-sources mark.answer").count() == 1
    assert page.locator("#qa-sources mark.answer").text_content() == SOLD
    assert page.locator("#qa-sources mark.related").count() == 2
    word = reply.locator("span.qa-confidence")
    assert word.inner_text() in ("confident", "likely") and "probability" in word.get_attribute("title")
    # sources by document; offsets only once the details line is opened
    text = reply.inner_text()
    assert "mitsubishi-joins-renault-nissan-alliance.txt — the answer" in text and "characters" not in text
    reply.locator("details.qa-details summary").click()
    assert "characters 748–858" in reply.inner_text()


def test_chat_survives_a_page_reload_and_shows_in_a_second_tab(page, article_app: str) -> None:  # type: ignore[no-untyped-def]
    open_app(page, article_app)
    ask(page, "Which minivan will Nissan get from Mitsubishi?")
    ask(page, "Which brand will it be sold under?")
    # saved in the browser just after the answer shows
    page.wait_for_function("() => document.querySelector('#qa-saved-turns input')?.value === '2'")
    page.reload()
    page.locator("#qa-question textarea").wait_for(timeout=ANSWER_TIMEOUT_MS)
    page.wait_for_function("() => document.querySelectorAll('#qa-chat .message-row').length === 4")
    assert "Which brand will it be sold under?" in page.locator("#qa-chat").inner_text()
    answer = page.locator('#qa-sources mark.answer[data-rank="1"]')
    assert answer.text_content() == "The vehicle will be sold as a different model under the Nissan brand."
    ask(page, "Where is it built?")  # the restored chat still supplies the history
    other = page.context.new_page()
    other.goto(article_app)
    other.wait_for_function("() => document.querySelectorAll('#qa-chat .message-row').length === 6")
    other.close()


def test_empty_question_shows_a_friendly_error(page, article_app: str) -> None:  # type: ignore[no-untyped-def]
    open_app(page, article_app)
    page.locator("#qa-ask").click()
    page.get_by_text("The question is empty").first.wait_for(timeout=ANSWER_TIMEOUT_MS)
    assert "Traceback" not in page.content()
    # Nothing covers the page: an error overlay once swallowed clicks until closed.
    page.locator("#qa-question textarea").click(timeout=5_000)
    page.keyboard.type("Who is Carlos Ghosn?")
    assert page.locator("#qa-question textarea").input_value() == "Who is Carlos Ghosn?"
    ask(page, "Who is Carlos Ghosn?")  # still serving


def test_hostile_document_and_question_run_nothing_and_show_literally(page, tricky_app: str) -> None:  # type: ignore[no-untyped-def]
    open_app(page, tricky_app)
    ask(page, "What tag does the Zorblax installer manual print on its warranty page?")
    assert page.locator('#qa-sources mark.answer[data-rank="1"]').text_content() == HOSTILE_SENTENCE
    assert HOSTILE_SCRIPT in page.locator("#qa-sources").text_content()
    assert HOSTILE_SCRIPT in page.locator("#qa-chat").inner_text()

    ask(page, f"Is {HOSTILE_IMG} the broken picture link in the troubleshooting chapter?")
    assert HOSTILE_IMG in page.locator("#qa-chat").inner_text()  # the question, shown as typed
    assert page.locator("#qa-chat img[src='x'], #qa-sources img, #qa-chat script, #qa-sources script").count() == 0
    page.wait_for_timeout(500)  # give any injected onerror handler the chance to fire
    assert page.evaluate("typeof window.__pwned") == "undefined"

    ask(page, "Which car did the Kōenji tram depot repair in 2019?")
    assert page.locator('#qa-sources mark.answer[data-rank="1"]').text_content() == UNICODE_SENTENCE
    assert page.outside == []


LOOKOUT = "The lookout sighted the lighthouse at dawn on the ninth day."


@pytest.fixture(scope="module")
def long_passage_app(launch_app: Callable[..., str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """The web chat over one 44 KB file without blank lines (one passage), the answer deep inside."""
    lines = [f"Entry {i}: the ship's log records calm seas and a steady wind from the west." for i in range(560)]
    base = tmp_path_factory.mktemp("long")
    (base / "corpus").mkdir()
    (base / "corpus" / "log.txt").write_text("\n".join([*lines[:400], LOOKOUT, *lines[400:]]), encoding="utf-8")
    return launch_app(base / "index", base / "corpus")


def test_long_passage_shows_a_window_and_scrolls_to_the_highlight(page, long_passage_app: str) -> None:  # type: ignore[no-untyped-def]
    open_app(page, long_passage_app)
    ask(page, "When did the lookout sight the lighthouse?")
    mark = page.locator('#qa-sources mark.answer[data-rank="1"], #qa-sources mark.related').first
    assert mark.text_content() == LOOKOUT
    height = page.evaluate("document.documentElement.scrollHeight")
    assert height < 3000, height  # the whole passage made it 20,000 px
    page.wait_for_timeout(300)
    box = mark.bounding_box()
    assert box is not None and 0 <= box["y"] < 900  # in the viewport


# --- PDF, HTML and Word sources -------------------------------------------------

PDF_HOSTILE = "The Quokka service manual prints <script>window.__pwned=1</script> on its last page for testing."
PDF_LINES = [
    "Quokkas live on Rottnest Island off the coast of",
    "Western Australia and weigh about three kilograms.",
    "They are active at night and rest in the shade.",
]
HTML_HOSTILE = "The wombat page shows &lt;img src=x onerror=&quot;window.__pwned=1&quot;&gt; as plain text."


@pytest.fixture(scope="module")
def documents_app(launch_app, make_session_corpus, tmp_path_factory) -> str:  # type: ignore[no-untyped-def]
    """URL of the web chat over a generated PDF, an HTML page and a Word file, each with hostile text."""
    import io

    import docx

    from .pdf_writer import Text, column_page, make_pdf

    pdf = make_pdf(
        [
            column_page([["Marsupial Notes, volume one, about small animals of Australia."]], head="Marsupial Notes"),
            column_page([PDF_LINES], head="Marsupial Notes"),
            [Text(50, 700, PDF_HOSTILE[:66]), Text(50, 688, PDF_HOSTILE[67:])],  # split at the space after </script>
        ]
    )
    word = docx.Document()
    word.add_heading("Koalas", level=1)
    word.add_paragraph(
        'Koalas sleep up to twenty hours a day and the file says <b onmouseover="window.__pwned=1">hi</b>.'
    )
    out = io.BytesIO()
    word.save(out)
    page = f"<html><body><main><h1>Wombats</h1><h2>Droppings</h2><p>Wombats make cube-shaped droppings.</p><p>{HTML_HOSTILE}</p></main></body></html>"  # noqa: E501
    corpus = make_session_corpus(
        {"marsupials.pdf": pdf, "wombats.html": page, "koalas.docx": out.getvalue()}, name="documents"
    )
    return launch_app(tmp_path_factory.mktemp("documents-index") / "index", corpus)


RED_PIXELS = """img => {
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d'); g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let red = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] > 180 && d[i + 1] < 90 && d[i + 2] < 90) red++;
  return red;
}"""


def test_pdf_citation_shows_its_page_with_the_sentence_boxed(page, documents_app: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    open_app(page, documents_app)
    ask(page, "How much does a quokka weigh?")
    mark = page.locator('#qa-sources mark.answer[data-rank="1"]')
    assert "weigh about three kilograms" in mark.text_content()
    head = page.locator("#qa-sources .qa-source").first.locator(".qa-source-head").inner_text()
    assert "marsupials.pdf" in head and "page 2" in head
    assert "marsupials.pdf, page 2" in page.locator("#qa-chat").inner_text()
    image = page.locator('#qa-sources img.qa-page[data-rank="1"]')
    image.wait_for(timeout=ANSWER_TIMEOUT_MS)
    assert image.get_attribute("src").startswith("data:image/png;base64,")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    assert image.evaluate("img => img.naturalWidth") <= 600
    assert image.evaluate(RED_PIXELS) > 200  # the box drawn around the sentence
    assert page.outside == []
    if os.environ.get("QA_SCREENSHOTS") == "1":
        shot = tmp_path / "pdf.png"
        page.screenshot(path=str(shot), full_page=True)
        shutil.copy(shot, ROOT / "docs" / "screenshot-pdf.png")


def test_hostile_text_in_pdf_html_and_docx_stays_inert(page, documents_app: str) -> None:  # type: ignore[no-untyped-def]
    open_app(page, documents_app)
    ask(page, "What does the Quokka service manual print on its last page?")
    assert "<script>window.__pwned=1</script>" in page.locator("#qa-sources").text_content()
    ask(page, "What does the wombat page show as plain text?")
    assert '<img src=x onerror="window.__pwned=1">' in page.locator("#qa-sources").text_content()
    head = page.locator("#qa-sources .qa-source").first.locator(".qa-source-head").inner_text()
    assert "Wombats > Droppings" in head
    ask(page, "How long do koalas sleep?")
    assert '<b onmouseover="window.__pwned=1">hi</b>' in page.locator("#qa-sources").text_content()
    assert page.locator("#qa-sources script, #qa-chat script, #qa-sources b, img[src='x']").count() == 0
    page.locator("#qa-sources").hover()
    page.wait_for_timeout(500)
    assert page.evaluate("typeof window.__pwned") == "undefined"


def serve(spawn, index: Path, data: Path, port: int):  # type: ignore[no-untyped-def]
    """``qa serve`` in its own process; returns it once the page is served."""
    import subprocess
    import sys

    qa_bin = str(Path(sys.executable).parent / "qa")
    proc = spawn(
        [qa_bin, "serve", "--index", str(index), "--port", str(port), "--data", str(data)],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    for line in proc.stderr:
        if line.startswith("web chat on"):
            return proc
    raise AssertionError(f"qa serve stopped: {proc.wait()}")


def test_a_thumbs_down_is_in_feedback_export_after_a_server_restart(
    page, spawn, article_index: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    import json
    import subprocess
    import sys

    from .conftest import free_port

    port, data = free_port(), tmp_path / "data"
    url = f"http://127.0.0.1:{port}/"
    server = serve(spawn, article_index, data, port)
    open_app(page, url)
    ask(page, "How many vehicles did Mitsubishi sell in Southeast Asia?")
    page.locator('#qa-chat button[aria-label="Dislike"]').last.click()  # on the last answer
    page.locator("#qa-comment textarea").wait_for(timeout=ANSWER_TIMEOUT_MS)
    page.locator("#qa-comment textarea").fill("The figure is for last fiscal year only")
    page.locator("#qa-send-comment").click()
    page.get_by_text("Comment saved").wait_for(timeout=ANSWER_TIMEOUT_MS)
    server.terminate()
    server.wait(timeout=30)

    serve(spawn, article_index, data, port)  # the restarted server keeps the chat and the rating
    open_app(page, url)
    page.wait_for_function("() => document.querySelectorAll('#qa-chat .message-row').length === 2")
    qa = [sys.executable, "-m", "qa.cli", "feedback"]
    exported = subprocess.run([*qa, "export", "--data", str(data)], capture_output=True, text=True, check=True)
    (case,) = [json.loads(line) for line in exported.stdout.splitlines()]
    assert case["question"] == "How many vehicles did Mitsubishi sell in Southeast Asia?" and case["rating"] == -1
    assert case["review"] and case["gold"] is None and case["comment"] == "The figure is for last fiscal year only"
    assert case["cited"]["doc"] == "mitsubishi-joins-renault-nissan-alliance.txt"
    stats = subprocess.run([*qa, "stats", "--data", str(data), "--json"], capture_output=True, text=True, check=True)
    assert [(r["state"], r["up"], r["down"]) for r in json.loads(stats.stdout)] == [("answered", 0, 1)]


def test_download_chat_gives_markdown_with_each_answers_citations(page, article_app: str) -> None:  # type: ignore[no-untyped-def]
    open_app(page, article_app)
    ask(page, "How many vehicles did Mitsubishi sell in Southeast Asia?")
    ask(page, "What is the capital of France?")
    with page.expect_download(timeout=ANSWER_TIMEOUT_MS) as download:
        page.locator("#qa-download").click()
    assert download.value.suggested_filename == "chat.md"
    text = Path(download.value.path()).read_text(encoding="utf-8")
    assert "How many vehicles did Mitsubishi sell in Southeast Asia?" in text and "280,000" in text
    assert "mitsubishi-joins-renault-nissan-alliance.txt" in text and SOLD in text  # document and sentence cited
    assert "What is the capital of France?" in text and "don't" in text  # the abstention, said as such


def test_a_chat_in_front_of_another_answer_server_answers_through_it(
    page, spawn, article_index: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """`qa serve --answers-from URL`: the page of one server, the answers of another (Ray Serve replicas, say)."""
    import subprocess
    import sys

    import httpx

    from .conftest import free_port

    qa_bin = str(Path(sys.executable).parent / "qa")
    back_port, front_port = free_port(), free_port()
    back = serve(spawn, article_index, tmp_path / "back-data", back_port)
    front = spawn(
        [qa_bin, "serve", "--index", str(article_index), "--port", str(front_port), "--data", str(tmp_path / "data"),
         "--answers-from", f"http://127.0.0.1:{back_port}"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    said = []
    for line in front.stderr:
        said.append(line)
        if line.startswith("web chat on"):
            break
    assert f"answers come from http://127.0.0.1:{back_port}" in "".join(said)
    open_app(page, f"http://127.0.0.1:{front_port}/")
    ask(page, "How many vehicles did Mitsubishi sell in Southeast Asia?")
    assert page.locator("#qa-chat .message-row").last.locator("strong").first.inner_text() == "280,000"
    assert page.locator("#qa-sources mark.answer").text_content() == SOLD  # passages from the front's own index

    back.terminate()
    back.wait(timeout=60)
    reply = httpx.post(
        f"http://127.0.0.1:{front_port}/v1/answer", json={"question": "Who is Carlos Ghosn?"}, timeout=60
    )
    assert reply.status_code == 503 and "cannot be reached" in reply.json()["detail"]
