"""A run's logged figures on disk: ``metrics.json`` (status, objective, last values) and
``metrics_history.jsonl`` (one JSON line ``{"step": n, key: value, ...}`` per logging call;
vaelab/loggers.py writes both and describes them). Readers only, with no import of torch or
Lightning: `vaelab compare` reads hundreds of runs with them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vaelab.errors import RunStatus, UserError, first_line

METRICS_FILE = "metrics.json"
HISTORY_FILE = "metrics_history.jsonl"


def history_lines(path: Path) -> list[tuple[bytes, dict[str, Any]]]:
    """The (line, entry) pairs of a ``metrics_history.jsonl``. A last line without its newline
    (a write the machine never finished) is left out; any other line that is not a
    ``{"step": int, ...}`` object raises ValueError naming it."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    complete = lines[:-1]  # what follows the last newline was never finished
    pairs = []
    for number, line in enumerate(complete, start=1):
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict) or not isinstance(entry.get("step"), int):
                raise ValueError("not a {step: …} entry")
        except ValueError as error:
            raise ValueError(f"line {number}: {first_line(error)}") from None
        pairs.append((line + b"\n", entry))
    return pairs


def merge_history(entries) -> list[dict[str, Any]]:
    """Entries merged by step, in step order: ``[{"step": n, key: value, ...}, ...]``."""
    by_step: dict[int, dict[str, Any]] = {}
    for entry in entries:
        values = dict(entry)
        by_step.setdefault(values.pop("step"), {}).update(values)
    return [{"step": step, **by_step[step]} for step in sorted(by_step)]


def saved_history(run_dir: str | os.PathLike) -> list[tuple[bytes, dict[str, Any]]]:
    """The (line, entry) pairs a run logged to ``metrics_history.jsonl`` (none when it has no
    such file yet). A damaged file is a one-line UserError (the history is only ever appended
    to, whole lines at a time, so only a bad copy or a disk error damages it)."""
    path = Path(run_dir) / HISTORY_FILE
    if not path.is_file():
        return []
    try:
        return history_lines(path)
    except (OSError, ValueError) as error:
        raise UserError(
            f"{path} is damaged ({first_line(error)}); restore it, or move it aside to resume without the figures logged so far"
        ) from None


def read_history(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every figure a run logged, one merged entry per step in step order (what W&B's history
    holds)."""
    return merge_history(entry for _, entry in saved_history(run_dir))


def figure_histories(run_dir: str | os.PathLike, keys: list[str]) -> dict[str, list[tuple[int, float]]]:
    """For each figure in ``keys``: (step, value) of every number logged for it, in step order (a
    step logged twice: its last value). Only the history lines that name one of ``keys`` are
    parsed: a figure logged at each periodic evaluation is a small part of a long history. A
    damaged file: UserError naming it."""
    history_path = Path(run_dir) / HISTORY_FILE
    needles = [json.dumps(key).encode() for key in keys]
    if not history_path.is_file():
        return {key: [] for key in keys}
    try:
        lines = history_path.read_bytes().split(b"\n")[:-1]  # after the last newline: a line never written whole
        # One parse of the lines that matter, as a JSON array: a line each would cost several times more.
        entries = json.loads(b"[" + b",".join(line for line in lines if any(needle in line for needle in needles)) + b"]")
        if not all(isinstance(entry, dict) and isinstance(entry.get("step"), int) for entry in entries):
            raise ValueError("not a {step: …} entry")
    except (OSError, ValueError) as error:
        raise UserError(f"{history_path} is damaged ({first_line(error)})") from None
    histories = {}
    for key in keys:
        by_step = {entry["step"]: entry[key] for entry in entries if isinstance(entry.get(key), (int, float))}
        histories[key] = sorted(by_step.items())
    return histories


def finished_figures(run_dir: str | os.PathLike) -> dict[str, float] | None:
    """The final figures of a run that finished (``metrics.json`` says success), else None
    (none yet, still running, stopped, failed or unreadable: not finished)."""
    try:
        summary = json.loads((Path(run_dir) / METRICS_FILE).read_text())
        return dict(summary["final"]) if summary.get("status") == RunStatus.SUCCESS.value else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
