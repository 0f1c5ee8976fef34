"""Scale benchmark: build and query a corpus of N sentences (100k, 1M).

    .venv/bin/python bench/scale.py --sentences 100000 --workdir /tmp/qa-scale

Real text first: the BBC articles, SciFact's abstracts and the SQuAD tuning
articles from ``../shared/data`` (about 100k sentences together). Above that,
documents are generated from the real ones: a real document's passages,
subsampled and reordered under its own title. Every embedded text of a
generated document (the sentence alone; title + previous sentence + sentence)
is then one a real document already has, so its vectors come from the
content-hash cache of the previous build instead of being embedded again
(embedding 1M new texts would take hours on two cores). The output says how
many sentences are real and how many generated.

Because generated sentences repeat real ones, several sentences share one
vector: recall@10 of the approximate index is measured tie-aware (a returned
id counts when its exact score is >= the exact 10th score - 1e-6).

The workdir is kept: the real corpus's index is built once (the slow part,
embedding) and reused by the next run through the content-hash cache.
"""

from __future__ import annotations

import gzip
import json
import random
import re
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
BBC = DATA / "bbc-news" / "bbc-fulltext.zip"
SCIFACT = DATA / "beir-scifact" / "corpus.jsonl.gz"
SQUAD = DATA / "squad-tune" / "squad-v1.1-dev-tune.json.gz"
_UNSAFE = re.compile(r"[^\w.-]+")


def write_if_changed(path: Path, body: bytes) -> None:
    """Leave an unchanged file alone: its stat stays, so a rebuild is a no-op."""
    if not path.exists() or path.read_bytes() != body:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)


def write_real(corpus: Path) -> list[Path]:
    """The real documents as corpus files (BBC, SciFact, SQuAD); returns their paths."""
    from qa.squad import load_squad

    paths: list[Path] = []
    with zipfile.ZipFile(BBC) as z:
        for name in sorted(z.namelist()):
            if name.endswith(".txt"):
                parts = Path(name).parts  # bbc/<category>/<nnn>.txt
                target = corpus / "bbc" / parts[-2] / parts[-1]
                write_if_changed(target, z.read(name))
                paths.append(target)
    with gzip.open(SCIFACT, "rt", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            target = corpus / "scifact" / f"{_UNSAFE.sub('_', str(d['_id']))}.txt"
            title = " ".join(str(d["title"]).split())
            write_if_changed(target, f"{title}\n\n{d['text'].strip()}\n".encode())
            paths.append(target)
    squad = load_squad(SQUAD)
    for a in squad.articles:
        target = corpus / "squad" / a.doc
        write_if_changed(target, a.text.encode("utf-8"))
        paths.append(target)
    return paths


def generated_text(source: str, rng: random.Random) -> str | None:
    """A new document from a real one: its title line, then its passages subsampled and reordered.

    Passages are kept whole, so each sentence keeps the sentence before it and
    every embedding view repeats one of the real document's.
    """
    blocks = [b for b in re.split(r"\n\s*\n", source) if b.strip()]
    if len(blocks) < 3:
        return None
    title, passages = blocks[0], blocks[1:]
    keep = rng.sample(passages, max(1, (len(passages) * rng.randint(60, 100)) // 100))
    return "\n\n".join([title, *keep]) + "\n"
