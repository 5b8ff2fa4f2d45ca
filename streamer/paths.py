"""Where things live: the shared data folder and the banks shipped with the package."""

from __future__ import annotations

import os
from pathlib import Path

from streamer.errors import ConfigError

_HERE = Path(__file__).resolve().parent


def data_dir() -> Path:
    """The shared data folder: $STREAMER_DATA, default ../shared/data (relative to the cwd)."""
    return Path(os.environ.get("STREAMER_DATA", "../shared/data"))


def models_dir() -> Path:
    """Shipped banks: inside the installed package, or the checkout's top-level models/."""
    for cand in (_HERE / "models", _HERE.parent / "models"):
        if cand.is_dir():
            return cand
    raise ConfigError("the shipped models folder is missing from this installation")


def default_bank_path() -> Path:
    """The bank used when none is given: models/fruits.npz."""
    return models_dir() / "fruits.npz"
