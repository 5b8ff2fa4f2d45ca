"""The connection to a Ray cluster, the two actor classes, and what they did (``--stats``).

This is the only module that imports Ray at its top; the service imports it
only with ``--cluster``. Actors are spread over the nodes (Ray's ``SPREAD``
strategy) and each reserves `ClusterConfig.actor_cpus`. Recognizer actors are
restarted by Ray when they die (their tasks retried: they hold nothing but a
bank, loaded again on the first call); shard actors are not, because a shard's
state must come back from its checkpoint and the batches since, which only the
driver has (`streamer.cluster.ticks`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from streamer.cluster.address import parse_address
from streamer.cluster.cores import RecognizerCore, ShardCore, ShardReply, ShardState, TickChunk
from streamer.config import ClusterConfig
from streamer.errors import ConfigError
from streamer.market.decoder import TrackerConfig
from streamer.messages import Recognition
from streamer.speech.recognizer import Recognizer

log = logging.getLogger(__name__)

MISSING = "--cluster needs Ray, which is not installed: pip install 'streamer[cluster]'"


def require_ray() -> Any:
    """The `ray` module, or a one-line ConfigError saying how to install it."""
    # Ray's crash handler (a stack dump, then abort) would take SIGTERM over in this process,
    # the service, whose SIGTERM must start a drain; read when Ray is first imported
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    try:
        import ray
    except ImportError:  # the optional extra is not installed
        raise ConfigError(MISSING) from None
    return ray


def lost_errors() -> tuple[type[BaseException], ...]:
    """The errors that mean an actor (or its node) is gone, not that our code failed."""
    e = require_ray().exceptions
    return (e.RayActorError, e.ActorUnavailableError, e.ObjectLostError, e.OwnerDiedError)


def _node_id() -> str:
    return str(require_ray().get_runtime_context().get_node_id())


class ShardActor:
    """A `ShardCore` on some node (Ray wraps this class with `ray.remote`)."""

    def __init__(self, config: TrackerConfig, name: str) -> None:
        self.core = ShardCore(config)
        self.node = _node_id()
        self.name = name

    def push(self, seq: int, chunks: Sequence[TickChunk], checkpoint: bool) -> ShardReply:
        reply = self.core.push(seq, chunks, checkpoint)
        reply.node, reply.actor = self.node, self.name
        return reply

    def restore(self, state: ShardState) -> None:
        self.core.restore(state)

    def finish(self) -> dict[str, dict[str, Any]]:
        return self.core.finish()

    def where(self) -> str:
        return self.node


class RecognizerActor:
    """A `RecognizerCore` on some node; the bank comes as an object reference inside a list
    (so Ray does not fetch it for every call, only when the generation changes)."""

    def __init__(self, name: str) -> None:
        self.core = RecognizerCore()
        self.node = _node_id()
        self.name = name

    def recognize(
        self,
        generation: int,
        bank: list[Any],
        items: Sequence[tuple[Any, int, str]],
    ) -> tuple[list[tuple[Recognition, str | None]], float, float, float, str]:
        """(results, seconds inside, wall start, wall end, node)."""
        started = time.time()

        def load() -> Recognizer:
            rec: Recognizer = require_ray().get(bank[0])
            return rec

        out, busy = self.core.recognize(generation, load, items)
        return out, busy, started, time.time(), self.node

    def where(self) -> str:
        return self.node


@dataclass
class ClusterStats:
    """What the cluster did, for ``--stats`` (``"cluster": {...}``)."""

    address: str = ""
    nodes_seen: set[str] = field(default_factory=set)  # nodes whose actors did work
    actors_seen: set[str] = field(default_factory=set)  # actors that did work
    calls: int = 0
    ticks: int = 0
    utterances: int = 0
    busy: float = 0.0  # seconds inside the actors
    span_start: float = float("inf")  # wall clock of the first call's start inside an actor
    span_end: float = 0.0  # ... and of the last call's end
    restarts: int = 0  # shard actors replaced after a loss
    replayed: int = 0  # tick calls sent again to a replaced shard
    duplicates: int = 0  # replies dropped because their seq was delivered already
    checkpoints: int = 0
    swaps: int = 0
    shards: int = 0
    recognizers: int = 0

    def did(self, node: str, actor: str, busy: float, start: float, end: float) -> None:
        self.nodes_seen.add(node)
        self.actors_seen.add(actor)
        self.calls += 1
        self.busy += busy
        self.span_start = min(self.span_start, start)
        self.span_end = max(self.span_end, end)

    def as_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "nodes": len(self.nodes_seen),
            "actors": len(self.actors_seen),
            "calls": self.calls,
            "shards": self.shards,
            "recognizers": self.recognizers,
            "ticks": self.ticks,
            "utterances": self.utterances,
            "busy_s": round(self.busy, 3),
            "restarts": self.restarts,
            "replayed_calls": self.replayed,
            "duplicates_dropped": self.duplicates,
            "checkpoints": self.checkpoints,
            "bank_swaps": self.swaps,
        }


class ClusterRuntime:
    """Connects to (or starts) Ray, makes actors, keeps the counters; `close` disconnects."""

    def __init__(self, config: ClusterConfig) -> None:
        if config.address is None:
            raise ConfigError("no cluster address (--cluster ADDRESS)")
        self.config = config
        self.address = parse_address(config.address)
        self.stats = ClusterStats(address=config.address)
        self._started = False
        self._shard_cls: Any = None
        self._recognizer_cls: Any = None
        self._count = 0

    def connect(self) -> None:
        """Join the cluster (or start an embedded one); reuse a connection already made."""
        r = require_ray()
        if r.is_initialized():
            return
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        a = self.address
        try:
            if a.local:
                r.init(num_cpus=a.workers, **kw)
            else:
                kw.pop("include_dashboard")
                r.init(address=a.ray_address, **kw)
        except (ConnectionError, RuntimeError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"--cluster {a.text}: cannot connect ({first})") from None
        self._started = True

    def close(self) -> None:
        if self._started:
            require_ray().shutdown()
        self._started = False

    def cpus(self) -> int:
        """CPUs of the live nodes (at least 1)."""
        return max(1, int(require_ray().cluster_resources().get("CPU", 1)))

    def nodes(self) -> int:
        return sum(1 for n in require_ray().nodes() if n.get("Alive"))

    def _options(self, restart: bool) -> dict[str, Any]:
        opts: dict[str, Any] = {
            "num_cpus": self.config.actor_cpus,
            "scheduling_strategy": "SPREAD",
        }
        if restart:
            opts.update(max_restarts=-1, max_task_retries=-1)
        return opts

    def _name(self, kind: str) -> str:
        self._count += 1
        return f"{kind}-{self._count}"

    def shard(self, config: TrackerConfig) -> Any:
        """A new shard actor (a handle)."""
        if self._shard_cls is None:
            self._shard_cls = require_ray().remote(ShardActor)
        return self._shard_cls.options(**self._options(False)).remote(config, self._name("shard"))

    def recognizer(self) -> Any:
        """A new recognizer actor (restarted by Ray if it dies)."""
        if self._recognizer_cls is None:
            self._recognizer_cls = require_ray().remote(RecognizerActor)
        return self._recognizer_cls.options(**self._options(True)).remote(self._name("recognizer"))

    def put(self, value: Any) -> Any:
        return require_ray().put(value)

    def kill(self, actor: Any) -> None:
        try:
            require_ray().kill(actor, no_restart=True)
        except Exception as e:  # already gone with its node
            log.debug("kill: %s", e)


def call(method: Any, *args: Any) -> asyncio.Future[Any]:
    """`method.remote(*args)` as an asyncio future (a Ray ObjectRef awaited in the loop)."""
    return asyncio.wrap_future(method.remote(*args).future())


__all__ = [
    "MISSING",
    "ClusterRuntime",
    "ClusterStats",
    "RecognizerActor",
    "ShardActor",
    "call",
    "lost_errors",
    "require_ray",
]
