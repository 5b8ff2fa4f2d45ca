"""A bank of word HMMs: training, fast scoring, rejection and safe persistence.

One hidden Markov model per word, trained on all of that word's examples at
once (hmmlearn with `lengths`). Scoring computes every state's emission
log-density for all words in one matrix product and runs hmmlearn's C forward
pass per word, so a 1 s utterance against a 7-word bank costs well under 2 ms.

A universal background model (a GMM over all training frames) gives each
utterance a reference score; how far the best word beats it, how far it beats
the runner-up and how plausible the duration is feed a small logistic model,
calibrated on held-out data, whose output is the confidence. Below the
calibrated threshold the label is null: the utterance fits no word well.

A bank is one `.npz` file: plain numeric arrays plus a JSON metadata string,
loaded with `allow_pickle=False`. Nothing in it can execute code.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
import zipfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from hmmlearn import hmm

from streamer.errors import BankError, ConfigError
from streamer.hmmcompat import forward_log, stored_covars
from streamer.messages import Recognition
from streamer.speech.features import FeatureConfig, dynamic_range_db, mfcc_warps

log = logging.getLogger(__name__)

FORMAT = "streamer-bank"
FORMAT_VERSION = 1
_LOG2PI = float(np.log(2 * np.pi))
TOPOLOGIES = ("left-right", "ergodic")
DEFAULT_RANGE_DB = 40.0  # dynamic range assumed when only features are given (clean speech)
COVARIANCE_TYPES = ("diag", "spherical", "full", "tied")


@dataclass(frozen=True)
class HmmConfig:
    """How each word model is shaped and trained."""

    n_states: int = 0  # 0: chosen per word from its median length
    frames_per_state: float = 5.0  # for n_states=0
    min_states: int = 4
    max_states: int = 12
    topology: str = "left-right"
    skip: bool = True  # left-right: allow skipping one state (robust to clipped words)
    covariance_type: str = "diag"
    n_mix: int = 1  # >1: GMM emissions
    n_restarts: int = 1  # the segmental flat start is good; restarts cost time, not accuracy
    n_iter: int = 15
    tol: float = 1e-2
    min_covar: float = 1e-3
    seed: int = 0
    ubm_components: int = 32

    def __post_init__(self) -> None:
        if self.topology not in TOPOLOGIES:
            raise ConfigError(f"topology must be one of {TOPOLOGIES}, not {self.topology!r}")
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ConfigError(
                f"covariance type must be one of {COVARIANCE_TYPES}, not {self.covariance_type!r}"
            )
        if self.n_mix < 1 or self.n_restarts < 1 or self.n_iter < 1:
            raise ConfigError("n_mix, n_restarts and n_iter must be at least 1")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HmmConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class WordModel:
    """One word's HMM as plain arrays (diag/spherical stored as diag variances)."""

    startprob: np.ndarray  # (S,)
    transmat: np.ndarray  # (S, S)
    means: np.ndarray  # (S, M, D)
    covars: np.ndarray  # (S, M, D) for diag; (S, M, D, D) full; (D, D) tied
    weights: np.ndarray  # (S, M)
    covariance_type: str = "diag"

    @property
    def n_states(self) -> int:
        return int(self.startprob.size)


@dataclass
class Calibration:
    """Logistic confidence over (LLR vs background, margin, duration, dynamic range, how
    evenly the best word's states fit) and the reject threshold.

    The threshold may depend on the utterance's dynamic range (a cheap SNR estimate):
    `threshold_at` holds thresholds at the ranges `threshold_db`, interpolated between.
    Set per range from held-out words at that range, it keeps the share of known words
    rejected the same in quiet and in noise, so a quiet room can reject unknown words
    hard without noise costing the user their own words."""

    coef: np.ndarray = field(default_factory=lambda: np.array([1.0, 1.0, 0.0, 0.0, 0.0]))
    intercept: float = 0.0
    threshold: float = 0.0  # confidence below this: label is null (when no curve is set)
    dur_mean: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per word, log frames
    dur_std: np.ndarray = field(default_factory=lambda: np.zeros(0))
    threshold_db: np.ndarray = field(default_factory=lambda: np.zeros(0))
    threshold_at: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def threshold_for(self, dyn_range: float) -> float:
        if self.threshold_db.size:
            return float(np.interp(dyn_range, self.threshold_db, self.threshold_at))
        return self.threshold


def _log_weights(w: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        out: np.ndarray = np.log(w)
    return out


class _Emitter:
    """All diagonal Gaussians of all words (and the background) scored by two matmuls."""

    def __init__(self, groups: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        # groups: (means (C, D), variances (C, D), log weights (C,)) per "state", concatenated
        means = np.concatenate([g[0] for g in groups])
        var = np.concatenate([g[1] for g in groups])
        logw = np.concatenate([g[2] for g in groups])
        prec = 1.0 / var
        self.prec_t = np.ascontiguousarray(prec.T)  # (D, C)
        self.mp_t = np.ascontiguousarray((means * prec).T)  # (D, C)
        d = means.shape[1]
        self.const = (
            -0.5 * (d * _LOG2PI + np.log(var).sum(1) + (means**2 * prec).sum(1)) + logw
        )  # (C,)
        sizes = np.array([g[0].shape[0] for g in groups])
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])
        self.single = bool(np.all(sizes == 1))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(T, D) features to (T, n_groups) log-densities."""
        comp: np.ndarray = x @ self.mp_t - 0.5 * ((x * x) @ self.prec_t) + self.const
        if self.single:
            return comp
        return np.logaddexp.reduceat(comp, self.offsets[:-1], axis=1)


class WordBank:
    """Word HMMs plus background model and calibration; `recognize` is the whole scorer."""

    def __init__(
        self,
        labels: list[str],
        models: list[WordModel],
        ubm: tuple[np.ndarray, np.ndarray, np.ndarray],
        features: FeatureConfig,
        hmm_config: HmmConfig,
        calibration: Calibration | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        if len(labels) != len(models) or not labels:
            raise BankError("a bank needs one model per label and at least one label")
        self.labels = list(labels)
        self.models = models
        self.ubm = ubm  # (weights (C,), means (C, D), variances (C, D))
        self.features = features
        self.hmm_config = hmm_config
        self.calibration = calibration or Calibration(
            dur_mean=np.zeros(len(labels)), dur_std=np.ones(len(labels))
        )
        self.info = dict(info or {})
        self._build_scorer()

    @property
    def sample_rate(self) -> int:
        return self.features.sample_rate

    # ---- scoring -------------------------------------------------------------------------

    def _build_scorer(self) -> None:
        groups: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._fallback: list[hmm.BaseHMM | None] = []
        self._state_slices: list[slice] = []
        pos = 0
        for m in self.models:
            if m.covariance_type in ("diag", "spherical"):
                for s in range(m.n_states):
                    groups.append((m.means[s], m.covars[s], _log_weights(m.weights[s])))
                self._state_slices.append(slice(pos, pos + m.n_states))
                pos += m.n_states
                self._fallback.append(None)
            else:
                self._state_slices.append(slice(0, 0))
                self._fallback.append(_to_hmmlearn(m))
        w, mu, var = self.ubm
        self._ubm_emitter = _Emitter([(mu, var, _log_weights(w))])
        self._emitter = _Emitter(groups) if groups else None
        self._start = [np.asarray(m.startprob, dtype=np.float64) for m in self.models]
        self._trans = [np.ascontiguousarray(m.transmat, dtype=np.float64) for m in self.models]

    def loglik(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        """Log-likelihood of feature matrix `x` under each word, and under the background."""
        ll, _, ubm_frames = self._scores(np.ascontiguousarray(x, dtype=np.float64))
        return ll, float(ubm_frames.sum())

    def _scores(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Word log-likelihoods, per-frame state log-densities, per-frame background."""
        frame = self._emitter(x) if self._emitter is not None else None
        out = np.empty(len(self.models))
        for i in range(len(self.models)):
            fb = self._fallback[i]
            if fb is not None:
                out[i] = fb.score(x)
                continue
            lp = np.ascontiguousarray(frame[:, self._state_slices[i]])  # type: ignore[index]
            out[i], _ = forward_log(self._start[i], self._trans[i], lp)
        return out, frame, self._ubm_emitter(x)[:, 0]

    def score_features(
        self, x: np.ndarray, dyn_range: float = DEFAULT_RANGE_DB
    ) -> tuple[np.ndarray, np.ndarray]:
        """Word log-likelihoods and the calibration feature vector for one utterance."""
        ll, frame, ubm_frames = self._scores(np.ascontiguousarray(x, dtype=np.float64))
        align = self._alignment(int(np.argmax(ll)), frame, ubm_frames)
        feats = self._calib_features(ll, float(ubm_frames.sum()), x.shape[0], dyn_range, align)
        return ll, feats

    def _alignment(
        self, i: int, frame: np.ndarray | None, ubm_frames: np.ndarray
    ) -> tuple[float, float]:
        """How evenly word i fits along its best path: the worst state's mean frame
        log-likelihood ratio against the background, and the share of states skipped.
        An unknown word often matches part of a known one well and the rest badly."""
        if frame is None or self._fallback[i] is not None:
            return 0.0, 0.0
        lp = frame[:, self._state_slices[i]]
        path = viterbi_path(lp, self._start[i], self._trans[i])
        llr = lp[np.arange(path.size), path] - ubm_frames
        counts = np.bincount(path, minlength=lp.shape[1])
        sums = np.bincount(path, weights=llr, minlength=lp.shape[1])
        seen = counts > 0
        return float(np.min(sums[seen] / counts[seen])), float(1.0 - seen.mean())

    def _calib_features(
        self,
        ll: np.ndarray,
        ubm: float,
        n_frames: int,
        dyn_range: float,
        align: tuple[float, float] = (0.0, 0.0),
    ) -> np.ndarray:
        order = np.argsort(-ll)
        best = int(order[0])
        second = ll[order[1]] if ll.size > 1 else ubm
        c = self.calibration
        dz = 0.0
        if c.dur_std.size == ll.size and c.dur_std[best] > 0:
            dz = (np.log(n_frames) - c.dur_mean[best]) / c.dur_std[best]
        return np.array(
            [
                (ll[best] - ubm) / n_frames,
                (ll[best] - second) / n_frames,
                abs(dz),
                dz,
                min(dyn_range, 60.0) / 10.0,
                max(align[0], -20.0) / 10.0,
                align[1],
            ]
        )

    def confidence(self, feats: np.ndarray) -> float:
        c = self.calibration
        z = float(feats[: c.coef.size] @ c.coef + c.intercept)  # older banks: fewer features
        return float(1.0 / (1.0 + np.exp(-np.clip(z, -50, 50))))

    def recognize_features(
        self, x: np.ndarray, nbest: int = 5, dyn_range: float = DEFAULT_RANGE_DB
    ) -> Recognition:
        """Recognition from a feature matrix; `dyn_range` is the audio's dynamic_range_db."""
        ll, feats = self.score_features(x, dyn_range)
        order = np.argsort(-ll)
        conf = self.confidence(feats)
        best = self.labels[int(order[0])]
        label = best if conf >= self.calibration.threshold_for(dyn_range) else None
        return Recognition(
            label=label,
            confidence=conf,
            nbest=tuple((self.labels[int(i)], float(ll[i])) for i in order[:nbest]),
            best=best,
        )

    def featurize(self, samples: np.ndarray, where: str = "utterance") -> np.ndarray:
        """Features as this bank scores them (see `choose_warp`)."""
        return self.choose_warp(samples, where)[1]

    def choose_warp(
        self, samples: np.ndarray, where: str = "utterance"
    ) -> tuple[float, np.ndarray]:
        """The VTLN warp and features for one utterance: the warp that the background model
        (trained on normalised speech) finds most likely, so the speaker's vocal tract is
        mapped to the average one before any word is scored. Without VTLN: (1.0, features)."""
        cands = mfcc_warps(samples, self.features, where)
        if len(cands) == 1:
            return (self.features.vtln or (1.0,))[0], cands[0]
        fit = [float(self._ubm_emitter(f)[:, 0].mean()) for f in cands]
        best = int(np.argmax(fit))
        return self.features.vtln[best], cands[best]

    def recognize(
        self, samples: np.ndarray, where: str = "utterance", nbest: int = 5
    ) -> Recognition:
        """Canonical audio at `sample_rate` to a Recognition. Raises AudioError if unusable."""
        x = self.featurize(samples, where)
        return self.recognize_features(
            x, nbest=nbest, dyn_range=dynamic_range_db(samples, self.sample_rate)
        )

    # ---- enrollment ----------------------------------------------------------------------

    def with_word(
        self,
        label: str,
        model: WordModel,
        dur_mean: float,
        dur_std: float,
        info: dict[str, Any] | None = None,
    ) -> WordBank:
        """A new bank with `label`'s model added (or replaced); every other word is untouched.

        The calibration (logistic weights, threshold) and the background model
        are kept, so the other words score exactly as before; only `label`'s
        duration statistics (log frames) are set. Enrollment builds on this.
        """
        if model.means.shape[-1] != self.features.dim:
            raise BankError(
                f"{label}: model has {model.means.shape[-1]}-dimensional features, "
                f"the bank {self.features.dim}"
            )
        labels = list(self.labels)
        models = list(self.models)
        c = self.calibration
        n = len(labels)
        dm = np.zeros(n) if c.dur_mean.size != n else c.dur_mean.astype(np.float64).copy()
        ds = np.ones(n) if c.dur_std.size != n else c.dur_std.astype(np.float64).copy()
        if label in labels:
            i = labels.index(label)
            models[i] = model
            dm[i], ds[i] = dur_mean, dur_std
        else:
            labels.append(label)
            models.append(model)
            dm, ds = np.append(dm, dur_mean), np.append(ds, dur_std)
        calibration = Calibration(
            coef=c.coef.copy(),
            intercept=c.intercept,
            threshold=c.threshold,
            dur_mean=dm,
            dur_std=ds,
            threshold_db=c.threshold_db.copy(),
            threshold_at=c.threshold_at.copy(),
        )
        return WordBank(
            labels,
            models,
            self.ubm,
            self.features,
            self.hmm_config,
            calibration,
            self.info if info is None else info,
        )

    # ---- persistence ---------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the bank as one .npz: numeric arrays and a JSON metadata string, no pickle."""
        arrays: dict[str, np.ndarray] = {}
        for i, m in enumerate(self.models):
            arrays[f"w{i}_startprob"] = m.startprob
            arrays[f"w{i}_transmat"] = m.transmat
            arrays[f"w{i}_means"] = m.means
            arrays[f"w{i}_covars"] = m.covars
            arrays[f"w{i}_weights"] = m.weights
        arrays["ubm_weights"], arrays["ubm_means"], arrays["ubm_covars"] = self.ubm
        c = self.calibration
        arrays["cal_coef"] = c.coef
        arrays["cal_dur_mean"] = c.dur_mean
        arrays["cal_dur_std"] = c.dur_std
        arrays["cal_threshold_db"] = c.threshold_db
        arrays["cal_threshold_at"] = c.threshold_at
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "labels": self.labels,
            "covariance_types": [m.covariance_type for m in self.models],
            "features": self.features.to_dict(),
            "hmm": asdict(self.hmm_config),
            "calibration": {"intercept": c.intercept, "threshold": c.threshold},
            "info": self.info,
        }
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)  # type: ignore[arg-type]  # no allow_pickle key
        tmp.replace(path)  # atomic: a running service never sees half a bank

    @classmethod
    def load(cls, path: str | Path, data: bytes | None = None) -> WordBank:
        """Read a bank saved by `save` (from `data`, the file's bytes read earlier, if given).

        Corrupt, truncated, foreign or newer files: BankError."""
        path = Path(path)
        if data is None and not path.is_file():
            raise BankError(f"{path}: no such bank file")
        try:
            with np.load(path if data is None else io.BytesIO(data), allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as e:
            raise BankError(f"{path}: not a readable bank file ({_short(e)})") from None
        if "meta" not in arrays:
            raise BankError(f"{path}: not a streamer bank (no metadata)")
        try:
            meta = json.loads(arrays["meta"].tobytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise BankError(f"{path}: corrupt bank metadata") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise BankError(f"{path}: not a streamer bank (format {meta.get('format')!r})")
        version = meta.get("version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise BankError(
                f"{path}: bank format version {version} is newer than this streamer reads "
                f"(up to {FORMAT_VERSION}); upgrade streamer"
            )
        try:
            labels = [str(s) for s in meta["labels"]]
            ctypes = meta.get("covariance_types", ["diag"] * len(labels))
            models = [
                WordModel(
                    startprob=arrays[f"w{i}_startprob"].astype(np.float64),
                    transmat=arrays[f"w{i}_transmat"].astype(np.float64),
                    means=arrays[f"w{i}_means"].astype(np.float64),
                    covars=arrays[f"w{i}_covars"].astype(np.float64),
                    weights=arrays[f"w{i}_weights"].astype(np.float64),
                    covariance_type=ctypes[i],
                )
                for i in range(len(labels))
            ]
            features = FeatureConfig.from_dict(meta["features"])
            cal = meta.get("calibration", {})
            calibration = Calibration(
                coef=arrays["cal_coef"].astype(np.float64),
                intercept=float(cal.get("intercept", 0.0)),
                threshold=float(cal.get("threshold", 0.0)),
                dur_mean=arrays["cal_dur_mean"].astype(np.float64),
                dur_std=arrays["cal_dur_std"].astype(np.float64),
                threshold_db=arrays.get("cal_threshold_db", np.zeros(0)).astype(np.float64),
                threshold_at=arrays.get("cal_threshold_at", np.zeros(0)).astype(np.float64),
            )
            ubm = (
                arrays["ubm_weights"].astype(np.float64),
                arrays["ubm_means"].astype(np.float64),
                arrays["ubm_covars"].astype(np.float64),
            )
            _validate(models, ubm, features.dim)
            return cls(
                labels,
                models,
                ubm,
                features,
                HmmConfig.from_dict(meta.get("hmm", {})),
                calibration,
                meta.get("info", {}),
            )
        except KeyError as e:
            raise BankError(f"{path}: incomplete bank (missing {e.args[0]})") from None
        except (TypeError, ValueError, ConfigError) as e:
            raise BankError(f"{path}: inconsistent bank ({_short(e)})") from None


def viterbi_path(lp: np.ndarray, start: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """The most likely state sequence given per-frame state log-likelihoods (T, S)."""
    with np.errstate(divide="ignore"):
        ls, lt = np.log(start), np.log(trans)
    t_len, s = lp.shape
    back = np.zeros((t_len, s), dtype=np.intp)
    d = ls + lp[0]
    cols = np.arange(s)
    for t in range(1, t_len):
        cand = d[:, None] + lt
        back[t] = np.argmax(cand, axis=0)
        d = cand[back[t], cols] + lp[t]
    path = np.empty(t_len, dtype=np.intp)
    path[-1] = int(np.argmax(d))
    for t in range(t_len - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def _short(e: BaseException) -> str:
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__


def _validate(
    models: list[WordModel], ubm: tuple[np.ndarray, np.ndarray, np.ndarray], dim: int
) -> None:
    for i, m in enumerate(models):
        s = m.startprob.size
        if m.transmat.shape != (s, s) or m.means.shape[0] != s or m.means.shape[-1] != dim:
            raise ValueError(f"word {i} has arrays of mismatched shapes")
        for a in (m.startprob, m.transmat, m.means, m.covars, m.weights):
            if not np.all(np.isfinite(a)):
                raise ValueError(f"word {i} has non-finite parameters")
        if m.covariance_type in ("diag", "spherical") and np.any(m.covars <= 0):
            raise ValueError(f"word {i} has non-positive variances")
    w, mu, var = ubm
    if mu.shape[-1] != dim or var.shape != mu.shape or w.shape[0] != mu.shape[0]:
        raise ValueError("background model has mismatched shapes")


def _to_hmmlearn(m: WordModel) -> hmm.BaseHMM:
    """A scoring-only hmmlearn model for full/tied covariances (no fast path for those)."""
    n_mix = m.weights.shape[1]
    if n_mix == 1:
        model = hmm.GaussianHMM(m.n_states, covariance_type=m.covariance_type, init_params="")
        model.means_ = m.means[:, 0]
        model.covars_ = m.covars[:, 0] if m.covariance_type == "full" else m.covars
    else:
        model = hmm.GMMHMM(m.n_states, n_mix, covariance_type=m.covariance_type, init_params="")
        model.means_ = m.means
        model.covars_ = m.covars
        model.weights_ = m.weights
    model.startprob_ = m.startprob
    model.transmat_ = m.transmat
    model.n_features = m.means.shape[-1]
    return model


# ---- training ------------------------------------------------------------------------------


def choose_n_states(lengths: list[int], cfg: HmmConfig) -> int:
    if cfg.n_states > 0:
        return cfg.n_states
    med = float(np.median(lengths))
    return int(np.clip(round(med / cfg.frames_per_state), cfg.min_states, cfg.max_states))


def _left_right(n: int, mean_stay: float, skip: bool) -> tuple[np.ndarray, np.ndarray]:
    start = np.zeros(n)
    start[0] = 1.0
    stay = float(np.clip(1.0 - 1.0 / max(mean_stay, 1.5), 0.3, 0.95))
    trans = np.zeros((n, n))
    for i in range(n):
        if i == n - 1:
            trans[i, i] = 1.0
        elif skip and i < n - 2:
            trans[i, i], trans[i, i + 1], trans[i, i + 2] = (
                stay,
                (1 - stay) * 0.85,
                (1 - stay) * 0.15,
            )
        else:
            trans[i, i], trans[i, i + 1] = stay, 1 - stay
    return start, trans


def _segment_init(
    seqs: list[np.ndarray],
    n: int,
    n_mix: int,
    rng: np.random.Generator,
    jitter: bool,
    min_covar: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat start: cut each example into n stretches (randomly for restarts), pool per state."""
    d = seqs[0].shape[1]
    buckets: list[list[np.ndarray]] = [[] for _ in range(n)]
    for x in seqs:
        t = x.shape[0]
        if jitter:
            cuts = np.sort(rng.dirichlet(np.full(n, 4.0)).cumsum()[:-1] * t).astype(int)
        else:
            cuts = (np.arange(1, n) * t) // n
        for s, part in enumerate(np.split(x, cuts)):
            if part.size:
                buckets[s].append(part)
    allx = np.concatenate(seqs)
    gvar = allx.var(0) + min_covar
    means = np.empty((n, n_mix, d))
    var = np.empty((n, n_mix, d))
    for s, b in enumerate(buckets):
        frames = np.concatenate(b) if b else allx
        mu = frames.mean(0)
        v = frames.var(0) + min_covar if len(frames) > 1 else gvar
        for k in range(n_mix):
            means[s, k] = mu + (rng.standard_normal(d) * np.sqrt(v) * 0.3 if n_mix > 1 else 0.0)
            var[s, k] = v
    weights = np.full((n, n_mix), 1.0 / n_mix)
    return means, var, weights


def fit_word(seqs: list[np.ndarray], cfg: HmmConfig, seed: int) -> tuple[WordModel, float]:
    """Best of cfg.n_restarts EM runs on all of one word's examples (hmmlearn `lengths`)."""
    if not seqs:
        raise ConfigError("a word needs at least one example")
    x = np.concatenate(seqs)
    lengths = [s.shape[0] for s in seqs]
    n = choose_n_states(lengths, cfg)
    rng = np.random.default_rng(seed)
    best: tuple[WordModel, float] | None = None
    for r in range(cfg.n_restarts):
        model = _new_hmm(cfg, n, int(rng.integers(2**31 - 1)))
        if cfg.topology == "left-right":
            start, trans = _left_right(n, float(np.median(lengths)) / n, cfg.skip)
            means, var, weights = _segment_init(seqs, n, cfg.n_mix, rng, r > 0, cfg.min_covar)
            model.startprob_, model.transmat_ = start, trans
            _set_emissions(model, cfg, means, var, weights)
            model.init_params = ""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                model.fit(x, lengths)
                ll = float(model.score(x, lengths))
            except (ValueError, np.linalg.LinAlgError) as e:
                log.debug("restart %d failed: %s", r, e)
                continue
        for w in caught:
            log.debug("hmmlearn: %s", w.message)
        if not np.isfinite(ll):
            continue
        log.debug("restart %d: %d states, loglik %.1f", r, n, ll)
        if best is None or ll > best[1]:
            best = (_from_hmmlearn(model, cfg), ll)
    if best is None:
        raise ConfigError("every training restart failed (too little or degenerate data)")
    return best


def _new_hmm(cfg: HmmConfig, n: int, seed: int) -> hmm.BaseHMM:
    common = dict(
        n_iter=cfg.n_iter,
        tol=cfg.tol,
        random_state=seed,
        params="stmcw" if cfg.n_mix > 1 else "stmc",
    )
    if cfg.n_mix == 1:
        return hmm.GaussianHMM(
            n, covariance_type=cfg.covariance_type, min_covar=cfg.min_covar, **common
        )
    return hmm.GMMHMM(
        n, cfg.n_mix, covariance_type=cfg.covariance_type, min_covar=cfg.min_covar, **common
    )


def _set_emissions(
    model: hmm.BaseHMM, cfg: HmmConfig, means: np.ndarray, var: np.ndarray, weights: np.ndarray
) -> None:
    d = means.shape[2]
    model.n_features = d
    if cfg.n_mix == 1:
        model.means_ = means[:, 0]
        v = var[:, 0]
        if cfg.covariance_type == "diag":
            model.covars_ = v
        elif cfg.covariance_type == "spherical":
            model.covars_ = v.mean(1)
        elif cfg.covariance_type == "full":
            model.covars_ = np.stack([np.diag(vi) for vi in v])
        else:
            model.covars_ = np.diag(v.mean(0))
    else:
        model.means_ = means
        model.weights_ = weights
        if cfg.covariance_type == "diag":
            model.covars_ = var
        elif cfg.covariance_type == "spherical":
            model.covars_ = var.mean(2)
        elif cfg.covariance_type == "full":
            model.covars_ = np.stack([[np.diag(v) for v in vs] for vs in var])
        else:
            model.covars_ = np.diag(var.reshape(-1, d).mean(0))


def _from_hmmlearn(model: hmm.BaseHMM, cfg: HmmConfig) -> WordModel:
    n = model.n_components
    d = model.n_features
    ct = cfg.covariance_type
    if cfg.n_mix == 1:
        means = model.means_[:, None, :]
        weights = np.ones((n, 1))
        if ct in ("diag", "spherical"):
            # hmmlearn's covars_ property expands to full matrices: the stored form instead
            raw = stored_covars(model)
            if raw.ndim == 1:  # spherical: one variance per state
                raw = np.repeat(raw[:, None], d, axis=1)
            covars = raw[:, None, :]
            ct_out = "diag"
        elif ct == "full":
            covars = _regularise(stored_covars(model), cfg.min_covar)[:, None]
            ct_out = "full"
        else:
            covars = _regularise(stored_covars(model)[None], cfg.min_covar)[0]
            ct_out = "tied"
    else:
        means = model.means_
        weights = model.weights_
        raw = np.asarray(model.covars_)
        if ct == "diag":
            covars, ct_out = raw, "diag"
        elif ct == "spherical":
            covars, ct_out = np.repeat(raw[:, :, None], d, axis=2), "diag"
        else:
            covars, ct_out = raw, ct
    return WordModel(
        startprob=np.asarray(model.startprob_, dtype=np.float64),
        transmat=np.asarray(model.transmat_, dtype=np.float64),
        means=np.asarray(means, dtype=np.float64),
        covars=np.asarray(covars, dtype=np.float64),
        weights=np.asarray(weights, dtype=np.float64),
        covariance_type=ct_out,
    )


def _regularise(covs: np.ndarray, floor: float) -> np.ndarray:
    """Symmetrise full covariances and lift any that a starved state left singular."""
    covs = 0.5 * (covs + np.swapaxes(covs, -1, -2))
    eye = np.eye(covs.shape[-1])
    for i in range(covs.shape[0]):
        lo = float(np.linalg.eigvalsh(covs[i]).min())
        if lo < floor:
            covs[i] = covs[i] + (floor - lo) * eye
    return covs


def background_fit(ubm: tuple[np.ndarray, np.ndarray, np.ndarray], x: np.ndarray) -> float:
    """Mean per-frame log-likelihood of features `x` under a background GMM."""
    w, mu, var = ubm
    return float(_Emitter([(mu, var, _log_weights(w))])(x)[:, 0].mean())


def fit_background(
    frames: np.ndarray,
    n_components: int,
    seed: int,
    min_covar: float = 1e-3,
    max_frames: int = 20000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A diagonal GMM over all speech frames: the reference for likelihood ratios."""
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(seed)
    if frames.shape[0] > max_frames:
        frames = frames[rng.choice(frames.shape[0], max_frames, replace=False)]
    k = int(min(n_components, max(1, frames.shape[0] // 20)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter: the fit is good enough either way
        gmm = GaussianMixture(
            k,
            covariance_type="diag",
            reg_covar=min_covar,
            max_iter=25,
            random_state=seed,
            init_params="k-means++",
        ).fit(frames)
    return (
        np.asarray(gmm.weights_, dtype=np.float64),
        np.asarray(gmm.means_, dtype=np.float64),
        np.asarray(gmm.covariances_, dtype=np.float64),
    )
