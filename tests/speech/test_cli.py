"""The train / recognize / evaluate commands, end to end on WAV files made at test time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from streamer.audio.synth import HELDOUT_VOICES, TRAIN_VOICES, Voice, synthesize
from streamer.audio.wav import write_wav
from streamer.cli import main

WORDS = ("lemon", "rocket", "seven")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LABEL/*.wav spoken by six synthetic voices (8 kHz and 16 kHz, to exercise resampling)."""
    root = tmp_path_factory.mktemp("words")
    for w in WORDS:
        (root / w).mkdir()
        for i, v in enumerate(TRAIN_VOICES[:6]):
            rate = 16000 if i % 2 else 8000
            write_wav(root / w / f"{w}{i:02d}.wav", synthesize(w, v, rate), rate)
    return root


@pytest.fixture(scope="module")
def bank(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bank") / "words.npz"
    rc = main(
        [
            "train",
            str(data),
            "--out",
            str(out),
            "--synth-voices",
            "2",
            "--restarts",
            "1",
            "--iter",
            "8",
        ]
    )
    assert rc == 0
    return out


def test_train_writes_a_bank(bank: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bank.stat().st_size > 1000
    from streamer.speech.bank import WordBank

    b = WordBank.load(bank)
    assert b.labels == list(WORDS)
    assert b.info["recordings"] == {w: 6 for w in WORDS}


def test_recognize_other_voices(
    bank: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = []
    for w in WORDS:
        for v in HELDOUT_VOICES[:3]:
            p = tmp_path / f"{w}-{v.name}.wav"
            write_wav(p, synthesize(w, v, 22050), 22050)
            files.append((w, p))
    rc = main(["recognize", "--bank", str(bank), *[str(p) for _, p in files]])
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rc == 0
    assert [o["file"] for o in out] == [str(p) for _, p in files]
    hits = sum(o["best"] == w for (w, _), o in zip(files, out, strict=True))
    assert hits >= len(files) - 1
    for o in out:
        assert 0 <= o["confidence"] <= 1
        assert o["nbest"][0]["label"] == o["best"]
        assert o["label"] in (None, o["best"])


def test_recognize_goes_on_past_bad_files(
    bank: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.wav"
    write_wav(good, synthesize("rocket", Voice("en-us+m7", 140, 45)), 8000)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("not audio")
    wavfile.write(tmp_path / "low.wav", 4000, np.zeros(4000, dtype=np.int16))
    wavfile.write(tmp_path / "silent.wav", 8000, np.zeros(8000, dtype=np.int16))
    wavfile.write(tmp_path / "zero.wav", 8000, np.zeros(0, dtype=np.int16))
    nan = np.full(8000, np.nan, dtype=np.float32)
    wavfile.write(tmp_path / "nan.wav", 8000, nan)
    trunc = tmp_path / "trunc.wav"
    trunc.write_bytes(good.read_bytes()[:300])
    bad = ["empty", "text", "low", "silent", "zero", "nan", "trunc"]
    args = [str(tmp_path / f"{b}.wav") for b in bad[:3]] + [str(good)]
    args += [str(tmp_path / f"{b}.wav") for b in bad[3:]] + [str(tmp_path / "missing.wav")]
    rc = main(["recognize", "--bank", str(bank), *args])
    cap = capsys.readouterr()
    assert rc == 2
    lines = cap.out.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["file"] == str(good)
    errs = cap.err.splitlines()
    assert len(errs) == len(bad) + 1
    for b, line in zip([*bad[:3], *bad[3:], "missing"], errs, strict=True):
        assert line.startswith("streamer recognize: error: ") and f"{b}.wav" in line
    assert "Traceback" not in cap.err


def test_bad_bank_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bank.npz").write_bytes(b"PK\x03\x04 broken")
    wav = tmp_path / "a.wav"
    write_wav(wav, synthesize("seven"), 8000)
    rc = main(["recognize", "--bank", str(tmp_path / "bank.npz"), str(wav)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1 and "bank.npz" in err


def test_train_rejects_thin_classes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "one").mkdir()
    write_wav(tmp_path / "one" / "a.wav", synthesize("one"), 8000)
    (tmp_path / "none").mkdir()
    rc = main(["train", str(tmp_path), "--out", str(tmp_path / "b.npz")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1
    assert "none" in err and "0 WAV files" in err
    rc = main(["train", str(tmp_path / "missing"), "--out", str(tmp_path / "b.npz")])
    assert rc == 2 and "no such data folder" in capsys.readouterr().err


def test_train_skips_a_bad_file_and_says_so(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    root = tmp_path / "d"
    shutil.copytree(data, root)
    (root / "seven" / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    rc = main(
        [
            "train",
            str(root),
            "--out",
            str(tmp_path / "b.npz"),
            "--synth-voices",
            "0",
            "--restarts",
            "1",
            "--iter",
            "3",
            "--no-calibrate",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert "broken.wav" in err and (tmp_path / "b.npz").exists()


def test_evaluate_prints_figures_and_png(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "cm.png"
    rc = main(
        [
            "evaluate",
            str(data),
            "--folds",
            "3",
            "--out",
            str(png),
            "--synth-voices",
            "0",
            "--restarts",
            "1",
            "--iter",
            "5",
            "--json",
        ]
    )
    assert rc == 0
    fig = json.loads(capsys.readouterr().out)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert fig["n"] == 18 and fig["labels"] == list(WORDS)
    assert np.sum(fig["confusion"]) == 18
    assert 0 <= fig["accuracy"] <= 1 and set(fig["recall"]) == set(WORDS)
    assert fig["oov_true_reject"] is not None
