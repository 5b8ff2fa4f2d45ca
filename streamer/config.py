"""The service's settings: one tree of frozen dataclasses, read from TOML, written back as TOML.

Why one tree: every default lives in exactly one place (a field here, or in the
stage's own config class that this tree reuses: `SegmenterConfig`,
`TrackerConfig`), and every check runs when the tree is built, in
`__post_init__`, whatever built it (a TOML file, command-line flags, code).

The TOML file has one table per part, named as the fields of `Config`
(``[audio]``, ``[segmenter]``, ``[recognizer]``, ``[ticks]``, ``[tracker]``,
``[feed]``, ``[publisher]``, ``[security]``, ``[service]``, ``[dashboard]``,
``[state]``, ``[cluster]``); keys are the field names (``-`` may stand for
``_``). An unknown table or key, or a value of the wrong type, is a `ConfigError`
naming the key and the table. `streamer config show` prints the effective settings
in this format; `docs/configuration.md` lists every key (both are generated from
the dataclasses below).

Command-line flags are laid over a file in `streamer.commands.options`, the only
place that knows about flags.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from streamer.audio.segmenter import SegmenterConfig
from streamer.audio.sources import MIC_BLOCK_MS
from streamer.cluster.address import parse_address
from streamer.errors import ConfigError
from streamer.fits import FitKind
from streamer.market.settings import TicksConfig, TrackerConfig
from streamer.net.protocol import (
    DEFAULT_HEARTBEAT,
    DEFAULT_HWM,
    DEFAULT_PUB,
    MAX_TICK_BYTES,
    PublishPolicy,
)

WorkerKind = Literal["process", "thread", "inline"]

DEFAULT_CHUNK_MS = 20.0  # replayed audio block, paced replays (results do not depend on it)
FAST_CHUNK_MS = 1000.0  # ...and at speed 0, where fewer, larger blocks are cheaper
DEFAULT_DASHBOARD_HTTP = "127.0.0.1:8080"


def _check(ok: bool, setting: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{setting}: {message}")


@dataclass(frozen=True)
class ServiceConfig:
    """How the service runs as a whole: pace, stopping, output extras."""

    speed: float = 1.0  # replay speed, X times real time (0 = as fast as possible)
    drain_timeout: float = 5.0  # on SIGINT/SIGTERM, seconds allowed to publish what is queued
    stay: bool = False  # keep serving heartbeats and snapshots after the inputs end
    latency: bool = False  # add delay_ms (wall ms from utterance close to its event) to words
    stats: bool = False  # print a summary on stderr at the end
    fit_kind: FitKind = "process"  # where regime fits run: process (off the event loop) or thread
    fit_workers: int = 1  # regime fits at once
    realtime_priority: int = 0  # SCHED_FIFO priority of the event loop and ZeroMQ threads (0: off)

    def __post_init__(self) -> None:
        _check(
            math.isfinite(self.speed) and self.speed >= 0,
            "service.speed",
            f"must be >= 0, not {self.speed}",
        )
        _check(
            self.drain_timeout > 0,
            "service.drain_timeout",
            f"must be > 0, not {self.drain_timeout}",
        )
        _check(
            1 <= self.fit_workers <= 64,
            "service.fit_workers",
            f"must be between 1 and 64, not {self.fit_workers}",
        )
        _check(
            0 <= self.realtime_priority <= 99,
            "service.realtime_priority",
            f"must be between 0 (off) and 99, not {self.realtime_priority}",
        )


@dataclass(frozen=True)
class AudioConfig:
    """Audio in: WAV files replayed as live streams, and the microphone."""

    files: tuple[Path, ...] = ()  # WAV files, one stream each
    chunk_ms: float | None = None  # replay block in ms (unset: 20, or 1000 at speed 0)
    mic: bool = False  # recognise live audio from an input device
    device: str | None = None  # input device: index or (part of a) name (unset: the default)
    mic_block_ms: float = MIC_BLOCK_MS  # capture block in ms
    mic_stream: str = "mic"  # the microphone's stream name in word events

    def __post_init__(self) -> None:
        _check(
            self.chunk_ms is None or self.chunk_ms > 0,
            "audio.chunk_ms",
            f"must be > 0, not {self.chunk_ms}",
        )
        _check(self.mic_block_ms > 0, "audio.mic_block_ms", f"must be > 0, not {self.mic_block_ms}")
        _check(bool(self.mic_stream), "audio.mic_stream", "must not be empty")

    def block_ms(self, speed: float) -> float:
        """The replay block: `chunk_ms`, or its default for this speed."""
        if self.chunk_ms is not None:
            return self.chunk_ms
        return FAST_CHUNK_MS if speed == 0 else DEFAULT_CHUNK_MS


@dataclass(frozen=True)
class RecognizerConfig:
    """The word bank and the worker pool that scores utterances off the event loop."""

    bank: Path | None = None  # bank file (unset: the shipped models/fruits.npz)
    workers: int = 1  # recognition workers
    kind: WorkerKind = "process"  # process, thread, or inline (in the event loop)
    max_pending: int | None = None  # utterances in recognition at once (unset: 2*workers+2)
    watch_bank: float = 1.0  # seconds between checks of the bank file for changes (0 = never)

    def __post_init__(self) -> None:
        _check(self.workers >= 1, "recognizer.workers", f"need at least 1, not {self.workers}")
        _check(
            self.max_pending is None or self.max_pending >= 1,
            "recognizer.max_pending",
            f"must be >= 1, not {self.max_pending}",
        )
        _check(
            math.isfinite(self.watch_bank) and self.watch_bank >= 0,
            "recognizer.watch_bank",
            f"must be >= 0, not {self.watch_bank}",
        )


@dataclass(frozen=True)
class FeedConfig:
    """The live tick feed: a ZeroMQ SUB socket that outside producers publish ticks to."""

    bind: tuple[str, ...] = ()  # endpoints to bind; producers connect and publish ticks
    connect: tuple[str, ...] = ()  # producers' PUB endpoints to connect to instead
    symbols: tuple[str, ...] = ()  # accept only these symbols (empty: any)
    max_tick_bytes: int = MAX_TICK_BYTES  # larger tick messages are dropped
    max_symbols: int = 10_000  # new symbols beyond this many are dropped

    def __post_init__(self) -> None:
        _check(
            self.max_tick_bytes >= 64,
            "feed.max_tick_bytes",
            f"must be at least 64, not {self.max_tick_bytes}",
        )
        _check(self.max_symbols >= 1, "feed.max_symbols", f"must be >= 1, not {self.max_symbols}")


@dataclass(frozen=True)
class PublisherConfig:
    """The ZeroMQ publisher: endpoints, queueing, heartbeats, subscribers to wait for."""

    endpoint: str = DEFAULT_PUB  # publish here (tcp://HOST:PORT or ipc://PATH)
    snapshot: str | None = None  # snapshot endpoint for late joiners (unset: the pub port + 1)
    snapshots: bool = True  # serve snapshots to late joiners
    hwm: int = DEFAULT_HWM  # messages queued per subscriber before sends fail (0 = no limit)
    policy: PublishPolicy = "fair"  # a full subscriber queue: fair, lossless or lossy (protocol.md)
    stall_timeout: float = 2.0  # seconds without progress before a subscriber counts as stalled
    lossy: bool = False  # the same as policy = "lossy" (kept for older scripts: --lossy)
    heartbeat: float = DEFAULT_HEARTBEAT  # seconds between heartbeats, at most 1
    metrics_interval: float = 5.0  # seconds between metrics messages (0 = only at the end)
    summary_interval: float = 0.1  # seconds between per-symbol regime summaries (0 = none)
    wait_subscribers: int = 0  # start only once this many subscribers are connected
    wait_timeout: float | None = None  # give up waiting for them after this many s (unset: wait)

    def __post_init__(self) -> None:
        _check(bool(self.endpoint), "publisher.endpoint", "must not be empty")
        _check(self.hwm >= 0, "publisher.hwm", f"must be >= 0 (0 = no limit), not {self.hwm}")
        _check(
            self.stall_timeout > 0,
            "publisher.stall_timeout",
            f"must be > 0 seconds, not {self.stall_timeout}",
        )
        _check(
            0 < self.heartbeat <= 1.0,
            "publisher.heartbeat",
            f"must be in (0, 1] seconds, not {self.heartbeat}",
        )
        _check(
            self.metrics_interval >= 0,
            "publisher.metrics_interval",
            f"must be >= 0, not {self.metrics_interval}",
        )
        _check(
            self.summary_interval >= 0 and math.isfinite(self.summary_interval),
            "publisher.summary_interval",
            f"must be >= 0, not {self.summary_interval}",
        )
        _check(
            self.wait_subscribers >= 0,
            "publisher.wait_subscribers",
            f"must be >= 0, not {self.wait_subscribers}",
        )
        _check(
            self.wait_timeout is None or self.wait_timeout > 0,
            "publisher.wait_timeout",
            f"must be > 0, not {self.wait_timeout}",
        )


@dataclass(frozen=True)
class SecurityConfig:
    """CURVE encryption with a client allow-list (both settings, or neither)."""

    curve_secret: Path | None = None  # the server's secret certificate (from `streamer keys`)
    curve_allow: Path | None = None  # folder of client public keys (*.key) allowed in

    def __post_init__(self) -> None:
        _check(
            (self.curve_secret is None) == (self.curve_allow is None),
            "security",
            "CURVE needs both curve_secret (--curve-secret FILE) and curve_allow "
            "(--curve-allow DIR)",
        )


@dataclass(frozen=True)
class DashboardConfig:
    """The live web dashboard: `streamer dashboard`, or the page `streamer serve --http` serves."""

    http: str | None = None  # the page's HOST:PORT (unset: none in serve, 127.0.0.1:8080)
    connect: str | None = None  # publisher to subscribe to (unset: [publisher] endpoint)
    curve_secret: Path | None = None  # the dashboard's own secret certificate, when CURVE is on
    curve_server: Path | None = None  # the service's public key (unset: [security] curve_secret)
    frame_rate: float = 10.0  # frames a second at most, per browser
    chart_points: int = 600  # price points kept per symbol (and drawn)
    words: int = 20  # latest utterances kept per stream
    stall_timeout: float = 10.0  # seconds a browser may leave a frame unread before it is dropped
    stale_after: float = 3.0  # seconds without a heartbeat before the page shows `stale`
    max_browsers: int = 16  # browsers at once; more are refused
    prices: Literal["summary", "regime"] = "summary"  # the service's summaries, or every decode

    def __post_init__(self) -> None:
        _check(
            self.http is None
            or re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^:\s\[\]]+):\d{1,5}", self.http) is not None,
            "dashboard.http",
            f"expected HOST:PORT (e.g. 127.0.0.1:8080), not {self.http!r}",
        )
        _check(
            0 < self.frame_rate <= 60 and math.isfinite(self.frame_rate),
            "dashboard.frame_rate",
            f"must be in (0, 60], not {self.frame_rate}",
        )
        _check(
            self.chart_points >= 2,
            "dashboard.chart_points",
            f"need at least 2, not {self.chart_points}",
        )
        _check(self.words >= 1, "dashboard.words", f"need at least 1, not {self.words}")
        _check(
            self.stall_timeout > 0,
            "dashboard.stall_timeout",
            f"must be > 0, not {self.stall_timeout}",
        )
        _check(
            self.stale_after > 0, "dashboard.stale_after", f"must be > 0, not {self.stale_after}"
        )
        _check(
            self.max_browsers >= 1,
            "dashboard.max_browsers",
            f"need at least 1, not {self.max_browsers}",
        )

    def http_or_default(self) -> str:
        return self.http or DEFAULT_DASHBOARD_HTTP


@dataclass(frozen=True)
class StateConfig:
    """Crash-safe state: trackers, filters and per-topic seq checkpointed to a folder."""

    dir: Path | None = None  # folder for the state file; a restart with it resumes (unset: none)
    checkpoint_every: float = 2.0  # seconds between checkpoints (one more at shutdown)
    cold_start: bool = False  # ignore a saved state (even a corrupt one) and start afresh

    def __post_init__(self) -> None:
        _check(
            math.isfinite(self.checkpoint_every) and self.checkpoint_every > 0,
            "state.checkpoint_every",
            f"must be > 0 seconds, not {self.checkpoint_every}",
        )


@dataclass(frozen=True)
class ClusterConfig:
    """A Ray cluster that runs recognition and regime decoding (the `cluster` extra)."""

    address: str | None = None  # Ray: auto, HOST:PORT, ray://HOST:PORT, local[:N] (unset: no Ray)
    shards: int | None = None  # regime shard actors (unset: one per cluster CPU, <= symbols)
    recognizers: int | None = None  # recognizer actors (unset: recognizer.workers)
    actor_cpus: float = 1.0  # CPUs each actor reserves on its node (fractions pack more)
    batch_ms: float = 5.0  # a tick call carries this many ms of paced or live-feed ticks
    batch_ticks: int = 4096  # and at most this many (the batch at speed 0; a feed waits beyond)
    utterance_batch: int = 4  # utterances per recognizer call, at most
    in_flight: int = 2  # calls outstanding per actor; the sender waits beyond that
    checkpoint_every: int = 64  # tick calls between shard checkpoints (0 = recover from the start)

    def __post_init__(self) -> None:
        if self.address is not None:
            parse_address(self.address)
        for name in ("shards", "recognizers"):
            v = getattr(self, name)
            _check(v is None or v >= 1, f"cluster.{name}", f"must be >= 1, not {v}")
        _check(
            math.isfinite(self.actor_cpus) and self.actor_cpus >= 0,
            "cluster.actor_cpus",
            f"must be >= 0, not {self.actor_cpus}",
        )
        _check(
            math.isfinite(self.batch_ms) and self.batch_ms > 0,
            "cluster.batch_ms",
            f"must be > 0, not {self.batch_ms}",
        )
        _check(
            self.batch_ticks >= 1, "cluster.batch_ticks", f"must be >= 1, not {self.batch_ticks}"
        )
        _check(
            self.utterance_batch >= 1,
            "cluster.utterance_batch",
            f"must be >= 1, not {self.utterance_batch}",
        )
        _check(self.in_flight >= 1, "cluster.in_flight", f"must be >= 1, not {self.in_flight}")
        _check(
            self.checkpoint_every >= 0,
            "cluster.checkpoint_every",
            f"must be >= 0, not {self.checkpoint_every}",
        )


@dataclass(frozen=True)
class Config:
    """Everything `Service` needs; each part is a table in the TOML file."""

    service: ServiceConfig = field(default_factory=ServiceConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    recognizer: RecognizerConfig = field(default_factory=RecognizerConfig)
    ticks: TicksConfig = field(default_factory=TicksConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    feed: FeedConfig = field(default_factory=FeedConfig)
    publisher: PublisherConfig = field(default_factory=PublisherConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    state: StateConfig = field(default_factory=StateConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def replace(self, section: str, **changes: Any) -> Config:
        """A copy with some settings of one section changed (and checked again)."""
        part = getattr(self, section)
        try:
            new = dataclasses.replace(part, **changes)
        except ConfigError as e:
            raise ConfigError(_in_section(section, e)) from None
        return dataclasses.replace(self, **{section: new})


SECTIONS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Config))


# -- reading: TOML values checked against the field types -----------------------------------------


def section_type(section: str) -> type[Any]:
    """The dataclass of one section of `Config`."""
    if section not in SECTIONS:
        raise ConfigError(f"unknown section [{section}] (known: {', '.join(SECTIONS)})")
    return typing.cast(type[Any], _hints(Config)[section])


def setting_fields(section: str) -> dict[str, Any]:
    """The settings of a section: name -> type."""
    cls = section_type(section)
    hints = _hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _hints(cls: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


_COMMENTED = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.*?)\s*$")


@functools.cache
def setting_docs(section: str) -> dict[str, str]:
    """What each setting of a section means: the comment beside its field in the source.

    The dataclasses document their fields in trailing comments; reading those
    keeps one description per setting (for `--help` and docs/configuration.md).
    """
    try:
        source = inspect.getsource(section_type(section))
    except (OSError, TypeError):  # no source (a frozen build): names only
        return {}
    docs: dict[str, str] = {}
    for line in source.splitlines():
        m = _COMMENTED.match(line)
        if m and m.group(1) not in docs:
            docs[m.group(1)] = m.group(2)
    return docs


def convert(tp: Any, value: Any, where: str) -> Any:
    """A TOML (or flag) value as type `tp`; ConfigError naming `where` if it is not one."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return convert(args[0], value, where)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if origin is tuple:
        (item,) = typing.get_args(tp)[:1]
        items = value if isinstance(value, list | tuple) else [value]
        return tuple(convert(item, v, where) for v in items)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, not {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, not {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, not {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, not {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, str | Path):
            raise ConfigError(f"{where}: expected a path (a string), not {value!r}")
        return Path(value)
    raise TypeError(f"{where}: no conversion to {tp!r}")  # a field type this module lacks


def _in_section(section: str, e: ConfigError) -> str:
    text = str(e)
    return (
        text
        if text.startswith(f"{section}.") or text.startswith(section)
        else f"[{section}] {text}"
    )


def from_dict(data: dict[str, Any], where: str = "config") -> Config:
    """The configuration a parsed TOML document describes (defaults for what it leaves out)."""
    parts: dict[str, Any] = {}
    for section, table in data.items():
        if section not in SECTIONS:
            raise ConfigError(
                f"{where}: unknown section [{section}] (known: {', '.join(SECTIONS)})"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: {section} must be a table ([{section}])")
        fields = setting_fields(section)
        kw: dict[str, Any] = {}
        for key, value in table.items():
            name = key.replace("-", "_")
            if name not in fields:
                raise ConfigError(
                    f"{where}: unknown key {key!r} in [{section}] (known: {', '.join(fields)})"
                )
            kw[name] = convert(fields[name], value, f"{where}: [{section}] {key}")
        try:
            parts[section] = section_type(section)(**kw)
        except ConfigError as e:
            raise ConfigError(f"{where}: {_in_section(section, e)}") from None
    return Config(**parts)


def load(path: str | Path) -> Config:
    """Read a TOML configuration file; ConfigError (one line) if it is unreadable or wrong."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    return from_dict(data, str(path))


# -- writing: the effective configuration as TOML -------------------------------------------------


def to_toml_value(value: Any) -> str:
    """One value in TOML syntax."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value), ensure_ascii=False)  # JSON strings are TOML basic strings
    if isinstance(value, tuple | list):
        return "[" + ", ".join(to_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def type_name(tp: Any) -> str:
    """A setting's type in words, for the reference."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is Literal:
        return " \\| ".join(f'"{a}"' for a in typing.get_args(tp))
    if origin is tuple:
        return f"list of {type_name(typing.get_args(tp)[0])}"
    names = {bool: "boolean", int: "integer", float: "number", str: "string", Path: "path"}
    return names.get(tp, str(tp))


def to_toml(config: Config) -> str:
    """The configuration as a TOML document that `load` reads back to the same `Config`.

    Unset settings (None) have no TOML form: they are written as comments.
    """
    lines: list[str] = []
    for section in SECTIONS:
        part = getattr(config, section)
        lines.append(f"[{section}]")
        for name in setting_fields(section):
            value = getattr(part, name)
            if value is None:
                lines.append(f"# {name} = (unset)")
            else:
                lines.append(f"{name} = {to_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


__all__ = [
    "SECTIONS",
    "AudioConfig",
    "ClusterConfig",
    "Config",
    "DashboardConfig",
    "FeedConfig",
    "PublisherConfig",
    "RecognizerConfig",
    "SecurityConfig",
    "ServiceConfig",
    "StateConfig",
    "TicksConfig",
    "WorkerKind",
    "convert",
    "from_dict",
    "load",
    "section_type",
    "setting_docs",
    "setting_fields",
    "to_toml",
    "to_toml_value",
    "type_name",
]
