"""`vaelab compare DIR [DIR …]`: the runs of one or more sweeps in one table and one picture per figure.

Reads every training run under the given directories (a run is a directory with
`.hydra/config.yaml`; its figures are in `metrics.json`), prints a table, writes
`compare.csv` (one row per run), `compare_summary.csv` and `compare_summary.md` (one row
per objective and knob value: mean ± std over seeds) and, for each headline metric and
information quantity, a PNG of the figure on three axes (four when an objective has no
equivalent β-VAE: it is also drawn against its own knob), one line per objective (mean ±
std over seeds):

- `beta_effective` (log): the β of the equivalent β-VAE, the axis shared by both derivations;
- the KL weight (log): what the loss really weighs its KL term by, relative to
  reconstruction: β for betavae, 1/(1+λ) for infomax (derived), 1/λ on KL[q(z)||p(z)]
  for infomax-native (where it differs from beta_effective);
- the validation reconstruction error: the fair axis when objectives weigh different
  KL terms (a rate-distortion view: which disentangles more at the same distortion).

The dots on those plots are the seeds. Across seeds (vaelab/compare_seeds.py): a seed table
per objective and knob value (`compare_seeds.csv`, `.md`: median, IQR, a bootstrap interval,
seeds at or above each `--threshold`, the time to disentangle), a quotable line per
`--contrast` of two of them, and each metric against training images seen, over seeds.

Failed and unfinished runs are listed, never silently dropped. With `--wandb` the table,
the plots and W&B line charts of the same means go to a W&B run in the sweep's group.
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
from typing import Any

from vaelab import compare_seeds
from vaelab.errors import RunStatus, UserError, user_error_in
from vaelab.time_to_disentangle import images_per_step_of_config

# Beside the metrics' headline scores (as each metric declares them, vaelab/registry.py):
OTHER_FIGURES = (
    "info/kl_marginal",
    "info/mutual_info",
    "info/kl_conditional",
    "info/total_correlation",
    "info/dimwise_kl",
    "val/reconstruction",
    "val/loss",
)
RECONSTRUCTION = "val/reconstruction"
# The x axes of every plot: (Run attribute, label, log scale).
AXES = (
    ("beta_effective", "beta_effective  (β, or 1/(1+λ))", True),
    ("kl_weight", "KL weight relative to reconstruction\n(β; 1/(1+λ); 1/λ on KL[q(z)||p(z)] if native)", True),
    ("reconstruction", "val/reconstruction (nats per image)", False),
)
OWN_KNOB_AXIS = ("knob", "the objective's own knob (its first)", True)


def figures() -> list[str]:
    """What the table and the plots show where a run has it: every registered metric's headline
    scores (``metrics/mig``, …; a metric from an installed package's too), then OTHER_FIGURES."""
    from vaelab.metrics import headline_keys

    return [*headline_keys(), *OTHER_FIGURES]


def _shown(runs: list[Run]) -> list[str]:
    """The figures that some run has, then UDR's scores when `--udr` added them."""
    udr_keys = sorted({key for run in runs for key in run.figures if key.startswith(("udr/", "udr_a2a/"))})
    return [f for f in figures() if any(f in run.figures for run in runs)] + udr_keys


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


@dataclass
class Run:
    path: Path
    objective: str  # the objective's label: betavae, infomax, infomax-native, betatcvae, ...
    beta_effective: float | None  # None for objectives without an equivalent β-VAE
    seed: int | None
    status: str  # success, failed, interrupted, unfinished, damaged
    figures: dict[str, float] = field(default_factory=dict)
    kl_weight: float | None = None  # the loss's weight on its KL term, relative to reconstruction
    knobs: dict[str, float] = field(default_factory=dict)  # the objective's own knobs, the first is its axis
    reason: str = ""  # why a damaged run could not be read
    images_to: dict[str, float | None] = field(default_factory=dict)  # time to disentangle; None: not reached
    images_per_step: int | None = None  # training images per step (None: unknown)
    name: str = ""  # the objective's config name (objective=adainfomax), where its label differs

    @property
    def reconstruction(self) -> float | None:
        return self.figures.get(RECONSTRUCTION)

    @property
    def knob(self) -> float | None:
        """The value of the objective's first knob, the axis its sweeps vary."""
        return next(iter(self.knobs.values()), None)

    @property
    def knob_text(self) -> str:
        return ", ".join(f"{key}={value:.4g}" for key, value in self.knobs.items())


def read_run(path: Path) -> Run | None:
    """The run in ``path``, or None when it is not a training run (e.g. an eval run).

    What it trained is the objective description the run wrote to ``metrics.json``
    (``Objective.describe``); a run that failed before writing one is listed by the
    objective its config names. A run whose config or ``metrics.json`` cannot be read
    (half-written after a crash, a bad copy) is listed as damaged, with the reason."""
    try:
        config = _load_yaml(path / ".hydra" / "config.yaml")
    except Exception as error:  # noqa: BLE001 - any unreadable config: list the run, go on with the rest
        return Run(path, "?", None, None, "damaged", reason=f".hydra/config.yaml: {_first_line(error)}")
    if not isinstance(config, dict) or not isinstance(config.get("objective"), dict):
        return None
    seed = config.get("seed")
    if isinstance(seed, str) and "${" in seed:  # an interpolation: let OmegaConf resolve it
        from omegaconf import OmegaConf

        try:
            seed = OmegaConf.create(config).get("seed")
        except Exception:  # noqa: BLE001 - the seed is only shown
            pass
    objective = str(config["objective"].get("_target_", "?")).rsplit(".", 1)[-1].lower()
    metrics_file = path / "metrics.json"
    try:
        metrics = read_metrics_summary(metrics_file) if metrics_file.is_file() else {}
        described = metrics.get("objective")
        if described is None:  # the run stopped before training (a bad knob, say)
            return Run(path, objective, None, seed, "failed")
        status = RunStatus(metrics.get("status", RunStatus.SUCCESS))  # an unknown status: ValueError, damaged
        figures = {key: value for key, value in metrics["final"].items() if isinstance(value, (int, float))}
        shown = "unfinished" if status == RunStatus.RUNNING else status.value  # killed, or still going
        per_step = metrics.get("images_per_step")
        if not isinstance(per_step, int):  # a run from before it was recorded
            per_step = images_per_step_of_config(config)
        return Run(
            path, described["label"], described["beta_effective"], seed, shown, figures,
            described["kl_weight"], described["knobs"], images_to=dict(metrics.get("images_to") or {}),
            images_per_step=per_step, name=described.get("name", ""),
        )  # fmt: skip
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        return Run(path, objective, None, seed, "damaged", reason=f"metrics.json: {_first_line(error)}")


def _load_yaml(path: Path):
    """A YAML file as plain Python values, with libyaml's parser where PyYAML has it: several
    times faster than OmegaConf.load, which matters for hundreds of runs (docs/performance.md).
    Interpolations stay strings."""
    import yaml

    with open(path, "rb") as file:
        return yaml.load(file, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


# How MetricsFileLogger laid out metrics.json before the history moved to metrics_history.jsonl
# (json.dumps, indent=1): the small "status", "objective" and "final" first, then the long
# "history", the last key, at one space of indent. Today's files have no history: parsed whole.
HISTORY_KEY = b'\n "history": '
WHOLE_FILE_END = b"]\n}"


def read_metrics_summary(path: Path) -> dict:
    """``metrics.json`` without a history (all compare needs). Today's files hold none; in an
    older run's, often megabytes, the file's head is parsed and the history only skipped, after
    checking that the file ends as a whole one does. Anything else (a file written by another
    tool, a damaged one) is parsed whole, which raises ValueError for a damaged file."""
    with open(path, "rb") as file:
        head = b""
        while (at := head.find(HISTORY_KEY)) < 0:
            chunk = file.read(1 << 16)
            if not chunk:
                return json.loads(head)  # no history key where expected: parse it all
            head += chunk
        file.seek(0, 2)
        size = file.tell()
        file.seek(max(0, size - len(WHOLE_FILE_END)))
        if file.read() == WHOLE_FILE_END:
            try:
                return json.loads(head[:at].rstrip().rstrip(b",") + b"}")
            except ValueError:
                pass
        file.seek(0)
        return json.loads(file.read())


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


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
    images_keys = compare_seeds.images_to_keys(runs)
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["run", "objective", "knobs", "beta_effective", "kl_weight", "seed", "status", *keys, *images_keys])
        for run in runs:
            writer.writerow(
                [run.path, run.objective, run.knob_text, run.beta_effective, run.kl_weight, run.seed, run.status,
                 *(run.figures.get(k, "") for k in keys), *(compare_seeds.images_to_text(run, k) for k in images_keys)]
            )  # fmt: skip


@dataclass
class Group:
    """The seeds of one objective at one knob value."""

    objective: str
    runs: list[Run]

    # The seeds share the objective's settings: read them from the first.
    knobs = property(lambda self: self.runs[0].knobs)
    knob = property(lambda self: self.runs[0].knob)
    knob_text = property(lambda self: self.runs[0].knob_text)
    beta_effective = property(lambda self: self.runs[0].beta_effective)
    kl_weight = property(lambda self: self.runs[0].kl_weight)
    name = property(lambda self: self.runs[0].name)

    def values(self, key: str) -> list[float]:
        found = [run.figures.get(key) for run in self.runs]
        return [v for v in found if v is not None and math.isfinite(v)]

    def mean_std(self, key: str) -> tuple[float, float] | None:
        values = self.values(key)
        if not values:
            return None
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def groups(runs: list[Run]) -> list[Group]:
    """Successful runs grouped by (objective, knob values), in objective then knob order."""
    by_key: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        if run.status == "success":
            by_key[(run.objective, tuple((key, round(value, 12)) for key, value in run.knobs.items()))].append(run)
    return [Group(objective, members) for (objective, _), members in sorted(by_key.items())]


def plot(runs: list[Run], figure: str, path: Path) -> int:
    """One PNG of ``figure`` on the three AXES; returns how many lines (objectives) it has."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_objective: dict[str, list[Group]] = defaultdict(list)
    for group in groups(runs):
        if group.values(figure):
            by_objective[group.objective].append(group)
    if not by_objective:
        return 0
    # Objectives without an equivalent β-VAE (β-TCVAE, ...) are also drawn against their own knob.
    own_knob = any(group.beta_effective is None for members in by_objective.values() for group in members)
    axes_used = [axis for axis in AXES if not (axis[0] == "reconstruction" and figure == RECONSTRUCTION)]
    if own_knob:
        axes_used.insert(2, OWN_KNOB_AXIS)
    fig, panels = plt.subplots(1, len(axes_used), figsize=(5 * len(axes_used), 4), squeeze=False, sharey=True)
    for panel, (attribute, label, log_scale) in zip(panels[0], axes_used):
        ticks: set[float] = set()
        for objective, members in sorted(by_objective.items()):
            points = []  # (x, xerr, y, yerr)
            seeds = []  # (x, y) of each seed: with a handful of seeds, the spread itself is the information
            for group in members:
                y = group.mean_std(figure)
                if attribute == "reconstruction":
                    x = group.mean_std(RECONSTRUCTION)
                else:
                    value = getattr(group, attribute)
                    x = (value, 0.0) if value else None
                if x is not None and y is not None:
                    points.append((*x, *y))
                    seeds += [(run.reconstruction if attribute == "reconstruction" else x[0], run.figures[figure])
                              for run in group.runs if math.isfinite(run.figures.get(figure, math.nan))]  # fmt: skip
            if not points:
                continue
            points.sort()
            xs, xerr, ys, yerr = zip(*points)
            name = f"{objective} ({next(iter(members[0].knobs))})" if attribute == "knob" else objective
            bars = panel.errorbar(xs, ys, xerr=xerr if attribute == "reconstruction" else None, yerr=yerr,
                                  marker="o", capsize=3, label=name)  # fmt: skip
            seeds = [(sx, sy) for sx, sy in seeds if sx is not None]
            if seeds:
                panel.scatter(*zip(*seeds), s=10, alpha=0.45, color=bars.lines[0].get_color(), zorder=3)
            if log_scale:
                ticks.update(xs)
        if log_scale:
            panel.set_xscale("log")
            shown = sorted(ticks)
            panel.set_xticks(shown, [f"{t:.3g}" for t in shown], fontsize=7, rotation=45)  # close values stay legible
            panel.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        panel.set_xlabel(label, fontsize=8)
        panel.grid(True, which="both", alpha=0.3)
    panels[0][0].set_ylabel(figure)
    for panel in panels[0]:
        if panel.get_legend_handles_labels()[0]:
            panel.legend(fontsize=8)
    skipped = sum(run.status != "success" for run in runs)
    note = f"  ({skipped} failed/unfinished runs not shown)" if skipped else ""
    fig.suptitle(f"{figure}: mean ± std over seeds, dots: each seed{note}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return len(by_objective)


def summary_rows(runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    """One row per objective and knob value: seeds, weights and mean ± std of every figure shown."""
    shown = _shown(runs)
    header = ["objective", "knobs", "beta_effective", "kl_weight", "seeds", *shown]
    rows = []
    for group in groups(runs):
        cells = [group.objective, group.knob_text, _number(group.beta_effective), _number(group.kl_weight),
                 str(len(group.runs))]  # fmt: skip
        for figure in shown:
            stats = group.mean_std(figure)
            cells.append("" if stats is None else f"{stats[0]:.3f} ± {stats[1]:.3f}")
        rows.append(cells)
    return header, rows


def write_summary(runs: list[Run], out: Path) -> None:
    """compare_summary.csv and compare_summary.md (a Markdown table for results pages)."""
    header, rows = summary_rows(runs)
    with open(out / "compare_summary.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    lines = ["| " + " | ".join(h.removeprefix("metrics/") for h in header) + " |",
             "|" + " --- |" * len(header)]  # fmt: skip
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    (out / "compare_summary.md").write_text("\n".join(lines) + "\n")


def print_table(runs: list[Run]) -> None:
    from rich.console import Console
    from rich.table import Table

    shown = _shown(runs)
    images_keys = compare_seeds.images_to_keys(runs)
    table = Table(title=f"vaelab compare: {len(runs)} runs")
    columns = ("run", "objective", "knobs", "β_eff", "kl_w", "seed", "status", *(f.removeprefix("metrics/") for f in shown),
               *images_keys)  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in ("run", "objective", "knobs", "status") else "right")
    for run in sorted(runs, key=lambda r: (r.objective, tuple(r.knobs.values()), r.seed or 0)):
        status = run.status if run.status == "success" else f"[red]{run.status}[/red]"
        values = [f"{run.figures[f]:.3f}" if f in run.figures else "" for f in shown]
        values += [compare_seeds.images_to_text(run, key) for key in images_keys]
        table.add_row(run.path.name, run.objective, run.knob_text, _number(run.beta_effective),
                      _number(run.kl_weight), str(run.seed), status, *values)  # fmt: skip
    # Piped to a file or another program, print every column whole instead of rich's 80 columns.
    Console(width=None if sys.stdout.isatty() else 10_000).print(table)


def line_plots(runs: list[Run]) -> dict[str, Any]:
    """W&B's own line charts (zoomable, per-objective lines) of each figure's mean over seeds
    against beta_effective, kl_weight and reconstruction: the PNGs' axes, without error bars.
    Keys ``compare/<figure>_vs_<axis>``; the points are the table ``compare/settings``."""
    import wandb

    shown = [figure for figure in figures() if any(figure in run.figures for run in runs)]
    columns = ["objective", "knobs", "seeds", "beta_effective", "kl_weight", *shown]
    rows = []
    for group in groups(runs):
        means = [(group.mean_std(figure) or (None,))[0] for figure in shown]
        rows.append([group.objective, group.knob_text, len(group.runs), group.beta_effective, group.kl_weight, *means])
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
    from vaelab.errors import one_line
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
        table = wandb.Table(columns=["run", "objective", "knobs", "beta_effective", "kl_weight", "seed", "status", *keys])
        for r in runs:
            table.add_data(str(r.path), r.objective, r.knob_text, r.beta_effective, r.kl_weight, r.seed, r.status,
                           *(r.figures.get(k) for k in keys))  # fmt: skip
        run.log({"compare/runs": table, **{f"compare/{figure}": wandb.Image(str(path)) for figure, path in plots.items()}})
        run.log(line_plots(runs))
        run.summary.update({"runs": len(runs), "failed_or_unfinished": sum(r.status != "success" for r in runs)})
        run_dir = run.dir
        run.finish()
        wandb.teardown()  # compare exits next: wait until the run's file is written whole
        return run_dir
    except Exception as error:  # noqa: BLE001 - the files on disk are the result; W&B is extra
        print(f"vaelab: W&B could not log the comparison ({one_line(error)}); files are in {out}", file=sys.stderr)
        return None


def _encode_for_udr(run: Run, factors_rng_seed: int, num_images: int, dataset_config: dict | None, trust: bool = False):
    """(posterior means (N, D), mean KL per latent (D,), dataset config) of a run's last checkpoint
    on ``num_images`` images drawn from its dataset with ``factors_rng_seed``."""
    import numpy as np
    import torch

    from vaelab.checkpoint import load_checkpoint
    from vaelab.evaluate import model_from_checkpoint
    from vaelab.information import kl_conditional_per_dim

    checkpoint = load_checkpoint(run.path / "checkpoints" / "last.ckpt", trust=trust, trust_option="--trust-checkpoints")
    config = checkpoint["vaelab_config"]["dataset"]
    if dataset_config is not None and config != dataset_config:
        raise UserError(f"compare --udr: {run.path} was trained on another dataset than the first run; UDR compares models on the same images")
    dataset, model = model_from_checkpoint(checkpoint)
    factors = dataset.sample_factors(num_images, np.random.default_rng(factors_rng_seed))
    images = torch.as_tensor(np.asarray(dataset.images_at(dataset.factors_to_index(factors)), dtype=np.float32))
    with torch.inference_mode():
        mu, logvar = model.encode(images)
    return mu.double().numpy(), kl_conditional_per_dim(mu.double(), logvar.double()).mean(0).numpy(), config


def add_udr(runs: list[Run], correlation: str, num_images: int = 1000, seed: int = 0, trust: bool = False) -> list[str]:
    """Adds ``udr/<correlation>`` (peers: the same objective and knobs, other seeds) and
    ``udr_a2a/<correlation>`` (peers: every other run) to the figures of each successful run with a
    checkpoint (vaelab/metrics/udr.py), and returns lines on how UDR ranks the runs against each
    supervised metric (Spearman rank correlation over the runs). ``trust``: the checkpoints may
    name parts vaelab does not ship (vaelab/checkpoint.py)."""

    from vaelab.metrics import udr

    scored = [run for run in runs if run.status == "success" and (run.path / "checkpoints" / "last.ckpt").is_file()]
    if len(scored) < 2:
        raise UserError(f"compare --udr: needs at least 2 finished runs with checkpoints, found {len(scored)}")
    codes, kls, dataset_config = [], [], None
    for run in scored:
        mu, kl, dataset_config = _encode_for_udr(run, seed, num_images, dataset_config, trust)
        codes.append(mu)
        kls.append(kl)
    pairwise = udr.pairwise_scores(codes, kls, correlation=correlation)
    setting = [(run.objective, tuple(run.knobs.items())) for run in scored]
    peers = [[j for j in range(len(scored)) if j != m and setting[j] == setting[m]] for m in range(len(scored))]
    for key, values in ((f"udr/{correlation}", udr.model_scores(pairwise, peers)),
                        (f"udr_a2a/{correlation}", udr.model_scores(pairwise))):  # fmt: skip
        for run, value in zip(scored, values):
            if value == value:  # not NaN: the run had peers
                run.figures[key] = float(value)
    lines = []
    for key in (f"udr/{correlation}", f"udr_a2a/{correlation}"):
        for metric in (f for f in figures() if f.startswith("metrics/")):
            pairs = [(run.figures[key], run.figures[metric]) for run in scored if key in run.figures and metric in run.figures]
            if len(pairs) >= 3:
                lines.append(rank_correlation_line(key, metric, pairs))
    return lines


def rank_correlation_line(key: str, metric: str, pairs: list[tuple[float, float]]) -> str:
    """How a label-free ranking (``key``) agrees with a supervised metric over runs, in words."""
    from scipy.stats import spearmanr

    ours, theirs = zip(*pairs)
    for name, values in ((key, ours), (metric, theirs)):
        if len(set(values)) < 2:  # no ranks to correlate: say so, not nan
            return f"{key} against {metric}: no rank correlation ({name} is the same for all {len(pairs)} runs)"
    rho = spearmanr(ours, theirs).statistic
    return f"{key} against {metric}: Spearman rank correlation {rho:+.2f} over {len(pairs)} runs"


def build_parser() -> argparse.ArgumentParser:
    """`vaelab compare`'s arguments (also what tab completion offers after `vaelab compare`)."""
    parser = argparse.ArgumentParser(prog="vaelab compare", description=__doc__.splitlines()[0])
    parser.add_argument("directories", nargs="*", type=Path, help="sweep or run directories (before --contrast)")
    parser.add_argument("--out", type=Path, help="where compare.csv and the PNGs go (default: the first directory)")
    parser.add_argument(
        "--wandb", action="store_true",
        help="also log the table and plots as a W&B run (job_type compare) in the sweep's group; offline without an API key",
    )  # fmt: skip
    parser.add_argument("--project", default="vaelab", help="W&B project for --wandb (default: vaelab)")
    parser.add_argument(
        "--udr", nargs="?", const="lasso", choices=("lasso", "spearman"),
        help="rank the runs without labels by UDR (Duan et al. 2020) from their last checkpoints: udr/… against "
        "the other seeds of the same objective and knobs, udr_a2a/… against every run (default variant: lasso)",
    )  # fmt: skip
    parser.add_argument(
        "--trust-checkpoints", action="store_true",
        help="--udr: let the checkpoints name models, datasets and objectives vaelab does not ship (your own "
        "objective from examples/); their code runs, so only for checkpoints you trust",
    )  # fmt: skip
    compare_seeds.add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.directories:
        print("vaelab: error: compare: no directories given (they go before --contrast, which would read them as cells)",
              file=sys.stderr)  # fmt: skip
        return 2
    for directory in args.directories:
        if not directory.is_dir():
            print(f"vaelab: error: compare: {directory}: no such directory", file=sys.stderr)
            return 2
    runs = find_runs(args.directories)
    if not runs:
        print(f"vaelab: error: compare: no training runs under {', '.join(map(str, args.directories))}", file=sys.stderr)
        return 2
    out = args.out or args.directories[0]
    udr_lines = []
    try:
        compare_seeds.check_syntax(args)  # before UDR's minutes of encoding
        if args.udr:
            udr_lines = add_udr(runs, args.udr, trust=args.trust_checkpoints)
        present = {key for run in runs if run.status == "success" for key in run.figures}
        across = compare_seeds.AcrossSeeds.of_arguments(args, groups(runs), present, _shown(runs))
    except Exception as error:
        user_error = user_error_in(error)  # also one raised inside Hydra's instantiate (a dataset's file)
        if user_error is None:
            raise
        print(f"vaelab: error: {user_error}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    print_table(runs)
    for line in udr_lines:
        print(line)
    across.print()
    write_csv(runs, out / "compare.csv")
    write_summary(runs, out)
    across.write_tables(out)
    plots = {f: out / f"compare_{f.replace('/', '_')}.png" for f in figures()}
    plots = {f: path for f, path in plots.items() if plot(runs, f, path)}
    plots |= across.plot_curves(out)
    plots |= across.plot_pairs(out)
    bad = [run for run in runs if run.status != "success"]
    for run in bad:
        print(f"{run.status}: {run.path}" + (f" ({run.reason})" if run.reason else ""), file=sys.stderr)
    print(f"wrote compare.csv, compare_summary.csv/.md, compare_seeds.csv/.md and {len(plots)} plots to {out}", file=sys.stderr)
    if args.wandb:
        run_dir = log_to_wandb(runs, plots, out, args.directories[0], args.project)
        if run_dir:
            print(f"logged to W&B: {run_dir}", file=sys.stderr)
    return 0
