"""The fault soak (scripts/soak.py), a 60-second version: every fault at once, then the accounting.

The real service as a subprocess on the default publishing policy (fair), with every
fault the script knows: recognizer workers killed, subscribers that join, stall and
leave, malformed and random bytes on the tick feed and the snapshot socket, bank
swaps (some broken), the virtual microphone lost and restored, one SIGKILL and a
restart from `--state`. The script's own accounting is the assertion: every
utterance one event (or counted as in flight at the kill), every valid tick one
decode, no gap for the healthy subscribers, every malformed message counted by
the service, RSS growth within 10 MB, no traceback. The microphone part needs
PulseAudio (as tests/live): under CI it runs or fails, never leaves it out.
"""

from __future__ import annotations

import importlib.util
import io
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.live.conftest import in_ci

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "soak.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_a_short_soak_loses_nothing(tmp_path: Path) -> None:
    soak = _load()
    mic = shutil.which("pulseaudio") is not None and shutil.which("pactl") is not None
    if not mic and in_ci():
        pytest.fail("pulseaudio is not installed (Debian: pulseaudio pulseaudio-utils)")
    cfg = soak.SoakConfig(
        duration=45.0,  # of faults; start-up, the restart and the final drain come on top
        kill_every=12.0,
        churn_every=2.0,
        bank_every=9.0,
        mic=mic,
        mic_every=60.0,  # (capped at 65% of the duration: once, after the restart)
        speed=3.0,
        workdir=tmp_path,
        verbose=False,
    )
    assert cfg.policy is None  # the service's own default policy
    result = soak.run_soak(cfg)
    out = io.StringIO()
    soak.print_result(result, out)
    print(out.getvalue())
    failed = [name for name, ok, _ in result["checks"] if not ok]
    assert not failed, out.getvalue()
    faults = result["faults"]
    # the faults really happened (a soak that skipped them would pass for nothing)
    assert faults["service_sigkill"] == 1 and faults["worker_kills"] >= 2, faults
    assert faults["bank_swaps"] >= 2 and faults["bank_broken"] >= 1, faults
    assert faults["snapshot_bad"] >= 5, faults
    assert faults["churn_staller"] + faults.get("churn_regime_staller", 0) >= 3, faults
    assert sum(v for k, v in faults.items() if k.endswith("_left")) >= 5, faults
    assert not mic or faults["mic_losses"] == 1, faults
