"""Shared fixtures: the real model (loaded once per session) and small corpora."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
ARTICLE = ROOT / "corpus" / "mitsubishi-joins-renault-nissan-alliance.txt"
ARTICLE_ID = ARTICLE.name


@pytest.fixture(scope="session", autouse=True)
def encoder():
    """Load the real embedding model once for the whole session."""
    from qa.embed import DEFAULT_MODEL, get_encoder

    enc = get_encoder(DEFAULT_MODEL)
    enc.model  # noqa: B018 - load now
    return enc


@pytest.fixture
def make_corpus(tmp_path: Path) -> Callable[..., Path]:
    """Write a corpus folder: ``make_corpus({"a.txt": "text", "b.txt": b"bytes"})``."""

    def make(files: dict[str, str | bytes], name: str = "corpus") -> Path:
        folder = tmp_path / name
        folder.mkdir(parents=True, exist_ok=True)
        for rel, content in files.items():
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")
        return folder

    return make


@pytest.fixture(scope="session")
def article_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index of the article (corpus copied so tests can't disturb it)."""
    from qa import build_index

    base = tmp_path_factory.mktemp("article")
    corpus = base / "corpus"
    corpus.mkdir()
    shutil.copy(ARTICLE, corpus / ARTICLE_ID)
    build_index(corpus, base / "index")
    return base / "index"


@pytest.fixture(scope="session")
def article_text() -> str:
    return ARTICLE.read_text(encoding="utf-8")
