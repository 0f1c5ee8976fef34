"""Hostile inputs at full size: each case once crashed, hung or slowed `qa index build` (issue 28).

    .venv/bin/python bench/hostile_inputs.py [--timeout 150] [--json] [--only NAME ...]

Each case writes a small corpus (two news files and the hostile one) in a temp
folder and runs ``qa index build`` on it in a child process, or times one
reader call in a child process, under ``--timeout`` seconds. It reports the
wall time, the exit status, the largest resident set of the build and of
anything it started (``ru_maxrss`` of waited-for children), and the files the
build skipped with their reasons. Figures of another checkout: put its folder
first on ``PYTHONPATH``.

Cases: a file name that is not UTF-8; a PDF whose content stream inflates to
1 GiB (1 MB on disk); a named pipe; a 20 GB sparse file; a symlink loop; a
Markdown heading whose title holds 50,000 spaces; 320 KB of code fence and heading
pairs; HTML nested 100,000 levels deep.

The tests (``tests/test_hostile_files.py``) run the same cases at sizes that
keep the suite fast.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the PDF writer the tests use
from pdf_writer import pdf_bomb

NEWS = {
    "cars.txt": "Toyota sold ten million cars last year. The Corolla remained its best seller.",
    "space.txt": "The probe reached Jupiter in July. Its cameras sent back images of the storms.",
}


def _write(corpus: Path, name: bytes, content: bytes) -> None:
    with open(os.path.join(os.fsencode(corpus), name), "wb") as f:
        f.write(content)


def _bad_name(corpus: Path) -> None:
    _write(corpus, b"bad\xffname.txt", b"The zorblax widget was invented in Tromso in 1987 by a clockmaker.")


def _bomb(corpus: Path) -> None:
    _write(corpus, b"bomb.pdf", pdf_bomb(1 << 30))


def _fifo(corpus: Path) -> None:
    os.mkfifo(corpus / "pipe.txt")


def _sparse(corpus: Path) -> None:
    with (corpus / "huge.pdf").open("wb") as f:
        f.truncate(20 << 30)


def _loop(corpus: Path) -> None:
    (corpus / "loop.txt").symlink_to("loop.txt")


def _spaces_md() -> bytes:
    return b"# a" + b" " * 50_000 + b"b\n\nSome text.\n"  # spaces inside the title, not at its end


def _fences_md() -> bytes:
    pair = b"```\n```\n# H\n"
    return pair * (320_000 // len(pair))


def _deep_html() -> bytes:
    n = 100_000
    return b"<html><body><p>Intro text here.</p>" + b"<div>" * n + b"Deep text." + b"</div>" * n + b"</body></html>"


BUILDS: dict[str, Callable[[Path], None]] = {
    "name not UTF-8": _bad_name,
    "PDF bomb, 1 GiB inflated": _bomb,
    "named pipe": _fifo,
    "20 GB sparse file": _sparse,
    "symlink loop": _loop,
}
READS: dict[str, tuple[str, Callable[[], bytes]]] = {
    "Markdown heading with 50k spaces inside": ("spaces.md", _spaces_md),
    "320 KB of fence/heading pairs": ("fences.md", _fences_md),
    "HTML nested 100k deep": ("deep.html", _deep_html),
}
_READ_ONE = """
import sys, time
from qa.readers import read_bytes
raw = open(sys.argv[2], "rb").read()
started = time.perf_counter()
try:
    read_bytes(sys.argv[1], raw)
    outcome = "read"
except Exception as exc:
    outcome = f"refused: {str(exc)[:120]}"
print(f"{time.perf_counter() - started:.3f}\\t{outcome}")
"""


# Runs a command in a fresh process, so that its children's peak RSS is this command's alone.
_MEASURE = """
import json, os, resource, signal, subprocess, sys
command, timeout = json.loads(sys.argv[1]), float(sys.argv[2])
proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
try:
    out, err = proc.communicate(timeout=timeout)
    status = proc.returncode
except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    out, err = proc.communicate()
    status = "timeout"
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"out": out, "err": err, "status": status, "rss": rss}))
"""


def _run(command: list[str], timeout: float) -> tuple[float, int | str, float, str, str]:
    """(seconds, exit status or "timeout", max RSS in MB of the command and its children, stdout, stderr)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, json.dumps(command), str(timeout)], capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    result = json.loads(done.stdout)
    return seconds, result["status"], result["rss"], result["out"], result["err"]


def build_case(name: str, make: Callable[[Path], None], timeout: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="qa-hostile-") as tmp:
        corpus, index = Path(tmp) / "corpus", Path(tmp) / "index"
        corpus.mkdir()
        for file, text in NEWS.items():
            (corpus / file).write_text(text, encoding="utf-8")
        make(corpus)
        command = [sys.executable, "-m", "qa.cli", "index", "build", "--corpus", str(corpus), "--index", str(index)]
        seconds, status, rss, out, err = _run(command, timeout)
    skipped = [line for line in out.splitlines() if line.startswith("skipped ")]
    last_error = next((line for line in reversed(err.splitlines()) if line.strip()), "")
    return {
        "case": name, "seconds": round(seconds, 2), "exit": status, "max_rss_mb": round(rss),
        "skipped": skipped, "error": "" if status == 0 else last_error[:200],
    }  # fmt: skip


def read_case(name: str, file_name: str, make: Callable[[], bytes], timeout: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="qa-hostile-") as tmp:
        path = Path(tmp) / file_name
        size = path.write_bytes(make())
        seconds, status, rss, out, err = _run([sys.executable, "-c", _READ_ONE, file_name, str(path)], timeout)
    read_seconds, _, outcome = out.strip().partition("\t")
    return {
        "case": name, "bytes": size, "exit": status, "max_rss_mb": round(rss),
        "read_seconds": float(read_seconds) if read_seconds else None, "outcome": outcome or err[-200:],
        "wall_seconds": round(seconds, 2),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=150.0, help="seconds each case may run")
    parser.add_argument("--only", nargs="*", default=None, help="run only the cases whose names contain these words")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = []
    for name, make in BUILDS.items():
        if args.only is None or any(word in name for word in args.only):
            results.append(build_case(name, make, args.timeout))
            print(json.dumps(results[-1]) if args.json else results[-1], flush=True)
    for name, (file_name, make_raw) in READS.items():
        if args.only is None or any(word in name for word in args.only):
            results.append(read_case(name, file_name, make_raw, args.timeout))
            print(json.dumps(results[-1]) if args.json else results[-1], flush=True)


if __name__ == "__main__":
    main()
