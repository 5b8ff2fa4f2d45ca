"""Trackers to plain data and back: a restored tracker decodes exactly as the original would."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from streamer.errors import StateError
from streamer.market.checkpoint import (
    read_state,
    tracker_from_plain,
    tracker_to_plain,
    write_state,
)
from streamer.market.decoder import RegimeTracker, TrackerConfig
from streamer.market.synthetic import SyntheticSeries

CONFIG = TrackerConfig(warmup=300, refit_every=250, swap_delay=20, lag=5, window=800)


def _wire(decodes: list) -> list[dict]:  # type: ignore[type-arg]
    return [d.to_wire() for d in decodes]


@pytest.mark.parametrize("cut", [200, 560, 1400])  # warming up; a refit pending; after refits
def test_restored_tracker_decodes_as_the_original(
    series3: SyntheticSeries, tmp_path: Path, cut: int
) -> None:
    t, p = series3.times[:2000], series3.prices[:2000]
    tr = RegimeTracker("X", CONFIG)
    before = tr.push_many(t[:cut], p[:cut])
    assert (tr.decoder is None) == (cut < CONFIG.warmup)
    if cut == 560:
        assert tr.job is not None and not tr.job.first  # the pending refit travels too
    path = tmp_path / "state.npz"
    write_state(path, {"X": tr}, extra={"seq": {"regime": len(before)}})
    state = read_state(path, CONFIG, inline=True)
    assert state.extra == {"seq": {"regime": len(before)}}
    back = state.trackers["X"]
    assert back.stats() == tr.stats()
    # the original goes on, and so does the copy: the same decodes, float for float
    rest = tr.push_many(t[cut:], p[cut:])
    again = back.push_many(t[cut:], p[cut:])
    assert len(rest) > 0 and _wire(again) == _wire(rest)
    assert [d.probs for d in again] == [d.probs for d in rest]
    timeless = [
        {k: v for k, v in x.stats().items() if k != "first_fit_seconds"} for x in (back, tr)
    ]
    assert timeless[0] == timeless[1] and back.refits >= 1


def test_plain_data_is_json_and_float_arrays(series3: SyntheticSeries) -> None:
    tr = RegimeTracker("X", CONFIG)
    tr.push_many(series3.times[:700], series3.prices[:700])
    meta, arrays = tracker_to_plain(tr)
    json.dumps(meta)  # nothing but JSON types
    assert all(isinstance(a, np.ndarray) and a.dtype == np.float64 for a in arrays.values())
    assert len(arrays["win_t"]) == 700 and meta["n"] == 700
    copy = tracker_from_plain(json.loads(json.dumps(meta)), arrays, CONFIG)
    assert copy.model is not None and copy.model.names == tr.model.names  # type: ignore[union-attr]


def test_other_settings_are_refused_by_name(series3: SyntheticSeries, tmp_path: Path) -> None:
    tr = RegimeTracker("X", CONFIG)
    tr.push_many(series3.times[:400], series3.prices[:400])
    path = tmp_path / "s.npz"
    write_state(path, {"X": tr})
    other = TrackerConfig(warmup=300, refit_every=250, swap_delay=20, lag=5, window=900)
    with pytest.raises(StateError, match=r"s\.npz: symbol 'X': .*window 800 \(now 900\)"):
        read_state(path, other)


def _bad_files(tmp_path: Path, good: Path) -> dict[str, Path]:
    out = {}
    out["random bytes"] = tmp_path / "random.npz"
    out["random bytes"].write_bytes(np.random.default_rng(1).bytes(3000))
    out["truncated"] = tmp_path / "trunc.npz"
    out["truncated"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    out["foreign npz"] = tmp_path / "foreign.npz"
    np.savez(out["foreign npz"], a=np.arange(3))
    out["wrong format tag"] = tmp_path / "tag.npz"
    np.savez(out["wrong format tag"], meta=np.asarray(json.dumps({"format": "other"})))
    out["newer version"] = tmp_path / "version.npz"
    doc = {"format": "streamer-state", "version": 99, "trackers": []}
    np.savez(out["newer version"], meta=np.asarray(json.dumps(doc)))
    out["missing array"] = tmp_path / "missing.npz"
    with zipfile.ZipFile(good) as z, zipfile.ZipFile(out["missing array"], "w") as w:
        for name in z.namelist():
            if not name.endswith("win_p.npy"):
                w.writestr(name, z.read(name))
    out["pickled object"] = tmp_path / "pickle.npz"
    np.savez(out["pickled object"], meta=np.asarray([{"format": "x"}], dtype=object))
    out["empty"] = tmp_path / "empty.npz"
    out["empty"].write_bytes(b"")
    out["absent"] = tmp_path / "absent.npz"
    return out


def test_corrupt_or_foreign_files_are_one_clear_error(
    series3: SyntheticSeries, tmp_path: Path
) -> None:
    tr = RegimeTracker("X", CONFIG)
    tr.push_many(series3.times[:600], series3.prices[:600])
    good = tmp_path / "good.npz"
    write_state(good, {"X": tr})
    assert read_state(good, CONFIG).trackers["X"].n == 600
    for what, path in _bad_files(tmp_path, good).items():
        with pytest.raises(StateError) as e:
            read_state(path, CONFIG)
        msg = str(e.value)
        assert msg.startswith(str(path)) and "\n" not in msg, what


def test_write_is_atomic_and_leaves_no_temporary(
    series3: SyntheticSeries, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tr = RegimeTracker("X", CONFIG)
    tr.push_many(series3.times[:400], series3.prices[:400])
    path = tmp_path / "dir" / "state.npz"
    write_state(path, {"X": tr})
    first = path.read_bytes()
    tr.push_many(series3.times[400:500], series3.prices[400:500])

    class Boom(Exception):
        pass

    real = np.savez

    def failing(f: object, **arrays: object) -> None:
        real(f, **arrays)  # type: ignore[arg-type]
        raise Boom  # a crash after the bytes, before the rename

    with monkeypatch.context() as m:
        m.setattr(np, "savez", failing)
        with pytest.raises(Boom):
            write_state(path, {"X": tr})
    assert path.read_bytes() == first  # the old state is whole
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.npz"]
    write_state(path, {"X": tr})
    assert read_state(path, CONFIG).trackers["X"].n == 500
