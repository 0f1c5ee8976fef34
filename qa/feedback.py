"""Ratings of answers, kept to become test cases: ``feedback.sqlite`` in the data folder.

A person rates an answer up (+1) or down (-1), with an optional comment. Each
rating is one row, written in one transaction (SQLite's journal makes it all
or nothing, so a crash loses at most the rating being written). A row keeps
what is needed to ask the question again: the question, the chat's earlier
questions, the whole answer as JSON (its sources, confidence and index
version included) and the time.

``export_cases`` turns ratings into cases ``qa eval`` reads: an answer rated
up gives its cited sentence as gold (an abstention rated up: a question the
sources don't answer, gold null); an answer rated down gives a case marked
``"review"``, which ``qa eval`` skips until someone writes its gold.

The data folder is ``$QA_DATA``, else ``./data``; it is never the index folder.

>>> store = FeedbackStore("/tmp/qa-doctest-data")            # doctest: +SKIP
>>> store.record(answer, rating=-1, comment="wrong year")     # doctest: +SKIP
1
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from qa.answer import MAX_QUESTION_CHARS, check_history
from qa.types import Answer, QAError

FILE_NAME = "feedback.sqlite"
SCHEMA_VERSION = 1
MAX_COMMENT_CHARS = 2000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ratings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rated_at TEXT NOT NULL,            -- ISO 8601, UTC
    question TEXT NOT NULL,
    history TEXT NOT NULL,             -- JSON list of the chat's earlier questions, oldest first
    answer TEXT NOT NULL,              -- JSON: Answer.to_dict()
    sources TEXT NOT NULL,             -- JSON: the answer's sources (also inside answer; kept for queries)
    state TEXT NOT NULL,               -- "answered" or "abstained"
    index_version TEXT NOT NULL,
    rating INTEGER NOT NULL CHECK (rating IN (-1, 1)),
    comment TEXT
);
CREATE INDEX IF NOT EXISTS ratings_rated_at ON ratings (rated_at);
"""


class FeedbackError(QAError):
    """A rating that cannot be stored: a bad value, or a data folder that cannot hold the file."""


def default_data_folder() -> Path:
    """``$QA_DATA``, else ``./data``."""
    return Path(os.environ.get("QA_DATA", "data"))


@dataclass(frozen=True, slots=True)
class Rating:
    """One stored rating."""

    id: int
    rated_at: str
    question: str
    history: list[str]
    answer: dict[str, Any]
    state: str
    index_version: str
    rating: int
    comment: str | None


class FeedbackStore:
    """The ratings file of one data folder; cheap to make, opens the file per call (any thread may use it)."""

    def __init__(self, folder: str | os.PathLike[str] | None = None, *, index: str | os.PathLike[str] | None = None):
        self.folder = Path(folder) if folder is not None else default_data_folder()
        if index is not None and _same_or_inside(self.folder, Path(index)):
            raise FeedbackError(
                f"the data folder {str(self.folder)!r} is the index folder or inside it; "
                "set QA_DATA (or --data) to a folder of its own"
            )
        self.path = self.folder / FILE_NAME

    def _connect(self, *, create: bool) -> sqlite3.Connection:
        if create:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise FeedbackError(f"cannot create the data folder {str(self.folder)!r}: {exc.strerror}") from exc
        elif not self.path.exists():
            raise FeedbackError(f"no ratings yet: {str(self.path)!r} does not exist")
        try:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA synchronous = FULL")
            if create:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    conn.close()
                    raise FeedbackError(f"{str(self.path)!r} was written by a newer version (schema {version})")
                conn.executescript(_SCHEMA)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise FeedbackError(f"cannot open {str(self.path)!r}: {exc}") from exc
        return conn

    def record(
        self,
        answer: Answer,
        *,
        rating: int,
        history: Sequence[str] = (),
        comment: str | None = None,
    ) -> int:
        """Store one rating (+1 or -1) of ``answer``, in one transaction; returns its id."""
        if isinstance(rating, bool) or rating not in (1, -1):
            raise FeedbackError(f"a rating is 1 (helpful) or -1 (wrong), not {rating!r}")
        comment = _check_comment(comment)
        try:
            turns = check_history(history)
        except QAError as exc:
            raise FeedbackError(str(exc)) from exc
        if not answer.question.strip() or len(answer.question) > MAX_QUESTION_CHARS:
            raise FeedbackError("the rated answer's question is empty or over the length limit")
        data = answer.to_dict()
        row = (
            datetime.now(UTC).isoformat(timespec="seconds"),
            answer.question,
            json.dumps(turns, ensure_ascii=False),
            json.dumps(data, ensure_ascii=False),
            json.dumps(data["sources"], ensure_ascii=False),
            "abstained" if answer.abstained else "answered",
            answer.index_version,
            rating,
            comment,
        )
        conn = self._connect(create=True)
        try:
            with conn:  # BEGIN ... COMMIT, or ROLLBACK on an error
                conn.execute("BEGIN IMMEDIATE")
                cursor = conn.execute(
                    "INSERT INTO ratings (rated_at, question, history, answer, sources, state, index_version, "
                    "rating, comment) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
                return int(cursor.lastrowid or 0)
        except sqlite3.Error as exc:
            raise FeedbackError(f"cannot store the rating in {str(self.path)!r}: {exc}") from exc
        finally:
            conn.close()

    def add_comment(self, rating_id: int, comment: str) -> None:
        """Attach (or replace) the comment of a stored rating."""
        checked = _check_comment(comment)
        conn = self._connect(create=True)
        try:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                changed = conn.execute("UPDATE ratings SET comment = ? WHERE id = ?", (checked, rating_id)).rowcount
        except sqlite3.Error as exc:
            raise FeedbackError(f"cannot store the comment in {str(self.path)!r}: {exc}") from exc
        finally:
            conn.close()
        if not changed:
            raise FeedbackError(f"no rating {rating_id} to comment on")

    def ratings(self, since: date | None = None) -> Iterator[Rating]:
        """Stored ratings, oldest first; ``since``: those rated on that day (UTC) or later."""
        if not self.path.exists():
            return
        conn = self._connect(create=False)
        try:
            rows = conn.execute(
                "SELECT id, rated_at, question, history, answer, state, index_version, rating, comment "
                "FROM ratings WHERE rated_at >= ? ORDER BY id",
                (since.isoformat() if since is not None else "",),
            ).fetchall()
        except sqlite3.Error as exc:
            raise FeedbackError(f"cannot read {str(self.path)!r}: {exc}") from exc
        finally:
            conn.close()
        for id_, at, question, history, answer, state, version, rating, comment in rows:
            yield Rating(id_, at, question, json.loads(history), json.loads(answer), state, version, rating, comment)

    def stats(self) -> list[dict[str, Any]]:
        """Counts by day (UTC) and answer state: ``[{"day", "state", "up", "down"}]``, oldest day first."""
        if not self.path.exists():
            return []
        conn = self._connect(create=False)
        try:  # counted by SQLite: no answer is read or decoded
            rows = conn.execute(
                "SELECT substr(rated_at, 1, 10), state, sum(rating > 0), sum(rating <= 0) FROM ratings "
                "GROUP BY 1, 2 ORDER BY 1, 2"
            ).fetchall()
        except sqlite3.Error as exc:
            raise FeedbackError(f"cannot read {str(self.path)!r}: {exc}") from exc
        finally:
            conn.close()
        return [{"day": day, "state": state, "up": up, "down": down} for day, state, up, down in rows]

    def export_cases(self, since: date | None = None) -> Iterator[dict[str, Any]]:
        """The ratings as ``qa eval`` cases (see the module's docstring)."""
        for r in self.ratings(since):
            yield case_of(r)


def case_of(r: Rating) -> dict[str, Any]:
    """One rating as a ``qa eval`` case: ``{"id", "question" | "turns", "gold", ...}``."""
    case: dict[str, Any] = {"id": f"feedback-{r.id}"}
    if r.history:
        case["turns"] = [*r.history, r.question]
    else:
        case["question"] = r.question
    sources = r.answer.get("sources") or []
    cited = sources[0] if sources else None
    abstained = r.state == "abstained"
    if r.rating > 0:
        # Rated right: the sentence it cited is the gold; an abstention rated right is unanswerable.
        case["gold"] = None if abstained or cited is None else [cited["text"]]
    else:
        case["gold"] = None
        case["review"] = (
            "rated wrong: write the gold phrases (or keep gold null if the sources don't answer) and delete this field"
        )
        case["answered"] = None if abstained else r.answer.get("text")
    case["rating"] = r.rating
    if r.comment:
        case["comment"] = r.comment
    if cited is not None:
        case["cited"] = {k: cited.get(k) for k in ("doc", "start", "end", "page", "heading")}
    case["index_version"] = r.index_version
    case["rated_at"] = r.rated_at
    return case


def _check_comment(comment: str | None) -> str | None:
    if comment is None:
        return None
    if not isinstance(comment, str):
        raise FeedbackError(f"a comment must be text, not {type(comment).__name__}")
    try:
        comment.encode("utf-8")
    except UnicodeEncodeError:
        raise FeedbackError("the comment is not valid text (an undecodable byte or a lone surrogate)") from None
    comment = comment.strip()
    if len(comment) > MAX_COMMENT_CHARS:
        raise FeedbackError(f"the comment is {len(comment):,} characters long; the limit is {MAX_COMMENT_CHARS:,}")
    return comment or None


def _same_or_inside(folder: Path, index: Path) -> bool:
    a, b = folder.resolve(), index.resolve()
    return a == b or b in a.parents
