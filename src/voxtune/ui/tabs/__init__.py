"""One module per tab of the UI, each with one `layout` function that creates the tab's widgets
and wires them to plain functions (voxtune.ui.handlers, .training, .views, .workspace); the
LLaMA-Factory webui's split. Shared pieces (the error wrapper, language choices) are in
common.py."""
