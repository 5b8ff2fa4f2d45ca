"""Market regimes from streamed prices: tick sources, the HMM fit, the online decoder.

One module per stage, each a pure synchronous core with, where it waits on time or
work, a thin asyncio shell:

    settings.py   the tracker's and the CSV replay's settings, the regime names (light)
    ticks.py      CSV tick reader and paced replay (the clock is injected)
    synthetic.py  regime-switching series with ground truth, for tests and the benchmark
    model.py      Gaussian HMM on normalised log-returns: BIC choice of K, restarts, state order
    decoder.py    online forward filter, fixed-lag smoother, warm-up and background refits
    analyze.py    offline report: HMM / KMeans / DBSCAN per K and a PNG of the decode
    stream.py     the `streamer replay --ticks` hook

The names below are imported when first used, not with the package: importing
`streamer.market.settings` (the configuration does) must not pull in scipy and hmmlearn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamer.market.decoder import DecodeBatch, RegimeDecoder, RegimeTracker, TrackerConfig
    from streamer.market.model import (
        REGIME_NAMES,
        FitReport,
        RegimeModel,
        fit_regimes,
        match_states,
    )
    from streamer.market.synthetic import RegimeSpec, SyntheticSeries, simulate
    from streamer.market.ticks import TickSeries, read_csv, replay_csv

_WHERE = {
    "DecodeBatch": "decoder",
    "RegimeDecoder": "decoder",
    "RegimeTracker": "decoder",
    "TrackerConfig": "settings",
    "REGIME_NAMES": "settings",
    "FitReport": "model",
    "RegimeModel": "model",
    "fit_regimes": "model",
    "match_states": "model",
    "RegimeSpec": "synthetic",
    "SyntheticSeries": "synthetic",
    "simulate": "synthetic",
    "TickSeries": "ticks",
    "read_csv": "ticks",
    "replay_csv": "ticks",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{where}"), name)


__all__ = [
    "REGIME_NAMES",
    "DecodeBatch",
    "FitReport",
    "RegimeDecoder",
    "RegimeModel",
    "RegimeSpec",
    "RegimeTracker",
    "SyntheticSeries",
    "TickSeries",
    "TrackerConfig",
    "fit_regimes",
    "match_states",
    "read_csv",
    "replay_csv",
    "simulate",
]
