"""Many people at once: the web chat answers concurrently, across a rebuild, each answer from one index version."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from gradio_client import Client

from qa import build_index, get_engine

from .conftest import free_port

CODES = ["amber", "cobalt", "crimson"]
NEWS = {
    "harbour.txt": (
        "Harbour news\n\nThe harbour master said the new crane lifts forty tonnes. "
        "Ferries to the island now leave every two hours in summer.\n"
    ),
    "market.txt": "Market report\n\nThe Saturday market moved to the old station square in March.\n",
}


def vault(code: str) -> str:
    return f"Vault notes\n\nThe vault access code is {code}. Guards change it every week.\n"


def test_sixteen_clients_at_once_get_answers_each_from_one_index_version(make_corpus, tmp_path: Path) -> None:
    from ui.app import build_app, concurrency, launch

    corpus = make_corpus({**NEWS, "vault.txt": vault(CODES[0])})
    index = tmp_path / "index"
    code_of = {build_index(corpus, index).version: CODES[0]}
    demo = build_app(index=index, corpus=corpus)
    _, url, _ = launch(demo, host="127.0.0.1", port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        answers: list[dict] = []
        errors: list[Exception] = []
        lock = threading.Lock()
        stop = threading.Event()
        clients = [Client(url, verbose=False) for _ in range(16)]

        def ask(client: Client) -> None:
            while not stop.is_set():
                try:
                    a = client.predict("What is the vault access code?", api_name="/answer")
                except Exception as exc:
                    with lock:
                        errors.append(exc)
                    return
                with lock:
                    answers.append(a)

        def wait_for_answers_from(version: str) -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with lock:
                    if any(a["index_version"] == version for a in answers[-32:]):
                        return
                time.sleep(0.05)

        threads = [threading.Thread(target=ask, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        # The first version too: on a slow machine the first rebuild could otherwise land before any answer.
        wait_for_answers_from(next(iter(code_of)))
        for code in CODES[1:]:
            (corpus / "vault.txt").write_text(vault(code), encoding="utf-8")
            manifest = build_index(corpus, index)
            code_of[manifest.version] = code
            get_engine(index).refresh(wait=True)
            wait_for_answers_from(manifest.version)
        stop.set()
        for t in threads:
            t.join(timeout=60)
    finally:
        demo.close()

    assert not errors, errors[:3]
    assert {a["index_version"] for a in answers} == set(code_of)
    for a in answers:  # wholly from the version it names: its code, never another's
        assert code_of[a["index_version"]] in a["sources"][0]["text"]
    assert concurrency() > 1
    limits = {fn.api_name: fn.concurrency_limit for fn in demo.fns.values() if fn.api_name in ("answer", "chat")}
    assert set(limits) == {"answer", "chat"} and all(limit == concurrency() for limit in limits.values()), limits


def test_serve_prints_its_progress_and_url_once_serving(article_index: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import urllib.request

    port = free_port()
    qa_bin = str(Path(sys.executable).parent / "qa")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen(
        [qa_bin, "serve", "--index", str(article_index), "--port", str(port)],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line.strip())
            if line.startswith("web chat on"):
                break
        # The URL is printed only once the page is served.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
            assert page.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert any("loading the index and the model" in line for line in lines), lines
    assert lines[-1] == f"web chat on http://127.0.0.1:{port} (Ctrl+C to stop)", lines
