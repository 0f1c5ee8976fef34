"""``make test``'s network namespace (``tests/netns.py``): loopback alone, the same user, the command's exit status."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT

SHOW = "import os, socket; print(os.getuid(), [n for _, n in socket.if_nameindex()], os.environ.get('QA_TEST_NETNS'))"


def test_a_command_run_in_the_namespace_sees_loopback_alone_as_the_same_user() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "tests.netns", sys.executable, "-c", SHOW + "; raise SystemExit(3)"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 3, run.stderr  # the command's own status
    if "no network namespace of its own" in run.stderr:  # a kernel that refuses unprivileged user namespaces
        assert run.stdout.split()[0] == str(os.getuid())
        return
    assert run.stdout.strip() == f"{os.getuid()} ['lo'] 1"
