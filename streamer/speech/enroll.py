"""Adding a word to a bank (or retraining one), and picking up a changed bank while serving.

Enrollment trains one word's HMM with the recipe `streamer train` used for the
bank (`streamer.speech.train`: the same speed and noise augmentation, plus the
same synthetic voices saying the word) on a handful of the user's examples, then
puts it into the bank with `WordBank.with_word`: every other word, the
background model and the calibration stay exactly as they were, so adding a
word cannot change how the others score; only the new word's duration
statistics are learnt. A few examples are enough because the synthetic voices
carry the word's shape and the user's examples its sound.

The examples come from WAV files or from the microphone (`record_utterances`:
the service's own segmenter cuts the takes, so enrollment hears words exactly
as recognition will). `BankWatcher` is the other half: a running service polls
the bank file and swaps a changed one into its recognizer pool between
utterances (`RecognizerPool.swap`), so an enrolled word is live within about a
second, with no audio dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from streamer.audio.segmenter import Segmenter, SegmenterConfig
from streamer.audio.sources import AudioSource
from streamer.audio.synth import TRAIN_VOICES, Voice
from streamer.audio.wav import resample
from streamer.errors import AudioError, BankError, ConfigError, DataError
from streamer.messages import Utterance
from streamer.speech.bank import WordBank, fit_word
from streamer.speech.recognizer import UtterancePool, bank_factory
from streamer.speech.train import (
    TrainConfig,
    _noise_bank,
    _synth_examples,
    augment_groups,
    group_features,
)

log = logging.getLogger(__name__)

_WORD = re.compile(r"^[a-z0-9][a-z0-9_'-]{0,39}$")

__all__ = [
    "ENROLL_STEPS",
    "BankWatcher",
    "EnrollReport",
    "check_word",
    "enroll_word",
    "recipe_for",
    "record_utterances",
    "training_voices",
]


def check_word(word: str) -> str:
    """The bank label for `word` (lower case, spaces as `_`); ConfigError for a label eSpeak
    cannot say or a file system would mangle."""
    w = "_".join(word.strip().lower().split())
    if not _WORD.match(w):
        raise ConfigError(
            f"word {word!r}: use letters, digits, spaces, ' or - (up to 40 characters)"
        )
    return w


def recipe_for(bank: WordBank) -> TrainConfig:
    """The training recipe the bank was made with, as far as it records it.

    Features and HMM shape must be the bank's own (a word model with other
    features could not be scored beside the others); the augmentation comes from
    the bank's `info` when present, else from today's `TrainConfig` defaults.
    """
    info = bank.info or {}
    cfg = TrainConfig(features=bank.features, hmm=bank.hmm_config)
    kw: dict[str, Any] = {}
    if isinstance(info.get("speeds"), list):
        kw["speeds"] = tuple(float(x) for x in info["speeds"])
    if isinstance(info.get("noise_kinds"), list):
        kw["noise_kinds"] = tuple(str(x) for x in info["noise_kinds"])
    if isinstance(info.get("snr_range"), list) and len(info["snr_range"]) == 2:
        kw["snr_range"] = (float(info["snr_range"][0]), float(info["snr_range"][1]))
    if isinstance(info.get("seed"), int):
        kw["seed"] = info["seed"]
    return replace(cfg, **kw)


def training_voices(bank: WordBank) -> tuple[Voice, ...]:
    """The synthetic voices the bank was trained with (its `info`), else `TRAIN_VOICES`."""
    names = (bank.info or {}).get("synthetic_voices")
    if not isinstance(names, list):
        return TRAIN_VOICES[: TrainConfig().synth_voices]
    by_label = {v.label(): v for v in TRAIN_VOICES}
    return tuple(by_label[n] for n in names if n in by_label)


@dataclass(frozen=True)
class EnrollReport:
    """What enrollment did, for the command's summary line."""

    word: str
    action: str  # "added" or "retrained"
    examples: int
    voices: int
    sequences: int  # training sequences after augmentation
    states: int
    seconds: float
    labels: tuple[str, ...]


ENROLL_STEPS = 4  # what `enroll_word` reports to `progress`: takes, voices, features, fit


def enroll_word(
    bank: WordBank,
    word: str,
    examples: Sequence[np.ndarray],
    *,
    rate: int | None = None,
    voices: Sequence[Voice] | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> tuple[WordBank, EnrollReport]:
    """A new bank with `word` trained on `examples` (float audio at `rate`, default the bank's).

    The examples are checked one by one first (AudioError naming the take);
    with no examples at all the word is learnt from the synthetic voices alone.
    `progress` hears of each of the `ENROLL_STEPS` steps as it ends.
    """
    step = progress or (lambda note: None)
    t0 = time.monotonic()
    word = check_word(word)
    cfg = recipe_for(bank)
    brate = bank.sample_rate
    xs: list[np.ndarray] = []
    for i, x in enumerate(examples):
        x = np.asarray(x, dtype=np.float32)
        if rate is not None and rate != brate:
            x = resample(x, rate, brate)
        bank.featurize(x, where=f"{word} example {i + 1}")  # AudioError if unusable
        xs.append(x)
    step("takes checked")
    voices = training_voices(bank) if voices is None else tuple(voices)
    synth = _synth_examples(word, voices, brate) if voices else []
    step("synthetic voices")
    if not xs and not synth:
        raise DataError(f"{word}: no examples and no synthetic voices to learn it from")
    rng = np.random.default_rng([cfg.seed, zlib.crc32(word.encode())])
    groups = augment_groups(xs + synth, cfg, rng, _noise_bank(cfg, rng))
    # as in training: each example's copies under the warp its clean original chooses
    reference = bank.ubm if bank.features.vtln else None
    seqs = [f for g in groups for f in group_features(g, bank.features, reference)]
    if not seqs:
        raise DataError(f"{word}: no usable training examples")
    step("features")
    model, _ = fit_word(seqs, bank.hmm_config, cfg.hmm.seed * 1000 + zlib.crc32(word.encode()))
    step("fitted")
    logs = np.log([s.shape[0] for s in seqs])
    action = "retrained" if word in bank.labels else "added"
    info = dict(bank.info or {})
    enrolled = dict(info.get("enrolled") or {})
    enrolled[word] = {
        "examples": len(xs),
        "synthetic_voices": [v.label() for v in voices],
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    info["enrolled"] = enrolled
    new = bank.with_word(word, model, float(logs.mean()), float(max(logs.std(), 0.05)), info)
    report = EnrollReport(
        word=word,
        action=action,
        examples=len(xs),
        voices=len(synth),
        sequences=len(seqs),
        states=model.n_states,
        seconds=round(time.monotonic() - t0, 2),
        labels=tuple(new.labels),
    )
    return new, report


# -- recording takes from a live source ---------------------------------------------------------

Prompt = Callable[[int, int], None]  # (take number from 1, count)
TakeNote = Callable[[Utterance, str | None], None]  # (utterance, why it was refused or None)


async def record_utterances(
    source: AudioSource,
    count: int,
    *,
    config: SegmenterConfig | None = None,
    on_prompt: Prompt | None = None,
    on_take: TakeNote | None = None,
    timeout: float = 10.0,
    min_s: float = 0.15,
    max_s: float = 3.0,
) -> list[Utterance]:
    """Cut `count` takes out of a live source with the service's segmenter.

    A take shorter than `min_s` or longer than `max_s` (a click, a sentence) is
    refused and asked for again. AudioError when no take comes within `timeout`
    seconds of a prompt, or the source ends first.
    """
    if count < 1:
        raise ConfigError(f"--count {count}: need at least one take")
    seg = Segmenter(config or SegmenterConfig(rate=source.rate), stream=source.stream)
    takes: list[Utterance] = []
    loop = asyncio.get_running_loop()
    deadline: float | None = None

    def take(u: Utterance) -> bool:
        nonlocal deadline
        dur = u.end - u.start
        if u.split or not min_s <= dur <= max_s:
            why = f"{dur:.2f} s is too {'short' if dur < min_s else 'long'}; once more"
            if on_take:
                on_take(u, why)
            return False
        takes.append(u)
        if on_take:
            on_take(u, None)
        if len(takes) < count:
            if on_prompt:
                on_prompt(len(takes) + 1, count)
            deadline = loop.time() + timeout
        return len(takes) >= count

    async with contextlib.aclosing(source.__aiter__()) as chunks:
        async for chunk in chunks:
            if deadline is None:  # the device is open and delivering: now ask
                if on_prompt:
                    on_prompt(1, count)
                deadline = loop.time() + timeout
            for u in seg.feed(chunk):
                if take(u):
                    return takes
            if loop.time() > deadline and not seg.speaking:
                raise AudioError(
                    f"heard no word within {timeout:g} s (take {len(takes) + 1} of {count}); "
                    "check the input with `streamer devices`"
                )
    for u in seg.flush():
        if take(u):
            return takes
    raise AudioError(f"the audio ended after {len(takes)} of {count} takes")


# -- a running service picks up a changed bank --------------------------------------------------


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class BankWatcher:
    """Polls a bank file and swaps a changed, loadable bank into a recognizer pool.

    The file is compared by (mtime, size, inode) every `interval` seconds; a
    change is loaded and checked off the event loop first, so a half-copied or
    broken file is reported (`on_event("ignored", ...)`) and the old bank stays;
    the next change is tried again. `WordBank.save` writes through a temporary
    file and a rename, so the service never sees half a bank it wrote itself.
    """

    def __init__(
        self,
        path: str | Path,
        pool: UtterancePool,
        *,
        interval: float = 1.0,
        on_event: Callable[[str, str], None] | None = None,
    ) -> None:
        if interval <= 0:
            raise ConfigError(f"bank watch interval must be > 0, not {interval}")
        self.path = Path(path)
        self.pool = pool
        self.interval = interval
        self.on_event = on_event
        self.swaps = 0
        self.ignored = 0
        self._sig = _signature(self.path)
        self._bad: tuple[int, int, int] | None = None

    def _say(self, kind: str, detail: str) -> None:
        (log.info if kind == "reloaded" else log.warning)("bank %s", detail)
        if self.on_event is not None:
            try:
                self.on_event(kind, detail)
            except Exception:
                log.exception("bank event listener failed")

    async def check(self) -> bool:
        """One poll: True when a new bank was swapped in."""
        sig = _signature(self.path)
        if sig is None or sig == self._sig or sig == self._bad:
            return False
        try:
            data = await asyncio.to_thread(self.path.read_bytes)
            bank = await asyncio.to_thread(WordBank.load, self.path, data)
        except OSError as e:  # gone between the look and the read: the next poll tries again
            log.debug("bank file %s: %s", self.path, e)
            return False
        except BankError as e:
            self._bad = sig
            self.ignored += 1
            self._say("ignored", f"change ignored, keeping the old bank: {e}")
            return False
        self._sig = sig
        self._bad = None
        gen = self.pool.swap(bank_factory(self.path, data))  # the bytes checked, not the file
        self.swaps += 1
        self._say(
            "reloaded",
            f"reloaded {self.path} (generation {gen}): {len(bank.labels)} words, "
            + ", ".join(bank.labels),
        )
        return True

    async def run(self) -> None:
        """Poll until cancelled; a failed poll is logged and the next one tried."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception:  # the service must go on with the bank it has
                log.exception("checking the bank file %s failed", self.path)
