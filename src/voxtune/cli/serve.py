"""`voxtune serve MODEL_REF`: a fine-tuned model behind a tiny JSON HTTP API, base vs tuned
(the serving code is voxtune.models.serve)."""

from __future__ import annotations

import argparse
from http.server import ThreadingHTTPServer

from voxtune.errors import ExitCode
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
    parser.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from voxtune.models.serve import load_pair, make_handler, resolve_model

    pair = load_pair(resolve_model(args.model, Settings().home))
    server = ThreadingHTTPServer((args.host, args.port), make_handler(pair))
    print(f"serving {pair.tuned.description} (base: {pair.base_name}) on "
          f"http://{args.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return ExitCode.OK
