"""Child processes that never outlive the process that started them."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(signum: int = signal.SIGTERM, parent: int | None = None) -> None:
    """Ask the kernel to send `signum` to this process when its parent dies (Linux), so a
    killed runner or step (even `kill -9`, which gives it no chance to stop its children) takes
    its children with it. Call it in the child: as a Popen `preexec_fn` or a process-pool
    initializer. With `parent` (the pid that started it), a child whose parent already died
    before the request took effect exits at once. Elsewhere than Linux it does nothing: the
    platforms we run on (pods, CI, the demo) are Linux."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
    if parent is not None and os.getppid() != parent:
        os._exit(1)
