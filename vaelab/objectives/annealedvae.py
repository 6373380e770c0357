"""`objective=annealedvae`: β-VAE with a controlled capacity (Burgess et al., 2018,
"Understanding disentangling in β-VAE").

    loss = E[-log p(x|z)] + gamma * | E KL[q(z|x) || p(z)] - C(step) |
    C(step) = c_max * min(1, step / c_steps)

as disentanglement_lib defines it (methods/unsupervised/vae.py, AnnealedVAE). The KL is held
near a capacity C (nats) that grows linearly from 0 to ``c_max`` over ``c_steps`` steps: with
little capacity the code can only afford the factor that buys the most reconstruction, and
factors enter the code one after another as C grows. ``gamma`` (large: 1000 in the reference)
is how tightly the KL is held at C.

No equivalent β-VAE: it has no ``beta_effective`` or ``kl_weight``; sweep ``c_max``.
"""

from __future__ import annotations

import torch

from vaelab.errors import check_int
from vaelab.knobs import OBJECTIVE_KNOBS
from vaelab.models.vae import VAEOutput
from vaelab.objectives import Objective


class AnnealedVAE(Objective):
    name = "annealedvae"
    knobs = OBJECTIVE_KNOBS["annealedvae"]

    def __init__(
        self, c_max: float | None = None, gamma: float | None = None, c_steps: int = 100_000, kl_warmup_steps: int = 0
    ) -> None:
        super().__init__(kl_warmup_steps)
        self.c_max = self.knobs[0].check(c_max)
        self.gamma = self.knobs[1].check(gamma)
        self.c_steps = check_int("objective.c_steps", c_steps, minimum=1)

    def capacity(self, step: int | None) -> float:
        """C(step) in nats; None: the end of the schedule."""
        return self.c_max if step is None else self.c_max * min(1.0, step / self.c_steps)

    def forward(self, out: VAEOutput, step: int | None = None) -> dict[str, torch.Tensor]:
        reconstruction = out.reconstruction.mean()
        kl_conditional = out.kl_conditional.sum(1).mean()
        capacity = self.capacity(step)
        return {
            "loss": reconstruction + self.warmup(step) * self.gamma * (kl_conditional - capacity).abs(),
            "reconstruction": reconstruction,
            "kl_conditional": kl_conditional,
            "capacity": torch.tensor(capacity),
        }
