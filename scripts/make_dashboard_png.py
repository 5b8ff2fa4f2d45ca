"""Make docs/dashboard.png from a real run: `streamer serve --http` on spoken words and prices.

    .venv/bin/python scripts/make_dashboard_png.py [--out docs/dashboard.png] [--words 14]

The words are spoken by eSpeak NG voices (as in `streamer demo`) into a WAV, the prices are
two synthetic regime-switching series; the real service replays both as if live, serves the
dashboard itself (`--http`), and Debian's Chromium (Playwright) takes the picture once the
stream is over.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamer.audio.wav import CANONICAL_RATE, write_wav  # noqa: E402
from streamer.demo import demo_prices, speak_stream  # noqa: E402
from streamer.paths import default_bank_path  # noqa: E402
from streamer.speech.bank import WordBank  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    ap.add_argument("--words", type=int, default=14)
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright

    labels = WordBank.load(default_bank_path()).labels
    with tempfile.TemporaryDirectory(prefix="streamer-png-") as tmp:
        folder = Path(tmp)
        audio, _ = speak_stream(labels, a.words, seed=3)
        wav = folder / "words.wav"
        write_wav(wav, audio, CANONICAL_RATE)
        duration = audio.size / CANONICAL_RATE
        ticks = []
        for seed, name in ((1, "SYN"), (4, "ALT")):
            (folder / name).mkdir()
            made = demo_prices(folder / name, duration, ticks=1500, seed=seed).path
            ticks.append(made.rename(folder / f"{name}.csv"))
        pub = f"tcp://127.0.0.1:{free_port()}"
        http = f"127.0.0.1:{free_port()}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamer", "serve", str(wav), "--stay", "--pub", pub,
             "--http", http, "--warmup", "200", "--refit-every", "300",
             *[x for t in ticks for x in ("--ticks", str(t))]],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            assert proc.stderr is not None
            url = None
            while url is None:
                line = proc.stderr.readline()
                if not line:
                    sys.exit(f"streamer serve exited {proc.wait()}")
                m = re.search(r"dashboard at (http://\S+/)", line)
                url = m.group(1) if m else None
            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path="/usr/bin/chromium",
                    args=["--no-sandbox", "--disable-dev-shm-usage"],
                )
                page = browser.new_page(viewport={"width": 1280, "height": 720})
                page.goto(url)
                page.wait_for_selector('[data-testid="connection"]:has-text("connected")')
                time.sleep(duration + 3)  # the whole stream, and the last words recognised
                a.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(a.out), full_page=True)
                browser.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    print(f"wrote {a.out} ({a.out.stat().st_size:,} bytes) from {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
