"""Read corpus files in a worker process that has a memory budget, with a time budget per file.

A reader hands a file to C libraries (pdfium, lexbor, lxml) that allocate and
loop where Python cannot stop them: a 4 MB PDF whose content stream inflates
to gigabytes took the build to 5 GB of memory, and an allocation failure
inside pdfium ends the process that made it. So a build reads its files in
one worker process, started when the first file needs reading and reused for
the next ones:

- memory: the worker's address space is capped (``RLIMIT_AS``) at what it
  holds after start-up plus ``MEMORY_BUDGET``. A reader that goes over gets a
  ``MemoryError`` or dies; either way the file is skipped with that reason, a
  new worker takes the next file, and the build goes on.
- time: the build waits ``TIME_BUDGET`` seconds for each file, then kills the
  worker and skips the file with that reason.

This costs one process start per build that reads anything (about 0.2 s)
and a pipe round trip per file (well under a millisecond for a small text
file), and it covers every reader and every library at once, which a
deadline checked inside Python loops cannot: a single call into C is not
interrupted by it.

Nothing is pickled: a request is a JSON header and the file's bytes; a reply
a JSON header, the text (UTF-8) and the layout's arrays (raw bytes, dtype and
shape in the header). Log records the readers write in the worker are logged
again here, by the same logger.

>>> with ReaderSandbox() as sandbox:
...     sandbox.read("notes.txt", b"Hello.").text
'Hello.'
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import numpy as np

from qa.readers.base import Extracted, Layout, UnreadableFileError

log = logging.getLogger(__name__)

MEMORY_BUDGET = 2 << 30  # bytes of address space a file's reading may take beyond the worker's own
TIME_BUDGET = 120.0  # seconds one file may take to read
START_SECONDS = 60.0  # for the worker to start and import the readers (not part of any file's budget)
_ARRAYS = ("char_page", "char_line", "char_box")
_LENGTH = struct.Struct(">Q")
_QA_FOLDER = str(Path(__file__).resolve().parent.parent)


class _WorkerGone(Exception):
    """The worker exited (or was killed) before answering."""


def _write_frame(stream: IO[bytes], payload: bytes) -> None:
    stream.write(_LENGTH.pack(len(payload)))
    stream.write(payload)


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks: list[bytes] = []
    while n > 0:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise _WorkerGone
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _read_frame(fd: int, deadline: float | None) -> bytes:
    (n,) = _LENGTH.unpack(_read_exact(fd, _LENGTH.size, deadline))
    return _read_exact(fd, n, deadline)


class ReaderSandbox:
    """One build's reader worker: ``read(name, raw)`` as ``readers.read_bytes``, under the budgets.

    A file over a budget raises ``UnreadableFileError`` saying which; the next
    ``read`` starts a fresh worker. ``close()`` (or leaving the ``with``) ends it.
    """

    def __init__(self, memory_budget: int | None = None, time_budget: float | None = None) -> None:
        self.memory_budget = MEMORY_BUDGET if memory_budget is None else memory_budget
        self.time_budget = TIME_BUDGET if time_budget is None else time_budget
        if self.memory_budget <= 0 or self.time_budget <= 0:
            raise ValueError(
                f"budgets must be greater than 0; got memory_budget={self.memory_budget}, "
                f"time_budget={self.time_budget}"
            )
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ReaderSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
        proc = subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP, _QA_FOLDER, str(self.memory_budget)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,  # a Ctrl-C to the build's terminal is the build's to handle
        )
        try:
            _read_frame(proc.stdout.fileno(), time.monotonic() + START_SECONDS)  # type: ignore[union-attr]
        except (TimeoutError, _WorkerGone):
            self._kill(proc)
            raise UnreadableFileError("the reader process did not start") from None
        return proc

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()

    def close(self) -> None:
        if self._proc is not None:
            proc, self._proc = self._proc, None
            try:
                proc.stdin.close()  # type: ignore[union-attr]
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
            self._kill(proc)

    def read(self, name: str, raw: bytes) -> Extracted:
        """Read one file's bytes in the worker; UnreadableFileError (naming ``name``) when it cannot be used."""
        if self._proc is None:
            self._proc = self._start()
        proc = self._proc
        assert proc.stdin is not None and proc.stdout is not None
        started = time.monotonic()
        try:
            _write_frame(proc.stdin, json.dumps({"name": name}).encode())
            _write_frame(proc.stdin, raw)
            proc.stdin.flush()
            deadline = started + self.time_budget
            header = json.loads(_read_frame(proc.stdout.fileno(), deadline))
            payloads = [_read_frame(proc.stdout.fileno(), deadline) for _ in range(header["frames"])]
        except TimeoutError:
            self._proc = None
            self._kill(proc)
            raise UnreadableFileError(
                f"{name} took more than {self.time_budget:g} s to read (the time budget per file)"
            ) from None
        except (_WorkerGone, BrokenPipeError):
            self._proc = None
            self._kill(proc)
            raise UnreadableFileError(self._death(name, proc.returncode)) from None
        for level, logger, message in header["logs"]:
            logging.getLogger(logger).log(level, "%s", message)
        if header.get("memory"):  # a MemoryError in the worker: its heap may be in pieces, so start afresh
            self._proc = None
            self._kill(proc)
            raise UnreadableFileError(f"{name} needs more memory to read than the {self._budget()} budget")
        if header.get("error"):
            raise UnreadableFileError(header["error"])
        return _extracted(header, payloads)

    def _budget(self) -> str:
        return f"{self.memory_budget / 2**20:,.0f} MB"

    def _death(self, name: str, code: int | None) -> str:
        how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit status {code}"
        return (
            f"{name} stopped the reader process ({how}): it needs more memory to read than the "
            f"{self._budget()} budget, or it crashes the reader"
        )


def _extracted(header: dict[str, Any], payloads: list[bytes]) -> Extracted:
    text = payloads[0].decode("utf-8", "surrogatepass")
    layout = None
    if header["layout"] is not None:
        spec = header["layout"]
        arrays = {}
        for (key, dtype, shape), payload in zip(spec["arrays"], payloads[1:], strict=True):
            arrays[key] = np.frombuffer(payload, dtype=dtype).reshape(shape)
        layout = Layout(
            **arrays,
            headings=tuple((int(o), str(p)) for o, p in spec["headings"]),
            page_sizes=tuple((float(w), float(h)) for w, h in spec["page_sizes"]),
            context=tuple((int(s), int(e)) for s, e in spec["context"]),
        )
    return Extracted(text, header["encoding"], layout, header["title"])


# --- the worker -----------------------------------------------------------------------------

# Runs the worker without importing the ``qa`` package's answering side (its __init__): the
# readers need only ``qa.readers``, ``qa.layout`` and ``qa.types``.
_BOOTSTRAP = """
import sys, types
package = types.ModuleType("qa")
package.__path__ = [sys.argv[1]]
sys.modules["qa"] = package
from qa.readers.sandbox import serve
serve(int(sys.argv[2]))
"""


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[tuple[int, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelno, record.name, record.getMessage()))


def _address_space() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _cap_memory(budget: int) -> None:
    try:
        import resource

        size = _address_space()
        if not size:  # no /proc to measure the start-up size by: the time budget still holds
            return
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = size + budget
        for limit in (soft, hard):
            if limit != resource.RLIM_INFINITY:
                cap = min(cap, limit)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (ImportError, ValueError, OSError):  # no RLIMIT_AS here: the time budget still holds
        pass


def serve(memory_budget: int) -> None:
    """The worker's loop: read requests from stdin, answer on stdout, until stdin closes."""
    from qa import readers
    from qa.readers import docx, html, pdf, text  # noqa: F401 - imported before the cap is measured

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    collect = _Collect()
    root = logging.getLogger("qa")
    root.addHandler(collect)
    root.setLevel(logging.DEBUG)
    root.propagate = False
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but frames goes to the build
    _cap_memory(memory_budget)
    _write_frame(sink, b"{}")  # ready
    sink.flush()
    fd = source.fileno()
    while True:
        try:
            request = json.loads(_read_frame(fd, None))
            raw = _read_frame(fd, None)
        except _WorkerGone:
            return
        collect.records.clear()
        header: dict[str, Any] = {"error": None, "memory": False, "layout": None}
        payloads: list[bytes] = [b""]
        try:
            extracted = readers.read_bytes(request["name"], raw)
            header.update(encoding=extracted.encoding, title=extracted.title)
            payloads = [extracted.text.encode("utf-8", "surrogatepass")]
            layout = extracted.layout
            if layout is not None:
                arrays = []
                for key in _ARRAYS:
                    value = getattr(layout, key)
                    if value is not None:
                        value = np.ascontiguousarray(value)
                        arrays.append((key, value.dtype.str, list(value.shape)))
                        payloads.append(value.tobytes())
                header["layout"] = {
                    "arrays": arrays,
                    "headings": list(layout.headings),
                    "page_sizes": list(layout.page_sizes),
                    "context": list(layout.context),
                }
        except UnreadableFileError as exc:
            header["error"] = str(exc)
            memory = isinstance(exc.__cause__, MemoryError)
            header["memory"] = memory
        except MemoryError:
            header["memory"] = True
        del raw
        header["logs"] = collect.records
        header["frames"] = len(payloads)
        _write_frame(sink, json.dumps(header).encode())
        for payload in payloads:
            _write_frame(sink, payload)
        sink.flush()
