"""Time to disentangle: the training images a run had seen when a figure first reached a threshold.

A run's periodic metrics (``periodic_metrics.every_n_steps``, and the final suite at the last
step) log ``metrics/…`` at a step; the images seen by then are ``step × images_per_step``.
The thresholds are the config's ``time_to_disentangle`` (``{metrics/mig: 0.2}`` by default):
for each, the run records ``images_to/<figure>>=<threshold>``, the images at the first
logged value at or above it, or null when no logged value reached it (the scores are only
known where they were evaluated, so it is an upper bound by at most one evaluation period).
MetricsFileLogger keeps it in ``metrics.json`` ("images_to"), the W&B summary gets it at the
end, and `vaelab compare` tables it and draws the figure against images over seeds.

Plain Python only: read by the trainer's logger and by `vaelab compare` alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from numbers import Real
from typing import Any

from vaelab.errors import UserError

CONFIG_KEY = "time_to_disentangle"


def images_per_step(config: Mapping[str, Any], world_size: int, pairs: bool = False) -> int:
    """Training images one optimiser step consumes: the batch on each of ``world_size``
    processes, a pair of observations (``pairs``: a weakly-supervised objective, whose
    batch counts pairs) counting as two."""
    return int(config["data"]["batch_size"]) * int(world_size) * (2 if pairs else 1)


def images_per_step_of_config(config: Mapping[str, Any]) -> int | None:
    """:func:`images_per_step` from a run's saved config alone, for runs that did not record it in
    metrics.json: the processes are ``trainer.devices × trainer.num_nodes`` where both are
    numbers, else 1. None without a ``data.batch_size``."""
    data, trainer = config.get("data"), config.get("trainer")
    if not isinstance(data, Mapping) or not _positive_int(data.get("batch_size")):
        return None
    trainer = trainer if isinstance(trainer, Mapping) else {}
    devices, nodes = (value if _positive_int(value) else 1 for value in (trainer.get("devices"), trainer.get("num_nodes")))
    return images_per_step(config, devices * nodes)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def threshold_key(figure: str, threshold: float) -> str:
    """``images_to/metrics/mig>=0.2``: the name of one threshold's figure everywhere it is recorded."""
    return f"images_to/{figure}>={threshold:g}"


def check_thresholds(value: Any) -> dict[str, float]:
    """``time_to_disentangle`` as {figure: threshold}, or a one-line UserError naming the key.
    Null or empty: none recorded."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise UserError(f"{CONFIG_KEY}={value!r}: expected a mapping of metric to threshold, e.g. {{metrics/mig: 0.2}}")
    thresholds = {}
    for figure, threshold in value.items():
        if not isinstance(figure, str) or not figure.startswith("metrics/"):
            raise UserError(f"{CONFIG_KEY}: {figure!r} is not a metric; expected a metrics/… key, e.g. metrics/mig")
        if isinstance(threshold, bool) or not isinstance(threshold, Real) or not math.isfinite(threshold):
            raise UserError(f"{CONFIG_KEY}.{figure}={threshold!r}: expected a number")
        thresholds[figure] = float(threshold)
    return thresholds


def first_steps_reaching(entries: Iterable[Mapping[str, Any]], thresholds: Mapping[str, float]) -> dict[str, int]:
    """For each threshold some entry reaches: the earliest step whose value of the figure is at
    or above it. ``entries``: history entries ``{"step": n, figure: value, ...}`` in any order.
    Keys as :func:`threshold_key`; thresholds never reached are absent."""
    reached: dict[str, int] = {}
    for entry in entries:
        for figure, threshold in thresholds.items():
            value = entry.get(figure)
            # NaN never reaches anything: a diverged evaluation is not a disentangled one.
            if isinstance(value, (int, float)) and value >= threshold:
                key = threshold_key(figure, threshold)
                reached[key] = min(reached.get(key, entry["step"]), entry["step"])
    return reached


def images_to(thresholds: Mapping[str, float], reached: Mapping[str, int], per_step: int) -> dict[str, int | None]:
    """Every threshold's ``images_to`` figure: the images seen at its first step, None if not reached."""
    keys = [threshold_key(figure, threshold) for figure, threshold in thresholds.items()]
    return {key: reached[key] * per_step if key in reached else None for key in keys}


def parse_threshold_key(key: str) -> tuple[str, float] | None:
    """(figure, threshold) of a :func:`threshold_key`; None for another key."""
    figure, sep, threshold = key.removeprefix("images_to/").rpartition(">=")
    try:
        return (figure, float(threshold)) if key.startswith("images_to/") and sep else None
    except ValueError:
        return None
