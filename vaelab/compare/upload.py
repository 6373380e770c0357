"""`vaelab compare --wandb`: the comparison as one W&B run (job_type compare) in the sweep's group:
the run table, the PNGs, and W&B's own line charts of each figure's means over seeds. W&B is
extra: when it fails, compare says why in one line and its files on disk stand.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from vaelab.compare.groups import groups, present_figures
from vaelab.compare.runs import RECONSTRUCTION, RUN_COLUMNS, Run
from vaelab.errors import one_line


def line_plots(runs: list[Run]) -> dict[str, Any]:
    """W&B's own line charts (zoomable, per-objective lines) of each figure's mean over seeds
    against beta_effective, kl_weight and reconstruction: the PNGs' axes, without error bars.
    Keys ``compare/<figure>_vs_<axis>``; the points are the table ``compare/settings``."""
    import wandb

    shown = present_figures(runs)
    columns = ["objective", "knobs", "seeds", "beta_effective", "kl_weight", *shown]
    rows = []
    for cell in groups(runs):
        means = [(cell.mean_std(figure) or (None,))[0] for figure in shown]
        rows.append([cell.objective, cell.knob_text, len(cell.runs), cell.beta_effective, cell.kl_weight, *means])
    charts: dict[str, Any] = {"compare/settings": wandb.Table(columns=columns, data=rows)}
    for figure in shown:
        for axis in ("beta_effective", "kl_weight", RECONSTRUCTION):
            points = [row for row in rows if row[columns.index(axis)] is not None and row[columns.index(figure)] is not None]
            if axis == figure or len(points) < 2:
                continue
            table = wandb.Table(columns=columns, data=points)
            name = f"{figure.replace('/', '_')}_vs_{axis.replace('/', '_')}"
            charts[f"compare/{name}"] = wandb.plot.line(
                table, x=axis, y=figure, stroke="objective", title=f"{figure} against {axis} (mean over seeds)"
            )
    return charts


def log_to_wandb(runs: list[Run], plots: dict[str, Path], out: Path, sweep_dir: Path, project: str) -> str | None:
    """The table and the plots as one W&B run (job_type compare) in the sweep's group.

    Returns the run's directory, or None after one line saying why W&B could not log
    (compare.csv and the PNGs are on disk either way)."""
    from vaelab.loggers import resolve_wandb_mode, sweep_group, wandb_settings

    try:
        import wandb

        mode = resolve_wandb_mode("auto")
        group = sweep_group(sweep_dir)
        run = wandb.init(
            project=project, group=group, job_type="compare", name=f"compare {group}", dir=str(out.resolve()),
            mode=mode, settings=wandb_settings(),
        )  # fmt: skip
        keys = sorted({key for r in runs for key in r.figures})
        table = wandb.Table(columns=[*RUN_COLUMNS, *keys])
        for r in runs:
            path, *fields = r.fields()
            table.add_data(str(path), *fields, *(r.figures.get(k) for k in keys))
        run.log({"compare/runs": table, **{f"compare/{figure}": wandb.Image(str(path)) for figure, path in plots.items()}})
        run.log(line_plots(runs))
        run.summary.update({"runs": len(runs), "failed_or_unfinished": sum(not r.succeeded for r in runs)})
        run_dir = run.dir
        run.finish()
        wandb.teardown()  # compare exits next: wait until the run's file is written whole
        return run_dir
    except Exception as error:  # noqa: BLE001 - the files on disk are the result; W&B is extra
        print(f"vaelab: W&B could not log the comparison ({one_line(error)}); files are in {out}", file=sys.stderr)
        return None
