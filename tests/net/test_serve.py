"""`streamer serve` and `streamer listen`: graceful SIGTERM with nothing lost, config, audio."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from streamer.cli import main
from streamer.commands import serve as serve_cmd
from streamer.commands.options import config_from_args
from streamer.config import Config
from streamer.errors import ConfigError
from streamer.market.synthetic import RegimeSpec, simulate
from streamer.net import protocol as P
from streamer.net.publisher import Publisher
from streamer.net.subscriber import Subscriber
from streamer.service import Service

from .conftest import dial_feed, regime, validate_message

ROOT = Path(__file__).resolve().parents[2]


def serve_args(argv: list[str]) -> Config:
    """The configuration `streamer serve ARGV` runs with."""
    import argparse

    parser = argparse.ArgumentParser()
    serve_cmd.add_arguments(parser)
    return config_from_args(parser.parse_args(argv))


async def collect_until_stopped(sub: Subscriber, out: list[P.Message]) -> None:
    async for m in sub:
        out.append(m)
        if m.kind == "status" and m.body["state"] == "stopped":
            return


async def test_sigterm_drains_and_loses_nothing(
    zctx: zmq.Context[Any], ipc: Callable[[str], str], validators: dict[str, Any]
) -> None:
    """Ticks still queued (and a first fit still running) at SIGTERM all come out, then exit 0."""
    feed, pub = ipc("feed"), ipc("pub")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streamer", "serve", "--tick-feed", feed, "--pub", pub,
        "--wait-subscribers", "1", "--warmup", "50", "--refit-every", "0",
        "--metrics-interval", "0", "--drain-timeout", "5",
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    got: list[P.Message] = []
    producer = zctx.socket(zmq.XPUB)
    try:
        async with Subscriber(pub, ["regime", "status", "metrics"], context=zctx) as sub:
            collector = asyncio.create_task(collect_until_stopped(sub, got))
            await dial_feed(producer, feed)
            n = 3000
            s = simulate(RegimeSpec.preset(2), n, seed=2)
            for i, p in enumerate(s.prices.tolist()):
                producer.send_multipart(P.encode_tick("BTC", 1.7e9 + i, p))
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            rc = await asyncio.wait_for(proc.wait(), 20)
            took = time.monotonic() - t0
            await asyncio.wait_for(collector, 10)
    finally:
        producer.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    err = (await proc.stderr.read()).decode() if proc.stderr else ""
    assert rc == 0, err
    assert took < 5 + 2 + 2  # drain timeout + linger + margin
    regimes = [m for m in got if m.kind == "regime"]
    assert len(regimes) == n - 1  # every tick after the first gives one decode
    assert [m.seq for m in regimes] == list(range(n - 1))
    assert sub.stats.missed == 0
    metrics = [m for m in got if m.kind == "metrics"][-1].body
    assert metrics["feed"]["accepted"] == n and metrics["sent"]["regime"] == n - 1
    assert not metrics["dropped"]
    states = [m.body["state"] for m in got if m.kind == "status"]
    assert states[-3:] == ["running", "draining", "stopped"]
    for m in got:
        validate_message(validators, m.topic, m.body)


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from streamer.audio.synth import HELDOUT_VOICES, synthesize
    from streamer.audio.wav import write_wav

    parts = [np.zeros(4000, np.float32)]
    for i, w in enumerate(("apple", "kiwi", "lime", "peach", "banana", "orange")):
        parts += [synthesize(w, HELDOUT_VOICES[i % len(HELDOUT_VOICES)]) * 0.5,
                  np.zeros(5000, np.float32)]  # fmt: skip
    path = tmp_path_factory.mktemp("audio") / "words.wav"
    write_wav(path, np.concatenate(parts), 8000)
    return path


async def test_stop_mid_recording_publishes_every_utterance(
    zctx: zmq.Context[Any], ipc: Callable[[str], str], speech_wav: Path,
    validators: dict[str, Any],
) -> None:  # fmt: skip
    from streamer.speech.recognizer import fake_factory

    pub = ipc("pub")
    args = serve_args([str(speech_wav), "--pub", pub, "--worker-kind", "thread", "--speed", "3",
                       "--wait-subscribers", "1", "--metrics-interval", "0"])  # fmt: skip
    service = Service(args, context=zctx, recognizer_factory=fake_factory(delay=0.05),
                      tune_gc=False)  # fmt: skip
    got: list[P.Message] = []
    async with Subscriber(pub, ["speech", "status", "metrics"], context=zctx) as sub:
        collector = asyncio.create_task(collect_until_stopped(sub, got))
        run = asyncio.create_task(service.run())
        while not service.speech_metrics()["events"]:  # stop once the first word is out
            await asyncio.sleep(0.02)
            assert not run.done()
        service.stop()
        assert await asyncio.wait_for(run, 15) == 0
        await asyncio.wait_for(collector, 10)
    words = [m for m in got if m.kind == "speech"]
    assert service.pool is not None and service.counts is not None
    submitted = service.pool.stats.submitted
    assert 1 <= len(words) == submitted == sum(service.counts.words.values())
    assert [m.seq for m in words] == list(range(len(words)))
    metrics = [m for m in got if m.kind == "metrics"][-1].body
    assert metrics["speech"]["events"] == len(words)
    for m in got:
        validate_message(validators, m.topic, m.body)


def test_config_file_and_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "serve.toml"
    cfg.write_text(
        "[publisher]\n"
        'endpoint = "tcp://127.0.0.1:6000"\n'
        "wait-subscribers = 2\n"
        "lossy = true\n"
        "[feed]\n"
        'bind = ["tcp://127.0.0.1:6001"]\n'
        "[tracker]\n"
        "warmup = 80\n"
        "refit_every = 0\n"
    )
    c = serve_args(["--config", str(cfg), "--warmup", "100", "--hwm", "5"])
    assert c.publisher.endpoint == "tcp://127.0.0.1:6000" and c.publisher.wait_subscribers == 2
    assert c.publisher.lossy and c.feed.bind == ("tcp://127.0.0.1:6001",)
    assert c.tracker.warmup == 100  # the flag wins
    assert c.tracker.refit_every == 0 and c.publisher.hwm == 5
    assert c.service.speed == 1.0 and c.audio.files == ()  # defaults
    # a repeatable flag replaces the file's list
    assert serve_args(["--config", str(cfg), "--tick-feed", "ipc://x"]).feed.bind == ("ipc://x",)
    for text, what in (
        ("nonsense = 1\n", "unknown section \\[nonsense\\]"),
        ("[publisher]\nnonsense = 1\n", "unknown key 'nonsense' in \\[publisher\\]"),
        ("[tracker]\nwarmup = 'many'\n", "\\[tracker\\] warmup: expected an integer"),
        ("[publisher]\nlossy = 1\n", "true or false"),
        ("[recognizer]\nkind = 'gpu'\n", "not one of"),
        ("[tracker]\nwarmup = 5\n", "warmup must be between"),
        ("[publisher]\nhwm = -1\n", "publisher.hwm: must be >= 0"),
        ("[publisher]\nendpoint = [\n", "not valid TOML"),
    ):
        cfg.write_text(text)
        with pytest.raises(ConfigError, match=what):
            serve_args(["--config", str(cfg)])
    with pytest.raises(ConfigError, match="cannot read"):
        serve_args(["--config", str(tmp_path / "missing.toml")])
    with pytest.raises(ConfigError, match=r"--hwm \(publisher.hwm\): must be >= 0"):
        serve_args(["--hwm", "-3"])


def test_nothing_to_serve(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--pub", "inproc://x"]) == 2
    assert "nothing to serve" in capsys.readouterr().err


async def test_listen_prints_json_lines(
    zctx: zmq.Context[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    async with Publisher("tcp://127.0.0.1:*", context=zctx, metrics_interval=0) as pub:
        pub.publish_many([regime("BTC", 1.0)])
        listen = asyncio.create_task(asyncio.to_thread(
            main, ["listen", pub.endpoint, "--topic", "regime", "--count", "3"]))  # fmt: skip
        i = 0
        while not listen.done():
            await asyncio.sleep(0.05)
            i += 1
            pub.publish_many([regime("BTC", 1.0 + i)])
        assert listen.result() == 0
    lines = [P.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 3 and all(x["topic"] == "regime.BTC" for x in lines)
    assert lines[0]["from_snapshot"] is True and "from_snapshot" not in lines[1]
    assert [x["seq"] for x in lines] == list(range(lines[0]["seq"], lines[0]["seq"] + 3))


async def test_replay_with_pub_is_the_service_publishing(
    zctx: zmq.Context[Any], ipc: Callable[[str], str], tmp_path: Path
) -> None:
    """`streamer replay --pub`: the same service as `serve`, every decode published in order."""
    from streamer.commands import replay
    from tests.market.conftest import write_csv

    s = simulate(RegimeSpec.preset(2), 300, seed=4)
    csv = write_csv(tmp_path / "BTC.csv", s)
    pub = ipc("replay")
    argv = ["replay", "--ticks", str(csv), "--speed", "0", "--warmup", "60",
            "--pub", pub, "--wait-subscribers", "1"]  # fmt: skip
    got: list[P.Message] = []
    async with Subscriber(pub, ["regime", "status"], context=zctx) as sub:
        collector = asyncio.create_task(collect_until_stopped(sub, got))
        assert await asyncio.to_thread(main, argv) == 0
        await asyncio.wait_for(collector, 10)
    regimes = [m for m in got if m.kind == "regime"]
    assert [m.seq for m in regimes] == list(range(299)) and regimes[0].topic == "regime.BTC"
    assert replay.NAME == "replay"


async def test_serve_replays_csv_ticks_and_exits_when_done(
    zctx: zmq.Context[Any], ipc: Callable[[str], str], tmp_path: Path
) -> None:
    from tests.market.conftest import write_csv

    csv = write_csv(tmp_path / "ETH.csv", simulate(RegimeSpec.preset(2), 300, seed=6))
    pub = ipc("pub")
    args = serve_args(["--ticks", str(csv), "--speed", "0", "--warmup", "60", "--pub", pub,
                       "--wait-subscribers", "1", "--metrics-interval", "0"])  # fmt: skip
    got: list[P.Message] = []
    async with Subscriber(pub, ["regime", "status", "metrics"], context=zctx) as sub:
        collector = asyncio.create_task(collect_until_stopped(sub, got))
        assert await asyncio.wait_for(Service(args, context=zctx, tune_gc=False).run(), 20) == 0
        await asyncio.wait_for(collector, 10)
    assert len([m for m in got if m.topic == "regime.ETH"]) == 299
    assert [m for m in got if m.kind == "metrics"][-1].body["ticks"]["decoded"] == 299


async def test_second_sigterm_cuts_the_drain_short(
    zctx: zmq.Context[Any], ipc: Callable[[str], str]
) -> None:
    """A feed that keeps coming keeps the drain busy; a second SIGTERM ends it in 1 s, exit 1."""
    feed, pub = ipc("feed"), ipc("pub")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streamer", "serve", "--tick-feed", feed, "--pub", pub,
        "--warmup", "50", "--metrics-interval", "0", "--drain-timeout", "30",
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    producer = zctx.socket(zmq.PUB)
    producer.connect(feed)
    states: list[str] = []
    sending = True

    async def produce() -> None:
        i = 0
        s = simulate(RegimeSpec.preset(2), 100_000, seed=5).prices.tolist()
        while sending:
            producer.send_multipart(P.encode_tick("BTC", 1.7e9 + i, s[i % len(s)]))
            i += 1
            await asyncio.sleep(0.001)

    async def watch(sub: Subscriber) -> None:
        async for m in sub:
            states.append(m.body["state"])

    async def until(state: str) -> None:
        while state not in states:
            await asyncio.sleep(0.01)

    try:
        async with Subscriber(pub, ["status"], context=zctx) as sub:
            watcher = asyncio.create_task(watch(sub))
            await asyncio.wait_for(until("running"), 30)
            sender = asyncio.create_task(produce())
            await asyncio.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(until("draining"), 10)
            await asyncio.sleep(0.5)
            assert proc.returncode is None  # still draining: ticks keep coming
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            # the exit status, not the end of its stderr: the fit pool's forkserver holds
            # that pipe a little longer, until it sees its parent gone
            while proc.returncode is None and time.monotonic() - t0 < 10:
                await asyncio.sleep(0.005)
            took = time.monotonic() - t0
            rc = await asyncio.wait_for(proc.wait(), 10)
            sending = False
            await sender
            watcher.cancel()
    finally:
        producer.close(linger=0)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    err = (await proc.stderr.read()).decode() if proc.stderr else ""
    assert rc == 1, err
    assert took < 1.0, f"{took:.2f} s"
    assert "SIGTERM: stopping now" in err


async def test_heartbeats_carry_the_level_of_each_audio_stream(
    zctx: zmq.Context[Any], ipc: Callable[[str], str], tmp_path: Path,
    validators: dict[str, Any],
) -> None:  # fmt: skip
    """A replayed WAV of a known sine: its level in the heartbeats, gone when the file ends."""
    from streamer.audio.wav import write_wav
    from streamer.speech.recognizer import fake_factory

    rate, amp = 8000, 0.25
    t = np.arange(int(1.2 * rate)) / rate
    wav = tmp_path / "tone.wav"
    write_wav(wav, amp * np.sin(2 * np.pi * 300 * t), rate)
    pub = ipc("pub")
    args = serve_args([str(wav), "--pub", pub, "--worker-kind", "thread", "--speed", "1",
                       "--wait-subscribers", "1", "--metrics-interval", "0",
                       "--heartbeat", "0.2"])  # fmt: skip
    service = Service(args, context=zctx, recognizer_factory=fake_factory(), tune_gc=False)
    got: list[P.Message] = []
    async with Subscriber(pub, ["heartbeat", "status"], context=zctx) as sub:
        collector = asyncio.create_task(collect_until_stopped(sub, got))
        assert await asyncio.wait_for(service.run(), 20) == 0
        await asyncio.wait_for(collector, 10)
    levels = [
        m.data.levels[str(wav)]
        for m in got
        if isinstance(m.data, P.Heartbeat) and isinstance(m.data.levels, dict)
    ]
    assert len(levels) >= 3  # ~1.2 s of audio, a heartbeat every 0.2 s
    rms, peak = 20 * np.log10(amp / np.sqrt(2)), 20 * np.log10(amp)  # -15.1 and -12.0 dBFS
    full = [lv for lv in levels if abs(lv.peak_dbfs - peak) < 0.2]  # whole intervals of tone
    assert full and all(abs(lv.rms_dbfs - rms) < 0.3 for lv in full)
    assert service.meters == {}  # the file ended: no level left to report
    for m in got:
        validate_message(validators, m.topic, m.body)
