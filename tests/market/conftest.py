"""Fixtures for the market tests: small synthetic series with known regimes, written as CSV."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from streamer.market.synthetic import RegimeSpec, SyntheticSeries, simulate


def write_csv(path: Path, s: SyntheticSeries | tuple[np.ndarray, np.ndarray]) -> Path:
    """A daily-style CSV (`Date,close`) with ISO timestamps."""
    times, prices = (s.times, s.prices) if isinstance(s, SyntheticSeries) else s
    lines = ["Date,close"]
    for t, p in zip(times.tolist(), prices.tolist(), strict=True):
        lines.append(f"{datetime.fromtimestamp(t, UTC).isoformat()},{p!r}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def series3() -> SyntheticSeries:
    """3 regimes, Gaussian noise, 3000 ticks."""
    return simulate(RegimeSpec.preset(3), 3000, seed=7)


@pytest.fixture(scope="session")
def series2() -> SyntheticSeries:
    """2 regimes, Gaussian noise, 2000 ticks."""
    return simulate(RegimeSpec.preset(2), 2000, seed=3)
