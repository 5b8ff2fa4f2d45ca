"""`streamer replay AUDIO --pub ENDPOINT`: the CLI publishes words to a real subscriber."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from streamer.audio.synth import HELDOUT_VOICES, synthesize
from streamer.audio.wav import write_wav
from streamer.net import protocol as P
from streamer.net.subscriber import Subscriber

ROOT = Path(__file__).resolve().parents[2]
WORDS = ["banana", "kiwi", "orange"]


async def test_replay_cli_publishes_words(
    zctx: zmq.Context[Any], ipc: Callable[[str], str], tmp_path: Path, validators: dict[str, Any]
) -> None:
    gap = np.zeros(int(0.8 * 8000), dtype=np.float32)
    parts = [gap]
    for w, v in zip(WORDS, HELDOUT_VOICES, strict=False):
        parts += [synthesize(w, v), gap]
    wav = tmp_path / "words.wav"
    write_wav(wav, np.concatenate(parts))
    pub = ipc("pub")
    got: list[P.Message] = []
    async with Subscriber(pub, ["speech", "status"], context=zctx) as sub:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "streamer", "replay", str(wav), "--speed", "0",
            "--pub", pub, "--wait-subscribers", "1", "--wait-timeout", "20",
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip

        async def collect() -> None:
            async for m in sub:
                got.append(m)
                if m.kind == "status" and m.body["state"] == "stopped":
                    return

        await asyncio.wait_for(collect(), 30)
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert out == b""  # published, not printed
    speech = [m for m in got if m.kind == "speech"]
    assert [m.body["nbest"][0]["label"] for m in speech] == WORDS
    assert sum(m.body["label"] == w for m, w in zip(speech, WORDS, strict=True)) >= 2
    assert [m.seq for m in speech] == [0, 1, 2]
    for m in speech:
        validators["speech"].validate(m.body)
