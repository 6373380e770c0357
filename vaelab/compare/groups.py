"""Aggregation: which figures `vaelab compare` shows, and the finished runs by cell.

A cell (:class:`Group`) is one objective at one setting of its knobs: its runs differ only by
seed. The runs' figures go into one pandas table (a row per run, a column per figure), grouped
by cell, with each cell's mean, standard deviation and count of every figure in one
aggregation; the tables, the plots and W&B read them from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vaelab.compare.runs import RECONSTRUCTION, Run

# Beside the metrics' headline scores (as each metric declares them, vaelab/registry.py):
OTHER_FIGURES = (
    "info/kl_marginal",
    "info/mutual_info",
    "info/kl_conditional",
    "info/total_correlation",
    "info/dimwise_kl",
    RECONSTRUCTION,
    "val/loss",
)
UDR_PREFIXES = ("udr/", "udr_a2a/")


def figures() -> list[str]:
    """What the table and the plots show where a run has it: every registered metric's headline
    scores (``metrics/mig``, …; a metric from an installed package's too), then OTHER_FIGURES."""
    from vaelab.metrics import headline_keys

    return [*headline_keys(), *OTHER_FIGURES]


def present_figures(runs: list[Run]) -> list[str]:
    """The figures() that some run has."""
    return [f for f in figures() if any(f in run.figures for run in runs)]


def shown(runs: list[Run]) -> list[str]:
    """The figures that some run has, then UDR's scores when `--udr` added them."""
    udr_keys = sorted({key for run in runs for key in run.figures if key.startswith(UDR_PREFIXES)})
    return present_figures(runs) + udr_keys


@dataclass
class Group:
    """The seeds of one objective at one knob value."""

    objective: str
    runs: list[Run]
    table: Any  # pandas.DataFrame: a row per run, a column per figure; NaN where it has none or not a finite one
    stats: Any  # pandas.Series: (figure, "mean" | "std" | "count") over the runs

    # The seeds share the objective's settings: read them from the first.
    knobs = property(lambda self: self.runs[0].knobs)
    knob = property(lambda self: self.runs[0].knob)
    knob_text = property(lambda self: self.runs[0].knob_text)
    beta_effective = property(lambda self: self.runs[0].beta_effective)
    kl_weight = property(lambda self: self.runs[0].kl_weight)
    name = property(lambda self: self.runs[0].name)

    def values(self, key: str) -> list[float]:
        """The finite values of ``key``, in the order of the runs."""
        return self.table[key].dropna().tolist() if key in self.table else []

    def mean_std(self, key: str) -> tuple[float, float] | None:
        """Mean and sample standard deviation (0 for one seed) of ``key``'s finite values; None without any."""
        count = self.stats.get((key, "count"), 0)
        if count == 0:
            return None
        return float(self.stats[(key, "mean")]), float(self.stats[(key, "std")]) if count > 1 else 0.0


def groups(runs: list[Run]) -> list[Group]:
    """Successful runs grouped by (objective, knob values), in objective then knob order."""
    import numpy as np
    import pandas as pd

    finished = [run for run in runs if run.succeeded]
    if not finished:
        return []
    index = pd.MultiIndex.from_arrays(
        [[run.objective for run in finished], [run.setting for run in finished], range(len(finished))],
        names=("objective", "setting", "run"),
    )
    table = pd.DataFrame.from_records([run.figures for run in finished], index=index).astype(float)
    table = table.where(np.isfinite(table))
    by_cell = table.groupby(level=["objective", "setting"], sort=True)
    # A row per cell, in by_cell's order (no figure at all: no columns, which agg refuses).
    stats = by_cell.agg(["mean", "std", "count"]) if len(table.columns) else pd.DataFrame(index=by_cell.size().index)
    return [
        Group(objective, [finished[i] for i in cell.index.get_level_values("run")], cell, row)
        for ((objective, _), cell), (_, row) in zip(by_cell, stats.iterrows())
    ]
