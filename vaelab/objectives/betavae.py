"""`objective=betavae`: the maximum-likelihood derivation (docs/objectives.md, section 1).

    loss = E[-log p(x|z)] + beta * E KL[q(z|x) || p(z)]

beta = 1 is the plain VAE (negative ELBO); beta > 1 pushes each posterior towards
the factorised prior (conditional independence of the latents). ``kl_warmup_steps``
ramps the KL weight linearly from 0 to beta over that many steps.
"""

from __future__ import annotations

import torch

from vaelab.errors import check_int
from vaelab.models.vae import VAEOutput
from vaelab.objectives import check_real, kl_warmup_factor


class BetaVAE:
    name = "betavae"
    knob = "beta"

    @staticmethod
    def knob_arguments(axis: str, value: float, options) -> dict[str, float]:
        """The constructor argument for top-level ``beta_effective=`` or ``kl_weight=``: both are β."""
        return {"beta": value}

    def __init__(self, beta: float | None = None, kl_warmup_steps: int = 0) -> None:
        self.beta = 1.0 if beta is None else check_real("beta", beta, above=0.0)
        self.beta_effective = self.kl_weight = self.beta
        self.kl_warmup_steps = check_int("objective.kl_warmup_steps", kl_warmup_steps, minimum=0)

    def __call__(self, out: VAEOutput, step: int | None = None) -> dict[str, torch.Tensor]:
        reconstruction = out.reconstruction.mean()
        kl_conditional = out.kl_conditional.sum(1).mean()
        warmup = kl_warmup_factor(step, self.kl_warmup_steps)  # beta * warmup during the warm-up
        return {
            "loss": reconstruction + warmup * self.beta * kl_conditional,
            "reconstruction": reconstruction,
            "kl_conditional": kl_conditional,
        }
