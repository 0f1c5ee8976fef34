"""The `qa` command: help everywhere, exit codes, one-sentence errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from qa.cli import main

from .conftest import ARTICLE_ID


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    found = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):  # includes plugin commands such as `serve`
        command = group.get_command(ctx, name)
        assert command is not None
        path = (*prefix, name)
        found.append((path, command))
        if isinstance(command, click.Group):
            found.extend(all_commands(command, path))
    return found


def test_every_command_has_help() -> None:
    runner = CliRunner()
    assert main.help
    for path, command in all_commands(main):
        assert command.help, f"`qa {' '.join(path)}` has no help text"
        result = runner.invoke(main, [*path, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output


def qa(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qa.cli", *args], capture_output=True, text=True, env=env)


def test_ask_prints_sentence_and_offsets(article_index: Path) -> None:
    result = CliRunner().invoke(
        main, ["ask", "How many vehicles did Mitsubishi sell in Southeast Asia?", "--index", str(article_index)]
    )
    assert result.exit_code == 0, result.output
    assert "280,000 vehicles" in result.output
    assert result.output.startswith("280,000")  # the answer phrase first, then its sentence
    assert result.output.splitlines()[1].startswith(("Confidence: confident (", "Confidence: likely ("))
    assert f"[1] {ARTICLE_ID} chars 748-858" in result.output


def test_ask_json(article_index: Path) -> None:
    result = CliRunner().invoke(
        main, ["ask", "Who is Carlos Ghosn?", "--json", "-k", "2", "--index", str(article_index)]
    )
    data = json.loads(result.output)
    assert len(data["sources"]) == 2 and data["abstained"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ask", "   "], "the question is empty"),
        (["ask", "ok?", "-k", "99"], "sources (k) must be a whole number from 1 to 20"),
        (["index", "build", "--corpus", "/nonexistent/corpus"], "does not exist"),
    ],
)
def test_user_errors_exit_2_with_one_sentence(args: list[str], message: str, tmp_path: Path) -> None:
    result = qa(*args, "--index", str(tmp_path / "index"))
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_index_status_and_build(make_corpus, tmp_path: Path) -> None:
    corpus = make_corpus({"a.txt": "Owls hunt at night in the forest."})
    index = str(tmp_path / "index")
    runner = CliRunner()
    missing = runner.invoke(main, ["index", "status", "--corpus", str(corpus), "--index", index])
    assert missing.exit_code == 1 and missing.output.startswith("missing")
    built = runner.invoke(main, ["index", "build", "--corpus", str(corpus), "--index", index, "--json"])
    assert built.exit_code == 0 and json.loads(built.output)["added"] == 1
    fresh = runner.invoke(main, ["index", "status", "--corpus", str(corpus), "--index", index])
    assert fresh.exit_code == 0 and fresh.output.startswith("fresh")
    (corpus / "b.txt").write_text("Bats also hunt at night.", encoding="utf-8")
    stale = runner.invoke(main, ["index", "status", "--corpus", str(corpus), "--index", index])
    assert stale.exit_code == 1 and "added: b.txt" in stale.output


def test_environment_variables_choose_folders(make_corpus, tmp_path: Path) -> None:
    corpus = make_corpus({"a.txt": "Owls hunt at night in the forest."})
    env = {"QA_CORPUS": str(corpus), "QA_INDEX": str(tmp_path / "envindex")}
    result = CliRunner(env=env).invoke(main, ["ask", "When do owls hunt?"])
    assert result.exit_code == 0, result.output
    assert "Owls hunt at night" in result.output
    assert (tmp_path / "envindex" / "CURRENT").exists()


def test_unwritable_index_folder_is_one_sentence(make_corpus, tmp_path: Path) -> None:
    corpus = make_corpus({"a.txt": "Owls hunt at night in the forest."})
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    result = qa("index", "build", "--corpus", str(corpus), "--index", str(not_a_folder))
    assert result.returncode == 2 and "cannot write the index folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_train_and_eval_name_unknown_calibrator_inputs(tmp_path: Path) -> None:
    squad = tmp_path / "squad.json"
    squad.write_text("{}", encoding="utf-8")
    for command in (["train", "--squad", str(squad)], ["eval", "--squad", str(squad)]):
        result = CliRunner().invoke(main, [*command, "--calibration", "top,confidence"])
        assert result.exit_code == 2
        assert "unknown calibrator inputs ['confidence']" in result.output and "verifier_top" in result.output
