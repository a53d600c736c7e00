"""`voxtune wer`: score any two transcript files, the way voxtune scores its models.

    voxtune wer --ref refs.txt --hyp whisper.txt                    # corpus WER and CER in %
    voxtune wer --ref refs.jsonl --hyp hyps.jsonl --language en --json

A file is plain text, one utterance per line (paired by line), or JSONL with `id` and `text`
(paired by id; every reference id needs a hypothesis). So people can put voxtune's
transcripts beside those of the system they use today, with the same normaliser.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from voxtune.errors import ExitCode, UserError
from voxtune.train.scoring import NORMALIZERS


def add_parsers(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "wer", help="Corpus WER/CER of a hypothesis file against a reference file.",
        epilog="example: voxtune wer --ref refs.txt --hyp hyps.txt --language en")
    parser.add_argument("--ref", type=Path, required=True, help="References: plain text, one "
                        "utterance per line, or JSONL with id and text.")
    parser.add_argument("--hyp", type=Path, required=True, help="Hypotheses, same format.")
    parser.add_argument("--normalizer", choices=NORMALIZERS, default="whisper",
                        help="whisper (default; Whisper's English normaliser with --language "
                        "en, its basic one otherwise), simple or none.")
    parser.add_argument("--language", help="ISO-639-1 code of the utterances (picks the "
                        "English normaliser for en).")
    parser.add_argument("--json", action="store_true", help="Print a JSON object instead.")
    parser.set_defaults(handler=_wer)


def read_transcripts(path: Path) -> dict[str, str] | list[str]:
    """{id: text} from a JSONL file, else the lines of a plain text file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    lines = text.splitlines()
    if path.suffix != ".jsonl":
        return lines
    found: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            found[str(row["id"])] = str(row["text"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UserError(f"{path}:{number}: expected a JSON object with id and text") from None
    return found


def pair(references: dict[str, str] | list[str],
         hypotheses: dict[str, str] | list[str]) -> tuple[list[str], list[str], list[str]]:
    """(ids, references, hypotheses) in the reference file's order."""
    if isinstance(references, list) != isinstance(hypotheses, list):
        raise UserError("--ref and --hyp must both be plain text or both be JSONL")
    if isinstance(references, list) and isinstance(hypotheses, list):
        if len(references) != len(hypotheses):
            raise UserError(f"--ref has {len(references)} lines and --hyp {len(hypotheses)}: "
                            "plain text files pair utterances by line")
        return [str(n) for n in range(1, len(references) + 1)], references, hypotheses
    assert isinstance(references, dict) and isinstance(hypotheses, dict)
    missing = [key for key in references if key not in hypotheses]
    if missing:
        raise UserError(f"--hyp has no text for {len(missing)} reference ids: "
                        f"{', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
    ids = list(references)
    return ids, [references[key] for key in ids], [hypotheses[key] for key in ids]


def finite(value: float) -> float | None:
    """JSON has no NaN: a rate with no reference words to score is null."""
    return value if math.isfinite(value) else None


def _wer(args: argparse.Namespace) -> int:
    from voxtune.run.status import format_percent
    from voxtune.train.scoring import score

    ids, references, hypotheses = pair(read_transcripts(args.ref), read_transcripts(args.hyp))
    if not ids:
        raise UserError(f"{args.ref}: no utterances")
    scores = score(references, hypotheses, normalizer=args.normalizer,
                   languages=[args.language] * len(ids), ids=ids)
    if args.json:
        print(json.dumps({"wer": finite(scores.wer), "cer": finite(scores.cer),
                          "normalizer": scores.normalizer, "utterances": len(ids),
                          "words": scores.words, "unit": "fraction"}))
    else:
        print(f"WER {format_percent(scores.wer)}   CER {format_percent(scores.cer)}   "
              f"({len(ids)} utterances, {scores.words} reference words; normaliser "
              f"{scores.normalizer})")
    return ExitCode.OK
