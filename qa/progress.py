"""How long a long job has left, for progress lines: ``eta(started, done, total)``."""

from __future__ import annotations

import time


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
