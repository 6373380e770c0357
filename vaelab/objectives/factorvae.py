"""`objective=factorvae`: FactorVAE (Kim & Mnih, 2018, "Disentangling by Factorising").

A discriminator D(z) -> 2 logits learns to tell codes z ~ q(z) from codes whose dimensions
were each shuffled across the batch (samples of prod_j q(z_j)); its logit difference
estimates the total correlation by the density-ratio trick,

    TC[q(z)] = KL[q(z) || prod_j q(z_j)] ~= E_q(z) [ D(z)_0 - D(z)_1 ]

and the VAE minimises

    loss_vae = E[-log p(x|z)] + E KL[q(z|x) || p(z)] + gamma * TC_hat

while, in the same step, the discriminator minimises its cross-entropy

    loss_discriminator = -( 0.5 * E log softmax(D(z))_0 + 0.5 * E log softmax(D(shuffle(z)))_1 )

as disentanglement_lib defines it (methods/unsupervised/vae.py, FactorVAE; the discriminator of
architectures.py, fc_discriminator: six hidden layers of 1,000 leaky-ReLU units) with its own
Adam settings (lr 1e-4, betas 0.5 and 0.9). The two losses are summed into the one optimised,
with the discriminator's parameters held fixed in loss_vae and the codes held fixed in
loss_discriminator, so one backward pass gives each part exactly its own gradient and one
Adam with two parameter groups steps both, like the reference's two optimisers in one step.

The shuffle is drawn from (seed, step), so a resumed run repeats it exactly. No equivalent
β-VAE: it has no ``beta_effective`` or ``kl_weight``; sweep ``gamma``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from vaelab.errors import check_int
from vaelab.knobs import OBJECTIVE_KNOBS
from vaelab.models.vae import VAEOutput
from vaelab.objectives import Objective, check_real


def shuffle_dimensions(z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each column of z (B, D) permuted across the batch independently: a sample of prod_j q(z_j).

    Drawn on the generator's device: on the CPU D ``randperm``s, on a GPU the order of B x D
    uniform draws per column (one kernel, no copy from the host), a different draw from the same
    (seed, step) but as uniform a permutation."""
    if generator.device.type == "cpu":
        order = torch.stack([torch.randperm(z.shape[0], generator=generator) for _ in range(z.shape[1])], dim=1)
    else:
        order = torch.rand(z.shape, generator=generator, device=generator.device).argsort(dim=0)
    return torch.gather(z, 0, order.to(z.device))


def discriminator(latent_dim: int, hidden: int = 1000, layers: int = 6) -> nn.Sequential:
    """disentanglement_lib's fc_discriminator: ``layers`` x (Linear, LeakyReLU 0.2), then 2 logits."""
    parts: list[nn.Module] = []
    width = latent_dim
    for _ in range(layers):
        parts += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
        width = hidden
    return nn.Sequential(*parts, nn.Linear(width, 2))


class FactorVAE(Objective):
    name = "factorvae"
    knobs = OBJECTIVE_KNOBS["factorvae"]

    def __init__(
        self,
        gamma: float | None = None,
        latent_dim: int = 10,
        discriminator_hidden: int = 1000,
        discriminator_layers: int = 6,
        discriminator_lr: float = 1e-4,
        discriminator_betas: tuple[float, float] = (0.5, 0.9),
        seed: int = 0,
        kl_warmup_steps: int = 0,
    ) -> None:
        super().__init__(kl_warmup_steps)
        self.gamma = self.knobs[0].check(gamma)
        self.discriminator = discriminator(
            check_int("model.latent_dim", latent_dim, minimum=1),
            check_int("objective.discriminator_hidden", discriminator_hidden, minimum=1),
            check_int("objective.discriminator_layers", discriminator_layers, minimum=1),
        )
        self.discriminator_lr = check_real("objective.discriminator_lr", discriminator_lr, above=0.0)
        self.discriminator_betas = tuple(float(b) for b in discriminator_betas)
        self.seed = seed

    def parameter_groups(self) -> list[dict[str, Any]]:
        return [{"params": list(self.discriminator.parameters()), "lr": self.discriminator_lr,
                 "betas": self.discriminator_betas}]  # fmt: skip

    def _generator(self, step: int | None, device: torch.device | str = "cpu") -> torch.Generator:
        generator = torch.Generator(device=device)
        generator.manual_seed(int(np.random.SeedSequence([self.seed, step or 0, 1]).generate_state(1, np.uint64)[0] >> 1))
        return generator

    def forward(self, out: VAEOutput, step: int | None = None) -> dict[str, torch.Tensor]:
        reconstruction = out.reconstruction.mean()
        kl_conditional = out.kl_conditional.sum(1).mean()
        z = out.z.float()
        # TC estimate for the VAE: gradients reach the encoder, not the discriminator.
        frozen = {name: parameter.detach() for name, parameter in self.discriminator.named_parameters()}
        logits = functional_call(self.discriminator, frozen, (z,))
        total_correlation = (logits[:, 0] - logits[:, 1]).mean()
        loss_vae = reconstruction + self.warmup(step) * (kl_conditional + self.gamma * total_correlation)
        # The discriminator's cross-entropy: gradients reach the discriminator, not the encoder.
        real = torch.log_softmax(self.discriminator(z.detach()), dim=1)[:, 0]
        shuffled = torch.log_softmax(self.discriminator(shuffle_dimensions(z.detach(), self._generator(step, z.device))), dim=1)[:, 1]
        loss_discriminator = -(0.5 * real.mean() + 0.5 * shuffled.mean())
        return {
            "loss": loss_vae + loss_discriminator,
            "loss_vae": loss_vae,
            "loss_discriminator": loss_discriminator,
            "reconstruction": reconstruction,
            "kl_conditional": kl_conditional,
            "total_correlation_discriminator": total_correlation,
        }
