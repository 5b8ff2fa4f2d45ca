"""The market side's settings and names, apart from the models that use them.

Why a module of its own: the configuration (`streamer.config`) and the dashboard
need these, and the models pull in scipy and hmmlearn (about a second of start-up
that `streamer dashboard` or `streamer config` would pay for nothing). Everything
here is re-exported where it was first defined (`decoder`, `model`, `stream`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from streamer.errors import ConfigError

REGIME_NAMES: dict[int, tuple[str, ...]] = {
    1: ("normal",),
    2: ("calm", "turbulent"),
    3: ("calm", "normal", "turbulent"),
    4: ("calm", "normal", "turbulent", "crisis"),
    5: ("quiet", "calm", "normal", "turbulent", "crisis"),
}
FAMILIES = ("gaussian", "student")
DEFAULT_STICKINESS = 0.2
DEFAULT_K_MARGIN = 10.0  # BIC points: "very strong" evidence (Kass and Raftery 1995)
MIN_WARMUP = 50
MAX_WARMUP = 1500
# the decision's defaults: a regime must be more likely than all others together, with
# odds of at least 3:2; one tick is enough (a longer dwell costs accuracy on regimes that
# last tens of ticks: see scripts/bench_regimes.py)
DEFAULT_LEVEL = 0.6
DEFAULT_DWELL = 1


@dataclass(frozen=True)
class TrackerConfig:
    """How a `RegimeTracker` warms up, refits, smooths and decides (counts are in ticks)."""

    warmup: int = 1000  # ticks buffered before the first fit (50..1500)
    states: int | None = None  # K, or None: chosen by BIC over 1..5 at every fit
    refit_every: int = 500  # start a refit every N ticks after the first fit (0 = never)
    window: int = 5000  # refits use the last N ticks
    lag: int = 10  # fixed-lag smoothing (0 = no smoothed state)
    restarts: int = 4  # EM starts per K for the first fit
    refit_restarts: int = 2  # for refits: the old model as a warm start, plus fresh ones
    swap_delay: int = 50  # ticks between starting a refit and using its model
    stickiness: float = DEFAULT_STICKINESS  # prior weight on staying in a regime (see model.py)
    emissions: str = "auto"  # gaussian, student, or auto: chosen by held-out likelihood
    k_margin: float = DEFAULT_K_MARGIN  # BIC points a change of K or emissions must win by
    level: float = DEFAULT_LEVEL  # the published state moves to a regime once its P >= level
    dwell: int = DEFAULT_DWELL  # ... for this many ticks in a row
    seed: int = 0  # random seed of the EM starts

    def __post_init__(self) -> None:
        if not MIN_WARMUP <= self.warmup <= MAX_WARMUP:
            raise ConfigError(
                f"--warmup must be between {MIN_WARMUP} and {MAX_WARMUP} ticks, not {self.warmup}"
            )
        if self.states is not None and not 1 <= self.states <= 5:
            raise ConfigError(f"--states must be between 1 and 5, not {self.states}")
        if self.refit_every < 0:
            raise ConfigError(f"--refit-every must be >= 0, not {self.refit_every}")
        if self.window < self.warmup:
            raise ConfigError(f"the refit window ({self.window}) is shorter than the warm-up")
        if not 0 <= self.lag <= 1000:
            raise ConfigError(f"--lag must be between 0 and 1000, not {self.lag}")
        if self.restarts < 1 or self.refit_restarts < 1:
            raise ConfigError("restarts must be >= 1")
        if self.swap_delay < 0:
            raise ConfigError(f"swap_delay must be >= 0, not {self.swap_delay}")
        if self.emissions not in ("auto", *FAMILIES):
            raise ConfigError(
                f"--emissions must be auto, gaussian or student, not {self.emissions!r}"
            )
        if not self.k_margin >= 0:
            raise ConfigError(f"--k-margin must be >= 0, not {self.k_margin}")
        if not 0.0 <= self.level < 1.0:
            raise ConfigError(f"--decision-level must be in [0, 1), not {self.level}")
        if not 1 <= self.dwell <= 10_000:
            raise ConfigError(f"--decision-dwell must be between 1 and 10000, not {self.dwell}")


@dataclass(frozen=True)
class TicksConfig:
    """Price CSVs replayed as live tick streams, one regime tracker each."""

    files: tuple[Path, ...] = ()  # price CSVs to replay and decode
    symbols: tuple[str, ...] = ()  # symbol per file, in order (default: the file's name)
    time_column: str | None = None  # time column (unset: detected)
    price_column: str | None = None  # price column (unset: detected)

    def __post_init__(self) -> None:
        symbols_of(list(self.files), list(self.symbols))


def symbols_of(files: list[Path], given: list[str] | None) -> list[str]:
    """The symbol of each --ticks file (given, or the file's name); ConfigError on a clash."""
    given = list(given or [])
    if len(given) > len(files):
        raise ConfigError(f"{len(given)} --symbol for {len(files)} --ticks files")
    names = given + [f.stem for f in files[len(given) :]]
    dup = [s for s, n in Counter(names).items() if n > 1]
    if dup:
        raise ConfigError(
            f"symbol {dup[0]!r} is used for two --ticks files; name them with --symbol"
        )
    return names


__all__ = [
    "DEFAULT_DWELL",
    "DEFAULT_K_MARGIN",
    "DEFAULT_LEVEL",
    "DEFAULT_STICKINESS",
    "FAMILIES",
    "MAX_WARMUP",
    "MIN_WARMUP",
    "REGIME_NAMES",
    "TicksConfig",
    "TrackerConfig",
    "symbols_of",
]
