"""The project installs as a package: public API, console script, shipped bank inside the wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import streamer
from streamer.paths import default_bank_path

ROOT = Path(__file__).resolve().parents[1]


def test_every_module_exports_what_it_defines() -> None:
    """Where a module declares `__all__`, it lists exactly its public definitions, all real."""
    import importlib
    import inspect
    import pkgutil

    checked = 0
    for info in pkgutil.walk_packages(streamer.__path__, "streamer."):
        if info.name.endswith("__main__"):
            continue
        mod = importlib.import_module(info.name)
        exported = getattr(mod, "__all__", None)
        if exported is None:
            continue
        assert len(set(exported)) == len(exported), f"{info.name}: a name twice in __all__"
        for name in exported:
            assert hasattr(mod, name), f"{info.name}.__all__ names {name!r}, which is missing"
        defined = {
            n
            for n, v in vars(mod).items()
            if not n.startswith("_")
            and (inspect.isclass(v) or inspect.isfunction(v))
            and v.__module__ == mod.__name__
        }
        missing = defined - set(exported)
        assert not missing, f"{info.name} defines {sorted(missing)} but does not export them"
        checked += 1
    assert checked > 15
    assert "ConfigError" in streamer.__all__ and streamer.__version__


def test_console_script_runs() -> None:
    exe = Path(sys.executable).with_name("streamer")
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"streamer {streamer.__version__}"


def test_shipped_bank_is_found_and_loads() -> None:
    from streamer.speech.bank import WordBank

    bank = WordBank.load(default_bank_path())
    assert sorted(bank.labels) == sorted(
        ["apple", "banana", "kiwi", "lime", "orange", "peach", "pineapple"]
    )


@pytest.mark.skipif(
    not (ROOT / "pyproject.toml").exists(), reason="needs the source tree (runs from a checkout)"
)
def test_wheel_carries_the_shipped_bank(tmp_path: Path) -> None:
    """A plain `pip install .` must find models/ too: the wheel holds streamer/models/."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("streamer-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "streamer/models/fruits.npz" in names
    assert "streamer/models/README.md" in names
    assert not any(n.endswith(".wav") for n in names)
