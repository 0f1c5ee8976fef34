"""ui.render: what the chat and the source panel show, as pure functions of an Answer."""

from __future__ import annotations

import html
from html.parser import HTMLParser

from hypothesis import given
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from qa import Answer, Source
from ui import render

from .conftest import HOSTILE_ID, HOSTILE_IMG, HOSTILE_SCRIPT, HOSTILE_TEXT, UNICODE_SENTENCE, UNICODE_TEXT


def source_in(doc: str, text: str, sentence: str, score: float = 0.8) -> Source:
    """The Source for ``sentence`` of ``text``, with its paragraph as passage."""
    start = text.index(sentence)
    passage_start = text.rfind("\n\n", 0, start) + 2 if "\n\n" in text[:start] else 0
    passage_end = text.find("\n", start + len(sentence))
    passage_end = len(text) if passage_end < 0 else passage_end
    return Source(doc, start, start + len(sentence), sentence, score, passage_start, passage_end)


def passages_of(documents: dict[str, str]):
    return lambda s: documents[s.doc][s.passage_start : s.passage_end]


class Marks(HTMLParser):
    """Collects the text of each <mark> (by class) and all visible text of an HTML fragment."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.marks: list[tuple[str, str]] = []  # (class, text) in page order
        self.ranked: dict[int, tuple[str, str]] = {}  # source rank -> (class, text)
        self.text: list[str] = []
        self.tags: list[str] = []
        self._mark: tuple[str, list[str]] | None = None
        self._rank = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "mark":
            self._mark = (dict(attrs).get("class") or "", [])
            self._rank = int(dict(attrs).get("data-rank") or 0)

    def handle_endtag(self, tag: str) -> None:
        if tag == "mark" and self._mark:
            self.marks.append((self._mark[0], "".join(self._mark[1])))
            self.ranked[self._rank] = self.marks[-1]
            self._mark = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._mark:
            self._mark[1].append(data)


def parse(fragment: str) -> Marks:
    parser = Marks()
    parser.feed(fragment)
    return parser


def rendered_text(markdown: str) -> tuple[str, list[str]]:
    """(visible text, HTML tags) of Markdown as a CommonMark renderer shows it."""
    parsed = parse(MarkdownIt("commonmark").render(markdown))
    return "".join(parsed.text), parsed.tags


UNICODE_DOCS = {"tōkyō-notes.txt": UNICODE_TEXT, HOSTILE_ID: HOSTILE_TEXT}


def test_highlight_is_exact_with_nbsp_curly_quotes_and_non_latin_text() -> None:
    source = source_in("tōkyō-notes.txt", UNICODE_TEXT, UNICODE_SENTENCE)
    answer = Answer("Which car did the depot repair?", UNICODE_SENTENCE + " [1]", False, [source], 0.8)
    panel = render.panel(answer, passages_of(UNICODE_DOCS))
    item = panel.sources[0]
    assert item.passage[item.highlight_start : item.highlight_end] == UNICODE_SENTENCE
    assert (item.doc, item.start, item.end, item.label, item.answers) == (
        "tōkyō-notes.txt", source.start, source.end, "[1] the answer", True,
    )  # fmt: skip
    marks = parse(render.panel_html(panel)).marks
    assert marks == [("answer", UNICODE_SENTENCE)]  # \u00a0, “ ” and ¥ survive untouched


def test_several_sources_are_ranked_and_highlights_never_overlap(article_text: str) -> None:
    sentences = [
        "The vehicle will be sold as a different model under the Nissan brand.",
        "Mitsubishi Motors sold about 280,000 vehicles in Southeast Asia last fiscal year, "
        "more than Nissan or Renault.",
        "Nissan will gain access starting in August.",
    ]
    sources = [source_in("a.txt", article_text, s, 0.9 - i / 10) for i, s in enumerate(sentences)]
    answer = Answer("q", sentences[0] + " [1]", False, sources, 0.7)
    panel = render.panel(answer, passages_of({"a.txt": article_text}))
    assert [s.label for s in panel.sources] == ["[1] the answer", "[2] related", "[3] related"]
    page = render.panel_html(panel)
    # sources [2] and [3] share a passage: one card, two separate marks
    assert page.count('class="qa-source ') == 2
    assert [parse(page).ranked[rank][1] for rank in (1, 2, 3)] == sentences
    # only the source the answer rests on is in the answer colour; the others are related
    assert [parse(page).ranked[rank][0] for rank in (1, 2, 3)] == ["answer", "related", "related"]
    assert "[1] the answer" in page and "[2] related, [3] related" in page


def test_abstention_says_the_sources_dont_say_and_shows_closest_passages_as_related(article_text: str) -> None:
    sentence = "He apparently has decided that Mitsubishi Motors is now strong enough to contribute."
    answer = Answer(
        "Who painted the Mona Lisa?",
        f"The sources don't answer this question. The closest match (low confidence) is from a.txt: “{sentence}”",
        True,
        [source_in("a.txt", article_text, sentence, 0.05)],
        0.01,
        confidence_label="the sources don't say",
    )
    panel = render.panel(answer, passages_of({"a.txt": article_text}))
    assert panel.abstained and "The sources don't say" in panel.heading
    assert panel.sources[0].label == "[1] related" and not panel.sources[0].answers
    page = render.panel_html(panel)
    assert parse(page).marks == [("related", sentence)]
    assert 'class="answer"' not in page and "the sources don&#x27;t say" in page
    reply, _ = rendered_text(render.chat_reply(answer))
    assert "Confidence: the sources don't say" in reply
    assert "Related passages" in reply and "[1] a.txt — related" in reply and "Sources" not in reply


def test_chat_reply_numbers_each_source_with_document_and_offsets(article_text: str) -> None:
    sentence = "Nissan will gain access starting in August."
    answer = Answer("q", sentence + " [1]", False, [source_in("notes_*v2*.txt", article_text, sentence)], 0.7)
    text, tags = rendered_text(render.chat_reply(answer))
    s = answer.sources[0]
    assert f"[1] notes_*v2*.txt, characters {s.start}–{s.end}" in text
    assert sentence + " [1]" in text
    assert "em" not in tags  # the * and _ of the file name stay literal


def test_hostile_source_text_shows_literally_in_chat_and_panel() -> None:
    sentences = [line for line in HOSTILE_TEXT.replace(". ", ".\n").splitlines() if "<" in line or "**" in line]
    sources = [source_in(HOSTILE_ID, HOSTILE_TEXT, s) for s in sentences]
    answer = Answer(HOSTILE_IMG, " ".join(sentences) + " [1]", False, sources, 0.9)
    text, tags = rendered_text(render.chat_reply(answer))
    assert HOSTILE_SCRIPT in text and HOSTILE_IMG in text and "**bold claims**" in text
    assert not {"script", "img", "a", "code"} & set(tags)
    assert tags.count("strong") == 1  # the "Sources" heading only
    question_text, question_tags = rendered_text(render.chat_question(answer.question))
    assert question_text.strip() == HOSTILE_IMG and "img" not in question_tags
    page = render.panel_html(render.panel(answer, passages_of(UNICODE_DOCS)))
    assert "<script" not in page and "<img" not in page
    parsed = parse(page)
    assert {"script", "img", "a"}.isdisjoint(parsed.tags)
    assert [t for _, t in parsed.marks] == sentences


def test_passage_that_no_longer_holds_the_source_falls_back_to_the_sentence() -> None:
    source = Source("gone.txt", 100, 112, "Sold 5 cars.", 0.9, 90, 130)
    panel = render.panel(Answer("q", "Sold 5 cars. [1]", False, [source]), lambda s: "something else entirely")
    item = panel.sources[0]
    assert item.passage[item.highlight_start : item.highlight_end] == "Sold 5 cars."


def test_no_sources() -> None:
    answer = Answer("q", "The sources don't answer this question: the index holds no sentences.", True, [])
    assert render.panel(answer, lambda s: "").sources == []
    assert "Sources" not in render.chat_reply(answer)


@given(st.text(st.characters(exclude_characters="\x00"), max_size=200))  # CommonMark shows NUL as U+FFFD
def test_any_text_renders_literally_as_markdown(text: str) -> None:
    shown, tags = rendered_text(render.escape_markdown(text))
    assert shown.strip() == " ".join(text.split())
    assert set(tags) <= {"p"}


@given(
    st.text(min_size=1, max_size=60),
    st.lists(st.tuples(st.integers(0, 70), st.integers(0, 70)), max_size=5),
)
def test_segments_cover_the_text_once_without_overlap(text: str, raw: list[tuple[int, int]]) -> None:
    spans = [(min(a, b), max(a, b), str(i)) for i, (a, b) in enumerate(raw)]
    runs = render.segments(text, spans)
    assert "".join(piece for piece, _ in runs) == text
    position = 0
    for piece, tag in runs:
        if tag is not None:
            start, end, _ = spans[int(tag)]
            assert start <= position and position + len(piece) <= end  # inside its own span only
        position += len(piece)


def test_panel_html_escapes_document_names() -> None:
    source = Source('<b onmouseover="x">.txt', 0, 3, "Hi.", 0.5, 0, 3)
    page = render.panel_html(render.panel(Answer("q", "Hi. [1]", False, [source]), lambda s: "Hi."))
    assert html.escape('<b onmouseover="x">.txt') in page and "<b " not in page


def test_long_passage_is_shown_as_a_window_around_the_cited_sentence() -> None:
    # A file without blank lines is one passage; the panel shows a few sentences around the answer.
    filler = [f"Line {i} of the ship's log records calm seas and a steady wind." for i in range(700)]
    cited = "The lookout sighted the lighthouse at dawn on the ninth day."
    text = "\n".join([*filler[:400], cited, *filler[400:]])  # ~44 KB, no blank line
    source = Source("log.txt", text.index(cited), text.index(cited) + len(cited), cited, 0.9, 0, len(text))
    answer = Answer("When was the lighthouse sighted?", cited + " [1]", False, [source], 0.9)
    item = render.panel(answer, lambda s: text).sources[0]
    assert item.passage[item.highlight_start : item.highlight_end] == cited
    assert len(item.passage) <= 2 * render.CONTEXT_CHARS + len(cited) + 4
    assert item.passage.startswith("… Line ") and item.passage.endswith("wind. …")
    assert item.passage.count("ship's log") >= 4  # a few whole sentences each side
    parsed = parse(render.panel_html(render.panel(answer, lambda s: text)))
    assert parsed.ranked[1] == ("answer", cited)


def test_short_passage_is_shown_whole() -> None:
    assert render.passage_window("One. Two. Three.", 5, 9) == ("One. Two. Three.", 5, 9)


def test_reply_leads_with_the_answer_phrase_in_bold_and_the_panel_marks_it(article_text: str) -> None:
    from qa import Phrase

    sentence = "Nissan will gain access starting in August."
    s = source_in("article.txt", article_text, sentence)
    at = s.start + sentence.index("August")
    phrase = Phrase("August", "article.txt", at, at + len("August"), 0.9)
    answer = Answer("When?", "August — “" + sentence + "” [1]", False, [s], 0.8, "", phrase)
    reply = render.chat_reply(answer)
    assert reply.startswith("**August**")
    html_out = MarkdownIt("commonmark").render(reply)
    assert "<strong>August</strong>" in html_out and sentence in "".join(parse(html_out).text)
    page = render.panel_html(render.panel(answer, passages_of({"article.txt": article_text})))
    assert parse(page).marks == [("answer", sentence)]  # the phrase stays inside the cited sentence's mark
    assert '<strong class="qa-phrase" title="the answer">August</strong>' in page
    # an abstained answer has no phrase to lead with or to mark
    closest = Answer("When?", "The sources don't answer this question.", True, [s], 0.01)
    assert "qa-phrase" not in render.panel_html(render.panel(closest, passages_of({"article.txt": article_text})))


def test_reply_names_sources_by_document_and_page_with_offsets_in_a_collapsed_details_line(article_text: str) -> None:
    sentence = "Nissan will gain access starting in August."
    s = source_in("report.pdf", article_text, sentence)
    from dataclasses import replace

    s = replace(s, page=3, pages=(3,))
    related = replace(source_in("guide.docx", article_text, "Nissan will gain access starting in August."),
                      heading="Setup > Install")  # fmt: skip
    answer = Answer("When?", sentence + " [1]", False, [s, related], 0.62, confidence_label="likely")
    markdown = render.chat_reply(answer)
    html_out = MarkdownIt("commonmark").render(markdown)
    text, tags = rendered_text(markdown)
    visible = text.split("Details")[0]  # what shows before the details line is opened
    assert "[1] report.pdf, page 3 — the answer" in visible and "[2] guide.docx, Setup > Install — related" in visible
    assert "characters" not in visible
    assert "details" in tags and f"[1] report.pdf, page 3, characters {s.start}–{s.end}" in text
    # the confidence in words, its probability on hover and in the details
    assert 'title="probability 0.62 that the answer is right">likely</span>' in html_out
    assert "Confidence 0.62" in text
