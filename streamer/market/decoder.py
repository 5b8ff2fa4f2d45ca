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
  started; it chooses K and the emissions again (keeping the current ones unless the
  data favour others by a margin), its regimes take the names of the old ones they
  match, and it takes over after exactly `swap_delay` more ticks, its filter first run
  over the last `REBASE_TICKS` ticks (`RegimeDecoder.rebase`). Swapping at a fixed
  tick, rather than whenever the fit happens to finish, keeps a replay's output
  identical on any machine; at real-time pace the fit is long done by then. A change
  of K or of names goes to `on_event` (the service's status topic).
- `decode_stream` / `decode_arrays` (async) run the tracker's fits in an executor so
  the event loop (and the other streams on it) never stalls, and await a fit only at
  the tick where it must be installed.

The published `state` is a decision on top of the filter (`level`, `dwell`): the
filter's argmax flickers whenever two regimes are about equally likely, and a user
acting on every flicker acts several times too often; the decision moves only when
the filter has held another regime with probability >= `level` for `dwell` ticks.
`probs` stay the filter's own numbers.

Emissions are Gaussian or Student-t (`RegimeModel.df`); the filter computes the
model's own densities, so it is exact for the model it runs (tests hold it to a
direct scipy forward pass, and to hmmlearn for Gaussian models).

The filter works on normalised probabilities: each step multiplies the predicted
probabilities by the emission likelihoods, shifted by their maximum in log space, and
renormalises. That is exactly the log-space forward recursion (the same normalised
alpha), three times cheaper in Python; whenever the product would underflow to zero
the step is redone in log space with logsumexp. Plain Python floats beat numpy for
K <= 5 on a single tick (a numpy call costs about a microsecond however small), and
the recursions are compiled per K as unrolled code (`_step_factory`,
`_forward_kernel`, `_smoother_factory`); the batch path computes the emissions and
the fixed-lag smoothing vectorised in numpy.

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
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import cache
from itertools import islice
from math import exp, sqrt
from math import log as _ln
from operator import mul
from typing import Any

import numpy as np
from scipy.special import gammaln

from streamer.errors import ConfigError, TickError
from streamer.market.model import (
    FitReport,
    RegimeModel,
    carry_names,
    fit_regimes,
)
from streamer.market.settings import MAX_WARMUP, MIN_WARMUP, TrackerConfig
from streamer.messages import DecodeBatch, RegimeDecode, Tick

log = logging.getLogger(__name__)

GAP_FACTOR = 10.0  # a tick more than this many dt_ref after the previous one counts as a gap
_LOG2PI = math.log(2.0 * math.pi)
_INF = math.inf
_NEVER = sys.maxsize
REBASE_TICKS = 500  # a swapped-in model's filter is run over this many recent ticks


def _describe(model: RegimeModel) -> str:
    fam = "Gaussian" if model.family == "gaussian" else f"Student-t df {model.df:.1f}"
    return f"{model.k} ({', '.join(model.names)}; {fam})"


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
def _step_factory(k: int, student: bool) -> Callable[..., Callable[..., Any]]:
    """One tick of the filter for K states, emissions included, as straight-line code.

    ``make(*emission_params, *transitions)`` returns ``step(x, alpha)`` ->
    ``(alpha', log_norm, e)`` or None when the scaled product underflows (the caller
    then redoes the tick in log space). The parameters are closure cells, the states
    unrolled: no lists, no loops, no numpy; about twice as fast as the generic kernel
    with emissions computed beside it. Gaussian: log e_j = c_j - h_j (x - m_j)^2;
    Student-t: log e_j = c_j - g_j log1p(h_j (x - m_j)^2).
    """
    r = range(k)
    em = [f"c{j}, m{j}, h{j}, g{j}" for j in r]
    trans = [f"A{i}_{j}" for i in r for j in r]
    src = [
        f"def make({', '.join(em + trans)}):",
        "    def step(x, alpha):",
        f"        {_tup(f'a{j}' for j in r)} = alpha",
    ]
    for j in r:
        src.append(f"        d = x - m{j}")
        if student:
            src.append(f"        l{j} = c{j} - g{j} * log1p(h{j} * d * d)")
        else:
            src.append(f"        l{j} = c{j} - h{j} * d * d")
    src.append("        mx = l0")
    for j in range(1, k):
        src.append(f"        if l{j} > mx: mx = l{j}")
    src.extend(f"        e{j} = exp(l{j} - mx)" for j in r)
    for j in r:
        src.append(f"        p{j} = ({' + '.join(f'a{i} * A{i}_{j}' for i in r)}) * e{j}")
    src.append(f"        s = {' + '.join(f'p{j}' for j in r)}")
    src.append("        if not s > 0.0:")
    src.append("            return None")
    src.append(
        f"        return {_tup(f'p{j} / s' for j in r)}, log(s) + mx, {_tup(f'e{j}' for j in r)}"
    )
    src.append("    return step")
    namespace: dict[str, Any] = {"exp": math.exp, "log": math.log, "log1p": math.log1p}
    exec("\n".join(src), namespace)  # the source is built from integers only
    make: Callable[..., Callable[..., Any]] = namespace["make"]
    return make


@cache
def _forward_kernel(k: int) -> Callable[..., tuple[bool, tuple[float, ...]]]:
    """The forward recursion for K states as an unrolled loop, compiled once per K.

    Why generated code: for K <= 5 a step is a few dozen float operations, and in
    Python the cost is per operation, not per flop; unrolled over the states (locals,
    no list comprehensions) the loop runs about 2.5 times faster. `step_many` runs it
    over emission rows computed in numpy; `step` uses `_step_factory`, the same
    arithmetic per tick. It stops at a row whose scaled product underflows
    (returning False) for the caller to redo that step in log space.
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
def _smoother_factory(k: int) -> Callable[..., Callable[..., int]]:
    """The fixed-lag smoothed state: a backward pass over emission rows, newest first.

    ``make(*transitions)`` returns ``smooth(rows, alpha)``: the argmax of alpha x
    beta, beta the backward recursion over `rows`, unrolled over the states like the
    forward step. Beta is rescaled only when all of it gets small (every row has max
    1 and every transition row sums to 1, so it can only shrink): only its direction
    matters, and skipping a normalisation per row saves a third of the work.
    """
    r = range(k)
    src = [
        f"def make({', '.join(f'A{i}_{j}' for i in r for j in r)}):",
        "    def smooth(rows, alpha):",
        f"        {_tup(f'b{j}' for j in r)} = {_tup('1.0' for _ in r)}",
        f"        for {_tup(f'e{j}' for j in r)} in rows:",
    ]
    src.extend(f"            w{j} = b{j} * e{j}" for j in r)
    for i in r:
        src.append(f"            b{i} = {' + '.join(f'A{i}_{j} * w{j}' for j in r)}")
    src.append(f"            if {' and '.join(f'b{j} < 1e-150' for j in r)}:")
    src.append(f"                s = {' + '.join(f'b{j}' for j in r)}")
    src.append("                if not s > 0.0:")
    src.append("                    break")
    src.extend(f"                b{j} = b{j} / s" for j in r)
    src.append(f"        {_tup(f'a{j}' for j in r)} = alpha")
    src.append("        best, top = 0, a0 * b0")
    for j in range(1, k):
        src.append(f"        v = a{j} * b{j}")
        src.append("        if v > top:")
        src.append(f"            best, top = {j}, v")
    src.append("        return best")
    src.append("    return smooth")
    return _compile(src, "make")


def _discard(_: object) -> None:
    pass


class RegimeDecoder:
    """The forward filter for one model (see the module docstring); pure and synchronous.

    The published `state` is a decision on top of the filter: it moves to regime j
    once P(j) is the largest and at least `level` for `dwell` ticks in a row, and
    otherwise stays where it is (``level=0, dwell=1``: the filter's argmax). The
    filtered probabilities themselves are never altered.
    """

    def __init__(
        self,
        model: RegimeModel,
        symbol: str = "",
        *,
        lag: int = 0,
        level: float = 0.0,
        dwell: int = 1,
    ) -> None:
        if lag < 0:
            raise ConfigError(f"lag must be >= 0, not {lag}")
        if not 0.0 <= level < 1.0 or dwell < 1:
            raise ConfigError(f"decision needs 0 <= level < 1 and dwell >= 1, not {level}, {dwell}")
        self.symbol = symbol
        self.lag = lag
        self.level = float(level)
        self.dwell = int(dwell)
        self._t: float | None = None
        self._p = 0.0
        self._alpha: tuple[float, ...] | None = None  # None: the next return starts from startprob
        self._dec: int | None = None  # the published decision
        self._cand = -1  # the regime the decision may move to, and for how many ticks
        self._run = 0
        self._announce = False  # a model swap changed the decision: say so on the next decode
        # fixed-lag smoothing: (t, filtered) of the last lag + 1 ticks, emissions of the last lag
        self._hist: deque[tuple[float, Any]] = deque(maxlen=lag + 1)
        self._erows: deque[Any] = deque(maxlen=max(lag, 1))
        self.loglik = 0.0  # of the decoded returns, in normalised-return units
        self.decoded = 0
        self.gaps = 0
        self.resets = 0
        self.switches = 0  # of the decision
        self.skipped: Counter[str] = Counter()
        self._set_model(model)

    def _set_model(self, model: RegimeModel) -> None:
        self.model = model
        self.k = model.k
        self._names = model.names
        self._dtref = float(model.dt_ref)
        self._mu = np.asarray(model.means, dtype=float)
        if model.family == "student":
            df = model.df
            s2 = model.scales2
            self._c = gammaln((df + 1) / 2) - gammaln(df / 2) - 0.5 * np.log(df * math.pi * s2)
            self._h = 1.0 / (df * s2)
            self._g = np.full(self.k, (df + 1) / 2)
        else:
            var = model.variances
            self._c = -0.5 * (_LOG2PI + np.log(var))
            self._h = 0.5 / var
            self._g = np.zeros(self.k)
        em = zip(
            self._c.tolist(), self._mu.tolist(), self._h.tolist(), self._g.tolist(), strict=True
        )
        self._em = [(c, m, h, g) for c, m, h, g in em]
        a = np.asarray(model.transmat, dtype=float)
        self._at = np.ascontiguousarray(a.T)
        self._trans = tuple(tuple(row) for row in a.tolist())
        make = _step_factory(self.k, model.family == "student")
        self._step = make(
            *(v for row in self._em for v in row), *(v for r in self._trans for v in r)
        )
        self._forward = _forward_kernel(self.k)
        self._smooth = _smoother_factory(self.k)(*(v for r in self._trans for v in r))
        self._gap = GAP_FACTOR * self._dtref
        with np.errstate(divide="ignore"):
            self._logcols = np.log(a).T.tolist()
        self._start = np.asarray(model.startprob, dtype=float).tolist()

    def _log_emissions(self, x: np.ndarray) -> np.ndarray:
        """Emission log-densities (n, K): the numbers `_step_factory`'s code computes."""
        d2 = (np.asarray(x, dtype=float).reshape(-1, 1) - self._mu) ** 2
        out: np.ndarray
        if self.model.family == "student":
            out = self._c - self._g * np.log1p(self._h * d2)
        else:
            out = self._c - self._h * d2
        return out

    def _lb(self, x: float) -> list[float]:
        if self.model.family == "student":
            return [c - g * math.log1p(h * (x - m) * (x - m)) for c, m, h, g in self._em]
        return [c - h * (x - m) * (x - m) for c, m, h, _ in self._em]

    def swap(self, model: RegimeModel) -> None:
        """Decode the following ticks with `model`, keeping the filter's current probabilities.

        The states must already mean the same regimes (both sorted by volatility, or
        matched with `match_states`); with a different K the filter restarts from the
        new model's start probabilities. `rebase` is the better swap when the recent
        ticks are at hand.
        """
        if model.k != self.k:
            self._alpha = None
            self._dec = None
            self._hist.clear()
            self._erows.clear()
        self._set_model(model)

    def rebase(self, model: RegimeModel, times: np.ndarray, prices: np.ndarray) -> None:
        """Switch to `model`, its filter run over the recent ticks (ending at the last one).

        The new model's filter starts from its own stationary law at the first of
        these ticks, so after a few hundred ticks its probabilities no longer depend
        on that start: exact for the new model, whatever K or order the old one had.
        The decision keeps its regime if the new model has a regime of that name.
        """
        fresh = RegimeDecoder(model, self.symbol, lag=self.lag, level=self.level, dwell=1)
        fresh.step_many(times, prices)
        if self._t is not None and fresh._t != self._t:
            raise ValueError("rebase needs the ticks up to the last one decoded")
        old = None if self._dec is None else self._names[self._dec]
        self._set_model(model)
        self._alpha = fresh._alpha
        self._hist, self._erows = fresh._hist, fresh._erows
        if old is not None and old in self._names:
            self._dec = self._names.index(old)
        else:
            self._dec = fresh._dec
            self._announce = old is not None  # the next decode reports the change
        self._cand, self._run = -1, 0

    @property
    def probs(self) -> tuple[float, ...] | None:
        """The current filtered probabilities (None before the first return)."""
        return None if self._alpha is None else tuple(self._alpha)

    @property
    def state(self) -> int | None:
        """The current published decision."""
        return self._dec

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

    def _slow_step(self, x: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """A first tick, or one whose scaled product underflowed: alpha and the emission row."""
        lb = self._lb(x)
        mx = max(lb)
        e = [exp(v - mx) for v in lb]
        if self._alpha is None:
            a, ll = self._first_step(e, lb, mx)
        else:
            a, ll = self._log_step(self._alpha, lb)
        self.loglik += ll
        return a, tuple(e)

    def _decide(self, a: tuple[float, ...]) -> tuple[int, bool]:
        """The decision after filtered probabilities `a`, and whether it changed."""
        m = max(a)
        return self._decide_fast(a.index(m), m >= self.level)

    def step(self, t: float, price: float) -> RegimeDecode | None:
        """Filter one tick; None for the first tick (no return yet) or a skipped one."""
        # hot path: the generated step, plain floats, no numpy, no calls that can be
        # avoided (see the module docstring); the rare branches are methods
        last = self._t
        if not (0.0 < price < _INF and -_INF < t < _INF) or (last is not None and not t > last):
            self.skipped[_check_tick(t, price, last)] += 1  # type: ignore[index]
            return None
        if last is None:
            self._t, self._p = t, price
            return None
        dt = t - last
        if dt > self._gap:
            self.gaps += 1
        x = _ln(price / self._p) * sqrt(self._dtref / dt)
        self._t, self._p = t, price
        a = self._alpha
        r = None if a is None else self._step(x, a)
        if r is None:
            a, e = self._slow_step(x)
        else:
            a, ll, e = r
            self.loglik += ll
        self._alpha = a
        self.decoded += 1
        top = max(a)
        f = a.index(top)
        dec = self._dec
        if f == dec or dec is None or top < self.level:
            if dec is None:
                self._dec = dec = f
            self._run = 0
            changed = False
        else:
            dec, changed = self._decide_fast(f, True)
        if self._announce:
            self._announce = False
            changed = True
        if self.lag:
            hist = self._hist
            hist.append((t, a))
            self._erows.append(e)
            if len(hist) > self.lag:
                smoothed_t, a0 = hist[0]
                return RegimeDecode(
                    self.symbol,
                    t,
                    price,
                    dec,
                    self._names[dec],
                    a,
                    changed,
                    self._smooth(reversed(self._erows), a0),
                    smoothed_t,
                )
        return RegimeDecode(self.symbol, t, price, dec, self._names[dec], a, changed)

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
        lb = self._log_emissions(x)
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
        state, changed = self._decide_many(probs)
        sm_state = np.full(m, -1, dtype=np.int64)
        sm_t = np.full(m, np.nan)
        if self.lag:
            sm_state, sm_t = self._smooth_many(t, probs, e_arr)
        return DecodeBatch(self.symbol, self._names, t, p, probs, state, changed, sm_state, sm_t)

    def _decide_many(self, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`_decide` over a batch; vectorised when one confident tick moves it (``dwell=1``)."""
        f = probs.argmax(1)
        m = len(f)
        at = np.arange(m)
        # where the argmax is confident enough: the only places the decision can move
        top = probs[at, f] >= self.level
        dec = self._dec
        if self.dwell == 1 and dec is not None:
            # the decision is the argmax of the last confident tick so far (or stays)
            last = np.maximum.accumulate(np.where(top, at, -1))
            state = np.where(last >= 0, f[last], dec)
            changed = np.empty(m, dtype=bool)
            changed[0] = state[0] != dec
            changed[1:] = state[1:] != state[:-1]
            self.switches += int(changed.sum())
            if self._announce:
                self._announce = False
                changed[0] = True
            self._dec = int(state[-1])
            self._cand, self._run = -1, 0
            return state, changed
        fl = f.tolist()
        tl = top.tolist()
        state_l = [0] * m
        changed_l = [False] * m
        decide = self._decide_fast
        for i in range(m):
            state_l[i], changed_l[i] = decide(fl[i], tl[i])
        return np.asarray(state_l, dtype=np.int64), np.asarray(changed_l, dtype=bool)

    def _decide_fast(self, f: int, confident: bool) -> tuple[int, bool]:
        """The decision given the filter's argmax `f` and whether P(f) >= level."""
        dec = self._dec
        if dec is None:
            self._dec = f
            return f, False
        changed = False
        if f == dec or not confident:
            self._run = 0
        else:
            if f == self._cand:
                self._run += 1
            else:
                self._cand, self._run = f, 1
            if self._run >= self.dwell:
                self._dec = dec = f
                self._cand, self._run = -1, 0
                self.switches += 1
                changed = True
        if self._announce:
            self._announce = False
            return dec, True
        return dec, changed

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
            eh = np.vstack([np.asarray(list(self._erows)).reshape(h, k), e_arr])
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
        self._hist.extend(zip(th[-keep:].tolist(), fh[-keep:].tolist(), strict=True))
        self._erows.extend(eh[-min(lag, len(th)) :].tolist())
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
    emissions: str = "auto"
    k_margin: float = 0.0

    def run(self) -> FitReport:
        return fit_regimes(
            self.times,
            self.prices,
            states=self.states,
            family=self.emissions,
            restarts=self.restarts,
            seed=self.seed,
            init=self.init,
            stickiness=self.stickiness,
            k_margin=self.k_margin,
        )


OnEvent = Callable[[str], None]


class RegimeTracker:
    """Warm-up, first fit, decoding and periodic refits for one symbol; pure and synchronous.

    With ``inline=True`` fits run inside `push` (deterministic, blocking: tests, the
    benchmark). With ``inline=False`` a fit is left in `job` for the caller to run
    elsewhere and hand back with `install` once `room()` reaches 0 (`decode_stream`
    does this); the decodes are the same either way.

    Every fit chooses K (and the emission family) again; a refit keeps the current
    ones unless the data favour others by `k_margin` (hysteresis). Regimes keep their
    names across refits (`carry_names`); a change of K or of names is logged and
    passed to `on_event` (the service publishes it on `status`).
    """

    KEEP_FITS = 64  # fit reports kept in `fits` (the newest)

    def __init__(
        self,
        symbol: str = "",
        config: TrackerConfig | None = None,
        *,
        inline: bool = True,
        on_event: OnEvent | None = None,
    ) -> None:
        self.symbol = symbol
        self.config = config or TrackerConfig()
        self.inline = inline
        self.on_event = on_event
        self.n = 0  # accepted ticks
        self._last_t: float | None = None
        self._buf_t: list[float] = []
        self._buf_p: list[float] = []
        self._win: deque[tuple[float, float]] = deque(maxlen=self.config.window)
        self.decoder: RegimeDecoder | None = None
        self.job: FitJob | None = None
        # this run's latest reports (a restored tracker starts empty); bounded, since a
        # long-running service refits for ever
        self.fits: deque[FitReport] = deque(maxlen=self.KEEP_FITS)
        self.first_fit: FitReport | None = None  # this run's first report
        self.fit_count = 0  # fits installed over the tracker's whole life (the EM seed's offset)
        self.first_fit_seconds: float | None = None
        self.refits = 0
        self.relabels = 0
        self.k_changes = 0
        self.refit_waits = 0
        self.events: list[str] = []
        self.skipped: Counter[str] = Counter()
        self._next_refit = _NEVER

    @property
    def model(self) -> RegimeModel | None:
        return None if self.decoder is None else self.decoder.model

    @property
    def last_t(self) -> float | None:
        """The time of the last tick taken (later ticks only are accepted)."""
        return self._last_t

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
            cfg.states,
            cfg.restarts if first else cfg.refit_restarts,
            cfg.seed + self.fit_count,
            self.model,
            cfg.stickiness,
            self.n,
            self.n if first else self.n + cfg.swap_delay,
            first,
            cfg.emissions,
            cfg.k_margin,
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
        return [d for chunk in self.push_chunks(times, prices) for d in chunk]

    def push_chunks(self, times: np.ndarray, prices: np.ndarray) -> list[Sequence[RegimeDecode]]:
        """`push_many`'s decodes in order, in chunks: a `DecodeBatch` per run between fit events.

        The tick path's form: a batch goes to the publisher as arrays, never as
        one `RegimeDecode` per tick.
        """
        t = np.asarray(times, dtype=float).reshape(-1)
        p = np.asarray(prices, dtype=float).reshape(-1)
        if t.shape != p.shape:
            raise TickError("times and prices must have the same length")
        acc = _accept_mask(t, p, self._last_t, self.skipped)
        if not acc.all():
            t, p = t[acc], p[acc]
        out: list[Sequence[RegimeDecode]] = []
        i, n = 0, len(t)
        while i < n:
            r = self.room()
            if r == 0:
                if self.inline and self.job is not None:
                    backlog = self.install(self.job.run())
                    if backlog:
                        out.append(backlog)
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
                batch = self.decoder.step_many(seg_t, seg_p)
                if len(batch):
                    out.append(batch)
            extra = self._after_ticks()
            if extra:
                out.append(extra)
            i = j
        return out

    def install(self, report: FitReport) -> list[RegimeDecode]:
        """Use the result of `job`; after the first fit, return the backlog's decodes."""
        job = self.job
        if job is None:
            raise RuntimeError("install() without a pending fit job")
        self.job = None
        self.fits.append(report)
        if self.first_fit is None:
            self.first_fit = report
        self.fit_count += 1
        if self.first_fit_seconds is None:
            self.first_fit_seconds = report.seconds
        model = report.model
        every = self.config.refit_every
        self._next_refit = job.created_at + every if every else _NEVER
        out: list[RegimeDecode] = []
        cfg = self.config
        if self.decoder is None:
            self.decoder = RegimeDecoder(
                model, self.symbol, lag=cfg.lag, level=cfg.level, dwell=cfg.dwell
            )
            bt, bp = np.asarray(self._buf_t), np.asarray(self._buf_p)
            self._buf_t, self._buf_p = [], []
            out = self.decoder.step_many(bt, bp).decodes()
            log.info(
                "%s: regimes %s fitted on %d ticks in %.2f s",
                self.symbol,
                _describe(model),
                len(job.times),
                report.seconds,
            )
        else:
            old = self.decoder.model
            model, order = carry_names(old, model)
            if model.k == old.k and not np.array_equal(order, np.arange(model.k)):
                # the volatility order no longer matches the closest regimes: counted
                self.relabels += 1
                log.debug("%s: refit reordered regimes %s", self.symbol, order.tolist())
            keep = min(len(self._win), REBASE_TICKS)
            times, prices = (
                np.asarray(c)
                for c in zip(*islice(self._win, len(self._win) - keep, None), strict=True)
            )
            self.decoder.rebase(model, times, prices)
            self.refits += 1
            if model.k != old.k or model.names != old.names:
                self.k_changes += model.k != old.k
                self._event(f"{self.symbol}: regimes now {_describe(model)}; were {_describe(old)}")
        if self.job is None and self.n >= self._next_refit:
            self._start_job()
        return out

    def refit_failed(self, job: FitJob) -> bool:
        """`job`, a refit, failed: keep decoding with the current regimes (True).

        The next refit is due `refit_every` ticks after the failed one started, as if it had
        worked. A first fit (no regimes yet) or a job that is not the pending one: False,
        nothing changed.
        """
        if job is not self.job or job.first or self.decoder is None:
            return False
        self.job = None
        every = self.config.refit_every
        self._next_refit = job.created_at + every if every else _NEVER
        return True

    def _event(self, text: str) -> None:
        self.events.append(text)
        del self.events[:-20]
        log.info("%s", text)
        if self.on_event is not None:
            self.on_event(text)

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
            "k_changes": self.k_changes,
            "emissions": d.model.family if d else None,
            "switches": d.switches if d else 0,
            "refit_waits": self.refit_waits,
            "first_fit_seconds": (
                None if self.first_fit_seconds is None else round(self.first_fit_seconds, 3)
            ),
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
) -> AsyncIterator[Sequence[RegimeDecode]]:
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
            for decodes in tracker.push_chunks(t[i:j], p[i:j]):
                yield decodes
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
