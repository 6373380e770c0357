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

KNOBS = ("beta", "lambda")  # top-level keys of the train config (beta_effective sets either)


class Objective(Protocol):
    name: str  # the config group option that selects it
    knob: str  # the top-level knob it reads
    knob_arguments: Callable[[float], dict[str, float]]  # beta_effective -> constructor argument
    beta_effective: float  # the β of the equivalent β-VAE: the shared axis of every sweep

    def __call__(self, out: VAEOutput) -> dict[str, torch.Tensor]:
        """Named scalar terms; ``loss`` is the one optimised."""
        ...


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
    if cfg.get("beta_effective") is not None:
        # One axis for every objective (experiment=beta_vs_infomax sweeps it with objective=…).
        if cfg.get(objective_class.knob) is not None:
            raise UserError(
                f"beta_effective={cfg.beta_effective} and {objective_class.knob}={cfg.get(objective_class.knob)} "
                "both set the objective's weight; set one of them"
            )
        extra |= objective_class.knob_arguments(check_real("beta_effective", cfg.beta_effective, above=0.0))
    return hydra.utils.instantiate(cfg.objective, **extra)
