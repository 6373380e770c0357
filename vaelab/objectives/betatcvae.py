"""`objective=betatcvae`: β-TCVAE (Chen et al., 2018, "Isolating Sources of Disentanglement in VAEs").

The β-VAE's KL term splits, in expectation over the data, into three parts (docs/information.md):

    E KL[q(z|x) || p(z)] = I(X;Z) + TC[q(z)] + sum_j KL[q(z_j) || p(z_j)]

and β-TCVAE weighs only the total correlation TC[q(z)] = KL[q(z) || prod_j q(z_j)] by β:

    loss = E[-log p(x|z)] + E KL[q(z|x) || p(z)] + (beta - 1) * TC_hat[q(z)]

as disentanglement_lib defines it (methods/unsupervised/vae.py, BetaTCVAE: the analytic
conditional KL plus (beta - 1) times a minibatch estimate of TC), i.e. Chen et al.'s
alpha = gamma = 1. TC_hat estimates log q(z) and log q(z_j) on the minibatch by weighted
(``sampling=mws``, disentanglement_lib's) or stratified (``mss``, Chen et al.'s) sampling,
or on the minibatch and a memory of the last ``memory_size`` training encodings
(``sampling=memory``: thousands of components at a small batch's cost), with
vaelab/information.py's estimators. beta = 1 is the plain VAE.

There is no equivalent β-VAE, so it has no ``beta_effective`` or ``kl_weight``: sweep ``beta``.
``kl_warmup_steps`` ramps the whole regulariser (KL and TC terms) in from 0 over that many steps.
"""

from __future__ import annotations

import torch

from vaelab.errors import UserError
from vaelab.knobs import OBJECTIVE_KNOBS
from vaelab.models.vae import VAEOutput
from vaelab.objectives import MinibatchEstimate, Objective


class BetaTCVAE(MinibatchEstimate, Objective):
    name = "betatcvae"
    knobs = OBJECTIVE_KNOBS["betatcvae"]

    def __init__(
        self,
        beta: float | None = None,
        sampling: str = "mss",
        dataset_size: int | None = None,
        kl_warmup_steps: int = 0,
        memory_size: int = 4096,
    ) -> None:
        super().__init__(kl_warmup_steps)
        self.beta = self.knobs[0].check(beta)
        if not dataset_size:
            raise UserError("objective=betatcvae needs the dataset size (set objective.dataset_size)")
        self.setup_estimate(sampling, memory_size, dataset_size)

    def forward(self, out: VAEOutput, step: int | None = None) -> dict[str, torch.Tensor]:
        reconstruction = out.reconstruction.mean()
        kl_conditional = out.kl_conditional.sum(1).mean()
        minibatch = self.minibatch_terms(out)
        regulariser = kl_conditional + (self.beta - 1.0) * minibatch["total_correlation_mb"]
        return {
            "loss": reconstruction + self.warmup(step) * regulariser,
            "reconstruction": reconstruction,
            "kl_conditional": kl_conditional,
            **minibatch,
        }
