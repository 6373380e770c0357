"""A run's files in its directory: what they hold, the one writer, the readers, what damage means.

- ``metrics_history.jsonl``: one JSON line ``{"step": n, key: value, ...}`` per logging call,
  appended and flushed, so a call costs the same at step 10 and at step 10^6. One step
  can span several lines (train, val, metrics): :func:`read_history` merges them.
- ``metrics.json``: ``{"status": "running" | "success" | "failed" | "interrupted",
  "objective": {...}, "images_per_step": n, "images_to": {key: images or null},
  "final": {key: last value}}`` (images_to: the time to disentangle, vaelab/time_to_disentangle.py),
  small, rewritten atomically (write, then rename) after every logging call: a crash never
  leaves it half-written, and a killed run stays "running".

:class:`RunFiles` writes both (for training through vaelab/loggers.py's MetricsFileLogger,
and for eval); train (``resume=``), eval and `vaelab compare` read them with the functions
here. A damaged file is a one-line UserError naming it. No torch or Lightning here: compare
reads hundreds of runs with them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vaelab.errors import DiskFull, RunStatus, UserError, first_line, is_disk_full, write_atomically
from vaelab.time_to_disentangle import first_steps_reaching, images_to

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





def write_json_atomic(path: Path, payload: Any) -> None:
    """``payload`` as JSON at ``path``, all or nothing (a full disk: DiskFull, the old file whole)."""
    text = json.dumps(payload, indent=1, allow_nan=True).encode()
    write_atomically(path, lambda file: file.write(text))


def _as_float(value: Any) -> float:
    # NaN/inf are kept (JSON NaN/Infinity): a diverged run must show as diverged.
    return float(value.item() if hasattr(value, "item") else value)


class RunFiles:
    """The writer of a run's figures: every scalar in ``metrics_history.jsonl``, the run's status
    and last values in ``metrics.json`` (the module docstring). Each call writes a bounded
    number of bytes: its own line, and the summary, whose size depends on the keys, not on the
    steps. vaelab/loggers.py: MetricsFileLogger hands it Lightning's figures."""

    def __init__(
        self,
        run_dir: str | os.PathLike,
        resume_step: int | None = None,
        objective: dict[str, Any] | None = None,
        thresholds: Mapping[str, float] | None = None,
    ) -> None:
        """``resume_step``: continue the files of a run resumed from that step, dropping what
        was logged after it (the resumed run logs those steps again, with the same values).
        ``objective``: the trained objective's description (``Objective.describe``), which
        ``vaelab compare`` reads; kept under "objective". ``thresholds``: the time to
        disentangle's {figure: threshold} (vaelab/time_to_disentangle.py), kept under
        "images_to" once :attr:`images_per_step` is set (the trainer knows its world size)."""
        self.path = Path(run_dir) / METRICS_FILE
        self.history_path = Path(run_dir) / HISTORY_FILE
        self.objective = objective
        self.thresholds = dict(thresholds or {})
        self.images_per_step: int | None = None
        self.reached: dict[str, int] = {}  # threshold key -> the first step at or above it
        self.final: dict[str, float] = {}
        self.last_step = 0  # where a figure logged without a step goes
        self.status = RunStatus.RUNNING
        self._history_file = None  # opened at the first figure
        # A new run in a directory that has a history (an earlier run's) starts it afresh, at its
        # first figure; a resumed run goes on with the history up to its checkpoint.
        self._history_mode = "ab" if resume_step is not None else "wb"
        self._saved = False  # metrics.json says what this logger holds
        if resume_step is not None and (self.history_path.is_file() or self.path.is_file()):
            kept = [(line, entry) for line, entry in saved_history(run_dir) if entry["step"] <= resume_step]
            for _, entry in kept:
                self.last_step = max(self.last_step, entry["step"])
                self.final.update({key: value for key, value in entry.items() if key != "step"})
            self.reached = first_steps_reaching((entry for _, entry in kept), self.thresholds)
            # The history up to the checkpoint, whole lines as they were; the run appends to it.
            lines = b"".join(line for line, _ in kept)
            write_atomically(self.history_path, lambda file: file.write(lines))

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """One logging call's figures at ``step`` (None: the last step logged)."""
        values = {key: _as_float(value) for key, value in metrics.items() if key != "epoch"}
        if not values:
            return
        # One step arrives in several calls (train, val, metrics): read_history merges them.
        step = int(step) if step is not None else self.last_step
        self.last_step = max(self.last_step, step)
        self._append(json.dumps({"step": step, **values}, allow_nan=True).encode() + b"\n")
        self.final.update(values)
        self.reached = {**first_steps_reaching([{"step": step, **values}], self.thresholds), **self.reached}  # first stays
        self._saved = False
        self.save()

    def _append(self, line: bytes) -> None:
        """``line`` at the end of the history, whole or not at all (a full disk: DiskFull, the
        partial line removed, so the file still holds whole lines only)."""
        if self._history_file is None:
            self.history_path.parent.mkdir(parents=True, exist_ok=True)
            self._history_file = open(self.history_path, self._history_mode, buffering=0)
            self._history_mode = "ab"
        file = self._history_file
        start = file.seek(0, os.SEEK_END)
        try:
            written = 0
            while written < len(line):
                written += file.write(line[written:])
        except OSError as error:
            file.truncate(start)
            if is_disk_full(error):
                raise DiskFull(self.history_path) from error
            raise

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        header = {"objective": self.objective} if self.objective is not None else {}
        if self.thresholds and self.images_per_step is not None:
            header |= {"images_per_step": self.images_per_step, "images_to": self.images_to()}
        write_json_atomic(self.path, {"status": self.status.value, **header, "final": self.final})
        self._saved = True

    def images_to(self) -> dict[str, int | None]:
        """Each threshold's training images at its first logged value at or above it; None: not (yet) reached."""
        return images_to(self.thresholds, self.reached, self.images_per_step or 0)

    def end(self, status: RunStatus) -> None:
        """Record how the run ended in metrics.json and close the history."""
        if self._history_file is not None:
            self._history_file.close()
            self._history_file = None
        if status == self.status and self._saved:
            return
        self.status = status
        try:
            self.save()
        except DiskFull:
            if status == RunStatus.SUCCESS:
                raise
            # The run is already stopping with its own error (most likely this full disk);
            # the file keeps its last complete state, which says "running": resumable.
