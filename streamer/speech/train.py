"""From a folder of labelled recordings to a calibrated word bank.

The defaults carry the robustness: every example is speed-perturbed (a stand-in
for other vocal tracts) and mixed with noise at random SNRs; when the recipe is
told what each word sounds like (`say`, `say_labels`), synthetic voices (eSpeak
NG, in `synth_language`) speak it too. Nothing is synthesised from a folder name
unless asked: `cmd1` or an English gloss of an Arabic word would train on the
wrong sound. Confidence and rejection are calibrated on held-out data before the
final models are refitted on everything: held-out speakers when the speakers are
known (`groups`), with some words left out of the calibration bank so that real
unknown words by unknown voices are among the negatives; otherwise a held-out
quarter of the recordings, against synthetic non-vocabulary words and
time-reversed speech.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import resample_poly

from streamer.audio.noise import TRAINING_KINDS, add_noise, make_noise
from streamer.audio.synth import TRAIN_VOICES, Voice, check_language, synthesize
from streamer.audio.wav import load_audio
from streamer.errors import AudioError, DataError
from streamer.speech.bank import (
    Calibration,
    HmmConfig,
    WordBank,
    WordModel,
    background_fit,
    fit_background,
    fit_word,
)
from streamer.speech.features import FeatureConfig, dynamic_range_db, mfcc, mfcc_warps

log = logging.getLogger(__name__)

# Words that train the background model (speech in general). Disjoint from OOV_WORDS
# (calibration) and from the evaluation's test words, and from the fruit vocabulary.
BACKGROUND_WORDS = (
    "house",
    "green",
    "morning",
    "sister",
    "orchestra",
    "blanket",
    "seventy",
    "kettle",
    "garage",
    "velvet",
    "thunder",
    "machine",
    "lantern",
    "umbrella",
    "saturday",
    "engine",
    "basket",
    "ticket",
    "island",
    "shadow",
    "nineteen",
    "zero",
    "because",
    "little",
    "quickly",
    "under",
    "over",
    "people",
    "family",
    "winter",
)

# Words used only as out-of-vocabulary examples when calibrating rejection. None of
# the fruit words the shipped bank knows is here, so rejection tests on held-out
# fruit words are honest; any word that is in a bank's vocabulary is dropped.
OOV_WORDS = (
    "table",
    "window",
    "seven",
    "river",
    "yellow",
    "garden",
    "paper",
    "doctor",
    "music",
    "kitchen",
    "summer",
    "number",
    "letter",
    "mountain",
    "water",
    "coffee",
    "picture",
    "station",
    "forest",
    "silver",
    "question",
    "minute",
    "travel",
    "button",
    "pencil",
    "monkey",
    "rocket",
    "tiger",
    "bottle",
    "candle",
    "purple",
    "hello",
    "yes",
    "no",
    "stop",
    "go",
    "left",
    "right",
    "chair",
    "phone",
)


@dataclass(frozen=True)
class TrainConfig:
    """Training recipe; the defaults are what `streamer train` uses."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    hmm: HmmConfig = field(default_factory=HmmConfig)
    speeds: tuple[float, ...] = (0.88, 1.12)
    noise_kinds: tuple[str, ...] = TRAINING_KINDS
    noise_files: tuple[str, ...] = ()  # real noise recordings mixed in like the kinds
    noisy_copies: int = 3
    snr_range: tuple[float, float] = (0.0, 18.0)
    synth_voices: int = len(TRAIN_VOICES)  # voices for words whose text is known; 0: none
    # What each word sounds like, for the synthetic voices: (label, text) pairs, and/or
    # the label itself as the text. A word with no text gets no synthetic examples.
    say: tuple[tuple[str, str], ...] = ()
    say_labels: bool = False
    synth_language: str = "en"  # eSpeak NG language of the synthetic voices
    calibrate: bool = True
    calib_fraction: float = 0.25
    target_false_reject: float = 0.03  # per noise level (see noise_aware_threshold)
    background_words: bool = False  # train the background model on non-vocabulary words too
    seed: int = 0
    # Worker processes fitting words in parallel (0: one per core). More than 1 starts
    # processes, so a script calling train_bank needs the `if __name__ == "__main__"` guard.
    jobs: int = 1


Dataset = dict[str, list[np.ndarray]]
Groups = dict[str, list[str]]  # the speaker of each recording, parallel to a Dataset
Reporter = Callable[[str], None]
NoiseBank = dict[str, np.ndarray]  # noise kind (or file:NAME) -> 30 s of unit-RMS noise
Background = tuple[np.ndarray, np.ndarray, np.ndarray]  # GMM weights, means, variances


def speakers_of(files: dict[str, list[Path]], pattern: str) -> Groups:
    """The speaker of each file: the first group of `pattern` searched in its name.

    DataError when the pattern is invalid, has no group, misses a file, or finds fewer
    than 2 speakers (grouping by one speaker is no grouping)."""
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise DataError(f"--group-by {pattern!r}: not a valid pattern ({e})") from None
    if rx.groups < 1:
        raise DataError(f"--group-by {pattern!r}: needs a (group) that captures the speaker")
    out: Groups = {}
    for label, paths in files.items():
        out[label] = []
        for p in paths:
            m = rx.search(p.name)
            if not m or not m.group(1):
                raise DataError(f"{p}: --group-by {pattern!r} does not match this file name")
            out[label].append(m.group(1))
    n = len({g for gs in out.values() for g in gs})
    if n < 2:
        raise DataError(f"--group-by {pattern!r} finds {n} speaker; need at least 2")
    return out


def say_texts(labels: Sequence[str], cfg: TrainConfig) -> dict[str, str]:
    """What the synthetic voices say for each label whose text is known."""
    texts = {label: label.replace("_", " ") for label in labels} if cfg.say_labels else {}
    for label, text in cfg.say:
        if label not in labels:
            raise DataError(f"--say {label}={text}: there is no folder {label!r} in the data")
        texts[label] = text
    return texts


def synth_voices(cfg: TrainConfig) -> tuple[Voice, ...]:
    """The training voices, speaking the recipe's language."""
    voices = TRAIN_VOICES[: cfg.synth_voices]
    if cfg.synth_language == "en":
        return voices
    check_language(cfg.synth_language)
    return tuple(v.speaking(cfg.synth_language) for v in voices)


def list_dataset(data_dir: str | Path) -> dict[str, list[Path]]:
    """LABEL/*.wav under `data_dir`; DataError for a missing folder or a class with < 2 files."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"{root}: no such data folder")
    classes = {
        d.name: sorted(p for p in d.iterdir() if p.suffix.lower() == ".wav")
        for d in sorted(root.iterdir())
        if d.is_dir() and not d.name.startswith(".")
    }
    if not classes:
        raise DataError(f"{root}: no class folders (expected LABEL/*.wav)")
    for label, files in classes.items():
        if len(files) < 2:
            raise DataError(
                f"{root / label}: {len(files)} WAV file{'s' if len(files) != 1 else ''}; "
                "each word needs at least 2 recordings"
            )
    if len(classes) < 1:
        raise DataError(f"{root}: need at least one word")
    return classes


def load_dataset(
    files: dict[str, list[Path]], rate: int, on_error: Reporter | None = None
) -> Dataset:
    """Read every file; a bad one is reported through `on_error` and left out."""
    out: Dataset = {}
    for label, paths in files.items():
        xs = []
        for p in paths:
            try:
                xs.append(load_audio(p, rate))
            except AudioError as e:
                if on_error is None:
                    raise
                on_error(str(e))
        if len(xs) < 2:
            raise DataError(f"{label}: fewer than 2 usable recordings")
        out[label] = xs
    return out


def speed_perturb(x: np.ndarray, factor: float) -> np.ndarray:
    """Play `factor` times faster (pitch and formants shift too, like another speaker)."""
    up, down = 100, round(100 * factor)
    y: np.ndarray = resample_poly(x, up, down)
    return y.astype(np.float32)


def augment(
    xs: Sequence[np.ndarray], cfg: TrainConfig, rng: np.random.Generator, noise_bank: NoiseBank
) -> list[np.ndarray]:
    """Clean, speed-perturbed and noisy variants of every example."""
    return [v for group in augment_groups(xs, cfg, rng, noise_bank) for v in group]


def augment_groups(
    xs: Sequence[np.ndarray], cfg: TrainConfig, rng: np.random.Generator, noise_bank: NoiseBank
) -> list[list[np.ndarray]]:
    """Per example: the example itself first, then its speed-perturbed and noisy variants."""
    groups: list[list[np.ndarray]] = []
    rate = cfg.features.sample_rate
    for x in xs:
        variants = [x] + [speed_perturb(x, f) for f in cfg.speeds]
        out = list(variants)
        groups.append(out)
        for _ in range(cfg.noisy_copies if noise_bank else 0):
            base = variants[int(rng.integers(len(variants)))]
            if rng.random() < 0.3:  # a weak ending lost in the noise, as the VAD cuts it
                base = base[: int(base.size * (1 - rng.uniform(0.03, 0.15)))]
            kind = str(rng.choice(sorted(noise_bank)))
            snr = float(rng.uniform(*cfg.snr_range))
            margin = (float(rng.uniform(0.0, 0.3)), float(rng.uniform(0.0, 0.3)))
            out.append(add_noise(base, snr, kind, rng, rate, noise=noise_bank[kind], margin=margin))
    return groups


def _noise_bank(cfg: TrainConfig, rng: np.random.Generator) -> NoiseBank:
    rate = cfg.features.sample_rate
    bank = {k: make_noise(k, rate * 30, rate, rng) for k in cfg.noise_kinds}
    for path in cfg.noise_files:  # real recordings: unit RMS, repeated to 30 s
        x = load_audio(path, rate).astype(np.float64)
        x = x / (np.sqrt(np.mean(x**2)) + 1e-12)
        bank[f"file:{Path(path).stem}"] = np.tile(x, -(-rate * 30 // max(1, x.size)))
    return bank


def _synth_examples(text: str, voices: Sequence[Voice], rate: int) -> list[np.ndarray]:
    return [s for v in voices if (s := synthesize(text.replace("_", " "), v, rate)).size]


def _vtln_reference(pool: list[np.ndarray], cfg: TrainConfig, rounds: int = 2) -> Background | None:
    """The background GMM that picks each utterance's warp, trained by alternating: fit
    on the current warps of a sample of examples, re-pick every warp, refit. None
    when the recipe has no VTLN."""
    fc = cfg.features
    if not fc.vtln:
        return None
    rng = np.random.default_rng(cfg.seed + 5)
    pick = rng.permutation(len(pool))[: min(len(pool), 600)]
    cands = []
    for i in pick:
        try:
            cands.append(mfcc_warps(pool[i], fc))
        except AudioError:
            continue
    if not cands:
        return None
    neutral = int(np.argmin(np.abs(np.array(fc.vtln) - 1.0)))
    chosen = [c[neutral] for c in cands]
    ubm = None
    for _ in range(rounds + 1):
        ubm = fit_background(
            np.concatenate(chosen), cfg.hmm.ubm_components, cfg.hmm.seed, max_frames=8000
        )
        chosen = [max(c, key=lambda f: background_fit(ubm, f)) for c in cands]
    return ubm


def group_features(
    group: list[np.ndarray], cfg: FeatureConfig, reference: Background | None
) -> list[np.ndarray]:
    """Features of an example and its variants. With VTLN, all under the warp the
    reference model finds most likely for the clean example (a noisy copy would choose
    worse, and one search per example instead of per copy is what keeps training fast)."""
    warp = 1.0
    if reference is not None:
        try:
            cands = mfcc_warps(group[0], cfg)
        except AudioError as e:
            log.debug("skipped an example: %s", e)
            return []
        fit = [background_fit(reference, f) for f in cands]
        warp = cfg.vtln[int(np.argmax(fit))]
    out = []
    for x in group:
        try:
            out.append(mfcc(x, cfg, warp=warp))
        except AudioError as e:
            log.debug("skipped an example: %s", e)
    return out


def _fit_models(
    examples: dict[str, list[list[np.ndarray]]],
    cfg: TrainConfig,
    progress: Reporter | None,
    background: list[np.ndarray] | None = None,
) -> tuple[list[WordModel], Background, np.ndarray, np.ndarray]:
    originals = [g[0] for groups in examples.values() for g in groups]
    reference = _vtln_reference(originals, cfg)
    all_seqs: list[list[np.ndarray]] = []
    dur_mean, dur_std = [], []
    for label, groups in examples.items():
        seqs = [f for g in groups for f in group_features(g, cfg.features, reference)]
        if not seqs:
            raise DataError(f"{label}: no usable training examples")
        all_seqs.append(seqs)
        logs = np.log([s.shape[0] for s in seqs])
        dur_mean.append(float(logs.mean()))
        dur_std.append(float(max(logs.std(), 0.05)))
    jobs = min(len(all_seqs), cfg.jobs or os.cpu_count() or 1)
    seeds = [cfg.hmm.seed * 1000 + i for i in range(len(all_seqs))]
    models = []
    if jobs > 1:
        # forkserver, not fork: a forked child can inherit a lock held by another thread
        # (BLAS, logging, the synthesiser) and hang
        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("forkserver")) as pool:
            futures = [
                pool.submit(fit_word, s, cfg.hmm, seed)
                for s, seed in zip(all_seqs, seeds, strict=True)
            ]
            for label, fut in zip(examples, futures, strict=True):
                models.append(fut.result()[0])
                if progress:
                    progress(label)
    else:
        for label, s, seed in zip(examples, all_seqs, seeds, strict=True):
            models.append(fit_word(s, cfg.hmm, seed)[0])
            if progress:
                progress(label)
    all_frames = [np.concatenate(s) for s in all_seqs]
    feats_bg = [f for x in background or [] for f in group_features([x], cfg.features, reference)]
    ubm = fit_background(
        np.concatenate(all_frames + feats_bg), cfg.hmm.ubm_components, cfg.hmm.seed
    )
    return models, ubm, np.array(dur_mean), np.array(dur_std)


def _build(
    real: Dataset,
    synth: Dataset,
    cfg: TrainConfig,
    rng: np.random.Generator,
    progress: Reporter | None,
) -> tuple[list[WordModel], Background, np.ndarray, np.ndarray]:
    noise = _noise_bank(cfg, rng)
    examples = {
        label: augment_groups(real[label] + synth.get(label, []), cfg, rng, noise) for label in real
    }
    return _fit_models(examples, cfg, progress, _background_speech(list(real), cfg, rng, noise))


def _background_speech(
    labels: list[str], cfg: TrainConfig, rng: np.random.Generator, noise: NoiseBank
) -> list[np.ndarray]:
    """Ordinary words the bank does not know, for the background model: it then stands
    for speech in general, so an unknown word fits it better than any word model."""
    if not cfg.background_words:
        return []
    vocab = {w.lower() for w in labels}
    voices = TRAIN_VOICES[: max(4, cfg.synth_voices)]
    xs = [
        synthesize(w, voices[i % len(voices)], cfg.features.sample_rate)
        for i, w in enumerate(w for w in BACKGROUND_WORDS if w not in vocab)
    ]
    return augment([x for x in xs if x.size], replace(cfg, speeds=()), rng, noise)


def _calibration_set(
    real_held: Dataset,
    synth_held: Dataset,
    labels: list[str],
    cfg: TrainConfig,
    rng: np.random.Generator,
) -> tuple[list[np.ndarray], list[int]]:
    """Held-out audio with truth: index of the word, or -1 for out-of-vocabulary."""
    rate = cfg.features.sample_rate
    noise = _noise_bank(cfg, rng)
    xs: list[np.ndarray] = []
    ys: list[int] = []

    def variants(x: np.ndarray) -> list[np.ndarray]:
        v = [x, speed_perturb(x, float(rng.choice(cfg.speeds))) if cfg.speeds else x]
        cut = int(x.size * rng.uniform(0.08, 0.2))
        v.append(x[: x.size - cut])  # end clipped, as an eager VAD does
        if noise:
            for _ in range(2):
                kind = str(rng.choice(sorted(noise)))
                snr = float(rng.uniform(*cfg.snr_range))
                margin = (float(rng.uniform(0.0, 0.3)), float(rng.uniform(0.0, 0.3)))
                v.append(add_noise(x, snr, kind, rng, rate, noise[kind], margin=margin))
        return v

    for label in real_held:
        y = labels.index(label) if label in labels else -1  # left out of the bank: unknown
        for x in real_held.get(label, []) + synth_held.get(label, []):
            for v in variants(x):
                xs.append(v)
                ys.append(y)
    vocab = {w.lower() for w in [*labels, *real_held]}
    oov = [w for w in OOV_WORDS if w not in vocab]
    voices = TRAIN_VOICES[: max(1, cfg.synth_voices)] if cfg.synth_voices else TRAIN_VOICES[:4]
    for j, word in enumerate(oov):
        voice = voices[j % len(voices)]
        x = synthesize(word, voice, rate)
        if x.size:
            for vv in variants(x)[::2]:
                xs.append(vv)
                ys.append(-1)
    for label in real_held:
        for x in real_held[label]:
            xs.append(x[::-1].copy())  # time-reversed speech: same voice, no word
            ys.append(-1)
    return xs, ys


def _fit_calibration(
    bank: WordBank, xs: list[np.ndarray], ys: list[int], target_fr: float
) -> tuple[np.ndarray, float, float, dict[str, Any], np.ndarray, np.ndarray]:
    """Logistic confidence, flat threshold, figures, and the noise-aware threshold curve."""
    from sklearn.linear_model import LogisticRegression

    feats, correct, invocab, ranges = [], [], [], []
    for x, y in zip(xs, ys, strict=True):
        try:
            f = bank.featurize(x)
        except AudioError:
            continue
        dr = dynamic_range_db(x, bank.sample_rate)
        ll, cf = bank.score_features(f, dr)
        feats.append(cf)
        ranges.append(dr)
        invocab.append(y >= 0)
        correct.append(y >= 0 and int(np.argmax(ll)) == y)
    X = np.array(feats)
    yv = np.array(correct, dtype=int)
    inv = np.array(invocab)
    if yv.min() == yv.max():
        return np.array([1.0, 1.0, 0.0, 0.0, 0.0]), 0.0, 0.0, {}, np.zeros(0), np.zeros(0)
    lr = LogisticRegression(C=1.0, max_iter=1000).fit(X, yv)
    conf = lr.predict_proba(X)[:, 1]
    threshold = float(np.quantile(conf[inv], target_fr))
    curve_db, curve_at = noise_aware_threshold(conf[inv], np.array(ranges)[inv], target_fr)
    thr = (
        np.interp(np.array(ranges), curve_db, curve_at)
        if curve_db.size
        else np.full(conf.size, threshold)
    )
    stats = {
        "calibration_items": len(yv),
        "in_vocab_false_reject": float(np.mean(conf[inv] < thr[inv])),
        "oov_true_reject": float(np.mean(conf[~inv] < thr[~inv])) if (~inv).any() else None,
        "in_vocab_accuracy": float(np.mean(yv[inv])),
    }
    cal = (lr.coef_[0].astype(np.float64), float(lr.intercept_[0]), threshold, stats)
    return (*cal, curve_db, curve_at)


def noise_aware_threshold(
    conf: np.ndarray, ranges: np.ndarray, target_fr: float, bins: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Reject thresholds along the dynamic range (an SNR estimate): in each of `bins`
    equal-count bins of the held-out known words, the `target_fr` quantile of their
    confidence, placed at the bin's median range. Empty when too few items."""
    if conf.size < 20 * bins:
        return np.zeros(0), np.zeros(0)
    order = np.argsort(ranges)
    db, at = [], []
    for part in np.array_split(order, bins):
        db.append(float(np.median(ranges[part])))
        at.append(float(np.quantile(conf[part], target_fr)))
    return np.array(db), np.array(at)


def train_bank(
    data: str | Path | Dataset,
    cfg: TrainConfig | None = None,
    on_error: Reporter | None = None,
    progress: Reporter | None = None,
    groups: Groups | None = None,
    group_by: str | None = None,
) -> WordBank:
    """Train a calibrated bank from LABEL/*.wav under a folder (or an in-memory dataset).

    `groups` (or `group_by`, a file-name pattern, for a folder) names the speaker of
    every recording: calibration then holds out whole speakers."""
    t0 = time.monotonic()
    cfg = cfg or TrainConfig()
    rate = cfg.features.sample_rate
    source = "memory"
    if isinstance(data, (str, Path)):
        source = Path(data).name
        files = list_dataset(data)
        if group_by is not None:
            groups = speakers_of(files, group_by)
        data = load_dataset(files, rate, on_error)
    labels = list(data)
    texts = say_texts(labels, cfg)
    rng = np.random.default_rng(cfg.seed)
    voices = synth_voices(cfg) if texts else ()
    synth = {label: _synth_examples(texts[label], voices, rate) for label in texts}

    stats: dict[str, Any] = {}
    coef, intercept, threshold = np.array([1.0, 1.0, 0.0, 0.0, 0.0]), 0.0, 0.0
    curve_db, curve_at = np.zeros(0), np.zeros(0)
    if cfg.calibrate:
        real_tr, real_ho, syn_tr, syn_ho = _calibration_split(data, synth, groups, cfg, rng)
        known = [label for label in labels if real_tr.get(label)]
        models, ubm, dm, ds = _build({k: real_tr[k] for k in known}, syn_tr, cfg, rng, None)
        stage1 = WordBank(
            known, models, ubm, cfg.features, cfg.hmm, Calibration(dur_mean=dm, dur_std=ds)
        )
        xs, ys = _calibration_set(real_ho, syn_ho, known, cfg, rng)
        coef, intercept, threshold, stats, curve_db, curve_at = _fit_calibration(
            stage1, xs, ys, cfg.target_false_reject
        )
        stats["held_out_words"] = [label for label in labels if label not in known]
        if progress:
            progress("calibrated")
    models, ubm, dm, ds = _build(data, synth, cfg, rng, progress)
    info = {
        "source": source,
        "recordings": {label: len(xs) for label, xs in data.items()},
        "speakers": len({g for gs in groups.values() for g in gs}) if groups else None,
        "synthetic_voices": [v.label() for v in voices],
        "say": texts,
        "synth_language": cfg.synth_language,
        "speeds": list(cfg.speeds),
        "noise_kinds": list(cfg.noise_kinds),
        "noise_files": [Path(p).name for p in cfg.noise_files],
        "snr_range": list(cfg.snr_range),
        "seed": cfg.seed,
        "calibration": stats,
        "train_seconds": round(time.monotonic() - t0, 1),
    }
    calibration = Calibration(
        coef=coef,
        intercept=intercept,
        threshold=threshold,
        dur_mean=dm,
        dur_std=ds,
        threshold_db=curve_db,
        threshold_at=curve_at,
    )
    return WordBank(labels, models, ubm, cfg.features, cfg.hmm, calibration, info)


def _calibration_split(
    data: Dataset,
    synth: Dataset,
    groups: Groups | None,
    cfg: TrainConfig,
    rng: np.random.Generator,
) -> tuple[Dataset, Dataset, Dataset, Dataset]:
    """Training and held-out parts for the calibration bank.

    With speakers: a share of whole speakers is held out, and when there are at
    least 4 words a quarter of the words is left out of the calibration bank, so
    its negatives include real unknown words said by unknown voices. Without:
    a share of each word's recordings. Synthetic voices are split the same way."""
    real_tr: Dataset = {}
    real_ho: Dataset = {}
    speakers = sorted({g for gs in groups.values() for g in gs}) if groups else []
    if len(speakers) >= 3:
        n_ho = max(1, round(len(speakers) * cfg.calib_fraction))
        held = set(rng.permutation(speakers)[:n_ho].tolist())
        labels = list(data)
        n_words = len(labels) // 4 if len(labels) >= 4 else 0
        left_out = set(rng.permutation(labels)[:n_words].tolist())
        for label, xs in data.items():
            assert groups is not None
            gs = groups[label]
            real_ho[label] = [x for x, g in zip(xs, gs, strict=True) if g in held]
            kept = [x for x, g in zip(xs, gs, strict=True) if g not in held]
            real_tr[label] = [] if label in left_out else kept
    else:
        for label, xs in data.items():
            idx = rng.permutation(len(xs))
            k = max(1, round(len(xs) * cfg.calib_fraction)) if len(xs) >= 3 else 0
            real_ho[label] = [xs[i] for i in idx[:k]]
            real_tr[label] = [xs[i] for i in idx[k:]]
    syn_tr: Dataset = {}
    syn_ho: Dataset = {}
    for label, xs in synth.items():
        n_ho = round(len(xs) * cfg.calib_fraction)
        syn_ho[label] = xs[len(xs) - n_ho :] if n_ho else []
        syn_tr[label] = xs[: len(xs) - n_ho] if real_tr.get(label) else []
    return real_tr, real_ho, syn_tr, syn_ho
