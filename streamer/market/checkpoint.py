"""Regime trackers as plain data and back: the crash-safe state of the tick path.

Why plain data: a checkpoint outlives the process that wrote it (a restart after a
crash, a shard moved to another machine), so it must not be pickle (unsafe to load,
and tied to the code's class layout). A tracker becomes a JSON-able ``meta`` dict
(counters, scalars, the model's parameters, the configuration it ran under) and a
few float arrays (the refit window, the warm-up buffer, the filter's recent
history, a pending fit's window); `tracker_from_plain` rebuilds one that decodes
the following ticks exactly as the original would have (same floats: JSON carries
Python floats by their shortest repr, arrays are float64).

A state file holds any number of trackers plus the caller's own JSON (`extra`: the
service keeps its per-topic seq there). It is one ``.npz`` (numpy's zip of ``.npy``
arrays, read with ``allow_pickle=False``), written to a temporary file, fsynced and
renamed over the old one: a reader sees the old state or the new one, never half.
A file that is not a zip, lacks the format tag, has another version, or holds
arrays that do not fit is one `StateError` naming the file and the problem.

    meta, arrays = tracker_to_plain(tracker)
    tracker = tracker_from_plain(meta, arrays, config)
    write_state(path, {"AAPL": tracker}, extra={"seq": {...}})  # or encode, then write
    state = read_state(path, config)   # state.trackers, state.extra
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import zipfile
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from streamer.errors import StateError, StreamerError
from streamer.market.decoder import (
    FitJob,
    OnEvent,
    RegimeDecoder,
    RegimeTracker,
    TrackerConfig,
)
from streamer.market.model import RegimeModel

FORMAT = "streamer-state"
VERSION = 1
_META = "meta"  # the npz entry holding the JSON (as a 0-d unicode array)


# -- one tracker ---------------------------------------------------------------------------------


def _opt_float(v: float | None) -> float | None:
    return None if v is None else float(v)


def _decoder_to_plain(d: RegimeDecoder) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    # the decoder's private fields are read here on purpose: this module is its serialiser
    k = d.k
    hist = list(d._hist)
    meta: dict[str, Any] = {
        "model": d.model.to_dict(),
        "t": _opt_float(d._t),
        "p": float(d._p),
        "dec": d._dec,
        "cand": int(d._cand),
        "run": int(d._run),
        "announce": bool(d._announce),
        "loglik": float(d.loglik),
        "decoded": int(d.decoded),
        "gaps": int(d.gaps),
        "resets": int(d.resets),
        "switches": int(d.switches),
        "skipped": dict(d.skipped),
    }
    arrays = {
        "alpha": np.asarray(d._alpha if d._alpha is not None else [], dtype=float),
        "hist_t": np.asarray([h[0] for h in hist], dtype=float),
        "hist_a": np.asarray([list(h[1]) for h in hist], dtype=float).reshape(len(hist), k),
        "erows": np.asarray([list(e) for e in d._erows], dtype=float).reshape(-1, k),
    }
    return meta, arrays


def _decoder_from_plain(
    meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray], symbol: str, cfg: TrackerConfig
) -> RegimeDecoder:
    model = RegimeModel.from_dict(dict(meta["model"]))
    d = RegimeDecoder(model, symbol, lag=cfg.lag, level=cfg.level, dwell=cfg.dwell)
    k = model.k
    alpha = arrays["alpha"]
    if alpha.shape not in ((0,), (k,)):
        raise StateError(f"filter probabilities of shape {alpha.shape} for K={k}")
    hist_t, hist_a, erows = arrays["hist_t"], arrays["hist_a"], arrays["erows"]
    if hist_a.shape != (len(hist_t), k) or erows.ndim != 2 or erows.shape[1] != k:
        raise StateError(f"filter history of shapes {hist_a.shape}, {erows.shape} for K={k}")
    d._t = _opt_float(meta["t"])
    d._p = float(meta["p"])
    d._alpha = tuple(alpha.tolist()) if len(alpha) else None
    dec = meta["dec"]
    if dec is not None and not 0 <= int(dec) < k:
        raise StateError(f"decision {dec} for K={k}")
    d._dec = None if dec is None else int(dec)
    d._cand, d._run = int(meta["cand"]), int(meta["run"])
    d._announce = bool(meta["announce"])
    d._hist.extend(zip(hist_t.tolist(), map(tuple, hist_a.tolist()), strict=True))
    d._erows.extend(map(tuple, erows.tolist()))
    d.loglik = float(meta["loglik"])
    d.decoded, d.gaps = int(meta["decoded"]), int(meta["gaps"])
    d.resets, d.switches = int(meta["resets"]), int(meta["switches"])
    d.skipped = Counter({str(a): int(b) for a, b in dict(meta["skipped"]).items()})
    return d


def tracker_to_plain(tr: RegimeTracker) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A tracker's whole state: JSON-able meta and float64 arrays (copies, safe to keep)."""
    win = np.asarray(tr._win, dtype=float).reshape(-1, 2)
    meta: dict[str, Any] = {
        "symbol": tr.symbol,
        "config": dataclasses.asdict(tr.config),
        "n": tr.n,
        "last_t": _opt_float(tr._last_t),
        "next_refit": int(tr._next_refit),
        "fit_count": tr.fit_count,
        "first_fit_seconds": tr.first_fit_seconds,
        "refits": tr.refits,
        "relabels": tr.relabels,
        "k_changes": tr.k_changes,
        "refit_waits": tr.refit_waits,
        "events": list(tr.events),
        "skipped": dict(tr.skipped),
        "decoder": None,
        "job": None,
    }
    arrays: dict[str, np.ndarray] = {
        "win_t": win[:, 0].copy(),
        "win_p": win[:, 1].copy(),
        "buf_t": np.asarray(tr._buf_t, dtype=float),
        "buf_p": np.asarray(tr._buf_p, dtype=float),
    }
    if tr.decoder is not None:
        dm, da = _decoder_to_plain(tr.decoder)
        meta["decoder"] = dm
        arrays.update({f"dec_{k}": v for k, v in da.items()})
    job = tr.job
    if job is not None:
        meta["job"] = {
            "states": job.states,
            "restarts": job.restarts,
            "seed": job.seed,
            "init": None if job.init is None else job.init.to_dict(),
            "stickiness": job.stickiness,
            "created_at": job.created_at,
            "swap_at": job.swap_at,
            "first": job.first,
            "emissions": job.emissions,
            "k_margin": job.k_margin,
        }
        arrays["job_t"] = np.asarray(job.times, dtype=float).copy()
        arrays["job_p"] = np.asarray(job.prices, dtype=float).copy()
    return meta, arrays


def _config_diff(saved: Mapping[str, Any], config: TrackerConfig) -> list[str]:
    now = dataclasses.asdict(config)
    return [
        f"{k} {saved.get(k)!r} (now {v!r})"
        for k, v in now.items()
        if k not in saved or saved[k] != v
    ]


def tracker_from_plain(
    meta: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
    config: TrackerConfig,
    *,
    inline: bool = False,
    on_event: OnEvent | None = None,
) -> RegimeTracker:
    """The tracker `tracker_to_plain` described; a `StateError` if it does not fit `config`.

    The configuration must be the one the state was written under (the window, lag
    and decision make the state what it is; another one would decode differently).
    """
    try:
        diff = _config_diff(dict(meta["config"]), config)
        if diff:
            raise StateError(
                f"written under other tracker settings: {', '.join(diff)}; "
                "use the same settings, or start cold"
            )
        symbol = str(meta["symbol"])
        tr = RegimeTracker(symbol, config, inline=inline, on_event=on_event)
        tr.n = int(meta["n"])
        tr._last_t = _opt_float(meta["last_t"])
        tr._next_refit = int(meta["next_refit"])
        tr.fit_count = int(meta["fit_count"])
        tr.first_fit_seconds = _opt_float(meta["first_fit_seconds"])
        tr.refits, tr.relabels = int(meta["refits"]), int(meta["relabels"])
        tr.k_changes, tr.refit_waits = int(meta["k_changes"]), int(meta["refit_waits"])
        tr.events = [str(e) for e in meta["events"]]
        tr.skipped = Counter({str(a): int(b) for a, b in dict(meta["skipped"]).items()})
        win_t, win_p = arrays["win_t"], arrays["win_p"]
        buf_t, buf_p = arrays["buf_t"], arrays["buf_p"]
        if win_t.shape != win_p.shape or buf_t.shape != buf_p.shape or win_t.ndim != 1:
            raise StateError("tick window and buffer arrays differ in length")
        if len(win_t) > config.window:
            raise StateError(f"a window of {len(win_t)} ticks for a window of {config.window}")
        tr._win = deque(zip(win_t.tolist(), win_p.tolist(), strict=True), maxlen=config.window)
        tr._buf_t, tr._buf_p = buf_t.tolist(), buf_p.tolist()
        if meta["decoder"] is not None:
            da = {k[4:]: v for k, v in arrays.items() if k.startswith("dec_")}
            tr.decoder = _decoder_from_plain(meta["decoder"], da, symbol, config)
        job = meta["job"]
        if job is not None:
            init = job["init"]
            tr.job = FitJob(
                np.asarray(arrays["job_t"], dtype=float),
                np.asarray(arrays["job_p"], dtype=float),
                None if job["states"] is None else int(job["states"]),
                int(job["restarts"]),
                int(job["seed"]),
                None if init is None else RegimeModel.from_dict(dict(init)),
                float(job["stickiness"]),
                int(job["created_at"]),
                int(job["swap_at"]),
                bool(job["first"]),
                str(job["emissions"]),
                float(job["k_margin"]),
            )
    except StateError:
        raise
    except StreamerError as e:  # a model that does not check out
        raise StateError(str(e)) from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise StateError(
            f"tracker state incomplete or malformed ({type(e).__name__}: {e})"
        ) from None
    return tr


# -- state files ---------------------------------------------------------------------------------


@dataclass
class State:
    """What a state file held: trackers by the writer's keys, and the writer's own JSON."""

    trackers: dict[str, RegimeTracker] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def _json_default(o: object) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    raise TypeError(f"not JSON-able: {type(o).__name__}")


def write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(file)`` on a temporary file beside `path`, fsync, rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename itself survives a power loss
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def encode_state(
    trackers: Mapping[str, RegimeTracker], *, extra: Mapping[str, Any] | None = None
) -> dict[str, np.ndarray]:
    """Trackers (under any keys: a symbol, or ``source:symbol``) and `extra` as npz entries.

    Cheap and synchronous: call it where the trackers are consistent with whatever
    `extra` describes (between two ticks), and write the result anywhere, later.
    """
    entries: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    for i, (key, tr) in enumerate(trackers.items()):
        meta, arr = tracker_to_plain(tr)
        meta["key"] = key
        entries.append(meta)
        arrays.update({f"{i}.{k}": v for k, v in arr.items()})
    doc = {"format": FORMAT, "version": VERSION, "trackers": entries, "extra": dict(extra or {})}
    text = json.dumps(doc, default=_json_default, allow_nan=True)
    arrays[_META] = np.asarray(text)
    return arrays


def write_arrays(path: str | Path, arrays: Mapping[str, np.ndarray]) -> int:
    """`encode_state`'s entries to `path`, atomically; returns the bytes written."""
    p = Path(path)
    # numpy's stub types **kwds as its own keyword `allow_pickle` (bool): entries are arrays
    write_atomic(p, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]
    return p.stat().st_size


def write_state(
    path: str | Path,
    trackers: Mapping[str, RegimeTracker],
    *,
    extra: Mapping[str, Any] | None = None,
) -> int:
    """Write trackers and `extra` (JSON-able) atomically to `path`; returns the bytes written."""
    return write_arrays(path, encode_state(trackers, extra=extra))


def read_state(
    path: str | Path,
    config: TrackerConfig,
    *,
    inline: bool = False,
    on_event: OnEvent | None = None,
) -> State:
    """Read a `write_state` file; one `StateError` naming the file for anything wrong."""
    p = Path(path)
    key = _META
    try:
        with np.load(p, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile) or key not in z.files:
                raise StateError("not a streamer state file (no meta entry)")
            doc = json.loads(str(z[key][()]))
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise StateError("not a streamer state file (format tag missing)")
            if doc.get("version") != VERSION:
                raise StateError(
                    f"state format version {doc.get('version')!r}; this streamer reads {VERSION}"
                )
            arrays = {k: z[k] for k in z.files if k != key}
        state = State(extra=dict(doc.get("extra") or {}))
        for i, meta in enumerate(doc["trackers"]):
            prefix = f"{i}."
            arr = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
            try:
                tr = tracker_from_plain(meta, arr, config, inline=inline, on_event=on_event)
            except StateError as e:
                raise StateError(f"symbol {meta.get('symbol')!r}: {e}") from None
            state.trackers[str(meta.get("key", tr.symbol))] = tr
    except StateError as e:
        raise StateError(f"{p}: {e}") from None
    except FileNotFoundError:
        raise StateError(f"{p}: no such state file") from None
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError) as e:
        raise StateError(
            f"{p}: corrupt or not a streamer state file ({type(e).__name__})"
        ) from None
    return state


__all__ = [
    "FORMAT",
    "VERSION",
    "State",
    "encode_state",
    "read_state",
    "tracker_from_plain",
    "tracker_to_plain",
    "write_arrays",
    "write_atomic",
    "write_state",
]
