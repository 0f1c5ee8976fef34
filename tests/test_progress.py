"""Long work shows itself: a progress bar in a terminal, nothing but the summary when piped."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from qa import progress

from .conftest import write_corpus

TOPICS = ["harbour cranes", "island ferries", "market stalls", "tram depots", "river locks", "mountain huts"]


def corpus_of(folder: Path, files: int = 12) -> Path:
    return write_corpus(folder, {
        f"note-{i:02}.txt": f"Note {i}\n\n" + " ".join(
            f"The {TOPICS[(i + j) % len(TOPICS)]} report number {j} of note {i} says work went on for {j + i} days."
            for j in range(8)
        ) + "\n"
        for i in range(files)
    })  # fmt: skip


def in_terminal(args: list[str], timeout: float = 300) -> tuple[int, str]:
    """Run ``args`` with stdin, stdout and stderr on a pseudo-terminal; (exit status, everything it drew)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal has a size
    proc = subprocess.Popen(args, stdin=follower, stdout=follower, stderr=follower, close_fds=True)
    os.close(follower)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # the terminal closed: the process is done
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
    finally:
        os.close(leader)
    return proc.wait(timeout=60), out.decode("utf-8", "replace")


def test_build_in_a_terminal_draws_a_bar_and_piped_prints_only_its_summary(tmp_path: Path) -> None:
    corpus = corpus_of(tmp_path / "corpus")
    qa = [sys.executable, "-m", "qa.cli"]
    status, drawn = in_terminal([*qa, "index", "build", "--corpus", str(corpus), "--index", str(tmp_path / "a")])
    assert status == 0, drawn
    # tqdm's bars: what is counted, the count, the rate and the time left, redrawn in place
    assert "reading files" in drawn and "embedding texts" in drawn, drawn
    assert "/12 [" in drawn and " file/s" in drawn and "\r" in drawn, drawn
    assert re.search(r"\d+/192 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+ text/s\]", drawn), drawn
    assert "files: 12 added" in drawn

    piped = subprocess.run([*qa, "index", "build", "--corpus", str(corpus), "--index", str(tmp_path / "b")],
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert piped.returncode == 0 and piped.stderr == ""
    lines = piped.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"index {tmp_path / 'b'} version ") and "12 added" in lines[1]

    quiet, drawn = in_terminal([*qa, "--quiet", "index", "build", "--force", "--corpus", str(corpus),
                                "--index", str(tmp_path / "a")])  # fmt: skip
    assert quiet == 0 and "reading files" not in drawn and "files:" in drawn
    verbose, drawn = in_terminal([*qa, "-v", "index", "build", "--force", "--corpus", str(corpus),
                                  "--index", str(tmp_path / "a")])  # fmt: skip
    assert verbose == 0 and "reading files" not in drawn and "INFO qa.build" in drawn  # log lines, not bars


def test_bars_are_off_unless_turned_on(capfd: pytest.CaptureFixture[str]) -> None:
    with progress.Bar(10, "nothing", "thing") as bar:  # the library never draws in someone else's program
        bar.update(3)
    assert capfd.readouterr() == ("", "")


def test_the_build_before_serve_draws_a_bar_in_a_terminal(tmp_path: Path) -> None:
    import socket

    corpus = corpus_of(tmp_path / "corpus")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [sys.executable, "-m", "qa.cli", "serve", "--corpus", str(corpus), "--index", str(tmp_path / "index"),
            "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(args, stdin=follower, stdout=follower, stderr=follower, close_fds=True)
    os.close(follower)
    out = bytearray()
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and b"web chat on http" not in out:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    out += os.read(leader, 65536)
                except OSError:
                    break
            elif proc.poll() is not None:
                break
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        os.close(leader)
    drawn = out.decode("utf-8", "replace")
    assert "web chat on http" in drawn, drawn
    assert "reading files" in drawn and "embedding texts" in drawn and "\r" in drawn, drawn
    assert drawn.index("embedding texts") < drawn.index("web chat on http")


def test_eval_in_a_terminal_draws_a_bar_over_its_questions(tmp_path: Path) -> None:
    import json

    corpus = corpus_of(tmp_path / "corpus", files=3)
    cases = tmp_path / "cases.jsonl"
    cases.write_text(
        "".join(json.dumps({"id": f"q{i}", "question": f"How many days did report number {i} of note 1 take?",
                            "gold": [f"report number {i} of note 1"]}) + "\n" for i in range(6)),
        encoding="utf-8",
    )  # fmt: skip
    qa = [sys.executable, "-m", "qa.cli"]
    index = str(tmp_path / "index")
    built = subprocess.run([*qa, "index", "build", "--corpus", str(corpus), "--index", index], timeout=300)
    assert built.returncode == 0
    status, drawn = in_terminal([*qa, "eval", str(cases), "--index", index])
    assert status == 0, drawn
    assert "answering" in drawn and "/6 [" in drawn and "question/s" in drawn and "\r" in drawn, drawn
    piped = subprocess.run([*qa, "eval", str(cases), "--index", index], capture_output=True, text=True, timeout=300)
    assert piped.returncode == 0 and "answering" not in piped.stdout + piped.stderr
