"""`voxtune serve MODEL_REF`: a fine-tuned model behind a tiny JSON HTTP API, base vs tuned
(the serving code is voxtune.models.serve)."""

from __future__ import annotations

import argparse
from http.server import ThreadingHTTPServer
from pathlib import Path

from voxtune.errors import ExitCode, UserError
from voxtune.publish.registry import Registry
from voxtune.run.layout import FINAL, registry_dir
from voxtune.spec import Settings


def add_parsers(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve", help="Serve a fine-tuned model over HTTP (base vs tuned transcripts); what "
        "the UI's Try-it and the in-cluster demo call.",
        epilog="example: voxtune serve my-voice@2 --port 7861")
    parser.add_argument("model", help="Local registry NAME[@VERSION], a model or run folder, "
                        "or a Hub id.")
    parser.add_argument("--host", default="127.0.0.1", help="Interface; 0.0.0.0 in a pod.")
    parser.add_argument("--port", type=int, default=7861)
    parser.add_argument("--base", choices=("auto", "load", "skip"), default="auto",
                        help="Base transcripts for merged or fully tuned weights: auto loads "
                        "the base beside them only when free memory holds it, load always, "
                        "skip never (an adapter's always come from disabling it).")
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
    from voxtune.models.serve import load_pair, make_handler

    pair = load_pair(resolve_model(args.model, Settings().home), args.base)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(pair))
    print(f"serving {pair.tuned.description} (base {pair.base_name or 'unknown'}: "
          f"{pair.base_note}) on http://{args.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return ExitCode.OK
