"""Plots, as PNGs written whole (write_atomically):

- `compare_<figure>.png`: each figure on three axes (four when an objective has no equivalent
  β-VAE: it is also drawn against its own knob), one line per objective, mean ± std over seeds,
  a dot per seed (with a handful of seeds, the spread itself is the information):
  - ``beta_effective`` (log): the β of the equivalent β-VAE, the axis shared by both derivations;
  - the KL weight (log): what the loss really weighs its KL term by, relative to
    reconstruction: β for betavae, 1/(1+λ) for infomax (derived), 1/λ on KL[q(z)||p(z)]
    for infomax-native (where it differs from beta_effective);
  - the validation reconstruction error: the fair axis when objectives weigh different
    KL terms (a rate-distortion view: which disentangles more at the same distortion).
- `compare_images_<figure>.png`: a metric against training images seen, per cell the median
  over seeds and the band between the quartiles (across_seeds.py's curves).
- `compare_paired_<figure>.png`: a paired contrast, each seed's value in cell B against cell A.
"""

from __future__ import annotations

import itertools
import math
from operator import attrgetter
from pathlib import Path

import numpy as np

from vaelab.compare.across_seeds import AcrossSeeds, cell_name, curves, paired_values
from vaelab.compare.groups import Group, figures, groups
from vaelab.compare.runs import RECONSTRUCTION, Run, images_to_keys
from vaelab.errors import write_atomically
from vaelab.time_to_disentangle import parse_threshold_key

# The x axes of every figure's plot: (Group attribute, label, log scale).
AXES = (
    ("beta_effective", "beta_effective  (β, or 1/(1+λ))", True),
    ("kl_weight", "KL weight relative to reconstruction\n(β; 1/(1+λ); 1/λ on KL[q(z)||p(z)] if native)", True),
    ("reconstruction", "val/reconstruction (nats per image)", False),
)
OWN_KNOB_AXIS = ("knob", "the objective's own knob (its first)", True)


def _pyplot():
    """matplotlib's pyplot on the Agg backend: files only, no display needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_path(out: Path, kind: str, figure: str, number: int = 1) -> Path:
    """``out/compare_<kind><figure>[_<number>].png``, the figure's slashes as underscores."""
    return out / f"compare_{kind}{figure.replace('/', '_')}{f'_{number}' if number > 1 else ''}.png"


def _save(fig, path: Path) -> None:
    write_atomically(path, lambda file: fig.savefig(file, format="png", dpi=100))
    _pyplot().close(fig)


def plot(runs: list[Run], figure: str, path: Path, cells: list[Group] | None = None) -> int:
    """One PNG of ``figure`` on the AXES; returns how many lines (objectives) it has, and writes
    nothing for none. ``cells``: ``groups(runs)``, where the caller has them already."""
    drawn = [cell for cell in (groups(runs) if cells is None else cells) if cell.values(figure)]
    by_objective = {objective: list(members) for objective, members in itertools.groupby(drawn, attrgetter("objective"))}
    if not by_objective:
        return 0
    import matplotlib.ticker

    plt = _pyplot()
    # Objectives without an equivalent β-VAE (β-TCVAE, ...) are also drawn against their own knob.
    own_knob = any(cell.beta_effective is None for cell in drawn)
    axes_used = [axis for axis in AXES if not (axis[0] == "reconstruction" and figure == RECONSTRUCTION)]
    if own_knob:
        axes_used.insert(2, OWN_KNOB_AXIS)
    fig, panels = plt.subplots(1, len(axes_used), figsize=(5 * len(axes_used), 4), squeeze=False, sharey=True)
    for panel, (attribute, label, log_scale) in zip(panels[0], axes_used):
        ticks: set[float] = set()
        for objective, members in by_objective.items():
            points = []  # (x, xerr, y, yerr)
            seeds = []  # (x, y) of each seed
            for cell in members:
                y = cell.mean_std(figure)
                if attribute == "reconstruction":
                    x = cell.mean_std(RECONSTRUCTION)
                else:
                    value = getattr(cell, attribute)
                    x = (value, 0.0) if value else None
                if x is not None and y is not None:
                    points.append((*x, *y))
                    seeds += [(run.reconstruction if attribute == "reconstruction" else x[0], run.figures[figure])
                              for run in cell.runs if math.isfinite(run.figures.get(figure, math.nan))]  # fmt: skip
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
            ticks_shown = sorted(ticks)
            panel.set_xticks(ticks_shown, [f"{t:.3g}" for t in ticks_shown], fontsize=7, rotation=45)  # close values stay legible
            panel.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        panel.set_xlabel(label, fontsize=8)
        panel.grid(True, which="both", alpha=0.3)
    panels[0][0].set_ylabel(figure)
    for panel in panels[0]:
        if panel.get_legend_handles_labels()[0]:
            panel.legend(fontsize=8)
    skipped = sum(not run.succeeded for run in runs)
    note = f"  ({skipped} failed/unfinished runs not shown)" if skipped else ""
    fig.suptitle(f"{figure}: mean ± std over seeds, dots: each seed{note}", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    return len(by_objective)


def plot_figures(runs: list[Run], cells: list[Group], out: Path) -> dict[str, Path]:
    """compare_<figure>.png for each figure compare shows that some finished run has. {figure: path}."""
    paths = {figure: png_path(out, "", figure) for figure in figures()}
    return {figure: path for figure, path in paths.items() if plot(runs, figure, path, cells)}


def plot_pairs(figure: str, a, b, line: str, path: Path) -> None:
    """One PNG of a paired contrast: each seed's value in cell B against its value in cell A, the
    diagonal where they are equal, and the contrast line as the title."""
    plt = _pyplot()
    seeds, values_a, values_b, _ = paired_values(figure, a, b)
    fig, panel = plt.subplots(figsize=(5.5, 5.5))
    low = min(*values_a, *values_b)
    high = max(*values_a, *values_b)
    margin = 0.05 * (high - low or 1.0)
    panel.plot([low - margin, high + margin], [low - margin, high + margin], color="grey", linestyle="--", linewidth=1)
    panel.scatter(values_a, values_b, s=18, zorder=3)
    for seed, x, y in zip(seeds, values_a, values_b):
        panel.annotate(str(seed), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7, color="dimgrey")
    panel.set_xlabel(f"{figure}: {cell_name(a)}")
    panel.set_ylabel(f"{figure}: {cell_name(b)}")
    panel.set_aspect("equal")
    panel.grid(True, alpha=0.3)
    # The quotable line, wrapped: above the diagonal, B beat A on that seed.
    head, _, tail = line.partition(" [")
    panel.set_title(f"{head}\n[{tail}".replace("], p", "],\np").replace("; paired", ";\npaired"), fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def plot_paired_contrasts(across: AcrossSeeds, out: Path) -> dict[str, Path]:
    """compare_paired_<figure>.png for each --paired contrast (_2, _3, … for a figure's later
    contrasts): each seed's B against its A. {name: path}."""
    paths: dict[str, Path] = {}
    for figure, a, b, line in across.paired_contrasts:
        count = sum(name.startswith(f"paired/{figure}") for name in paths)
        path = png_path(out, "paired_", figure, count + 1)
        plot_pairs(figure, a, b, line, path)
        paths[f"paired/{figure}" + (f"_{count + 1}" if count else "")] = path
    return paths


def plot_against_images(figure: str, cell_curves: list, thresholds: list[float], path: Path) -> bool:
    """One PNG of ``figure`` against training images: per cell, the median over seeds and the
    band between the quartiles; dashed lines at ``thresholds``. False when nothing has two points."""
    drawn = [(cell, images, values) for cell, images, values in cell_curves if len(images) >= 2]
    if not drawn:
        return False
    plt = _pyplot()
    fig, panel = plt.subplots(figsize=(7, 4.5))
    for cell, images, values in drawn:
        # nanpercentile goes column by column: only where some seed lacks a point.
        percentiles = np.nanpercentile if np.isnan(values).any() else np.percentile
        q1, median, q3 = percentiles(values, [25, 50, 75], axis=0)
        (line,) = panel.plot(images, median, marker="o", markersize=3, label=f"{cell_name(cell)}, {len(values)} seeds")
        panel.fill_between(images, q1, q3, color=line.get_color(), alpha=0.2, linewidth=0)
    for threshold in thresholds:
        panel.axhline(threshold, color="grey", linestyle="--", linewidth=1)
    panel.set_xlabel("training images seen (step × images per step)")
    panel.set_ylabel(figure)
    panel.grid(True, alpha=0.3)
    panel.legend(fontsize=7)
    panel.set_title(f"{figure} against training images: median and interquartile band over seeds", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    return True


def plot_curves(across: AcrossSeeds, out: Path) -> dict[str, Path]:
    """compare_images_<figure>.png for each metric of the seed table that runs logged at two
    points or more; the --threshold and time-to-disentangle thresholds dashed. {name: path}."""
    recorded = [parse_threshold_key(key) for key in images_to_keys([run for cell in across.cells for run in cell.runs])]
    thresholds = [*across.thresholds, *filter(None, recorded)]
    paths = {}
    metrics = [figure for figure in across.figures if figure.startswith("metrics/")]
    for figure, cell_curves in curves(across.cells, metrics).items():
        lines = sorted({threshold for name, threshold in thresholds if name == figure})
        path = png_path(out, "images_", figure)
        if plot_against_images(figure, cell_curves, lines, path):
            paths[f"images/{figure}"] = path
    return paths
