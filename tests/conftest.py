"""Shared fixtures: the real model (loaded once per session) and small corpora."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# A suite started as a shell's background job (`make test &`) inherits SIGINT ignored, and so does
# every process it starts: Python then never raises KeyboardInterrupt, and a test's Ctrl-C to a child
# (`qa index watch`) is lost. Take the usual handler, as a terminal gives it; children start with the default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

ROOT = Path(__file__).resolve().parent.parent
ARTICLE = ROOT / "corpus" / "mitsubishi-joins-renault-nissan-alliance.txt"
ARTICLE_ID = ARTICLE.name

# Test file -> its tests' set-up, call and teardown seconds, summed. A fixture shared beyond one file
# counts for the file whose test first needs it (its set-up) and for the last (its teardown).
_FILE_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Add a test's set-up, call or teardown seconds to its file's."""
    path = report.nodeid.split("::")[0]
    _FILE_SECONDS[path] = _FILE_SECONDS.get(path, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The five test files that took longest, at the end of the run (the Ray tests' budget: 3 minutes)."""
    slowest = sorted(_FILE_SECONDS.items(), key=lambda item: -item[1])[:5]
    if slowest:
        terminalreporter.write_sep("-", "slowest test files")
        for path, seconds in slowest:
            terminalreporter.write_line(f"{seconds:7.1f} s  {path}")


@pytest.fixture(scope="session", autouse=True)
def encoder():
    """Load the real embedding model once for the whole session."""
    from qa.embed import DEFAULT_MODEL, get_encoder

    enc = get_encoder(DEFAULT_MODEL)
    enc.model  # noqa: B018 - load now
    return enc


def write_corpus(folder: Path, files: dict[str, str | bytes]) -> Path:
    """Write ``files`` (relative path -> text or bytes) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return folder


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen]]:
    """``subprocess.Popen`` for a test: whatever is still running when the test ends (pass or fail) is killed."""
    started: list[subprocess.Popen] = []

    def start(*args: object, **kwargs: object) -> subprocess.Popen:
        proc = subprocess.Popen(*args, **kwargs)  # type: ignore[call-overload]
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def make_corpus(tmp_path: Path) -> Callable[..., Path]:
    """Write a corpus folder: ``make_corpus({"a.txt": "text", "b.txt": b"bytes"})``."""

    def make(files: dict[str, str | bytes], name: str = "corpus") -> Path:
        return write_corpus(tmp_path / name, files)

    return make


@pytest.fixture(scope="session")
def make_session_corpus(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``make_corpus`` for session-scoped fixtures (the web app is launched once per session)."""

    def make(files: dict[str, str | bytes], name: str = "corpus") -> Path:
        return write_corpus(tmp_path_factory.mktemp(name) / "corpus", files)

    return make


@pytest.fixture(scope="session")
def article_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index of the article (corpus copied so tests can't disturb it)."""
    from qa import build_index

    base = tmp_path_factory.mktemp("article")
    corpus = base / "corpus"
    corpus.mkdir()
    shutil.copy(ARTICLE, corpus / ARTICLE_ID)
    build_index(corpus, base / "index")
    return base / "index"


@pytest.fixture(scope="session")
def article_text() -> str:
    return ARTICLE.read_text(encoding="utf-8")


# --- the web chat -------------------------------------------------------------

# A document that tries every way to inject HTML, script or Markdown into the page.
HOSTILE_ID = "zorblax-manual.txt"
HOSTILE_SCRIPT = "<script>window.__pwned=1</script>"
HOSTILE_IMG = '<img src=x onerror="window.__pwned=1">'
HOSTILE_SENTENCE = (
    f"The Zorblax installer manual prints the tag {HOSTILE_SCRIPT} on its warranty page "
    "and tells readers never to paste it into a browser."
)
HOSTILE_TEXT = (
    "Zorblax widget manual\n\n"
    "The Zorblax company makes small kitchen widgets that people assemble at home. "
    f"{HOSTILE_SENTENCE} "
    f"Its troubleshooting chapter shows the markup {HOSTILE_IMG} as an example of a broken picture link. "
    "The appendix has **bold claims**, a [friendly link](javascript:window.__pwned=1) and `inline code` "
    "that the reader should see exactly as printed.\n"
)
# Non-breaking spaces, curly quotes, non-Latin scripts and a character outside the BMP
# (JavaScript would count it as two UTF-16 units) before the cited sentence.
UNICODE_ID = "tōkyō-notes.txt"
UNICODE_SENTENCE = "The\u00a0Kōenji tram depot repaired the “Sakura\u00a07” car in 2019 for ¥12\u00a0million."
UNICODE_TEXT = (
    "Tōkyō tram notes 🚋 東京\n\n"
    "Jürgen rides the Straßenbahn through Tōkyō every morning before work. "
    "Москва и 東京 are twin cities in this story. "
    "Its old bogies were rebuilt by the same team. "
    f"{UNICODE_SENTENCE}\n"
)


@pytest.fixture(scope="session")
def feedback_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data folder (ratings) of the web chats the tests launch."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def launch_app(feedback_data: Path) -> Iterator[Callable[..., str]]:
    """Launch the web chat for an index in this process on a free port; returns its URL.

    Apps are closed when the session ends; their ratings go to ``feedback_data``.
    """
    from ui.app import build_app, launch

    apps = []

    def start(index: Path, corpus: Path | None = None) -> str:
        demo = build_app(index=index, corpus=corpus, data=feedback_data)
        _, url, _ = launch(demo, host="127.0.0.1", port=free_port(), prevent_thread_lock=True, quiet=True)
        apps.append(demo)
        return url

    yield start
    for demo in apps:
        demo.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def article_app(launch_app: Callable[..., str], article_index: Path) -> str:
    """URL of the web chat over the article."""
    return launch_app(article_index)


@pytest.fixture(scope="session")
def tricky_app(
    launch_app: Callable[..., str],
    make_session_corpus: Callable[..., Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    """URL of the web chat over a hostile document and a Unicode-heavy one."""
    corpus = make_session_corpus({HOSTILE_ID: HOSTILE_TEXT, UNICODE_ID: UNICODE_TEXT}, name="tricky")
    return launch_app(tmp_path_factory.mktemp("tricky-index") / "index", corpus)
