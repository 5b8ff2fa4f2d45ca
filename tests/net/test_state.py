"""Crash-safe state: `serve --state DIR`, SIGKILL, restart; epoch and repeated seq."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from streamer.cli import main
from streamer.market.checkpoint import read_state
from streamer.market.decoder import TrackerConfig
from streamer.market.synthetic import RegimeSpec, simulate
from streamer.messages import DecodeBatch
from streamer.net import protocol as P
from streamer.net.publisher import Publisher
from streamer.net.subscriber import Subscriber
from tests.market.conftest import write_csv

from .conftest import dial_feed, regime

ROOT = Path(__file__).resolve().parents[2]
N = 3000
TRACKER = ["--warmup", "200", "--refit-every", "400", "--lag", "3"]
TRACKER_CONFIG = TrackerConfig(warmup=200, refit_every=400, lag=3)


def _serve(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "streamer", "serve", *argv],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stderr=subprocess.PIPE,
    )


async def test_sigkill_then_restart_resumes_with_seq_going_on(
    zctx: zmq.Context[Any], ipc: Callable[[str], str], tmp_path: Path
) -> None:
    s = simulate(RegimeSpec.preset(2), N, seed=11)
    csv = write_csv(tmp_path / "X.csv", s)
    state = tmp_path / "state"
    pub = ipc("pub")
    common = ["--ticks", str(csv), *TRACKER, "--pub", pub, "--state", str(state),
              "--checkpoint-every", "0.2", "--metrics-interval", "0", "--heartbeat", "0.2",
              "--wait-subscribers", "2"]  # fmt: skip
    # the uninterrupted run's decodes, for comparison
    ref_out = subprocess.run(
        [sys.executable, "-m", "streamer", "replay", "--ticks", str(csv), *TRACKER, "--speed", "0"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, check=True,
    )  # fmt: skip
    ref = {d["t"]: d for d in map(json.loads, ref_out.stdout.splitlines()) if "regime" in d}
    assert len(ref) == N - 1

    got: list[P.Message] = []
    raw: list[tuple[float, int, float]] = []  # (arrival, seq, t): every copy on the wire
    sub = Subscriber(pub, ["regime", "status"], context=zctx, heartbeat_timeout=1.0)
    raw_sock = zctx.socket(zmq.SUB)
    raw_sock.setsockopt(zmq.SUBSCRIBE, b"regime")
    raw_sock.setsockopt(zmq.SUBSCRIBE, b"heartbeat")  # counted: both runs wait for it
    raw_sock.connect(pub)

    async def collect() -> None:
        async for m in sub:
            got.append(m)
            if m.kind == "status" and m.body["state"] == "stopped":
                return

    async def collect_raw() -> None:
        while True:
            while raw_sock.poll(0):
                topic, body = raw_sock.recv_multipart()
                if topic.startswith(b"regime"):
                    b = json.loads(body)
                    raw.append((time.monotonic(), b["seq"], b["t"]))
            await asyncio.sleep(0.002)

    # paced: 1 ms a tick (a daily series at 86.4 million times real time), killed mid-way
    first = _serve([*common, "--speed", "86400000"])
    tasks: list[asyncio.Task[None]] = []
    try:
        async with sub:
            tasks = [asyncio.create_task(collect()), asyncio.create_task(collect_raw())]
            for _ in range(3000):  # (a loaded machine can take many seconds to start it)
                if state.joinpath("state.npz").exists() and any(m.kind == "regime" for m in got):
                    break
                await asyncio.sleep(0.02)
            assert state.joinpath("state.npz").exists(), "no checkpoint within a minute"
            await asyncio.sleep(1.0)
            first.send_signal(signal.SIGKILL)
            await asyncio.to_thread(first.wait, 10)
            killed_at = time.monotonic()
            saved = read_state(state / "state.npz", TRACKER_CONFIG)
            tr = saved.trackers["ticks:X"]
            next_seq = saved.extra["seqs"]["regime.X"]
            assert 0 < tr.n < N and tr.decoder is not None  # killed mid-way, after the warm-up
            # the restart: as fast as possible, from the saved state
            second = _serve([*common, "--speed", "0"])
            try:
                rc = await asyncio.to_thread(second.wait, 60)
            finally:
                if second.poll() is None:
                    second.kill()
            assert rc == 0, second.stderr.read().decode() if second.stderr else ""
            await asyncio.wait_for(tasks[0], 20)
    finally:
        for t in tasks:
            t.cancel()
        raw_sock.close(linger=0)
        for p in (first,):
            if p.poll() is None:
                p.kill()
    regimes = [m for m in got if m.kind == "regime"]
    # exactly once to the application, nothing missing, every decode the uninterrupted one's
    assert [m.seq for m in regimes] == list(range(N - 1))
    # (statuses published while it reconnected count as missed: the snapshot has the last)
    assert all(m.gap == 0 for m in regimes) and sub.stats.resumes == 1
    print("repeats dropped:", sub.stats.repeats, "raw copies:", len(raw), sub.stats)
    for m in regimes:
        r = ref[m.body["t"]]
        assert (m.body["state"], m.body["regime"]) == (r["state"], r["regime"])
        assert m.body["probs"] == pytest.approx(r["probs"], abs=2e-6)
    # the restart decodes from the first new tick (no warm-up), numbered where it stopped
    after = [(seq, t) for at, seq, t in raw if at > killed_at]
    first_new = float(s.times[tr.n])  # the CSV's ticks are all usable: tick n follows the state
    assert after[0] == (next_seq, first_new)
    statuses = [m.body for m in got if m.kind == "status"]
    resumed = [b for b in statuses if "resumed from" in b.get("detail", "")]
    assert len(resumed) == 1 and resumed[0]["epoch"] == statuses[0]["epoch"]
    assert resumed[0]["session"] != statuses[0]["session"]


def test_corrupt_state_is_one_error_or_a_cold_start(
    tmp_path: Path, ipc: Callable[[str], str], capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_csv(tmp_path / "Y.csv", simulate(RegimeSpec.preset(2), 300, seed=6))
    state = tmp_path / "state"
    state.mkdir()
    (state / "state.npz").write_bytes(b"PK\x03\x04 not really a zip")
    argv = ["serve", "--ticks", str(csv), "--warmup", "60", "--speed", "0", "--pub",
            ipc("pub"), "--metrics-interval", "0", "--state", str(state)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "state.npz: corrupt or not a streamer state file" in err
    assert main([*argv, "--cold-start"]) == 0  # and the state is written afresh
    assert read_state(state / "state.npz", TrackerConfig(warmup=60)).trackers["ticks:Y"].n == 300
    assert main(argv) == 0  # a finished replay resumed: every tick is at or before the state


async def test_subscriber_drops_repeats_after_a_resume_and_resets_on_a_new_epoch(
    zctx: zmq.Context[Any], ipc: Callable[[str], str]
) -> None:
    # (ipc: a TCP client redialling a random port of its own machine can connect to itself)
    kw: dict[str, Any] = {"context": zctx, "metrics_interval": 0, "heartbeat": 0.1}
    endpoint, snap = ipc("pub"), ipc("snap")
    first = Publisher(endpoint, snapshot=snap, epoch="e1", **kw)
    await first.start()
    sub = Subscriber(endpoint, ["regime"], context=zctx, heartbeat_timeout=0.5, snapshot=False)

    async def take(n: int) -> list[P.Message]:
        return [await asyncio.wait_for(sub.recv(), 15) for _ in range(n)]

    try:
        async with sub:
            await first.wait_subscribers(1, 5)
            first.publish_many([regime("X", 1.0 + i) for i in range(10)])
            assert [m.seq for m in await take(10)] == list(range(10))
            seqs = first.next_seqs()
            # (the client, waiting, notices the silence and dials again)
            later = asyncio.create_task(take(4))
            await first.aclose()
            seqs["regime.X"] = 6  # checkpointed at 6: seq 6..9 come again, then 10..
            async with Publisher(endpoint, snapshot=snap, epoch="e1", seqs=seqs, **kw) as again:
                await again.wait_subscribers(1, 10)
                await asyncio.sleep(0.3)  # its heartbeat first
                again.publish_many([regime("X", 7.0 + i) for i in range(8)])
                got = await later
                assert [(m.seq, m.gap) for m in got] == [(10, 0), (11, 0), (12, 0), (13, 0)]
                assert (sub.stats.repeats, sub.stats.resumes) == (4, 1)
                later = asyncio.create_task(take(3))
            async with Publisher(endpoint, snapshot=snap, epoch="e2", **kw) as fresh:
                await fresh.wait_subscribers(1, 10)
                await asyncio.sleep(0.3)
                fresh.publish_many([regime("X", 1.0 + i) for i in range(3)])
                assert [m.seq for m in await later] == [0, 1, 2]  # a new numbering
                assert sub.epoch == "e2" and sub.stats.resumes == 1
    finally:
        await first.aclose()


async def test_words_and_status_seqs_outlive_a_kill_between_checkpoints(
    zctx: zmq.Context[Any], tmp_path: Path
) -> None:
    """Words, status and metrics are never published again after a crash, so their seq must
    go on from the last one sent, not from the checkpoint: the journal (seqs.json) keeps it."""
    from streamer.config import StateConfig
    from streamer.state import SEQ_FILE, Checkpointer, SeqJournal

    cfg = StateConfig(dir=tmp_path / "state")
    ck = Checkpointer(cfg, TRACKER_CONFIG)
    await ck.save({}, {"speech": 2, "status": 1, "regime.X": 7})  # the last checkpoint
    async with Publisher(
        "tcp://127.0.0.1:*", context=zctx, metrics_interval=0, epoch=ck.epoch,
        seqs={"speech": 2, "status": 1, "regime.X": 7},
    ) as pub:  # fmt: skip
        journal = SeqJournal(tmp_path / "state" / SEQ_FILE, ck.epoch)
        pub.on_seq = journal.note
        word = {"stream": "a", "label": None, "confidence": 0.0, "start": 0.0, "end": 1.0}
        for i in range(3):  # three words after the checkpoint, then the process dies
            pub.publish_body(P.SPEECH, {**word, "utterance": i, "nbest": []})
        pub.status("running")
        pub.publish_many([regime("X", 1.0)])
    # (no final checkpoint: what a SIGKILL leaves behind)
    resume = Checkpointer(cfg, TRACKER_CONFIG).load()
    journal.close()
    assert resume is not None and resume.epoch == ck.epoch
    assert resume.seqs["speech"] == 5  # past the three words, not back at 2
    assert resume.seqs["regime.X"] == 7  # ticks are decoded again from the checkpoint
    assert resume.seqs["status"] >= 2  # past the `running` above
    # a journal of another epoch (a cold start's leftovers) is not used
    SeqJournal(tmp_path / "state" / SEQ_FILE, "another", {"speech": 99}).close()
    resume = Checkpointer(cfg, TRACKER_CONFIG).load()
    assert resume is not None and resume.seqs["speech"] == 2


def _batch(symbol: str, times: list[float]) -> DecodeBatch:
    n = len(times)
    return DecodeBatch(
        symbol, ("calm", "normal", "turbulent"), np.asarray(times), np.full(n, 100.0),
        np.tile([0.1, 0.7, 0.2], (n, 1)), np.ones(n, dtype=np.int64), np.zeros(n, dtype=bool),
        np.full(n, -1, dtype=np.int64), np.full(n, np.nan),
    )  # fmt: skip


def test_regime_marks_keep_the_last_of_every_topic_across_a_kill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamer.state import MARKS_FILE, RegimeMarks

    path = tmp_path / "state" / MARKS_FILE
    monkeypatch.setattr(RegimeMarks, "HEADER", 128)  # a small header, to see it grow
    marks = RegimeMarks(path, "e1")
    for i in range(40):  # 40 topics: the header doubles a few times, records move along
        marks.note(f"regime.S{i}".encode(), 10 + i, 1.7e9 + i)
    marks.note(b"regime.S3", 99, 1.8e9)  # later batches write in place
    # (not closed: what a SIGKILL leaves behind is what the kernel has)
    got = RegimeMarks.read(path, "e1")
    assert len(got) == 40 and got["regime.S3"] == (99, 1.8e9)
    assert got["regime.S39"] == (49, 1.7e9 + 39)
    assert RegimeMarks.read(path, "another") == {}  # a fresh start's numbering: none of these
    marks.close()
    again = RegimeMarks(path, "e1")  # a resume keeps them until they are written anew
    assert RegimeMarks.read(path, "e1") == got
    again.close()
    RegimeMarks(path, "e2").close()  # a new epoch starts empty
    assert RegimeMarks.read(path, "e2") == {} and RegimeMarks.read(path, "e1") == {}
    path.write_bytes(b"\x00garbage")
    assert RegimeMarks.read(path, "e1") == {}


@pytest.mark.parametrize("resent", [0, 4], ids=["only-new-ticks", "resent-then-new"])
async def test_new_ticks_after_a_resume_never_take_a_seq_used_before(
    zctx: zmq.Context[Any], ipc: Callable[[str], str], tmp_path: Path, resent: int
) -> None:
    """Killed between checkpoints, a publisher resumes at the checkpoint's seq. Ticks sent
    again keep their seqs (repeats, dropped by the client); a new tick goes on after the last
    seq published before the crash, so the client hands every decode over exactly once."""
    from streamer.state import RegimeMarks

    kw: dict[str, Any] = {"context": zctx, "metrics_interval": 0, "heartbeat": 0.1}
    endpoint, snap = ipc("pub"), ipc("snap")
    path = tmp_path / "regimes.bin"
    first = Publisher(endpoint, snapshot=snap, epoch="e1", **kw)
    marks = RegimeMarks(path, "e1")
    first.on_regime = marks.note
    await first.start()
    sub = Subscriber(endpoint, ["regime"], context=zctx, heartbeat_timeout=0.5, snapshot=False)
    wire: dict[int, set[float]] = {}  # seq -> every tick time seen under it on the wire
    raws: list[zmq.Socket[Any]] = []

    def listen() -> None:  # a plain SUB (dialled again after the restart, as a client would)
        raw = zctx.socket(zmq.SUB)
        raw.setsockopt(zmq.SUBSCRIBE, b"regime")
        raw.setsockopt(zmq.SUBSCRIBE, b"heartbeat")  # what a publisher counts as a subscriber
        raw.connect(endpoint)
        raws.append(raw)

    def read_wire() -> None:
        for raw in raws:
            while raw.poll(0):
                topic, body = raw.recv_multipart()
                if topic.startswith(b"regime"):
                    b = json.loads(body)
                    wire.setdefault(b["seq"], set()).add(b["t"])

    async def take(n: int) -> list[P.Message]:
        return [await asyncio.wait_for(sub.recv(), 15) for _ in range(n)]

    try:
        async with sub:
            listen()
            await first.wait_subscribers(2, 5)
            first.publish_many([regime("X", 1.0 + i) for i in range(10)])  # t 1..10: seq 0..9
            assert [m.seq for m in await take(10)] == list(range(10))
            await asyncio.sleep(0.1)
            read_wire()
            marks.close()  # (the file stays as the kill leaves it)
            seqs = {**first.next_seqs(), "regime.X": 6}  # checkpointed at 6
            later = asyncio.create_task(take(3))
            await first.aclose()
            again = Publisher(endpoint, snapshot=snap, epoch="e1", seqs=seqs, **kw)
            again.renumber(RegimeMarks.read(path, "e1"))
            async with again:
                listen()
                await again.wait_subscribers(2, 10)
                await asyncio.sleep(0.3)  # its heartbeat first
                ticks = [11.0 - resent + i for i in range(resent + 3)]  # t 7..10 again, or none
                again.publish_many([regime("X", t) for t in ticks])
                got = await later
                assert [(m.seq, m.body["t"], m.gap) for m in got] == [
                    (10, 11.0, 0), (11, 12.0, 0), (12, 13.0, 0)
                ]  # fmt: skip
                assert sub.stats.repeats == resent  # (heartbeats sent while it dialled: missed)
                # batches as arrays: once past the marks, the fast path numbers them on
                again.publish_many(_batch("X", [14.0, 15.0]))
                assert [(m.seq, m.body["t"]) for m in await take(2)] == [(13, 14.0), (14, 15.0)]
            await asyncio.sleep(0.1)
            read_wire()
            # on the wire: a seq is repeated only with the same tick, never given to another one
            assert all(len(ts) == 1 for ts in wire.values()), wire
            assert sorted(wire) == list(range(15))
    finally:
        for raw in raws:
            raw.close(linger=0)
        await first.aclose()


def _published_in(path: Path) -> int:
    """The next regime seq of X in a state file (0 if none yet, or caught mid-write)."""
    try:
        seqs = read_state(path, TrackerConfig(warmup=60, refit_every=0)).extra["seqs"]
    except Exception:  # written meanwhile: try again
        return 0
    return int(seqs.get("regime.X", 0))


async def test_a_live_feed_that_goes_on_after_a_kill_loses_and_repeats_nothing(
    zctx: zmq.Context[Any], ipc: Callable[[str], str], tmp_path: Path
) -> None:
    """`serve --tick-feed --state`, SIGKILL between checkpoints, restart: the producer goes on
    with new ticks only (it does not send again what it sent before). The client gets a
    decode of every tick once, in order; no seq on the wire is given to two different ticks."""
    feed, pub, state = ipc("feed"), ipc("pub"), tmp_path / "state"
    argv = ["--tick-feed", feed, "--pub", pub, "--state", str(state), "--checkpoint-every",
            "0.2", "--warmup", "60", "--refit-every", "0", "--metrics-interval", "0",
            "--heartbeat", "0.2", "--wait-subscribers", "2"]  # fmt: skip
    prices = simulate(RegimeSpec.preset(2), 900, seed=5).prices.tolist()
    times = [1.7e9 + i for i in range(len(prices))]
    got: list[P.Message] = []
    wire: dict[int, set[float]] = {}
    sub = Subscriber(pub, ["regime"], context=zctx, heartbeat_timeout=1.0)
    socks: list[zmq.Socket[Any]] = []

    def dial(kind: int, endpoint: str, *subscribe: bytes) -> zmq.Socket[Any]:
        s = zctx.socket(kind)
        for topic in subscribe:
            s.setsockopt(zmq.SUBSCRIBE, topic)
        s.connect(endpoint)
        socks.append(s)
        return s

    async def produce(lo: int, hi: int, per_ms: int) -> None:
        """Ticks lo..hi-1 into a service that has just started (a producer dialling it)."""
        prod = zctx.socket(zmq.XPUB)
        socks.append(prod)
        await dial_feed(prod, feed)
        for i in range(lo, hi):
            prod.send_multipart(P.encode_tick("X", times[i], prices[i]))
            if i % per_ms == 0:
                await asyncio.sleep(0.001)

    async def collect() -> None:
        async for m in sub:
            got.append(m)

    async def read_wire(raw: zmq.Socket[Any]) -> None:
        while True:
            while raw.poll(0):
                topic, body = raw.recv_multipart()
                if topic.startswith(b"regime"):
                    b = json.loads(body)
                    wire.setdefault(b["seq"], set()).add(b["t"])
            await asyncio.sleep(0.002)

    first = _serve(argv)
    tasks: list[asyncio.Task[None]] = []
    second: subprocess.Popen[bytes] | None = None
    try:
        async with sub:
            tasks.append(asyncio.create_task(collect()))
            raw = dial(zmq.SUB, pub, b"regime", b"heartbeat")
            tasks.append(asyncio.create_task(read_wire(raw)))
            await produce(0, 300, 2)
            ckpt = state / "state.npz"
            for _ in range(3000):  # a checkpoint past the warm-up, kept aside
                if ckpt.exists() and _published_in(ckpt) >= 150:
                    older = ckpt.read_bytes()
                    break
                await asyncio.sleep(0.02)
            await produce(300, 500, 2)
            for _ in range(3000):  # every decode of the first 500 ticks is out
                if len(got) >= 499:
                    break
                await asyncio.sleep(0.02)
            first.send_signal(signal.SIGKILL)
            await asyncio.to_thread(first.wait, 10)
            # killed between checkpoints (made certain: the one kept aside is the last)
            ckpt.write_bytes(older)
            saved = read_state(ckpt, TrackerConfig(warmup=60, refit_every=0))
            assert saved.extra["seqs"]["regime.X"] < 400
            second = _serve(argv)
            raw = dial(zmq.SUB, pub, b"regime", b"heartbeat")  # a plain client dials again
            tasks.append(asyncio.create_task(read_wire(raw)))
            await produce(500, 900, 2)  # new ticks only
            for _ in range(3000):
                if len(got) >= 899:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)
    finally:
        for t in tasks:
            t.cancel()
        for s in socks:
            s.close(linger=0)
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    await asyncio.to_thread(p.wait, 10)
                except subprocess.TimeoutExpired:
                    p.kill()
    err = second.stderr.read().decode() if second is not None and second.stderr else ""
    regimes = [m for m in got if m.kind == "regime"]
    assert [m.body["t"] for m in regimes] == times[1:], err  # each tick's decode, once, in order
    assert [m.seq for m in regimes] == list(range(899))  # numbered on without a hole
    assert all(m.gap == 0 for m in regimes) and sub.stats.resumes == 1
    assert all(len(ts) == 1 for ts in wire.values()), "a seq was given to two different ticks"
