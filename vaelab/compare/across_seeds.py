"""`vaelab compare`'s view across seeds: per-cell statistics, contrasts between two cells, and
figures against training images.

A cell is one objective at one setting of its knobs (groups.py's ``Group``): its runs
differ only by seed. For each cell and figure the seed table gives the number of seeds, mean ±
std, median and interquartile range, a bootstrap 95% interval of the mean and, per
``--threshold``, how many seeds are at or above it; and, for each time to disentangle a run
recorded (``images_to/…``), how many seeds reached it and the median images (a seed that never
reached it counts as never: the median is "not reached" when half of them did not). A contrast
is one line a reader can quote: the difference of two cells' means, its bootstrap interval and
a permutation-test p-value (seed_statistics.py has the maths); with ``--paired``, the
same for the per-seed differences of the seeds both cells ran, and a sign-flip p-value. The
curves are each figure's periodic values against the training images seen, over a cell's
seeds, from each run's history.

This module computes what the flags ask for; tables.py and plots.py show it.
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from vaelab.compare import seed_statistics
from vaelab.compare.runs import NOT_REACHED, images_to_keys
from vaelab.errors import UserError
from vaelab.runfiles import figure_histories

SEEDS_HEADER = ["objective", "knobs", "figure", "seeds", "mean ± std", "median", "IQR",
                "bootstrap 95% CI of the mean", "at or above threshold"]  # fmt: skip
CONTRAST_DEFAULT = "metrics/mig"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """compare's flags for statistics across seeds."""
    parser.add_argument(
        "--threshold", action="append", default=[], metavar="FIGURE=NUMBER",
        help="count each cell's seeds at or above it, e.g. metrics/mig=0.2 (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--metric", action="append", default=[], metavar="FIGURE",
        help=f"the figure(s) of the seed table and of --contrast (repeatable; default: the metrics present, "
        f"and {CONTRAST_DEFAULT} for a contrast)",
    )  # fmt: skip
    parser.add_argument(
        "--contrast", action="append", nargs="+", default=[], metavar="KEY=VALUE",
        help="two cells A B (each KEY=VALUE[,KEY=VALUE…] of objective, a knob, beta_effective, kl_weight), then "
        "KEY=VALUE for both: B − A, its bootstrap 95%% interval and permutation p-value, in one line (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--paired", action="store_true",
        help="--contrast seed by seed: the mean of each seed's B − A over the seeds both cells ran, its bootstrap "
        "interval and a sign-flip p-value (for cells run on the same seeds)",
    )  # fmt: skip


def check_syntax(args: argparse.Namespace) -> None:
    """A UserError for a malformed --threshold or --contrast, before compare reads or computes more."""
    for text in args.threshold:
        parse_threshold(text)
    for items in args.contrast:
        parse_contrast(items)
    if args.paired and not args.contrast:
        raise UserError("compare --paired: pairs the seeds of a --contrast; give one, e.g. --contrast objective=betavae objective=infomax_native")


def parse_threshold(text: str) -> tuple[str, float]:
    """``--threshold metrics/mig=0.2`` as (figure, threshold)."""
    figure, sep, value = text.rpartition("=")
    try:
        threshold = float(value)
    except ValueError:
        threshold = math.nan
    if not sep or not figure or not math.isfinite(threshold):
        raise UserError(f"compare --threshold {text!r}: expected FIGURE=NUMBER, e.g. metrics/mig=0.2")
    return figure, threshold


def parse_filters(text: str) -> dict[str, str]:
    """``objective=betavae,beta=4`` as {key: value}."""
    filters = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UserError(f"compare --contrast {text!r}: expected KEY=VALUE[,KEY=VALUE…], e.g. objective=betavae,kl_weight=6")
        filters[key.strip()] = value.strip()
    return filters


def parse_contrast(items: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """``--contrast A B [KEY=VALUE …]``: the filters of cells A and B, each side its own and the
    trailing ones applying to both (a side's own value wins)."""
    if len(items) < 2:
        raise UserError(f"compare --contrast {' '.join(items)}: expected two cells, e.g. --contrast objective=betavae objective=infomax_native kl_weight=6")
    shared: dict[str, str] = {}
    for item in items[2:]:
        shared |= parse_filters(item)
    sides = [parse_filters(items[0]), parse_filters(items[1])]
    return tuple(side | {key: value for key, value in shared.items() if key not in side} for side in sides)


def _normalized_objective(name: str) -> str:
    return name.lower().replace("_", "-")  # objective=infomax_native (its config) is infomax-native (its label)


def cell_matches(cell, filters: dict[str, str], flag_text: str) -> bool:
    """Whether ``cell`` has every filtered value: ``objective`` (its config name or label),
    ``beta_effective``, ``kl_weight`` or one of its knobs (numbers equal within a relative 1e-6:
    kl_weight=6 is the 1/λ of λ = 1/6)."""
    for key, wanted in filters.items():
        if key == "objective":
            names = {_normalized_objective(cell.objective), _normalized_objective(getattr(cell, "name", "") or cell.objective)}
            if _normalized_objective(wanted) not in names:
                return False
            continue
        try:
            number = float(wanted)
        except ValueError:
            raise UserError(f"compare --contrast {flag_text}: {key}={wanted!r} is not a number") from None
        if key in cell.knobs:
            value = cell.knobs[key]
        else:  # beta_effective, kl_weight: None for an objective without one
            value = getattr(cell, key, None) if key in ("beta_effective", "kl_weight") else None
        if value is None or not math.isclose(value, number, rel_tol=1e-6, abs_tol=1e-12):
            return False
    return True


def cell_name(cell) -> str:
    return f"{cell.objective} ({cell.knob_text})" if cell.knobs else cell.objective


def select_cell(cells: list, filters: dict[str, str]) -> Any:
    """The one cell matching ``filters``; a UserError when none or several do, or a key is unknown."""
    text = ",".join(f"{key}={value}" for key, value in filters.items())
    known = {"objective", "beta_effective", "kl_weight"} | {knob for cell in cells for knob in cell.knobs}
    unknown = sorted(set(filters) - known)
    if unknown:
        raise UserError(f"compare --contrast {text}: no cell has {', '.join(unknown)}; keys: {', '.join(sorted(known))}")
    found = [cell for cell in cells if cell_matches(cell, filters, text)]
    if len(found) != 1:
        listed = "; ".join(cell_name(cell) for cell in (found or cells))
        if not found:
            raise UserError(f"compare --contrast {text}: matches no cell of finished runs; cells: {listed}")
        raise UserError(f"compare --contrast {text}: matches {len(found)} cells ({listed}); add KEY=VALUE to choose one")
    return found[0]


def _signed(value: float) -> str:
    """+0.041 / −0.012 (a true minus sign); an exact 0 as 0."""
    return "0" if value == 0 else f"{value:+.3g}".replace("-", "−")


def values_by_seed(cell, figure: str) -> dict[int, float]:
    """{seed: value} of the cell's runs that recorded ``figure``; a UserError when a seed ran twice
    (pairing needs one run a seed) or a run's seed is unknown."""
    found: dict[int, float] = {}
    for run in cell.runs:
        value = run.figures.get(figure)
        if value is None or not math.isfinite(value):
            continue
        if run.seed is None or run.seed in found:
            why = "a run without a known seed" if run.seed is None else f"seed {run.seed} twice"
            raise UserError(f"compare --paired: {cell_name(cell)} has {why} ({run.path}); pairing needs one run a seed")
        found[run.seed] = value
    return found


def paired_values(figure: str, a, b) -> tuple[list[int], list[float], list[float], int]:
    """The seeds both cells ran with ``figure``, each cell's values on them in that order, and how
    many runs had no partner."""
    by_seed_a, by_seed_b = values_by_seed(a, figure), values_by_seed(b, figure)
    seeds = sorted(by_seed_a.keys() & by_seed_b.keys())
    if not seeds:
        raise UserError(f"compare --paired: {cell_name(a)} and {cell_name(b)} share no seed with {figure}")
    unpaired = len(by_seed_a) + len(by_seed_b) - 2 * len(seeds)
    return seeds, [by_seed_a[s] for s in seeds], [by_seed_b[s] for s in seeds], unpaired


def contrast_line(figure: str, a, b, paired: bool = False) -> str:
    """``figure: B − A = d [bootstrap 95% CI lo, hi; R resamples], p = … (test; n_B vs n_A seeds)``;
    ``paired``: the mean per-seed difference over the seeds both cells ran, with a sign-flip test."""
    values_a, values_b = a.values(figure), b.values(figure)
    for cell, values in ((a, values_a), (b, values_b)):
        if not values:
            raise UserError(f"compare --contrast: {cell_name(cell)} has no {figure} (its runs did not record it)")
    if paired:
        seeds, paired_a, paired_b, unpaired = paired_values(figure, a, b)
        result = seed_statistics.paired_contrast(paired_a, paired_b)
        seeds_text = f"paired by seed: {len(seeds)} seeds"
        if unpaired:
            seeds_text += f", {unpaired} run{'s' * (unpaired != 1)} without a partner left out"
        test_name, units = "sign-flip test", "sign patterns"
    else:
        result = seed_statistics.contrast(values_a, values_b)
        seeds_text = f"{result.n_b} vs {result.n_a} seeds"
        test_name, units = "permutation test", "splits"
    low, high = result.interval
    test = result.test
    how = (f"all {test.splits:,} {units}" if test.exact
           else f"{test.splits:,} random {units}, seed {seed_statistics.PERMUTATION_SEED}")  # fmt: skip
    p = "1" if test.p == 1 else f"{test.p:.2g}"
    return (
        f"{figure}: {cell_name(b)} − {cell_name(a)} = {_signed(result.difference)} "
        f"[bootstrap 95% CI {_signed(low)}, {_signed(high)}; {seed_statistics.BOOTSTRAP_RESAMPLES:,} resamples], "
        f"p = {p} (two-sided {test_name}, {how}; {seeds_text})"
    )


def _images(value: float) -> str:
    return NOT_REACHED if math.isinf(value) else f"{value:,.0f}"


def seed_rows(cells: list, figures: list[str], thresholds: list[tuple[str, float]]) -> list[list[str]]:
    """SEEDS_HEADER's rows: each cell's statistics of each figure it has, then of each time to
    disentangle its runs recorded."""
    images_keys = images_to_keys([run for cell in cells for run in cell.runs])
    rows = []
    for cell in cells:
        head = [cell.objective, cell.knob_text]
        for figure in figures:
            values = cell.values(figure)
            if not values:
                continue
            summary = seed_statistics.summarize(values)
            interval = "" if summary.interval is None else f"[{summary.interval[0]:.3f}, {summary.interval[1]:.3f}]"
            reached = []
            for name, threshold in thresholds:
                if name == figure:
                    count, n = seed_statistics.fraction_at_or_above(values, threshold)
                    reached.append(f"≥{threshold:g}: {count}/{n}")
            rows.append([*head, figure, str(summary.n), f"{summary.mean:.3f} ± {summary.std:.3f}", f"{summary.median:.3f}",
                         f"{summary.q1:.3f}–{summary.q3:.3f}", interval, "; ".join(reached)])  # fmt: skip
        for key in images_keys:
            recorded = [run.images_to[key] for run in cell.runs if key in run.images_to]
            if not recorded:
                continue
            images = [math.inf if value is None else float(value) for value in recorded]
            median = float(np.median(images))
            reached_count = sum(value is not None for value in recorded)
            rows.append([*head, key, str(len(images)), "", _images(median), "", "", f"reached {reached_count}/{len(images)}"])
    return rows


def curves(cells: list, figures: list[str]) -> dict[str, list[tuple[Any, np.ndarray, np.ndarray]]]:
    """For each figure: per cell, (cell, images, values over seeds: (seeds, points) with NaN where
    a seed has no value at that point). Runs without a known images_per_step are left out; a
    run whose history cannot be read too (compare lists damaged runs already)."""
    import pandas as pd

    found: dict[str, list] = defaultdict(list)
    for cell in cells:
        per_figure: dict[str, list[dict[int, float]]] = defaultdict(list)
        for run in cell.runs:
            if not run.images_per_step:
                continue
            try:
                histories = figure_histories(run.path, figures)
            except UserError:
                continue
            for figure, history in histories.items():
                if history:
                    per_figure[figure].append({step * run.images_per_step: value for step, value in history})
        for figure, seeds in per_figure.items():
            aligned = pd.DataFrame(seeds, dtype=float).sort_index(axis=1)  # a column per point, in images order
            found[figure].append((cell, aligned.columns.to_numpy(dtype=float), aligned.to_numpy()))
    return found


@dataclass
class AcrossSeeds:
    """What compare's flags ask for across seeds, checked: the seed table's rows, the contrast
    lines, and the figures drawn against training images."""

    cells: list
    figures: list[str]  # of the seed table; those under metrics/ are drawn against images too
    thresholds: list[tuple[str, float]]
    rows: list[list[str]]
    contrast_lines: list[str]
    paired_contrasts: list[tuple[str, Any, Any, str]]  # (figure, cell A, cell B, line) of each --paired contrast

    @classmethod
    def of_arguments(cls, args, cells: list, present: set[str], headline: list[str]) -> AcrossSeeds:
        """From the flags of :func:`add_arguments`, for ``cells`` (finished runs by objective and
        knobs) whose runs have the figures ``present``; ``headline``: the figures compare shows.
        A UserError for a malformed flag, a figure no finished run has, or a cell not singled out."""
        thresholds = [parse_threshold(text) for text in args.threshold]
        contrasts = [parse_contrast(items) for items in args.contrast]
        contrast_figures = args.metric or [CONTRAST_DEFAULT]
        asked = [*args.metric, *(figure for figure, _ in thresholds), *(contrast_figures if contrasts else [])]
        for figure in dict.fromkeys(asked):
            if figure not in present:
                raise UserError(f"compare: no finished run has {figure}; figures: {', '.join(headline) or 'none'}")
        figures = list(args.metric) or [figure for figure in headline if figure.startswith("metrics/")]
        figures += [figure for figure, _ in thresholds if figure not in figures]
        lines, paired = [], []
        for filters_a, filters_b in contrasts:
            a, b = select_cell(cells, filters_a), select_cell(cells, filters_b)
            for figure in contrast_figures:
                lines.append(contrast_line(figure, a, b, paired=args.paired))
                if args.paired:
                    paired.append((figure, a, b, lines[-1]))
        return cls(cells, figures, thresholds, seed_rows(cells, figures, thresholds), lines, paired)
