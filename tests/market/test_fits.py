"""Regime fits in worker processes: the same result as in the loop's process, the pool closable."""

from __future__ import annotations

import asyncio

import numpy as np

from streamer.fits import close_fit_executor, fit_executor
from streamer.market.decoder import RegimeTracker, TrackerConfig, decode_arrays
from streamer.market.synthetic import SyntheticSeries


async def test_fits_in_processes_decode_as_inline_fits(series3: SyntheticSeries) -> None:
    config = TrackerConfig(warmup=300, refit_every=400, window=800, lag=2)
    t, p = series3.times[:1500], series3.prices[:1500]
    inline = RegimeTracker("X", config).push_many(t, p)
    pool = fit_executor("process", 1)
    try:
        tr = RegimeTracker("X", config, inline=False)
        out = [d async for batch in decode_arrays(t, p, tr, executor=pool) for d in batch]
        # the fit ran in another process: the worker's pid is not ours
        pids = await asyncio.gather(
            *(asyncio.get_running_loop().run_in_executor(pool, _pid) for _ in range(2))
        )
    finally:
        close_fit_executor(pool)
    assert tr.fit_count == 1 + tr.refits and tr.refits >= 2
    assert [d.to_wire() for d in out] == [d.to_wire() for d in inline]
    assert all(pid != _pid() for pid in pids)
    assert np.isclose(out[-1].probs, inline[-1].probs).all()


def _pid() -> int:
    import os

    return os.getpid()


_OWNER = """
import os, sys, time
from streamer.fits import fit_executor
pool = fit_executor("process", 1)
print(pool.submit(os.getpid).result(60), flush=True)
time.sleep(600)
"""


def test_fit_workers_end_when_the_service_is_killed() -> None:
    """A SIGKILLed service must not leave its fit workers (and their fork server) behind."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER], cwd=root, stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(root)},
    )  # fmt: skip
    try:
        assert owner.stdout is not None
        worker = int(owner.stdout.readline())
        assert _running(worker)
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _running(worker):
            time.sleep(0.05)
        if _running(worker):
            os.kill(worker, signal.SIGKILL)
            raise AssertionError("the fit worker outlived the process that owned it")
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()


def _running(pid: int) -> bool:
    """Alive and not a zombie (an exited child its parent has not reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
