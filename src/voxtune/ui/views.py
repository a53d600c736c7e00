"""What the pages show, as plain functions of what the handlers return: tables (pandas frames
for gr.Dataframe / plots) and Markdown text. No gradio, no I/O: the tabs call these, the tests
call them directly."""

from __future__ import annotations

from typing import Any

import pandas

from voxtune.run.status import Publication, RunStatus, format_percent
from voxtune.ui.handlers import RunPage, progress
from voxtune.ui.workspace import Rejected

# bar label → (series, metric key in metrics.json)
SCORE_BARS = {"WER base": ("base", "base_wer"), "WER tuned": ("tuned", "wer"),
              "CER base": ("base", "base_cer"), "CER tuned": ("tuned", "cer")}
CLIP_COLUMNS = ["id", "file", "seconds", "language", "transcript"]
RUN_COLUMNS = ["run", "phase", "progress", "WER base → tuned", "updated"]
REJECTED_COLUMNS = ["source", "reason", "detail"]


# --- dataset ---------------------------------------------------------------------------------


def dataset_total(clips: dict[str, dict[str, Any]]) -> str:
    minutes = sum(row.get("duration", 0) for row in clips.values()) / 60
    return f"**{len(clips)} clips, {minutes:.1f} minutes** in your workspace"


def clips_table(clips: dict[str, dict[str, Any]]) -> pandas.DataFrame:
    return pandas.DataFrame(
        [(key, row.get("name", ""), row.get("duration", 0), row.get("language") or "",
          row["text"]) for key, row in clips.items()], columns=CLIP_COLUMNS)


def clip_choices(clips: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    return [(f"{key} — {row['text'][:40]}", key) for key, row in clips.items()]


def rejected_table(rejected: list[Rejected]) -> pandas.DataFrame:
    return pandas.DataFrame([(r.name, r.reason, r.detail) for r in rejected],
                            columns=REJECTED_COLUMNS)


# --- runs ------------------------------------------------------------------------------------


def wer_change(metrics: dict[str, float]) -> str:
    """"31.0% → 12.0%" (base → tuned), or "" before the run has scores."""
    if "wer" not in metrics:
        return ""
    return f"{format_percent(metrics.get('base_wer'))} → {format_percent(metrics['wer'])}"


def runs_table(runs: list[RunStatus]) -> pandas.DataFrame:
    return pandas.DataFrame([(s.name, s.phase, progress(s), wer_change(s.metrics), s.updated)
                             for s in runs], columns=RUN_COLUMNS)


def chosen_run(names: list[str], current: str | None) -> str | None:
    """Keep the run being looked at; else the newest."""
    return current if current in names else (names[-1] if names else None)


def run_heading(page: RunPage) -> str:
    text = f"### {page.status.name}: {page.status.phase}\n{progress(page.status)}"
    return f"{text}\n\n{page.explanation}" if page.explanation else text


def loss_curve(page: RunPage) -> pandas.DataFrame:
    return pandas.DataFrame([(step, value, "loss") for step, value in
                             page.curves.get("loss", [])], columns=["step", "value", "metric"])


def score_bars(metrics: dict[str, float]) -> pandas.DataFrame:
    return pandas.DataFrame(
        [(label, model, 100 * metrics[key]) for label, (model, key) in SCORE_BARS.items()
         if key in metrics], columns=["score", "model", "percent"])


def published_text(record: Publication | None) -> str:
    """Where the run's publish step put the model (from the run's status)."""
    if record is None:
        return ""
    version = f" version {record.version}" if record.version else ""
    lines = [f"**Published** {record.name}{version} ({record.layout}): `{record.model}`"]
    lines += [f"- dataset: `{record.dataset}`"] if record.dataset else []
    lines += [f"- Space: `{record.space}`"] if record.space else []
    lines += [f"- commit {repo}: {url}" for repo, url in record.commits.items()]
    return "\n".join(lines)


# --- publish ---------------------------------------------------------------------------------


def models_text(models: list[str]) -> str:
    listing = "\n".join(f"- `{model}`" for model in models) or "nothing published yet"
    return f"**Your models in the local registry:**\n{listing}"
