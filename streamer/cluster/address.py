"""What ``--cluster ADDRESS`` may say, checked without Ray (the configuration checks it)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from streamer.errors import ConfigError

_HOST_PORT = re.compile(r"^(?:ray://)?\[?[A-Za-z0-9_.:-]+\]?:(\d{1,5})$")
_LOCAL = re.compile(r"^local(?::(\d+))?$")


@dataclass(frozen=True)
class ClusterAddress:
    """A parsed address: an embedded Ray (`local`, with `workers` CPUs) or one to connect to."""

    text: str
    local: bool
    workers: int | None = None  # local:N -> N (None: as many as the machine has)

    @property
    def ray_address(self) -> str | None:
        """What `ray.init(address=...)` takes (None: start an embedded Ray)."""
        return None if self.local else self.text


def parse_address(text: str) -> ClusterAddress:
    """`auto`, ``HOST:PORT``, ``ray://HOST:PORT`` or ``local[:N]``; ConfigError otherwise."""
    s = text.strip()
    m = _LOCAL.match(s)
    if m:
        n = int(m.group(1)) if m.group(1) else None
        if n is not None and n < 1:
            raise ConfigError(f"--cluster {text!r}: local:N needs N >= 1")
        return ClusterAddress(s, local=True, workers=n)
    if s == "auto":
        return ClusterAddress(s, local=False)
    m = _HOST_PORT.match(s)
    if m and 0 < int(m.group(1)) < 65536:
        return ClusterAddress(s, local=False)
    raise ConfigError(f"--cluster {text!r}: expected auto, HOST:PORT, ray://HOST:PORT or local[:N]")


__all__ = ["ClusterAddress", "parse_address"]
