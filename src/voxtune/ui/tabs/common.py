"""What every tab uses: the error wrapper, the language choices, and how a tab learns its user."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import gradio as gr

from voxtune.data.audio import AudioRejected
from voxtune.errors import RetryableError, UserError
from voxtune.models.inference import LANGUAGES

LANGUAGE_CHOICES = [(f"{code}: {label}", code) for code, label in LANGUAGES.items()]
UserOf = Callable[[gr.Request], str]  # the signed-in user's workspace key


def friendly(function: Callable[..., Any]) -> Callable[..., Any]:
    """Show a UserError, an invalid audio clip or a passing failure (cluster unreachable) as a
    Gradio error message."""
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except (UserError, AudioRejected) as error:
            raise gr.Error(str(error), print_exception=False) from None
        except RetryableError as error:
            raise gr.Error(f"{error}; try again in a moment", print_exception=False) from None

    return wrapper
