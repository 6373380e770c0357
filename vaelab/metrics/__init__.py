"""Disentanglement metrics: disentanglement_lib 1.5's eight, agreeing with it, and InfoMEC and DCI-ES,
agreeing with their authors' code (see docs/metrics.md).

Every metric has the signature ``compute(dataset, represent, rng, **hparams) ->
dict[str, float]`` and registers under its name where it is defined, declaring its headline
scores (``@metric("mig", headline={"mig": "discrete_mig"})``, vaelab/registry.py).
:func:`evaluate` runs a suite of them (name -> hparams, as in ``conf/metrics/*.yaml``),
importing only those, and returns each score once under a flat key: a headline score as
``metrics/<headline>`` (:func:`headline_keys`: ``metrics/mig``), the figures ``vaelab compare``
and W&B's summary show, every other as ``metrics/<metric>_<score>``.
"""

from __future__ import annotations

import contextlib
import inspect
import time
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from vaelab.errors import UserError
from vaelab.metrics._common import Represent, ScoreTable, collecting_tables
from vaelab.progress import SuiteProgress
from vaelab.registry import METRICS, Metric

__all__ = ["check_suite", "evaluate", "headline_keys", "hparam_names", "metric_key", "metric_rng", "registered"]


def registered(name: str) -> Metric:
    """The metric ``name`` (imports its module only); an unknown name is a one-line UserError."""
    if name not in METRICS:
        raise UserError(f"unknown metric {name!r} in the metrics suite; valid metrics: {', '.join(METRICS.names())}")
    part = METRICS.get(name)
    # An entry point may name a plain compute function: a metric without headline scores.
    return part if isinstance(part, Metric) else Metric(name, part)


def headline_keys(names: Iterable[str] | None = None) -> dict[str, tuple[str, str]]:
    """``metrics/<headline>`` -> (metric, score) for the metrics ``names`` (default: every
    registered one, which imports them all), in their order: as each metric declares them."""
    chosen = METRICS.names() if names is None else names
    return {f"metrics/{short}": (name, score) for name in chosen for short, score in registered(name).headline.items()}


def metric_key(metric: str, score: str) -> str:
    return f"metrics/{metric}_{score}"


def metric_rng(seed: int, metric: str) -> np.random.Generator:
    """The metric's own stream: depends only on the seed and the metric's name.

    crc32 rather than ``hash()`` because string hashing is salted per process.
    """
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(metric.encode())]))


def hparam_defaults(metric: str) -> dict[str, Any]:
    """The metric's hyperparameters (``compute``'s keyword-only arguments) and their defaults."""
    params = inspect.signature(registered(metric).compute).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def hparam_names(metric: str) -> list[str]:
    return list(hparam_defaults(metric))


def check_suite(suite: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    checked: dict[str, dict[str, Any]] = {}
    for name, hparams in suite.items():
        check_hparams = registered(name).check_hparams
        hparams = {} if hparams is None else dict(hparams)
        unknown = sorted(set(hparams) - set(hparam_names(name)))
        if unknown:
            raise UserError(
                f"metric {name!r}: unknown hyperparameter(s) {', '.join(unknown)}; "
                f"valid: {', '.join(hparam_names(name))}"
            )
        if check_hparams is not None:
            check_hparams(hparam_defaults(name) | hparams)
        checked[name] = hparams
    return checked


def _one_blas_thread():
    """BLAS (numpy/scipy's OpenBLAS) on one thread while a metric runs.

    The metrics' linear algebra is small (10,000 x 10 codes, up to 40 classes): a
    second BLAS thread only adds synchronisation, and on a busy machine its
    spin-waits slow explicitness' logistic regressions several-fold (docs/performance.md,
    "Metrics"). BLAS splits a product by output blocks, so the results are the same to the
    bit. Encoding (torch) is not affected.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # a scikit-learn dependency; without it, leave BLAS as it is
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def evaluate(
    dataset,
    represent: Represent,
    suite: Mapping[str, Mapping | None],
    seed: int,
    progress: SuiteProgress | None = None,
    tables: dict[str, ScoreTable] | None = None,
) -> dict[str, float]:
    """Run every metric of ``suite`` (name -> hparams) and return flat, prefixed scores.

    Each metric gets its own generator from :func:`metric_rng`, so a score depends
    only on the seed, the metric's hparams and the representation, never on which
    other metrics ran or in what order. All names are checked before anything runs.
    ``progress`` (the CLI's; vaelab/progress.py) hears when each metric starts and ends.
    ``tables``: filled with the breakdowns the metrics record (MIG per factor, DCI's importance
    matrix; :class:`~vaelab.metrics._common.ScoreTable`), by name.
    """
    checked = check_suite(suite)
    headline_of = {pair: headline for headline, pair in headline_keys(checked).items()}
    results: dict[str, float] = {}
    for name, hparams in checked.items():
        started = time.perf_counter()
        if progress is not None:
            progress.metric_started(name)
        with _one_blas_thread(), collecting_tables(tables):
            scores = registered(name).compute(dataset, represent, metric_rng(seed, name), **hparams)
        for score, value in scores.items():  # each once: a headline under its own name alone
            results[headline_of.get((name, score), metric_key(name, score))] = float(value)
        if progress is not None:
            progress.metric_done(name, time.perf_counter() - started)
    return results
