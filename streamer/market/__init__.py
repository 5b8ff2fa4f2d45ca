"""Market regimes from streamed prices: tick sources, the HMM fit, the online decoder.

One module per stage, each a pure synchronous core with, where it waits on time or
work, a thin asyncio shell:

    ticks.py      CSV tick reader and paced replay (the clock is injected)
    synthetic.py  regime-switching series with ground truth, for tests and the benchmark
    model.py      Gaussian HMM on normalised log-returns: BIC choice of K, restarts, state order
    decoder.py    online forward filter, fixed-lag smoother, warm-up and background refits
    analyze.py    offline report: HMM / KMeans / DBSCAN per K and a PNG of the decode
    stream.py     the `streamer replay --ticks` hook
"""

from streamer.market.decoder import DecodeBatch, RegimeDecoder, RegimeTracker, TrackerConfig
from streamer.market.model import REGIME_NAMES, FitReport, RegimeModel, fit_regimes, match_states
from streamer.market.synthetic import RegimeSpec, SyntheticSeries, simulate
from streamer.market.ticks import TickSeries, read_csv, replay_csv

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
