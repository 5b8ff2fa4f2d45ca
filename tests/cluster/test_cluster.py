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
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
from ray.cluster_utils import Cluster

from streamer.audio.teststream import collect, make_stream
from streamer.audio.wav import write_wav
from streamer.cluster.runtime import ClusterRuntime
from streamer.cluster.speech import ClusterRecognizerPool
from streamer.cluster.ticks import drive_shards
from streamer.config import ClusterConfig, Config
from streamer.market.decoder import RegimeTracker, TrackerConfig
from streamer.market.synthetic import RegimeSpec, simulate
from streamer.messages import Utterance
from streamer.service import Service
from streamer.speech.recognizer import fake_factory

from ..market.conftest import write_csv
from ..sinks import Collector

ROOT = Path(__file__).resolve().parents[2]
TRACKER = TrackerConfig(warmup=300, refit_every=400, window=1200, restarts=2)


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Cluster, Any]]:
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    worker = c.add_node(num_cpus=2)
    ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
    c.wait_for_nodes()
    try:
        yield c, worker
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
    cluster: tuple[Cluster, Any], fruits_dir: Path, tmp_path: Path
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


def test_a_bank_swap_reaches_every_actor(cluster: tuple[Cluster, Any]) -> None:
    """Utterances submitted before the swap keep the old bank, later ones use the new one,
    on both actors (one per node)."""
    labels, rt = asyncio.run(_swap_run(cluster[0]))
    assert labels[:8] == ["quiet", "loud"] * 4
    assert labels[8:] == ["hush", "boom"] * 4
    assert len(rt.stats.actors_seen) == 2 and len(rt.stats.nodes_seen) == 2
    assert rt.stats.utterances == 16 and rt.stats.swaps == 1


def _reference(arrays: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, list[Any]]:
    out = {}
    for sym, (t, p) in arrays.items():
        tr = RegimeTracker(sym, TRACKER, inline=True)
        out[sym] = [d.to_wire() for d in tr.push_many(t, p)]
    return out


def test_a_node_lost_mid_replay_loses_and_repeats_nothing(cluster: tuple[Cluster, Any]) -> None:
    """The worker node is removed while ticks flow: its shard comes back on the head from its
    last checkpoint and the calls since, and the final output is the single process's, every
    symbol's messages without a gap or a repeat."""
    c, worker = cluster
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
        c.add_node(num_cpus=2)  # as it was, for anything after
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
