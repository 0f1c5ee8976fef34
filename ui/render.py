"""Pure functions: an Answer -> what the web chat shows.

Everything that comes from a document or a person (source text, questions,
document names) is treated as text: the chat reply escapes every Markdown and
HTML character, and the source panel is HTML built with :func:`html.escape`.
Offsets are Python ``str`` indices (code points), the same as the engine's, so
highlights stay exact with non-breaking spaces, curly quotes and any script.

The reply leads with the answer (its phrase in bold, then the sentence with
its number), says how sure it is in words (the probability on hover and in a
collapsed details line), names each source by document and page or heading
(the answer's source "the answer", the others "related"), and keeps character
offsets in the details line.

>>> from qa import Answer, Source
>>> a = Answer("Q?", "Sold 5 cars. [1]", False, [Source("a.txt", 10, 22, "Sold 5 cars.", 0.9, 0, 22)], 0.9,
...            confidence_label="confident")
>>> print(chat_reply(a))  # doctest: +NORMALIZE_WHITESPACE
Sold 5 cars\\. \\[1\\]
<BLANKLINE>
Confidence: <span class="qa-confidence" title="probability 0.90 that the answer is right">confident</span>
<BLANKLINE>
**Sources**
<BLANKLINE>
\\[1\\] a\\.txt — the answer
<BLANKLINE>
<details class="qa-details"><summary>Details</summary>
<BLANKLINE>
Confidence 0\\.90 \\(the calibrated probability that the answer is right\\)\\.
\\[1\\] a\\.txt\\, characters 10–22
<BLANKLINE>
</details>
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from qa import Answer, Source

# CommonMark lets any ASCII punctuation be backslash-escaped; escaping all of
# it means no character of the text can start Markdown or HTML syntax.
_MD_SPECIAL = re.compile(r"([!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~])")
# A passage longer than this is shown as a window around the cited sentence: a
# file without blank lines is one passage (a 44 KB one made the page 20,000 px tall).
MAX_PASSAGE_CHARS = 1500
CONTEXT_CHARS = 500  # about three sentences each side of the cited one
_SENTENCE_START = re.compile(r"[.!?…][\"'”’»)\]]*\s+")


def escape_markdown(text: str) -> str:
    """Text that a Markdown renderer shows literally (``<script>`` stays ``<script>``).

    >>> escape_markdown("<b>*hi*</b>")
    '\\\\<b\\\\>\\\\*hi\\\\*\\\\<\\\\/b\\\\>'
    """
    escaped = _MD_SPECIAL.sub(r"\\\1", text)
    # Line breaks inside a quoted sentence would start new Markdown blocks.
    return " ".join(escaped.split())


# In a file people read as text, only what would start markup inside a line is escaped.
_MD_INLINE = re.compile(r"([\\`*_\[\]<>|~])")


def escape_markdown_inline(text: str) -> str:
    """Text on one line of a Markdown file, shown literally and still readable raw ("280,000" stays so).

    >>> escape_markdown_inline("<b>*280,000*</b>")
    '\\\\<b\\\\>\\\\*280,000\\\\*\\\\</b\\\\>'
    """
    return " ".join(_MD_INLINE.sub(r"\\\1", text).split())


@dataclass(frozen=True)
class PanelSource:
    """One source as the side panel shows it.

    ``highlight_start``/``highlight_end`` are offsets into ``passage`` (not the
    document), so ``passage[highlight_start:highlight_end]`` is the cited text.
    """

    rank: int
    label: str  # "[1] the answer" or "[2] related"
    doc: str
    start: int  # offsets of the cited sentence in the document
    end: int
    score: float
    passage: str
    highlight_start: int
    highlight_end: int
    answers: bool  # True for the source the answer rests on (the first, unless it abstained); others are related
    where: str = ""  # "page 3" for a PDF, the heading path for HTML, Word and Markdown
    image: str | None = None  # a data: URI of the PDF page with the sentence boxed
    phrase: tuple[int, int] | None = None  # the answer phrase's offsets in ``passage`` (the top source only)


@dataclass(frozen=True)
class Panel:
    """The whole source panel for one answer."""

    heading: str
    sources: list[PanelSource]
    abstained: bool
    confidence: float = 0.0
    confidence_label: str = ""


def source_reference(rank: int, source: Source) -> str:
    """``[1] doc.txt, characters 120–245`` or ``[1] report.pdf, page 3, characters ...`` (plain text)."""
    return f"[{rank}] {source.location}, characters {source.start}–{source.end}"


def confidence_title(answer: Answer) -> str:
    """What the confidence number means, for a hover: ``probability 0.72 that the answer is right``."""
    return f"probability {answer.confidence:.2f} that the answer is right"


def chat_reply(answer: Answer) -> str:
    """The assistant's chat message, Markdown-safe: the answer first, its confidence in words, then its sources.

    Text from documents and people is escaped; the only markup is this
    function's own (bold, a ``<span title>`` and a ``<details>`` block).
    """
    if answer.phrase is not None and answer.sources and not answer.abstained:
        # the answer itself first, in bold; then the sentence that says it
        lines = [f"**{escape_markdown(answer.phrase.text)}**", "", escape_markdown(answer.sources[0].text + " [1]")]
    else:
        lines = [escape_markdown(answer.text)]
    if answer.confidence_label:
        lines += ["", f'Confidence: <span class="qa-confidence" title="{html.escape(confidence_title(answer))}">'
                      f"{html.escape(answer.confidence_label)}</span>"]  # fmt: skip
    if answer.sources:
        title = "Related passages" if answer.abstained else "Sources"
        lines += ["", f"**{title}**", ""]
        named = [f"[{i}] {s.location} — {'the answer' if i == 1 and not answer.abstained else 'related'}"
                 for i, s in enumerate(answer.sources, 1)]  # fmt: skip
        lines += ["  \n".join(escape_markdown(n) for n in named)]
    details = [f"[{i}] {s.location}, characters {s.start}–{s.end}" for i, s in enumerate(answer.sources, 1)]
    if answer.confidence_label:
        details.insert(0, f"Confidence {answer.confidence:.2f} (the calibrated probability that the answer is right).")
    if details:
        lines += ["", '<details class="qa-details"><summary>Details</summary>', ""]
        lines += ["  \n".join(escape_markdown(d) for d in details), "", "</details>"]
    return "\n".join(lines)


def chat_question(question: str) -> str:
    """The person's question as a chat message, shown literally."""
    return escape_markdown(question)


def panel(
    answer: Answer,
    passage_text: Callable[[Source], str],
    page_image: Callable[[Source], str | None] | None = None,
) -> Panel:
    """The side panel for an answer.

    ``passage_text(source)`` returns the text of the source's passage, i.e.
    ``document_text[source.passage_start:source.passage_end]``;
    ``page_image(source)`` a data: URI of its PDF page with the sentence boxed, or None.
    """
    items = []
    for rank, s in enumerate(answer.sources, 1):
        passage = passage_text(s)
        start = s.start - s.passage_start
        end = s.end - s.passage_start
        if not (0 <= start <= end <= len(passage)) or passage[start:end] != s.text:
            # The passage does not hold the source (index changed underneath): show the sentence alone.
            passage, start, end = s.text, 0, len(s.text)
        passage, start, end = passage_window(passage, start, end)
        answers = rank == 1 and not answer.abstained
        label = f"[{rank}] the answer" if answers else f"[{rank}] related"
        if s.pages:
            where = f"page {s.pages[0]}" if len(s.pages) == 1 else f"pages {s.pages[0]}–{s.pages[-1]}"
        else:
            where = s.heading or ""
        image = page_image(s) if page_image is not None and s.boxes and rank <= MAX_PAGE_IMAGES else None
        phrase = None
        ph = answer.phrase
        if rank == 1 and ph is not None and not answer.abstained and s.start <= ph.start <= ph.end <= s.end:
            phrase = (start + ph.start - s.start, start + ph.end - s.start)
        items.append(
            PanelSource(
                rank, label, s.doc, s.start, s.end, s.score, passage, start, end, answers, where, image, phrase,
            )
        )  # fmt: skip
    if not items:
        heading = "No source matches this question."
    elif answer.abstained:
        heading = "The sources don't say: none of them answers this question. The closest passages, related:"
    else:
        heading = (
            "Where the answer comes from ([1]), and related passages:"
            if len(items) > 1
            else ("Where the answer comes from:")
        )
    return Panel(heading, items, answer.abstained, answer.confidence, answer.confidence_label)


def passage_window(passage: str, start: int, end: int) -> tuple[str, int, int]:
    """A long passage cut to the cited span and about CONTEXT_CHARS each side, marked with "…".

    Cuts fall at a sentence start (else a space) near CONTEXT_CHARS from the
    span. Returns ``(text, start, end)`` with the span's offsets in ``text``.

    >>> passage_window("short passage", 0, 5)
    ('short passage', 0, 5)
    """
    if len(passage) <= MAX_PASSAGE_CHARS:
        return passage, start, end
    lo = max(0, start - CONTEXT_CHARS)
    if lo > 0:
        starts = [m.end() for m in _SENTENCE_START.finditer(passage, lo, start)]
        space = passage.find(" ", lo, start)
        lo = starts[0] if starts else space + 1 if space >= 0 else lo
    hi = min(len(passage), end + CONTEXT_CHARS)
    if hi < len(passage):
        ends = [m.start() + len(m.group().rstrip()) for m in _SENTENCE_START.finditer(passage, end, hi)]
        space = passage.rfind(" ", end, hi)
        hi = ends[-1] if ends else space if space >= 0 else hi
    head = "… " if lo > 0 else ""
    tail = " …" if hi < len(passage) else ""
    return head + passage[lo:hi] + tail, start - lo + len(head), end - lo + len(head)


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
    cited sentence, labelled with its rank: the sentence the answer rests on
    is ``class="answer"`` (the answer colour), every other one ``class="related"``
    (and all of them when the assistant abstained). Character offsets sit in
    a collapsed ``<details>`` line of each card.
    """
    e = html.escape
    cls = "abstained" if p.abstained else "answered"
    out = [f'<div class="qa-panel {cls}">', f'<p class="qa-heading">{e(p.heading)}</p>']
    if p.confidence_label:
        hover = f"probability {p.confidence:.2f} that the answer is right"
        out.append(
            f'<p class="qa-confidence-line">Confidence: <span class="qa-confidence" title="{e(hover)}" '
            f'data-label="{e(p.confidence_label)}">{e(p.confidence_label)}</span></p>'
        )
    groups: dict[tuple[str, str, int], list[PanelSource]] = {}
    for s in p.sources:
        groups.setdefault((s.doc, s.passage, s.start - s.highlight_start), []).append(s)
    for (doc, passage, _), members in groups.items():
        ranks = ", ".join(m.label for m in members)
        where = "; ".join(dict.fromkeys(m.where for m in members if m.where))
        offsets = "; ".join(f"[{m.rank}] characters {m.start}–{m.end}" for m in members)
        kind = "answer" if any(m.answers for m in members) else "related"
        out.append(f'<div class="qa-source {kind}" data-rank="{members[0].rank}">')
        out.append(
            f'<div class="qa-source-head"><span class="qa-rank">{e(ranks)}</span> '
            f'<span class="qa-doc">{e(doc)}</span> <span class="qa-where">{e(where)}</span>'
            f'<details class="qa-offsets"><summary>where exactly</summary>{e(offsets)}</details></div>'
        )
        for m in members:
            if m.image and m.image.startswith("data:image/png;base64,"):
                alt = f"{doc}, {m.where}, with source [{m.rank}] boxed"
                out.append(
                    f'<img class="qa-page" data-rank="{m.rank}" src="{e(m.image)}" alt="{e(alt)}" title="{e(alt)}">'
                )
        spans = [(m.highlight_start, m.highlight_end, str(m.rank)) for m in members]
        by_rank = {str(m.rank): m for m in members}
        body = []
        at = 0
        for piece, tag in segments(passage, spans):
            piece_at, at = at, at + len(piece)
            if tag is None:
                body.append(e(piece))
                continue
            m = by_rank[tag]
            kind = "answer" if m.answers else "related"
            title = f"source [{m.rank}], " + ("the answer" if m.answers else "related") + f", score {m.score:.3f}"
            inner = e(piece)
            if m.phrase is not None:
                runs = segments(piece, [(m.phrase[0] - piece_at, m.phrase[1] - piece_at, "phrase")])
                inner = "".join(
                    f'<strong class="qa-phrase" title="the answer">{e(r)}</strong>' if t else e(r) for r, t in runs
                )
            body.append(
                f'<mark class="{kind}" data-rank="{m.rank}" title="{e(title)}">{inner}</mark>'
                f'<sup class="qa-mark-rank">[{m.rank}]</sup>'
            )
        out.append(f'<div class="qa-passage">{"".join(body)}</div>')
        out.append("</div>")
    out.append("</div>")
    return "\n".join(out)


MAX_PAGE_IMAGES = 3  # page images per answer: each is ~100 kB in the page
PAGE_WIDTH_PX = 560  # rendered page width; a US Letter page is then ~725 px tall
CROP_HEIGHT_PT = 260  # height of the page band shown around a cited sentence


def page_png(
    pdf: bytes, page: int, boxes: Sequence[Sequence[float]], *, width: int = PAGE_WIDTH_PX, crop: bool = True
) -> bytes:
    """PNG of page ``page`` (from 1) of a PDF with each box ``(page, left, bottom, right, top)`` drawn on it.

    Boxes are in PDF points with the origin at the page's bottom-left (as stored
    in the index); boxes on other pages are ignored. With ``crop``, only a band
    of the page around the boxes (``CROP_HEIGHT_PT`` tall, or taller to hold them).
    """
    import pypdfium2 as pdfium
    from PIL import ImageDraw

    doc = pdfium.PdfDocument(pdf)
    try:
        p = doc[page - 1]
        try:
            w, h = p.get_size()
            scale = width / w
            image = p.render(scale=scale).to_pil().convert("RGB")
        finally:
            p.close()
    finally:
        doc.close()
    draw = ImageDraw.Draw(image, "RGBA")
    ys: list[float] = []
    for b in boxes:
        if int(b[0]) != page:
            continue
        left, bottom, right, top = (float(v) for v in b[1:5])
        xy = (left * scale - 2, (h - top) * scale - 2, right * scale + 2, (h - bottom) * scale + 2)
        draw.rectangle(xy, fill=(255, 224, 102, 90), outline=(220, 38, 38, 255), width=2)
        ys += [xy[1], xy[3]]
    if crop and ys:
        # A band of the page around the sentence: readable beside the passage, and a
        # third of the bytes; the full page is one click away in the PDF itself.
        band = CROP_HEIGHT_PT * scale
        middle = (min(ys) + max(ys)) / 2
        half = max(band, max(ys) - min(ys) + 80 * scale) / 2
        upper = max(0.0, min(middle - half, image.height - 2 * half))
        image = image.crop((0, int(upper), image.width, int(min(image.height, upper + 2 * half))))
    out = io.BytesIO()
    # 32 colours keep text and the box sharp and make the PNG a third of its RGB size.
    image.quantize(colors=32).save(out, format="PNG", optimize=True)
    return out.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def sources_json(answer: Answer) -> list[dict[str, object]]:
    """The sources as plain data for the API (document, offsets, text, score)."""
    return [s.to_dict() for s in answer.sources]


def transcript(turns: Sequence[tuple[str, Answer]]) -> str:
    """A chat as Markdown to download: each question, its answer, confidence and citations.

    Citations name the document, page or heading, offsets and the cited
    sentence, so the file stands on its own.
    """
    out = ["# Chat", ""]
    for question, answer in turns:
        out += [f"## {escape_markdown_inline(question)}", ""]
        lead = answer.phrase.text if answer.phrase is not None and not answer.abstained else None
        out += [f"**{escape_markdown_inline(lead)}**" if lead else escape_markdown_inline(answer.text), ""]
        if answer.confidence_label:
            out += [f"Confidence: {escape_markdown_inline(answer.confidence_label)} ({answer.confidence:.2f})", ""]
        for i, s in enumerate(answer.sources, 1):
            role = "the answer" if i == 1 and not answer.abstained else "related"
            out.append(
                f"{i}. {escape_markdown_inline(s.location)}, characters {s.start}–{s.end} ({role}): "
                f"“{escape_markdown_inline(s.text)}”"
            )
        out.append("")
    return "\n".join(out)
