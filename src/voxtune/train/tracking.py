"""What a run reports while it trains: its progress (voxtune.run.progress lines, which both
backends read), the optimizer that really runs, and metrics in trackio (stored in the run
folder, offline)."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from voxtune.run.progress import report
from voxtune.spec import RunSpec
from voxtune.train.resources import optimizer_description

# the lines of trackio.init's output that send users to trackio's own dashboard command
TRACKIO_HINTS = ("View dashboard by running", "trackio show", "trackio.show(")


class Progress(TrainerCallback):
    """The train phase's progress, about 100 reports per run: status and the time left."""

    def __init__(self, optimizer: str) -> None:
        self.optimizer = optimizer  # the spec's name; the class is read from the Trainer's

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        if state.is_world_process_zero:
            clips = (args.per_device_train_batch_size * args.gradient_accumulation_steps
                     * args.world_size)
            print(f"training: max_steps {state.max_steps}, {clips} clips per step", flush=True)
            print(f"optimizer: {self.optimizer} ({optimizer_description(optimizer)})",
                  flush=True)
            report("train", state.global_step, state.max_steps)  # a resumed run's start

    def on_step_end(self, args, state, control, **kwargs):
        every = max(1, state.max_steps // 100)
        if state.is_world_process_zero and (state.global_step % every == 0
                                            or state.global_step == state.max_steps):
            report("train", state.global_step, state.max_steps)


class Trackio(TrainerCallback):
    """Logs loss, learning rate and grad norm per logging step to the run's trackio run."""

    def __init__(self, tracking: Any) -> None:
        self.tracking = tracking

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            numbers = {k: v for k, v in logs.items() if isinstance(v, (int, float))}
            self.tracking.log(numbers, step=state.global_step)


def start_tracking(spec: RunSpec, store: Path) -> Any:
    """A trackio run stored in `store`, the run folder's trackio/ (offline; survives pod
    deletion)."""
    if not spec.tracking.enabled:
        return None
    os.environ["TRACKIO_DIR"] = str(store)  # read once, at import
    import trackio

    # Workaround: trackio (0.43) sends the token to the Hub's whoami in every init, only to label
    # the run with a user name, even when it stores everything locally. With no Space nothing
    # needs the Hub, so nothing goes (the label stays empty). Drop once trackio asks only for
    # Spaces.
    local = spec.tracking.space_id is None
    with hub_offline() if local else contextlib.nullcontext(), \
            contextlib.redirect_stdout(io.StringIO()) as said:
        trackio.init(project=spec.tracking.project, name=spec.name,
                     space_id=spec.tracking.space_id, config=spec.model_dump(mode="json"),
                     resume="allow", embed=False, auto_log_gpu=False)
    # trackio's hint (`trackio show`) knows neither the run folder nor a port beside the UI's
    print("\n".join(line for line in said.getvalue().splitlines()
                    if not any(hint in line for hint in TRACKIO_HINTS)))
    print(f"* Training curves: voxtune dashboard {store.parent}", flush=True)
    return trackio


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """huggingface_hub refuses every request in here (offline mode, which it reads at import)."""
    from huggingface_hub import constants

    was = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = was
