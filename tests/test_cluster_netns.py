"""The Ray cluster tests (tests/cluster), run inside a private network namespace.

Ray binds to the machine's interface address; in a namespace that has nothing
but loopback it keeps all its traffic there (../shared/notes/ray-loopback.md).
So `make test` (pytest) runs tests/cluster through this test, in a child
pytest under ``unshare --net`` (root, as CI runs). Under CI a machine where
that is impossible is a failure, never a skip. Inside such a namespace
already, tests/cluster is collected directly and this test has nothing to do.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamer.cluster.netns import in_private_net, private_net_command

ROOT = Path(__file__).resolve().parents[1]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def test_cluster_suite_in_a_private_network_namespace() -> None:
    if in_private_net():
        pytest.skip("already in a private network namespace: tests/cluster is collected directly")
    cmd = private_net_command(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/cluster"]
    )
    if cmd is None:
        msg = "tests/cluster needs root, unshare and ip (a private network namespace for Ray)"
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=480, check=False
    )
    out = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, f"tests/cluster failed (exit {proc.returncode}):\n{out}"
    assert " passed" in proc.stdout, out
