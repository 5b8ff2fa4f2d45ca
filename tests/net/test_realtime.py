"""`serve --realtime-priority N`: the loop and ZeroMQ's threads real-time, nothing else.

A real `streamer serve` process with a tick feed; the scheduling policy of each of
its threads and of its child processes (the regime fit worker) is read back from
the kernel while it decodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq

from streamer import realtime
from streamer.market.synthetic import RegimeSpec, simulate
from streamer.net import protocol as P
from streamer.net.subscriber import Subscriber

from .conftest import dial_feed

ROOT = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _may_use_realtime() -> bool:
    """Whether this process may use SCHED_FIFO (tried in a child, so nothing here changes)."""
    import subprocess

    code = "from streamer import realtime; import sys; sys.exit(realtime.enter(1) is not None)"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False)
    return r.returncode == 0


needs_rt = pytest.mark.skipif(
    not IN_CI and not _may_use_realtime(),
    reason="needs root, CAP_SYS_NICE or an rtprio limit (CI runs as root)",
)


def _policy(tid: int) -> tuple[str, int]:
    pol = os.sched_getscheduler(tid) & ~os.SCHED_RESET_ON_FORK
    name = {os.SCHED_OTHER: "other", os.SCHED_FIFO: "fifo", os.SCHED_RR: "rr"}.get(pol, str(pol))
    return name, os.sched_getparam(tid).sched_priority


def _threads(pid: int) -> dict[int, str]:
    out = {}
    for t in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # gone meanwhile
            out[int(t.name)] = (t / "comm").read_text().strip()
    return out


def _children(pid: int) -> list[int]:
    """Every descendant process of `pid`."""
    parent: dict[int, int] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent[int(p.name)] = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
    out, todo = [], [pid]
    while todo:
        q = todo.pop()
        kids = [c for c, pp in parent.items() if pp == q]
        out += kids
        todo += kids
    return out


async def _serve_and_look(
    ipc: Callable[[str], str], zctx: zmq.Context[Any], prefix: list[str], priority: int
) -> tuple[int, str, dict[str, tuple[str, int]], list[tuple[str, int]], int]:
    """Run the service on a tick feed (first fit included); its threads' and children's
    policies, read while it runs; then SIGTERM. (rc, stderr, threads, children, decodes)."""
    feed, pub = ipc("feed"), ipc("pub")
    proc = await asyncio.create_subprocess_exec(
        *prefix, sys.executable, "-m", "streamer", "serve", "--tick-feed", feed, "--pub", pub,
        "--wait-subscribers", "1", "--warmup", "60", "--refit-every", "0",
        "--metrics-interval", "0", "--realtime-priority", str(priority),
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    n = 400
    producer = zctx.socket(zmq.XPUB)
    decodes = 0
    try:
        async with Subscriber(pub, ["regime"], context=zctx) as sub:
            await dial_feed(producer, feed)
            prices = simulate(RegimeSpec.preset(2), n, seed=3).prices.tolist()
            for i, p in enumerate(prices):
                producer.send_multipart(P.encode_tick("BTC", 1.7e9 + i, p))
            async with asyncio.timeout(60):
                async for _m in sub:
                    decodes += 1
                    if decodes == n - 1:  # every tick after the first, warm-up included
                        break
            threads = {
                "main" if tid == proc.pid else f"{name}:{tid}": _policy(tid)
                for tid, name in _threads(proc.pid).items()
            }
            children = [_policy(c) for c in _children(proc.pid)]
            proc.send_signal(signal.SIGTERM)
            rc = await asyncio.wait_for(proc.wait(), 20)
    finally:
        producer.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    err = (await proc.stderr.read()).decode() if proc.stderr else ""
    return rc, err, threads, children, decodes


@needs_rt
async def test_loop_and_zeromq_threads_run_real_time_and_nothing_else(
    zctx: zmq.Context[Any], ipc: Callable[[str], str]
) -> None:
    rc, err, threads, children, decodes = await _serve_and_look(ipc, zctx, [], 7)
    assert rc == 0, err
    assert decodes == 399
    assert "real-time" not in err, err
    assert threads.pop("main") == ("fifo", 7)
    zmq_threads = {k: v for k, v in threads.items() if k.startswith("ZMQbg/")}
    assert any(k.startswith("ZMQbg/IO") for k in zmq_threads), threads
    assert set(zmq_threads.values()) == {("fifo", 7)}, zmq_threads
    # everything else the service started (executor and pool threads) and every child
    # process (the forkserver and the fit worker, which ran a fit) runs under the normal policy
    others = {k: v for k, v in threads.items() if k not in zmq_threads}
    assert others, threads  # the fit pool's threads at least
    assert set(others.values()) == {("other", 0)}, others
    assert children, "the fit worker process was not found"
    assert set(children) == {("other", 0)}, children


@pytest.mark.skipif(
    not IN_CI and (shutil.which("setpriv") is None or os.geteuid() != 0),
    reason="drops CAP_SYS_NICE with setpriv, as root (CI runs as root)",
)
async def test_without_permission_one_warning_and_the_normal_policy(
    zctx: zmq.Context[Any], ipc: Callable[[str], str]
) -> None:
    """No right to real-time priority: one line on stderr, and the service works as usual."""
    assert os.geteuid() == 0 and shutil.which("setpriv"), "CI runs as root, with util-linux"
    rc, err, threads, _children, decodes = await _serve_and_look(
        ipc, zctx, ["setpriv", "--bounding-set", "-sys_nice"], 9
    )
    assert rc == 0, err
    assert decodes == 399
    lines = [ln for ln in err.splitlines() if "real-time" in ln]
    assert len(lines) == 1, err
    assert "no permission for real-time priority 9" in lines[0]
    assert "Traceback" not in err
    assert set(threads.values()) == {("other", 0)}, threads


def test_priority_zero_changes_nothing() -> None:
    before = os.sched_getscheduler(0), os.sched_getparam(0).sched_priority
    assert realtime.enter(0) is None
    assert (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority) == before


def test_priority_out_of_range_is_a_config_error() -> None:
    from streamer.config import ServiceConfig
    from streamer.errors import ConfigError

    with pytest.raises(ConfigError, match=r"service\.realtime_priority"):
        ServiceConfig(realtime_priority=100)
    assert ServiceConfig(realtime_priority=99).realtime_priority == 99
