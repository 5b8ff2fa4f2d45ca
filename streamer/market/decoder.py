"""Online regime decoding: a forward filter per tick, warm-up, and refits in the background.

Three layers, each usable alone:

- `RegimeDecoder` (pure, sync) is bound to one model. ``step(t, price)`` updates the
  filtered state probabilities P(state_t | ticks up to t) in O(K^2) and returns a
  `RegimeDecode` (``None`` for the first tick, which has no return). ``step_many``
  does the same for arrays, for fast replay and benchmarks. Its filtered
  probabilities equal the last row of hmmlearn's ``predict_proba`` on the same prefix.
- `RegimeTracker` (pure, sync) adds the life cycle: the first `warmup` ticks are
  buffered, the model is fitted on them, and then the buffered ticks are decoded
  through the filter, so the output still has one decode per tick after the first
  (those early decodes use parameters fitted on the warm-up window; the filter itself
  never looks ahead). Every `refit_every` ticks a refit on the last `window` ticks is
  started; the old model keeps decoding, and the new one, states matched to the old,
  takes over after exactly `swap_delay` more ticks. Swapping at a fixed tick, rather
  than whenever the fit happens to finish, keeps a replay's output identical on any
  machine; at real-time pace the fit is long done by then, so nothing waits.
- `decode_stream` / `decode_arrays` (async) run the tracker's fits in an executor so
  the event loop (and the other streams on it) never stalls, and await a fit only at
  the tick where it must be installed.

The filter works on normalised probabilities: each step multiplies the predicted
probabilities by the emission likelihoods, shifted by their maximum in log space, and
renormalises. That is exactly the log-space forward recursion (the same normalised
alpha), three times cheaper in Python; whenever the product would underflow to zero
the step is redone in log space with logsumexp. Plain Python floats beat numpy for
K <= 5 on a single tick (a numpy call costs about a microsecond however small), and
the recursions are compiled per K as unrolled loops (see `_forward_kernel`); the
batch path computes the emissions and the fixed-lag smoothing vectorised in numpy.

The fixed-lag smoothed state (``smoothed_state`` for the tick `lag` ticks back, at
``smoothed_t``) is P(state_{t-L} | ticks up to t): the filtered probabilities at t-L
times a backward pass over the last L emissions, O(L K^2) per tick.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
from collections import Counter, deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import cache
from itertools import islice
from math import exp
from operator import mul
from typing import Any

import numpy as np

from streamer.errors import ConfigError, TickError
from streamer.market.model import (
    DEFAULT_STICKINESS,
    FitReport,
    RegimeModel,
    fit_regimes,
    match_states,
)
from streamer.messages import RegimeDecode, Tick

log = logging.getLogger(__name__)

MIN_WARMUP = 50
MAX_WARMUP = 1500
GAP_FACTOR = 10.0  # a tick more than this many dt_ref after the previous one counts as a gap
_LOG2PI = math.log(2.0 * math.pi)
_NEVER = sys.maxsize


def _check_tick(t: float, price: float, last_t: float | None) -> str | None:
    """The skip reason for a tick, or None if it is usable after a tick at `last_t`."""
    if not (price > 0.0 and price < math.inf):
        return "bad_price"
    if not (-math.inf < t < math.inf):
        return "unparseable"
    if last_t is not None and not t > last_t:
        return "duplicate" if t == last_t else "out_of_order"
    return None


def _accept_mask(
    t: np.ndarray, p: np.ndarray, last_t: float | None, skipped: Counter[str]
) -> np.ndarray:
    """Vectorised `_check_tick` over a batch (a tick is judged against the last accepted one)."""
    okp = (p > 0.0) & np.isfinite(p)
    okt = np.isfinite(t)
    ok = okp & okt
    before = np.maximum.accumulate(
        np.concatenate([[-np.inf if last_t is None else last_t], np.where(ok, t, -np.inf)])
    )[:-1]
    acc: np.ndarray = ok & (t > before)
    if not acc.all():
        for reason, bad in (
            ("bad_price", ~okp),
            ("unparseable", okp & ~okt),
            ("duplicate", ok & (t == before)),
            ("out_of_order", ok & (t < before)),
        ):
            count = int(bad.sum())
            if count:
                skipped[reason] += count
    return acc


def _tup(names: Iterable[str]) -> str:
    return "(" + ", ".join(names) + ",)"


def _compile(src: list[str], name: str) -> Callable[..., Any]:
    namespace: dict[str, Any] = {}
    exec("\n".join(src), namespace)  # the source is built from integers only
    fn: Callable[..., Any] = namespace[name]
    return fn


@cache
def _forward_kernel(k: int) -> Callable[..., tuple[bool, tuple[float, ...]]]:
    """The forward recursion for K states as an unrolled loop, compiled once per K.

    Why generated code: for K <= 5 a step is a few dozen float operations, and in
    Python the cost is per operation, not per flop; unrolled over the states (locals,
    no list comprehensions) the loop runs about 2.5 times faster. Both `step` and
    `step_many` use it, so they give bit-identical numbers. It stops at a row whose
    scaled product underflows (returning False) for the caller to redo that step in
    log space.
    """
    r = range(k)
    alphas = _tup(f"a{j}" for j in r)
    src = [
        "def forward(rows, alpha, trans, out, norms):",
        f"    {_tup(_tup(f'A{i}_{j}' for j in r) for i in r)} = trans",
        f"    {alphas} = alpha",
        f"    for {_tup(f'e{j}' for j in r)} in rows:",
    ]
    for j in r:
        src.append(f"        p{j} = ({' + '.join(f'a{i} * A{i}_{j}' for i in r)}) * e{j}")
    src.append(f"        s = {' + '.join(f'p{j}' for j in r)}")
    src.append("        if not s > 0.0:")
    src.append(f"            return False, {alphas}")
    src.extend(f"        a{j} = p{j} / s" for j in r)
    src.append(f"        out({alphas})")
    src.append("        norms(s)")
    src.append(f"    return True, {alphas}")
    return _compile(src, "forward")


@cache
def _backward_kernel(k: int) -> Callable[..., tuple[float, ...]]:
    """The normalised backward recursion over emission rows (newest first), unrolled likewise."""
    r = range(k)
    betas = _tup(f"b{j}" for j in r)
    src = [
        "def backward(rows, trans):",
        f"    {_tup(_tup(f'A{i}_{j}' for j in r) for i in r)} = trans",
        f"    {betas} = {_tup('1.0' for _ in r)}",
        f"    for {_tup(f'e{j}' for j in r)} in rows:",
    ]
    src.extend(f"        w{j} = b{j} * e{j}" for j in r)
    for i in r:
        src.append(f"        c{i} = {' + '.join(f'A{i}_{j} * w{j}' for j in r)}")
    src.append(f"        s = {' + '.join(f'c{j}' for j in r)}")
    src.append("        if not s > 0.0:")
    src.append("            break")
    src.extend(f"        b{j} = c{j} / s" for j in r)
    src.append(f"    return {betas}")
    return _compile(src, "backward")


def _discard(_: object) -> None:
    pass


@dataclass(frozen=True, eq=False)
class DecodeBatch:
    """Decodes of consecutive ticks as arrays (``step_many``); `decodes()` gives the messages."""

    symbol: str
    names: tuple[str, ...]
    t: np.ndarray  # (n,)
    price: np.ndarray  # (n,)
    probs: np.ndarray  # (n, K) filtered
    state: np.ndarray  # (n,) argmax of probs
    changed: np.ndarray  # (n,) bool
    smoothed_state: np.ndarray  # (n,) -1 where not available yet
    smoothed_t: np.ndarray  # (n,) NaN where not available yet

    def __len__(self) -> int:
        return len(self.t)

    def decodes(self) -> list[RegimeDecode]:
        names = self.names
        out = []
        for t, p, pr, s, c, ss, st in zip(
            self.t.tolist(),
            self.price.tolist(),
            self.probs.tolist(),
            self.state.tolist(),
            self.changed.tolist(),
            self.smoothed_state.tolist(),
            self.smoothed_t.tolist(),
            strict=True,
        ):
            smoothed = (ss, st) if ss >= 0 else (None, None)
            out.append(RegimeDecode(self.symbol, t, p, s, names[s], tuple(pr), c, *smoothed))
        return out


class RegimeDecoder:
    """The forward filter for one model (see the module docstring); pure and synchronous."""

    def __init__(self, model: RegimeModel, symbol: str = "", *, lag: int = 0) -> None:
        if lag < 0:
            raise ConfigError(f"lag must be >= 0, not {lag}")
        self.symbol = symbol
        self.lag = lag
        self._t: float | None = None
        self._p = 0.0
        self._alpha: tuple[float, ...] | None = None  # None: the next return starts from startprob
        self._state: int | None = None
        self._hist: deque[tuple[float, tuple[float, ...], list[float]]] = deque(maxlen=lag + 1)
        self.loglik = 0.0  # of the decoded returns, in normalised-return units
        self.decoded = 0
        self.gaps = 0
        self.resets = 0
        self.skipped: Counter[str] = Counter()
        self._set_model(model)

    def _set_model(self, model: RegimeModel) -> None:
        self.model = model
        self.k = model.k
        self._names = model.names
        self._dtref = float(model.dt_ref)
        var = model.variances
        self._c = -0.5 * (_LOG2PI + np.log(var))
        self._h = 0.5 / var
        self._mu = np.asarray(model.means, dtype=float)
        self._em = list(zip(self._c.tolist(), self._mu.tolist(), self._h.tolist(), strict=True))
        a = np.asarray(model.transmat, dtype=float)
        self._at = np.ascontiguousarray(a.T)
        self._trans = tuple(tuple(row) for row in a.tolist())
        self._forward = _forward_kernel(self.k)
        self._backward = _backward_kernel(self.k)
        with np.errstate(divide="ignore"):
            self._logcols = np.log(a).T.tolist()
        self._start = np.asarray(model.startprob, dtype=float).tolist()

    def swap(self, model: RegimeModel) -> None:
        """Decode the following ticks with `model`, keeping the filter's current probabilities.

        The states must already mean the same regimes (both sorted by volatility, or
        matched with `match_states`); with a different K the filter restarts from the
        new model's start probabilities.
        """
        if model.k != self.k:
            self._alpha = None
            self._state = None
            self._hist.clear()
        self._set_model(model)

    @property
    def probs(self) -> tuple[float, ...] | None:
        """The current filtered probabilities (None before the first return)."""
        return None if self._alpha is None else tuple(self._alpha)

    def _first_step(
        self, e: list[float], lb: list[float], mx: float
    ) -> tuple[tuple[float, ...], float]:
        """The first return: the start probabilities stand in for the prediction."""
        pr = list(map(mul, self._start, e))
        s = sum(pr)
        if s > 0.0:
            return tuple(v / s for v in pr), math.log(s) + mx
        return self._log_step(None, lb)

    def _log_step(
        self, alpha: tuple[float, ...] | None, lb: list[float]
    ) -> tuple[tuple[float, ...], float]:
        """The forward step in log space, for when the scaled one underflows."""
        if alpha is None:
            with np.errstate(divide="ignore"):
                lp = (np.log(np.asarray(self._start)) + lb).tolist()
        else:
            la = [math.log(v) if v > 0.0 else -math.inf for v in alpha]
            lp = []
            for col, lbj in zip(self._logcols, lb, strict=True):
                terms = [x + y for x, y in zip(la, col, strict=True)]
                m = max(terms)
                if m == -math.inf:
                    lp.append(-math.inf)
                else:
                    lp.append(m + math.log(sum(math.exp(v - m) for v in terms)) + lbj)
        m = max(lp)
        if m == -math.inf:
            # no regime reachable from the current one explains this return (only possible
            # with hand-made models holding exact zeros): restart the filter here, not crash
            self.resets += 1
            lp, m = list(lb), max(lb)
        w = [math.exp(v - m) for v in lp]
        s = sum(w)
        return tuple(v / s for v in w), m + math.log(s)

    def step(self, t: float, price: float) -> RegimeDecode | None:
        """Filter one tick; None for the first tick (no return yet) or a skipped one."""
        reason = _check_tick(t, price, self._t)
        if reason is not None:
            self.skipped[reason] += 1
            return None
        if self._t is None:
            self._t, self._p = t, price
            return None
        dt = t - self._t
        if dt > GAP_FACTOR * self._dtref:
            self.gaps += 1
        x = math.log(price / self._p) * math.sqrt(self._dtref / dt)
        self._t, self._p = t, price
        # hot path: plain floats and the unrolled kernel, no numpy (see the module docstring)
        lb = [c - h * (x - m) * (x - m) for c, m, h in self._em]
        mx = max(lb)
        e = [exp(v - mx) for v in lb]
        a = self._alpha
        norm: list[float] = []
        if a is None:
            a, ll = self._first_step(e, lb, mx)
            self.loglik += ll
        else:
            ok, a = self._forward((e,), a, self._trans, _discard, norm.append)
            if ok:
                self.loglik += math.log(norm[0]) + mx
            else:
                a, ll = self._log_step(a, lb)
                self.loglik += ll
        self._alpha = a
        self.decoded += 1
        state = a.index(max(a))
        changed = self._state is not None and state != self._state
        self._state = state
        smoothed_state = smoothed_t = None
        if self.lag:
            hist = self._hist
            hist.append((t, a, e))
            if len(hist) > self.lag:
                beta = self._backward(
                    (row for _, _, row in islice(reversed(hist), self.lag)), self._trans
                )
                smoothed_t, a0, _ = hist[0]
                sm = list(map(mul, a0, beta))
                smoothed_state = sm.index(max(sm))
        return RegimeDecode(
            self.symbol,
            t,
            price,
            state,
            self._names[state],
            a,
            changed,
            smoothed_state,
            smoothed_t,
        )

    def step_many(self, times: np.ndarray, prices: np.ndarray) -> DecodeBatch:
        """`step` over arrays of ticks, returning the decodes as arrays (same numbers)."""
        t = np.asarray(times, dtype=float).reshape(-1)
        p = np.asarray(prices, dtype=float).reshape(-1)
        if t.shape != p.shape:
            raise TickError("times and prices must have the same length")
        acc = _accept_mask(t, p, self._t, self.skipped)
        if not acc.all():
            t, p = t[acc], p[acc]
        if self._t is None and len(t):
            self._t, self._p = float(t[0]), float(p[0])
            t, p = t[1:], p[1:]
        m = len(t)
        if m == 0:
            return self._empty()
        pt = np.concatenate([[self._t], t])
        pp = np.concatenate([[self._p], p])
        dt = np.diff(pt)
        self.gaps += int((dt > GAP_FACTOR * self._dtref).sum())
        x = np.log(pp[1:] / pp[:-1]) * np.sqrt(self._dtref / dt)
        self._t, self._p = float(t[-1]), float(p[-1])
        lb = self._c - self._h * (x[:, None] - self._mu) ** 2
        mx = lb.max(1)
        e_arr = np.exp(lb - mx[:, None])
        # flat lists in and out: ~3x faster than a list of rows and a list of tuples
        k = self.k
        flat = iter(e_arr.ravel().tolist())
        rows = zip(*([flat] * k), strict=False)
        a = self._alpha
        out: list[float] = []
        norms: list[float] = []
        fixes: dict[int, float] = {}
        if a is None:
            a, fixes[0] = self._first_step(list(next(rows)), lb[0].tolist(), float(mx[0]))
            out.extend(a)
            norms.append(1.0)
        while len(norms) < m:
            ok, a = self._forward(rows, a, self._trans, out.extend, norms.append)
            if not ok:  # the kernel stopped at row `pos`, already taken from `rows`
                pos = len(norms)
                a, fixes[pos] = self._log_step(a, lb[pos].tolist())
                out.extend(a)
                norms.append(1.0)
        ll = np.log(np.asarray(norms)) + mx
        for i, v in fixes.items():
            ll[i] = v
        self.loglik += float(ll.sum())
        self._alpha = a
        self.decoded += m
        probs = np.asarray(out).reshape(m, k)
        state = probs.argmax(1)
        changed = np.empty(m, dtype=bool)
        changed[0] = self._state is not None and int(state[0]) != self._state
        changed[1:] = state[1:] != state[:-1]
        self._state = int(state[-1])
        sm_state = np.full(m, -1, dtype=np.int64)
        sm_t = np.full(m, np.nan)
        if self.lag:
            sm_state, sm_t = self._smooth_many(t, probs, e_arr)
        return DecodeBatch(self.symbol, self._names, t, p, probs, state, changed, sm_state, sm_t)

    def _smooth_many(
        self, t: np.ndarray, probs: np.ndarray, e_arr: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fixed-lag smoothing for a batch, vectorised over ticks (same numbers as `step`)."""
        lag, k, m = self.lag, self.k, len(t)
        hist = list(self._hist)[-lag:] if lag else []
        h = len(hist)
        if h:
            th = np.concatenate([[r[0] for r in hist], t])
            fh = np.vstack([np.asarray([r[1] for r in hist]).reshape(h, k), probs])
            eh = np.vstack([np.asarray([r[2] for r in hist]).reshape(h, k), e_arr])
        else:
            th, fh, eh = t, probs, e_arr
        g = h + np.arange(m)
        valid = g - lag >= 0
        idx = g[valid]
        v = np.ones((len(idx), k))
        at = self._at
        for step in range(lag):
            # einsum, not @: BLAS threads on an (n, K) x (K, K) product only fight when busy
            v = np.einsum("ij,jk->ik", eh[idx - step] * v, at)
            v /= v.sum(1, keepdims=True)
        sm = fh[idx - lag] * v
        sm_state = np.full(m, -1, dtype=np.int64)
        sm_t = np.full(m, np.nan)
        sm_state[valid] = sm.argmax(1)
        sm_t[valid] = th[idx - lag]
        keep = min(lag + 1, len(th))
        self._hist.extend(
            zip(
                th[-keep:].tolist(),
                fh[-keep:].tolist(),
                eh[-keep:].tolist(),
                strict=True,
            )
        )
        return sm_state, sm_t

    def _empty(self) -> DecodeBatch:
        z = np.zeros(0)
        return DecodeBatch(
            self.symbol,
            self._names,
            z,
            z,
            np.zeros((0, self.k)),
            np.zeros(0, dtype=np.int64),
            np.zeros(0, dtype=bool),
            np.zeros(0, dtype=np.int64),
            z,
        )


@dataclass(frozen=True)
class TrackerConfig:
    """How a `RegimeTracker` warms up, refits and smooths (counts are in ticks)."""

    warmup: int = 1000  # ticks buffered before the first fit (50..1500)
    states: int | None = None  # K, or None: the BIC-best of 2..5 at the first fit
    refit_every: int = 500  # start a refit every N ticks after the first fit (0 = never)
    window: int = 5000  # refits use the last N ticks
    lag: int = 10  # fixed-lag smoothing (0 = no smoothed state)
    restarts: int = 4  # EM starts per K for the first fit
    refit_restarts: int = 2  # for refits: the old model as a warm start, plus fresh ones
    swap_delay: int = 50  # ticks between starting a refit and using its model
    stickiness: float = DEFAULT_STICKINESS  # prior weight on staying in a regime (see model.py)
    seed: int = 0

    def __post_init__(self) -> None:
        if not MIN_WARMUP <= self.warmup <= MAX_WARMUP:
            raise ConfigError(
                f"--warmup must be between {MIN_WARMUP} and {MAX_WARMUP} ticks, not {self.warmup}"
            )
        if self.states is not None and not 2 <= self.states <= 5:
            raise ConfigError(f"--states must be between 2 and 5, not {self.states}")
        if self.refit_every < 0:
            raise ConfigError(f"--refit-every must be >= 0, not {self.refit_every}")
        if self.window < self.warmup:
            raise ConfigError(f"the refit window ({self.window}) is shorter than the warm-up")
        if not 0 <= self.lag <= 1000:
            raise ConfigError(f"--lag must be between 0 and 1000, not {self.lag}")
        if self.restarts < 1 or self.refit_restarts < 1:
            raise ConfigError("restarts must be >= 1")
        if self.swap_delay < 0:
            raise ConfigError(f"swap_delay must be >= 0, not {self.swap_delay}")


@dataclass(frozen=True, eq=False)
class FitJob:
    """A fit to run (anywhere: inline, a thread, a process) on a snapshot of the window."""

    times: np.ndarray
    prices: np.ndarray
    states: int | None
    restarts: int
    seed: int
    init: RegimeModel | None
    stickiness: float
    created_at: int  # tick count when it was started
    swap_at: int  # its model must be installed once this many ticks have been seen
    first: bool

    def run(self) -> FitReport:
        return fit_regimes(
            self.times,
            self.prices,
            states=self.states,
            restarts=self.restarts,
            seed=self.seed,
            init=self.init,
            stickiness=self.stickiness,
        )


class RegimeTracker:
    """Warm-up, first fit, decoding and periodic refits for one symbol; pure and synchronous.

    With ``inline=True`` fits run inside `push` (deterministic, blocking: tests, the
    benchmark). With ``inline=False`` a fit is left in `job` for the caller to run
    elsewhere and hand back with `install` once `room()` reaches 0 (`decode_stream`
    does this); the decodes are the same either way.
    """

    def __init__(
        self, symbol: str = "", config: TrackerConfig | None = None, *, inline: bool = True
    ) -> None:
        self.symbol = symbol
        self.config = config or TrackerConfig()
        self.inline = inline
        self.n = 0  # accepted ticks
        self._last_t: float | None = None
        self._buf_t: list[float] = []
        self._buf_p: list[float] = []
        self._win: deque[tuple[float, float]] = deque(maxlen=self.config.window)
        self.decoder: RegimeDecoder | None = None
        self.job: FitJob | None = None
        self.fits: list[FitReport] = []
        self.refits = 0
        self.relabels = 0
        self.refit_waits = 0
        self.skipped: Counter[str] = Counter()
        self._next_refit = _NEVER

    @property
    def model(self) -> RegimeModel | None:
        return None if self.decoder is None else self.decoder.model

    def room(self) -> int:
        """How many more ticks can be pushed before a fit must be installed (or started)."""
        if self.job is not None:
            return max(self.job.swap_at - self.n, 0)
        if self.decoder is None:
            return max(self.config.warmup - self.n, 0)
        return max(self._next_refit - self.n, 0)

    def _start_job(self) -> None:
        cfg = self.config
        first = self.decoder is None
        if first:
            times = np.asarray(self._buf_t[: cfg.warmup])
            prices = np.asarray(self._buf_p[: cfg.warmup])
        else:
            times, prices = (np.asarray(c) for c in zip(*self._win, strict=True))
        self.job = FitJob(
            times,
            prices,
            cfg.states if first else self.model.k,  # type: ignore[union-attr]
            cfg.restarts if first else cfg.refit_restarts,
            cfg.seed + len(self.fits),
            self.model,
            cfg.stickiness,
            self.n,
            self.n if first else self.n + cfg.swap_delay,
            first,
        )

    def _after_ticks(self) -> list[RegimeDecode]:
        """Start a fit when one is due; with inline fits, also install one that is due."""
        if self.job is None:
            if self.decoder is None:
                if self.n >= self.config.warmup:
                    self._start_job()
            elif self.n >= self._next_refit:
                self._start_job()
        if self.inline and self.job is not None and self.n >= self.job.swap_at:
            return self.install(self.job.run())
        return []

    def push(self, t: float, price: float) -> list[RegimeDecode]:
        """Take one tick; returns its decode, or nothing (warm-up, skipped), or the backlog."""
        reason = _check_tick(t, price, self._last_t)
        if reason is not None:
            self.skipped[reason] += 1
            return []
        self._last_t = t
        self.n += 1
        self._win.append((t, price))
        out: list[RegimeDecode] = []
        if self.decoder is None:
            self._buf_t.append(t)
            self._buf_p.append(price)
        else:
            d = self.decoder.step(t, price)
            if d is not None:
                out.append(d)
        extra = self._after_ticks()
        return out + extra if extra else out

    def push_many(self, times: np.ndarray, prices: np.ndarray) -> list[RegimeDecode]:
        """`push` over arrays, decoding runs between fit events with `RegimeDecoder.step_many`."""
        t = np.asarray(times, dtype=float).reshape(-1)
        p = np.asarray(prices, dtype=float).reshape(-1)
        if t.shape != p.shape:
            raise TickError("times and prices must have the same length")
        acc = _accept_mask(t, p, self._last_t, self.skipped)
        if not acc.all():
            t, p = t[acc], p[acc]
        out: list[RegimeDecode] = []
        i, n = 0, len(t)
        while i < n:
            r = self.room()
            if r == 0:
                if self.inline and self.job is not None:
                    out.extend(self.install(self.job.run()))
                    continue
                r = n - i  # the caller installs late: keep going with what there is
            j = min(n, i + r)
            seg_t, seg_p = t[i:j], p[i:j]
            self.n += j - i
            self._last_t = float(seg_t[-1])
            self._win.extend(zip(seg_t.tolist(), seg_p.tolist(), strict=True))
            if self.decoder is None:
                self._buf_t.extend(seg_t.tolist())
                self._buf_p.extend(seg_p.tolist())
            else:
                out.extend(self.decoder.step_many(seg_t, seg_p).decodes())
            out.extend(self._after_ticks())
            i = j
        return out

    def install(self, report: FitReport) -> list[RegimeDecode]:
        """Use the result of `job`; after the first fit, return the backlog's decodes."""
        job = self.job
        if job is None:
            raise RuntimeError("install() without a pending fit job")
        self.job = None
        self.fits.append(report)
        model = report.model
        every = self.config.refit_every
        self._next_refit = job.created_at + every if every else _NEVER
        out: list[RegimeDecode] = []
        if self.decoder is None:
            self.decoder = RegimeDecoder(model, self.symbol, lag=self.config.lag)
            bt, bp = np.asarray(self._buf_t), np.asarray(self._buf_p)
            self._buf_t, self._buf_p = [], []
            out = self.decoder.step_many(bt, bp).decodes()
            log.info(
                "%s: %d regimes fitted on %d ticks in %.2f s",
                self.symbol,
                model.k,
                len(job.times),
                report.seconds,
            )
        else:
            order = match_states(self.decoder.model, model)
            if not np.array_equal(order, np.arange(model.k)):
                # the volatility order no longer matches the closest regimes: say so
                self.relabels += 1
                log.warning("%s: refit reordered regimes %s", self.symbol, order.tolist())
            self.decoder.swap(model)
            self.refits += 1
        if self.job is None and self.n >= self._next_refit:
            self._start_job()
        return out

    def finish(self) -> None:
        """End of stream: a `TickError` if it ended before the warm-up was complete."""
        if self.decoder is None:
            raise TickError(
                f"{self.symbol or 'ticks'}: {self.n} usable ticks, fewer than the warm-up of "
                f"{self.config.warmup}; lower --warmup"
            )

    def stats(self) -> dict[str, object]:
        d = self.decoder
        return {
            "ticks": self.n,
            "decoded": d.decoded if d else 0,
            "skipped": dict(self.skipped),
            "gaps": d.gaps if d else 0,
            "states": d.k if d else None,
            "regimes": list(d.model.names) if d else [],
            "refits": self.refits,
            "relabels": self.relabels,
            "refit_waits": self.refit_waits,
            "first_fit_seconds": round(self.fits[0].seconds, 3) if self.fits else None,
        }


class _Fitter:
    """Runs a tracker's fit jobs in an executor; awaits one only when it must be installed."""

    def __init__(self, tracker: RegimeTracker, executor: Executor | None) -> None:
        self.tracker = tracker
        self.executor = executor
        self._job: FitJob | None = None
        self._fut: asyncio.Future[FitReport] | None = None

    async def service(self) -> list[RegimeDecode]:
        tr = self.tracker
        out: list[RegimeDecode] = []
        while tr.job is not None:
            if self._job is not tr.job:
                self._job = tr.job
                self._fut = asyncio.get_running_loop().run_in_executor(self.executor, tr.job.run)
            if tr.room() > 0:
                break
            assert self._fut is not None
            if not self._fut.done() and not tr.job.first:
                tr.refit_waits += 1
            report = await self._fut
            self._job = self._fut = None
            out.extend(tr.install(report))
        return out

    def close(self) -> None:
        fut, self._fut, self._job = self._fut, None, None
        if fut is not None and not fut.cancel():
            # already running in a thread: let it finish, and keep its error from being logged
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())


async def decode_stream(
    ticks: AsyncIterable[Tick],
    tracker: RegimeTracker,
    *,
    executor: Executor | None = None,
) -> AsyncIterator[RegimeDecode]:
    """Decode a tick stream, fitting in `executor` (default: the loop's thread pool).

    Ends with a `TickError` if the stream ends before the warm-up is complete. Errors
    from a fit reach the consumer here.
    """
    fitter = _Fitter(tracker, executor) if not tracker.inline else None
    try:
        async for tick in ticks:
            for d in tracker.push(tick.t, tick.price):
                yield d
            if fitter is not None:
                for d in await fitter.service():
                    yield d
        tracker.finish()
    finally:
        if fitter is not None:
            fitter.close()


async def decode_arrays(
    times: np.ndarray,
    prices: np.ndarray,
    tracker: RegimeTracker,
    *,
    executor: Executor | None = None,
    chunk: int = 4096,
) -> AsyncIterator[list[RegimeDecode]]:
    """Decode whole arrays as fast as possible, in chunks, giving the loop a turn between them."""
    t = np.asarray(times, dtype=float)
    p = np.asarray(prices, dtype=float)
    fitter = _Fitter(tracker, executor) if not tracker.inline else None
    try:
        i, n = 0, len(t)
        while i < n:
            if fitter is not None:
                out = await fitter.service()
                if out:
                    yield out
            r = tracker.room()
            j = min(n, i + chunk, i + r) if r > 0 and fitter is not None else min(n, i + chunk)
            out = tracker.push_many(t[i:j], p[i:j])
            if out:
                yield out
            i = j
            await asyncio.sleep(0)
        if fitter is not None and tracker.job is not None and tracker.room() == 0:
            out = await fitter.service()  # the last tick completed the warm-up
            if out:
                yield out
        tracker.finish()
    finally:
        if fitter is not None:
            fitter.close()


__all__ = [
    "GAP_FACTOR",
    "MAX_WARMUP",
    "MIN_WARMUP",
    "DecodeBatch",
    "FitJob",
    "RegimeDecoder",
    "RegimeTracker",
    "TrackerConfig",
    "decode_arrays",
    "decode_stream",
]
