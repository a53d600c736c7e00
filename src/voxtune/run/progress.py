"""How a step says how far it is: one `progress` line per report, for every long phase.

    progress load 0/1 elapsed=0.0s
    progress base-eval 20/20 elapsed=6.1s
    progress train 120/300 elapsed=45.0s remaining=67.5s
    progress publish 1/1 elapsed=3.2s

The step prints them (`report`, `phase`); both backends read the newest one from the step's
output — the local executor line by line as the step writes them, the controller from the pod's
log tail — and put it into RunStatus.current (`parse`). The writer computes `remaining`, because
only it knows when the phase started in this attempt and where it resumed from: the readers need
no clock of their own, and a resumed run's estimate counts only the work done since it resumed.
Lines are the one channel because a pod's log is the one thing the controller reads while a step
runs (the run folder is on a volume it does not mount).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pydantic import BaseModel, Field

# phase → what a person reads; the train step reports the first four, publish the last
PHASES = {"prepare": "preparing the data", "load": "loading the model",
          "base-eval": "evaluating the base model", "train": "training",
          "tuned-eval": "evaluating the tuned model", "publish": "publishing"}
LINE = re.compile(r"^progress(?: (?P<phase>[a-z-]+))? (?P<done>\d+)/(?P<total>\d+)"
                  r"(?: elapsed=(?P<elapsed>[\d.]+)s)?(?: remaining=(?P<remaining>[\d.]+)s)?\s*$",
                  re.MULTILINE)


class PhaseProgress(BaseModel):
    """Where the running step is: its phase, units done of total, and time spent and left."""

    phase: str = Field(description="load, base-eval, train, tuned-eval, publish, or the step.")
    done: int = Field(description="Units of work done (optimizer steps, clips, files).")
    total: int = Field(description="Units of work in the phase.")
    elapsed_s: float | None = Field(None, description="Seconds since the phase started.")
    remaining_s: float | None = Field(None, description="Estimated seconds left in the phase "
                                      "(none until there is a pace to go by).")

    @property
    def label(self) -> str:
        return PHASES.get(self.phase, self.phase)

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0


def parse(output: str, step: str) -> PhaseProgress | None:
    """The newest progress line in `output` (a line without a phase is the step's own)."""
    found = list(LINE.finditer(output))
    if not found:
        return None
    line = found[-1]
    elapsed, remaining = line["elapsed"], line["remaining"]
    return PhaseProgress(phase=line["phase"] or step, done=int(line["done"]),
                         total=int(line["total"]),
                         elapsed_s=float(elapsed) if elapsed else None,
                         remaining_s=float(remaining) if remaining else None)


# --- the writer: what a step process calls ---------------------------------------------------

_starts: dict[str, tuple[float, int]] = {}  # phase → (when, units done) at its first report


def report(phase: str, done: int, total: int) -> None:
    """Print `phase`'s progress line; its first report in this process starts its clock."""
    now = time.monotonic()
    started, first = _starts.setdefault(phase, (now, done))
    elapsed = now - started
    line = f"progress {phase} {done}/{total} elapsed={elapsed:.1f}s"
    if done > first and total > done:  # a pace from the work done in this attempt
        line += f" remaining={elapsed * (total - done) / (done - first):.1f}s"
    print(line, flush=True)


@contextmanager
def phase(name: str, total: int = 1, scale: int = 1) -> Iterator[Callable[[int], None]]:
    """Report `name` as started (0 of `total`), again each time the block calls the yielded
    `advance(n)` with n more units done, and as done when the block ends. `scale`: processes
    doing equal shares at the same pace, each reporting its own (one's n stands for n × scale).
    """
    done = 0
    report(name, 0, total)

    def advance(units: int) -> None:
        nonlocal done
        done = min(total, done + units * scale)
        if done < total:  # the end is the block's to report
            report(name, done, total)

    yield advance
    report(name, total, total)


def format_duration(seconds: float) -> str:
    """"45 s", "3 min 20 s", "2 h 5 min": how long, the way people say it."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def describe(progress: PhaseProgress) -> str:
    """"training 120/300 (40%), 45 s elapsed, about 1 min 8 s left"."""
    text = f"{progress.label} {progress.done}/{progress.total} ({progress.fraction:.0%})"
    if progress.elapsed_s is not None:
        text += f", {format_duration(progress.elapsed_s)} elapsed"
    if progress.remaining_s is not None:
        text += f", about {format_duration(progress.remaining_s)} left"
    return text


def worth_showing(current: PhaseProgress | None, last: PhaseProgress | None) -> bool:
    """A new phase, its end, or another tenth of it: what a terminal prints of ~100 reports."""
    if current is None:
        return False
    if last is None or last.phase != current.phase or current.done == current.total:
        return current != last
    return int(10 * current.fraction) > int(10 * last.fraction)
