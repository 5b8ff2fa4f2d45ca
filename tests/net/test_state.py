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

import pytest
import zmq

from streamer.cli import main
from streamer.market.checkpoint import read_state
from streamer.market.decoder import TrackerConfig
from streamer.market.synthetic import RegimeSpec, simulate
from streamer.net import protocol as P
from streamer.net.publisher import Publisher
from streamer.net.subscriber import Subscriber
from tests.market.conftest import write_csv

from .conftest import regime

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
