"""k-fold evaluation of the training recipe, clean and under stress.

Each fold trains a bank with the same defaults `streamer train` uses, on the
other folds only, and scores the held-out recordings: clean, with noise, and
(when asked) spoken by synthetic voices the bank never heard and by
out-of-vocabulary words, to give the rejection figures.

Folds are stratified by word, or grouped by speaker when the speakers are known
(`speakers_of`: a pattern on the file names): then no speaker is in both a
fold's training and its test set, which is the only honest figure for people
the bank has never heard.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamer.audio.noise import add_noise, make_noise
from streamer.audio.synth import HELDOUT_VOICES, Voice, synthesize
from streamer.errors import AudioError, DataError
from streamer.messages import Recognition
from streamer.speech.bank import WordBank
from streamer.speech.train import (
    Dataset,
    Groups,
    TrainConfig,
    list_dataset,
    load_dataset,
    say_texts,
    speakers_of,
    train_bank,
)

log = logging.getLogger(__name__)

# Out-of-vocabulary test words: disjoint from the words used to calibrate rejection,
# and deliberately close to the fruit vocabulary (other produce), so harder.
TEST_OOV_WORDS = (
    "grape",
    "melon",
    "cherry",
    "mango",
    "lemon",
    "plum",
    "carrot",
    "potato",
    "tomato",
    "onion",
    "garlic",
    "pepper",
    "walnut",
    "olive",
    "papaya",
    "apricot",
)

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclass
class Scores:
    """Predictions for one condition, with the figures derived from them."""

    labels: list[str]
    truth: list[int] = field(default_factory=list)
    best: list[int] = field(default_factory=list)  # best word, ignoring rejection
    accepted: list[bool] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)  # the speaker of each utterance, or ""

    def add(self, y: int, bank: WordBank, x: np.ndarray, group: str = "") -> None:
        """Recognise `x` (truth: word index `y`, or -1 for out of vocabulary) and record it."""
        r = bank.recognize(x)
        self.record(y, bank.labels.index(r.best), r, group)

    def record(self, y: int, best: int, r: Recognition, group: str = "") -> None:
        self.truth.append(y)
        self.best.append(best)
        self.accepted.append(r.label is not None)
        self.confidence.append(r.confidence)
        self.groups.append(group)

    def per_group(self) -> dict[str, float]:
        """Best-word accuracy per speaker (in-vocabulary utterances), in name order."""
        t, b, g = np.array(self.truth), np.array(self.best), np.array(self.groups)
        out = {}
        for name in sorted(set(self.groups)):
            m = (g == name) & (t >= 0)
            if m.any():
                out[name] = float(np.mean(t[m] == b[m]))
        return out

    def group_mean(self) -> float:
        """Mean over speakers of their accuracy: every speaker counts the same."""
        per = self.per_group()
        return float(np.mean(list(per.values()))) if per else float("nan")

    def worst_group(self) -> tuple[str, float]:
        per = self.per_group()
        name = min(per, key=lambda k: per[k]) if per else ""
        return name, per.get(name, float("nan"))

    @property
    def n(self) -> int:
        return len(self.truth)

    def accuracy(self) -> float:
        t, b = np.array(self.truth), np.array(self.best)
        m = t >= 0
        return float(np.mean(t[m] == b[m])) if m.any() else float("nan")

    def label_accuracy(self) -> float:
        """Share of in-vocabulary utterances whose published label is right (null counts wrong)."""
        t, b, a = np.array(self.truth), np.array(self.best), np.array(self.accepted)
        m = t >= 0
        return float(np.mean((t[m] == b[m]) & a[m])) if m.any() else float("nan")

    def calibration_error(self, bins: int = 10) -> float:
        """Expected calibration error of `confidence` as P(label right), over all utterances."""
        t, b = np.array(self.truth), np.array(self.best)
        right = (t >= 0) & (t == b)
        c = np.array(self.confidence)
        if c.size == 0:
            return float("nan")
        idx = np.minimum((c * bins).astype(int), bins - 1)
        err = 0.0
        for k in range(bins):
            m = idx == k
            if m.any():
                err += m.mean() * abs(c[m].mean() - right[m].mean())
        return float(err)

    def false_reject(self) -> float:
        t, a = np.array(self.truth), np.array(self.accepted)
        m = t >= 0
        return float(np.mean(~a[m])) if m.any() else float("nan")

    def true_reject(self) -> float:
        t, a = np.array(self.truth), np.array(self.accepted)
        m = t < 0
        return float(np.mean(~a[m])) if m.any() else float("nan")

    def confusion(self) -> np.ndarray:
        k = len(self.labels)
        c = np.zeros((k, k), dtype=int)
        for t, b in zip(self.truth, self.best, strict=True):
            if t >= 0:
                c[t, b] += 1
        return c

    def recall(self) -> dict[str, float]:
        c = self.confusion()
        return {w: float(c[i, i] / max(1, c[i].sum())) for i, w in enumerate(self.labels)}


def noise_transform(
    kind: str, snr_db: float, rate: int, seed: int = 1, margin: float = 0.2
) -> Transform:
    """A condition: add `kind` noise at `snr_db`, from one long pre-made noise track.

    The word gets `margin` seconds of noise on each side, as an utterance cut
    from a noisy stream by the VAD has.
    """
    track = make_noise(kind, rate * 60, rate, np.random.default_rng(seed))

    def f(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return add_noise(x, snr_db, kind, rng, rate, noise=track, margin=(margin, margin))

    return f


def folds_of(data: Dataset, k: int, seed: int) -> list[tuple[Dataset, Dataset]]:
    """Stratified k-fold split of an in-memory dataset."""
    from sklearn.model_selection import StratifiedKFold

    items = [(label, i) for label, xs in data.items() for i in range(len(xs))]
    y = [label for label, _ in items]
    k = min(k, min(len(xs) for xs in data.values()))
    out = []
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for tr, te in skf.split(np.zeros(len(y)), y):
        train: Dataset = {label: [] for label in data}
        test: Dataset = {label: [] for label in data}
        for j in tr:
            label, i = items[j]
            train[label].append(data[label][i])
        for j in te:
            label, i = items[j]
            test[label].append(data[label][i])
        out.append((train, test))
    return out


def grouped_folds(
    data: Dataset, groups: Groups, k: int | str
) -> list[tuple[Dataset, Dataset, Groups, Groups]]:
    """Folds that never share a speaker: `k` folds of whole speakers, or "loso" (one
    speaker out per fold). Speakers are dealt to folds in name order, round robin."""
    speakers = sorted({g for gs in groups.values() for g in gs})
    if len(speakers) < 2:
        raise DataError(
            f"speaker-grouped folds need at least 2 speakers; the pattern found {len(speakers)}"
        )
    n = len(speakers) if k == "loso" else int(k)
    if n < 2:
        raise DataError(f"need at least 2 folds, not {k}")
    n = min(n, len(speakers))
    fold_of = {s: i % n for i, s in enumerate(speakers)}
    out = []
    for f in range(n):
        parts: tuple[Dataset, Dataset] = ({}, {})
        gparts: tuple[Groups, Groups] = ({}, {})
        for label, xs in data.items():
            for side in (0, 1):
                parts[side][label] = []
                gparts[side][label] = []
            for x, g in zip(xs, groups[label], strict=True):
                side = int(fold_of[g] == f)
                parts[side][label].append(x)
                gparts[side][label].append(g)
        out.append((parts[0], parts[1], gparts[0], gparts[1]))
    return out


def evaluate(
    data: str | Path | Dataset,
    folds: int | str = 5,
    cfg: TrainConfig | None = None,
    conditions: dict[str, Transform] | None = None,
    voices: Sequence[Voice] = HELDOUT_VOICES,
    oov_words: Sequence[str] = TEST_OOV_WORDS,
    progress: Callable[[str], None] | None = None,
    group_by: str | None = None,
    groups: Groups | None = None,
) -> dict[str, Scores]:
    """k-fold scores per condition ("clean" always; "voices" and "oov" when given).

    With `group_by` (a pattern whose first group, matched on each file name, is the
    speaker) or `groups` (the speaker of each in-memory recording), folds are grouped
    by speaker and `folds` may be "loso". Synthetic voices are only scored when the
    recipe knows what each word sounds like (`TrainConfig.say`).
    """
    cfg = cfg or TrainConfig()
    rate = cfg.features.sample_rate
    if isinstance(data, (str, Path)):
        files = list_dataset(data)
        if group_by is not None:
            groups = speakers_of(files, group_by)
        data = load_dataset(files, rate)
    labels = list(data)
    conditions = {"clean": lambda x, rng: x, **(conditions or {})}
    out = {name: Scores(labels) for name in conditions}
    rng = np.random.default_rng(cfg.seed + 17)
    splits: list[tuple[Dataset, Dataset, Groups | None, Groups | None]]
    if groups is not None:
        splits = list(grouped_folds(data, groups, folds))
    else:
        if not isinstance(folds, int):
            raise DataError(f"--folds {folds} needs speakers (--group-by)")
        splits = [(tr, te, None, None) for tr, te in folds_of(data, folds, cfg.seed)]
    for f, (train, test, train_groups, test_groups) in enumerate(splits):
        bank = train_bank(train, cfg, groups=train_groups)
        for name, tf in conditions.items():
            for label, xs in test.items():
                y = labels.index(label)
                gs = test_groups[label] if test_groups else [""] * len(xs)
                for x, g in zip(xs, gs, strict=True):
                    try:
                        out[name].add(y, bank, tf(x, rng), g)
                    except AudioError as e:
                        log.warning("fold %d, %s: %s", f, name, e)
        if progress:
            progress(f"fold {f + 1}/{len(splits)}")
    texts = say_texts(labels, cfg)
    voices = voices if texts else ()
    if voices or oov_words:
        bank = train_bank(data, cfg, groups=groups)  # the bank users get: all recordings
        if voices:
            out["voices"] = Scores(labels)
            for v in voices:
                for label in labels:
                    x = synthesize(texts[label], v, rate)
                    out["voices"].add(labels.index(label), bank, x)
        if oov_words:
            out["oov"] = Scores(labels)
            vocab = {w.lower() for w in labels}
            for j, word in enumerate(w for w in oov_words if w not in vocab):
                picked: list[Voice | None] = [*voices[j % max(1, len(voices)) :][:2]]
                for voice in picked or [None]:
                    x = synthesize(word, voice, rate) if voice else synthesize(word)
                    out["oov"].add(-1, bank, x)
    return out


def plot_confusion(scores: Scores, path: str | Path, title: str = "") -> None:
    """Save the confusion matrix as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = scores.confusion()
    fig, ax = plt.subplots(figsize=(1 + 0.8 * len(scores.labels), 0.8 + 0.7 * len(scores.labels)))
    ax.imshow(c, cmap="Blues")
    ax.set_xticks(range(len(scores.labels)), scores.labels, rotation=45, ha="right")
    ax.set_yticks(range(len(scores.labels)), scores.labels)
    ax.set_xlabel("recognised")
    ax.set_ylabel("spoken")
    for i in range(c.shape[0]):
        for j in range(c.shape[1]):
            if c[i, j]:
                ax.text(
                    j,
                    i,
                    str(c[i, j]),
                    ha="center",
                    va="center",
                    color="white" if c[i, j] > c.max() / 2 else "black",
                )
    ax.set_title(title or f"accuracy {scores.accuracy():.1%} (n={scores.n})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
