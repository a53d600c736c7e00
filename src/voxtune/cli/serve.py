"""`voxtune serve MODEL_REF`: a fine-tuned model behind OpenAI's transcription API, base vs tuned
(the serving code is voxtune.models.serve)."""

from __future__ import annotations

import argparse
from pathlib import Path

from voxtune.errors import ExitCode, UserError
from voxtune.publish.registry import Registry
from voxtune.run.layout import FINAL, registry_dir
from voxtune.spec import Settings


def add_parsers(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve", help="Serve a fine-tuned model over OpenAI's transcription API "
        "(/v1/audio/transcriptions), with its base beside it; what the UI's Try-it and the "
        "in-cluster demo call.",
        epilog="example: voxtune serve my-voice@2 --port 7861")
    parser.add_argument("model", help="Local registry NAME[@VERSION], a model or run folder, "
                        "or a Hub id.")
    parser.add_argument("--host", default="127.0.0.1", help="Interface; 0.0.0.0 in a pod.")
    parser.add_argument("--port", type=int, default=7861, help="0 picks a free port.")
    parser.add_argument("--served-model-name", default="",
                        help="The name clients pass as `model` (default: MODEL as given); "
                        "the same flag as vLLM's, so clients need not care which engine runs.")
    parser.add_argument("--base", choices=("auto", "load", "skip"), default="auto",
                        help="Base transcripts for merged or fully tuned weights: auto loads "
                        "the base beside them only when free memory holds it, load always, "
                        "skip never (an adapter's always come from disabling it).")
    parser.add_argument("--max-batch", type=int, default=8,
                        help="Clips per generate call; raise it on a GPU with many clients, "
                        "1 turns batching off.")
    parser.add_argument("--batch-wait-ms", type=float, default=10,
                        help="How long the first request of a batch waits for others.")
    parser.add_argument("--max-queue", type=int, default=64,
                        help="Requests that may wait; beyond it clients get 503 and retry.")
    parser.add_argument("--request-timeout", type=float, default=120,
                        help="Seconds a request may take, waiting included (then 504).")
    parser.add_argument("--max-upload-mb", type=float, default=20,
                        help="Largest upload in MiB (then 413).")
    parser.set_defaults(handler=_serve)


def resolve_model(reference: str, home: Path) -> str:
    """A folder holding the model, or the Hub id as given."""
    path = Path(reference).expanduser()
    if path.is_dir():
        return str((path / FINAL if (path / FINAL).is_dir() else path).resolve())
    registry = Registry(registry_dir(home))
    name = reference.replace("/", "@", 1).partition("@")[0]
    if registry.versions(name) and "/" not in reference:
        return str(registry.find(reference).path)
    if path.exists() or reference.startswith((".", "/", "~")) or reference.count("/") != 1:
        raise UserError(f"{reference}: not a registry model, a model folder or a Hub id "
                        "(see `voxtune models list`)")
    return reference


def _serve(args: argparse.Namespace) -> int:
    from voxtune.models.serve import Limits, serve

    for flag, least in (("max_batch", 1), ("max_queue", 1), ("request_timeout", 0.001),
                        ("max_upload_mb", 0.001), ("batch_wait_ms", 0)):
        if getattr(args, flag) < least:
            raise UserError(f"--{flag.replace('_', '-')} must be at least {least:g}")
    limits = Limits(max_upload_bytes=int(args.max_upload_mb * 2**20),
                    request_timeout_s=args.request_timeout, max_batch=args.max_batch,
                    max_wait_s=args.batch_wait_ms / 1000, max_queue=args.max_queue)
    serve(resolve_model(args.model, Settings().home), name=args.served_model_name or args.model,
          host=args.host, port=args.port, base=args.base, limits=limits)
    return ExitCode.OK
