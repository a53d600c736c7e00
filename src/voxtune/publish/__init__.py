"""Publish step: local model registry, Hugging Face Hub, model card, demo Space.

`step.main` is the entrypoint (`voxtune publish`); `inference` is the one transcription path the
demo Space, the in-cluster demo and the UI's Try-it share. Never imports kubernetes or gradio.
"""
