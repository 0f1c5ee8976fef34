"""Pure functions: an Answer -> what the web chat shows.

Everything that comes from a document or a person (source text, questions,
document names) is treated as text: the chat reply escapes every Markdown and
HTML character, and the source panel is HTML built with :func:`html.escape`.
Offsets are Python ``str`` indices (code points), the same as the engine's, so
highlights stay exact with non-breaking spaces, curly quotes and any script.

>>> from qa import Answer, Source
>>> a = Answer("Q?", "Sold 5 cars. [1]", False, [Source("a.txt", 10, 22, "Sold 5 cars.", 0.9, 0, 22)])
>>> print(chat_reply(a))
Sold 5 cars\\. \\[1\\]
<BLANKLINE>
**Sources**
<BLANKLINE>
\\[1\\] a\\.txt\\, characters 10–22
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from qa import Answer, Source

# CommonMark lets any ASCII punctuation be backslash-escaped; escaping all of
# it means no character of the text can start Markdown or HTML syntax.
_MD_SPECIAL = re.compile(r"([!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~])")


def escape_markdown(text: str) -> str:
    """Text that a Markdown renderer shows literally (``<script>`` stays ``<script>``).

    >>> escape_markdown("<b>*hi*</b>")
    '\\\\<b\\\\>\\\\*hi\\\\*\\\\<\\\\/b\\\\>'
    """
    escaped = _MD_SPECIAL.sub(r"\\\1", text)
    # Line breaks inside a quoted sentence would start new Markdown blocks.
    return " ".join(escaped.split())


@dataclass(frozen=True)
class PanelSource:
    """One source as the side panel shows it.

    ``highlight_start``/``highlight_end`` are offsets into ``passage`` (not the
    document), so ``passage[highlight_start:highlight_end]`` is the cited text.
    """

    rank: int
    label: str  # "[1]" or "[1] closest match, low confidence"
    doc: str
    start: int  # offsets of the cited sentence in the document
    end: int
    score: float
    passage: str
    highlight_start: int
    highlight_end: int
    answers: bool  # False when the assistant abstained: a closest match, not an answer


@dataclass(frozen=True)
class Panel:
    """The whole source panel for one answer."""

    heading: str
    sources: list[PanelSource]
    abstained: bool


def source_reference(rank: int, source: Source) -> str:
    """``[1] doc.txt, characters 120–245`` or ``[1] report.pdf, page 3, characters ...`` (plain text)."""
    return f"[{rank}] {source.location}, characters {source.start}–{source.end}"


def chat_reply(answer: Answer) -> str:
    """The assistant's chat message: the answer and its numbered source references, Markdown-safe."""
    lines = [escape_markdown(answer.text)]
    if answer.sources:
        title = "Closest matches (low confidence)" if answer.abstained else "Sources"
        lines += ["", f"**{title}**", ""]
        lines += ["  \n".join(escape_markdown(source_reference(i, s)) for i, s in enumerate(answer.sources, 1))]
    return "\n".join(lines)


def chat_question(question: str) -> str:
    """The person's question as a chat message, shown literally."""
    return escape_markdown(question)


def panel(answer: Answer, passage_text: Callable[[Source], str]) -> Panel:
    """The side panel for an answer.

    ``passage_text(source)`` returns the text of the source's passage, i.e.
    ``document_text[source.passage_start:source.passage_end]``.
    """
    items = []
    for rank, s in enumerate(answer.sources, 1):
        passage = passage_text(s)
        start = s.start - s.passage_start
        end = s.end - s.passage_start
        if not (0 <= start <= end <= len(passage)) or passage[start:end] != s.text:
            # The passage does not hold the source (index changed underneath): show the sentence alone.
            passage, start, end = s.text, 0, len(s.text)
        label = f"[{rank}] closest match, low confidence" if answer.abstained else f"[{rank}]"
        items.append(
            PanelSource(rank, label, s.doc, s.start, s.end, s.score, passage, start, end, not answer.abstained)
        )
    if not items:
        heading = "No source matches this question."
    elif answer.abstained:
        heading = "The sources don't answer this question. Closest matches (low confidence):"
    else:
        heading = "Where the answer comes from:"
    return Panel(heading, items, answer.abstained)


def segments(text: str, spans: Sequence[tuple[int, int, str]]) -> list[tuple[str, str | None]]:
    """Split ``text`` into ``(piece, tag)`` runs; tagged runs are the spans, never overlapping.

    A span that overlaps an earlier one (in the order given) is clipped to the
    part that is still free, so highlights never nest or overlap.

    >>> segments("abcdef", [(1, 3, "x"), (2, 5, "y")])
    [('a', None), ('bc', 'x'), ('de', 'y'), ('f', None)]
    """
    n = len(text)
    clipped = [(max(start, 0), min(end, n), tag) for start, end, tag in spans if min(end, n) > max(start, 0)]
    cuts = sorted({0, n, *(b for start, end, _ in clipped for b in (start, end))})
    runs: list[tuple[str, str | None]] = []
    for a, b in pairwise(cuts):
        # the first span given that covers this stretch owns it
        tag = next((t for start, end, t in clipped if start <= a and b <= end), None)
        if runs and runs[-1][1] == tag:
            runs[-1] = (runs[-1][0] + text[a:b], tag)
        else:
            runs.append((text[a:b], tag))
    return runs


def panel_html(p: Panel) -> str:
    """The panel as HTML; every piece of text goes through :func:`html.escape`.

    Sources that share a passage are shown in one card with one ``<mark>`` per
    cited sentence (``class="answer"``), labelled with its rank; when the
    assistant abstained the closest sentences get ``class="closest"`` instead.
    """
    e = html.escape
    cls = "abstained" if p.abstained else "answered"
    out = [f'<div class="qa-panel {cls}">', f'<p class="qa-heading">{e(p.heading)}</p>']
    groups: dict[tuple[str, str, int], list[PanelSource]] = {}
    for s in p.sources:
        groups.setdefault((s.doc, s.passage, s.start - s.highlight_start), []).append(s)
    for (doc, passage, _), members in groups.items():
        ranks = ", ".join(m.label for m in members)
        where = "; ".join(f"characters {m.start}–{m.end}" for m in members)
        out.append(f'<div class="qa-source" data-rank="{members[0].rank}">')
        out.append(
            f'<div class="qa-source-head"><span class="qa-rank">{e(ranks)}</span> '
            f'<span class="qa-doc">{e(doc)}</span> <span class="qa-where">{e(where)}</span></div>'
        )
        spans = [(m.highlight_start, m.highlight_end, str(m.rank)) for m in members]
        by_rank = {str(m.rank): m for m in members}
        body = []
        for piece, tag in segments(passage, spans):
            if tag is None:
                body.append(e(piece))
                continue
            m = by_rank[tag]
            kind = "answer" if m.answers else "closest"
            title = f"source [{m.rank}], score {m.score:.3f}" + ("" if m.answers else ", low confidence")
            body.append(
                f'<mark class="{kind}" data-rank="{m.rank}" title="{e(title)}">{e(piece)}</mark>'
                f'<sup class="qa-mark-rank">[{m.rank}]</sup>'
            )
        out.append(f'<div class="qa-passage">{"".join(body)}</div>')
        out.append("</div>")
    out.append("</div>")
    return "\n".join(out)


def sources_json(answer: Answer) -> list[dict[str, object]]:
    """The sources as plain data for the API (document, offsets, text, score)."""
    return [s.to_dict() for s in answer.sources]
