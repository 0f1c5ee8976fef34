"""``make test``'s network namespace (``tests/netns.py``): loopback alone, the same user, the command's exit status."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests import netns
from tests.conftest import ROOT

SHOW = "import os; from tests.netns import interfaces, inside; print(os.getuid(), interfaces(), inside())"


def test_a_command_run_in_the_namespace_sees_loopback_alone_as_the_same_user() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "tests.netns", sys.executable, "-c", SHOW + "; raise SystemExit(3)"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 3, run.stderr  # the command's own status
    if "no network namespace of its own" in run.stderr:  # a kernel that refuses unprivileged user namespaces
        assert run.stdout.split()[0] == str(os.getuid())
        return
    assert run.stdout.strip() == f"{os.getuid()} ['lo'] True"


def test_where_the_kernel_refuses_a_namespace_the_command_runs_as_it_is_and_says_so() -> None:
    # A user namespace allowed no namespaces under it stands for a kernel that refuses them.
    refuse = 'echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"'
    command = [sys.executable, "-m", "tests.netns", sys.executable, "-c", SHOW]
    outside = {k: v for k, v in os.environ.items() if k != netns.ENV}  # as if run outside make test's
    try:
        run = subprocess.run(
            ["unshare", "--user", "--map-root-user", "sh", "-c", refuse, "sh", *command],
            cwd=ROOT, env=outside, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    except FileNotFoundError:
        pytest.skip("no unshare command (util-linux)")
    if run.returncode != 0 and "max_user_namespaces" in run.stderr:
        pytest.skip(f"no user namespace to refuse in: {run.stderr.strip()}")
    assert run.returncode == 0, run.stderr
    assert "tests.netns: no network namespace of its own" in run.stderr
    assert run.stdout.split()[-1] == "False"  # not marked as inside one
