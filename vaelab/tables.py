"""The metrics' breakdowns (vaelab/metrics/_common.py: ScoreTable) as files and in W&B.

At each evaluation of a run, and in ``vaelab eval``, every table the suite recorded (MIG per
factor, DCI's importance matrix) is written as ``<run dir>/tables/<name>_step<step>.csv``, for
people without W&B, and sent to each logger that shows tables (W&B: ``tables/<name>``). A table
of codes by factors (DCI's importances) is drawn as a heatmap too:
``<run dir>/images/<name>_step<step>.png`` and ``images/<name>`` in W&B.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from vaelab.errors import write_atomically
from vaelab.metrics._common import ScoreTable


def write_csv(table: ScoreTable, path: Path) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(table.columns)
    writer.writerows(table.rows)
    write_atomically(path, lambda file: file.write(text.getvalue().encode()))


def heatmap(name: str, table: ScoreTable):
    """A codes x factors table (first column: the code's name) as a PIL image: each cell's value
    in grey and in figures, a disentangled code one dark cell per row and column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    values = np.array([row[1:] for row in table.rows], dtype=float)
    figure, axes = plt.subplots(figsize=(1.0 + 0.9 * values.shape[1], 0.8 + 0.35 * values.shape[0]), dpi=100)
    axes.imshow(values, cmap="Greys", vmin=0.0, vmax=max(float(values.max()), 1e-12), aspect="auto")
    axes.set_xticks(range(values.shape[1]), table.columns[1:], rotation=30, ha="right")
    axes.set_yticks(range(values.shape[0]), [row[0] for row in table.rows])
    for (i, j), value in np.ndenumerate(values):
        dark = value > 0.5 * values.max()
        axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white" if dark else "black")
    axes.set_title(name)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def save_and_log_tables(tables: dict[str, ScoreTable], run_dir: Path, step: int, loggers=()) -> dict[str, Path]:
    """Each table as CSV (and a matrix as a heatmap) in ``run_dir``, then to the loggers that show
    tables and pictures; a logger that fails is told about once here and stops nothing.
    Returns the CSV paths by table name."""
    from vaelab.images import save_and_log
    from vaelab.loggers import tell_run_loggers

    if not tables:
        return {}
    directory = Path(run_dir) / "tables"
    directory.mkdir(parents=True, exist_ok=True)
    paths, pictures = {}, {}
    for name, table in tables.items():
        paths[name] = directory / f"{name}_step{step}.csv"
        write_csv(table, paths[name])
        if name.endswith("_importance"):
            pictures[name] = heatmap(f"{name} (step {step})", table)
        tell_run_loggers(loggers, f"table {name}", lambda logger, key=f"tables/{name}", table=table: logger.log_score_table(key, table.columns, table.rows, step))
    if pictures:
        save_and_log(pictures, Path(run_dir) / "images", step, loggers)
    return paths
