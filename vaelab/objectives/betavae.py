"""`objective=betavae`: the maximum-likelihood derivation (docs/objectives.md, section 1).

    loss = E[-log p(x|z)] + beta * E KL[q(z|x) || p(z)]

beta = 1 is the plain VAE (negative ELBO); beta > 1 pushes each posterior towards
the factorised prior (conditional independence of the latents). ``kl_warmup_steps``
ramps the KL weight linearly from 0 to beta over that many steps.
"""

from __future__ import annotations

import torch

from vaelab.knobs import OBJECTIVE_KNOBS
from vaelab.models.vae import VAEOutput
from vaelab.objectives import Objective


class BetaVAE(Objective):
    name = "betavae"
    knobs = OBJECTIVE_KNOBS["betavae"]

    @classmethod
    def knob_arguments(cls, axis: str, value: float, options) -> dict[str, float]:
        """The constructor argument for top-level ``beta_effective=`` or ``kl_weight=``: both are β."""
        return {"beta": value}

    def __init__(self, beta: float | None = None, kl_warmup_steps: int = 0) -> None:
        super().__init__(kl_warmup_steps)
        self.beta = self.knobs[0].check(beta)
        self.beta_effective = self.kl_weight = self.beta

    def forward(self, out: VAEOutput, step: int | None = None) -> dict[str, torch.Tensor]:
        reconstruction = out.reconstruction.mean()
        kl_conditional = out.kl_conditional.sum(1).mean()
        return {
            "loss": reconstruction + self.warmup(step) * self.beta * kl_conditional,
            "reconstruction": reconstruction,
            "kl_conditional": kl_conditional,
        }
