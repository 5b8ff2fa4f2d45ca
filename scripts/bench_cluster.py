"""Benchmark: the service on a Ray cluster, beside the single-process service (issue 14).

    .venv/bin/python scripts/bench_cluster.py [--ticks 1000000] [--quick] [--publication]

Runs itself inside a private network namespace (loopback only; root, ``unshare
--net``: streamer.cluster.netns) and starts a two-node `ray.cluster_utils.Cluster`
there, one CPU per node, so a 2-core machine is two one-core nodes. In one run:

1. **Same output.** Price ticks with refits (4 symbols) and the fruit recordings as
   utterances, through the single process (trackers, the inline recognizer) and
   through the cluster (2 shard actors, 2 recognizer actors): the share of messages
   that are identical on the wire.
2. **Scaling.** Each stage fed from memory, its throughput timed inside the actors
   (ticks or utterances over the span from the first call's start to the last one's
   end, in steady state: the first fits and the bank load left out): 1 actor vs 2.
   Beside it, the single process on the same work (one core).
3. **Overhead.** Per tick, the CPU that is Ray's: what the shard actor's process spends
   between its calls (arguments in, replies out) plus all of the driver's (this process,
   Ray's threads included), over the ticks; and in wall time, the cluster run with one
   actor against the same calls made in this process without Ray (on a shared machine
   mostly a measure of waiting for a core). Per utterance, the wall-time difference.
   And the part that is the replies' serialisation.
4. **The head's own work.** Decodes rebuilt from the shards' rows and published
   through a real `Publisher` on loopback: microseconds per decode (the ceiling the
   head puts on the whole cluster's decode rate); and the voice-activity detector and
   end-pointing, which stay next to the audio: CPU per second of one stream.
5. **A node lost during a long replay** (``--ticks``, default 1M): the worker node is
   removed half way in; every symbol's decodes are counted and compared
   (by digest) with the run that lost nothing: lost, duplicated, different.
6. **Publication, both designs** (alone: ``--publication``): decodes back to the head's
   `Publisher` (in use) vs shard actors publishing their own decodes into an XSUB/XPUB
   proxy on the head; messages/s at one plain subscriber, the head's CPU a message, and
   the latency from a tick's due time to the subscriber at a paced rate.

Tick decoding here runs without refits (``refit_every=0``) in sections 2-5 so that
the figures are the decode path's (a refit is a fit every N ticks, a workload of its
own); section 1 has refits. The machine is shared: its load average is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import subprocess
import sys
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamer.cluster.netns import in_private_net, private_net_command  # noqa: E402


def reexec_in_namespace() -> None:
    if in_private_net():
        return
    cmd = private_net_command([sys.executable, *sys.argv])
    if cmd is None:
        sys.exit("bench_cluster: needs root, unshare and ip (Ray must stay on loopback)")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    sys.exit(subprocess.run(cmd, env=env, check=False).returncode)


class Counting:
    """A sink that only counts (and optionally digests) what it is sent."""

    def __init__(self, digest: bool = False) -> None:
        self.n: dict[str, int] = defaultdict(int)
        self.last_t: dict[str, float] = {}
        self.dups = 0
        self.h: dict[str, Any] = {}
        self.digest = digest

    def publish(self, msg: Any, delay: float | None = None) -> bool:
        self.publish_many([msg])
        return True

    def publish_many(self, msgs: Any) -> int:
        for d in msgs:
            s = d.symbol
            self.n[s] += 1
            if s in self.last_t and d.t <= self.last_t[s]:
                self.dups += 1
            self.last_t[s] = d.t
            if self.digest:
                h = self.h.get(s)
                if h is None:
                    h = self.h[s] = hashlib.sha1()
                h.update(f"{d.t!r}{d.state}{d.probs!r}{d.smoothed_state}".encode())
        return len(msgs)

    def digests(self) -> dict[str, str]:
        return {s: h.hexdigest() for s, h in self.h.items()}


def balanced_symbols(n: int, shards: int = 2) -> list[str]:
    from streamer.cluster.cores import shard_of

    per: dict[int, list[str]] = defaultdict(list)
    i = 0
    while any(len(per[k]) < n // shards for k in range(shards)):
        s = f"SYM{i}"
        k = shard_of(s, shards)
        if len(per[k]) < n // shards:
            per[k].append(s)
        i += 1
    return [s for k in range(shards) for s in per[k]]


def make_ticks(
    symbols: list[str], per: int, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from streamer.market.synthetic import RegimeSpec, simulate

    out = {}
    for i, s in enumerate(symbols):
        x = simulate(RegimeSpec.preset(3), per, seed=seed + i, dt=1.0)
        out[s] = (x.times, x.prices)
    return out


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- sections -------------------------------------------------------------------------------------


def steady_rate(replies: list[tuple[int, float, float, int, str]], what: int = 3) -> float:
    """Items per second over the later half of each actor's calls (wall span inside actors)."""
    by: dict[str, list[tuple[int, float, float, int, str]]] = defaultdict(list)
    for r in replies:
        by[r[4]].append(r)
    keep = []
    for rs in by.values():
        rs.sort()
        keep += rs[len(rs) // 2 :]
    start = min(r[1] for r in keep)
    end = max(r[2] for r in keep)
    return sum(r[what] for r in keep) / (end - start)


async def shard_run(
    arrays: dict[str, tuple[np.ndarray, np.ndarray]],
    cfg: Any,
    shards: int,
    address: str,
    sink: Any,
    on_reply: Any = None,
    **kw: Any,
) -> tuple[dict[str, Any], Any, list[Any], float]:
    from streamer.cluster.runtime import ClusterRuntime
    from streamer.cluster.ticks import drive_shards
    from streamer.config import ClusterConfig

    rt = ClusterRuntime(ClusterConfig(address=address, shards=shards, actor_cpus=0.5, **kw))
    rt.connect()
    replies: list[Any] = []

    def seen(r: Any) -> None:
        replies.append((r.seq, r.started, r.ended, r.ticks, r.actor, r.cpu_start, r.cpu_end))
        if on_reply is not None:
            on_reply(r)

    t0 = time.perf_counter()
    c0 = time.process_time()
    result = await drive_shards(arrays, cfg, 0.0, sink, rt, rt.config, on_reply=seen)
    rt.driver_cpu = time.process_time() - c0  # this process, Ray's threads in it included
    return result, rt, replies, time.perf_counter() - t0


def ray_cpu(replies: list[Any], driver_cpu: float) -> float:
    """CPU seconds that are Ray's: each actor's CPU between its calls, and the driver's."""
    by: dict[str, list[Any]] = defaultdict(list)
    for r in replies:
        by[r[4]].append(r)
    gaps = 0.0
    for rs in by.values():
        span = max(r[6] for r in rs) - min(r[5] for r in rs)
        gaps += span - sum(r[6] - r[5] for r in rs)
    return gaps + driver_cpu


def local_shard_run(
    arrays: dict[str, tuple[np.ndarray, np.ndarray]], cfg: Any, batch: int
) -> float:
    """The same calls as one shard gets, made in this process without Ray: seconds."""
    from streamer.cluster.cores import ShardCore
    from streamer.cluster.ticks import plan_calls

    core = ShardCore(cfg)
    chunks = []
    pos = dict.fromkeys(arrays, 0)
    left = True
    while left:
        left = False
        for s, (t, p) in arrays.items():
            i = pos[s]
            if i < len(t):
                j = min(len(t), i + batch)
                chunks.append((s, t[i:j], p[i:j]))
                pos[s] = j
                left = True
    t0 = time.perf_counter()
    for k, c in enumerate(plan_calls(chunks, batch)):
        core.push(k, c)
    return time.perf_counter() - t0


def utterances_from(folder: Path, limit: int) -> list[Any]:
    from streamer.audio.teststream import collect
    from streamer.audio.wav import load_audio
    from streamer.messages import Utterance

    out = []
    for i, (_label, path) in enumerate(collect(folder)[:limit]):
        x = load_audio(path, 8000).astype(np.float32)
        out.append(Utterance("bench", i, x, 8000, float(i), float(i) + len(x) / 8000, float(i) + 1))
    return out


async def recognizer_run(
    utts: list[Any], actors: int, address: str, warm: bool = True
) -> tuple[list[Any], Any, float]:
    from streamer.cluster.runtime import ClusterRuntime
    from streamer.cluster.speech import ClusterRecognizerPool
    from streamer.config import ClusterConfig
    from streamer.paths import default_bank_path
    from streamer.speech.recognizer import bank_factory

    rt = ClusterRuntime(ClusterConfig(address=address, actor_cpus=0.5))
    rt.connect()
    pool = ClusterRecognizerPool(
        bank_factory(default_bank_path()), rt, actors=actors, batch=4, in_flight=2
    )
    await pool.start()
    try:
        if warm:  # every actor loads its bank before the clock starts
            await asyncio.gather(*[await pool.submit(u) for u in utts[: 2 * actors]])
            rt.stats.span_start, rt.stats.span_end = float("inf"), 0.0
            rt.stats.utterances = 0
        t0 = time.perf_counter()
        futs = [await pool.submit(u) for u in utts]
        events = await asyncio.gather(*futs)
        wall = time.perf_counter() - t0
    finally:
        await pool.aclose()
    return events, rt, wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ticks", type=int, default=1_000_000, help="ticks in the node-loss replay")
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    ap.add_argument(
        "--publication", action="store_true", help="only section 6 (head publisher vs a proxy)"
    )
    args = ap.parse_args()
    reexec_in_namespace()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray.cluster_utils import Cluster

    from streamer.paths import data_dir

    fruits = data_dir() / "fruits"
    if not fruits.exists():
        sys.exit(f"bench_cluster: the fruit recordings are missing at {fruits} (STREAMER_DATA)")
    print(f"machine: {os.cpu_count()} cores, load average {loadavg()} (shared)")
    t0 = time.perf_counter()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = c.add_node(num_cpus=1)
    ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
    c.wait_for_nodes()
    print(f"cluster: 2 nodes x 1 CPU up in {time.perf_counter() - t0:.1f} s\n")
    try:
        return run(args, c, worker, fruits)
    finally:
        ray.shutdown()
        c.shutdown()


def run(args: argparse.Namespace, c: Any, worker: Any, fruits: Path) -> int:
    from streamer.cluster.cores import RecognizerCore
    from streamer.market.decoder import RegimeTracker, TrackerConfig
    from streamer.paths import default_bank_path
    from streamer.speech.bank import WordBank
    from streamer.speech.recognizer import RecognizerPool, bank_factory

    quick = args.quick
    ok = True
    if args.publication:
        print_publication(publication_paths(c.address, quick))
        return 0

    # 1. same output ---------------------------------------------------------------------------
    refits = TrackerConfig(warmup=500, refit_every=1000, window=3000)
    eq_arrays = make_ticks(balanced_symbols(4), 3000 if quick else 10_000, seed=100)
    single: dict[str, list[Any]] = {}
    for s, (t, p) in eq_arrays.items():
        tr = RegimeTracker(s, refits, inline=True)
        single[s] = [
            d.to_wire()
            for i in range(0, len(t), 4096)
            for d in tr.push_many(t[i : i + 4096], p[i : i + 4096])
        ]

    class Keep:
        def __init__(self) -> None:
            self.by: dict[str, list[Any]] = defaultdict(list)

        def publish_many(self, msgs: Any) -> int:
            for d in msgs:
                self.by[d.symbol].append(d.to_wire())
            return len(msgs)

        def publish(self, msg: Any, delay: float | None = None) -> bool:
            return bool(self.publish_many([msg]))

    keep = Keep()
    asyncio.run(shard_run(eq_arrays, refits, 2, c.address, keep, batch_ticks=512))
    n_dec = sum(len(v) for v in single.values())
    same_dec = sum(sum(a == b for a, b in zip(single[s], keep.by[s], strict=False)) for s in single)
    same_dec -= sum(abs(len(single[s]) - len(keep.by[s])) for s in single)
    utts = utterances_from(fruits, 40 if quick else 105)
    bank = WordBank.load(default_bank_path())

    async def local_words() -> list[Any]:
        async with RecognizerPool(bank_factory(default_bank_path()), kind="inline") as pool:
            return [await pool.recognize(u) for u in utts]

    words_single = [e.to_wire() for e in asyncio.run(local_words())]
    events, _, _ = asyncio.run(recognizer_run(utts, 2, c.address, warm=False))
    words_cluster = [e.to_wire() for e in events]
    same_words = sum(a == b for a, b in zip(words_single, words_cluster, strict=False))
    share = (same_dec + same_words) / (n_dec + len(words_single))
    print("1. same output as the single process (target 100%)")
    print(f"   regime decodes: {same_dec}/{n_dec} identical (4 symbols, refits every 1000 ticks)")
    print(f"   words:          {same_words}/{len(words_single)} identical (fruit recordings)")
    print(f"   all:            {100 * share:.2f}%  {'PASS' if share == 1 else 'FAIL'}\n")
    ok &= share == 1

    # 2. scaling -------------------------------------------------------------------------------
    fast = TrackerConfig(warmup=1000, refit_every=0)
    per = 60_000 if quick else 150_000
    arrays = make_ticks(balanced_symbols(4), per, seed=0)
    n_ticks = 4 * per
    t_local = local_shard_run(arrays, fast, 4096)
    rates = {}
    walls = {}
    placed = {}
    for shards in (1, 2):
        # the stage alone: the replies' decodes counted, not rebuilt as messages at the driver
        _, rt, replies, wall = asyncio.run(shard_run(arrays, fast, shards, c.address, None))
        if shards == 1:
            cpu_over = ray_cpu(replies, rt.driver_cpu) / n_ticks * 1e6
        rates[shards] = steady_rate(replies)
        placed[shards] = len(rt.stats.nodes_seen)
        walls[shards] = wall
    tr_t0 = time.perf_counter()
    for s, (t, p) in arrays.items():
        tr = RegimeTracker(s, fast, inline=True)
        for i in range(0, len(t), 4096):
            tr.push_many(t[i : i + 4096], p[i : i + 4096])
    local_rate = n_ticks / (time.perf_counter() - tr_t0)
    tick_scale = rates[2] / rates[1]
    urates = {}
    uwalls = {}
    reps = utts * (1 if quick else 2)
    for actors in (1, 2):
        _, rt, wall = asyncio.run(recognizer_run(reps, actors, c.address))
        urates[actors] = rt.stats.utterances / (rt.stats.span_end - rt.stats.span_start)
        uwalls[actors] = wall
        placed[10 + actors] = len(rt.stats.nodes_seen)
    core = RecognizerCore()
    items = [(u.samples, u.rate, "b") for u in reps]
    core.recognize(0, lambda: bank, items[:2])
    u0 = time.perf_counter()
    for i in range(0, len(items), 4):
        core.recognize(0, lambda: bank, items[i : i + 4])
    u_local = time.perf_counter() - u0
    utt_scale = urates[2] / urates[1]
    print("2. scaling on this machine (2 one-core nodes), timed inside the actors (target >= 1.6x)")
    print(f"   {'':28s}{'1 actor':>14s}{'2 actors':>14s}{'ratio':>8s}   single process (1 core)")
    print(
        f"   {'regime shards, ticks/s':28s}{rates[1]:>14,.0f}{rates[2]:>14,.0f}{tick_scale:>7.2f}x"
        f"   {local_rate:,.0f}  {'PASS' if tick_scale >= 1.6 else 'FAIL'}"
    )
    print(
        f"   {'recognizers, utterances/s':28s}{urates[1]:>14,.1f}{urates[2]:>14,.1f}"
        f"{utt_scale:>7.2f}x"
        f"   {len(items) / u_local:,.1f}  {'PASS' if utt_scale >= 1.6 else 'FAIL'}"
    )
    print(
        f"   actors on {placed[2]} node(s) with 2 shards, {placed[12]} node(s) with 2 recognizers"
    )
    print(
        f"   whole runs at the driver (first fits, bank loads included; no publication): "
        f"ticks {n_ticks / walls[1]:,.0f}/s (1 shard), {n_ticks / walls[2]:,.0f}/s (2); "
        f"utterances {len(reps) / uwalls[1]:,.1f}/s (1 actor), {len(reps) / uwalls[2]:,.1f}/s (2)\n"
    )
    ok &= tick_scale >= 1.6 and utt_scale >= 1.6

    # 3. overhead --------------------------------------------------------------------------------
    tick_over = (walls[1] - t_local) / n_ticks * 1e6
    utt_over = (uwalls[1] - u_local) / len(items) * 1e3
    ser, de = serialization_cost(arrays, fast)
    print("3. Ray overhead: one actor vs the same calls in this process without Ray")
    print(
        f"   per tick, CPU:  {cpu_over:6.2f} us  (the actor's CPU between its calls and the "
        f"driver's, {n_ticks:,} ticks in calls of 4096)  target <= 2 us  "
        f"{'PASS' if cpu_over <= 2 else 'FAIL'}"
    )
    print(
        f"   per tick, wall: {tick_over:6.2f} us  (cluster {walls[1]:.2f} s, "
        f"local {t_local:.2f} s: on a loaded machine this is mostly waiting for a core)"
    )
    print(
        f"   per utterance: {utt_over:6.3f} ms  (cluster {uwalls[1]:.2f} s, local {u_local:.2f} s, "
        f"{len(items)} utterances, batches of 4)  target <= 1 ms  "
        f"{'PASS' if utt_over <= 1 else 'FAIL'}"
    )
    print(
        f"   in it, the replies' rows: {ser:.2f} us a decode to pack and pickle in the actor, "
        f"{de:.2f} us to unpickle at the driver\n"
    )
    ok &= cpu_over <= 2 and utt_over <= 1

    # 4. publication at the head -----------------------------------------------------------------
    pub_us = publication_cost(arrays, fast)
    seg = segmenter_cost(fruits)
    print("4. the head's own work (measured apart)")
    print(
        f"   publication (rows -> RegimeDecode -> Publisher.publish_many, loopback): "
        f"{pub_us:.2f} us a decode, up to {1e6 / pub_us:,.0f} decodes/s per core"
    )
    print(
        f"   audio ingestion (VAD and end-pointing, 20 ms blocks): {seg * 1000:.2f} ms of CPU "
        f"per second of a stream, {1 / seg:,.0f} streams per core\n"
    )

    # 5. node loss -------------------------------------------------------------------------------
    n = args.ticks // (4 if quick else 1)
    big = make_ticks(balanced_symbols(8), n // 8, seed=1000)
    ref = Counting(digest=True)
    asyncio.run(shard_run(big, fast, 2, c.address, ref, checkpoint_every=8))
    got = Counting(digest=True)
    calls = 0
    removed: list[Any] = []
    total_calls = sum(-(-len(t) // 4096) for t, _ in big.values()) // 2

    def on_reply(_: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == total_calls // 2:
            removed.append(asyncio.get_running_loop().run_in_executor(None, c.remove_node, worker))

    async def lossy() -> Any:
        r = await shard_run(big, fast, 2, c.address, got, on_reply, checkpoint_every=8)
        await asyncio.gather(*removed)
        return r

    _, rt, _, wall = asyncio.run(lossy())
    c.add_node(num_cpus=1)
    lost = sum(ref.n.values()) - sum(got.n.values())
    same = ref.digests() == got.digests()
    print(
        f"5. node loss during a {n:,}-tick replay (8 symbols, 2 shards, checkpoints every 8 calls)"
    )
    print(
        f"   worker node removed after {total_calls // 2} calls; "
        f"shards restarted: {rt.stats.restarts}, "
        f"calls replayed: {rt.stats.replayed}, replies dropped as duplicates: {rt.stats.duplicates}"
    )
    print(
        f"   decodes: {sum(got.n.values()):,} of {sum(ref.n.values()):,}; lost {lost}, duplicated "
        f"{got.dups}, same as without the loss: {same}  (target 0 lost, 0 duplicated)  "
        f"{'PASS' if lost == 0 and got.dups == 0 and same else 'FAIL'}"
    )
    print(f"   replay wall time {wall:.1f} s")
    ok &= lost == 0 and got.dups == 0 and same

    # 6. publication paths -----------------------------------------------------------------------
    print()
    print_publication(publication_paths(c.address, quick))
    print(f"load average at the end: {loadavg()}")
    return 0 if ok else 1


# -- 6. publication: back to the head's publisher, or through an XSUB/XPUB proxy ------------------


class ProxyShard:
    """The alternative design: a shard actor that publishes its decodes itself, into an
    XSUB/XPUB proxy on the head (the encoding and per-topic seq of `Publisher.publish_many`,
    the same raw sends); its replies carry only a count."""

    def __init__(self, cfg: Any, endpoint: str) -> None:
        import zmq

        from streamer.cluster.cores import ShardCore

        self.core = ShardCore(cfg)
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.XPUB)  # XPUB: it sees the subscription come through
        self.sock.sndhwm = 0
        self.sock.connect(endpoint)
        self.topics: dict[str, bytes] = {}
        self.seqs: dict[bytes, int] = {}

    def subscribed(self, timeout: float) -> bool:
        return bool(self.sock.poll(int(timeout * 1000))) and self.sock.recv()[:1] == b"\x01"

    def push(self, chunks: Any) -> int:
        import zmq

        from streamer.net import protocol as P

        out = []
        for symbol, t, p in chunks:
            out.extend(self.core.tracker(symbol).push_many(t, p))
        ts = time.time()
        send = zmq.backend.Socket.send.__get__(self.sock)
        topics, seqs, encode = self.topics, self.seqs, P.encode_regime
        for d in out:
            topic = topics.get(d.symbol)
            if topic is None:
                topic = topics[d.symbol] = P.topic(P.REGIME, d.symbol).encode()
            seq = seqs.get(topic, 0)
            seqs[topic] = seq + 1
            send(topic, zmq.SNDMORE, False)
            send(encode(d, seq, ts), 0, False)
        return len(out)


class ProxyLink:
    """`ShardLink.send` for a `ProxyShard`: calls in order, at most `in_flight` outstanding."""

    def __init__(self, actor: Any, in_flight: int) -> None:
        self.actor = actor
        self.in_flight = in_flight
        self.window: Any = deque()
        self.published = 0

    async def send(self, chunks: Any) -> None:
        from streamer.cluster.runtime import call

        if len(self.window) >= self.in_flight:
            self.published += await self.window.popleft()
        self.window.append(call(self.actor.push, chunks))

    async def drain(self) -> None:
        while self.window:
            self.published += await self.window.popleft()


def run_proxy(front: str, back: str) -> None:
    """The proxy process: XSUB (nodes connect) to XPUB (subscribers connect), in C."""
    import zmq

    ctx = zmq.Context()
    xsub, xpub = ctx.socket(zmq.XSUB), ctx.socket(zmq.XPUB)
    xsub.rcvhwm = xpub.sndhwm = 0
    xsub.bind(front)
    xpub.bind(back)
    zmq.proxy(xsub, xpub)


def run_subscriber(endpoint: str, expected: int, every: int, q: Any) -> None:
    """A plain SUB: counts the regime messages; the arrival of message expected/10 and of the
    last; every `every`-th message's symbol, tick time and arrival (for latency)."""
    import json

    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.SUB)
    s.rcvhwm = 0
    s.setsockopt(zmq.SUBSCRIBE, b"regime")
    s.connect(endpoint)
    n, first, t_first = 0, max(1, expected // 10), 0.0
    raw = []
    wait = 120_000  # the first message: after the shards' first fits
    while n < expected and s.poll(wait):
        wait = 5000
        _, body = s.recv_multipart()
        n += 1
        if n == first:
            t_first = time.time()
        if n % every == 0:
            raw.append((body, time.time()))
    t_last = time.time()
    samples = []
    for body, at in raw:
        d = json.loads(body)
        samples.append((d["symbol"], d["t"], at))
    q.put((n, first, t_first, t_last, samples))
    s.close(0)
    ctx.term()


def free_port() -> int:
    import socket

    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        return int(so.getsockname()[1])


def publication_paths(address: str, quick: bool) -> dict[str, Any]:
    """Both designs, two shards on two nodes, one plain subscriber on the head:
    throughput (every tick at once) and latency (4k ticks a second, after the first 4 s)."""
    import multiprocessing as mp

    import psutil
    import ray

    from streamer.cluster.cores import shard_of, unpack_decodes
    from streamer.cluster.runtime import ClusterRuntime, call
    from streamer.cluster.ticks import ShardLink, _send_all, _send_paced
    from streamer.config import ClusterConfig
    from streamer.market.decoder import TrackerConfig
    from streamer.net.publisher import Publisher

    spawn = mp.get_context("spawn")
    # quick first fits (a few hundred ms, not seconds on a loaded core): the latency is
    # measured after them, and at once they are a small part of the run
    cfg = TrackerConfig(warmup=200, refit_every=0, states=2, restarts=1, emissions="gaussian")
    per = 30_000 if quick else 60_000
    arrays = make_ticks(balanced_symbols(4), per, seed=7)
    expected = sum(len(t) - 1 for t, _ in arrays.values())
    paced_speed = 1000.0  # ticks a second per symbol: 4k decodes/s in all, for 8 s
    paced = {s: (t[:8000], p[:8000]) for s, (t, p) in arrays.items()}
    paced_expected = sum(len(t) - 1 for t, _ in paced.values())
    cc = ClusterConfig(address=address, shards=2, actor_cpus=0.5)
    out: dict[str, Any] = {}

    def subscriber(endpoint: str, n: int) -> tuple[Any, Any]:
        q = spawn.Queue()
        proc = spawn.Process(target=run_subscriber, args=(endpoint, n, 50, q), daemon=True)
        proc.start()
        return proc, q

    def result(name: str, q: Any, proc: Any, start: float, speed: float, cpu: float) -> None:
        n, first, t_first, t_last, samples = q.get(timeout=120)
        proc.join(10)
        lat = []
        for sym, t, at in samples:
            t0 = float(arrays[sym][0][0])
            due = start + (t - t0) / speed if speed else 0.0
            if speed and (t - t0) / speed > 4.0:  # after the actors' start and first fits
                lat.append(at - due)
        out[name] = {
            "received": n,
            "rate": (n - first) / (t_last - t_first) if t_last > t_first else 0.0,
            "head_cpu_us": cpu / max(n, 1) * 1e6,
            "p50_ms": float(np.percentile(lat, 50)) * 1e3 if lat else None,
            "p99_ms": float(np.percentile(lat, 99)) * 1e3 if lat else None,
        }

    async def feed(links: list[Any], data: dict[str, Any], speed: float) -> None:
        """The ticks into the links as the service sends them: paced, or all at once."""
        if speed:
            await _send_paced(links, data, 2, speed, cc)
            return
        by: dict[int, list[Any]] = defaultdict(list)
        for s, (t, p) in data.items():
            by[shard_of(s, 2)].append((s, t, p))
        await asyncio.gather(*(_send_all(links[i], c, cc.batch_ticks) for i, c in by.items()))

    # A: replies to the head, published by the head's Publisher (the design in use)
    for name, data, speed, n in (
        ("head", arrays, 0.0, expected),
        ("head_paced", paced, paced_speed, paced_expected),
    ):
        ep = f"tcp://127.0.0.1:{free_port()}"

        async def head_run(
            ep: str, data: dict[str, Any], speed: float, n: int
        ) -> tuple[float, float, Any, Any]:
            rt = ClusterRuntime(cc)
            rt.connect()
            async with Publisher(ep, snapshot=False, metrics_interval=0, hwm=0) as pub:

                def deliver(reply: Any) -> None:
                    pub.publish_many(unpack_decodes(reply.decodes))

                links = [ShardLink(i, rt, cfg, cc.in_flight, deliver) for i in range(2)]
                for link in links:
                    link.start()
                await asyncio.gather(*(call(link.actor.where) for link in links))  # started
                proc, q = subscriber(ep, n)
                while "regime" not in pub.subscriptions:  # a plain SUB: no heartbeats
                    await asyncio.sleep(0.01)
                collectors = [asyncio.create_task(link.collect()) for link in links]
                c0 = time.process_time()
                start = time.time()
                await feed(links, data, speed)
                for link in links:
                    link.close()
                await asyncio.gather(*collectors)
                cpu = time.process_time() - c0
                for link in links:
                    rt.kill(link.actor)
                return start, cpu, proc, q

        start, cpu, proc, q = asyncio.run(head_run(ep, data, speed, n))
        result(name, q, proc, start, speed, cpu)

    # B: shards publish into an XSUB/XPUB proxy on the head
    for name, data, speed, n in (
        ("proxy", arrays, 0.0, expected),
        ("proxy_paced", paced, paced_speed, paced_expected),
    ):
        front, back = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
        proxy = spawn.Process(target=run_proxy, args=(front, back), daemon=True)
        proxy.start()
        proc, q = subscriber(back, n)
        cls = ray.remote(ProxyShard).options(num_cpus=0.5, scheduling_strategy="SPREAD")
        actors = [cls.remote(cfg, front) for _ in range(2)]
        assert all(ray.get([a.subscribed.remote(30) for a in actors]))

        async def proxy_run(
            actors: list[Any], data: dict[str, Any], speed: float
        ) -> tuple[float, float]:
            links = [ProxyLink(a, cc.in_flight) for a in actors]
            c0 = time.process_time()
            start = time.time()
            await feed(links, data, speed)
            for link in links:
                await link.drain()
            return start, time.process_time() - c0

        ps = psutil.Process(proxy.pid)
        p0 = sum(ps.cpu_times()[:2])
        start, driver_cpu = asyncio.run(proxy_run(actors, data, speed))
        result(name, q, proc, start, speed, 0.0)
        out[name]["head_cpu_us"] = (
            (sum(ps.cpu_times()[:2]) - p0) / max(out[name]["received"], 1) * 1e6
        )
        out[name]["driver_cpu_us"] = driver_cpu / max(out[name]["received"], 1) * 1e6
        for a in actors:
            ray.kill(a)
        proxy.terminate()
        proxy.join(5)
    out["expected"] = expected
    out["paced_expected"] = paced_expected
    return out


def print_publication(r: dict[str, Any]) -> None:
    h, x, hp, xp = r["head"], r["proxy"], r["head_paced"], r["proxy_paced"]
    print(
        "6. publication: decodes back to the head's publisher (in use) or published by the "
        "shards through an XSUB/XPUB proxy on the head"
    )
    print(
        f"   2 shards on 2 nodes, 4 symbols, one plain SUB on the head; {r['expected']:,} decodes"
    )
    print(f"   {'':40s}{'head publisher':>16s}    XSUB/XPUB proxy")
    rows = [
        ("messages/s at the subscriber (at once)", f"{h['rate']:,.0f}", f"{x['rate']:,.0f}"),
        (
            "head CPU a message (at once)",
            f"{h['head_cpu_us']:.2f} us",
            f"{x['head_cpu_us']:.2f} us  (the proxy; + {x['driver_cpu_us']:.2f} us Ray calls)",
        ),
        ("tick due -> subscriber at 4k/s, p50", f"{hp['p50_ms']:.2f} ms", f"{xp['p50_ms']:.2f} ms"),
        (
            "                                  p99",
            f"{hp['p99_ms']:.2f} ms",
            f"{xp['p99_ms']:.2f} ms",
        ),
    ]
    for label, a, b in rows:
        print(f"   {label:40s}{a:>16s}    {b}")
    got = (h["received"], x["received"], hp["received"], xp["received"])
    print(f"   received: {got} of {r['expected']:,} / {r['paced_expected']:,}\n")


def serialization_cost(
    arrays: dict[str, tuple[np.ndarray, np.ndarray]], cfg: Any
) -> tuple[float, float]:
    """Microseconds per decode to pack + pickle a reply's rows, and to unpickle them."""
    import pickle

    from streamer.cluster.cores import ShardCore, pack_decodes, unpack_decodes

    core = ShardCore(cfg)
    s, (t, p) = next(iter(arrays.items()))
    decodes = unpack_decodes(core.push(0, [(s, t[:50_000], p[:50_000])]).decodes)
    n = len(decodes)
    t0 = time.perf_counter()
    blob = pickle.dumps(pack_decodes(decodes), protocol=5)
    t1 = time.perf_counter()
    pickle.loads(blob)
    t2 = time.perf_counter()
    return (t1 - t0) / n * 1e6, (t2 - t1) / n * 1e6


def segmenter_cost(fruits: Path) -> float:
    """CPU seconds the head spends per second of one stream's audio (VAD and end-pointing)."""
    from streamer.audio.segmenter import Segmenter, SegmenterConfig
    from streamer.audio.teststream import make_stream

    audio, _, rate = make_stream(fruits, seed=1, minutes=2.0)
    x = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    seg = Segmenter(SegmenterConfig(rate=rate), stream="s")
    block = rate // 50  # 20 ms blocks, as a live source delivers them
    t0 = time.process_time()
    for i in range(0, len(x), block):
        seg.feed(x[i : i + block])
    seg.flush()
    return (time.process_time() - t0) / (len(x) / rate)


def publication_cost(arrays: dict[str, tuple[np.ndarray, np.ndarray]], cfg: Any) -> float:
    import socket

    from streamer.cluster.cores import ShardCore, unpack_decodes
    from streamer.net.publisher import Publisher

    core = ShardCore(cfg)
    packed = []
    for k, (s, (t, p)) in enumerate(arrays.items()):
        packed.append(core.push(k, [(s, t[:60_000], p[:60_000])]).decodes)
    n = sum(len(rows) for pk in packed for _, rows in pk)
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        port = so.getsockname()[1]

    async def go() -> float:
        async with Publisher(f"tcp://127.0.0.1:{port}", snapshot=False, metrics_interval=0) as pub:
            t0 = time.perf_counter()
            for pk in packed:
                pub.publish_many(unpack_decodes(pk))
            return time.perf_counter() - t0

    return asyncio.run(go()) / n * 1e6


if __name__ == "__main__":
    sys.exit(main())
