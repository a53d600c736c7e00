"""Fixtures every test gets: an isolated VOXTUNE_HOME, no stray spec overrides, and a check
that no process the tests started is still running when the session ends."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

SESSION_MARK = "VOXTUNE_TEST_SESSION"  # in the environment of every process the tests start
STOP_GRACE_S = 15.0  # a child told to stop (SIGTERM, PDEATHSIG) may take this long to exit

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Workers share the cores: torch's default of one OpenMP thread per core, in every worker
    # and every trainer it starts, oversubscribes them and the spinning threads stall each
    # other (the demo test took 708 s beside another worker instead of 184 s alone). Before
    # torch is imported, so this process and its children all take it.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def marked_processes(mark: str) -> dict[int, str]:
    """pid → command line of every live process whose environment carries `mark` (a child
    inherits it, however far it detaches: new sessions, daemons, re-parented orphans)."""
    needle = f"{SESSION_MARK}={mark}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z":
                continue  # exited; only its parent's wait() is missing
            found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(
                b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError):  # gone meanwhile, or another user's
            continue
    return found


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """Fail the session if a process started by the tests outlives them (then kill it, so
    the failure itself leaves nothing behind). Processes started with an environment that
    does not inherit ours are not seen."""
    mark = uuid.uuid4().hex
    os.environ[SESSION_MARK] = mark
    yield
    deadline = time.monotonic() + STOP_GRACE_S
    while (left := marked_processes(mark)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:
        with contextlib.suppress(OSError):  # ended meanwhile
            os.kill(pid, signal.SIGKILL)
    assert not left, "processes started by the tests still ran after them:\n" + "\n".join(
        f"  {pid}: {command}" for pid, command in left.items())


@pytest.fixture(autouse=True)
def voxtune_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own VOXTUNE_HOME, so nothing touches the user's runs."""
    home = tmp_path_factory.mktemp("voxtune-home")
    monkeypatch.setenv("VOXTUNE_HOME", str(home))
    for name in [n for n in os.environ if n.startswith("VOXTUNE_SPEC__")]:
        monkeypatch.delenv(name)
    return home
