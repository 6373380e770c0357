"""`logger=report` (or `logger=[wandb,report]`): a run's summary as one Markdown page,
``<run dir>/report.md``, for people who read runs without W&B: how it ended, its last
figures, its latest pictures and the metrics' per-factor tables.

The extension example of docs/extending.md: this module and its entry point
(examples/pyproject.toml, group ``vaelab.loggers``), nothing in vaelab edited. It implements
vaelab's logger interface (``vaelab.loggers.RunLogger``) on top of a Lightning logger.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import Logger

from vaelab.errors import RunStatus, write_atomically
from vaelab.loggers import RunLoggerDefaults


class MarkdownReport(RunLoggerDefaults, Logger):
    """Keeps the last value of every figure, the latest picture and table of each kind, and
    writes them as ``report.md`` in ``save_dir`` when the run ends."""

    def __init__(self, save_dir: str | os.PathLike = ".", title: str = "vaelab run") -> None:
        super().__init__()
        self.directory = Path(save_dir)
        self.title = title
        self.figures: dict[str, float] = {}
        self.config: dict[str, Any] = {}
        self.pictures: dict[str, Path] = {}
        self.tables: dict[str, tuple[list[str], list[list]]] = {}

    @property
    def name(self) -> str:
        return "report"

    @property
    def version(self) -> str:
        return "0"

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        self.config = dict(params) if isinstance(params, Mapping) else {}

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.figures.update({key: float(value) for key, value in metrics.items()})

    def log_picture(self, key: str, path: Path, step: int) -> None:
        self.pictures[key] = Path(path)

    def log_score_table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence], step: int) -> None:
        self.tables[key] = (list(columns), [list(row) for row in rows])

    def finish(self, status: RunStatus, exit_code: int, summary: Mapping[str, Any]) -> None:
        lines = [f"# {self.title}", "", f"status: **{status.value}**", ""]
        knobs = {key: self.config[key] for key in ("objective_name", "beta_effective", "kl_weight", "seed") if key in self.config}
        if knobs:
            lines += ["| setting | value |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in knobs.items()), ""]
        headline = {key: value for key, value in self.figures.items() if key.startswith(("metrics/", "val/loss"))}
        if headline:
            lines += ["| figure | last value |", "| --- | --- |", *(f"| {k} | {v:.4g} |" for k, v in sorted(headline.items())), ""]
        for key, (columns, rows) in self.tables.items():
            lines += [f"## {key}", "", "| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
            lines += ["| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |" for row in rows]
            lines.append("")
        for key, path in self.pictures.items():
            where = os.path.relpath(path, self.directory) if path.is_absolute() else path
            lines += [f"## {key}", "", f"![{key}]({where})", ""]
        text = "\n".join(lines).encode()
        self.directory.mkdir(parents=True, exist_ok=True)
        write_atomically(self.directory / "report.md", lambda file: file.write(text))
