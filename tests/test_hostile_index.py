"""A live index nothing can knock over: a rebuild that fails, files changed under a running engine.

Each case runs in a child process where it could end one (a full disk, a
SIGBUS), so a regression fails the test instead of the test run.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from qa import build_index

ROOT = Path(__file__).resolve().parent.parent
FACT = "The Harbour Town ferry leaves at seven every morning and returns at noon.\n"


def _run(code: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(  # type: ignore[call-overload,no-any-return]
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300, env=env, **kwargs
    )


# The child compiles no .pyc: under the file size limit Python would leave truncated ones in __pycache__.
QUIET_BYTECODE = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}


def _small_disk() -> None:  # in the child: files over 32 KB cannot be written, as on a full disk
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, 32 * 1024))


def test_ask_answers_from_the_previous_version_when_the_rebuild_fails(make_corpus, tmp_path: Path) -> None:
    corpus = make_corpus({"ferry.txt": FACT})
    index = tmp_path / "index"
    build_index(corpus, index)
    # A new long file makes the index stale; its rebuild needs files larger than the disk allows.
    (corpus / "long.txt").write_text(
        "\n\n".join(
            f"Paragraph {i} says that lighthouse number {i} was painted red in {1800 + i}." for i in range(900)
        ),
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-m", "qa.cli", "ask", "--index", str(index), "When does the ferry leave?"],
        capture_output=True, text=True, timeout=300, preexec_fn=_small_disk, cwd=ROOT, env=QUIET_BYTECODE,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "seven every morning" in done.stdout
    stale, failed = done.stderr.strip().splitlines()  # why the index is stale, then why it stayed so
    assert "is stale (sources differ: 1 added)" in stale
    assert "rebuilding failed" in failed and "File too large" in failed and "answering from the stale version" in failed
    assert "Traceback" not in done.stderr


def test_ask_with_no_index_and_a_failing_build_says_so_and_answers_nothing(make_corpus, tmp_path: Path) -> None:
    corpus = make_corpus({"ferry.txt": FACT * 2000})  # large enough that its first build cannot be written
    done = subprocess.run(
        [sys.executable, "-m", "qa.cli", "ask", "--index", str(tmp_path / "index"), "When does the ferry leave?"],
        capture_output=True, text=True, timeout=300, preexec_fn=_small_disk, cwd=ROOT,
        env={**QUIET_BYTECODE, "QA_CORPUS": str(corpus)},
    )  # fmt: skip
    assert done.returncode != 0 and "seven every morning" not in done.stdout
    assert "Traceback" not in done.stderr and done.stderr.strip()


def test_an_index_file_truncated_under_a_running_engine_is_reloaded_not_fatal(make_corpus, tmp_path: Path) -> None:
    corpus = make_corpus({"ferry.txt": FACT, "other.txt": "The museum opens on Sundays only.\n"})
    index = tmp_path / "index"
    build_index(corpus, index)
    done = _run(f"""
        import logging
        from pathlib import Path
        from qa import Engine
        from qa.store import current_folder
        logging.basicConfig()
        engine = Engine({str(index)!r}, {str(corpus)!r})
        print("before:", engine.answer("When does the ferry leave?").sources[0].text)
        folder = current_folder(Path({str(index)!r}))
        for name in ["vectors.faiss", *[f"sentences/{{p.name}}" for p in (folder / "sentences").iterdir()]]:
            path = folder / name
            with path.open("r+b") as f:  # what another program might do to a file the engine has mapped
                f.truncate(path.stat().st_size // 3)
        print("after:", engine.answer("When does the ferry leave?").sources[0].text)
        print("version changed:", current_folder(Path({str(index)!r})) != folder)
    """)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert "before: The Harbour Town ferry" in done.stdout and "after: The Harbour Town ferry" in done.stdout
    assert "version changed: True" in done.stdout  # rebuilt from the corpus, the damaged version left
    assert "changed after they were loaded" in done.stderr


def test_a_changed_index_with_no_corpus_to_rebuild_from_is_a_clean_error(make_corpus, tmp_path: Path) -> None:
    corpus = make_corpus({"ferry.txt": FACT})
    index = tmp_path / "index"
    build_index(corpus, index)
    done = _run(f"""
        import shutil
        from pathlib import Path
        from qa import Engine, IndexStateError
        from qa.store import current_folder
        engine = Engine({str(index)!r})
        engine.answer("When does the ferry leave?")
        shutil.rmtree({str(corpus)!r})  # nothing to rebuild from
        path = current_folder(Path({str(index)!r})) / "vectors.faiss"
        with path.open("r+b") as f:
            f.truncate(100)
        try:
            engine.answer("When does the ferry leave?")
        except IndexStateError as exc:
            print("error:", exc)
    """)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert "error: the index in" in done.stdout and "changed by another program" in done.stdout
    assert "qa index build --force" in done.stdout
