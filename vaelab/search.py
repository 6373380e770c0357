"""Hyperparameter searches: the figure a training run hands back to Hydra's sweeper.

``optimized_metric`` (conf/train.yaml, set by the presets in conf/hparams_search/) names one
of the run's final figures, a key of ``metrics.json``'s "final" (``metrics/mig``,
``val/loss``, ``info/mutual_info``, …). ``vaelab train``'s Hydra task function returns its
value, so a sweeper that optimises (Optuna: ``hparams_search=dsprites_fast_mig``) scores
each trial by it; with the default null it returns nothing, as before.

A name the run cannot produce is the user's error (exit 2): a score of a metric that the
final suite does not compute is refused before training, so a typo does not cost a trial;
any other name the run did not log is refused when the run ends, naming the closest ones
it did log.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from omegaconf import DictConfig

from vaelab.errors import UserError

KEY = "optimized_metric"


def _metric_of(name: str) -> str | None:
    """The metric (registry name) whose score ``name`` is, e.g. ``metrics/mig`` -> ``mig``,
    ``metrics/dci_completeness`` -> ``dci``; None for other figures (``metrics/seconds``)."""
    from vaelab.metrics import headline_keys
    from vaelab.registry import METRICS

    headlines = headline_keys()  # as each metric declares them
    if name in headlines:
        return headlines[name][0]
    # Longest first: modularity_explicitness_… is not a score of a metric called "modularity".
    for metric in sorted(METRICS.names(), key=len, reverse=True):
        if name.startswith(f"metrics/{metric}_"):
            return metric
    return None


def check_optimized_metric(cfg: DictConfig) -> str | None:
    """``optimized_metric`` as a name, before training: null, or a non-empty string; a metric
    score must come from the suite run at the end of training (``metrics=…``), whose values
    are the trained model's (a periodic suite's last values may be from an earlier step)."""
    name = cfg.get(KEY)
    if name is None:
        return None
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"{KEY}={name!r}: expected the name of a final figure, e.g. metrics/mig or val/loss")
    metric = _metric_of(name)
    suite = list((cfg.get("metrics") or {}).get("suite") or {})
    if metric is not None and metric not in suite:
        computed = ", ".join(suite) if suite else "no metric"
        raise UserError(
            f"{KEY}={name}: the final metric suite computes {computed}, not {metric}; "
            f"choose a metrics= preset that has it (e.g. metrics=full) or another {KEY}"
        )
    return name


def optimized_value(cfg: DictConfig, final: Mapping[str, float]) -> float | None:
    """The final value of ``optimized_metric`` among a finished run's figures (``final``:
    what ``train`` returns, metrics.json's "final"); None when no metric is optimised."""
    name = check_optimized_metric(cfg)
    if name is None:
        return None
    if name not in final:
        close = difflib.get_close_matches(name, list(final), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else "its figures are the keys of metrics.json's \"final\""
        raise UserError(f"{KEY}={name}: the run logged no figure of that name; {hint}")
    return float(final[name])  # NaN (a score undefined for this model): Optuna records the trial as failed
