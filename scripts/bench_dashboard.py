"""Benchmark: the web dashboard under a fast tick stream, three real browsers and a frozen tab.

    .venv/bin/python scripts/bench_dashboard.py [--rate 50000] [--seconds 20] [--freeze 60]
        [--prices summary|regime]

A real `streamer serve --tick-feed IN --pub OUT` takes ticks from a producer process at
`--rate` ticks/s (spread over `--symbols` symbols, tick time = send time); a real
`streamer dashboard --connect OUT` subscribes; Debian's Chromium (Playwright) opens the page
in three tabs. Side by side with the targets of issue 13:

1. **steady**: `--seconds` at the full rate, three tabs reading: frames/s each tab
   received (target <= 12), the dashboard process's CPU (target <= 25% of a core), how far
   behind the last publish the price each tab shows is (tab receipt time minus the publish
   time of the price in the frame, p50/p95; target <= 250 ms), what the service published.
2. **frozen tab**: the same, while a fourth client (a WebSocket that stops reading, as a
   frozen tab does) stalls for `--freeze` seconds: the three tabs' and the service's figures
   beside phase 1's, the dashboard's resident memory over the phase (bounded), and whether
   the frozen client was dropped.

The dashboard takes its prices from the service's `summary.SYMBOL` messages (ten a
second per symbol); `--prices regime` makes it decode every `regime` message instead,
as it did before summaries existed: the baseline the summary path is measured against.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import zmq

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _producer(feed: str, rate: float, symbols: int, warmup: int, go: Any, stop: Any) -> None:
    """Ticks at `rate` per second over `symbols` symbols; warm-up ticks first, flat out."""
    import random

    ctx = zmq.Context()
    p = ctx.socket(zmq.XPUB)
    p.setsockopt(zmq.XPUB_NODROP, 1)
    p.sndhwm = 100_000
    p.linger = 0
    p.connect(feed)
    p.poll(30_000, zmq.POLLIN) or sys.exit("the service's feed never subscribed")
    p.recv()
    send = zmq.backend.Socket.send.__get__(p)
    names = [json.dumps(f"S{k}") for k in range(symbols)]
    price = [100.0] * symbols
    rng = random.Random(1)
    t = time.time() - warmup * 1e-3
    for i in range(warmup * symbols):  # the trackers fit on these before decoding
        k = i % symbols
        price[k] *= 1 + rng.gauss(0, 0.002 if (i // 2000) % 2 else 0.0005)
        t += 1e-3 / symbols
        send(b"tick", zmq.SNDMORE)
        send(f'{{"symbol":{names[k]},"t":{t!r},"price":{price[k]!r}}}'.encode())
    go.wait()
    start = time.perf_counter()
    i = 0
    last_t = time.time()
    while not stop.is_set():
        due = int((time.perf_counter() - start) * rate) + 1
        while i < due:
            k = i % symbols
            price[k] *= 1 + rng.gauss(0, 0.002 if (i // 200_000) % 2 else 0.0005)
            now = time.time()
            last_t = now if now > last_t else last_t + 1e-7
            send(b"tick", zmq.SNDMORE)
            send(f'{{"symbol":{names[k]},"t":{last_t!r},"price":{price[k]!r}}}'.encode())
            i += 1
        time.sleep(0.0005)
    ctx.destroy(linger=0)


def _stalled(url: str) -> socket.socket:
    host, port = re.match(r"http://([\d.]+):(\d+)/", url).groups()  # type: ignore[union-attr]
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((host, int(port)))
    s.sendall(
        f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    return s


def stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "stats", timeout=10) as r:
        return dict(json.loads(r.read()))


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q / 100 * len(xs)))]


def measure(pages: list[Any], dash_pid: int, svc_pid: int, url: str, seconds: float,
            sample: Any = None) -> dict[str, Any]:  # fmt: skip
    for p in pages:
        p.evaluate("() => { dashboard.lags.length = 0; }")
    f0 = [p.evaluate("dashboard.frames") for p in pages]
    c0, s0 = cpu_seconds(dash_pid), cpu_seconds(svc_pid)
    st0 = stats(url)
    r0, k0 = st0["received"], st0["ticks"]
    t0 = time.monotonic()
    rss = [rss_mb(dash_pid)]
    while time.monotonic() - t0 < seconds:
        time.sleep(min(1.0, seconds - (time.monotonic() - t0)))
        rss.append(rss_mb(dash_pid))
        if sample is not None:
            sample()
    took = time.monotonic() - t0
    st = stats(url)
    lags = [1000 * x for p in pages for x in p.evaluate("dashboard.lags")]
    return {
        "seconds": round(took, 1),
        "frames_per_s": [
            round((p.evaluate("dashboard.frames") - f) / took, 1)
            for p, f in zip(pages, f0, strict=True)
        ],
        "dashboard_cpu": round(100 * (cpu_seconds(dash_pid) - c0) / took, 1),
        "service_cpu": round(100 * (cpu_seconds(svc_pid) - s0) / took, 1),
        "messages_per_s": round((st["received"] - r0) / took),
        "decodes_per_s": round((st["ticks"] - k0) / took),
        "lag_ms_p50": round(pct(lags, 50), 1),
        "lag_ms_p95": round(pct(lags, 95), 1),
        "rss_mb": [round(min(rss), 1), round(max(rss), 1)],
        "stats": st["dashboard"],
        "missed": st["subscriber"]["missed"],
        "connected": [p.inner_text('[data-testid="connection"]') for p in pages],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=50_000, help="ticks/s into the service")
    ap.add_argument("--symbols", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20.0, help="steady phase length")
    ap.add_argument("--freeze", type=float, default=60.0, help="frozen-tab phase length")
    ap.add_argument("--stall-timeout", type=float, default=10.0)
    ap.add_argument("--warmup", type=int, default=500, help="ticks per symbol before decoding")
    ap.add_argument("--prices", choices=("summary", "regime"), default="summary",
                    help="what the dashboard subscribes to for prices")  # fmt: skip
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright

    feed, pub = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    svc = subprocess.Popen(
        [sys.executable, "-m", "streamer", "serve", "--tick-feed", feed, "--pub", pub,
         "--warmup", str(a.warmup), "--refit-every", "0", "--heartbeat", "0.5"],
        env=env, cwd=ROOT, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    dash = subprocess.Popen(
        [sys.executable, "-m", "streamer", "dashboard", "--connect", pub,
         "--http", f"127.0.0.1:{free_port()}", "--stall-timeout", str(a.stall_timeout),
         "--prices", a.prices],
        env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    spawn = mp.get_context("spawn")
    go, stop = spawn.Event(), spawn.Event()
    prod = spawn.Process(
        target=_producer, args=(feed, a.rate, a.symbols, a.warmup, go, stop), daemon=True
    )
    out: dict[str, Any] = {
        "rate": a.rate, "symbols": a.symbols, "prices": a.prices, "load": os.getloadavg()
    }  # fmt: skip
    try:
        assert dash.stderr is not None
        m = None
        while m is None:
            line = dash.stderr.readline()
            if not line:
                sys.exit("streamer dashboard did not start")
            m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        url = m.group(1)
        prod.start()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
            )
            pages = [browser.new_context().new_page() for _ in range(3)]
            for p in pages:
                p.goto(url)
            go.set()
            for p in pages:
                p.wait_for_function(
                    "() => document.querySelectorAll('[data-testid^=\"regime-\"]').length"
                    f" >= {a.symbols}", timeout=120_000,
                )  # fmt: skip
            time.sleep(3)  # past the warm-up's burst
            out["steady"] = measure(pages, dash.pid, svc.pid, url, a.seconds)
            frozen = _stalled(url)
            out["frozen"] = measure(pages, dash.pid, svc.pid, url, a.freeze)
            frozen.close()
            browser.close()
    finally:
        stop.set()
        prod.join(5)
        for proc in (dash, svc):
            proc.send_signal(signal.SIGTERM)
        for proc in (dash, svc):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    out["load_after"] = os.getloadavg()
    s, f = out["steady"], out["frozen"]
    load = f"load {out['load'][0]:.1f} before, {out['load_after'][0]:.1f} after"
    print(
        f"dashboard benchmark: {a.rate:,.0f} ticks/s over {a.symbols} symbols, "
        f"prices from {a.prices} messages; {load}"
    )
    print(f"{'':34}{'target':>12}{'steady':>18}{'frozen tab':>18}")
    rows = [
        ("regime decodes/s shown", "50,000", f"{s['decodes_per_s']:,}",
         f"{f['decodes_per_s']:,}"),
        ("messages/s into the dashboard", "", f"{s['messages_per_s']:,}",
         f"{f['messages_per_s']:,}"),
        ("frames/s per tab (3 tabs)", "<= 12", "/".join(map(str, s["frames_per_s"])),
         "/".join(map(str, f["frames_per_s"]))),
        ("dashboard CPU, % of a core", "<= 25", s["dashboard_cpu"], f["dashboard_cpu"]),
        ("price shown behind, ms p50", "", s["lag_ms_p50"], f["lag_ms_p50"]),
        ("price shown behind, ms p95", "<= 250", s["lag_ms_p95"], f["lag_ms_p95"]),
        ("service CPU, % of a core", "", s["service_cpu"], f["service_cpu"]),
        ("dashboard RSS MB (min-max)", "bounded", "-".join(map(str, s["rss_mb"])),
         "-".join(map(str, f["rss_mb"]))),
        ("messages lost (seq gaps)", "", s["missed"], f["missed"]),
        ("slow browsers dropped (total)", "", s["stats"]["dropped"], f["stats"]["dropped"]),
        ("tabs' connection", "connected", "/".join(s["connected"]), "/".join(f["connected"])),
    ]  # fmt: skip
    for name, target, x, y in rows:
        print(f"{name:34}{target:>12}{x!s:>18}{y!s:>18}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
