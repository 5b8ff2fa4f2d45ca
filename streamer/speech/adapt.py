"""Adapting a bank to one speaker from a few takes per word (MAP).

A bank trained on many speakers describes an average voice. A few takes of
each word by one user move it towards that user without forgetting the rest:
each Gaussian's mean becomes a weighted average of its trained value (worth
`tau` frames) and the frames the take's own word model assigns to it (by
forward-backward), so a state that sees many frames moves far and one that
sees none stays put. The recipe's speaker normalisation is adapted too: a bank
with vocal-tract-length normalisation fixes the speaker's warp, chosen by the
background model's likelihood over all of the takes, instead of guessing it
again for every utterance.

Takes that are silence, steady noise, clipped, or fit no word nearly as well as
background speech are reported and left out: adapting on them would teach the bank noise. Words
without takes stay exactly as they were. The result is an ordinary bank.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.special import logsumexp

from streamer.errors import AudioError, BankError, DataError
from streamer.speech.bank import WordBank, WordModel, background_fit
from streamer.speech.features import dynamic_range_db, mfcc_warps

log = logging.getLogger(__name__)

CLIP_LEVEL = 0.99
CLIP_SHARE = 0.01  # more samples than this at full scale: a clipped take
MIN_RANGE_DB = 6.0  # loud over quiet parts below this: steady noise, no word in it
MIN_FIT = -3.0  # best word's per-frame log-likelihood ratio vs background below this: no word

Takes = dict[str, list[tuple[str, np.ndarray]]]  # label -> (where, canonical audio)


@dataclass
class AdaptReport:
    """What adaptation used and what it refused, for the command's summary."""

    used: dict[str, int] = field(default_factory=dict)  # label -> takes adapted on
    refused: list[tuple[str, str]] = field(default_factory=list)  # (where, why)
    warp: float | None = None


def check_take(bank: WordBank, x: np.ndarray, where: str) -> str | None:
    """Why a take must not be adapted on, or None when it is usable."""
    if x.size == 0 or not np.any(x):
        return "silence"
    if np.mean(np.abs(x) >= CLIP_LEVEL) > CLIP_SHARE:
        return f"clipped ({np.mean(np.abs(x) >= CLIP_LEVEL):.1%} of samples at full scale)"
    rng = dynamic_range_db(x, bank.sample_rate)
    if rng < MIN_RANGE_DB:
        return f"no speech in it (loud parts only {rng:.1f} dB above quiet ones)"
    try:
        f = bank.featurize(x, where)
    except AudioError as e:
        return str(e).removeprefix(f"{where}: ")
    ll, ubm = bank.loglik(f)
    fit = (float(ll.max()) - ubm) / f.shape[0]
    if fit < MIN_FIT:
        return f"fits no word (best word {fit:.2f} nats/frame below background speech)"
    return None


def speaker_warp(bank: WordBank, xs: list[np.ndarray]) -> float | None:
    """The bank's VTLN warp that makes all of one speaker's takes most likely, or None."""
    warps = bank.features.vtln
    if len(warps) < 2 or not xs:
        return None
    total = np.zeros(len(warps))
    for x in xs:
        for i, f in enumerate(mfcc_warps(x, bank.features)):
            total[i] += background_fit(bank.ubm, f) * f.shape[0]
    return float(warps[int(np.argmax(total))])


def _state_posteriors(bank: WordBank, i: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame, per-state, per-component posteriors of word i's model on features x."""
    m = bank.models[i]
    comp = _component_logpdf(m, x)  # (T, S, M)
    lp = logsumexp(comp, axis=2)  # (T, S)
    with np.errstate(divide="ignore"):
        ls, lt = np.log(m.startprob), np.log(m.transmat)
    t_len, s = lp.shape
    fwd = np.empty((t_len, s))
    bwd = np.zeros((t_len, s))
    fwd[0] = ls + lp[0]
    for t in range(1, t_len):
        fwd[t] = logsumexp(fwd[t - 1][:, None] + lt, axis=0) + lp[t]
    for t in range(t_len - 2, -1, -1):
        bwd[t] = logsumexp(lt + (lp[t + 1] + bwd[t + 1])[None, :], axis=1)
    post = fwd + bwd
    post = np.exp(post - logsumexp(post, axis=1, keepdims=True))  # (T, S)
    within = np.exp(comp - lp[:, :, None])  # (T, S, M)
    return post, post[:, :, None] * within


def _component_logpdf(m: WordModel, x: np.ndarray) -> np.ndarray:
    if m.covariance_type != "diag":
        raise BankError("adaptation needs diagonal-covariance word models")
    mu, var = m.means, m.covars  # (S, M, D)
    diff = x[:, None, None, :] - mu[None]
    with np.errstate(divide="ignore"):
        logw = np.log(m.weights)
    out: np.ndarray = logw[None] - 0.5 * (
        np.sum(diff * diff / var[None], axis=3) + np.sum(np.log(2 * np.pi * var), axis=2)[None]
    )
    return out


def map_means(
    model: WordModel, frames: list[tuple[np.ndarray, np.ndarray]], tau: float
) -> WordModel:
    """MAP re-estimate of the Gaussian means from (features, component posteriors) pairs."""
    num = np.zeros_like(model.means)
    occ = np.zeros(model.means.shape[:2])
    for x, gamma in frames:  # gamma: (T, S, M)
        occ += gamma.sum(0)
        num += np.einsum("tsm,td->smd", gamma, x)
    means = (tau * model.means + num) / (tau + occ)[:, :, None]
    return replace(model, means=means)


def adapt_bank(
    bank: WordBank,
    takes: Takes,
    tau: float = 10.0,
    on_refused: Callable[[str, str], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[WordBank, AdaptReport]:
    """A copy of `bank` adapted to the speaker of `takes`; DataError for an unknown word
    or when no take is usable. `progress` hears of each step as it ends: the speaker
    warp, then each word of `takes` (``len(takes) + 1`` steps)."""
    step = progress or (lambda note: None)
    unknown = sorted(set(takes) - set(bank.labels))
    if unknown:
        raise DataError(
            f"takes for {', '.join(repr(w) for w in unknown)}: the bank has no such word "
            f"(it knows {', '.join(bank.labels)}); use `streamer enroll` to add one"
        )
    report = AdaptReport()
    good: dict[str, list[np.ndarray]] = {}
    for label, items in takes.items():
        for where, x in items:
            why = check_take(bank, x, where)
            if why:
                report.refused.append((where, why))
                if on_refused:
                    on_refused(where, why)
                continue
            good.setdefault(label, []).append(x)
    if not good:
        raise DataError("no usable take to adapt on")
    warp = speaker_warp(bank, [x for xs in good.values() for x in xs])
    step("speaker warp")
    features = bank.features if warp is None else replace(bank.features, vtln=(warp,))
    fixed = WordBank(
        bank.labels, bank.models, bank.ubm, features, bank.hmm_config, bank.calibration, bank.info
    )
    models = list(bank.models)
    for label, xs in good.items():
        i = bank.labels.index(label)
        stats = []
        for x in xs:
            f = fixed.featurize(x)
            stats.append((f, _state_posteriors(fixed, i, f)[1]))
        models[i] = map_means(models[i], stats, tau)
        report.used[label] = len(xs)
        step(label)
    for label in takes:
        if label not in good:
            step(f"{label} (no usable take)")
    report.warp = warp
    info = dict(bank.info or {})
    info["adapted"] = {"takes": report.used, "tau": tau, "warp": warp}
    new = WordBank(bank.labels, models, bank.ubm, features, bank.hmm_config, bank.calibration, info)
    return new, report
