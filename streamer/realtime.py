"""Real-time scheduling for the latency path: the event loop's thread and ZeroMQ's I/O threads.

Why: on a busy machine the tail of the tick-in to message-out latency is not the
service's own work (tens of microseconds a wake-up) but the time its threads wait
for a core behind other processes: a woken thread under the default policy can
wait a scheduler slice (milliseconds). With ``service.realtime_priority = N``
(``--realtime-priority N``, 1-99), the thread that runs the event loop and
ZeroMQ's I/O threads run under ``SCHED_FIFO`` at priority N, as audio servers
(JACK, PipeWire) run their processing threads, so they take a core the moment
they are woken.

Only those threads: the policy is set with ``SCHED_RESET_ON_FORK``, so every
thread and process started afterwards (executor threads, recognizer workers,
regime fits, PortAudio's threads) runs under the normal policy and heavy work
never runs real-time. Linux keeps 5% of each second for other tasks
(``kernel.sched_rt_runtime_us``) even if a real-time thread spins.

It needs the right to: root, ``CAP_SYS_NICE``, or an ``rtprio`` limit of at least
N (``ulimit -r``, ``/etc/security/limits.conf``). Without it the service says so in
one warning line and runs under the normal policy.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import zmq

log = logging.getLogger(__name__)


def _fifo() -> int | None:
    """SCHED_FIFO with reset-on-fork, or None where the platform has neither."""
    fifo = getattr(os, "SCHED_FIFO", None)
    reset = getattr(os, "SCHED_RESET_ON_FORK", None)
    if fifo is None or reset is None or not hasattr(os, "sched_setscheduler"):
        return None
    return int(fifo) | int(reset)


def enter(priority: int) -> str | None:
    """Run the calling thread under SCHED_FIFO at `priority`; why not, or None if it does.

    0 leaves the policy as it is. Only the calling thread changes (Linux applies
    the policy per thread); threads it starts later start under the normal policy.
    """
    if priority <= 0:
        return None
    policy = _fifo()
    if policy is None:
        return "real-time scheduling (SCHED_FIFO) is not available on this platform"
    try:
        os.sched_setscheduler(0, policy, os.sched_param(priority))
    except PermissionError:
        return (
            f"no permission for real-time priority {priority} (needs root, CAP_SYS_NICE "
            f"or an rtprio limit of at least {priority}: ulimit -r)"
        )
    except OSError as e:
        return f"real-time priority {priority} refused: {e.strerror or e}"
    return None


def leave() -> None:
    """Back to the normal policy after `enter` (the loop is done; the thread may live on)."""
    fifo = _fifo()
    if fifo is not None and os.sched_getscheduler(0) | int(os.SCHED_RESET_ON_FORK) == fifo:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def context(priority: int) -> zmq.Context[Any]:
    """A new ZeroMQ context whose I/O threads run under SCHED_FIFO at `priority` (0: normal).

    libzmq applies these when it starts its threads (at the first socket) and
    aborts the process if it may not, so give a priority only after `enter`
    succeeded with it.
    """
    ctx: zmq.Context[Any] = zmq.Context()
    if priority > 0 and _fifo() is not None:
        ctx.set(zmq.THREAD_SCHED_POLICY, int(os.SCHED_FIFO))
        ctx.set(zmq.THREAD_PRIORITY, priority)
    return ctx


__all__ = ["context", "enter", "leave"]
