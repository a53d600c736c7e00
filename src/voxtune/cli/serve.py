"""`voxtune serve MODEL_REF`: a fine-tuned model behind a tiny JSON HTTP API (the serving code
is voxtune.publish.serve)."""

from __future__ import annotations

import argparse

from voxtune.publish.serve import add_parser as add_parsers

__all__ = ["add_parsers"]
