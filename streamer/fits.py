"""Where regime fits run: a pool of processes (default), or threads.

Why processes: a fit is a few hundred milliseconds to a second of Python and
numpy on one core (EM over K = 1..5, both emission families). In a thread it
holds the GIL for most of that time, so the event loop, and with it audio,
heartbeats and every other symbol, stalls for tens of milliseconds at a time
(`scripts/bench_fit_lag.py` measures it). In a process it costs the loop only
the pickling of the fit's window (a few thousand floats) and of its result.

The pool starts through forkserver (a forked child of a threaded process can
inherit a held lock), with the model module preloaded so a worker is ready in
well under the first warm-up; `FitJob`s and `FitReport`s cross as pickles of
plain arrays, inside this machine only (never a file).
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection
import os
import threading
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Literal

FitKind = Literal["process", "thread"]


def _watch_parent() -> None:
    """End this fit worker when the service is gone (SIGKILL, OOM): it would otherwise wait
    on its task queue for ever, and keep the fork server (and its resource tracker) alive."""
    parent = mp.parent_process()
    if parent is None:
        return

    def watch() -> None:
        mp.connection.wait([parent.sentinel])
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _ready() -> bool:
    import streamer.market.model  # noqa: F401  (imported once per worker, up front)

    return True


def fit_executor(kind: FitKind = "process", workers: int = 1) -> Executor:
    """An executor for `FitJob.run`; a process pool's workers are started at once."""
    if kind == "thread":
        return ThreadPoolExecutor(workers, thread_name_prefix="fit")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["streamer.market.model"])
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_watch_parent)
    for _ in range(workers):
        pool.submit(_ready)  # start (and import in) the workers now, not at the first fit
    return pool


def close_fit_executor(pool: Executor, *, now: bool = False) -> None:
    """Take no more fits; with `now` (a forced stop) also end the ones running.

    Without `now` a fit already running finishes (the interpreter waits for it at
    exit); its result is not used.
    """
    if now and isinstance(pool, ProcessPoolExecutor):
        # no public way to end a running task in 3.11: the worker processes themselves
        # (before `shutdown`, which forgets them)
        for proc in list((pool._processes or {}).values()):
            proc.kill()
    pool.shutdown(wait=False, cancel_futures=True)


__all__ = ["FitKind", "close_fit_executor", "fit_executor"]
