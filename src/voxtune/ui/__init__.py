"""The web UI (`voxtune ui`): gradio layout in app.py, plain handlers in handlers.py.

Layering: nothing here imports torch or transformers; runs go through voxtune.Client and
transcription through the `voxtune serve` HTTP API.
"""
