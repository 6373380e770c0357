"""`vaelab compare DIR [DIR …]`: the runs of one or more sweeps in one table and one picture per figure.

Reads every training run under the given directories (a run is a directory with
`.hydra/config.yaml`; its figures are in `metrics.json`), prints a table, writes
`compare.csv` and, for each headline metric and information quantity, a PNG of the
figure against `beta_effective` (log axis): one line per objective, mean ± std over
seeds. Failed and unfinished runs are listed, never silently dropped. With `--wandb`
the table and the plots also go to a W&B run in the sweep's group.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

FIGURES = (
    "metrics/mig",
    "metrics/dci_disentanglement",
    "metrics/factor_vae",
    "metrics/beta_vae",
    "metrics/sap",
    "metrics/modularity",
    "info/mutual_info",
    "info/total_correlation",
    "info/kl_marginal",
    "val/loss",
)


@dataclass
class Run:
    path: Path
    objective: str  # betavae, infomax, infomax-native
    beta_effective: float | None
    seed: int | None
    status: str  # success, failed, interrupted, unfinished
    figures: dict[str, float] = field(default_factory=dict)


def _objective_and_beta(config) -> tuple[str, float | None]:
    target = str(config.objective.get("_target_", ""))
    name = target.rsplit(".", 1)[-1].lower() or "unknown"
    if name == "infomax" and config.objective.get("estimator", "derived") != "derived":
        name = "infomax-native"
    if config.get("beta_effective") is not None:  # set directly (experiment=beta_vs_infomax)
        return name, float(config.beta_effective)
    if target.endswith("InfoMax"):
        lam = 0.0 if config.get("lambda") is None else float(config.get("lambda"))
        return name, 1.0 / (1.0 + lam) if lam > -1 else None
    if target.endswith("BetaVAE"):
        beta = config.get("beta")
        return name, 1.0 if beta is None else float(beta)
    return name, None


def read_run(path: Path) -> Run | None:
    """The run in ``path``, or None when it is not a training run (e.g. an eval run)."""
    from omegaconf import OmegaConf

    config = OmegaConf.load(path / ".hydra" / "config.yaml")
    if "objective" not in config:
        return None
    try:
        objective, beta_effective = _objective_and_beta(config)
    except (ValueError, TypeError):  # a bad knob: the run failed before training
        objective, beta_effective = str(config.objective.get("_target_", "?")).rsplit(".", 1)[-1].lower(), None
    seed = config.get("seed")
    metrics_file = path / "metrics.json"
    if not metrics_file.is_file():
        return Run(path, objective, beta_effective, seed, "failed")
    metrics = json.loads(metrics_file.read_text())
    status = {"running": "unfinished"}.get(metrics.get("status", "success"), metrics.get("status", "success"))
    figures = {key: value for key, value in metrics["final"].items() if isinstance(value, (int, float))}
    beta_effective = figures.get("train/beta_effective", beta_effective)
    return Run(path, objective, beta_effective, seed, status, figures)


def find_runs(directories: list[Path]) -> list[Run]:
    runs = []
    for directory in directories:
        for config in sorted(Path(directory).rglob(".hydra/config.yaml")):
            run = read_run(config.parent.parent)
            if run is not None:
                runs.append(run)
    return runs


def write_csv(runs: list[Run], path: Path) -> None:
    keys = sorted({key for run in runs for key in run.figures})
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["run", "objective", "beta_effective", "seed", "status", *keys])
        for run in runs:
            writer.writerow(
                [run.path, run.objective, run.beta_effective, run.seed, run.status, *(run.figures.get(k, "") for k in keys)]
            )


def plot(runs: list[Run], figure: str, path: Path) -> int:
    """One PNG of ``figure`` against beta_effective; returns how many lines (objectives) it has."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_objective: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        value = run.figures.get(figure)
        if run.status == "success" and run.beta_effective and value is not None and math.isfinite(value):
            by_objective[run.objective][run.beta_effective].append(value)
    if not by_objective:
        return 0
    fig, ax = plt.subplots(figsize=(6, 4))
    for objective, points in sorted(by_objective.items()):
        betas = sorted(points)
        means = [statistics.fmean(points[b]) for b in betas]
        spreads = [statistics.stdev(points[b]) if len(points[b]) > 1 else 0.0 for b in betas]
        ax.errorbar(betas, means, yerr=spreads, marker="o", capsize=3, label=objective)
    skipped = sum(run.status != "success" for run in runs)
    ax.set_xscale("log")
    ticks = sorted({b for points in by_objective.values() for b in points})
    ax.set_xticks(ticks, [f"{b:g}" for b in ticks])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("beta_effective  (β, or 1/(1+λ))")
    ax.set_ylabel(figure)
    ax.set_title(figure + (f"  ({skipped} failed/unfinished runs not shown)" if skipped else ""), fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return len(by_objective)


def print_table(runs: list[Run]) -> None:
    from rich.console import Console
    from rich.table import Table

    shown = [f for f in FIGURES if any(f in run.figures for run in runs)]
    table = Table(title=f"vaelab compare: {len(runs)} runs")
    for column in ("run", "objective", "β_eff", "seed", "status", *(f.removeprefix("metrics/") for f in shown)):
        table.add_column(column, justify="left" if column in ("run", "objective", "status") else "right")
    for run in sorted(runs, key=lambda r: (r.objective, r.beta_effective or 0.0, r.seed or 0)):
        status = run.status if run.status == "success" else f"[red]{run.status}[/red]"
        beta = f"{run.beta_effective:.4g}" if run.beta_effective is not None else "?"
        values = [f"{run.figures[f]:.3f}" if f in run.figures else "" for f in shown]
        table.add_row(run.path.name, run.objective, beta, str(run.seed), status, *values)
    Console().print(table)


def log_to_wandb(runs: list[Run], plots: dict[str, Path], out: Path, sweep_dir: Path, project: str) -> str | None:
    """The table and the plots as one W&B run (job_type compare) in the sweep's group.

    Returns the run's directory, or None after one line saying why W&B could not log
    (compare.csv and the PNGs are on disk either way)."""
    from vaelab.logging import _one_line, _wandb_settings, resolve_wandb_mode, sweep_group

    try:
        import wandb

        mode = resolve_wandb_mode("auto")
        group = sweep_group(sweep_dir)
        run = wandb.init(
            project=project, group=group, job_type="compare", name=f"compare {group}", dir=str(out.resolve()),
            mode=mode, settings=_wandb_settings(),
        )  # fmt: skip
        keys = sorted({key for r in runs for key in r.figures})
        table = wandb.Table(columns=["run", "objective", "beta_effective", "seed", "status", *keys])
        for r in runs:
            table.add_data(str(r.path), r.objective, r.beta_effective, r.seed, r.status, *(r.figures.get(k) for k in keys))
        run.log({"compare/runs": table, **{f"compare/{figure}": wandb.Image(str(path)) for figure, path in plots.items()}})
        run.summary.update({"runs": len(runs), "failed_or_unfinished": sum(r.status != "success" for r in runs)})
        run_dir = run.dir
        run.finish()
        wandb.teardown()  # compare exits next: wait until the run's file is written whole
        return run_dir
    except Exception as error:  # noqa: BLE001 - the files on disk are the result; W&B is extra
        print(f"vaelab: W&B could not log the comparison ({_one_line(error)}); files are in {out}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vaelab compare", description=__doc__.splitlines()[0])
    parser.add_argument("directories", nargs="+", type=Path, help="sweep or run directories")
    parser.add_argument("--out", type=Path, help="where compare.csv and the PNGs go (default: the first directory)")
    parser.add_argument(
        "--wandb", action="store_true",
        help="also log the table and plots as a W&B run (job_type compare) in the sweep's group; offline without an API key",
    )  # fmt: skip
    parser.add_argument("--project", default="vaelab", help="W&B project for --wandb (default: vaelab)")
    args = parser.parse_args(argv)
    for directory in args.directories:
        if not directory.is_dir():
            print(f"vaelab: error: compare: {directory}: no such directory", file=sys.stderr)
            return 2
    runs = find_runs(args.directories)
    if not runs:
        print(f"vaelab: error: compare: no training runs under {', '.join(map(str, args.directories))}", file=sys.stderr)
        return 2
    out = args.out or args.directories[0]
    out.mkdir(parents=True, exist_ok=True)
    print_table(runs)
    write_csv(runs, out / "compare.csv")
    plots = {f: out / f"compare_{f.replace('/', '_')}.png" for f in FIGURES}
    plots = {f: path for f, path in plots.items() if plot(runs, f, path)}
    bad = [run for run in runs if run.status != "success"]
    for run in bad:
        print(f"{run.status}: {run.path}", file=sys.stderr)
    print(f"wrote {out / 'compare.csv'} and {len(plots)} plots to {out}", file=sys.stderr)
    if args.wandb:
        run_dir = log_to_wandb(runs, plots, out, args.directories[0], args.project)
        if run_dir:
            print(f"logged to W&B: {run_dir}", file=sys.stderr)
    return 0
