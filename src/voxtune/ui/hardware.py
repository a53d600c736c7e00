"""The hardware local runs get, as the plan's GPU profiles (for the Train page)."""

from __future__ import annotations

import contextlib
import subprocess

from voxtune.plan import GpuProfile


def detect_gpus() -> list[GpuProfile]:
    """This machine's NVIDIA GPUs as plan profiles, from nvidia-smi (the UI never loads torch);
    none when it is missing or fails."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total",
                               "--format=csv,noheader,nounits"], capture_output=True, text=True,
                              timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in done.stdout.splitlines():
        name, _, mib = line.rpartition(",")
        with contextlib.suppress(ValueError):  # a line nvidia-smi could not fill ("[N/A]")
            gpus.append(GpuProfile(name=name.strip() or "GPU",
                                   memory_gib=round(float(mib) / 1024, 1)))
    return gpus
