"""voxtune: fine-tune Mistral's Voxtral speech recognition on your own speech."""

__version__ = "0.1.0"
