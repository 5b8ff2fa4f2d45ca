"""Running Ray on loopback only: inside a private network namespace (tests, benchmarks).

Ray binds its services to the machine's interface address, not to 127.0.0.1;
inside a network namespace that has nothing but loopback it finds no other
address and keeps all its traffic there (as root: ``unshare --net``, then
``ip link set lo up``). The cluster tests and ``scripts/bench_cluster.py`` run
themselves that way; a real cluster does not need any of this.
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

_DEV = Path("/proc/self/net/dev")  # per network namespace (unlike /sys/class/net)


def in_private_net() -> bool:
    """True inside a network namespace whose only interface is loopback."""
    try:
        lines = _DEV.read_text().splitlines()[2:]
    except OSError:
        return False
    names = {line.split(":", 1)[0].strip() for line in lines if ":" in line}
    return names == {"lo"}


def private_net_command(argv: list[str]) -> list[str] | None:
    """`argv` wrapped to run in a new loopback-only namespace, or None if that is impossible
    here (no ``unshare`` or ``ip``, or not root)."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None or os.geteuid() != 0:
        return None
    inner = f"{shlex.quote(ip)} link set lo up && exec {shlex.join(argv)}"
    return [unshare, "--net", "sh", "-c", inner]


__all__ = ["in_private_net", "private_net_command"]
