"""The fault soak: the real service under every fault at once, then an exact accounting.

    .venv/bin/python scripts/soak.py [--duration 1200] [--rate 50000] [--no-mic] [--policy P]

A `streamer serve` subprocess (real ZeroMQ sockets on loopback, `--state DIR`, the
publishing policy its own default, `fair`, unless `--policy` says otherwise) takes,
for `--duration` seconds:

- several audio streams: WAV files of words synthesised here (eSpeak NG), with a
  known number of words each, replayed `--speed` times faster than live;
- ~`--rate` ticks/s over the tick feed from a producer process (deterministic
  prices, so any tick can be sent again), paced by the service's own
  `metrics.feed.received` so a loaded machine slows the feed instead of
  overflowing it; among them malformed and random-byte messages and well-formed
  repeats of old ticks (the tracker must skip those);
- subscriber churn every few seconds: subscribers that join and read, that join
  and stall, that leave (while two healthy subscribers read everything: a raw
  pyzmq one in its own process, and `streamer.net.Subscriber` for the words);
- a recognizer worker process killed (SIGKILL) every `--kill-every` seconds;
- malformed requests and random bytes on the snapshot socket;
- bank swaps (the bank file replaced, now and then by a broken one first);
- the virtual microphone (a private PulseAudio daemon, as in tests/live) killed
  and started again (`--no-mic` leaves it out: it needs `pulseaudio`);
- one SIGKILL of the service and a restart with the same `--state DIR`; the
  producer then sends again from each symbol's checkpointed tick, as a
  replayable source would.

At the end it prints the accounting and exits 1 if any of it fails: every
utterance got exactly one event (in the killed run: no holes, the audio in
flight at the kill counted as lost), every valid tick exactly one decode to the
application, healthy subscribers saw no gap and no repeated seq with other
content, service RSS growth after warm-up within `--rss-limit` MB, no traceback
on the service's stderr, and every bad input counted by the service's metrics.

`run_soak(SoakConfig(...))` is the same thing as a function (tests/test_soak.py
runs a 60-second version); `--role producer|subscriber` are its child processes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import IO, Any

import msgspec
import numpy as np
import zmq

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

T0 = 1_700_000_000.0  # the first tick's time
DT = 0.01  # seconds between two ticks of one symbol (tick index = (t - T0) / DT)
WORDS = ("apple", "kiwi", "lime", "peach", "banana", "orange")
RATE = 8000  # the WAVs' sample rate


@dataclasses.dataclass
class SoakConfig:
    duration: float = 1200.0  # seconds of faults (start-up and the final drain come on top)
    rate: float = 50_000.0  # ticks per second offered to the feed
    symbols: int = 8
    streams: int = 3  # WAV audio streams
    speed: float = 2.0  # WAV replay speed
    kill_every: float = 30.0  # seconds between recognizer worker kills
    churn_every: float = 3.0  # seconds between subscriber churn events
    bank_every: float = 20.0  # seconds between bank swaps
    mic: bool = True  # the virtual microphone, lost and restored
    mic_every: float = 120.0  # seconds between microphone losses
    sigkill_at: float = 0.35  # when (fraction of duration) the service is SIGKILLed
    bad_every: int = 500  # one malformed feed message per this many ticks
    snapshot_every: float = 2.0  # seconds between bad snapshot requests
    warmup: int = 300  # tracker warm-up ticks
    refit_every: int = 20_000  # ticks between refits per symbol
    hwm: int = 100_000  # publisher high-water mark per subscriber
    rss_limit: float = 10.0  # MB of RSS growth allowed after warm-up
    rss_warmup: float = 20.0  # seconds of each service run (after `running`) before RSS counts
    workers: int = 2  # recognizer worker processes
    policy: str | None = None  # the publisher's --policy; None: the service's default (fair)
    workdir: Path | None = None
    seed: int = 1
    verbose: bool = True


# -- small helpers --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _descendants(pid: int) -> list[int]:
    """Every process under `pid` (children, their children...), from /proc."""
    children: dict[int, list[int]] = defaultdict(list)
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    children[int(f.read().rsplit(")", 1)[1].split()[1])].append(int(d))
            except (OSError, IndexError, ValueError):
                continue
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _prices(sym: int, idx: np.ndarray) -> np.ndarray:
    """Deterministic prices of symbol `sym` at tick indexes `idx`: calm and wild stretches."""
    h = (idx * 2654435761 + sym * 40503) % 1_000_003
    noise = (h / 1_000_003.0 - 0.5) * 3.46  # unit variance, uniform
    vol = np.where((idx // 4000 + sym) % 3 == 0, 0.004, 0.0007)
    drift = 0.05 * np.sin(idx / 7000.0 + sym)
    return 100.0 * (1 + sym) * np.exp(drift + vol * noise)


def _tick_body(symbol: str, i: int, price: float) -> bytes:
    return b'{"symbol":"%s","t":%.2f,"price":%.6f}' % (symbol.encode(), T0 + i * DT, price)


BAD_KINDS = (
    "frames",
    "noise",
    "topic",
    "json",
    "random",
    "bad_value",
    "missing_field",
    "oversized",
)


def _bad_message(kind: str, rng: random.Random) -> list[bytes]:
    if kind == "frames":  # one frame (starting with the topic, or ZeroMQ's filter drops it)
        return [b"tick" + rng.randbytes(rng.randint(0, 40))]
    if kind == "noise":  # random bytes: ZeroMQ's subscription filter drops them (not counted)
        return [b"\x00" + rng.randbytes(rng.randint(0, 40)), rng.randbytes(8)]
    if kind == "topic":
        return [b"ticker", b'{"symbol":"X","t":1,"price":1}']
    if kind == "json":
        return [b"tick", b'{"symbol": "X", "t": NaN, "price": 1}']
    if kind == "random":
        return [b"tick", b"\xff" + rng.randbytes(rng.randint(1, 200))]
    if kind == "bad_value":
        return [b"tick", b'{"symbol":"BAD","t":1700000000.0,"price":-3}']
    if kind == "missing_field":
        return [b"tick", b'{"symbol":"BAD","price":3}']
    return [b"tick", b"{" + b" " * 5000 + b"}"]


# -- the producer (its own process) ---------------------------------------------------------------


def producer_main(feed: str, pub: str, rate: float, symbols: int, bad_every: int, seed: int) -> int:
    """Send ticks to `feed` at `rate`, commands on stdin (JSON lines), counts on stdout.

    Commands: pause; resume {from: {symbol: index}} (waits for the feed's subscription);
    bad {on}; stop (prints the counts and exits).
    """
    rng = random.Random(seed)
    ctx = zmq.Context()
    out = ctx.socket(zmq.XPUB)  # XPUB: the feed's subscription tells us it is listening
    out.sndhwm = 0  # never drop here: a slow service slows us down (see the pacing)
    out.connect(feed)
    mon = ctx.socket(zmq.SUB)  # the service's metrics (not a heartbeat subscriber)
    mon.connect(pub)
    mon.subscribe(b"metrics")
    names = [f"S{k}" for k in range(symbols)]
    nxt = {s: 0 for s in names}  # next tick index per symbol
    sent_good = 0
    sent_run = 0  # messages sent since the last resume (compared with feed.received)
    received = 0
    bad: Counter[str] = Counter()
    repeats = 0  # well-formed old ticks (the tracker skips them)
    subscribed = False
    paused = False
    bad_on = True
    cmds: list[dict[str, Any]] = []
    lock = threading.Lock()

    def read_cmds() -> None:
        for line in sys.stdin:
            with lock:
                cmds.append(json.loads(line))

    threading.Thread(target=read_cmds, daemon=True).start()
    batch_s = 0.01
    t_next = time.monotonic()
    start = time.monotonic()
    while True:
        with lock:
            todo, cmds[:] = list(cmds), []
        for c in todo:
            if c["cmd"] == "pause":
                paused = True
            elif c["cmd"] == "resume":
                for s, i in c.get("from", {}).items():
                    nxt[s] = int(i)
                paused, sent_run, received = False, 0, 0
                t_next = time.monotonic()
            elif c["cmd"] == "bad":
                bad_on = bool(c["on"])
                # where this run stood: once the service has received `sent_run` messages, its
                # metrics have counted every malformed one sent before this point
                print(json.dumps({"sent_run": sent_run, "bad": bad}), flush=True)
            elif c["cmd"] == "stop":
                print(json.dumps({"next": nxt, "bad": bad, "repeats": repeats, "good": sent_good,
                                  "sent_run": sent_run, "seconds": time.monotonic() - start}),
                      flush=True)  # fmt: skip
                # what is still queued here (up to 2 s of ticks on a loaded machine) goes out
                # first: it is counted as sent (linger=0 would drop it, and the accounting
                # would find those ticks undecoded and their malformed messages uncounted)
                out.close(linger=30_000)
                mon.close(linger=0)
                ctx.term()
                return 0
        while True:  # subscriptions (the feed binding, or going away)
            try:
                m = out.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            if m[1:] == b"tick":
                subscribed = m[0] == 1
        while True:
            try:
                _, body = mon.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            feed_stats = json.loads(body).get("feed")
            if feed_stats:
                received = int(feed_stats.get("received", 0))
        if paused or not subscribed:
            time.sleep(0.01)
            t_next = time.monotonic()
            continue
        if sent_run - received > 2 * rate:  # the service is >2 s behind: let it catch up
            time.sleep(0.01)
            t_next = time.monotonic()
            continue
        now = time.monotonic()
        if now < t_next:
            time.sleep(t_next - now)
        t_next += batch_s
        n = max(1, int(rate * batch_s))
        per = max(1, n // symbols)
        for k, s in enumerate(names):
            i0 = nxt[s]
            idx = np.arange(i0, i0 + per)
            ps = _prices(k, idx)
            for j, p in zip(idx.tolist(), ps.tolist(), strict=True):
                out.send_multipart([b"tick", _tick_body(s, j, p)])
            nxt[s] = i0 + per
            sent_good += per
            sent_run += per
            if bad_on and bad_every and rng.random() < per / bad_every:
                if rng.random() < 0.3 and i0 > 10:  # a repeat of an old tick: skipped
                    j = i0 - rng.randint(1, 10)
                    out.send_multipart(
                        [b"tick", _tick_body(s, j, float(_prices(k, np.array([j]))[0]))]
                    )
                    repeats += 1
                else:
                    kind = rng.choice(BAD_KINDS)
                    out.send_multipart(_bad_message(kind, rng))
                    bad[kind] += 1
                    if kind == "noise":
                        continue  # never reaches the service (see _bad_message)
                sent_run += 1


# -- the healthy raw subscriber (its own process) -------------------------------------------------


class _Env(msgspec.Struct):
    seq: int
    symbol: str | None = None
    t: float | None = None
    stream: str | None = None
    utterance: int | None = None
    label: str | None = None
    error: str | None = None
    state: Any = None  # a status's state (str); metrics have an object here
    session: str | None = None
    epoch: str | None = None
    detail: str | None = None


RING = 1 << 16  # delivered messages remembered per topic, to compare a repeat with


def subscriber_main(pub: str) -> int:
    """Read everything from `pub`; on 'finish' (stdin) wait for `stopped`, print the accounting."""
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.rcvhwm = 0  # queue here, never drop: this subscriber is slow only in CPU
    sub.connect(pub)
    sub.subscribe(b"")  # everything, heartbeats included: it counts for --wait-subscribers
    dec = msgspec.json.Decoder(_Env)
    expected: dict[bytes, int] = {}
    ring: dict[bytes, dict[int, Any]] = defaultdict(dict)
    gaps: Counter[str] = Counter()
    repeats: Counter[str] = Counter()
    conflicts: list[str] = []
    ticks: dict[str, bytearray] = {}  # per symbol: decodes delivered per tick index
    speech: list[list[Any]] = []  # [session, stream, utterance, label, error] as delivered
    statuses: list[list[Any]] = []
    metrics: dict[str, Any] = {}  # last metrics body per session
    sessions: list[str] = []
    stopped_sessions: set[str] = set()
    session = ""
    finish = threading.Event()

    def read_cmds() -> None:
        for line in sys.stdin:
            if json.loads(line)["cmd"] == "finish":
                finish.set()

    threading.Thread(target=read_cmds, daemon=True).start()
    deadline = math.inf
    strict = (b"speech", b"regime.")  # from seq 0: this subscriber is there from the start
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    while True:
        if finish.is_set() and deadline == math.inf:
            deadline = time.monotonic() + 30
        if finish.is_set() and (session in stopped_sessions or time.monotonic() > deadline):
            break
        if not poller.poll(100):
            continue
        for _ in range(10_000):
            try:
                topic, body = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            m = dec.decode(body)
            if topic == b"heartbeat":
                if m.session and m.session != session:
                    session = m.session
                    sessions.append(session)
                continue
            key: Any
            if topic.startswith(b"regime."):
                key = m.t
            elif topic == b"speech":
                key = (m.stream, m.utterance, m.label)
            else:
                key = body
            exp = expected.get(topic)
            if exp is None:
                exp = 0 if topic.startswith(strict) else m.seq
            name = topic.decode()
            if m.seq < exp:
                repeats[name] += 1
                old = ring[topic].get(m.seq)
                if old is not None and old != key and not topic.startswith((b"metrics", b"status")):
                    conflicts.append(f"{name} seq {m.seq}: {old!r} then {key!r}")
                continue
            if m.seq > exp:
                gaps[name] += m.seq - exp
            expected[topic] = m.seq + 1
            r = ring[topic]
            r[m.seq] = key
            if len(r) > RING:
                for s in list(r)[: RING // 4]:
                    del r[s]
            if topic.startswith(b"regime."):
                assert m.symbol is not None and m.t is not None
                i = round((m.t - T0) / DT)
                a = ticks.setdefault(m.symbol, bytearray())
                if i >= len(a):
                    a.extend(bytes(i + 1 - len(a) + 65536))
                a[i] = min(255, a[i] + 1)
            elif topic == b"speech":
                speech.append([session, m.stream, m.utterance, m.label, m.error])
            elif topic == b"status":
                statuses.append([m.session, m.state, m.detail])
                if m.state == "stopped" and m.session:
                    stopped_sessions.add(m.session)
                if m.session and m.session != session:
                    session = m.session
                    sessions.append(session)
            elif topic == b"metrics" and m.session:
                metrics[m.session] = json.loads(body)
    per_symbol = {}
    for s, a in ticks.items():
        arr = np.frombuffer(bytes(a), dtype=np.uint8)
        nz = np.nonzero(arr)[0]
        top = int(nz[-1]) if nz.size else -1
        per_symbol[s] = {
            "last": top,
            "missing": [int(i) for i in np.nonzero(arr[1 : top + 1] == 0)[0][:20] + 1],
            "n_missing": int(np.count_nonzero(arr[1 : top + 1] == 0)),
            "n_double": int(np.count_nonzero(arr > 1)),
            "decodes": int(arr.sum()),
        }
    print(json.dumps({
        "gaps": gaps, "repeats": repeats, "conflicts": conflicts[:20],
        "n_conflicts": len(conflicts), "ticks": per_symbol, "speech": speech,
        "statuses": statuses, "metrics": metrics, "sessions": sessions,
        "stopped": sorted(stopped_sessions),
    }), flush=True)  # fmt: skip
    sub.close(linger=0)
    ctx.term()
    return 0


# -- the virtual microphone -----------------------------------------------------------------------

_PULSE = """\
load-module module-native-protocol-unix auth-anonymous=1
load-module module-null-sink sink_name=virt_sink rate=16000 channels=1 format=s16le
load-module module-remap-source master=virt_sink.monitor source_name=virtmic
load-module module-null-source source_name=silence rate=16000 channels=1 format=s16le
load-module module-loopback source=silence sink=virt_sink latency_msec=10
set-default-sink virt_sink
set-default-source virtmic
"""


class VirtualMic:
    """A private PulseAudio daemon whose null sink is the default microphone (see
    /work/shared/notes/virtual-mic.md and tests/live/conftest.py)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        run = root / "run"
        run.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(run, 0o700)
        self.config = root / "virtual-mic.pa"
        self.config.write_text(_PULSE)
        (root / "client.conf").write_text("autospawn = no\n")
        self.env = {**os.environ, "HOME": str(root), "XDG_RUNTIME_DIR": str(run),
                    "PULSE_SERVER": f"unix:{run}/pulse/native",
                    "PULSE_CLIENTCONFIG": str(root / "client.conf")}  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, settle: float = 1.0) -> None:
        pa = shutil.which("pulseaudio")
        if pa is None:
            raise SystemExit("soak: pulseaudio is not installed (give --no-mic to leave it out)")
        with open(self.root / "pulseaudio.log", "ab") as log:
            self.proc = subprocess.Popen(
                [pa, "-n", "-F", str(self.config), "--exit-idle-time=-1", "--daemonize=no",
                 "--use-pid-file=no"], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 20
        while subprocess.run(["pactl", "info"], env=self.env, capture_output=True).returncode:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("soak: PulseAudio did not start")
            time.sleep(0.05)
        time.sleep(settle)

    def kill(self) -> None:
        p, self.proc = self.proc, None
        if p is not None:
            p.kill()
            p.wait(5)

    def stop(self) -> None:
        p, self.proc = self.proc, None
        if p is not None:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


# -- audio ----------------------------------------------------------------------------------------


def make_wavs(folder: Path, streams: int, seconds: float, seed: int) -> dict[str, list[float]]:
    """`streams` WAVs of about `seconds` each, words apart; {path: each word's end (s)}."""
    from streamer.audio.synth import HELDOUT_VOICES, synthesize
    from streamer.audio.wav import write_wav

    clips = [synthesize(w, HELDOUT_VOICES[i % len(HELDOUT_VOICES)], RATE) * 0.5
             for i, w in enumerate(WORDS)]  # fmt: skip
    rng = np.random.default_rng(seed)
    out = {}
    for k in range(streams):
        parts = [np.zeros(4000, np.float32)]
        ends: list[float] = []
        total = 4000
        while total < seconds * RATE:
            c = clips[int(rng.integers(len(clips)))]
            gap = np.zeros(int(RATE * rng.uniform(0.7, 1.5)), np.float32)
            parts += [c.astype(np.float32), gap]
            ends.append((total + c.size) / RATE)
            total += c.size + gap.size
        path = folder / f"stream{k}.wav"
        write_wav(path, np.concatenate(parts), RATE)
        out[str(path)] = ends
    return out


# -- the driver -----------------------------------------------------------------------------------


class _Child:
    """A child process of this script (`--role`), JSON lines in and out."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = open(log, "wb")  # noqa: SIM115 (closed in `close`)
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()

    def line(self) -> dict[str, Any]:
        """The next JSON line the child prints (blocking: run it in an executor)."""
        assert self.proc.stdout is not None
        text = self.proc.stdout.readline()
        if not text:
            raise RuntimeError(f"a soak child ended early (exit {self.proc.poll()})")
        return dict(json.loads(text))

    def result(self, timeout: float) -> dict[str, Any]:
        out, _ = self.proc.communicate(timeout=timeout)
        self.log.close()
        lines = out.decode().strip().splitlines()
        if not lines:
            raise RuntimeError(f"a soak child gave no result (exit {self.proc.returncode})")
        return dict(json.loads(lines[-1]))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(Exception):
            self.log.close()


class Soak:
    def __init__(self, cfg: SoakConfig, work: Path) -> None:
        self.cfg = cfg
        self.work = work
        self.rng = random.Random(cfg.seed)
        self.ctx = zmq.Context()
        port = _free_port()
        self.pub = f"tcp://127.0.0.1:{port}"
        self.snap = f"tcp://127.0.0.1:{port + 1}"
        self.feed = f"tcp://127.0.0.1:{_free_port()}"
        self.state = work / "state"
        self.bank = work / "bank.npz"
        self.service: subprocess.Popen[bytes] | None = None
        self.runs: list[dict[str, Any]] = []  # per service process: pid, start, rss samples
        self.mic: VirtualMic | None = None
        self.counts: Counter[str] = Counter()  # faults done
        self.notes: list[str] = []
        self.metrics: dict[str, Any] = {}  # the latest metrics body (monitor)
        self.statuses: list[dict[str, Any]] = []
        self.churners: list[tuple[zmq.Socket[Any], str, float]] = []
        self.snapshot_replies: Counter[str] = Counter()
        self.t_start = 0.0

    def say(self, text: str) -> None:
        if self.cfg.verbose:
            print(f"[{time.monotonic() - self.t_start:7.1f} s] {text}", file=sys.stderr, flush=True)

    # -- the service --

    def start_service(self, wavs: list[str]) -> None:
        c = self.cfg
        argv = [sys.executable, "-m", "streamer", "serve", *wavs,
                "--tick-feed", self.feed, "--pub", self.pub, "--state", str(self.state),
                "--checkpoint-every", "1", "--hwm", str(c.hwm),
                "--workers", str(c.workers), "--watch-bank", "0.5", "--bank", str(self.bank),
                "--wait-subscribers", "2", "--wait-timeout", "60", "--metrics-interval", "1",
                "--heartbeat", "0.5", "--speed", str(c.speed), "--warmup", str(c.warmup),
                "--refit-every", str(c.refit_every), "--drain-timeout", "10"]  # fmt: skip
        if c.policy is not None:
            argv += ["--policy", c.policy]
        # (a hung service, sent SIGABRT, prints every thread's stack: PYTHONFAULTHANDLER)
        env = {**(self.mic.env if self.mic else os.environ), "PYTHONPATH": str(ROOT),
               "PYTHONFAULTHANDLER": "1"}  # fmt: skip
        if self.mic:
            argv.append("--mic")
        n = len(self.runs)
        log = open(self.work / f"serve{n}.log", "wb")  # noqa: SIM115
        self.service = subprocess.Popen(argv, cwd=ROOT, env=env, stderr=log)
        log.close()
        self.runs.append({"pid": self.service.pid, "start": time.monotonic(), "rss": []})
        self.say(f"service {n} started (pid {self.service.pid})")

    def monitor(self) -> zmq.Socket[Any]:
        s = self.ctx.socket(zmq.SUB)
        s.connect(self.pub)
        s.subscribe(b"metrics")  # not heartbeats: the monitor is no subscriber to wait for
        s.subscribe(b"status")
        return s

    def read_monitor(self, mon: zmq.Socket[Any]) -> None:
        while True:
            try:
                topic, body = mon.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            b = json.loads(body)
            if topic == b"metrics":
                self.metrics = b
            else:
                self.statuses.append(b)

    async def wait_running(
        self, mon: zmq.Socket[Any], session_not: str | None, timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.read_monitor(mon)
            for s in self.statuses:
                if s["state"] == "running" and s["session"] != session_not:
                    return
            if self.service is not None and self.service.poll() is not None:
                raise RuntimeError(f"the service exited ({self.service.returncode}) at start")
            await asyncio.sleep(0.05)
        raise RuntimeError("the service did not start running in time")

    def sample_rss(self) -> None:
        if self.service is None or self.service.poll() is not None:
            return
        r = _rss_mb(self.service.pid)
        if r is not None:
            run = self.runs[-1]
            run["rss"].append((time.monotonic() - run["start"], r))

    # -- faults --

    def kill_worker(self) -> None:
        pids = ((self.metrics.get("speech") or {}).get("pool") or {}).get("workers") or []
        if not pids:
            self.notes.append("no recognizer worker pid in the metrics to kill")
            return
        pid = self.rng.choice(pids)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            self.counts["worker_kills"] += 1
            self.say(f"killed recognizer worker {pid}")

    def churn(self, now: float) -> None:
        keep = []
        for sock, kind, until in self.churners:
            if now >= until:
                sock.close(linger=0)
                self.counts[f"churn_{kind}_left"] += 1
            else:
                keep.append((sock, kind, until))
                if kind == "reader":
                    for _ in range(2000):
                        try:
                            sock.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
        self.churners = keep

    def join_churner(self, now: float) -> None:
        kind = self.rng.choice(("reader", "staller", "staller", "regime_staller"))
        s = self.ctx.socket(zmq.SUB)
        s.rcvhwm = 1000
        s.connect(self.pub)
        s.subscribe(b"regime" if kind == "regime_staller" else b"")
        if kind == "regime_staller":
            s.subscribe(b"heartbeat")
        self.churners.append((s, kind, now + self.rng.uniform(1.0, 3 * self.cfg.churn_every)))
        self.counts[f"churn_{kind}"] += 1

    def close_churners(self) -> None:
        for sock, _, _ in self.churners:
            sock.close(linger=0)
        self.churners = []

    def bad_snapshot(self, dealer: zmq.Socket[Any]) -> None:
        kind = self.rng.choice(("random", "json", "version", "topics", "frames", "good"))
        msg = {
            "random": [self.rng.randbytes(self.rng.randint(1, 300))],
            "json": [b"snapshot", b"{not json"],
            "version": [b"snapshot", b'{"v": 7, "topics": []}'],
            "topics": [b"snapshot", b'{"v": 1, "topics": "regime"}'],
            "frames": [b"nonsense", b"{}", b"\x00\x01"],
            "good": [b"snapshot", b'{"v": 1, "topics": ["status"]}'],
        }[kind]
        dealer.send_multipart(msg)
        self.counts["snapshot_" + ("good" if kind == "good" else "bad")] += 1

    def read_snapshot_replies(self, dealer: zmq.Socket[Any]) -> None:
        while True:
            try:
                frames = dealer.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.snapshot_replies[frames[0].decode(errors="replace")] += 1

    def swap_bank(self, good: Path, broken: bool) -> None:
        if broken:
            tmp = self.work / "bank.tmp"
            tmp.write_bytes(b"PK\x03\x04 not a bank" + self.rng.randbytes(100))
            os.replace(tmp, self.bank)
            self.counts["bank_broken"] += 1
            time.sleep(1.2)  # the watcher looks every 0.5 s
        tmp = self.work / "bank.tmp"
        shutil.copy(good, tmp)
        os.replace(tmp, self.bank)
        self.counts["bank_swaps"] += 1
        self.say("bank swapped" + (" (after a broken one)" if broken else ""))

    def mic_break(self) -> None:
        assert self.mic is not None
        self.mic.kill()
        self.counts["mic_losses"] += 1
        self.say("microphone lost (PulseAudio killed)")
        time.sleep(1.5)
        self.mic.start(settle=0.5)
        self.say("PulseAudio started again")


async def _soak(cfg: SoakConfig, work: Path) -> dict[str, Any]:
    from streamer.paths import default_bank_path

    s = Soak(cfg, work)
    s.t_start = time.monotonic()
    kill_at = cfg.sigkill_at * cfg.duration
    # audio: long enough to be in flight at the kill, short enough for the restarted run to finish
    audio_s = cfg.speed * max(10.0, 0.75 * (cfg.duration - kill_at) - 5)
    wavs = make_wavs(work, cfg.streams, audio_s, cfg.seed)
    good_bank = work / "good-bank.npz"
    shutil.copy(default_bank_path(), good_bank)
    shutil.copy(good_bank, s.bank)
    s.say(f"{len(wavs)} streams of {audio_s:.0f} s audio ({sum(map(len, wavs.values()))} words)")
    if cfg.mic:
        s.mic = VirtualMic(work / "pulse")
        s.mic.start()
    prod = _Child(["--role", "producer", "--feed", s.feed, "--pub", s.pub, "--rate",
                   str(cfg.rate), "--symbols", str(cfg.symbols), "--bad-every",
                   str(cfg.bad_every), "--seed", str(cfg.seed)], work / "producer.log")  # fmt: skip
    sub = _Child(["--role", "subscriber", "--pub", s.pub], work / "subscriber.log")
    mon = s.monitor()
    dealer = s.ctx.socket(zmq.DEALER)
    dealer.connect(s.snap)
    client_words: list[tuple[str, str, int]] = []  # (session, stream, utterance) via the client
    client_gaps = 0
    client_stop = asyncio.Event()

    async def client() -> None:
        nonlocal client_gaps
        from streamer.net.subscriber import Subscriber

        async with Subscriber(s.pub, ["speech", "status"], context=s.ctx) as c:
            async for msg in c:
                if msg.gap:
                    client_gaps += msg.gap
                if msg.kind == "speech" and not msg.snapshot:
                    client_words.append(
                        (c.session or "", msg.body["stream"], msg.body["utterance"])
                    )
                if msg.kind == "status" and msg.body["state"] == "stopped" and client_stop.is_set():
                    return

    client_task = asyncio.create_task(client())
    result: dict[str, Any] = {"config": {k: str(v) for k, v in dataclasses.asdict(cfg).items()}}
    killed: dict[str, Any] = {}
    try:
        s.start_service(list(wavs))
        await s.wait_running(mon, None, 90)
        first_session = s.statuses[-1]["session"]
        t_run = time.monotonic()
        s.runs[-1]["running"] = t_run
        s.say("running")
        next_kill = t_run + min(cfg.kill_every, kill_at / 2)
        next_churn = t_run + cfg.churn_every
        next_bank = t_run + cfg.bank_every
        next_mic = t_run + (min(cfg.mic_every, 0.65 * cfg.duration) if cfg.mic else math.inf)
        next_snap = t_run + cfg.snapshot_every
        next_rss = t_run
        sigkill_done = False
        end = t_run + cfg.duration
        loop = asyncio.get_running_loop()
        while time.monotonic() < end:
            now = time.monotonic()
            s.read_monitor(mon)
            s.read_snapshot_replies(dealer)
            s.churn(now)
            if now >= next_rss:
                s.sample_rss()
                next_rss = now + 1.0
            if now >= next_churn:
                s.join_churner(now)
                next_churn = now + cfg.churn_every
            if now >= next_kill:
                s.kill_worker()
                next_kill = now + cfg.kill_every
            if now >= next_snap:
                s.bad_snapshot(dealer)
                next_snap = now + cfg.snapshot_every
            if now >= next_bank:
                await loop.run_in_executor(
                    None, s.swap_bank, good_bank, s.counts["bank_swaps"] % 2 == 1
                )
                next_bank = time.monotonic() + cfg.bank_every
            if now >= next_mic:
                await loop.run_in_executor(None, s.mic_break)
                next_mic = time.monotonic() + cfg.mic_every
            if not sigkill_done and now >= t_run + kill_at:
                sigkill_done = True
                killed = await _sigkill_and_restart(s, prod, mon, list(wavs), first_session)
                end += killed["restart_s"]  # the restart's time is not soak time
            await asyncio.sleep(0.02)
        # the end: let the restarted run's audio finish, then stop everything cleanly
        s.close_churners()
        prod.send(cmd="stop")
        produced = prod.result(60)
        (work / "produced.json").write_text(json.dumps(produced))
        s.say(f"producer stopped: {produced['good']} good ticks in {produced['seconds']:.0f} s")
        deadline = time.monotonic() + max(60.0, audio_s / cfg.speed)
        while time.monotonic() < deadline:
            s.read_monitor(mon)
            s.read_snapshot_replies(dealer)
            s.sample_rss()
            sp = s.metrics.get("speech") or {}
            fd = s.metrics.get("feed") or {}
            streams = sp.get("streams") or {}
            done_audio = all(streams.get(w, 0) >= len(e) for w, e in wavs.items())
            if done_audio and fd.get("received", -1) >= produced["sent_run"] \
                    and s.metrics.get("session") != first_session:  # fmt: skip
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.5)  # a last metrics message, and the decodes of the last ticks
        s.sample_rss()
        client_stop.set()
        sub.send(cmd="finish")
        assert s.service is not None
        s.service.send_signal(signal.SIGTERM)
        try:
            rc = await loop.run_in_executor(None, s.service.wait, 60)
        except subprocess.TimeoutExpired:
            s.notes.append(
                f"the service hung after SIGTERM: stacks in {s.work}/serve{len(s.runs) - 1}.log"
            )
            s.service.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
            rc = await loop.run_in_executor(None, s.service.wait, 30)
        s.say(f"service stopped (exit code {rc})")
        heard = sub.result(60)
        (work / "heard.json").write_text(json.dumps(heard))
        (work / "runs.json").write_text(json.dumps(s.runs))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(client_task, 10)
        s.read_monitor(mon)
        s.read_snapshot_replies(dealer)
        result.update(
            _account(s, cfg, wavs, produced, heard, killed, rc, client_words, client_gaps)
        )
    finally:
        client_task.cancel()
        with contextlib.suppress(BaseException):
            await client_task
        if s.service is not None and s.service.poll() is None:
            s.service.kill()
            s.service.wait()
        prod.close()
        sub.close()
        s.close_churners()
        mon.close(linger=0)
        dealer.close(linger=0)
        if s.mic is not None:
            s.mic.stop()
        s.ctx.term()
    return result


async def _sigkill_and_restart(
    s: Soak, prod: _Child, mon: zmq.Socket[Any], wavs: list[str], first_session: str
) -> dict[str, Any]:
    """SIGKILL the service, restart it on the same --state; the producer resumes each
    symbol from its checkpointed tick (decode seq N is tick N + 1: the first has no return)."""
    from streamer.market.checkpoint import read_state
    from streamer.market.decoder import TrackerConfig

    s.close_churners()
    # malformed input stops a moment before the kill, so each run's metrics count all of its
    # own: the producer says how many messages it had sent up to there, and the service's
    # metrics that show that many received (`feed.received` counts every message taken, good
    # or not) hold every malformed one sent before it. Only valid ticks are then in flight
    # at the kill (those are sent again from the checkpoint).
    prod.send(cmd="bad", on=False)
    mark = await asyncio.get_running_loop().run_in_executor(None, prod.line)
    deadline = time.monotonic() + 60
    while ((s.metrics.get("feed") or {}).get("received", -1) < mark["sent_run"]
           or s.metrics.get("session") != first_session):  # fmt: skip
        if time.monotonic() > deadline:
            s.notes.append(
                f"the service had not received the {mark['sent_run']} messages sent before "
                f"the kill after 60 s ({(s.metrics.get('feed') or {}).get('received')})"
            )
            break
        await asyncio.sleep(0.05)
        s.read_monitor(mon)
    # (taken from the monitor, a subscriber of metrics alone: always up to date, unlike one
    # that reads 50k messages a second and may be behind when the process dies)
    dropped_before = dict(((s.metrics.get("feed") or {}).get("dropped")) or {})
    assert s.service is not None
    sp = (s.metrics.get("speech") or {}).get("streams") or {}
    before = {w: int(sp.get(w, 0)) for w in wavs}
    t_kill = time.monotonic()
    s.sample_rss()
    under = _descendants(s.service.pid)  # workers, fork servers: they must go with it
    s.service.kill()
    prod.send(cmd="pause")
    s.service.wait()
    s.counts["service_sigkill"] += 1
    run = s.runs[-1]
    audio_pos = (t_kill - run["running"]) * s.cfg.speed  # stream seconds replayed at the kill
    s.say(f"service SIGKILLed at {audio_pos:.1f} stream-seconds")
    cfg = TrackerConfig(warmup=s.cfg.warmup, refit_every=s.cfg.refit_every)
    seqs = read_state(s.state / "state.npz", cfg).extra["seqs"]
    resume = {f"S{k}": int(seqs.get(f"regime.S{k}", -1)) + 1 for k in range(s.cfg.symbols)}
    s.start_service(wavs)
    prod.send(cmd="resume", **{"from": resume})
    await s.wait_running(mon, first_session, 90)
    prod.send(cmd="bad", on=True)
    s.runs[-1]["running"] = time.monotonic()
    restart_s = time.monotonic() - t_kill
    s.say(f"restarted and running again after {restart_s:.1f} s")
    left = [p for p in under if _running(p)]
    for p in left:  # (they are ours to clean up)
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGKILL)
    return {"t_kill": t_kill, "audio_pos": audio_pos, "published_before": before,
            "resume": resume, "restart_s": restart_s, "seqs": seqs,
            "under": len(under), "left_behind": left, "dropped_before": dropped_before}  # fmt: skip


def _account(
    s: Soak,
    cfg: SoakConfig,
    wavs: dict[str, list[float]],
    produced: dict[str, Any],
    heard: dict[str, Any],
    killed: dict[str, Any],
    rc: int,
    client_words: list[tuple[str, str, int]],
    client_gaps: int,
) -> dict[str, Any]:
    """Every check, as (name, ok, figure)."""
    checks: list[tuple[str, bool, str]] = []

    def check(name: str, ok: bool, figure: Any) -> None:
        checks.append((name, bool(ok), str(figure)))

    sessions = heard["sessions"]
    check("service sessions seen (one SIGKILL, one restart)", len(sessions) == 2, sessions)
    check("service exit code after SIGTERM", rc == 0, rc)
    left = killed.get("left_behind", [])
    check("processes the SIGKILLed service left behind (after its restart)", not left,
          f"{len(left)} of {killed.get('under')} under it")  # fmt: skip
    # -- audio --
    by_session: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    errors = 0
    for sess, stream, utt, _label, error in heard["speech"]:
        by_session[sess][stream].append(utt)
        errors += error is not None
    lost_in_flight = 0
    holes = dups = 0
    complete = True
    for i, sess in enumerate(sessions):
        for w, ends in wavs.items():
            n = len(ends)
            got = by_session[sess][w]
            c = Counter(got)
            dups += sum(v - 1 for v in c.values() if v > 1)
            k = max(got) + 1 if got else 0
            holes += sum(1 for u in range(k) if u not in c)
            if i == len(sessions) - 1:
                complete &= k == n
            else:
                lost_in_flight += max(0, sum(e <= killed["audio_pos"] for e in ends) - k)
    words_total = sum(map(len, wavs.values()))
    check("utterances of the final run, each exactly one event", complete and not dups,
          f"{sum(len(by_session[sessions[-1]][w]) for w in wavs)} of {words_total}")  # fmt: skip
    check("utterance events duplicated", dups == 0, dups)
    check("utterance events missing (holes)", holes == 0, holes)
    check("audio in flight at the SIGKILL (lost, counted)", True, f"~{lost_in_flight} utterance(s)")
    check("recognition errors (a worker killed twice on one utterance)", True, errors)
    client_keys = Counter(client_words)
    raw_keys = Counter((a, b, c) for a, b, c, _, _ in heard["speech"])
    check("the Subscriber client got each word exactly once, as the raw one did",
          client_keys == raw_keys and max(client_keys.values(), default=1) == 1 and not client_gaps,
          f"{sum(client_keys.values())} words, {client_gaps} lost")  # fmt: skip
    # -- ticks --
    lost = double = 0
    for k in range(cfg.symbols):
        sym = f"S{k}"
        sent = int(produced["next"][sym])
        t = heard["ticks"].get(sym, {"last": -1, "n_missing": 0, "n_double": 0})
        lost += t["n_missing"] + max(0, sent - 1 - t["last"])
        double += t["n_double"]
    check("valid ticks without a decode", lost == 0, lost)
    check("ticks decoded twice (after de-duplication)", double == 0, double)
    valid = produced["good"]
    check("valid ticks sent (incl. resent after the restart)", True, valid)
    check("repeats of old ticks sent (skipped by the trackers)", True, produced["repeats"])
    # -- subscribers --
    gaps = heard["gaps"]
    reg_gaps = sum(v for t, v in gaps.items() if t.startswith(("regime", "speech")))
    check("healthy subscriber: seq gaps on regime and speech", reg_gaps == 0, gaps or 0)
    check("healthy subscriber: repeated seq with other content", heard["n_conflicts"] == 0,
          f"{heard['n_conflicts']} {heard['conflicts'][:3]}")  # fmt: skip
    check("healthy subscriber: repeated seqs dropped (after the restart)", True,
          sum(heard["repeats"].values()))  # fmt: skip
    from streamer.config import PublisherConfig

    want = cfg.policy or PublisherConfig().policy
    pols = [(heard["metrics"].get(x) or {}) for x in sessions]
    check(f"publishing policy {want}: stalls / recoveries / dropped for all, per run",
          all(m.get("publishing") == want for m in pols),
          [f"{m.get('publishing')}: {m.get('stalls')} / {m.get('recoveries')} / "
           f"{sum((m.get('dropped') or {}).values())}" for m in pols])  # fmt: skip
    # -- bad input, per service run: the metrics of each session --
    final = heard["metrics"].get(sessions[-1], {}) if sessions else {}
    bad_sent = sum(n for k, n in produced["bad"].items() if k != "noise")
    counted = sum(killed.get("dropped_before", {}).values())  # the killed run's
    fd = final.get("feed") or {}
    counted += sum((fd.get("dropped") or {}).values())
    check("malformed feed messages counted by the service (both runs)",
          counted == bad_sent,
          f"{counted} of {bad_sent} sent {dict(produced['bad'])}")  # fmt: skip
    snap_bad = s.counts["snapshot_bad"]
    check("bad snapshot requests answered or counted", True,
          f"{snap_bad} sent; replies {dict(s.snapshot_replies)}")  # fmt: skip
    # -- faults the service saw --
    pool = (final.get("speech") or {}).get("pool") or {}
    check("recognizer workers killed / crashes the pool saw (final run)", True,
          f"{s.counts['worker_kills']} / {pool.get('crashes')}")  # fmt: skip
    statuses = heard["statuses"]
    details = [d or "" for _, _, d in statuses]
    reloads = sum("bank reloaded" in d for d in details)
    check(
        "bank swaps seen by the service",
        reloads >= 1,
        f"{s.counts['bank_swaps']} swaps, {reloads} reloaded, "
        f"{sum('bank' in d and 'reloaded' not in d for d in details)} other bank events",
    )
    if cfg.mic:
        lost_ev = sum("microphone lost" in d for d in details)
        back = sum("microphone restored" in d for d in details)
        check(
            "microphone lost and restored",
            s.counts["mic_losses"] == 0 or (lost_ev and back),
            f"{s.counts['mic_losses']} losses; status: {lost_ev} lost, {back} restored",
        )
    resumed = [d for sess, st, d in statuses if sess == sessions[-1] and d and "resumed" in d]
    check("the restart resumed from the state", bool(resumed), resumed[:1])
    # -- RSS --
    growth = []
    for run in s.runs:  # from the warm-up's end (seconds after `running`) to the run's end
        t_run = run.get("running", run["start"]) - run["start"]
        warm = [r for t, r in run["rss"] if t >= t_run + cfg.rss_warmup]
        if len(warm) >= 5:
            growth.append(round(warm[-1] - warm[0], 1))
    check(f"service RSS growth after {cfg.rss_warmup:.0f} s of warm-up (MB, per run "
          f"long enough, limit {cfg.rss_limit})", growth and max(growth) <= cfg.rss_limit,
          growth)  # fmt: skip
    peaks = [round(max((r for _, r in run["rss"]), default=0), 1) for run in s.runs]
    check("service RSS peak (MB, per run)", True, peaks)
    tracebacks = 0
    for i in range(len(s.runs)):
        text = (s.work / f"serve{i}.log").read_text(errors="replace")
        tracebacks += text.count("Traceback")
    check("tracebacks on the service's stderr", tracebacks == 0, tracebacks)
    return {"checks": checks, "ok": all(ok for _, ok, _ in checks),
            "faults": dict(s.counts), "notes": s.notes,
            "rate": produced["good"] / max(1e-9, produced["seconds"])}  # fmt: skip


def run_soak(cfg: SoakConfig) -> dict[str, Any]:
    """Run the soak; the accounting (``result["ok"]``, ``result["checks"]``)."""
    if cfg.workdir is not None:
        cfg.workdir.mkdir(parents=True, exist_ok=True)
        return asyncio.run(_soak(cfg, cfg.workdir))
    with tempfile.TemporaryDirectory(prefix="soak-") as d:
        return asyncio.run(_soak(cfg, Path(d)))


def print_result(result: dict[str, Any], out: IO[str] = sys.stdout) -> None:
    print(f"\nsoak: {'PASS' if result['ok'] else 'FAIL'}", file=out)
    w = max(len(n) for n, _, _ in result["checks"])
    for name, ok, fig in result["checks"]:
        print(f"  {'ok  ' if ok else 'FAIL'} {name:<{w}}  {fig}", file=out)
    print(f"  faults: {result['faults']}", file=out)
    print(f"  tick rate offered: {result['rate']:.0f}/s", file=out)
    for n in result["notes"]:
        print(f"  note: {n}", file=out)
    with contextlib.suppress(OSError):
        print(f"  load average (1, 5, 15 min): {os.getloadavg()}", file=out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--role", choices=("producer", "subscriber"), help=argparse.SUPPRESS)
    ap.add_argument("--feed", help=argparse.SUPPRESS)
    ap.add_argument("--pub", help=argparse.SUPPRESS)
    d = SoakConfig()
    ap.add_argument("--duration", type=float, default=d.duration, help="seconds (default 1200)")
    ap.add_argument("--rate", type=float, default=d.rate, help="ticks per second offered")
    ap.add_argument("--symbols", type=int, default=d.symbols)
    ap.add_argument("--streams", type=int, default=d.streams, help="WAV audio streams")
    ap.add_argument("--speed", type=float, default=d.speed, help="WAV replay speed")
    ap.add_argument("--kill-every", type=float, default=d.kill_every)
    ap.add_argument("--churn-every", type=float, default=d.churn_every)
    ap.add_argument("--bank-every", type=float, default=d.bank_every)
    ap.add_argument("--mic-every", type=float, default=d.mic_every)
    ap.add_argument("--no-mic", action="store_true", help="leave out the PulseAudio microphone")
    ap.add_argument("--bad-every", type=int, default=d.bad_every)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument(
        "--policy",
        choices=("fair", "lossless", "lossy"),
        help="the service's publishing policy (default: the service's own, fair)",
    )
    ap.add_argument("--workdir", type=Path, help="keep logs and files here")
    a = ap.parse_args(argv)
    if a.role == "producer":
        return producer_main(a.feed, a.pub, a.rate, a.symbols, a.bad_every, a.seed)
    if a.role == "subscriber":
        return subscriber_main(a.pub)
    cfg = SoakConfig(duration=a.duration, rate=a.rate, symbols=a.symbols, streams=a.streams,
                     speed=a.speed, kill_every=a.kill_every, churn_every=a.churn_every,
                     bank_every=a.bank_every, mic=not a.no_mic, mic_every=a.mic_every,
                     bad_every=a.bad_every, seed=a.seed, workdir=a.workdir,
                     policy=a.policy)  # fmt: skip
    result = run_soak(cfg)
    print_result(result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
