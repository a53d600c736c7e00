"""SIGTERM (pod preemption or deletion): a checkpoint at the end of the current step, then exit
75 (retryable), unless the step does not end in time.

Kubernetes sends SIGKILL terminationGracePeriodSeconds after SIGTERM (30 s unless the Job says
otherwise): a step still running SIGTERM_GRACE_S after SIGTERM is abandoned, so we exit 75
ourselves (retried, resumes from the last checkpoint) instead of being killed mid-write.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, NoReturn

from transformers import TrainerCallback

from voxtune.errors import ExitCode

SIGTERM_GRACE_S = 20


def notice(line: str) -> None:
    """One line to stderr, safe inside a signal handler (Python's buffered print is not)."""
    os.write(sys.stderr.fileno(), f"{line}\n".encode())


def exit_retryable(reason: str) -> NoReturn:
    """Exit 75 now, from any thread; the run resumes from its last saved checkpoint."""
    sys.stdout.flush()
    notice(f"error (temporary): {reason}; run the same command again (it resumes from the last "
           "saved checkpoint)")
    os._exit(ExitCode.RETRYABLE)


class StopOnSigterm(TrainerCallback):
    """Kubernetes sends SIGTERM before evicting a pod: save at the step's end, exit retryable.

    The flag is read only at step ends, where all ranks agree on it, so a step that does not
    end within SIGTERM_GRACE_S (or a second SIGTERM) stops the process at once instead,
    without a new checkpoint.
    """

    def __init__(self) -> None:
        self.received = False  # this process got SIGTERM
        self.stopping = False  # some rank got it: all stop after this step, with a checkpoint
        self.steps_done = 0
        self.grace = threading.Timer(SIGTERM_GRACE_S, self._stop_now,
                                     (f"SIGTERM {SIGTERM_GRACE_S} s ago",))
        self.grace.daemon = True
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received:  # exit from a thread: stdout may be mid-write in this one
            threading.Thread(target=self._stop_now, args=("second SIGTERM",),
                             daemon=True).start()
            return
        self.received = True
        notice(f"SIGTERM: saving a checkpoint when step {self.steps_done + 1} ends; if it "
               f"has not ended in {SIGTERM_GRACE_S} s (or at a second SIGTERM), stopping "
               "without one")
        self.grace.start()

    def _stop_now(self, reason: str) -> None:
        exit_retryable(f"{reason}: step {self.steps_done + 1} was interrupted without a new "
                       "checkpoint")

    def on_step_begin(self, args, state, control, **kwargs):
        self.steps_done = state.global_step
        return control

    def on_step_end(self, args, state, control, **kwargs):
        if anyone_received(self.received, args.device):
            self.stopping = True  # on every rank, also those the signal has not reached yet
            self.grace.cancel()  # the boundary is here: saving may take as long as it needs
            control.should_save = True
            control.should_training_stop = True
        return control


def anyone_received(received: bool, device: Any) -> bool:
    """Whether any rank has had SIGTERM, agreed by all ranks at the same step end.

    The kubelet signals each pod once, and torchrun passes it on to its ranks one by one, so
    ranks can see it at different step ends. Deciding alone, one rank would start saving (a
    collective under FSDP) while another starts the next step's all-reduce: both would wait
    on each other until the grace period runs out and nothing is saved. One small all-reduce
    per step (a flag) makes them stop together.
    """
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return received
    flag = torch.tensor([int(received)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())
