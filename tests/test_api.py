"""The HTTP API beside the chat (/v1, /openapi.json, /docs), and what the server refuses to serve."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest

from qa import get_engine

from .test_app import SOLD

QUESTION = "How many vehicles did Mitsubishi sell in Southeast Asia?"


def post(url: str, path: str, **kwargs: object) -> httpx.Response:
    return httpx.post(url.rstrip("/") + path, timeout=60, **kwargs)  # type: ignore[arg-type]


def one_sentence(detail: object) -> bool:
    return isinstance(detail, str) and detail[0].isupper() and detail.endswith(".") and "Traceback" not in detail


@pytest.mark.parametrize(
    ("body", "history", "k"),
    [
        ({"question": QUESTION}, (), 3),
        ({"question": "Where is it built?", "history": [QUESTION], "k": 5}, [QUESTION], 5),
    ],
)
def test_v1_answer_answers_the_same_as_answer(article_app: str, article_index: Path, body, history, k) -> None:
    response = post(article_app, "/v1/answer", json=body)
    assert response.status_code == 200, response.text
    expected = get_engine(article_index).answer(body["question"], history=history, k=k).to_dict()
    assert response.json() == json.loads(json.dumps(expected))
    if body["question"] == QUESTION:
        got = response.json()
        assert got["phrase"]["text"] == "280,000" and got["sources"][0]["text"] == SOLD
        assert got["confidence_label"] in ("confident", "likely")


def test_openapi_schema_validates_and_describes_the_routes(article_app: str) -> None:
    from openapi_spec_validator import validate

    schema = httpx.get(f"{article_app}openapi.json").json()
    validate(schema)
    assert {"/v1/answer", "/v1/index", "/v1/feedback"} <= set(schema["paths"])
    answer = schema["paths"]["/v1/answer"]["post"]
    assert {"200", "413", "422", "503"} <= set(answer["responses"])
    assert "confidence_label" in schema["components"]["schemas"]["AnswerOut"]["properties"]


def test_docs_page_needs_nothing_from_the_internet(article_app: str) -> None:
    page = httpx.get(f"{article_app}docs").text
    assert "/docs-assets/swagger-ui-bundle.js" in page and "cdn." not in page
    assert httpx.get(f"{article_app}docs-assets/swagger-ui-bundle.js").status_code == 200


def test_index_status(article_app: str, article_index: Path) -> None:
    status = httpx.get(f"{article_app}v1/index").json()
    assert status["state"] == "fresh" and status["version"] == get_engine(article_index).status()["version"]


@pytest.mark.parametrize(
    ("content", "headers", "status", "words"),
    [
        (b'{"question": "Who is', {"content-type": "application/json"}, 422, "not valid JSON"),
        (b'{"question": ""}', {"content-type": "application/json"}, 422, "The question is empty"),
        (b'{"question": "Who?", "k": 0}', {"content-type": "application/json"}, 422, "from 1 to 20"),
        (b'{"question": 5}', {"content-type": "application/json"}, 422, "'question'"),
        (b'{"question": "Who?", "k": "3"}', {"content-type": "application/json"}, 422, "'k'"),
        (b'{"question": "Who?", "question": "x"}', {"content-type": "application/json"}, 422, "repeats the key"),
        (b'{"history": []}', {"content-type": "application/json"}, 422, "lacks the field 'question'"),
        (b'{"question": "Who?"}', {"content-type": "text/plain"}, 415, "Content-Type: application/json"),
        (b'{"question": "Who?"}', {}, 415, "Content-Type: application/json"),
    ],
)
def test_bad_requests_get_a_status_and_one_sentence(
    article_app: str, content: bytes, headers: dict, status: int, words: str
) -> None:
    response = post(article_app, "/v1/answer", content=content, headers=headers)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert one_sentence(detail) and words in detail, detail


def test_oversized_body_is_413(article_app: str) -> None:
    big = json.dumps({"question": "x" * (2 << 20)}).encode()
    response = post(article_app, "/v1/answer", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413 and one_sentence(response.json()["detail"])


def test_feedback_is_stored_with_its_answer(article_app: str, feedback_data: Path) -> None:
    from qa.feedback import FeedbackStore

    answered = post(article_app, "/v1/answer", json={"question": QUESTION}).json()
    stored = post(article_app, "/v1/feedback", json={"answer": answered, "rating": -1, "comment": "wrong region"})
    assert stored.status_code == 201, stored.text
    rating = next(r for r in FeedbackStore(feedback_data).ratings() if r.id == stored.json()["id"])
    assert (rating.rating, rating.comment, rating.answer) == (-1, "wrong region", answered)
    bad = post(article_app, "/v1/feedback", json={"answer": answered, "rating": 2})
    assert bad.status_code == 422 and one_sentence(bad.json()["detail"])
    forged = post(article_app, "/v1/feedback", json={"answer": {"question": 3}, "rating": 1})
    assert forged.status_code == 422 and "not one /v1/answer gave" in forged.json()["detail"]


def test_api_shares_the_chats_answering_slots(article_app: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import ui.api
    from ui.app import _services
    from ui.service import concurrency

    service = next(s for s in list(_services.values()) if s.engine.index.name == "index")
    monkeypatch.setattr(ui.api, "BUSY_WAIT_SECONDS", 0.2)
    taken = 0
    try:
        while service._slots.acquire(blocking=False):  # every slot busy, as under load from the page
            taken += 1
        busy = post(article_app, "/v1/answer", json={"question": QUESTION})
    finally:
        for _ in range(taken):
            service._slots.release()
    assert taken == concurrency()
    assert busy.status_code == 503 and "busy" in busy.json()["detail"] and busy.headers["retry-after"]
    assert post(article_app, "/v1/answer", json={"question": QUESTION}).status_code == 200


def test_503_with_retry_after_while_the_index_loads() -> None:
    from fastapi.testclient import TestClient

    from ui.api import create_api

    client = TestClient(create_api(lambda: None))
    for response in (client.post("/v1/answer", json={"question": QUESTION}), client.get("/v1/index")):
        assert response.status_code == 503 and response.headers["retry-after"]
        assert "still loading" in response.json()["detail"]


# --- issue 28, item 8 and 9: the server says no more than the chat ----------------------------------


def test_monitoring_is_off_unreachable_and_prints_no_secret_url(article_app: str, capfd) -> None:  # type: ignore[no-untyped-def]
    for path in ("monitoring", "monitoring/summary", "monitoring/abc", "gradio_api/monitoring/summary"):
        response = httpx.get(f"{article_app}{path}")
        assert response.status_code == 404, (path, response.text)
    assert "Monitoring URL" not in capfd.readouterr().out


@pytest.mark.parametrize(
    "path", ["gradio_api/upload", "gradio_api/process_recording", "gradio_api/file=/etc/hostname", "login"]
)
def test_uploads_recordings_and_files_are_refused(article_app: str, path: str) -> None:
    posted = httpx.post(f"{article_app}{path}", files={"file": ("a.wav", b"RIFF" + b"\0" * 100)})
    fetched = httpx.get(f"{article_app}{path}")
    assert posted.status_code == 404 and fetched.status_code == 404


def test_a_file_reference_hidden_by_an_escape_or_a_second_content_type_is_refused(article_app: str) -> None:
    secret = Path.cwd() / ".pytest-secret.png"
    file_ref = {"path": str(secret), "meta": {"_type": "gradio.FileData"}, "orig_name": "x.png"}
    # A JSON escape hides the text "gradio.FileData" from a filter matching bytes; the parse sees it.
    escaped = json.dumps({"data": ["Who is Carlos Ghosn?", [file_ref], 3]}).replace("FileData", "File\\u0044ata")
    response = post(
        article_app, "/gradio_api/call/answer", content=escaped, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and "only text" in response.json()["detail"]
    # Two Content-Type headers: the app and a filter could each read another.
    plain = json.dumps({"data": ["Who is Carlos Ghosn?", [file_ref], 3]})
    headers = [("content-type", "application/json"), ("content-type", "text/plain")]
    response = post(article_app, "/gradio_api/call/answer", content=plain, headers=headers)
    assert response.status_code == 400 and "2 Content-Type headers" in response.json()["detail"]


@pytest.mark.parametrize(
    ("data", "message"),
    [([], "takes 3 values (question, history, k); got 0"), (["Who is Carlos Ghosn?"], "got 1"), ({}, "JSON list")],
)
def test_answer_endpoint_with_too_few_arguments_says_so(article_app: str, data: object, message: str) -> None:
    response = post(article_app, "/gradio_api/call/answer", json={"data": data})
    assert response.status_code == 422 and message in response.json()["detail"], response.text


def test_a_clients_bad_input_is_one_log_line_without_a_traceback(article_app: str, capfd, caplog) -> None:  # type: ignore[no-untyped-def]
    capfd.readouterr()
    bad = [
        ("/gradio_api/call/answer", {"json": {"data": []}}),
        ("/gradio_api/queue/join", {"json": {"data": [], "fn_index": 999, "session_hash": "x"}}),
        ("/gradio_api/queue/join", {"content": b"{nope", "headers": {"content-type": "application/json"}}),
        ("/v1/answer", {"content": b"[1, 2", "headers": {"content-type": "application/json"}}),
    ]
    with caplog.at_level(logging.INFO, logger="ui"):
        for path, kwargs in bad:
            assert post(article_app, path, **kwargs).status_code in (400, 404, 422)
    records = [r for r in caplog.records if r.name.startswith("ui") and "refused" in r.getMessage()]
    assert len(records) == len(bad) and all("\n" not in r.getMessage() and not r.exc_info for r in records)
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err + captured.out
