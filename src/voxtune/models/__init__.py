"""Voxtral models: loading, transcription, merging and serving, shared by training,
publishing and the demos.

`presets` the tiny-random smoke-test model · `load` the one loader (base or fine-tuned) ·
`inference` open a checkpoint and transcribe (the generated Space carries a copy) ·
`merge` fold a LoRA adapter into its base · `serve` the HTTP server behind `voxtune serve`.
"""
