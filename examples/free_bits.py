"""`objective=free_bits free_nats=0.25`: the VAE with "free bits"
(Kingma et al., 2016, "Improved Variational Inference with Inverse Autoregressive Flow").

    loss = E[-log p(x|z)] + sum_j max(free_nats, E KL[q(z_j|x) || p(z_j)])

Each latent's KL (averaged over the batch) costs nothing below ``free_nats``, so no latent is
pushed all the way to the prior while it carries less than that. The extension example of
docs/extending.md: this module and its entry point (examples/pyproject.toml), nothing in vaelab
edited. Defining the class registers it; its knob ``free_nats`` becomes a top-level key.
"""

from __future__ import annotations

import torch

from vaelab.models.vae import VAEOutput
from vaelab.objectives import Knob, Objective


class FreeBitsVAE(Objective):
    name = "free_bits"
    knobs = (Knob("free_nats", 0.5, 0.0, "the KL per latent (nats) below which it is free"),)

    def __init__(self, free_nats: float | None = None, kl_warmup_steps: int = 0) -> None:
        super().__init__(kl_warmup_steps)
        self.free_nats = self.knobs[0].check(free_nats)

    def forward(self, out: VAEOutput, step: int | None = None) -> dict[str, torch.Tensor]:
        reconstruction = out.reconstruction.mean()
        kl_per_latent = out.kl_conditional.mean(0)  # (D,): E KL[q(z_j|x)||p(z_j)] over the batch
        kl_charged = kl_per_latent.clamp(min=self.free_nats).sum()
        return {
            "loss": reconstruction + self.warmup(step) * kl_charged,
            "reconstruction": reconstruction,
            "kl_conditional": kl_per_latent.sum(),
            "kl_charged": kl_charged,
        }
