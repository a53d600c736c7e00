"""What the pages show, as plain functions of what the handlers return: tables (pandas frames
for gr.Dataframe / plots) and Markdown text. No gradio, no I/O: the tabs call these, the tests
call them directly."""

from __future__ import annotations

import html
import itertools
import re
from typing import Any

import jiwer
import pandas

from voxtune.data.calibrate import Outcome
from voxtune.run.progress import format_duration
from voxtune.run.status import Publication, RunStatus, format_percent
from voxtune.run.steps import TERMINAL
from voxtune.ui.handlers import RunPage, Targeted, progress
from voxtune.ui.workspace import Rejected

# bar label → (series, metric key in metrics.json)
SCORE_BARS = {"WER base": ("base", "base_wer"), "WER tuned": ("tuned", "wer"),
              "CER base": ("base", "base_cer"), "CER tuned": ("tuned", "cer"),
              # eval.general: did fine-tuning hurt speech it was not trained on?
              "general WER base": ("base", "base_general_wer"),
              "general WER tuned": ("tuned", "general_wer")}
CLIP_COLUMNS = ["id", "file", "seconds", "language", "transcript"]
RUN_COLUMNS = ["run", "phase", "progress", "WER base → tuned", "updated"]
GOOD_START = 50  # phrases: where a personal model starts to pay off (about 5 minutes)
REJECTED_COLUMNS = ["source", "reason", "detail"]


# --- dataset ---------------------------------------------------------------------------------


def minutes_of(clips: dict[str, dict[str, Any]]) -> float:
    return sum(row.get("duration", 0) for row in clips.values()) / 60


def dataset_total(clips: dict[str, dict[str, Any]], stale: bool = False) -> str:
    text = f"**{len(clips)} clips, {minutes_of(clips):.1f} minutes** in your workspace"
    if clips and stale:
        text += " — changed since the dataset was built: **Build dataset** again before Launch"
    return text


def record_count(clips: dict[str, dict[str, Any]], sentence: int, sentences: int,
                 targeted: Targeted | None = None) -> str:
    """"Sentence 13 of 30 · 12 recorded, 14 clips in all (1.4 min) — ~50 phrases is a good
    start"; while targeted recording is on, where it stands instead of the sentence."""
    recorded = sum(row.get("name") == "recording.wav" for row in clips.values())
    goal = (f"~{GOOD_START} phrases is a good start" if len(clips) < GOOD_START
            else "enough for a first run; more helps")
    where = f"Sentence {sentence + 1} of {sentences}"
    if targeted is not None and targeted.prompt is not None:
        where = (f"Calibration prompt {targeted.recorded + 1} of {len(targeted.state.prompts)}"
                 if targeted.calibrating else "Targeted prompt")
    return (f"{where} · **{recorded} recorded**, {len(clips)} clips in all "
            f"({minutes_of(clips):.1f} min) — {goal}")


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


def runs_table(runs: list[RunStatus]) -> pandas.DataFrame:
    return pandas.DataFrame([(s.name, s.phase, progress(s), s.wer, s.updated)
                             for s in runs], columns=RUN_COLUMNS)


def chosen_run(names: list[str], current: str | None, newest: str | None) -> str | None:
    """Keep the run being looked at; else the newest."""
    return current if current in names else newest


def progress_bar(status: RunStatus) -> str:
    """The run's progress as HTML: steps done, the running phase's bar, time spent and left.
    A run that has ended shows where it ended, with no estimate."""
    steps = len(status.steps) or 1
    done = sum(step.state == "succeeded" for step in status.steps.values())
    current = None if status.phase in TERMINAL else status.current
    if current is None:
        fraction = done / steps
        label = (f"{status.phase}: {done} of {steps} steps done" if status.steps
                 else status.phase)
        timing = ""
    else:
        fraction = (done + current.fraction) / steps
        label = (f"step {done + 1} of {steps} ({status.step}): {current.label} "
                 f"{current.done}/{current.total}")
        spent = "" if current.elapsed_s is None else \
            f"{format_duration(current.elapsed_s)} elapsed"
        left = ("estimating the time left…" if current.remaining_s is None
                else f"about {format_duration(current.remaining_s)} left")
        timing = " · ".join(part for part in (spent, left) if part)
    percent = round(100 * fraction)
    return (f'<div class="vt-progress"><div class="vt-progress-label">{html.escape(label)}'
            f'</div><progress max="100" value="{percent}" aria-label="run progress">{percent}%'
            f'</progress> <span class="vt-progress-percent">{percent}%</span>'
            f'<div class="vt-progress-time">{html.escape(timing)}</div></div>')


def run_heading(page: RunPage) -> str:
    text = f"### {page.status.name}: {page.status.phase}\n{progress(page.status)}"
    text = "\n\n".join(part for part in (text, scoring_text(page)) if part)
    return f"{text}\n\n{page.explanation}" if page.explanation else text


def scoring_text(page: RunPage) -> str:
    """How the WER/CER were measured, and the general set's scores when there is one."""
    scoring, metrics = page.scoring, page.status.metrics
    lines = []
    if "normalizer" in scoring:
        lines.append(f"Scored on the held-out clips, normaliser: {scoring['normalizer']}.")
    if "general_wer" in metrics:
        lines.append(f"General speech ({scoring.get('general_dataset', 'eval.general')}): WER "
                     f"{format_percent(metrics.get('base_general_wer'))} base → "
                     f"{format_percent(metrics['general_wer'])} tuned — did fine-tuning hurt "
                     "speech it was not trained on?")
    if "merged_wer_drift" in scoring:
        lines.append(f"Merged model: WER {format_percent(metrics.get('merged_wer'))} "
                     f"({scoring['merged_wer_drift']:g} points from the evaluated adapter).")
    return "\n".join(f"- {line}" for line in lines)


# Gradio types a plot's axes from the first frame's column dtypes, and an empty frame's are
# `object`: a page that first saw a run before it had scores drew a categorical y-axis of raw
# numbers and no bars (a reload, whose first frame had scores, looked right). Frames with
# fixed dtypes draw the same however the page was reached.
LOSS_TYPES = {"step": "int64", "value": "float64", "metric": "string"}
SCORE_TYPES = {"score": "string", "model": "string", "percent": "float64"}


def loss_curve(page: RunPage) -> pandas.DataFrame:
    return pandas.DataFrame([(step, value, "loss") for step, value in
                             page.curves.get("loss", [])], columns=list(LOSS_TYPES)
                            ).astype(LOSS_TYPES)


def _words(text: str) -> list[str]:
    return text.split()


def _plain(word: str) -> str:
    return re.sub(r"[^\w']", "", word.lower())


def marked(reference: str, hypothesis: str | None) -> str:
    """`hypothesis` as HTML with the words that differ from `reference` marked (case and
    punctuation aside), and `[…]` where reference words are missing. The alignment is jiwer's,
    the minimal word edits that WER counts (difflib's longest blocks can mark more)."""
    if hypothesis is None:
        return "<i>not evaluated</i>"
    ref, hyp = _words(reference), _words(hypothesis)
    if not hyp:
        return '<mark class="vt-missing">(nothing)</mark>'
    if not ref:
        return f'<mark class="vt-wrong">{html.escape(" ".join(hyp))}</mark>'
    chunks = jiwer.process_words(" ".join(_plain(w) or w for w in ref),
                                 " ".join(_plain(w) or w for w in hyp)).alignments[0]
    out: list[str] = []
    # consecutive edits show as one mark, as a reader sees a wrong stretch
    for same, run in itertools.groupby(chunks, key=lambda chunk: chunk.type == "equal"):
        run = list(run)
        words = html.escape(" ".join(hyp[run[0].hyp_start_idx:run[-1].hyp_end_idx]))
        if same:
            out.append(words)
            continue
        if words:
            out.append(f'<mark class="vt-wrong">{words}</mark>')
        if run[-1].ref_end_idx - run[0].ref_start_idx > \
                run[-1].hyp_end_idx - run[0].hyp_start_idx:
            out.append('<mark class="vt-missing">[…]</mark>')
    return " ".join(out)


def samples_table(samples: list[dict[str, Any]]) -> str:
    """Per held-out clip: the reference, and the base and tuned transcripts with their errors
    marked; what people look at first."""
    if not samples:
        return "<p>Per-clip transcripts appear here when the tuned model has been evaluated.</p>"
    rows = "".join(
        f"<tr><td>{html.escape(str(row.get('id', '')))}</td>"
        f"<td>{html.escape(str(row.get('reference', '')))}</td>"
        f"<td>{marked(str(row.get('reference', '')), row.get('base'))}</td>"
        f"<td>{marked(str(row.get('reference', '')), row.get('tuned'))}</td></tr>"
        for row in samples)
    return ('<table class="vt-samples"><thead><tr><th>clip</th><th>reference</th>'
            '<th>base model</th><th>tuned model</th></tr></thead>'
            f'<tbody>{rows}</tbody></table><p class="vt-legend"><mark class="vt-wrong">'
            'marked</mark>: words that differ from the reference; <mark class="vt-missing">'
            '[…]</mark>: words missing</p>')


def score_bars(metrics: dict[str, float]) -> pandas.DataFrame:
    return pandas.DataFrame(
        [(label, model, 100 * metrics[key]) for label, (model, key) in SCORE_BARS.items()
         if key in metrics], columns=list(SCORE_TYPES)).astype(SCORE_TYPES)


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


# --- targeted recording ------------------------------------------------------------------------


def _cell(text: str) -> str:
    """Text for a Markdown table cell: its pipes escaped, never empty."""
    return text.replace("|", "\\|") or " "


def targeted_why(view: Targeted) -> str:
    return f"**Why this prompt:** {view.why}" if view.prompt is not None and view.why else ""


def calibration_report(view: Targeted, limit: int = 12) -> str:
    """Where calibration stands, and the words the model got wrong with what it heard."""
    state, report = view.state, view.report
    if not state.prompts:
        return ""
    lines = [f"**Calibration: {view.recorded} of {len(state.prompts)} prompts recorded** "
             f"(transcribed by `{state.model}`)"]
    if state.round_of:
        lines.append(f"This round records for the words **{state.round_of}** still gets wrong.")
    if not report.clips:
        return "\n\n".join(lines)
    errors = report.errors
    lines.append(f"WER {format_percent(report.wer)}; **{len(errors)} of {len(report.words)} "
                 "words wrong** at least once:" if errors else
                 "The model got every word right: the built-in sentences and your text follow "
                 "in order.")
    if errors:
        rows = [f"| {_cell(errors.word)} | {errors.failed} of {errors.said} | "
                f"{_cell(errors.heard_as())} |" for errors in errors[:limit]]
        more = [f"\n… and {len(errors) - limit} more"] if len(errors) > limit else []
        lines.append("\n".join(["| word | wrong | heard |", "|---|---|---|", *rows]) +
                     "".join(more))
    return "\n\n".join(lines)


def calibration_outcomes(run: str, found: list[Outcome] | None) -> str:
    """Which of the words the base got wrong in the calibration clips `run`'s model now gets
    right, and which still fail."""
    if found is None:
        return ("Check the words your calibration clips showed wrong with this run's model "
                "(Record → Targeted recording).")
    if not found:
        return "The base model got every calibration word right: nothing to check."
    fixed = sum(outcome.fixed for outcome in found)
    rows = []
    for outcome in found:
        after = outcome.after
        now = ("**fixed**" if outcome.fixed else "not in the checked clips" if after is None
               else f"still wrong: {after.heard_as()}")
        rows.append(f"| {_cell(outcome.word)} | {_cell(outcome.before.heard_as())} | "
                    f"{_cell(now)} |")
    return "\n".join([f"**{fixed} of {len(found)} calibration words fixed** by {run}:", "",
                      "| word | base model | tuned model |", "|---|---|---|", *rows])
