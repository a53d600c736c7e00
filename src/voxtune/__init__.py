"""voxtune: fine-tune Mistral's Voxtral speech recognition on your own speech."""

from typing import Any

__version__ = "0.1.0"
__all__ = ["Client"]


def __getattr__(name: str) -> Any:
    # `from voxtune import Client` without importing the client (and kubernetes) on every CLI call
    if name == "Client":
        from voxtune.client import Client

        return Client
    raise AttributeError(f"module 'voxtune' has no attribute {name!r}")
