"""`streamer demo`: the whole service on one machine with nothing else, and its score.

A newcomer needs to see the service work before trusting it, and to see it
honestly: the words are spoken by eSpeak NG voices the shipped bank never heard
in training (`HELDOUT_VOICES`), each at its own jittered speed, pitch and level,
with pauses between; the prices are a regime-switching series with known
regimes (`streamer.market.synthetic`), or a CSV of real closes re-timed to fit.

Both go through the real service (`streamer.service.Service`, the code behind
`streamer serve`): WAV replay -> segmenter -> recognizer pool, CSV replay ->
regime tracker, out through the ZeroMQ publisher on a loopback port. The demo
itself is just a subscriber (`streamer.net.Subscriber`) that prints what it
receives beside the truth it made, and ends with the score as its last line.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from streamer.audio.noise import make_noise, speech_rms
from streamer.audio.synth import HELDOUT_VOICES, Voice, synthesize
from streamer.audio.wav import CANONICAL_RATE, write_wav

__all__ = [
    "DemoOptions",
    "DemoWord",
    "PriceTruth",
    "Scoreboard",
    "demo_prices",
    "run_demo",
    "speak_stream",
]


@dataclass(frozen=True)
class DemoWord:
    """One word spoken into the demo stream; times in stream seconds."""

    label: str
    voice: str
    start: float
    end: float


def _jitter(v: Voice, rng: np.random.Generator) -> Voice:
    """The same speaker on another take: a little faster or slower, higher or lower."""
    rate = round(v.rate * float(rng.uniform(0.85, 1.15)))
    pitch = int(np.clip(v.pitch + int(rng.integers(-8, 9)), 0, 99))
    return replace(v, rate=rate, pitch=pitch)


def speak_stream(
    labels: Sequence[str],
    n_words: int = 42,
    *,
    seed: int = 0,
    rate: int = CANONICAL_RATE,
    voices: Sequence[Voice] = HELDOUT_VOICES,
    pause: tuple[float, float] = (0.35, 0.9),
    level_db: tuple[float, float] = (-32.0, -20.0),
    noise_db: float | None = -60.0,
    lead: float = 0.6,
) -> tuple[np.ndarray, list[DemoWord]]:
    """A stream of `n_words` words (each label equally often, shuffled) and where each one is.

    Voices take turns; each take gets its own speed and pitch jitter and speech
    level (dBFS). A faint pink noise floor (`noise_db` RMS, None for none) keeps
    the pauses from being digital silence, which no real microphone gives.
    """
    if not labels:
        raise ValueError("no words to speak")
    rng = np.random.default_rng(seed)
    order = np.concatenate(
        [rng.permutation(len(labels)) for _ in range(-(-n_words // len(labels)))]
    )[:n_words]
    pieces: list[np.ndarray] = [np.zeros(int(lead * rate), dtype=np.float32)]
    words: list[DemoWord] = []
    pos = pieces[0].size
    for i, k in enumerate(order):
        label = labels[int(k)]
        voice = _jitter(voices[i % len(voices)], rng)
        x = synthesize(label.replace("_", " "), voice, rate)
        rms = speech_rms(x)
        if rms > 0:
            gain = 10 ** (float(rng.uniform(*level_db)) / 20) / rms
            x = (x * min(gain, 0.9 / float(np.max(np.abs(x))))).astype(np.float32)
        words.append(DemoWord(label, voice.label(), pos / rate, (pos + x.size) / rate))
        gap = np.zeros(int(float(rng.uniform(*pause)) * rate), dtype=np.float32)
        pieces += [x, gap]
        pos += x.size + gap.size
    pieces.append(np.zeros(int(lead * rate), dtype=np.float32))
    audio = np.concatenate(pieces)
    if noise_db is not None:
        nrng = np.random.default_rng([seed, 17])
        audio = audio + (10 ** (noise_db / 20) * make_noise("pink", audio.size, rate, nrng))
    return audio.astype(np.float32), words


@dataclass(frozen=True, eq=False)
class PriceTruth:
    """The demo's price series: where the CSV is, its symbol, and its true regimes (if known)."""

    path: Path
    symbol: str
    ticks: int
    states: np.ndarray | None  # true regime per tick, 0 = calmest
    times: np.ndarray
    source: str


def demo_prices(
    folder: Path, duration: float, *, ticks: int = 800, seed: int = 0, csv_path: Path | None = None
) -> PriceTruth:
    """Write the demo's price CSV into `folder`, its ticks spread evenly over `duration` s.

    Synthetic by default (three regimes, known truth). A real CSV keeps its
    prices and order but is re-timed, so years of daily closes play in the
    time the words take (the decoder normalises returns by their time span,
    and an even spacing keeps their ratios).
    """
    from streamer.market.synthetic import RegimeSpec, simulate

    t0 = 1.7e9
    if csv_path is None:
        s = simulate(RegimeSpec.preset(2), ticks, seed=seed, noise="student")
        prices, states, symbol, source = s.prices, s.states, "SYN", "synthetic, 2 regimes"
    else:
        from streamer.market.ticks import read_csv

        series = read_csv(csv_path)
        prices = series.prices[-ticks:]
        states, symbol = None, csv_path.stem.split("_")[0].upper() or "CSV"
        source = f"{csv_path.name}, last {len(prices)} closes"
    n = len(prices)
    times = t0 + np.arange(n) * (duration / max(n - 1, 1))
    path = folder / f"{symbol}.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "price"])
        for t, p in zip(times, prices, strict=True):
            w.writerow([f"{t:.6f}", f"{p:.6f}"])
    return PriceTruth(path, symbol, n, states, times, source)


# -- the subscriber's side ----------------------------------------------------------------------


def _key(t: Any) -> float:
    """A tick time as a dict key that survives the CSV and JSON round trips."""
    return round(float(t), 3)


@dataclass
class Scoreboard:
    """Matches arriving word events to the words spoken, and keeps the regime tally."""

    truth: list[DemoWord]
    prices: PriceTruth | None = None
    used: set[int] = field(default_factory=set)
    correct: int = 0
    extra: int = 0
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    regime_ticks: int = 0
    regime_changes: int = 0
    regime_names: dict[int, str] = field(default_factory=dict)
    regime_last: str | None = None
    decoded: dict[float, int] = field(default_factory=dict)  # tick time -> filtered state
    smoothed: dict[float, int] = field(default_factory=dict)  # tick time -> fixed-lag state

    def word(self, body: dict[str, Any]) -> tuple[DemoWord | None, bool]:
        """The spoken word this event is (largest overlap not yet taken), and if it is right."""
        s, e = float(body["start"]), float(body["end"])
        best, best_ov = None, 0.0
        for i, w in enumerate(self.truth):
            if i in self.used:
                continue
            ov = min(e, w.end) - max(s, w.start)
            if ov > best_ov:
                best, best_ov = i, ov
        if best is None:
            self.extra += 1
            return None, False
        self.used.add(best)
        w = self.truth[best]
        ok = body.get("label") == w.label
        self.correct += ok
        if not ok:
            self.errors[(w.label, str(body.get("label")))] += 1
        return w, ok

    def missed(self) -> list[DemoWord]:
        return [w for i, w in enumerate(self.truth) if i not in self.used]

    def regime(self, body: dict[str, Any]) -> bool:
        """Count one decode; True when it is a change of regime worth a line."""
        self.regime_ticks += 1
        state = int(body["state"])
        self.regime_names[state] = str(body["regime"])
        self.decoded[_key(body["t"])] = state
        if body.get("smoothed_state") is not None and body.get("smoothed_t") is not None:
            self.smoothed[_key(body["smoothed_t"])] = int(body["smoothed_state"])
        changed = self.regime_last is not None and body["regime"] != self.regime_last
        self.regime_changes += changed
        self.regime_last = str(body["regime"])
        return changed

    @property
    def accuracy(self) -> float:
        return self.correct / len(self.truth) if self.truth else 0.0


@dataclass(frozen=True)
class DemoOptions:
    """What `streamer demo` was asked for."""

    words: int = 42
    speed: float = 4.0
    seed: int = 0
    bank: str | None = None
    prices: str | None = None  # a CSV, "none", or None: synthetic
    ticks: int = 800
    workers: int = 1


def _endpoint() -> str:
    return "tcp://127.0.0.1:*"


async def run_demo(opts: DemoOptions, out: TextIO | None = None) -> Scoreboard:
    """Speak, serve, subscribe, print (to stdout by default); the scoreboard.

    The last line printed is the word accuracy.
    """
    out = out or sys.stdout
    from streamer.config import (
        AudioConfig,
        Config,
        PublisherConfig,
        RecognizerConfig,
        ServiceConfig,
        TicksConfig,
    )
    from streamer.market.decoder import TrackerConfig
    from streamer.net.subscriber import Subscriber
    from streamer.paths import default_bank_path
    from streamer.service import Service
    from streamer.speech.bank import WordBank

    bank_path = Path(opts.bank) if opts.bank else default_bank_path()
    labels = WordBank.load(bank_path).labels

    def say(line: str = "") -> None:
        out.write(line + "\n")
        out.flush()

    with tempfile.TemporaryDirectory(prefix="streamer-demo-") as tmp:
        folder = Path(tmp)
        audio, truth = speak_stream(labels, opts.words, seed=opts.seed)
        wav = folder / "words.wav"
        write_wav(wav, audio, CANONICAL_RATE)
        duration = audio.size / CANONICAL_RATE
        prices: PriceTruth | None = None
        if opts.prices != "none":
            csv_in = Path(opts.prices) if opts.prices else None
            prices = demo_prices(
                folder, duration, ticks=opts.ticks, seed=opts.seed, csv_path=csv_in
            )
        config = Config(
            service=ServiceConfig(speed=opts.speed),
            audio=AudioConfig(files=(wav,)),
            recognizer=RecognizerConfig(bank=bank_path, workers=opts.workers),
            publisher=PublisherConfig(
                endpoint=_endpoint(), wait_subscribers=1, wait_timeout=30, metrics_interval=0
            ),
        )
        if prices is not None:
            config = dataclasses.replace(
                config,
                ticks=TicksConfig(files=(prices.path,), symbols=(prices.symbol,)),
                tracker=TrackerConfig(
                    warmup=max(50, min(200, prices.ticks // 4)),
                    refit_every=max(50, prices.ticks // 4),
                ),
            )
        service = Service(config)
        n_voices = len({w.voice.split("@")[0] for w in truth})
        say(
            f"streamer demo: {len(truth)} words ({', '.join(labels)}) spoken by {n_voices} "
            f"voices the bank never heard, {duration:.0f} s of audio"
            + (f", with {prices.ticks} prices ({prices.source})" if prices else "")
            + (f", at {opts.speed:g}x real time" if opts.speed else ", as fast as it goes")
        )
        board = Scoreboard(truth, prices)
        task = asyncio.create_task(service.run(), name="demo:service")
        try:
            while service.publisher is None or "*" in service.publisher.endpoint:
                if task.done():
                    await task
                    raise RuntimeError("the service stopped before publishing")
                await asyncio.sleep(0.01)
            endpoint = service.publisher.endpoint
            say(f"service publishing on {endpoint}; this subscriber prints what arrives:")
            say("")
            say(f"  {'time':>6}  {'said':<10} {'by (voice, speed, pitch)':<28} {'heard':<10} conf")
            async with Subscriber(endpoint, ["speech", "regime", "status"]) as sub:
                async for msg in sub:
                    if msg.kind == "speech":
                        _word_line(board, msg.body, say)
                    elif msg.kind == "regime":
                        board.regime(msg.body)
                    elif msg.kind == "status" and msg.body.get("state") == "stopped":
                        break
            code = await task
        finally:
            if not task.done():
                service.stop()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 10)
        for w in board.missed():
            say(f"  {w.start:6.2f}  {w.label:<10} {w.voice:<28} {'(nothing)':<10}  --   MISSED")
            board.errors[(w.label, "nothing")] += 1
        say("")
        if prices is not None:
            for line in _regime_summary(board, prices):
                say(line)
        if board.errors:
            errs = ", ".join(f"{a}->{b} x{n}" for (a, b), n in sorted(board.errors.items()))
            say(f"errors: {errs}")
        if board.extra:
            say(f"extra events (no word spoken there): {board.extra}")
        if code:
            say(f"service exit status {code}")
        say(
            f"score: {board.correct}/{len(truth)} words right = "
            f"{100.0 * board.accuracy:.1f}% word accuracy"
        )
    return board


def _word_line(board: Scoreboard, body: dict[str, Any], say: Any) -> None:
    w, ok = board.word(body)
    heard = body.get("label") or "(rejected)"
    conf = float(body.get("confidence", 0.0))
    if w is None:
        t = float(body["start"])
        say(f"  {t:6.2f}  {'(nothing)':<10} {'':<28} {heard:<10} {conf:4.2f}  EXTRA")
        return
    mark = "ok" if ok else "WRONG"
    say(f"  {w.start:6.2f}  {w.label:<10} {w.voice:<28} {heard:<10} {conf:4.2f}  {mark}")


def _strip(times: np.ndarray, states: dict[float, int] | np.ndarray, width: int) -> str:
    """One character per stretch of ticks: the initial of the regime most of them were in."""
    if isinstance(states, dict):
        arr = np.array([states.get(_key(t), -1) for t in times])
    else:
        arr = np.asarray(states)
    out = []
    for part in np.array_split(arr, min(width, arr.size)):
        known = part[part >= 0]
        out.append(" " if known.size == 0 else str(int(np.bincount(known).argmax())))
    return "".join(out)


def _agreement(truth: np.ndarray, times: np.ndarray, states: dict[float, int]) -> float | None:
    pairs = [
        (int(s), states[_key(t)]) for t, s in zip(times, truth, strict=True) if _key(t) in states
    ]
    return sum(a == b for a, b in pairs) / len(pairs) if pairs else None


def _regime_summary(board: Scoreboard, prices: PriceTruth, width: int = 64) -> list[str]:
    """A compact picture of the regimes: truth, online decode and fixed-lag decode, side by side."""
    names = ", ".join(f"{k}={v}" for k, v in sorted(board.regime_names.items()))
    lines = [
        f"regimes of {prices.symbol} ({prices.source}): {board.regime_ticks}/{prices.ticks} "
        f"ticks decoded online into {len(board.regime_names)} regimes ({names}), "
        f"{board.regime_changes} switches"
    ]
    t = prices.times
    rows: list[tuple[str, str, str | None]] = []
    if prices.states is not None:
        rows.append(("true", _strip(t, prices.states, width), None))
    rows.append(("online", _strip(t, board.decoded, width), "decoded"))
    if board.smoothed:
        rows.append(("lagged", _strip(t, board.smoothed, width), "smoothed"))
    for name, strip, kind in rows:
        extra = ""
        if prices.states is not None and kind is not None:
            states = board.decoded if kind == "decoded" else board.smoothed
            a = _agreement(prices.states, t, states)
            k_true = int(prices.states.max()) + 1
            if a is not None and len(board.regime_names) == k_true:
                extra = f"  {100 * a:.0f}% of ticks agree"
        lines.append(f"  {name:>6} |{strip}|{extra}")
    return lines
