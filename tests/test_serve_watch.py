"""`qa serve --watch`: editing a source changes the next answers, with no failed request."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from gradio_client import Client

from .conftest import ARTICLE, ARTICLE_ID, free_port

QUESTION = "How many vehicles did Mitsubishi sell in Southeast Asia?"


def test_web_chat_follows_an_edited_source(tmp_path: Path) -> None:
    from ui.app import build_app, launch

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(ARTICLE, corpus / ARTICLE_ID)
    demo = build_app(index=tmp_path / "index", corpus=corpus, watch=True)
    _, url, _ = launch(demo, host="127.0.0.1", port=free_port(), prevent_thread_lock=True, quiet=True)
    answers: list[tuple[float, str, str]] = []  # (time, top sentence, index version)
    errors: list[BaseException] = []
    stop = threading.Event()

    def ask_all_along() -> None:
        client = Client(url, verbose=False)
        while not stop.is_set():
            try:
                result = client.predict(QUESTION, api_name="/answer")
                answers.append((time.monotonic(), result["sources"][0]["text"], result["index_version"]))
            except BaseException as exc:  # any failed request fails the test
                errors.append(exc)

    asker = threading.Thread(target=ask_all_along, daemon=True)
    asker.start()
    try:
        while len(answers) < 3 and not errors:
            time.sleep(0.05)
        path = corpus / ARTICLE_ID
        path.write_text(path.read_text(encoding="utf-8").replace("280,000", "310,000"), encoding="utf-8")
        saved = time.monotonic()
        deadline = saved + 60
        while not any("310,000" in text for t, text, _ in answers if t > saved) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        asker.join(timeout=30)
        demo.close()
    assert not errors, errors
    changed = [(t, v) for t, text, v in answers if "310,000" in text]
    assert changed, "the answer never changed after the edit"
    print(f"\nanswer changed {changed[0][0] - saved:.2f} s after the save; {len(answers)} answers, 0 failed")
    # Before the swap every answer is the old sentence, after it the new one: never a mix.
    versions = [v for _, _, v in answers]
    first_new = next(i for i, (_, text, _) in enumerate(answers) if "310,000" in text)
    assert all("280,000" in text for _, text, _ in answers[:first_new])
    assert all("310,000" in text for _, text, _ in answers[first_new:])
    assert len(set(versions[:first_new])) == 1 and len(set(versions[first_new:])) == 1
