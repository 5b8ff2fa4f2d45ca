"""The configuration tree: TOML in and out, checks naming the setting, flags over a file."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import pytest

from streamer import config as C
from streamer.cli import main
from streamer.commands import config as config_cmd
from streamer.commands import serve as serve_cmd
from streamer.commands.options import FLAGS, config_from_args
from streamer.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def serve_config(argv: list[str]) -> C.Config:
    p = argparse.ArgumentParser()
    serve_cmd.add_arguments(p)
    return config_from_args(p.parse_args(argv))


def test_the_reference_in_docs_is_current() -> None:
    """docs/configuration.md is `streamer config docs`: regenerate it when a setting changes."""
    text = (ROOT / "docs" / "configuration.md").read_text()
    assert text == config_cmd.reference(), (
        "docs/configuration.md is stale: run `streamer config docs > docs/configuration.md`"
    )
    for section in C.SECTIONS:
        assert f"## [{section}]" in text
        for key in C.setting_fields(section):
            assert f"| `{key}` |" in text


def test_show_prints_toml_that_reads_back_to_the_same_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["a.wav", "--ticks", "p.csv", "--symbol", "P", "--pub", "tcp://127.0.0.1:7000"]
    argv += ["--vad", "min_ms=200", "--no-snapshot", "--workers", "3", "--states", "3"]
    assert main(["config", "show", *argv]) == 0
    text = capsys.readouterr().out
    saved = tmp_path / "saved.toml"
    saved.write_text(text)
    loaded = C.load(saved)
    assert loaded == serve_config(argv)
    assert loaded.segmenter.min_ms == 200 and loaded.publisher.snapshots is False
    assert loaded.recognizer.workers == 3 and loaded.tracker.states == 3
    assert loaded.audio.files == (Path("a.wav"),) and loaded.ticks.symbols == ("P",)
    # and a file plus flags: the flags win, the rest is the file's
    assert main(["config", "show", "--config", str(saved), "--workers", "2"]) == 0
    again = C.from_dict(tomllib.loads(capsys.readouterr().out))
    assert again.recognizer.workers == 2 and again.segmenter.min_ms == 200


def test_defaults_round_trip_and_every_flag_names_a_real_setting() -> None:
    assert C.from_dict(tomllib.loads(C.to_toml(C.Config()))) == C.Config()
    for f in FLAGS:
        assert f.key in C.setting_fields(f.section), f.flag


@pytest.mark.parametrize(
    ("section", "changes", "message"),
    [
        ("service", {"speed": -1.0}, "service.speed: must be >= 0"),
        ("service", {"drain_timeout": 0.0}, "service.drain_timeout: must be > 0"),
        ("audio", {"chunk_ms": 0.0}, "audio.chunk_ms: must be > 0"),
        ("recognizer", {"workers": 0}, "recognizer.workers: need at least 1"),
        ("publisher", {"heartbeat": 2.0}, "publisher.heartbeat: must be in"),
        ("feed", {"max_tick_bytes": 10}, "feed.max_tick_bytes: must be at least 64"),
        ("security", {"curve_secret": Path("k")}, "CURVE needs both"),
        ("segmenter", {"frame_ms": 25}, "VAD frame of 25 ms"),
        ("tracker", {"lag": -1}, "--lag must be between"),
        ("ticks", {"symbols": ("A",)}, "1 --symbol for 0 --ticks files"),
    ],
)
def test_each_check_is_one_line_naming_the_setting(
    section: str, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as e:
        C.Config().replace(section, **changes)
    assert "\n" not in str(e.value)


def test_wrong_types_and_unknown_keys_name_key_and_table() -> None:
    with pytest.raises(ConfigError, match=r"x\.toml: unknown key 'hwn' in \[publisher\]"):
        C.from_dict({"publisher": {"hwn": 5}}, "x.toml")
    with pytest.raises(ConfigError, match=r"unknown section \[pub\]"):
        C.from_dict({"pub": {"hwm": 5}}, "x.toml")
    with pytest.raises(ConfigError, match=r"\[audio\] files: expected a path"):
        C.from_dict({"audio": {"files": [1]}}, "x.toml")
    with pytest.raises(ConfigError, match=r"\[service\] speed: expected a number"):
        C.from_dict({"service": {"speed": "fast"}}, "x.toml")
    with pytest.raises(ConfigError, match=r"\[publisher\] must be a table|publisher must be a"):
        C.from_dict({"publisher": 5}, "x.toml")
    # `-` may stand for `_`, ints are numbers, one-element values become lists
    c = C.from_dict({"publisher": {"wait-subscribers": 2}, "service": {"speed": 2}})
    assert c.publisher.wait_subscribers == 2 and c.service.speed == 2.0


def test_config_errors_on_the_command_line_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[recognizer]\nworkers = 0\n")
    assert main(["serve", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "recognizer.workers" in err and "bad.toml" in err
    assert main(["config", "show", "--speed", "-2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--speed (service.speed): must be >= 0" in err


def test_the_drifted_defaults_have_one_value() -> None:
    from streamer.audio.sources import MIC_BLOCK_MS, MicSource

    audio = C.Config().audio
    assert audio.mic_block_ms == MIC_BLOCK_MS == 10.0
    assert MicSource(sd=object()).block == round(MIC_BLOCK_MS * 8000 / 1000)
    assert audio.block_ms(0.0) == C.FAST_CHUNK_MS and audio.block_ms(1.0) == C.DEFAULT_CHUNK_MS
    assert "(default 10.0)" in " ".join(serve_cmd_help().split())


def serve_cmd_help() -> str:
    p = argparse.ArgumentParser()
    serve_cmd.add_arguments(p)
    return p.format_help()
