#!/usr/bin/env python
"""Benchmark for the word recognizer (issue 2): the notebook's method beside this bank.

Stratified 5-fold CV on the fruit recordings, seed 0, in one run:
  (a) the notebook: one 3-state GaussianHMM per *recording*, MFCC computed as if
      the 8 kHz audio were 16 kHz, no normalisation, trained clean;
  (b) this bank, trained by `streamer train`'s defaults.
Conditions: clean; white noise (a kind the bank's augmentation does not use) and
three realistic kinds it never heard either (babble, hum, factory) at 20/10/5/0 dB;
voices never heard in training (eSpeak voices disjoint from the training voices);
out-of-vocabulary (train on 5 words, present the other 2); and time per utterance.

    .venv/bin/python scripts/bench_recognizer.py [--data DIR] [--folds 5] [--quick]
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from dataclasses import replace

import numpy as np

from streamer.audio.synth import HELDOUT_VOICES, synthesize
from streamer.audio.wav import read_wav
from streamer.paths import data_dir
from streamer.speech.evaluate import Scores, folds_of, noise_transform
from streamer.speech.features import mfcc
from streamer.speech.train import TrainConfig, list_dataset, load_dataset, train_bank

NOISES = ("white", "babble", "hum", "factory")
SNRS = (20, 10, 5, 0)


class Notebook:
    """The seed notebook's recogniser: one GaussianHMM(3) per recording, best score wins."""

    def __init__(self, train: dict[str, list[np.ndarray]]) -> None:
        import python_speech_features as psf
        from hmmlearn import hmm

        self.psf = psf
        self.models: list[tuple[str, object]] = []
        for label, xs in train.items():
            for x in xs:
                m = hmm.GaussianHMM(n_components=3)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    m.fit(self.feat(x))
                self.models.append((label, m))

    def feat(self, x: np.ndarray) -> np.ndarray:
        return self.psf.mfcc(x * 32768.0)  # int16 scale, default samplerate=16000: its bug

    def predict(self, x: np.ndarray) -> str:
        f = self.feat(x)
        scores = [m.score(f) for _, m in self.models]
        return self.models[int(np.argmax(scores))][0]


def pct(v: float) -> str:
    return f"{100 * v:6.1f}%"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", default=str(data_dir() / "fruits"))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="fewer conditions (for a smoke run)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("hmmlearn").setLevel(logging.ERROR)
    cfg = replace(TrainConfig(), jobs=0)  # the defaults, fitted on all cores
    rate = cfg.features.sample_rate
    files = list_dataset(args.data)
    data = load_dataset(files, rate)
    labels = list(data)
    rate_ok = all(read_wav(p)[1] == rate for ps in files.values() for p in ps)
    print(
        f"data: {args.data} ({sum(len(v) for v in data.values())} recordings, "
        f"{len(labels)} words, all at {rate} Hz: {rate_ok})"
    )
    snrs = (10, 5) if args.quick else SNRS
    conds = {"clean": None}
    for kind in NOISES:
        for snr in snrs:
            conds[f"{kind} {snr} dB"] = noise_transform(kind, snr, rate, seed=7)

    nb_hits = {c: [] for c in conds}
    ours = {c: Scores(labels) for c in conds}
    rng = np.random.default_rng(0)
    t_train = []
    for f, (train, test) in enumerate(folds_of(data, args.folds, seed=0)):
        t0 = time.perf_counter()
        bank = train_bank(train, cfg)
        t_train.append(time.perf_counter() - t0)
        nb = Notebook(train)
        for c, tf in conds.items():
            for label, xs in test.items():
                for x in xs:
                    xx = x if tf is None else tf(x, rng)
                    nb_hits[c].append(nb.predict(xx) == label)
                    ours[c].add(labels.index(label), bank, xx)
        print(f"  fold {f + 1}/{args.folds} done (bank trained in {t_train[-1]:.0f} s)", flush=True)

    print(
        f"\naccuracy, stratified {args.folds}-fold CV, seed 0. The bank augments with "
        f"{', '.join(cfg.noise_kinds)} noise: white is a kind it has heard; babble, hum "
        "and factory it never heard. The notebook is trained clean."
    )
    print(
        "(bank: best word; label: the published label, a rejection counting as wrong; "
        "FR: known words rejected; ECE: calibration error of the confidence)"
    )
    print(f"{'condition':<18}{'notebook':>10}{'bank':>10}{'label':>10}{'FR':>8}{'ECE':>8}")
    for c in conds:
        s = ours[c]
        print(
            f"{c:<18}{pct(np.mean(nb_hits[c])):>10}{pct(s.accuracy()):>10}"
            f"{pct(s.label_accuracy()):>10}{pct(s.false_reject()):>8}"
            f"{s.calibration_error():>8.3f}"
        )
    for snr in snrs:
        unseen = [ours[f"{k} {snr} dB"].accuracy() for k in NOISES]
        print(
            f"  mean over noise kinds at {snr} dB: bank {pct(np.mean(unseen))}, "
            f"notebook {pct(np.mean([np.mean(nb_hits[f'{k} {snr} dB']) for k in NOISES]))}"
        )

    # voices never heard: the bank trained on all recordings (+ its own training voices)
    bank = train_bank(data, cfg)
    nb = Notebook(data)
    v_scores = Scores(labels)
    nb_v = []
    for v in HELDOUT_VOICES:
        for label in labels:
            x = synthesize(label, v, rate)
            v_scores.add(labels.index(label), bank, x)
            nb_v.append(nb.predict(x) == label)
    print(
        f"\nunseen voices ({len(HELDOUT_VOICES)} eSpeak voices disjoint from training, "
        f"{v_scores.n} utterances): notebook {pct(np.mean(nb_v))}, bank {pct(v_scores.accuracy())} "
        f"(false-reject {pct(v_scores.false_reject())})"
    )

    # out of vocabulary: train on 5 words, present the other 2
    pairs = [(0, 3), (1, 5), (2, 6)] if not args.quick else [(2, 6)]
    oov = Scores(labels)
    inv = Scores(labels)
    for a, b in pairs:
        out_words = {labels[a], labels[b]}
        sub = {w: xs for w, xs in data.items() if w not in out_words}
        for train, test in folds_of(sub, args.folds, seed=0)[: 1 if args.quick else 2]:
            bk = train_bank(train, cfg)
            for xs in test.values():  # known words: only whether they are rejected counts
                for x in xs:
                    inv.record(0, 0, bk.recognize(x))
            for w in out_words:
                for x in data[w]:
                    oov.record(-1, 0, bk.recognize(x))
    print(
        f"out-of-vocabulary (train on 5 words, present the other 2; pairs "
        f"{[(labels[a], labels[b]) for a, b in pairs]}): true-reject {pct(oov.true_reject())} "
        f"({oov.n} utterances), in-vocabulary false-reject {pct(inv.false_reject())} ({inv.n})"
    )

    # speed: features and scoring of a 1 s utterance against the 7-word bank
    x = np.concatenate([data[labels[0]][0], data[labels[1]][0]])[:rate]
    x = np.pad(x, (0, max(0, rate - x.size)))
    feats = mfcc(x, bank.features)
    reps = 300
    tf, ts = [], []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(reps):
            mfcc(x, bank.features)
        tf.append((time.perf_counter() - t0) / reps * 1000)
        t0 = time.perf_counter()
        for _ in range(reps):
            bank.recognize_features(feats)
        ts.append((time.perf_counter() - t0) / reps * 1000)
    nbm = Notebook({w: xs[:14] for w, xs in data.items()})
    f16 = nbm.feat(x)
    t0 = time.perf_counter()
    for _ in range(20):
        [m.score(f16) for _, m in nbm.models]
    t_nb = (time.perf_counter() - t0) / 20 * 1000
    print(
        f"\n1 s utterance, median of 5: features {np.median(tf):.2f} ms, scoring against "
        f"{len(labels)} words {np.median(ts):.2f} ms (notebook: scoring against "
        f"{len(nbm.models)} per-recording models {t_nb:.1f} ms); bank trained in "
        f"{np.median(t_train):.0f} s per fold"
    )


if __name__ == "__main__":
    main()
