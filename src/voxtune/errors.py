"""Exit codes and the two kinds of expected failure.

The exit code is the contract with the scheduler: a Job's podFailurePolicy fails the run at once
on USER_ERROR (retrying bad input cannot help) and retries on RETRYABLE (preemption, network).
"""

from __future__ import annotations

import os
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1  # a bug: unexpected exception, traceback printed
    USER_ERROR = 2  # bad input, bad config, nothing usable: fix and resubmit
    NO_SPACE = 74  # EX_IOERR: the disk is full; free space (or grow the volume), then rerun
    RETRYABLE = 75  # EX_TEMPFAIL: interrupted or transient; running again resumes


class UserError(Exception):
    """A mistake the user can fix; printed as one clear message, never a traceback."""

    exit_code = ExitCode.USER_ERROR


class RetryableError(Exception):
    """A transient failure; the same command run again continues from where it stopped."""

    exit_code = ExitCode.RETRYABLE


class NoSpaceError(Exception):
    """The disk under `path` is full. Runs resume where they stopped once space is freed."""

    exit_code = ExitCode.NO_SPACE

    def __init__(self, path: str | os.PathLike[str]):
        self.path = str(path)
        super().__init__(f"no space left on {self.path}; free some space (or grow the volume) "
                         "and run the same command again — it resumes")
