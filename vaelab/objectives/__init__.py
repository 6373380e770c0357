"""Objectives: each turns one forward pass (:class:`~vaelab.models.VAEOutput`) into named loss terms.

``objective=betavae`` -> :class:`~vaelab.objectives.betavae.BetaVAE` (knob ``beta``);
``objective=infomax`` -> :class:`~vaelab.objectives.infomax.InfoMax` (knob ``lambda``).
The maths is in docs/objectives.md.
"""

from __future__ import annotations

from numbers import Real
from typing import Callable, Protocol

import hydra.utils
import torch
from omegaconf import DictConfig

from vaelab.errors import UserError
from vaelab.models.vae import VAEOutput

KNOBS = ("beta", "lambda")  # top-level keys of the train config (a shared axis sets either)
# Top-level keys that set any objective's weight on a scale they all share:
#   beta_effective: the β of the equivalent β-VAE (β; 1/(1+λ) for InfoMax, either estimator);
#   kl_weight: the weight the loss puts on its own KL term relative to reconstruction
#   (β; 1/(1+λ) for InfoMax derived; 1/λ on KL[q(z)||p(z)] for InfoMax native).
SHARED_AXES = ("beta_effective", "kl_weight")


class Objective(Protocol):
    name: str  # the config group option that selects it
    knob: str  # the top-level knob it reads
    # (axis, value, objective config) -> the constructor argument that puts it at value on that axis
    knob_arguments: Callable[[str, float, DictConfig], dict[str, float]]
    beta_effective: float  # the β of the equivalent β-VAE: the shared axis of every sweep
    kl_weight: float  # its weight on its KL term relative to reconstruction

    def __call__(self, out: VAEOutput, step: int | None = None) -> dict[str, torch.Tensor]:
        """Named scalar terms; ``loss`` is the one optimised. ``step``: the global step, for the
        KL warm-up (None: fully warmed up)."""
        ...


def kl_warmup_factor(step: int | None, warmup_steps: int) -> float:
    """The factor on an objective's KL term: 0 at step 0, rising linearly to 1 at ``warmup_steps``.

    dSprites sprites cover a few percent of the image, so a strong KL weight from the first
    step can keep a model on the all-background plateau (reconstruction error near 500
    nats) for thousands of steps; a warm-up lets it learn to draw first. The factor is a
    function of the step alone, so a resumed run continues the schedule exactly.
    """
    if step is None or warmup_steps <= 0:
        return 1.0
    return min(1.0, step / warmup_steps)


def check_real(key: str, value, *, above: float) -> float:
    """``value`` as a float, or a one-line UserError naming ``key`` and the valid range."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise UserError(f"{key}={value!r}: expected a number > {above:g}")
    if not value > above:
        raise UserError(f"{key}={value}: expected a number > {above:g}")
    return float(value)


def build(cfg: DictConfig, dataset_size: int) -> Objective:
    """Instantiate ``cfg.objective``, refusing a top-level knob that the objective does not use."""
    objective_class = hydra.utils.get_class(cfg.objective._target_)
    for knob in KNOBS:
        if knob != objective_class.knob and cfg.get(knob) is not None:
            raise UserError(
                f"{knob}={cfg.get(knob)} is not used by objective={objective_class.name}, whose knob is "
                f"{objective_class.knob}; drop {knob}=... or choose the objective that uses it"
            )
    # Objectives that estimate log q(z) on minibatches need N; fill it in unless set.
    extra = {"dataset_size": dataset_size} if cfg.objective.get("dataset_size", 0) is None else {}
    # One axis for every objective (experiment=beta_vs_infomax sweeps beta_effective with
    # objective=…, experiment=infomax_study kl_weight).
    axes = [axis for axis in SHARED_AXES if cfg.get(axis) is not None]
    setters = axes + ([objective_class.knob] if cfg.get(objective_class.knob) is not None else [])
    if len(setters) > 1:
        given = " and ".join(f"{key}={cfg.get(key)}" for key in setters)
        raise UserError(f"{given} {'both' if len(setters) == 2 else 'all'} set the objective's weight; set one of them")
    if axes:
        (axis,) = axes
        extra |= objective_class.knob_arguments(axis, check_real(axis, cfg.get(axis), above=0.0), cfg.objective)
    return hydra.utils.instantiate(cfg.objective, **extra)
