"""`voxtune serve`: a fine-tuned model behind OpenAI's transcription API, on FastAPI + uvicorn.

    voxtune serve my-voice@2 --port 7861          # local registry NAME[@VERSION]
    voxtune serve runs/me/final                   # a folder (run folder, final/, registry version)
    voxtune serve alice/my-voice                  # a Hub id (a private repo reads HF_TOKEN)
    curl -s localhost:7861/v1/models              # the tuned model and its base
    curl -s localhost:7861/v1/audio/transcriptions -F file=@clip.wav -F model=my-voice@2 \\
         -F language=en                           # {"text": "..."}
    curl -s localhost:7861/metrics                # Prometheus

Any OpenAI client works: `OpenAI(base_url="http://localhost:7861/v1", api_key="unused")
.audio.transcriptions.create(model="my-voice@2", file=open("clip.wav", "rb"))`.

The UI's Try-it calls /compare (base and tuned transcripts of one clip): locally the UI starts
`voxtune serve`, in the cluster it is the demo Deployment (VOXTUNE_UI_DEMO_URL), so the UI
itself never imports torch. It loads with voxtune.models.load and transcribes with
voxtune.models.inference, with the run's generation settings: the same code and settings as the
card's WER and the generated Space. The model is loaded before the port opens: a probe or the
UI sees the port only when transcription works.

Modules: `pair.py` which weights answer (tuned, base), `batcher.py` the bounded queue and
dynamic batches, `api.py` the routes, limits and errors, `metrics.py` Prometheus.
"""

from __future__ import annotations

import socket

from voxtune.models.serve.api import Limits, build_app
from voxtune.models.serve.pair import BaseChoice, Pair, load_pair


def serve(source: str, *, name: str, host: str, port: int, base: BaseChoice = "auto",
          limits: Limits | None = None) -> None:
    """Load the model, open the port, print where, and serve until SIGTERM/SIGINT."""
    serve_pair(load_pair(source, base, name), host=host, port=port, limits=limits or Limits())


def serve_pair(pair: Pair, *, host: str, port: int, limits: Limits) -> None:
    """Serve a loaded pair (bench/serve.py serves a preset this way) until SIGTERM/SIGINT."""
    import uvicorn
    from prometheus_client import disable_created_metrics

    disable_created_metrics()  # a *_created per series only doubles what a scrape reads
    app = build_app(pair, limits)
    # our own socket: the port (also a free one, --port 0) is known and printed before serving
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(128)
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {pair.name} ({pair.tuned.description}; base {pair.base_name or 'unknown'}: "
          f"{pair.base_note}) on http://{shown}:{listener.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=10)
    uvicorn.Server(config).run(sockets=[listener])
