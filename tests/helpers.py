"""Test helpers: real audio files written with soundfile."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile

requires_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                     reason="espeak-ng not installed (make test installs it)")


def speechlike(seconds: float = 1.0, rate: int = 16_000, seed: int = 0) -> np.ndarray:
    """A voiced-sounding test signal: a 150 Hz tone with harmonics plus a little noise."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    signal = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6))
    return (0.3 * signal / 2.3 + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def write_audio(path: Path, samples: np.ndarray, rate: int = 16_000,
                subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, samples, rate, subtype=subtype)
    return path


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie has stopped: only its exit status is left)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@contextmanager
def serving(model: Path, *flags: str) -> Iterator[str]:
    """The URL of `voxtune serve MODEL FLAGS` on a free port, stopped afterwards (the targeted
    recording tests transcribe their calibration clips with it)."""
    process = subprocess.Popen([sys.executable, "-m", "voxtune", "serve", str(model), "--port",
                                "0", *flags], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    said = []
    try:
        for line in process.stdout:  # the port opens only once the model is loaded
            said.append(line)
            if found := re.search(r"on (http://127\.0\.0\.1:\d+)", line):
                yield found[1]
                break
        else:
            pytest.fail(f"voxtune serve exited with {process.wait()} before listening: "
                        + "".join(said[-5:]))
    finally:
        process.terminate()
        process.wait(timeout=30)
