"""The web chat, launched in this process and driven through gradio_client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from qa import MAX_QUESTION_CHARS

from .conftest import ARTICLE_ID, HOSTILE_ID, HOSTILE_SCRIPT, HOSTILE_SENTENCE, UNICODE_ID, UNICODE_SENTENCE
from .test_ui_render import parse, rendered_text

SOLD = "Mitsubishi Motors sold about 280,000 vehicles in Southeast Asia last fiscal year, more than Nissan or Renault."
BRAND = "The vehicle will be sold as a different model under the Nissan brand."


@pytest.fixture(scope="module")
def client(article_app: str) -> Client:
    return Client(article_app, verbose=False)


def chat(url: str, *questions: str) -> tuple[list[dict], str, str]:
    """Ask questions in one chat session (as a person typing them); returns the last (chat, panel, status)."""
    session = Client(url, verbose=False)
    result = None
    for q in questions:
        result = session.predict(q, api_name="/chat")
    assert result is not None
    messages, panel, status, typed = result
    assert typed == ""  # the question box is cleared after an answer
    return messages, panel, status


def test_answer_endpoint_returns_the_answer_and_its_sources(client: Client, article_text: str) -> None:
    result = client.predict("How many vehicles did Mitsubishi sell in Southeast Asia?", api_name="/answer")
    assert not result["abstained"] and "280,000" in result["text"]
    top = result["sources"][0]
    assert top["doc"] == ARTICLE_ID and top["text"] == SOLD
    assert article_text[top["start"] : top["end"]] == SOLD
    assert {"doc", "start", "end", "text", "score", "passage_start", "passage_end"} <= set(top)
    assert len(result["sources"]) == 3


def test_page_highlights_the_cited_sentence_and_shows_index_status(
    article_app: str, article_index: Path, article_text: str
) -> None:
    messages, panel, status = chat(article_app, "How many vehicles did Mitsubishi sell in Southeast Asia?")
    assert parse(panel).ranked[1] == ("answer", SOLD)
    reply, _ = rendered_text(messages[-1]["content"][0]["text"])
    # the answer phrase first, then the sentence that says it
    assert reply.startswith("280,000") and SOLD + " [1]" in reply
    start = article_text.index(SOLD)
    # numbered reference: document and offsets
    assert f"[1] {ARTICLE_ID}, characters {start}–{start + len(SOLD)}" in reply
    from qa import get_engine

    manifest = get_engine(article_index).retriever().data.manifest
    for fact in (f"{manifest.sentences} sentences", "fresh", manifest.version.replace("-", "\\-")):
        assert fact in status


def test_follow_up_uses_the_earlier_question(client: Client, article_app: str) -> None:
    first = "Which minivan will Nissan get from Mitsubishi?"
    follow_up = "Which brand will it be sold under?"
    result = client.predict(follow_up, [first], api_name="/answer")
    assert result["sources"][0]["text"] == BRAND
    # In the page the chat itself supplies the history.
    _, panel, _ = chat(article_app, first, follow_up)
    assert parse(panel).ranked[1] == ("answer", BRAND)


def test_off_topic_question_abstains_without_highlighting_an_answer(client: Client, article_app: str) -> None:
    result = client.predict("Who painted the Mona Lisa?", api_name="/answer")
    assert result["abstained"] and result["confidence_label"] == "the sources don't say"
    messages, panel, _ = chat(article_app, "Who painted the Mona Lisa?")
    reply = rendered_text(messages[-1]["content"][0]["text"])[0]
    assert "The sources don't answer this question" in reply and "Confidence: the sources don't say" in reply
    assert "The sources don&#x27;t say" in panel
    assert {kind for kind, _ in parse(panel).marks} <= {"related"}


@pytest.mark.parametrize(
    ("question", "message"),
    [("   ", "The question is empty"), ("why " * (MAX_QUESTION_CHARS // 3), "the limit is 2,000")],
)
def test_bad_question_is_a_friendly_error_and_the_app_keeps_serving(
    client: Client, article_app: str, question: str, message: str
) -> None:
    with pytest.raises(AppError, match=message) as raised:
        client.predict(question, api_name="/answer")
    assert "Traceback" not in str(raised.value)
    # The page shows it as a note in the chat (an error overlay once locked the page).
    session = Client(article_app, verbose=False)
    messages, *_ = session.predict(question, api_name="/chat")
    note, _ = rendered_text(messages[-1]["content"][0]["text"])
    assert messages[-1]["role"] == "assistant" and "Please check the question" in note
    assert message.lower() in note.lower()
    assert client.predict("Who is Carlos Ghosn?", api_name="/answer")["sources"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("Who is Carlos Ghosn?", [], "3"), "got '3'"),
        (("Who is Carlos Ghosn?", [], 0), "The number of sources (k) must be"),
    ],
)
def test_api_errors_are_plain_sentences(client: Client, args: tuple, message: str) -> None:
    with pytest.raises(AppError) as raised:
        client.predict(*args, api_name="/answer")
    assert message in str(raised.value) and "&#x27;" not in str(raised.value)


@pytest.mark.parametrize("data", [["Who is Carlos \\udcff Ghosn?", [], 3], ["Where is it built?", ["lone \\ud800"], 3]])
def test_api_question_that_is_not_valid_text_gets_its_message(article_app: str, data: list) -> None:
    import httpx

    # JSON may escape a lone surrogate (gradio_client cannot send one): raw HTTP, as a script would.
    body = json.dumps({"data": data}).replace("\\\\u", "\\u")
    posted = httpx.post(
        f"{article_app}gradio_api/call/answer", content=body, headers={"content-type": "application/json"}
    )
    event_id = posted.json()["event_id"]
    stream = httpx.get(f"{article_app}gradio_api/call/answer/{event_id}", timeout=60).text
    assert "event: error" in stream and "not valid text" in stream, stream


def test_chat_endpoint_takes_only_the_question(client: Client) -> None:
    # A client-supplied chat history once made the server open a file named in it.
    parameters = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/chat"]["parameters"]
    assert [p["parameter_name"] for p in parameters] == ["question"]


def test_uploads_and_oversized_requests_are_refused(article_app: str, client: Client) -> None:
    import httpx

    upload = httpx.post(f"{article_app}gradio_api/upload", files={"files": ("a.png", b"x" * 1000)})
    assert upload.status_code == 404
    big = b'{"data": ["' + b"x" * (2 << 20) + b'"]}'
    for body in (big, iter([big[i : i + 65536] for i in range(0, len(big), 65536)])):  # sized, then chunked
        response = httpx.post(
            f"{article_app}gradio_api/call/answer", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 413
    assert client.predict("Who is Carlos Ghosn?", api_name="/answer")["sources"]  # still serving


def test_a_request_naming_a_file_is_refused(article_app: str, tmp_path: Path) -> None:
    import httpx

    # A chat history holding a file reference once made the server copy that file into its cache.
    secret = Path.cwd() / ".pytest-secret.png"  # Gradio would serve files under the working directory
    file_ref = {"path": str(secret), "meta": {"_type": "gradio.FileData"}, "orig_name": "x.png"}
    for data in (["Who is Carlos Ghosn?", [file_ref], 3], ["Who is Carlos Ghosn?", [{"content": [file_ref]}], 3]):
        response = httpx.post(f"{article_app}gradio_api/call/answer", json={"data": data})
        assert response.status_code == 400 and "only text" in response.text
    # A question that merely mentions the name is text like any other.
    response = httpx.post(f"{article_app}gradio_api/call/answer", json={"data": ["What is gradio.FileData?", [], 3]})
    assert response.status_code == 200


def test_status_line_after_an_answer_does_not_walk_the_corpus(article_app: str, monkeypatch) -> None:
    import time

    import qa.build

    walks = []
    real = qa.build.walk_corpus
    monkeypatch.setattr(qa.build, "walk_corpus", lambda corpus: walks.append(corpus) or real(corpus))
    session = Client(article_app, verbose=False)
    session.predict("Who is Carlos Ghosn?", api_name="/chat")
    time.sleep(2.1)  # it used to walk the corpus again once a comparison was 2 s old
    _, _, status, _ = session.predict("How many vehicles did Mitsubishi sell in Southeast Asia?", api_name="/chat")
    assert walks == [] and "fresh" in status


def test_hostile_document_is_escaped_and_unicode_highlights_are_exact(tricky_app: str) -> None:
    client = Client(tricky_app, verbose=False)
    result = client.predict(
        "What tag does the Zorblax installer manual print on its warranty page?", api_name="/answer"
    )
    assert result["sources"][0]["doc"] == HOSTILE_ID and result["sources"][0]["text"] == HOSTILE_SENTENCE
    messages, panel, _ = chat(tricky_app, "What tag does the Zorblax installer manual print on its warranty page?")
    # the tag is shown as text (the answer phrase's markup may cut through it), never as a tag
    shown = parse(panel)
    assert "<script" not in panel and HOSTILE_SCRIPT in "".join(shown.text) and "script" not in shown.tags
    assert shown.ranked[1] == ("answer", HOSTILE_SENTENCE)
    reply, tags = rendered_text(messages[-1]["content"][0]["text"])
    assert HOSTILE_SCRIPT in reply and "script" not in tags

    _, panel, _ = chat(tricky_app, "Which car did the Kōenji tram depot repair in 2019?")
    assert parse(panel).ranked[1] == ("answer", UNICODE_SENTENCE)
    result = client.predict("Which car did the Kōenji tram depot repair in 2019?", api_name="/answer")
    assert result["sources"][0]["doc"] == UNICODE_ID


def test_qa_serve_is_a_plugin_command_that_does_not_load_gradio_until_run() -> None:
    import subprocess
    import sys

    code = (
        "import sys, click, qa.cli; m = qa.cli.main; "
        "print('serve' in m.list_commands(click.Context(m)), 'gradio' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False"]


def test_the_chat_loads_gradio_without_its_stub_rewrites_and_still_builds_components() -> None:
    """Gradio re-parses and rewrites its own .pyi stubs on import (half its import time); the chat skips that."""
    import subprocess
    import sys

    code = (
        "from ui.app import _gradio; gr = _gradio(); import gradio.component_meta as m; "
        "b = gr.Blocks(); b.__enter__(); gr.Textbox(label='q'); gr.HTML('x'); b.__exit__(None, None, None); "
        "import gradio.blocks_events as e; assert e.create_or_modify_pyi is m.create_or_modify_pyi; "
        "print(m.create_or_modify_pyi.__name__, *sorted(type(c).__name__ for c in b.blocks.values()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout
    assert out.split()[0] == "_no_stub_rewrite" and {"Textbox", "HTML"} <= set(out.split()[1:]), out


def test_qa_serve_on_a_busy_port_names_the_port_and_the_option(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-c", "from qa.cli import main; main()", "serve", "--port", str(port),
             "--index", str(tmp_path / "index")],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "QA_PORT" in result.stderr
    assert "GRADIO_SERVER_PORT" not in result.stderr and "Traceback" not in result.stderr
