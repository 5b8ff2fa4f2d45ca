"""The service on a real two-node Ray cluster (`ray.cluster_utils.Cluster`) on loopback.

Collected only inside a private network namespace (tests/test_cluster_netns.py
runs this module that way). One cluster for the module: a head and one worker
node, two CPUs each; actors reserve half a CPU so that a shard lost with the
worker node finds room on the head.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
import zmq
from ray.cluster_utils import Cluster

from streamer.audio.teststream import collect, make_stream
from streamer.audio.wav import write_wav
from streamer.cluster.cores import shard_of
from streamer.cluster.runtime import ClusterRuntime
from streamer.cluster.speech import ClusterRecognizerPool
from streamer.cluster.ticks import drive_shards
from streamer.config import ClusterConfig, Config
from streamer.market.decoder import RegimeTracker, TrackerConfig
from streamer.market.synthetic import RegimeSpec, simulate
from streamer.messages import Utterance
from streamer.net import protocol as P
from streamer.net.subscriber import Subscriber
from streamer.service import Service
from streamer.speech.recognizer import fake_factory

from ..market.conftest import write_csv
from ..sinks import Collector

ROOT = Path(__file__).resolve().parents[2]
TRACKER = TrackerConfig(warmup=300, refit_every=400, window=1200, restarts=2)


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Cluster, dict[str, Any]]]:
    """The cluster and its worker node (`nodes["worker"]`: a test that removes it adds another)."""
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    nodes = {"worker": c.add_node(num_cpus=2)}
    ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
    c.wait_for_nodes()
    try:
        yield c, nodes
    finally:
        ray.shutdown()
        c.shutdown()


def runtime_for(c: Cluster, **kw: Any) -> ClusterRuntime:
    rt = ClusterRuntime(ClusterConfig(address=c.address, actor_cpus=0.5, **kw))
    rt.connect()
    return rt


def by_key(lines: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Messages per stream or symbol, in order, without the output's own numbering."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in lines:
        m = {k: v for k, v in m.items() if k not in ("seq", "topic")}
        out[m.get("symbol") or m["stream"]].append(m)
    return dict(out)


def test_replay_on_the_cluster_equals_the_single_process(
    cluster: tuple[Cluster, dict[str, Any]], fruits_dir: Path, tmp_path: Path
) -> None:
    """`streamer replay --cluster`: the same words and decodes, message for message; the work
    done by shard and recognizer actors on both nodes (`--stats`)."""
    c, _ = cluster
    files = collect(fruits_dir)[::15][:6]
    audio, _truth, rate = make_stream(fruits_dir, files=files, seed=3, pause=(0.4, 0.8))
    wav = tmp_path / "words.wav"
    write_wav(wav, audio, rate)
    csvs = [
        write_csv(tmp_path / f"{name}.csv", simulate(RegimeSpec.preset(k), 1500, seed=k, dt=60.0))
        for name, k in (("AAA", 2), ("BBB", 3), ("DDD", 2))  # on both shards
    ]
    ticks = [a for p in csvs for a in ("--ticks", str(p))]
    tracker = ["--warmup", "300", "--refit-every", "400"]
    # the single process, in this process
    single = Collector()
    cfg = Config().replace("service", speed=0.0).replace("audio", files=(wav,))
    cfg = cfg.replace("ticks", files=tuple(csvs)).replace("recognizer", kind="inline")
    cfg = cfg.replace("tracker", warmup=300, refit_every=400)
    assert asyncio.run(Service(cfg, sink=single, tune_gc=False).run()) == 0
    expected = by_key([m.to_wire() for m in single.messages])
    # the cluster, through the command a user runs
    argv = [str(wav), *ticks, *tracker, "--speed", "0", "--stats", "--cluster", c.address]
    argv += ["--shards", "2", "--recognizer-actors", "2", "--actor-cpus", "0.5"]
    argv += ["--utterance-batch", "2", "--batch-ticks", "256"]
    proc = subprocess.run(
        [sys.executable, "-m", "streamer", "replay", *argv],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = by_key([json.loads(line) for line in proc.stdout.splitlines()])
    assert got == expected
    assert len(expected["AAA"]) == 1499 and len(expected[str(wav)]) >= 5
    stats_line = [x for x in proc.stderr.splitlines() if x.startswith("streamer replay: {")][-1]
    stats = json.loads(stats_line.split(": ", 1)[1])["cluster"]
    assert stats["nodes"] == 2, stats
    assert stats["actors"] == 4 and stats["shards"] == 2 and stats["recognizers"] == 2, stats
    assert stats["calls"] >= 2 + 3 and stats["utterances"] == len(expected[str(wav)]), stats
    assert stats["ticks"] == 3 * 1500 and stats["restarts"] == 0, stats


def _utterance(i: int, level: float) -> Utterance:
    x = np.full(800 + i, level, dtype=np.float32)
    return Utterance("s", i, x, 8000, i * 1.0, i * 1.0 + 0.1, i * 1.0 + 0.2)


async def _swap_run(c: Cluster) -> tuple[list[str | None], ClusterRuntime]:
    rt = runtime_for(c, in_flight=1)
    pool = ClusterRecognizerPool(
        fake_factory(labels=("quiet", "loud")), rt, actors=2, batch=2, in_flight=1
    )
    await pool.start()
    try:
        before = [await pool.submit(_utterance(i, 0.01 + 0.1 * (i % 2))) for i in range(8)]
        pool.swap(fake_factory(labels=("hush", "boom")))
        after = [await pool.submit(_utterance(8 + i, 0.01 + 0.1 * (i % 2))) for i in range(8)]
        events = await asyncio.gather(*before, *after)
    finally:
        await pool.aclose()
    return [e.recognition.label for e in events], rt


def test_a_bank_swap_reaches_every_actor(cluster: tuple[Cluster, dict[str, Any]]) -> None:
    """Utterances submitted before the swap keep the old bank, later ones use the new one,
    on both actors (one per node)."""
    labels, rt = asyncio.run(_swap_run(cluster[0]))
    assert labels[:8] == ["quiet", "loud"] * 4
    assert labels[8:] == ["hush", "boom"] * 4
    assert len(rt.stats.actors_seen) == 2 and len(rt.stats.nodes_seen) == 2
    assert rt.stats.utterances == 16 and rt.stats.swaps == 1


async def _lossy_recognition(c: Cluster, worker: Any, n: int) -> tuple[list[Any], int, Any]:
    rt = runtime_for(c, in_flight=1)
    pool = ClusterRecognizerPool(
        fake_factory(labels=("quiet", "loud"), delay=0.08), rt, actors=2, batch=2, in_flight=1
    )
    await pool.start()  # placed one per node (SPREAD)
    futures: list[asyncio.Future[Any]] = []

    async def submit_all() -> None:
        for i in range(n):  # waits while the pool is full, as a stream would
            futures.append(await pool.submit(_utterance(i, 0.01 + 0.1 * (i % 2))))

    try:
        submitting = asyncio.create_task(submit_all())

        async def both_at_work() -> None:
            while len(rt.stats.nodes_seen) < 2:  # a call done on each node
                await asyncio.sleep(0.01)

        await asyncio.wait_for(both_at_work(), 60)
        await asyncio.to_thread(c.remove_node, worker)
        done_at_loss = sum(f.done() for f in futures)
        await submitting
        events = await asyncio.wait_for(asyncio.gather(*futures), 120)
    finally:
        await pool.aclose()
    return events, done_at_loss, rt


def test_a_recognizer_node_lost_mid_run_still_gives_every_utterance_one_event(
    cluster: tuple[Cluster, dict[str, Any]],
) -> None:
    """The worker node goes away with its recognizer actor once both actors have done work,
    while utterances are queued and in flight: Ray starts the actor again on the head and
    retries its call; every utterance gets exactly one event, with the right word, no error."""
    c, nodes = cluster
    n = 48
    try:
        events, done_at_loss, rt = asyncio.run(_lossy_recognition(c, nodes["worker"], n))
    finally:
        nodes["worker"] = c.add_node(num_cpus=2)  # as it was, for anything after
    assert done_at_loss < n, "every utterance was done before the node was gone"
    assert [e.index for e in events] == list(range(n))
    assert [e.error for e in events] == [None] * n
    assert [e.recognition.label for e in events] == ["quiet", "loud"] * (n // 2)
    assert rt.stats.utterances == n


def _reference(arrays: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, list[Any]]:
    out = {}
    for sym, (t, p) in arrays.items():
        tr = RegimeTracker(sym, TRACKER, inline=True)
        out[sym] = [d.to_wire() for d in tr.push_many(t, p)]
    return out


def test_a_node_lost_mid_replay_loses_and_repeats_nothing(
    cluster: tuple[Cluster, dict[str, Any]],
) -> None:
    """The worker node is removed while ticks flow: its shard comes back on the head from its
    last checkpoint and the calls since, and the final output is the single process's, every
    symbol's messages without a gap or a repeat."""
    c, nodes = cluster
    worker = nodes["worker"]
    arrays = {}
    for i, sym in enumerate(("AAA", "BBB", "CCC", "DDD")):
        s = simulate(RegimeSpec.preset(2 + i % 2), 2500, seed=10 + i, dt=60.0)
        arrays[sym] = (s.times, s.prices)
    expected = _reference(arrays)
    rt = runtime_for(c, shards=2, batch_ticks=100, in_flight=2, checkpoint_every=5)
    sink = Collector()
    replies = 0
    removal: list[asyncio.Task[None]] = []

    def on_reply(_: Any) -> None:
        nonlocal replies
        replies += 1
        if replies == 12:  # well into the replay: drop the worker node and its actors
            removal.append(asyncio.create_task(asyncio.to_thread(c.remove_node, worker)))

    async def go() -> dict[str, Any]:
        result = await drive_shards(arrays, TRACKER, 0.0, sink, rt, rt.config, on_reply=on_reply)
        await asyncio.gather(*removal)
        return result

    try:
        result = asyncio.run(go())
    finally:
        nodes["worker"] = c.add_node(num_cpus=2)  # as it was, for anything after
    assert removal, "the replay ended before the node was removed"
    got: dict[str, list[Any]] = defaultdict(list)
    for d in sink.decodes:
        got[d.symbol].append(d.to_wire())
    assert dict(got) == expected  # nothing lost, nothing twice, same decodes
    assert result["decoded"] == sum(len(v) for v in expected.values())
    assert rt.stats.restarts >= 1, "no shard was lost: were both on the head?"
    assert rt.stats.checkpoints >= 2
    # from the checkpoint: fewer calls replayed than had been delivered
    assert rt.stats.replayed < 12


FeedTicks = list[tuple[str, float, float]]


def _produce(endpoint: str, ticks: FeedTicks) -> None:
    """Publish the ticks to a service's feed once it is there; return when all are delivered."""
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.XPUB)
    sock.setsockopt(zmq.XPUB_NODROP, 1)  # a full queue waits, nothing vanishes here
    sock.connect(endpoint)
    try:
        assert sock.poll(60_000), "the service never subscribed to its feed"
        assert sock.recv() == b"\x01" + P.TICK_TOPIC
        for symbol, t, p in ticks:
            sock.send_multipart(P.encode_tick(symbol, t, p))
    finally:
        sock.close(linger=30_000)  # delivered before the stop comes
        ctx.term()


async def _serve_feed(args: list[str], ticks: FeedTicks, where: Path) -> tuple[list[Any], str]:
    """`streamer serve --tick-feed` fed over a real socket, stopped by SIGTERM: every message
    a subscriber saw, and stderr."""
    where.mkdir()
    feed, pub = f"ipc://{where}/feed", f"ipc://{where}/pub"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streamer", "serve", "--tick-feed", feed, "--pub", pub,
        "--wait-subscribers", "1", "--warmup", "300", "--refit-every", "0", "--states", "2",
        "--emissions", "gaussian",
        "--metrics-interval", "0", "--drain-timeout", "60", "--stats", *args,
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    got: list[Any] = []

    async def collect(sub: Subscriber) -> None:
        async for m in sub:
            got.append(m)
            if m.kind == "status" and m.body["state"] == "stopped":
                return

    err = ""
    try:
        async with Subscriber(pub, ["regime", "status", "metrics"], heartbeat_timeout=30) as sub:
            collector = asyncio.create_task(collect(sub))
            await asyncio.to_thread(_produce, feed, ticks)
            proc.send_signal(signal.SIGTERM)
            rc = await asyncio.wait_for(proc.wait(), 120)
            err = (await proc.stderr.read()).decode() if proc.stderr else ""
            assert rc == 0, err[-3000:]
            done, _ = await asyncio.wait({collector}, timeout=20)
            assert done, f"no `stopped` status; stderr:\n{err[-3000:]}"
            assert sub.stats.missed == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return got, err


def test_a_live_feed_on_the_cluster_equals_the_single_process(
    cluster: tuple[Cluster, dict[str, Any]], tmp_path: Path
) -> None:
    """Ticks over a real ZeroMQ socket into `serve --cluster`: the shards decode them and the
    subscriber gets what the single process publishes, message for message, nothing lost
    (small calls, one in flight: the feed is held back while a shard fits)."""
    c, _ = cluster
    symbols = ("AAA", "BBB", "CCC", "DDD")
    assert {shard_of(s, 2) for s in symbols} == {0, 1}
    n = 500
    series = [simulate(RegimeSpec.preset(2 + i % 2), n, seed=20 + i, dt=60.0) for i in range(4)]
    ticks = [
        (sym, float(s.times[k]), float(s.prices[k]))
        for k in range(n)
        for sym, s in zip(symbols, series, strict=True)
    ]

    async def both() -> tuple[list[Any], list[Any], str]:
        single, _ = await _serve_feed([], ticks, tmp_path / "single")
        t0 = time.monotonic()
        args = ["--cluster", c.address, "--shards", "2", "--actor-cpus", "0.5"]
        args += ["--in-flight", "1", "--batch-ticks", "64", "--batch-ms", "2"]
        clustered, err = await _serve_feed(args, ticks, tmp_path / "cluster")
        assert time.monotonic() - t0 < 120
        return single, clustered, err

    single, clustered, err = asyncio.run(both())

    def regimes(got: list[Any]) -> dict[str, list[Any]]:
        """Each symbol's decodes in order, numbered (`seq`) but not timed (`ts`)."""
        out: dict[str, list[Any]] = defaultdict(list)
        for m in got:
            if m.kind == "regime":
                out[m.body["symbol"]].append({k: v for k, v in m.body.items() if k != "ts"})
        return dict(out)

    expected = regimes(single)
    assert sum(len(v) for v in expected.values()) == len(ticks) - len(symbols)
    assert [m["seq"] for m in expected["AAA"]] == list(range(n - 1))  # no gap, no repeat
    assert regimes(clustered) == expected
    metrics = [m for m in clustered if m.kind == "metrics"][-1].body
    assert metrics["feed"]["accepted"] == len(ticks) and not metrics["feed"]["dropped"]
    assert metrics["feed"]["decoded"] == len(ticks) - len(symbols)
    stats = metrics["cluster"]
    assert stats["nodes"] == 2 and stats["shards"] == 2 and stats["actors"] == 2, stats
    assert stats["ticks"] == len(ticks) and stats["calls"] >= len(ticks) // 64, stats
    assert "cluster" in err
