"""Rebuild benchmark on the BBC news corpus: full build, no-op rebuild, one-sentence edit.

    .venv/bin/python bench/rebuild.py [ZIP] [--workdir DIR]

ZIP defaults to ``../shared/data/bbc-news/bbc-fulltext.zip`` relative to the
repository root. The archive is extracted to a temporary folder (or
``--workdir``, kept afterwards; a second run there reuses its full index and
skips the full build). Prints one line per step and checks that the edited
sentence is answerable right after the rebuild, by a long-lived Engine that
swaps to the new index without a restart.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ZIP = ROOT / ".." / "shared" / "data" / "bbc-news" / "bbc-fulltext.zip"

EDIT_FILE = "business/001.txt"
OLD_SENTENCE = "TimeWarner said fourth quarter sales rose 2% to $11.1bn from $10.9bn."
NEW_SENTENCE = "TimeWarner said its Zanzibar clove plantation harvested 4,321 tonnes in the fourth quarter."
QUESTION = "How many tonnes of cloves did the Zanzibar plantation of TimeWarner harvest?"


def extract(archive: Path, target: Path) -> Path:
    with zipfile.ZipFile(archive) as z:
        z.extractall(target)
    corpus = next(p.parent for p in target.rglob("business") if p.is_dir())
    return corpus


def timed(label: str, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    seconds = time.perf_counter() - started
    return result, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("zip", nargs="?", type=Path, default=DEFAULT_ZIP, help="the bbc-fulltext.zip archive")
    parser.add_argument("--workdir", type=Path, help="extract and build here (kept; reused by the next run)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the engine's progress")
    args = parser.parse_args()
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(message)s")

    from qa.answer import Engine
    from qa.build import build_index

    archive = args.zip.resolve()
    if not archive.is_file():
        print(f"no archive at {archive}; give its path as the first argument", file=sys.stderr)
        return 2
    work = args.workdir or Path(tempfile.mkdtemp(prefix="qa-bench-rebuild-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus_root = work / "corpus"
    index = work / "index"
    try:
        # Always start from the pristine archive so the edit is a real change.
        shutil.rmtree(corpus_root, ignore_errors=True)
        corpus = extract(archive, corpus_root)
        files = sum(1 for _ in corpus.rglob("*.txt"))
        print(f"corpus: {files} files from {archive} in {corpus}")

        full, full_s = timed("full", build_index, corpus, index)
        r = full.build
        reused_full = r.get("noop", False) or r.get("added") != full.documents
        print(
            f"full build:     {full_s:8.2f} s  {full.documents} documents, {full.sentences} sentences, "
            f"{r['embedded']} texts embedded, {r['reused']} reused"
            + ("  (index reused from --workdir: not a full build)" if reused_full else "")
        )

        noop, noop_s = timed("noop", build_index, corpus, index)
        assert noop.version == full.version, "the no-op rebuild built a new version"
        print(f"no-op rebuild:  {noop_s:8.2f} s  (version unchanged)")

        cli = [sys.executable, "-m", "qa.cli", "index", "build"]
        cli += ["--corpus", str(corpus), "--index", str(index)]
        _, cli_s = timed("cli-noop", subprocess.run, cli, check=True, capture_output=True)
        print(f"no-op rebuild, `qa index build` in a new process: {cli_s:.2f} s")

        engine = Engine(index, corpus)
        _, load_s = timed("load", engine.answer, "Who bought a stake in Google?")
        print(f"engine load:    {load_s:8.2f} s  (first question, index {engine.status()['version']})")

        path = corpus / EDIT_FILE
        text = path.read_text(encoding="utf-8")
        if OLD_SENTENCE not in text:
            print(f"cannot find the sentence to edit in {path}", file=sys.stderr)
            return 2
        path.write_text(text.replace(OLD_SENTENCE, NEW_SENTENCE), encoding="utf-8")
        edit, edit_s = timed("edit", build_index, corpus, index)
        r = edit.build
        print(
            f"one-sentence rebuild: {edit_s:6.2f} s  "
            f"files {r['changed']} changed, {r['unchanged']} unchanged; "
            f"sentences {r.get('sentences_embedded', '?')} embedded, "
            f"{r.get('sentences_reused', '?')} reused; "
            f"texts {r['embedded']} embedded, {r['reused']} reused"
        )
        if not reused_full:
            print(f"  = {100 * edit_s / full_s:.2f}% of the full build (target < 5%)")

        _, swap_s = timed("swap", engine.refresh, wait=True)
        result = engine.answer(QUESTION)
        top = result.sources[0] if result.sources else None
        hit = top is not None and top.doc == EDIT_FILE and top.text == NEW_SENTENCE
        print(f"engine swap:    {swap_s:8.2f} s  (answer from {result.index_version}; built {edit.version})")
        print(f"edited sentence answerable right after: {'yes' if hit else 'NO'}")
        if top is not None:
            print(f"  top source: {top.doc} chars {top.start}-{top.end}: {top.text!r}")
        return 0 if hit and result.index_version == edit.version else 1
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
