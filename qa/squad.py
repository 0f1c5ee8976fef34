"""SQuAD-format data as a corpus: one ``.txt`` per article, answer spans as document offsets.

Each article becomes ``<title>.txt``: the title (underscores as spaces), a
blank line, then its paragraphs separated by blank lines, so a paragraph is a
passage and every gold answer span maps to exact offsets in the file's text.
The data is read from where it lies (``../shared/...``) at run time; nothing
derived from it is stored in the repository.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import itertools
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from qa.types import QAError, Sentence


class SquadError(QAError):
    """The SQuAD file is missing or not in SQuAD's format."""


@dataclass(frozen=True)
class SquadQuestion:
    """One question with its gold answer spans as ``[start, end)`` offsets into its article's text."""

    id: str
    article: str  # document id (file name) of the article
    question: str
    spans: tuple[tuple[int, int], ...]  # every place a gold answer occurs (empty: SQuAD v2.0 "impossible")
    answers: tuple[str, ...]
    paragraph: tuple[int, int] = (0, 0)  # [start, end) of the question's paragraph in the article's text

    @property
    def answerable(self) -> bool:
        return bool(self.spans)


@dataclass(frozen=True)
class SquadArticle:
    doc: str  # file name, the index's document id
    title: str
    text: str  # the file's whole text
    paragraphs: tuple[tuple[int, int], ...]  # [start, end) of each paragraph in ``text``


@dataclass(frozen=True)
class SquadData:
    path: Path
    sha256: str
    articles: tuple[SquadArticle, ...]
    questions: tuple[SquadQuestion, ...]


_UNSAFE = re.compile(r"[^\w.-]+")


def load_squad(path: str | os.PathLike[str]) -> SquadData:
    """Read a SQuAD v1.1 or v2.0 JSON file (``.json`` or ``.json.gz``) into articles and offset-mapped questions.

    Questions without ids get ``<doc>#<n>``. Where an answer lists ``answer_start_candidates``
    (every place its text occurs), each place is a gold span. A v2.0 question marked
    ``is_impossible`` is kept with no spans: the sources must not answer it.

    >>> data = load_squad("../shared/data/squad-tune/squad-v1.1-dev-tune.json.gz")  # doctest: +SKIP
    >>> a = data.articles[0]; q = data.questions[0]
    >>> a.text[q.spans[0][0]:q.spans[0][1]] == q.answers[0]  # doctest: +SKIP
    True
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SquadError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        body = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        data = json.loads(body.decode("utf-8"))
        entries = data["data"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SquadError(f"{path} is not a SQuAD JSON file (data[].paragraphs[].qas[]): {exc}") from exc
    articles: list[SquadArticle] = []
    questions: list[SquadQuestion] = []
    seen: set[str] = set()
    try:
        for entry in entries:
            title = str(entry["title"]).replace("_", " ").strip()
            doc = _UNSAFE.sub("_", str(entry["title"])).strip("_") or "article"
            while f"{doc}.txt" in seen:
                doc += "_"
            doc = f"{doc}.txt"
            seen.add(doc)
            parts = [title, ""]
            offset = len(title) + 2
            spans: list[tuple[int, int]] = []
            for p in entry["paragraphs"]:
                context = str(p["context"])
                spans.append((offset, offset + len(context)))
                for qa in p["qas"]:
                    gold: list[tuple[int, int]] = []
                    texts = []
                    for a in qa["answers"]:
                        for at in a.get("answer_start_candidates") or [a["answer_start"]]:
                            span = (offset + int(at), offset + int(at) + len(a["text"]))
                            if span not in gold:
                                gold.append(span)
                        texts.append(str(a["text"]))
                    if gold or qa.get("is_impossible"):
                        qid = str(qa.get("id") or f"{doc}#{len(questions)}")
                        paragraph = (offset, offset + len(context))
                        questions.append(
                            SquadQuestion(qid, doc, str(qa["question"]).strip(), tuple(gold), tuple(texts), paragraph)
                        )
                offset += len(context) + 2
                parts.append(context)
                parts.append("")
            text = "\n".join(parts)
            articles.append(SquadArticle(doc, title, text, tuple(spans)))
    except (KeyError, TypeError, ValueError) as exc:
        raise SquadError(f"{path} is not a SQuAD JSON file: {exc!r}") from exc
    return SquadData(path, hashlib.sha256(raw).hexdigest(), tuple(articles), tuple(questions))


def write_corpus(data: SquadData, folder: str | os.PathLike[str], *, skip: frozenset[str] = frozenset()) -> Path:
    """Write each article (except ``skip``) as a file; unchanged files are left alone so builds stay no-ops."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {a.doc for a in data.articles if a.doc not in skip}
    for a in data.articles:
        if a.doc not in wanted:
            continue
        target = folder / a.doc
        body = a.text.encode("utf-8")
        if not target.exists() or target.read_bytes() != body:
            target.write_bytes(body)
    for extra in folder.glob("*.txt"):
        if extra.name not in wanted:
            extra.unlink()  # only ever .txt files this function wrote into its own work folder
    return folder


def folds_of(data: SquadData, folds: int) -> dict[str, int]:
    """Article -> fold number, round-robin in file order (reproducible, no randomness)."""
    return {a.doc: i % folds for i, a in enumerate(data.articles)}


def with_articles_of(data: SquadData, corpus: SquadData) -> SquadData:
    """``data``'s questions asked of ``corpus``'s articles (matched by title, each paragraph found by its text).

    SQuAD v2.0 dev holds some of v1.1 dev's articles with the same paragraphs: its questions are
    then measured against the whole v1.1 corpus. A question whose paragraph is not in ``corpus``
    is left out.
    """
    by_doc = {a.doc: a for a in corpus.articles}
    own = {a.doc: a for a in data.articles}
    questions = []
    for q in data.questions:
        target = by_doc.get(q.article)
        if target is None:
            continue
        paragraph = own[q.article].text[q.paragraph[0] : q.paragraph[1]]
        at = target.text.find(paragraph)
        if at < 0 or not paragraph:
            continue
        shift = at - q.paragraph[0]
        spans = tuple((a + shift, b + shift) for a, b in q.spans)
        questions.append(dataclasses.replace(q, spans=spans, paragraph=(at, at + len(paragraph))))
    return SquadData(data.path, data.sha256, corpus.articles, tuple(questions))


def prepare(
    path: str | os.PathLike[str],
    work: str | os.PathLike[str],
    *,
    limit_articles: int | None = None,
    corpus_from: str | os.PathLike[str] | None = None,
) -> tuple[SquadData, Path, Path]:
    """Load the data, write its articles under ``work/corpus`` and build (or reuse) ``work/index``.

    All articles form one corpus and one index; the build is a no-op when it is fresh.
    ``limit_articles`` keeps the first few articles (quick runs, tests); ``corpus_from``: another
    SQuAD file whose articles form the corpus (:func:`with_articles_of`).
    Returns (data, corpus folder, index folder).
    """
    from qa.build import build_index

    data = load_squad(path)
    if corpus_from is not None:
        data = with_articles_of(data, load_squad(corpus_from))
    if limit_articles is not None:
        kept = data.articles[:limit_articles]
        docs = {a.doc for a in kept}
        data = SquadData(data.path, data.sha256, kept, tuple(q for q in data.questions if q.article in docs))
    work = Path(work)
    corpus = write_corpus(data, work / "corpus")
    index = work / "index"
    build_index(corpus, index)
    return data, corpus, index


class GoldMap:
    """Which indexed sentences hold a question's gold spans, and which belong to an article."""

    def __init__(self, sentences: Sequence[Sentence]) -> None:
        self._by_doc: dict[str, list[tuple[int, int, int]]] = {}
        for i, s in enumerate(sentences):
            if s.citable:
                self._by_doc.setdefault(s.doc, []).append((s.start, s.end, i))
        self.sentences = sentences

    def article(self, doc: str) -> frozenset[int]:
        return frozenset(i for _, _, i in self._by_doc.get(doc, []))

    def covering(self, q: SquadQuestion) -> frozenset[int]:
        """Sentences whose ``[start, end)`` holds a whole gold span: the ones that answer."""
        return frozenset(i for s, e, i in self._by_doc.get(q.article, []) for a, b in q.spans if s <= a and b <= e)

    def overlapping(self, q: SquadQuestion) -> frozenset[int]:
        """Sentences touching any gold span: dropped together to make a question unanswerable."""
        return frozenset(i for s, e, i in self._by_doc.get(q.article, []) for a, b in q.spans if s < b and a < e)

    def paragraph(self, q: SquadQuestion) -> frozenset[int]:
        """Citable sentences of the paragraph(s) holding the gold spans."""
        held = self.overlapping(q)
        passages = {self.sentences[i].passage_start for i in held}
        return frozenset(
            i for _, _, i in self._by_doc.get(q.article, []) if self.sentences[i].passage_start in passages
        )


@dataclass(frozen=True)
class SquadChat:
    """A follow-up chat made by rule: earlier turns, then a question whose subject became a pronoun."""

    id: str
    turns: tuple[str, ...]
    question: SquadQuestion  # the last turn's original question (its gold spans)


_PREPOSITIONS = frozenset({
    "about", "after", "against", "at", "before", "by", "during", "for", "from", "in", "into", "of", "on",
    "over", "than", "to", "under", "with", "within",
})  # fmt: skip
# A title followed by one of these is the subject or object of the question, not a modifier
# ("Who founded it?" reads; "a Pharmacy technician" -> "a it technician" would not).
_AFTER = frozenset({
    "is", "was", "were", "are", "has", "had", "have", "do", "does", "did", "in", "on", "at", "to", "for",
    "from", "of", "and", "with", "by", "after", "before", "during", "first", "become", "became", "begin",
    "began", "get", "got", "use", "used", "take", "took", "start", "started", "end", "ended", "play", "played",
})  # fmt: skip


def _pronouns(article: SquadArticle) -> tuple[str, str, str]:
    """(subject, object, possessive) pronouns for an article's title: plural "they", people "he", else "it"."""
    words = article.title.split()
    if words and words[-1].endswith("s") and not words[-1].endswith("ss"):
        return "they", "them", "their"
    opening = " ".join(article.text[s:e] for s, e in article.paragraphs[:2]).lower()
    person = len(words) >= 2 and all(w[:1].isupper() for w in words)
    if person and opening.count(" he ") + opening.count(" his ") > opening.count(" it ") + opening.count(" its "):
        return "he", "him", "his"
    return "it", "it", "its"


def _replace_title(question: str, title: str, pronouns: tuple[str, str, str]) -> str | None:
    """The question with its article's title replaced by a pronoun, or None when that would not read."""
    match = re.search(rf"\b(the )?{re.escape(title)}('s|’s)?(?=[\s?.,]|$)", question, re.I)
    if match is None:
        return None
    before = question[: match.start()].split()
    after = question[match.end() :].strip()
    prev = before[-1].lower() if before else ""
    if prev in {"a", "an"} or prev.endswith(("'s", "’s")) or (len(before) > 1 and before[-1][:1].isupper()):
        return None
    if match.group(2):
        word = pronouns[2]
    else:
        nxt = re.match(r"[\w']+|[?.,]|$", after)
        token = nxt.group(0).lower() if nxt else ""
        if token and token not in _AFTER and token not in "?.,":
            return None
        word = pronouns[1] if prev in _PREPOSITIONS else pronouns[0]
    text = question[: match.start()] + word + question[match.end() :]
    return text[0].upper() + text[1:]


def follow_up_chats(data: SquadData, *, limit: int = 60) -> list[SquadChat]:
    """Two-turn chats by rule, deterministic: same paragraph, title named in both, pronoun in the second.

    For each paragraph, consecutive questions (file order) that both name the
    article's title make a chat when the second still reads with the title
    (and a leading "the") replaced by a pronoun: "When was it founded?",
    "What did he conquer?". At most one chat per paragraph and ``limit`` in
    all, spread over articles round-robin.
    """
    by_article: dict[str, list[SquadChat]] = {}
    for article in data.articles:
        pronouns = _pronouns(article)
        plain = re.compile(rf"\b{re.escape(article.title)}\b", re.I)
        questions = [q for q in data.questions if q.article == article.doc and plain.search(q.question)]
        used: set[tuple[int, int]] = set()
        for first, second in itertools.pairwise(questions):
            para = _paragraph_of(article, second)
            if para is None or para != _paragraph_of(article, first) or para in used:
                continue
            rewritten = _replace_title(second.question, article.title, pronouns)
            if rewritten is None:
                continue
            used.add(para)
            by_article.setdefault(article.doc, []).append(
                SquadChat(f"chat-{second.id}", (first.question, rewritten), second)
            )
    chats: list[SquadChat] = []
    lists = [by_article[a.doc] for a in data.articles if a.doc in by_article]
    depth = 0
    while len(chats) < limit and any(depth < len(x) for x in lists):
        chats.extend(x[depth] for x in lists if depth < len(x))
        depth += 1
    return chats[:limit]


def _paragraph_of(article: SquadArticle, q: SquadQuestion) -> tuple[int, int] | None:
    if not q.spans:
        return None
    start = q.spans[0][0]
    return next((p for p in article.paragraphs if p[0] <= start < p[1]), None)
