"""A publisher the dashboard tests drive line by line on stdin (run as a subprocess, so that
killing it is a real publisher dying): the real `Publisher` sending real word events and
regime decodes, each command answered with one JSON line on stdout saying what went out.

Commands: ``ticks SYMBOL N`` (N decodes of a random walk, regimes changing as it goes),
``word STREAM LABEL CONFIDENCE`` (``-`` for no label), ``level STREAM AMPLITUDE`` (the
heartbeats report the level a meter reads from a sine of that amplitude), ``quit``.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time

import numpy as np

from streamer.audio.level import LevelMeter
from streamer.messages import Recognition, RegimeDecode, WordEvent
from streamer.net import protocol as P
from streamer.net.publisher import Publisher

NAMES = ("calm", "normal", "turbulent")


async def main(endpoint: str) -> None:
    rng = random.Random(7)
    price: dict[str, float] = {}
    t: dict[str, float] = {}
    state: dict[str, int] = {}
    utterance: dict[str, int] = {}
    levels: dict[str, P.Level] = {}
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with Publisher(endpoint, heartbeat=0.2, metrics_interval=1.0) as pub:
        pub.status("running")
        pub.levels = lambda: dict(levels)
        print(json.dumps({"ready": pub.endpoint, "session": pub.session}), flush=True)
        while line := (await reader.readline()).decode():
            cmd, *args = line.split()
            out: dict[str, object] = {}
            if cmd == "ticks":
                sym, n = args[0], int(args[1])
                for _ in range(n):
                    p = price[sym] = price.get(sym, 100.0) * (1 + rng.gauss(0, 0.001))
                    tt = t[sym] = t.get(sym, time.time() - 1000.0) + 0.01
                    if rng.random() < 0.02:
                        state[sym] = rng.randrange(len(NAMES))
                    k = state.setdefault(sym, 0)
                    raw = [rng.random() + (3.0 if i == k else 0.0) for i in range(len(NAMES))]
                    probs = tuple(round(x / sum(raw), 6) for x in raw)
                    pub.publish(RegimeDecode(sym, tt, p, k, NAMES[k], probs, False))
                    out = {"symbol": sym, "price": p, "state": k, "regime": NAMES[k]}
                    out["probs"] = probs
                    if _ % 500 == 499:
                        await asyncio.sleep(0)
            elif cmd == "word":
                stream, label, conf = args[0], None if args[1] == "-" else args[1], float(args[2])
                i = utterance[stream] = utterance.get(stream, -1) + 1
                rec = Recognition(label, conf, (("apple", -10.0), ("kiwi", -12.5)), "apple")
                pub.publish(WordEvent(stream, i, 0.5 * i, 0.5 * i + 0.4, rec))
                out = {"stream": stream, "label": label, "confidence": conf}
            elif cmd == "level":
                stream, amp = args[0], float(args[1])
                meter = LevelMeter()
                meter.add((amp * 32767 * np.sin(np.arange(8000) * 0.3)).astype(np.int16))
                rms, peak = meter.take() or (0.0, 0.0)
                levels[stream] = P.Level(rms, peak)
                out = {"stream": stream, "rms_dbfs": rms, "peak_dbfs": peak}
            elif cmd == "quit":
                break
            print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
