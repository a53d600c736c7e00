"""torchrun that keeps its ranks' exit codes: what runs a train step on more than one GPU.

    python -m voxtune.train.launch --nproc-per-node=4 -m voxtune train --run-dir RUN

The arguments are torchrun's own. torchrun ends with exit code 1 and a traceback whatever its
ranks exited with, so a rank's 2 (the spec's fault: fail once, see `voxtune.errors`), 74 (disk
full) or 75 (SIGTERM, checkpoint saved: retry) would reach the Job's podFailurePolicy as an
unknown failure and be retried as one. Here the launcher exits with the code of the rank that
failed first (the others are stopped by torchrun after it, so theirs say nothing), and the
ranks' own log lines carry the reason. torchrun's own files (its ranks' error records) go to a
temporary folder that is removed when it ends; torchrun would leave a /tmp/torchelastic_* for
every run.
"""

from __future__ import annotations

import signal
import sys
import tempfile

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import parse_args, run


def exit_code(failed: ChildFailedError) -> tuple[int, int]:
    """(global rank, exit code) of the rank that failed first; a rank killed by a signal
    exits 128 + its number, as a shell reports it."""
    rank, failure = failed.get_first_failure()
    code = failure.exitcode
    return rank, code if code >= 0 else 128 - code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with tempfile.TemporaryDirectory(prefix="voxtune-torchrun-") as logs:
        try:
            run(parse_args(["--log-dir", logs, *argv]))  # a --log-dir of the caller's wins
        except ChildFailedError as failed:
            rank, code = exit_code(failed)
            number = code - 128
            name = f" ({signal.Signals(number).name})" if number in signal.valid_signals() \
                else ""
            print(f"rank {rank} exited with code {code}{name}; its log lines above say why",
                  file=sys.stderr, flush=True)
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
