"""How long a long job has left: ``eta(started, done, total)`` for log lines, :class:`Bar` for a terminal."""

from __future__ import annotations

import sys
import time
from typing import Any


def eta(started: float, done: float, total: float) -> str:
    """Time left at the rate so far (``started`` from ``time.perf_counter()``), e.g. ``"about 3 min 20 s left"``.

    ``done`` and ``total`` are in any unit of work (files, texts, tokens); an
    empty string until there is a rate to go on.
    """
    elapsed = time.perf_counter() - started
    if done <= 0 or elapsed <= 0 or total <= done:
        return ""
    left = elapsed * (total - done) / done
    if left < 60:
        return f"about {max(1, round(left))} s left"
    minutes, seconds = divmod(round(left), 60)
    if minutes < 60:
        return f"about {minutes} min {seconds} s left"
    hours, minutes = divmod(minutes, 60)
    return f"about {hours} h {minutes} min left"


class EmbeddedLog:
    """Logs "embedded N of TOTAL texts, about … left" each time another twentieth of ``total`` texts is done.

    The time left is reckoned by ``work`` (tokens, say) when the caller gives it, else by texts.
    """

    def __init__(self, log: Any, total: int, total_work: float | None = None) -> None:
        self.log, self.total, self.total_work = log, total, total_work
        self.step = max(1, total // 20)
        self.done, self.work, self.logged = 0, 0.0, 0
        self.started = time.perf_counter()

    def add(self, texts: int, work: float = 0.0) -> None:
        self.done += texts
        self.work += work
        if self.done // self.step > self.logged:
            self.logged = self.done // self.step
            if self.total_work is None:
                left = eta(self.started, self.done, self.total)
            else:
                left = eta(self.started, self.work, self.total_work)
            self.log.info("embedded %d of %d texts%s", self.done, self.total, f", {left}" if left else "")


# Progress bars are drawn only when the command line asks for them (a terminal, no --quiet, no -v):
# the library never draws on its own in someone else's program or log.
_bars = False


def show_bars(enabled: bool) -> None:
    """Draw progress bars on stderr from now on (``qa`` turns them on for a terminal), or stop."""
    global _bars
    _bars = enabled


class Bar:
    """A tqdm bar on stderr when bars are shown, else nothing: ``Bar(120, "reading files", "file")``.

    ``update(n)`` counts work done (from any one thread); ``close()`` clears it.
    tqdm shows the count, the rate and the time left.
    """

    def __init__(self, total: int, desc: str, unit: str) -> None:
        self._bar: Any = None
        if _bars and total > 0:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, desc=desc, unit=f" {unit}", file=sys.stderr, leave=False, dynamic_ncols=True,
                mininterval=0.25, smoothing=0.1,
            )  # fmt: skip

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
