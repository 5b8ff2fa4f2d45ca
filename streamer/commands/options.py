"""Command-line flags for the service's settings, laid over a TOML file: the one place.

Every settings flag is a row of `FLAGS`: the flag and the setting it sets
(``section.key`` of `streamer.config.Config`). Its type, its default and its help
text come from the config dataclasses, so a default is written once. Flags are
added with ``default=SUPPRESS``: a flag the user did not give is absent from the
namespace, and `config_from_args` lays only the given ones over the file
(``--config``) or the defaults. A repeatable flag replaces the file's list.
"""

from __future__ import annotations

import argparse
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from streamer import config as C
from streamer.audio.sources import MicSource, find_input_device
from streamer.audio.wav import CANONICAL_RATE
from streamer.errors import ConfigError
from streamer.net.security import CurveClient


@dataclass(frozen=True)
class Flag:
    """One flag that sets one setting."""

    flag: str  # "--hwm", or a positional's name ("audio")
    setting: str  # "publisher.hwm"
    group: str
    metavar: str | None = None
    const: Any = None  # a flag without a value sets this (store_const)

    @property
    def section(self) -> str:
        return self.setting.partition(".")[0]

    @property
    def key(self) -> str:
        return self.setting.partition(".")[2]

    @property
    def dest(self) -> str:
        return "cfg:" + self.setting


# Group names: which commands get which flags.
REPLAY_GROUPS = (
    "input",
    "voice activity detection",
    "price ticks",
    "publishing",
    "security",
    "cluster",
)
SERVE_GROUPS = (*REPLAY_GROUPS, "microphone", "live tick feed", "service", "dashboard")
DASHBOARD_GROUPS = ("dashboard client", "dashboard")

_SEG = (
    ("--vad-mode", "aggressiveness"),
    ("--vad-frame-ms", "frame_ms"),
    ("--vad-rate", "rate"),
    ("--start-ms", "start_ms"),
    ("--start-ratio", "start_ratio"),
    ("--pre-roll-ms", "pre_roll_ms"),
    ("--post-roll-ms", "post_roll_ms"),
    ("--hangover-ms", "hangover_ms"),
    ("--noisy-hangover-ms", "noisy_hangover_ms"),
    ("--min-ms", "min_ms"),
    ("--max-ms", "max_ms"),
    ("--on-db", "on_db"),
    ("--off-db", "off_db"),
    ("--drop-db", "drop_db"),
)

FLAGS: tuple[Flag, ...] = (
    Flag("audio", "audio.files", "input", "AUDIO"),
    Flag("--bank", "recognizer.bank", "input", "BANK"),
    Flag("--speed", "service.speed", "input", "X"),
    Flag("--workers", "recognizer.workers", "input", "N"),
    Flag("--worker-kind", "recognizer.kind", "input"),
    Flag("--max-pending", "recognizer.max_pending", "input", "N"),
    Flag("--chunk-ms", "audio.chunk_ms", "input", "MS"),
    Flag("--latency", "service.latency", "input"),
    Flag("--stats", "service.stats", "input"),
    *(Flag(f, f"segmenter.{k}", "voice activity detection") for f, k in _SEG),
    Flag("--ticks", "ticks.files", "price ticks", "CSV"),
    Flag("--symbol", "ticks.symbols", "price ticks", "S"),
    Flag("--time-column", "ticks.time_column", "price ticks", "NAME"),
    Flag("--price-column", "ticks.price_column", "price ticks", "NAME"),
    Flag("--warmup", "tracker.warmup", "price ticks", "N"),
    Flag("--states", "tracker.states", "price ticks", "K"),
    Flag("--refit-every", "tracker.refit_every", "price ticks", "N"),
    Flag("--lag", "tracker.lag", "price ticks", "L"),
    Flag("--emissions", "tracker.emissions", "price ticks"),
    Flag("--k-margin", "tracker.k_margin", "price ticks", "B"),
    Flag("--decision-level", "tracker.level", "price ticks", "P"),
    Flag("--decision-dwell", "tracker.dwell", "price ticks", "N"),
    Flag("--fit-kind", "service.fit_kind", "price ticks"),
    Flag("--fit-workers", "service.fit_workers", "price ticks", "N"),
    Flag("--pub", "publisher.endpoint", "publishing", "ENDPOINT"),
    Flag("--snapshot", "publisher.snapshot", "publishing", "ENDPOINT"),
    Flag("--no-snapshot", "publisher.snapshots", "publishing", const=False),
    Flag("--hwm", "publisher.hwm", "publishing", "N"),
    Flag("--policy", "publisher.policy", "publishing"),
    Flag("--subscriber-stall", "publisher.stall_timeout", "publishing", "S"),
    Flag("--lossy", "publisher.lossy", "publishing"),
    Flag("--heartbeat", "publisher.heartbeat", "publishing", "S"),
    Flag("--metrics-interval", "publisher.metrics_interval", "publishing", "S"),
    Flag("--summary-interval", "publisher.summary_interval", "publishing", "S"),
    Flag("--wait-subscribers", "publisher.wait_subscribers", "publishing", "N"),
    Flag("--wait-timeout", "publisher.wait_timeout", "publishing", "S"),
    Flag("--curve-secret", "security.curve_secret", "security", "FILE"),
    Flag("--curve-allow", "security.curve_allow", "security", "DIR"),
    Flag("--mic", "audio.mic", "microphone"),
    Flag("--device", "audio.device", "microphone", "D"),
    Flag("--mic-block-ms", "audio.mic_block_ms", "microphone", "MS"),
    Flag("--tick-feed", "feed.bind", "live tick feed", "ENDPOINT"),
    Flag("--tick-feed-connect", "feed.connect", "live tick feed", "ENDPOINT"),
    Flag("--feed-symbol", "feed.symbols", "live tick feed", "S"),
    Flag("--max-tick-bytes", "feed.max_tick_bytes", "live tick feed", "N"),
    Flag("--max-symbols", "feed.max_symbols", "live tick feed", "N"),
    Flag("--drain-timeout", "service.drain_timeout", "service", "S"),
    Flag("--watch-bank", "recognizer.watch_bank", "service", "S"),
    Flag("--stay", "service.stay", "service"),
    Flag("--realtime-priority", "service.realtime_priority", "service", "N"),
    Flag("--http", "dashboard.http", "dashboard", "HOST:PORT"),
    Flag("--frame-rate", "dashboard.frame_rate", "dashboard", "N"),
    Flag("--chart-points", "dashboard.chart_points", "dashboard", "N"),
    Flag("--words-shown", "dashboard.words", "dashboard", "N"),
    Flag("--stall-timeout", "dashboard.stall_timeout", "dashboard", "S"),
    Flag("--stale-after", "dashboard.stale_after", "dashboard", "S"),
    Flag("--max-browsers", "dashboard.max_browsers", "dashboard", "N"),
    Flag("--prices", "dashboard.prices", "dashboard"),
    Flag("--connect", "dashboard.connect", "dashboard client", "ENDPOINT"),
    Flag("--curve-secret", "dashboard.curve_secret", "dashboard client", "FILE"),
    Flag("--curve-server", "dashboard.curve_server", "dashboard client", "FILE"),
    Flag("--state", "state.dir", "service", "DIR"),
    Flag("--checkpoint-every", "state.checkpoint_every", "service", "S"),
    Flag("--cold-start", "state.cold_start", "service"),
    Flag("--cluster", "cluster.address", "cluster", "ADDRESS"),
    Flag("--shards", "cluster.shards", "cluster", "N"),
    Flag("--recognizer-actors", "cluster.recognizers", "cluster", "N"),
    Flag("--actor-cpus", "cluster.actor_cpus", "cluster", "X"),
    Flag("--batch-ms", "cluster.batch_ms", "cluster", "MS"),
    Flag("--batch-ticks", "cluster.batch_ticks", "cluster", "N"),
    Flag("--utterance-batch", "cluster.utterance_batch", "cluster", "N"),
    Flag("--in-flight", "cluster.in_flight", "cluster", "N"),
    Flag("--shard-checkpoint-every", "cluster.checkpoint_every", "cluster", "N"),
)

_GROUP_TITLES = {
    "publishing": "publishing (ZeroMQ)",
    "security": "CURVE security (optional)",
    "price ticks": "price ticks (regime decoding)",
    "live tick feed": "live tick feed (ZeroMQ)",
    "dashboard": "web dashboard",
    "dashboard client": "subscribing (ZeroMQ)",
    "cluster": "Ray cluster (optional: pip install 'streamer[cluster]')",
}


def flags_for(setting: str) -> list[str]:
    """The flags that set `setting` (for the configuration reference)."""
    return [
        f.flag if f.flag.startswith("-") else f.flag.upper() for f in FLAGS if f.setting == setting
    ]


def _default_text(section: str, key: str) -> str:
    default = getattr(C.Config(), section)
    value = getattr(default, key)
    if value is None:
        return ""
    if isinstance(value, bool):
        return ""
    if isinstance(value, tuple):
        return ""
    return (
        f" (default {value:,})"
        if isinstance(value, int) and value >= 10_000
        else (f" (default {value})")
    )


def _argument(group: Any, f: Flag) -> None:
    tp = C.setting_fields(f.section)[f.key]
    doc = C.setting_docs(f.section).get(f.key, "")
    kw: dict[str, Any] = {"dest": f.dest, "default": argparse.SUPPRESS}
    if f.metavar:
        kw["metavar"] = f.metavar
    elif tp is not bool and f.const is None and typing.get_origin(tp) is not Literal:
        kw["metavar"] = {int: "N", float: "X"}.get(_item_type(tp)[0], "VALUE")
    help_text = doc + _default_text(f.section, f.key)
    if f.const is not None:
        kw.update(action="store_const", const=f.const)
        help_text = f"do not {doc}" if f.const is False else f"{doc} ({f.const})"
    elif tp is bool:
        kw["action"] = "store_true"
    else:
        item, many = _item_type(tp)
        if typing.get_origin(item) is Literal:
            kw["choices"] = typing.get_args(item)
        elif item in (int, float, Path):
            kw["type"] = item
        if many:
            if f.flag.startswith("-"):
                kw["action"] = "append"
            else:
                kw["nargs"] = "*"
    kw["help"] = help_text.strip()
    if f.flag.startswith("-"):
        group.add_argument(f.flag, **kw)
    else:  # a positional: its dest is its name
        del kw["dest"]
        group.add_argument(f.dest, **kw)


def _item_type(tp: Any) -> tuple[Any, bool]:
    """(item type, repeatable) of a setting's type, Optional unwrapped."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        return typing.get_args(tp)[0], True
    if origin is not None and type(None) in typing.get_args(tp):
        return next(a for a in typing.get_args(tp) if a is not type(None)), False
    return tp, False


def add_config_arguments(p: argparse.ArgumentParser, groups: Iterable[str]) -> None:
    """Add the settings flags of `groups` (and `--config`, `--vad KEY=VALUE` with theirs)."""
    wanted = tuple(groups)
    for name in wanted:
        g = p.add_argument_group(_GROUP_TITLES.get(name, name))
        for f in FLAGS:
            if f.group == name:
                _argument(g, f)
        if name == "voice activity detection":
            g.add_argument(
                "--vad",
                action="append",
                dest="cfg:--vad",
                default=argparse.SUPPRESS,
                metavar="KEY=VALUE",
                help="any other segmenter setting (see docs/configuration.md, [segmenter])",
            )
    p.add_argument(
        "--config",
        metavar="TOML",
        default=None,
        help="settings file (see docs/configuration.md); flags given here win over it",
    )


def config_from_args(args: argparse.Namespace) -> C.Config:
    """The file's configuration (or the defaults) with the flags that were given laid over it."""
    given = vars(args)
    cfg = C.load(args.config) if getattr(args, "config", None) else C.Config()
    changes: dict[str, dict[str, Any]] = {}
    used: dict[str, str] = {}
    for item in given.get("cfg:--vad", []):
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        fields = C.setting_fields("segmenter")
        if not sep or key not in fields:
            raise ConfigError(
                f"--vad {item!r}: expected KEY=VALUE with KEY one of {sorted(fields)}"
            )
        tp = _item_type(fields[key])[0]
        try:
            changes.setdefault("segmenter", {})[key] = tp(value)
        except ValueError:
            raise ConfigError(f"--vad {item!r}: {value!r} is not a {tp.__name__}") from None
        used[f"segmenter.{key}"] = "--vad"
    for f in FLAGS:
        if f.dest in given:
            tp = C.setting_fields(f.section)[f.key]
            where = f.flag if f.flag.startswith("-") else f.flag.upper()
            changes.setdefault(f.section, {})[f.key] = C.convert(tp, given[f.dest], where)
            used[f.setting] = where
    for section, kw in changes.items():
        try:
            cfg = cfg.replace(section, **kw)
        except ConfigError as e:
            raise ConfigError(_name_flags(str(e), used)) from None
    return cfg


def _name_flags(message: str, used: dict[str, str]) -> str:
    """An error about settings given as flags names the flags too."""
    for setting, flag in used.items():
        if setting in message:
            message = message.replace(setting, f"{flag} ({setting})", 1)
    return message


def given(args: argparse.Namespace, setting: str) -> bool:
    """Whether the flag for `setting` was given on the command line."""
    return f"cfg:{setting}" in vars(args)


# -- flags of other commands: the microphone for `enroll`, CURVE for `listen` --------------------


def add_mic_arguments(p: argparse.ArgumentParser) -> None:
    """`--device D` and `--mic-block-ms MS` for `enroll` (which always records)."""
    audio = C.AudioConfig()
    docs = C.setting_docs("audio")
    g = p.add_argument_group("microphone")
    g.add_argument("--device", default=audio.device, metavar="D", help=docs["device"])
    g.add_argument(
        "--mic-block-ms",
        type=float,
        default=audio.mic_block_ms,
        metavar="MS",
        help=f"{docs['mic_block_ms']} (default {audio.mic_block_ms})",
    )


def mic_from_args(args: argparse.Namespace, rate: int = CANONICAL_RATE) -> MicSource:
    """The microphone `add_mic_arguments` asks for; DeviceError up front if it is missing."""
    audio = C.AudioConfig(device=args.device, mic_block_ms=args.mic_block_ms)
    find_input_device(audio.device)
    return MicSource(
        device=audio.device, rate=rate, block_ms=audio.mic_block_ms, stream=audio.mic_stream
    )


def add_curve_client_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("CURVE security (optional)")
    g.add_argument("--curve-secret", metavar="FILE", help="our secret certificate")
    g.add_argument("--curve-server", metavar="FILE", help="the server's public key (NAME.key)")


def curve_client_from_args(args: argparse.Namespace) -> CurveClient | None:
    secret, server = args.curve_secret, args.curve_server
    if not secret and not server:
        return None
    if not (secret and server):
        raise ConfigError("CURVE needs both --curve-secret FILE and --curve-server FILE")
    return CurveClient(Path(secret), Path(server))


__all__ = [
    "DASHBOARD_GROUPS",
    "FLAGS",
    "REPLAY_GROUPS",
    "SERVE_GROUPS",
    "Flag",
    "add_config_arguments",
    "add_curve_client_arguments",
    "add_mic_arguments",
    "config_from_args",
    "curve_client_from_args",
    "flags_for",
    "given",
    "mic_from_args",
]
