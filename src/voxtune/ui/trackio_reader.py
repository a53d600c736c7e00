"""Training curves from the trackio store the train step writes (RUN/trackio/*.db), read with
sqlite3 so the UI needs neither trackio nor torch. Read-only, and tolerant of a store that the
running train step is still writing (or has not created yet)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

# metric name → (step, value) points, in step order
Curves = dict[str, list[tuple[int, float]]]


def read_curves(store: Path) -> Curves:
    """The curves in a run's trackio store (RunFolder.trackio)."""
    curves: Curves = {}
    for database in sorted(store.rglob("*.db")):
        try:
            with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=2) as db:
                rows = db.execute("select step, metrics from metrics order by step, id").fetchall()
        except sqlite3.Error:
            continue  # being created or migrated: the next poll reads it
        for step, document in rows:
            try:
                values = json.loads(document)
            except json.JSONDecodeError:
                continue
            for name, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    curves.setdefault(name, []).append((int(step), float(value)))
    return curves
