"""`objective=infomax`: the information derivation (docs/objectives.md, section 2).

On the encoder alone,  L = KL[q(z) || p(z)] - lambda * I(X;Z),  and with the
Barber-Agakov bound H[X|Z] <= E[-log p(x|z)] two losses bound it (up to a constant):

    estimator=derived (default), any lambda > -1: with the identity
        KL[q(z)||p(z)] = E KL[q(z|x)||p(z)] - I(X;Z),
        loss = (1 + lambda) * E[-log p(x|z)] + E KL[q(z|x) || p(z)]
    i.e. (1 + lambda) times the β-VAE loss at beta = 1 / (1 + lambda): the same
    optimum and, under Adam (scale-invariant), the same trajectory.

    estimator=native, lambda > 0: keep the marginal KL and estimate it on the minibatch
    (log q(z) by minibatch-weighted or -stratified sampling, or on the minibatch and a memory
    of recent training encodings: objective.sampling, vaelab/information.py),
        loss = KL_hat[q(z) || p(z)] + lambda * E[-log p(x|z)]
    Only -lambda * I(X;Z) is bounded, so the bound is tighter in the KL term, but the
    minibatch estimate is noisy and biased for small batches (docs/information.md).

``kl_warmup_steps`` multiplies the KL term by a factor rising linearly from 0 to 1 over
that many steps (either estimator), so the decoder learns to draw before the KL weighs in.
"""

from __future__ import annotations

import torch

from vaelab.errors import UserError
from vaelab.knobs import OBJECTIVE_KNOBS
from vaelab.models.vae import VAEOutput
from vaelab.objectives import MinibatchEstimate, Objective, check_real

ESTIMATORS = ("derived", "native")


class InfoMax(MinibatchEstimate, Objective):
    name = "infomax"
    knobs = OBJECTIVE_KNOBS["infomax"]

    @classmethod
    def knob_arguments(cls, axis: str, value: float, options) -> dict[str, float]:
        """lambda for top-level ``beta_effective=`` (1/(1+lambda), either estimator) or ``kl_weight=``
        (the loss's weight on its KL term relative to reconstruction: 1/(1+lambda) derived, 1/lambda native)."""
        if axis == "kl_weight" and options.get("estimator") == "native":
            return {"lam": 1.0 / value}
        return {"lam": 1.0 / value - 1.0}

    def __init__(
        self,
        lam: float | None = None,
        estimator: str = "derived",
        sampling: str = "mss",
        dataset_size: int | None = None,
        kl_warmup_steps: int = 0,
        memory_size: int = 4096,
    ) -> None:
        super().__init__(kl_warmup_steps)
        # Native's lambda must be > 0: unset, it is 1 (KL[q(z)||p(z)] + reconstruction).
        self.lam = 1.0 if lam is None and estimator == "native" else self.knobs[0].check(lam)
        if estimator not in ESTIMATORS:
            raise UserError(f"objective.estimator={estimator!r}: expected one of {', '.join(ESTIMATORS)}")
        if estimator == "native":
            # The decoder bounds -lambda * I(X;Z) from above only for lambda > 0.
            self.lam = check_real("lambda (objective.estimator=native)", self.lam, above=0.0)
            if not dataset_size:
                raise UserError("objective.estimator=native needs the dataset size (set objective.dataset_size)")
        self.estimator = estimator
        self.setup_estimate(sampling, memory_size, dataset_size if estimator == "native" else None)
        if estimator == "derived":
            self.memory = None  # derived estimates nothing on the minibatch
        self.beta_effective = 1.0 / (1.0 + self.lam)
        # Native: KL_hat[q(z)||p(z)] + lambda * reconstruction weighs its (marginal) KL by 1/lambda.
        self.kl_weight = 1.0 / self.lam if estimator == "native" else self.beta_effective

    @property
    def label(self) -> str:
        return "infomax-native" if self.estimator == "native" else "infomax"

    def forward(self, out: VAEOutput, step: int | None = None) -> dict[str, torch.Tensor]:
        reconstruction = out.reconstruction.mean()
        kl_conditional = out.kl_conditional.sum(1).mean()
        warmup = self.warmup(step)  # the KL term's factor, 0 -> 1
        if self.estimator == "derived":
            loss = (1.0 + self.lam) * reconstruction + warmup * kl_conditional
            return {"loss": loss, "reconstruction": reconstruction, "kl_conditional": kl_conditional}
        minibatch = self.minibatch_terms(out)
        loss = warmup * minibatch["kl_marginal_mb"] + self.lam * reconstruction
        return {"loss": loss, "reconstruction": reconstruction, "kl_conditional": kl_conditional, **minibatch}
