"""`objective=betavae`: the maximum-likelihood derivation (docs/objectives.md, section 1).

    loss = E[-log p(x|z)] + beta * E KL[q(z|x) || p(z)]

beta = 1 is the plain VAE (negative ELBO); beta > 1 pushes each posterior towards
the factorised prior (conditional independence of the latents).
"""

from __future__ import annotations

import torch

from vaelab.models.vae import VAEOutput
from vaelab.objectives import check_real


class BetaVAE:
    name = "betavae"
    knob = "beta"

    @staticmethod
    def knob_arguments(beta_effective: float) -> dict[str, float]:
        """The constructor argument that gives ``beta_effective`` (top-level ``beta_effective=``)."""
        return {"beta": beta_effective}

    def __init__(self, beta: float | None = None) -> None:
        self.beta = 1.0 if beta is None else check_real("beta", beta, above=0.0)
        self.beta_effective = self.beta

    def __call__(self, out: VAEOutput) -> dict[str, torch.Tensor]:
        reconstruction = out.reconstruction.mean()
        kl_conditional = out.kl_conditional.sum(1).mean()
        return {
            "loss": reconstruction + self.beta * kl_conditional,
            "reconstruction": reconstruction,
            "kl_conditional": kl_conditional,
        }
