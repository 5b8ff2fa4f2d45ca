"""`streamer replay`: the output contract, bad files, chunking, ticks beside audio, a golden run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from streamer.audio.score import Event, events_from_lines, score
from streamer.audio.wav import to_pcm16, write_wav
from streamer.cli import main
from streamer.paths import default_bank_path
from streamer.speech import recognizer

from .conftest import Synthetic, make_synthetic


@pytest.fixture
def fake_bank(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Route `--bank` to the in-memory FakeRecognizer (process workers get it too)."""
    import streamer.service as service
    from streamer.speech.bank import WordBank

    monkeypatch.setattr(
        WordBank, "load", classmethod(lambda cls, p, data=None: recognizer.FakeRecognizer())
    )
    monkeypatch.setattr(service, "bank_factory", lambda p, data=None: recognizer.fake_factory())
    return str(tmp_path / "fake.npz")


@pytest.fixture(scope="module")
def wav(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Synthetic]:
    syn = make_synthetic(6, seed=5, noise_db=-55)
    path = tmp_path_factory.mktemp("replay") / "words.wav"
    write_wav(path, syn.x)
    return path, syn


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict], str]:
    code = main(["replay", *argv])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def test_one_json_line_per_utterance(capsys, fake_bank, wav) -> None:  # type: ignore[no-untyped-def]
    path, syn = wav
    code, lines, err = _run(capsys, str(path), "--bank", fake_bank, "--speed", "0")
    assert code == 0, err
    assert len(lines) == len(syn.truth)
    assert [d["seq"] for d in lines] == list(range(len(lines)))
    for d in lines:
        assert d["topic"] == "speech" and d["stream"] == str(path)
        assert {"label", "confidence", "start", "end", "nbest", "closed_at"} <= set(d)
        assert d["end"] <= d["closed_at"]
    s = score(events_from_lines(json.dumps(d) for d in lines), [Event(*t) for t in syn.truth])
    assert s.precision == s.recall == 1.0


def test_chunk_size_and_worker_kind_do_not_change_the_output(capsys, fake_bank, wav) -> None:  # type: ignore[no-untyped-def]
    path, _ = wav
    outs = []
    for extra in (
        ["--chunk-ms", "7", "--worker-kind", "inline"],
        ["--chunk-ms", "1000", "--worker-kind", "thread"],
        ["--chunk-ms", "30", "--workers", "2"],
    ):
        code, lines, _ = _run(capsys, str(path), "--bank", fake_bank, "--speed", "0", *extra)
        assert code == 0
        outs.append(lines)
    assert outs[0] == outs[1] == outs[2]


def test_a_bad_file_is_one_line_and_the_others_go_on(capsys, fake_bank, wav, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path, syn = wav
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF....WAVEjunk")
    code, lines, err = _run(capsys, str(bad), str(path), "--bank", fake_bank, "--speed", "0")
    assert code == 2
    assert err.count("\n") == 1 and "broken.wav" in err and "Traceback" not in err
    assert len(lines) == len(syn.truth)


def test_nothing_to_replay_and_bad_flags_are_errors(capsys, fake_bank) -> None:  # type: ignore[no-untyped-def]
    assert main(["replay", "--bank", fake_bank]) == 2
    assert "nothing to replay" in capsys.readouterr().err
    assert main(["replay", "x.wav", "--speed", "-1", "--bank", fake_bank]) == 2
    assert "--speed" in capsys.readouterr().err
    assert main(["replay", "x.wav", "--vad", "nonsense=1", "--bank", fake_bank]) == 2
    assert "nonsense" in capsys.readouterr().err
    assert main(["replay", "x.wav", "--vad-frame-ms", "25", "--bank", fake_bank]) == 2
    assert "frame" in capsys.readouterr().err


def test_rates_the_vad_cannot_take_are_resampled(capsys, fake_bank, wav, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from streamer.audio.wav import resample

    _, syn = wav
    hi = tmp_path / "hi.wav"
    wavfile.write(hi, 44100, to_pcm16(resample(syn.x, 8000, 44100)))
    code, lines, err = _run(capsys, str(hi), "--bank", fake_bank, "--speed", "0")
    assert code == 0, err
    assert len(lines) == len(syn.truth)


def test_vad_flags_reach_the_segmenter(capsys, fake_bank, wav) -> None:  # type: ignore[no-untyped-def]
    path, syn = wav
    argv = [str(path), "--bank", fake_bank, "--speed", "0", "--min-ms", "5000"]
    code, lines, _ = _run(capsys, *argv)
    assert code == 0 and lines == []  # no word lasts five seconds
    code, lines, _ = _run(capsys, str(path), "--bank", fake_bank, "--speed", "0", "--vad-mode", "3")
    assert len(lines) == len(syn.truth)


def test_ticks_and_audio_run_side_by_side_each_topic_numbered(
    capsys, fake_bank, wav, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    from streamer.market.synthetic import RegimeSpec, simulate

    s = simulate(RegimeSpec.preset(2), 400, seed=4)
    from datetime import UTC, datetime

    csv = tmp_path / "t.csv"
    rows = ["Date,close"] + [
        f"{datetime.fromtimestamp(t, UTC).isoformat()},{p!r}"
        for t, p in zip(s.times.tolist(), s.prices.tolist(), strict=True)
    ]
    csv.write_text("\n".join(rows) + "\n")
    path, syn = wav
    argv = [str(path), "--bank", fake_bank, "--speed", "0", "--ticks", str(csv), "--warmup", "200"]
    code, lines, err = _run(capsys, *argv)
    assert code == 0, err
    speech = [d for d in lines if d["topic"] == "speech"]
    regime = [d for d in lines if d["topic"] == "regime"]
    assert len(speech) == len(syn.truth) and len(regime) >= 200
    assert [d["seq"] for d in speech] == list(range(len(speech)))
    assert [d["seq"] for d in regime] == list(range(len(regime)))
    # audio files are optional when there are ticks
    code, lines, _ = _run(capsys, "--speed", "0", "--ticks", str(csv), "--warmup", "200")
    assert code == 0 and lines and all(d["topic"] == "regime" for d in lines)


def _no_delay(lines: list[dict]) -> list[dict]:  # type: ignore[type-arg]
    return [{k: v for k, v in d.items() if k != "delay_ms"} for d in lines]


def _bank_or_fail() -> Path:
    path = default_bank_path()
    if not path.exists():
        msg = f"the shipped bank {path} is missing"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def test_golden_replay_of_a_stream_with_known_truth(capsys, fruits_dir: Path, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Fruit recordings laid out by make_stream.py, replayed by the real command and bank."""
    bank = _bank_or_fail()
    from streamer.audio.teststream import collect, make_stream, write_truth

    files = [f for f in collect(fruits_dir) if f[1].stem.endswith(("01", "07", "13"))]
    x, truth, rate = make_stream(fruits_dir, seed=11, files=files, out_rate=16000)
    wav = tmp_path / "golden.wav"
    write_wav(wav, x, rate)
    write_truth(tmp_path / "golden.csv", truth)
    code, lines, err = _run(capsys, str(wav), "--bank", str(bank), "--speed", "0", "--latency")
    assert code == 0, err
    assert np.all([d["delay_ms"] >= 0 for d in lines])
    # stream time only (closed_at - end, counted in samples): the same on any machine; the
    # wall-clock part (delay_ms) is a benchmark figure (scripts/bench_stream.py), not a test
    s = score(events_from_lines(json.dumps(d) for d in _no_delay(lines)), truth)
    assert s.words == 21
    assert s.precision == 1.0 and s.recall == 1.0
    assert s.label_accuracy >= 0.95, s.confusions
    assert s.latency_ms["p99"] <= 400
