"""Disentanglement metrics: disentanglement_lib 1.5's eight, agreeing with it, and InfoMEC and DCI-ES,
agreeing with their authors' code (see docs/metrics.md).

Every metric has the signature ``compute(dataset, represent, rng, **hparams) ->
dict[str, float]``; :func:`evaluate` runs a suite of them (name -> hparams, as in
``conf/metrics/*.yaml``) and returns flat ``metrics/<metric>_<score>`` keys plus
the short headline aliases in :data:`ALIASES`.
"""

from __future__ import annotations

import contextlib
import inspect
import time
import zlib
from collections.abc import Mapping
from typing import Any, Callable

import numpy as np

from vaelab.errors import UserError
from vaelab.metrics import (
    beta_vae,
    dci,
    dci_es,
    factor_vae,
    infomec,
    irs,
    mig,
    modularity_explicitness,
    sap,
    unsupervised,
)
from vaelab.metrics._common import Represent
from vaelab.progress import SuiteProgress

MetricFn = Callable[..., dict[str, float]]

METRICS: dict[str, MetricFn] = {
    "beta_vae": beta_vae.compute,
    "factor_vae": factor_vae.compute,
    "mig": mig.compute,
    "dci": dci.compute,
    "sap": sap.compute,
    "modularity_explicitness": modularity_explicitness.compute,
    "irs": irs.compute,
    "unsupervised": unsupervised.compute,
    "infomec": infomec.compute,
    "dci_es": dci_es.compute,
}

# Checks of hyperparameter values that need no data: metric -> check(**hparams), run by
# check_suite before anything is encoded (the other metrics check theirs when they run).
HPARAM_CHECKS: dict[str, Callable[..., Any]] = {
    "infomec": infomec.check_hparams,
    "dci_es": dci_es.check_hparams,
}

# Headline numbers: alias key -> (metric, score). The only place aliases are defined.
ALIASES: dict[str, tuple[str, str]] = {
    "metrics/mig": ("mig", "discrete_mig"),
    "metrics/dci_disentanglement": ("dci", "disentanglement"),
    "metrics/factor_vae": ("factor_vae", "eval_accuracy"),
    "metrics/beta_vae": ("beta_vae", "eval_accuracy"),
    "metrics/sap": ("sap", "SAP_score"),
    "metrics/modularity": ("modularity_explicitness", "modularity_score"),
    "metrics/infom": ("infomec", "infom"),
    "metrics/infoe": ("infomec", "infoe"),
    "metrics/infoc": ("infomec", "infoc"),
    "metrics/dci_es_explicitness": ("dci_es", "explicitness"),
    "metrics/dci_es_size": ("dci_es", "size"),
}

__all__ = ["ALIASES", "METRICS", "check_suite", "evaluate", "metric_key", "metric_rng", "hparam_names"]


def metric_key(metric: str, score: str) -> str:
    return f"metrics/{metric}_{score}"


def metric_rng(seed: int, metric: str) -> np.random.Generator:
    """The metric's own stream: depends only on the seed and the metric's name.

    crc32 rather than ``hash()`` because string hashing is salted per process.
    """
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(metric.encode())]))


def hparam_names(metric: str) -> list[str]:
    params = inspect.signature(METRICS[metric]).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def check_suite(suite: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    checked: dict[str, dict[str, Any]] = {}
    for name, hparams in suite.items():
        if name not in METRICS:
            raise UserError(f"unknown metric {name!r} in the metrics suite; valid metrics: {', '.join(METRICS)}")
        hparams = {} if hparams is None else dict(hparams)
        unknown = sorted(set(hparams) - set(hparam_names(name)))
        if unknown:
            raise UserError(
                f"metric {name!r}: unknown hyperparameter(s) {', '.join(unknown)}; "
                f"valid: {', '.join(hparam_names(name))}"
            )
        if name in HPARAM_CHECKS:
            HPARAM_CHECKS[name](**hparams)
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
    dataset, represent: Represent, suite: Mapping[str, Mapping | None], seed: int, progress: SuiteProgress | None = None
) -> dict[str, float]:
    """Run every metric of ``suite`` (name -> hparams) and return flat, prefixed scores.

    Each metric gets its own generator from :func:`metric_rng`, so a score depends
    only on the seed, the metric's hparams and the representation, never on which
    other metrics ran or in what order. All names are checked before anything runs.
    ``progress`` (the CLI's; vaelab/progress.py) hears when each metric starts and ends.
    """
    checked = check_suite(suite)
    results: dict[str, float] = {}
    for name, hparams in checked.items():
        started = time.perf_counter()
        if progress is not None:
            progress.metric_started(name)
        with _one_blas_thread():
            scores = METRICS[name](dataset, represent, metric_rng(seed, name), **hparams)
        for score, value in scores.items():
            results[metric_key(name, score)] = float(value)
        if progress is not None:
            progress.metric_done(name, time.perf_counter() - started)
    for alias, (name, score) in ALIASES.items():
        if name in checked:
            results[alias] = results[metric_key(name, score)]
    return results
