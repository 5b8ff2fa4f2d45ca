"""The dashboard in a real browser: Debian's Chromium driven by Playwright, a real publisher
(a subprocess, so it can be killed) and `streamer dashboard` as users run them.

One publisher, one dashboard and one browser serve the whole module (the checks run in
file order and take a few seconds together); what the page shows is compared with what
the publisher says it sent.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
HERE = Path(__file__).resolve().parent


@dataclass
class Publisher:
    endpoint: str
    proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "publisher.py"), self.endpoint],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        ready = self._line()
        assert "ready" in ready, ready

    def _line(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the test publisher died"
        return dict(json.loads(line))

    def send(self, command: str) -> dict[str, Any]:
        """Run one command; what the publisher says it published last."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._line()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


@dataclass
class Rig:
    pub: Publisher
    dashboard: subprocess.Popen[str]
    url: str
    browser: Browser
    page: Page
    early: dict[str, Any]
    requests: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)


def start_dashboard(endpoint: str, http: str = "127.0.0.1:0") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "streamer", "dashboard", "--connect", endpoint, "--http", http],
        stderr=subprocess.PIPE,
        text=True,
    )


def _dashboard_url(proc: subprocess.Popen[str]) -> str:
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        if m:
            return m.group(1)
    raise AssertionError(f"streamer dashboard did not start (exit {proc.poll()})")


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    assert os.access(CHROMIUM, os.X_OK), (
        f"{CHROMIUM} is missing: `make setup` installs Debian's chromium (Makefile SYSTEM_PACKAGES)"
    )
    tmp = tmp_path_factory.mktemp("dashboard")
    pub = Publisher(f"ipc://{tmp / 'pub'}")
    pub.start()
    # published before the dashboard exists: it must come from the join snapshot
    pub.send("word mic apple 0.91")
    early = pub.send("ticks ETH 40")
    dash = start_dashboard(pub.endpoint)
    r: Rig | None = None
    try:
        url = _dashboard_url(dash)
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
            )
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            r = Rig(pub, dash, url, browser, page, early)
            page.on("request", lambda req: r.requests.append(req.url))
            page.on("websocket", lambda ws: r.requests.append(ws.url))
            page.on(
                "console",
                lambda m: (
                    r.console.append(f"{m.type}: {m.text}")
                    if m.type in ("error", "warning")
                    else None
                ),
            )
            page.on("pageerror", lambda e: r.console.append(f"pageerror: {e}"))
            page.goto(url)
            yield r
            browser.close()
    finally:
        pub.kill()
        dash = r.dashboard if r is not None else dash
        dash.send_signal(signal.SIGTERM)
        try:
            assert dash.wait(10) == 0, "streamer dashboard did not exit 0 on SIGTERM"
        finally:
            if dash.poll() is None:
                dash.kill()


def text(page: Page, testid: str) -> str:
    return page.inner_text(f'[data-testid="{testid}"]')


def wait_text(page: Page, testid: str, want: str, timeout: float = 5.0) -> None:
    page.wait_for_function(
        '([id, want]) => { const e = document.querySelector(`[data-testid="${id}"]`);'
        " return e !== null && e.textContent === want; }",
        arg=[testid, want],
        timeout=timeout * 1000,
    )


def probs(page: Page, symbol: str) -> list[float]:
    return [
        float(x)
        for x in page.eval_on_selector_all(
            f'[data-testid="probs-{symbol}"] .prob', "els => els.map(e => e.dataset.prob)"
        )
    ]


def test_connected_with_the_state_from_before_the_page_opened(rig: Rig) -> None:
    wait_text(rig.page, "connection", "connected")
    # the word and the regime published before the dashboard started: the join snapshot
    wait_text(rig.page, "last-word", "apple")
    early = rig.early
    wait_text(rig.page, "regime-ETH", early["regime"])
    assert probs(rig.page, "ETH") == pytest.approx(early["probs"], abs=1e-9)


def test_a_published_word_appears_with_its_confidence(rig: Rig) -> None:
    sent = rig.pub.send("word a.wav kiwi 0.87")
    wait_text(rig.page, "last-word", "kiwi")
    assert text(rig.page, "last-confidence") == f"confidence {sent['confidence']:.2f}"
    rig.pub.send("word a.wav - 0.12")
    wait_text(rig.page, "last-word", "not a known word")
    assert text(rig.page, "last-confidence") == "confidence 0.12"


def test_the_regime_shown_is_the_last_published_and_its_probabilities_sum_to_1(
    rig: Rig,
) -> None:
    last = rig.pub.send("ticks BTC 3000")
    wait_text(rig.page, "regime-BTC", last["regime"])
    rig.page.wait_for_function(
        "want => { const els = document.querySelectorAll('[data-testid=\"probs-BTC\"] .prob');"
        " return els.length === want.length &&"
        " [...els].every((e, i) => Number(e.dataset.prob) === want[i]); }",
        arg=last["probs"],
        timeout=5000,
    )
    shown = probs(rig.page, "BTC")
    assert sum(shown) == pytest.approx(1.0, abs=1e-5)
    price = float(text(rig.page, "price-BTC"))
    assert price == pytest.approx(last["price"], rel=1e-4)


def test_the_chart_keeps_growing(rig: Rig) -> None:
    def points() -> int:
        return int(rig.page.get_attribute('[data-testid="chart-BTC"]', "data-points") or 0)

    seen = [points()]
    for _ in range(3):
        rig.pub.send("ticks BTC 500")
        rig.page.wait_for_function(
            "n => Number(document.querySelector('[data-testid=\"chart-BTC\"]').dataset.points) > n",
            arg=seen[-1],
            timeout=5000,
        )
        seen.append(points())
    assert seen == sorted(set(seen)), seen
    # the canvas is really drawn (uPlot made one)
    assert rig.page.locator('[data-testid="chart-BTC"] canvas').count() == 1


def test_the_audio_level_shows_in_the_health_panel(rig: Rig) -> None:
    sent = rig.pub.send("level mic 0.1")  # a sine at -20 dBFS peak, -23 dBFS RMS
    wait_text(rig.page, "mic-level", f"{sent['rms_dbfs']:.1f} dBFS")
    assert -23.5 < sent["rms_dbfs"] < -22.5
    title = rig.page.get_attribute('[data-testid="mic-level"]', "title") or ""
    assert f"peak {sent['peak_dbfs']:.1f} dBFS" in title


def test_a_killed_publisher_shows_stale_and_a_restarted_one_connected(rig: Rig) -> None:
    wait_text(rig.page, "connection", "connected")
    rig.pub.kill()
    t0 = time.monotonic()
    wait_text(rig.page, "connection", "stale", timeout=5.0)
    took = time.monotonic() - t0
    assert took < 5.0
    rig.pub.start()
    wait_text(rig.page, "connection", "connected", timeout=10.0)
    rig.pub.send("word b.wav cherry 0.66")
    wait_text(rig.page, "last-word", "cherry")


def test_nothing_left_the_machine_no_console_errors_and_a_screenshot(
    rig: Rig, tmp_path_factory: pytest.TempPathFactory
) -> None:
    port = re.search(r":(\d+)/", rig.url).group(1)  # type: ignore[union-attr]
    own = (f"http://127.0.0.1:{port}/", f"ws://127.0.0.1:{port}/")
    assert rig.requests, "no request seen at all"
    outside = [u for u in rig.requests if not u.startswith(own)]
    assert outside == []
    assert any(u.endswith("/static/vendor/uplot/uPlot.iife.min.js") for u in rig.requests)
    assert rig.console == []
    shot = tmp_path_factory.mktemp("shots") / "dashboard.png"
    rig.page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


def test_the_page_reconnects_by_itself_and_redraws_from_the_snapshot(rig: Rig) -> None:
    # last: while the dashboard is down the browser logs its failed WebSocket attempts
    before = rig.page.evaluate("dashboard.snapshots")
    port = re.search(r":(\d+)/", rig.url).group(1)  # type: ignore[union-attr]
    rig.dashboard.send_signal(signal.SIGTERM)
    assert rig.dashboard.wait(10) == 0
    wait_text(rig.page, "connection", "stale", timeout=5.0)
    rig.dashboard = start_dashboard(rig.pub.endpoint, f"127.0.0.1:{port}")
    wait_text(rig.page, "connection", "connected", timeout=15.0)
    assert rig.page.evaluate("dashboard.snapshots") == before + 1
    wait_text(rig.page, "last-word", "cherry")  # the state again, from the new snapshot
    assert text(rig.page, "regime-BTC") != ""
