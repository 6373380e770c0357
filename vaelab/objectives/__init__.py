"""Objectives: each turns one forward pass (:class:`~vaelab.models.VAEOutput`) into named loss terms.

An objective is a class that describes itself (:class:`Objective`): its name, under which it
registers when defined (vaelab/registry.py), its knobs (vaelab's own are declared in
vaelab/knobs.py, read there before torch loads), the weights it puts on the shared axes
where it has them, and any trainable parts of its own. The config's top-level knob keys, the
run config, the W&B config, ``metrics.json``, checkpoints and ``vaelab compare`` read that
description; nothing else names an objective's knobs. Its yaml in conf/objective/ holds its
other settings. docs/extending.md shows how to add one; the maths of the seed's two is in
docs/objectives.md.

    objective=betavae        loss = E[-log p(x|z)] + beta * E KL[q(z|x)||p(z)]             knob beta
    objective=infomax        KL[q(z)||p(z)] - lambda * I(X;Z), bounded by the decoder          knob lambda
    objective=betatcvae      + E KL[q(z|x)||p(z)] + (beta - 1) * TC[q(z)]                     knob beta
    objective=adagvae        β-VAE on pairs, shared latents averaged (weak.py; also adamlvae, gvae, mlvae, adainfomax)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import hydra.utils
import torch
from omegaconf import DictConfig

from vaelab.errors import UserError, check_int, check_real  # noqa: F401 - check_real: the objectives import it from here
from vaelab.information import MINIBATCH_SAMPLING, EncodingMemory, minibatch_information_terms, minibatch_log_density
from vaelab.knobs import Knob  # noqa: F401 - Knob: objectives outside vaelab import it from here
from vaelab.models.vae import VAEOutput
from vaelab.registry import OBJECTIVES
from vaelab.validation import weight_setting


class Objective(torch.nn.Module, ABC):
    """The base of every objective.

    A subclass sets ``name`` (its config option) and ``knobs`` (the first is the one its sweeps and
    ``vaelab compare`` plot it against), stores each knob's value under ``knob.attribute``, and
    implements ``forward(out, step)`` returning named scalar terms, ``loss`` being the one
    optimised (``step``: the global step, for schedules; None means the end of every schedule).
    Every term is logged under ``train/…`` and ``val/…``.

    Where it has them, it also sets ``beta_effective`` (the β of the equivalent β-VAE) and
    ``kl_weight`` (the weight its loss puts on its KL term relative to reconstruction), and
    implements ``knob_arguments`` to be set on those axes. Trainable parts of its own (a
    discriminator) are submodules; ``parameter_groups`` gives them their optimiser settings.
    They are saved in checkpoints and synchronised under DDP with the model.
    """

    name: ClassVar[str]
    knobs: ClassVar[tuple[Knob, ...]]
    # Weakly-supervised objectives train on pairs (vaelab/objectives/weak.py: PairedPosteriors,
    # whose pair_posteriors the module calls between encoder and sampling).
    trains_on_pairs: ClassVar[bool] = False
    beta_effective: float | None = None
    kl_weight: float | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:  # a base without a name of its own (PairedPosteriors) is no objective
            OBJECTIVES.register(cls.name, cls)

    def __init__(self, kl_warmup_steps: int = 0) -> None:
        super().__init__()
        self.kl_warmup_steps = check_int("objective.kl_warmup_steps", kl_warmup_steps, minimum=0)

    def warmup(self, step: int | None) -> float:
        return kl_warmup_factor(step, self.kl_warmup_steps)

    @property
    def label(self) -> str:
        """How tables and plots name it (a variant may differ from ``name``: infomax-native)."""
        return self.name

    @property
    def knob_values(self) -> dict[str, float]:
        return {knob.name: getattr(self, knob.attribute) for knob in self.knobs}

    def describe(self) -> dict[str, Any]:
        """What the run config, W&B and ``metrics.json`` record about it (``vaelab compare`` reads it)."""
        return {
            "name": self.name,
            "label": self.label,
            "knobs": self.knob_values,
            "beta_effective": self.beta_effective,
            "kl_weight": self.kl_weight,
        }

    @classmethod
    def knob_arguments(cls, axis: str, value: float, options: DictConfig) -> dict[str, float]:
        """The constructor arguments that put it at ``value`` on a shared ``axis``."""
        knobs = " or ".join(f"{knob.name}=" for knob in cls.knobs)
        raise UserError(f"{axis}={value:g}: objective={cls.name} has no {axis}; set {knobs} instead")

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Optimiser parameter groups for its own trainable parts (none by default)."""
        return []

    @abstractmethod
    def forward(self, out: VAEOutput, step: int | None = None) -> dict[str, torch.Tensor]:
        """The named scalar terms of one batch, ``loss`` among them (see the class docstring).
        Every objective defines its own: one without it cannot be built."""


class MinibatchEstimate:
    """The minibatch estimate of log q(z) that InfoMax native and β-TCVAE put in their losses
    (vaelab/information.py): ``objective.sampling`` mws | mss | memory, and for memory the
    recent training encodings kept, ``objective.memory_size``. Mixed into those objectives."""

    def setup_estimate(self, sampling: str, memory_size: int, dataset_size: int | None) -> None:
        if sampling not in MINIBATCH_SAMPLING:
            raise UserError(f"objective.sampling={sampling!r}: expected one of {', '.join(MINIBATCH_SAMPLING)}")
        self.sampling = sampling
        self.dataset_size = dataset_size
        # A submodule: its buffers go into checkpoints with the model's (exact resume).
        self.memory = EncodingMemory(check_int("objective.memory_size", memory_size, minimum=1)) if sampling == "memory" else None

    def minibatch_terms(self, out: VAEOutput) -> dict[str, torch.Tensor]:
        """The minibatch information terms of ``out``; in training, its encodings then join the memory."""
        memory = self.memory.contents() if self.memory is not None else None
        log_qz, log_qz_dims = minibatch_log_density(out.z, out.mu, out.logvar, self.dataset_size, self.sampling, memory)
        terms = minibatch_information_terms(out.z, out.mu, out.logvar, log_qz, log_qz_dims)
        if self.memory is not None and self.training:  # validation batches never enter it
            self.memory.push(out.mu, out.logvar)
        return terms


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


def build(cfg: DictConfig, dataset_size: int) -> Objective:
    """Instantiate ``cfg.objective`` with its knobs' values from their top-level keys (another
    objective's knob is not in the config: its yaml brought in this one's alone)."""
    objective_class = hydra.utils.get_class(cfg.objective._target_)
    extra = {knob.attribute: cfg.get(knob.name) for knob in objective_class.knobs}
    # Objectives that estimate log q(z) on minibatches need N; fill it in unless set.
    if cfg.objective.get("dataset_size", 0) is None:
        extra["dataset_size"] = dataset_size
    # One axis for several objectives (experiment=beta_vs_infomax sweeps beta_effective with
    # objective=…, experiment=infomax_study kl_weight).
    axis = weight_setting(cfg, objective_class.knobs)
    if axis is not None:
        extra |= objective_class.knob_arguments(axis, float(cfg.get(axis)), cfg.objective)
    return hydra.utils.instantiate(cfg.objective, **extra)
