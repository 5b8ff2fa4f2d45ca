"""Shared fixtures: the shared data folder (fail under CI when missing), small banks, WAVs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from streamer.paths import data_dir


def _require(path: Path, what: str) -> Path:
    if path.exists():
        return path
    msg = f"{what} not found at {path} (set STREAMER_DATA)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(msg)  # under CI missing data is a failure, never a skip
    pytest.skip(msg)


@pytest.fixture(scope="session")
def fruits_dir() -> Path:
    """The real fruit recordings (7 words x 15)."""
    return _require(data_dir() / "fruits", "the fruit recordings")


@pytest.fixture(scope="session")
def prices_dir() -> Path:
    """The real price series."""
    return _require(data_dir() / "prices", "the price data")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def _cluster_tests_here() -> bool:
    from streamer.cluster.netns import in_private_net

    return in_private_net()


# tests/cluster runs a real Ray cluster, which must stay on loopback: only inside a private
# network namespace. Elsewhere tests/test_cluster_netns.py runs them in one (see there).
collect_ignore = [] if _cluster_tests_here() else ["cluster"]
