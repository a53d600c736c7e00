"""What a model card is rendered from (`ModelFacts`, gathered by the publish step) and the
small formatting helpers every card section shares; the lowest of the card modules
(`card_results` the numbers, `card` the whole card)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from voxtune.publish.dataset import DataSummary
from voxtune.run.status import format_percent
from voxtune.spec import RunSpec

Layout = Literal["adapter", "merged", "full"]
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
SAMPLE_ROWS = 5
SAMPLE_CHARS = 120


def clips_text(count: Any) -> str:
    return f"{count} clip" if count == 1 else f"{count} clips"


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def in_table(value: Any) -> str:
    return format_percent(value, unit=" %", missing="—")


def percent(value: Any) -> float | None:
    return round(100 * value, 2) if finite(value) else None


def is_hub_id(value: str | None) -> bool:
    return bool(value) and HUB_ID.match(value) is not None and not value.startswith((".", "~"))


def cell(text: Any) -> str:
    """A table cell: one line, pipes escaped, long outputs cut (smoke models babble)."""
    if text is None:
        return "—"
    flat = " ".join(str(text).split()).replace("|", "\\|")
    return flat if len(flat) <= SAMPLE_CHARS else flat[:SAMPLE_CHARS - 1] + "…"


@dataclass(frozen=True)
class ModelFacts:
    """Everything a model card says, gathered by the publish step."""

    name: str  # published name: model-index name and title
    spec: RunSpec  # what the model was trained with
    metrics: dict[str, Any]  # the train step's metrics.json ({} when there was no eval split)
    layout: Layout
    model_ref: str  # what the loading snippet loads: Hub repo id or local folder
    on_hub: bool
    private: bool
    revision: str | None = None  # Hub branch the files were committed to
    base_ref: str | None = None  # Hub id or folder of the base an adapter loads on
    base_preset: str | None = None  # e.g. "tiny-random-4s": a base voxtune builds locally
    window_seconds: float = 30.0  # the processor's audio window; real Voxtral: 30
    data: DataSummary | None = None
    dataset_ref: str | None = None  # the published dataset: Hub id or folder
    space_ref: str | None = None  # the demo Space: Hub id or folder

    @property
    def smoke(self) -> bool:
        return bool(self.metrics.get("smoke_model")) or self.base_preset is not None

    @property
    def language(self) -> str | None:
        return default_language(self.spec, self.data)

    @property
    def evaluated(self) -> bool:
        return all(finite(self.metrics.get(key)) for key in ("wer", "cer"))


def default_language(spec: RunSpec, data: DataSummary | None) -> str | None:
    """The run's language, or the one language its clips are labelled with; None = detect."""
    if spec.language or data is None or len(data.languages) != 1:
        return spec.language
    return data.languages[0]
