"""`objective=infomax`: the information derivation (docs/objectives.md, section 2).

On the encoder alone,  L = KL[q(z) || p(z)] - lambda * I(X;Z).  With the identity
KL[q(z)||p(z)] = E KL[q(z|x)||p(z)] - I(X;Z) and the Barber-Agakov bound
H[X|Z] <= E[-log p(x|z)], up to a constant

    estimator=derived:  loss = (1 + lambda) * E[-log p(x|z)] + E KL[q(z|x) || p(z)]

which is (1 + lambda) times the β-VAE loss at beta = 1 / (1 + lambda): the same
optimum, and under Adam (scale-invariant) the same trajectory.
"""

from __future__ import annotations

import torch

from vaelab.errors import UserError
from vaelab.models.vae import VAEOutput
from vaelab.objectives import check_real

ESTIMATORS = ("derived",)


class InfoMax:
    name = "infomax"
    knob = "lambda"

    def __init__(self, lam: float | None = None, estimator: str = "derived") -> None:
        # lambda <= -1 has no β-VAE counterpart (beta = 1/(1+lambda) would be infinite or negative).
        self.lam = 0.0 if lam is None else check_real("lambda", lam, above=-1.0)
        if estimator not in ESTIMATORS:
            raise UserError(f"objective.estimator={estimator!r}: expected one of {', '.join(ESTIMATORS)}")
        self.estimator = estimator
        self.beta_effective = 1.0 / (1.0 + self.lam)

    def __call__(self, out: VAEOutput) -> dict[str, torch.Tensor]:
        reconstruction = out.reconstruction.mean()
        kl_conditional = out.kl_conditional.sum(1).mean()
        return {
            "loss": (1.0 + self.lam) * reconstruction + kl_conditional,
            "reconstruction": reconstruction,
            "kl_conditional": kl_conditional,
        }
