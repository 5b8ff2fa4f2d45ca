"""Speaker-grouped evaluation, what synthetic voices may say, and their bad input."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from streamer.audio.synth import TRAIN_VOICES, Voice, synthesize
from streamer.audio.wav import write_wav
from streamer.cli import main
from streamer.errors import DataError
from streamer.speech.bank import HmmConfig
from streamer.speech.evaluate import evaluate, grouped_folds
from streamer.speech.train import (
    TrainConfig,
    list_dataset,
    load_dataset,
    say_texts,
    speakers_of,
    train_bank,
)

WORDS = ("lemon", "rocket", "seven")
SPEAKERS = tuple(TRAIN_VOICES[:4])
FAST = TrainConfig(
    hmm=HmmConfig(n_restarts=1, n_iter=6),
    speeds=(),
    noisy_copies=1,
    synth_voices=0,
    calibrate=False,
)


def _jitter(v: Voice, k: int) -> Voice:
    return replace(v, rate=v.rate + 12 * k - 12, pitch=min(99, v.pitch + 5 * k))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LABEL/spkN_take.wav: four synthetic speakers, three takes of each word."""
    root = tmp_path_factory.mktemp("speakers")
    for w in WORDS:
        (root / w).mkdir()
        for s, v in enumerate(SPEAKERS):
            for k in range(3):
                write_wav(root / w / f"spk{s}_{k:02d}.wav", synthesize(w, _jitter(v, k)), 8000)
    return root


def test_speakers_come_from_the_file_names(data: Path) -> None:
    groups = speakers_of(list_dataset(data), r"^(spk\d+)_")
    assert set(groups) == set(WORDS)
    assert groups["lemon"] == [f"spk{s}" for s in range(4) for _ in range(3)]


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        (r"^(spk", "not a valid pattern"),
        (r"^spk\d+_", "needs a (group)"),
        (r"^(nobody)_", "does not match this file name"),
        (r"^(spk)\d+_", "finds 1 speaker; need at least 2"),
    ],
)
def test_bad_group_patterns_are_named(data: Path, pattern: str, message: str) -> None:
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        speakers_of(list_dataset(data), pattern)


def test_grouped_folds_never_share_a_speaker(data: Path) -> None:
    files = list_dataset(data)
    groups = speakers_of(files, r"^(spk\d+)_")
    ds = load_dataset(files, 8000)
    for k, n in ((2, 2), ("loso", 4)):
        folds = grouped_folds(ds, groups, k)
        assert len(folds) == n
        seen_test: list[str] = []
        for train, test, gtr, gte in folds:
            tr = {g for gs in gtr.values() for g in gs}
            te = {g for gs in gte.values() for g in gs}
            assert tr and te and not tr & te
            assert sum(map(len, train.values())) + sum(map(len, test.values())) == 36
            seen_test += sorted(te)
        assert sorted(seen_test) == [f"spk{s}" for s in range(4)]  # every speaker tested once


def test_grouped_evaluation_reports_every_speaker(data: Path) -> None:
    res = evaluate(data, "loso", FAST, voices=(), oov_words=(), group_by=r"^(spk\d+)_")
    clean = res["clean"]
    per = clean.per_group()
    assert list(per) == [f"spk{s}" for s in range(4)]
    assert clean.n == 36
    assert clean.worst_group()[1] == min(per.values())
    assert clean.group_mean() > 1 / len(WORDS)  # better than chance on unseen speakers


def test_nothing_is_synthesised_unless_the_text_is_known() -> None:
    labels = ["cmd1", "cmd2"]
    assert say_texts(labels, TrainConfig()) == {}
    assert say_texts(labels, replace(TrainConfig(), say_labels=True)) == {
        "cmd1": "cmd1",
        "cmd2": "cmd2",
    }
    cfg = replace(TrainConfig(), say=(("cmd1", "lights on"),))
    assert say_texts(labels, cfg) == {"cmd1": "lights on"}
    with pytest.raises(DataError, match="no folder 'cmd9'"):
        say_texts(labels, replace(TrainConfig(), say=(("cmd9", "x"),)))


def test_synthetic_voices_say_the_given_text_in_the_given_language(data: Path) -> None:
    cfg = replace(FAST, synth_voices=2, say=(("seven", "sieben"),), synth_language="de")
    bank = train_bank(data, cfg, group_by=r"^(spk\d+)_")
    assert bank.info["say"] == {"seven": "sieben"}
    assert bank.info["speakers"] == 4
    assert all(v.startswith("de+") for v in bank.info["synthetic_voices"])
    plain = train_bank(data, FAST)
    assert plain.info["synthetic_voices"] == [] and plain.info["say"] == {}


def test_calibration_holds_out_speakers_and_words(data: Path) -> None:
    cfg = replace(FAST, calibrate=True)
    files = list_dataset(data)
    words = {**load_dataset(files, 8000)}
    groups = speakers_of(files, r"^(spk\d+)_")
    extra = synthesize("window", TRAIN_VOICES[5])
    words["window"] = [extra] * 12  # a fourth word, so one can be left out of calibration
    groups["window"] = groups["lemon"]
    bank = train_bank(words, cfg, groups=groups)
    cal = bank.info["calibration"]
    assert len(cal["held_out_words"]) == 1
    assert cal["calibration_items"] > 0


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    rc = main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    return rc, err


def test_cli_grouped_evaluate(data: Path, tmp_path: Path, capsys) -> None:
    png = tmp_path / "c.png"
    argv = ["evaluate", str(data), "--group-by", r"^(spk\d+)_", "--folds", "2", "--json"]
    argv += ["--out", str(png), "--restarts", "1", "--iter", "5", "--no-calibrate"]
    rc = main(argv)
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and png.stat().st_size > 1000
    assert set(out["per_speaker"]) == {f"spk{s}" for s in range(4)}
    assert out["worst_speaker"]["accuracy"] == min(out["per_speaker"].values())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--group-by", r"^(spk)\d"], "finds 1 speaker"),
        (["--folds", "loso"], "--folds loso needs --group-by"),
        (["--say", "nosuch=hello"], "no folder 'nosuch'"),
        (["--say", "justtext"], "is not LABEL=TEXT"),
        (["--say", "lemon=x", "--synth-language", "xx-nowhere"], "no language 'xx-nowhere'"),
    ],
)
def test_cli_bad_input_is_one_line(data: Path, tmp_path: Path, capsys, extra, message) -> None:
    argv = ["evaluate", str(data), "--out", str(tmp_path / "c.png"), "--no-calibrate", *extra]
    rc, err = _run(argv, capsys)
    assert rc == 2
    assert len(err) == 1 and message in err[0]


def test_train_says_which_word_has_one_file(data: Path, tmp_path: Path, capsys) -> None:
    root = tmp_path / "d"
    for w, n in (("one", 2), ("two", 1)):
        (root / w).mkdir(parents=True)
        for i in range(n):
            write_wav(root / w / f"{i}.wav", synthesize(w, TRAIN_VOICES[i]), 8000)
    out = tmp_path / "b.npz"
    rc, err = _run(["train", str(root), "--out", str(out)], capsys)
    assert rc == 2 and len(err) == 1 and "two: 1 WAV file" in err[0]
    assert not out.exists()


def test_progress_is_plain_lines_off_a_terminal(data: Path, tmp_path: Path, capsys) -> None:
    argv = ["train", str(data), "--out", str(tmp_path / "b.npz"), "--restarts", "1"]
    assert main([*argv, "--iter", "5", "--no-calibrate", "--jobs", "1"]) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("training:")]
    assert "\r" not in err and lines  # at most one every few seconds, and the last
    assert lines[-1].startswith(f"training: {len(WORDS)}/{len(WORDS)}, {WORDS[-1]} ")
    for ln in lines:  # n/total, then the word just trained
        n = int(ln.split()[1].split("/")[0])
        assert ln.split()[2] == f"{WORDS[n - 1]}"


def test_training_crowd_is_not_the_benchmark_babble() -> None:
    """The crowd trains for babble; it shares no word with the babble the benchmark plays,
    nor with the word lists that calibrate and test rejection."""
    from streamer.audio.noise import _BABBLE_WORDS, _CROWD_WORDS, TRAINING_KINDS, make_noise
    from streamer.speech.evaluate import TEST_OOV_WORDS
    from streamer.speech.train import OOV_WORDS

    assert "crowd" in TRAINING_KINDS and "babble" not in TRAINING_KINDS
    assert not set(_CROWD_WORDS) & (set(_BABBLE_WORDS) | set(OOV_WORDS) | set(TEST_OOV_WORDS))
    x = make_noise("crowd", 16000, 8000, np.random.default_rng(0))
    assert abs(np.sqrt(np.mean(x**2)) - 1.0) < 1e-6
    frames = x[: 16000 // 160 * 160].reshape(-1, 160)
    level = 10 * np.log10(np.mean(frames**2, axis=1))
    assert level.std() > 1.0  # speech-like: it rises and falls, unlike white noise


def test_real_noise_files_join_training(data: Path, tmp_path: Path, capsys) -> None:
    noise_dir = tmp_path / "noise"
    noise_dir.mkdir()
    hum = 0.3 * np.sin(2 * np.pi * 50 * np.arange(8000) / 8000).astype(np.float32)
    write_wav(noise_dir / "hum50.wav", hum, 8000)
    out = tmp_path / "b.npz"
    argv = ["train", str(data), "--out", str(out), "--no-calibrate", "--restarts", "1"]
    assert main([*argv, "--iter", "4", "--noise-dir", str(noise_dir)]) == 0
    from streamer.speech.bank import WordBank

    assert WordBank.load(out).info["noise_files"] == ["hum50.wav"]
    rc, err = _run([*argv, "--noise-dir", str(tmp_path / "none")], capsys)
    assert rc == 2 and len(err) == 1 and "no noise recordings" in err[0]
