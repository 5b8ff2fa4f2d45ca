#!/usr/bin/env python3
"""Event-loop lag while regime fits run: fits in threads (before) vs in processes (now).

Several symbols are decoded at once on one event loop, paced like live feeds,
with refits every `--refit-every` ticks on a `--window`-tick window, so that a
fit is nearly always running. Beside them a probe task asks to wake every 2 ms
and records how late it wakes: that lateness is what audio, heartbeats and the
other symbols on the loop suffer. One run per fit executor, same series and
settings, printed side by side with the probe on an idle loop (the machine's own
noise: on a shared, loaded machine it alone can pass 10 ms) and the CPU the
service process itself spent (target, issue 11: p99 <= 10 ms while fits run).

    .venv/bin/python scripts/bench_fit_lag.py [--seconds 12] [--symbols 4] [--rate 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamer.fits import FitKind, fit_executor  # noqa: E402
from streamer.market.decoder import RegimeTracker, TrackerConfig, decode_stream  # noqa: E402
from streamer.market.synthetic import RegimeSpec, SyntheticSeries, simulate  # noqa: E402
from streamer.market.ticks import pace  # noqa: E402
from streamer.messages import Tick  # noqa: E402

PROBE = 0.002  # seconds the probe asks to sleep


async def _probe(lags: list[float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t0 = loop.time()
        await asyncio.sleep(PROBE)
        lags.append(loop.time() - t0 - PROBE)


async def one_run(kind: FitKind, args: argparse.Namespace) -> dict[str, float]:
    config = TrackerConfig(
        warmup=1000, refit_every=args.refit_every, window=args.window, swap_delay=50
    )
    n = int(args.rate * args.seconds) + 1
    series = [simulate(RegimeSpec.preset(3), n, seed=10 + i) for i in range(args.symbols)]
    pool = fit_executor(kind, args.workers)
    # let a process pool's workers start before timing (the service starts them up front too)
    await asyncio.get_running_loop().run_in_executor(pool, int)
    trackers = [RegimeTracker(f"S{i}", config, inline=False) for i in range(args.symbols)]
    lags: list[float] = []
    stop = asyncio.Event()
    decoded = 0

    async def symbol(tr: RegimeTracker, s: SyntheticSeries) -> None:
        nonlocal decoded
        speed = float(np.median(np.diff(s.times))) * args.rate
        pairs = zip(s.times.tolist(), s.prices.tolist(), strict=True)
        ticks = (Tick(tr.symbol, t, p) for t, p in pairs)
        async for _ in decode_stream(pace(ticks, speed), tr, executor=pool):
            decoded += 1

    cpu0, t0 = time.process_time(), time.perf_counter()
    probe = asyncio.create_task(_probe(lags, stop))
    await asyncio.gather(*(symbol(tr, s) for tr, s in zip(trackers, series, strict=True)))
    stop.set()
    await probe
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    pool.shutdown(wait=True)
    lag = np.asarray(lags) * 1000.0
    fits = sum(tr.fit_count for tr in trackers)
    return {
        "p50": float(np.percentile(lag, 50)),
        "p99": float(np.percentile(lag, 99)),
        "max": float(lag.max()),
        "over10": float((lag > 10.0).mean() * 100.0),
        "fits": fits,
        "waits": sum(tr.refit_waits for tr in trackers),
        "decoded": decoded,
        "wall": wall,
        "loop_cpu": cpu,
    }


async def probe_alone(seconds: float) -> dict[str, float]:
    """The same probe on an idle loop: the machine's own scheduling noise, for reference."""
    lags: list[float] = []
    stop = asyncio.Event()
    probe = asyncio.create_task(_probe(lags, stop))
    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    stop.set()
    await probe
    lag = np.asarray(lags) * 1000.0
    return {
        "p50": float(np.percentile(lag, 50)),
        "p99": float(np.percentile(lag, 99)),
        "max": float(lag.max()),
        "over10": float((lag > 10.0).mean() * 100.0),
        "fits": 0,
        "waits": 0,
        "decoded": 0,
        "wall": time.perf_counter() - t0,
        "loop_cpu": time.process_time() - cpu0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=12.0, help="stream seconds per run")
    ap.add_argument("--symbols", type=int, default=4)
    ap.add_argument("--rate", type=float, default=2000.0, help="ticks/s per symbol")
    ap.add_argument("--refit-every", type=int, default=1000)
    ap.add_argument("--window", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=1, help="fit workers (threads or processes)")
    args = ap.parse_args()
    print(
        f"{args.symbols} symbols x {args.rate:g} ticks/s for {args.seconds:g} s, refit every "
        f"{args.refit_every} on {args.window} ticks, {args.workers} fit worker(s); "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    )
    kinds: tuple[FitKind, ...] = ("thread", "process")
    rows = {"probe alone": asyncio.run(probe_alone(args.seconds))}
    rows.update({kind: asyncio.run(one_run(kind, args)) for kind in kinds})
    head = f"{'loop lag (ms), fits in':<28}" + "".join(f"{k:>14}" for k in rows)
    print(head)
    for key, label, fmt in (
        ("p50", "p50", "{:14.2f}"),
        ("p99", "p99 (target <= 10)", "{:14.2f}"),
        ("max", "max", "{:14.1f}"),
        ("over10", "% of wake-ups > 10 ms", "{:14.2f}"),
        ("fits", "fits done", "{:14.0f}"),
        ("waits", "refits waited for", "{:14.0f}"),
        ("decoded", "decodes", "{:14.0f}"),
        ("wall", "wall s", "{:14.1f}"),
        ("loop_cpu", "service process CPU s", "{:14.1f}"),
    ):
        print(f"{label:<28}" + "".join(fmt.format(r[key]) for r in rows.values()))
    t, p = rows["thread"]["p99"], rows["process"]["p99"]
    print(f"p99 lag: {p:.2f} ms with fits in processes vs {t:.2f} ms in threads ({t / p:.1f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
