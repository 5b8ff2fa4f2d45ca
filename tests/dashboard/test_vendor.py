"""The vendored chart library is what VENDOR.json says it is, and the page loads only our files."""

from __future__ import annotations

import hashlib
import json
import re

from streamer.dashboard.server import STATIC

VENDOR = STATIC / "vendor" / "uplot"


def test_vendored_files_match_their_recorded_checksums() -> None:
    meta = json.loads((VENDOR / "VENDOR.json").read_text())
    assert meta["package"] == "uplot" and meta["license"] == "MIT"
    assert meta["tarball_integrity"].startswith("sha512-")
    for name, info in meta["files"].items():
        digest = hashlib.sha256((VENDOR / name).read_bytes()).hexdigest()
        assert digest == info["sha256"], f"{name} differs from the recorded uplot file"
    banner = (VENDOR / "uPlot.iife.min.js").read_text()[:200]
    assert f"(v{meta['version']})" in banner
    assert "MIT License" in (VENDOR / "LICENSE").read_text()


def test_the_page_refers_only_to_its_own_files() -> None:
    for name in ("index.html", "app.js", "style.css"):
        text = (STATIC / name).read_text()
        urls = re.findall(r"""(?:src|href)=["']([^"']+)""", text) + re.findall(
            r"https?://[^\s\"'`)]+", text
        )
        assert all(u.startswith("/") for u in urls), (name, urls)
