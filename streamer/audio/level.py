"""The level of a capture stream: RMS and peak in dBFS over the last few hundred ms.

Why: someone watching the dashboard should see at once whether the microphone
hears anything (a muted or wrong device shows -120, clipping shows 0). It costs
one dot product per block, in the stream's own loop; the publisher asks for the
figures once per heartbeat (`take`), which also starts the next period.
"""

from __future__ import annotations

import math

import numpy as np

FULL_SCALE = 32768.0  # int16
FLOOR_DBFS = -120.0  # silence (digital zero) is reported as this, not minus infinity


def dbfs(amplitude: float) -> float:
    """An int16 amplitude in dBFS, floored at FLOOR_DBFS and capped at 0, to 0.1 dB."""
    if amplitude <= 0:
        return FLOOR_DBFS
    return round(min(0.0, max(FLOOR_DBFS, 20 * math.log10(amplitude / FULL_SCALE))), 1)


class LevelMeter:
    """Blocks of int16 samples in (`add`), (rms_dbfs, peak_dbfs) since the last `take` out."""

    def __init__(self) -> None:
        self.energy = 0.0
        self.count = 0
        self.peak = 0

    def add(self, samples: np.ndarray) -> None:
        n = len(samples)
        if not n:
            return
        x = samples.astype(np.float64)
        self.energy += float(np.dot(x, x))
        self.count += n
        self.peak = max(self.peak, int(np.max(np.abs(x))))

    def take(self) -> tuple[float, float] | None:
        """The level since the last call (None if no samples came), and start again."""
        if not self.count:
            return None
        out = dbfs(math.sqrt(self.energy / self.count)), dbfs(float(self.peak))
        self.energy, self.count, self.peak = 0.0, 0, 0
        return out


__all__ = ["FLOOR_DBFS", "LevelMeter", "dbfs"]
