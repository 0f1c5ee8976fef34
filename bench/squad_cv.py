"""What the bench scripts that read ``qa eval --squad``'s cached candidates share: their options and loading."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from qa import train as tr
from qa.rank import parse_verify_margin

DEFAULT = "../shared/data/squad-tune/squad-v1.1-dev-tune.json.gz"


def parser(description: str) -> argparse.ArgumentParser:
    """The options of ``qa eval --squad`` these scripts take: squad, work, verifier, folds, verify margin."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--squad", default=DEFAULT)
    ap.add_argument("--work", type=Path, default=Path("/tmp/qa-squad-work"))
    ap.add_argument("--verifier", default=None, help="per-fold template, as qa eval --squad --verifier")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--verify-margin", type=parse_verify_margin, default=tr.VERIFY_MARGIN,
                    help="as qa eval --verify-margin ('all': 5)")  # fmt: skip
    return ap


def load(args: argparse.Namespace) -> tuple[Any, Any, list[Any], list[tr.Example]]:
    """The data, the engine on its one-corpus index, its questions and their candidates (cached in ``--work``)."""
    logging.basicConfig(level=logging.WARNING)
    data, engine, questions = tr.open_squad(args.squad, args.work)
    examples = tr.collect_cached(data, engine, questions, work=args.work, verifier=args.verifier, folds=args.folds,
                                 verify_margin=args.verify_margin)  # fmt: skip
    return data, engine, questions, examples
