"""Weakly-supervised objectives: β-VAE (or InfoMax) on pairs whose posteriors share what the pair shares.

Locatello et al. 2020, "Weakly-Supervised Disentanglement Without Compromises" (ICML). The
data are pairs (x1, x2) that differ in k factors, unknown which (:mod:`vaelab.data.pairs`).
Both are encoded, q(z|x1) = N(mu1, v1) and q(z|x2) = N(mu2, v2), and the latent dims
judged *shared* get one posterior for both observations, an average of the two:

    gvae   (GroupVAE, Hosoya 2019):     mu = (mu1 + mu2) / 2,   v = (v1 + v2) / 2
    mlvae  (ML-VAE, Bouchacourt 2018):  v = 2 v1 v2 / (v1 + v2) (the harmonic mean),
                                        mu = (mu1 / v1 + mu2 / v2) * v / 2 (precision-weighted)

Which dims are shared, from the per-dim divergence between the two posteriors,

    delta_j = KL[q(z_j|x1) || q(z_j|x2)] = (v1/v2 + (mu2 - mu1)^2 / v2 - 1 + log v2 - log v1) / 2,

is decided per pair
    adaptive (the "Ada-" objectives, k unknown): delta_j < (max_j delta + min_j delta) / 2,
        the lower of two equal-width bins between the smallest and largest delta;
    known (k told): all but the k dims of largest delta, k the pair's number of differing factors.

The rest of the loss is the unsupervised one, on the 2B observations with their new
posteriors: β-VAE's  E[-log p(x|z)] + beta * E KL[q~(z|x) || p(z)]  (disentanglement_lib's
weak_vae: 0.5 (rec1 + rec2) + beta * 0.5 (kl1 + kl2), the same thing), or, for
``objective=adainfomax``, InfoMax's  KL_hat[q~(z)||p(z)] + lambda * E[-log p(x|z)]
(:mod:`vaelab.objectives.infomax`): the marginal pressure of InfoMax on the averaged codes.

    objective=adagvae  adamlvae  gvae  mlvae     knob beta   (beta_effective = kl_weight = beta)
    objective=adainfomax                          knob lambda (as objective=infomax_native)
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from vaelab.objectives.betavae import BetaVAE
from vaelab.objectives.infomax import InfoMax


def posterior_divergence(mu1, logvar1, mu2, logvar2) -> torch.Tensor:
    """(B, D) KL[q(z_j|x1) || q(z_j|x2)] per latent dim, closed form for Gaussians."""
    return 0.5 * (torch.exp(logvar1 - logvar2) + (mu2 - mu1) ** 2 * torch.exp(-logvar2) - 1.0 + logvar2 - logvar1)


def average_posteriors(averaging: str, mu1, logvar1, mu2, logvar2) -> tuple[torch.Tensor, torch.Tensor]:
    """The one posterior (mu, logvar) that a shared dim gets for both observations (module docstring)."""
    if averaging == "gvae":
        return 0.5 * (mu1 + mu2), torch.logaddexp(logvar1, logvar2) - math.log(2.0)
    # mlvae: 1/v = (1/v1 + 1/v2) / 2; mu = v * (mu1/v1 + mu2/v2) / 2.
    logvar = math.log(2.0) - torch.logaddexp(-logvar1, -logvar2)
    return 0.5 * torch.exp(logvar) * (mu1 * torch.exp(-logvar1) + mu2 * torch.exp(-logvar2)), logvar


def adaptive_shared_dims(divergence: torch.Tensor) -> torch.Tensor:
    """(B, D) True where a dim is judged shared: below the midpoint of its pair's delta range."""
    low, high = divergence.min(1, keepdim=True).values, divergence.max(1, keepdim=True).values
    return divergence < 0.5 * (low + high)


def known_shared_dims(divergence: torch.Tensor, differing: torch.Tensor) -> torch.Tensor:
    """(B, D) True for all but the ``differing[b]`` dims of largest delta in pair b."""
    rank = divergence.argsort(1, descending=True).argsort(1)  # 0 = the largest delta
    return rank >= differing[:, None]


class PairedPosteriors:
    """The part every weakly-supervised objective shares: it trains on pairs and averages their
    shared dims before the sample is drawn (module docstring). A subclass sets ``averaging``
    and ``shared_dims``; the unsupervised loss it is mixed with does the rest."""

    trains_on_pairs: ClassVar[bool] = True
    averaging: ClassVar[str]
    shared_dims: ClassVar[str]

    def pair_posteriors(
        self, mu: torch.Tensor, logvar: torch.Tensor, factors: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """The 2B posteriors of B pairs (first observations, then second) with each pair's
        shared dims averaged, and what was decided: ``shared_dims`` (mean number of dims
        averaged per pair), ``differing_factors`` (mean k, the truth from the data) and
        ``pair_divergence`` (mean sum_j delta_j)."""
        count = mu.shape[0] // 2
        mu1, mu2, logvar1, logvar2 = mu[:count], mu[count:], logvar[:count], logvar[count:]
        divergence = posterior_divergence(mu1, logvar1, mu2, logvar2)
        differing = (factors[:count] != factors[count:]).sum(1)
        if self.shared_dims == "adaptive":
            shared = adaptive_shared_dims(divergence.detach())
        else:
            shared = known_shared_dims(divergence.detach(), differing.to(divergence.device))
        mu_avg, logvar_avg = average_posteriors(self.averaging, mu1, logvar1, mu2, logvar2)
        mu_new = torch.cat([torch.where(shared, mu_avg, mu1), torch.where(shared, mu_avg, mu2)])
        logvar_new = torch.cat([torch.where(shared, logvar_avg, logvar1), torch.where(shared, logvar_avg, logvar2)])
        decided = {
            "shared_dims": shared.sum(1).float().mean(),
            "differing_factors": differing.float().mean().to(mu.device),
            "pair_divergence": divergence.sum(1).mean().detach(),
        }
        return mu_new, logvar_new, decided


class AdaGVAE(PairedPosteriors, BetaVAE):
    """Ada-GVAE: arithmetic averages, shared dims found adaptively (the paper's main method)."""

    name = "adagvae"
    averaging, shared_dims = "gvae", "adaptive"


class AdaMLVAE(PairedPosteriors, BetaVAE):
    """Ada-ML-VAE: precision-weighted averages, shared dims found adaptively."""

    name = "adamlvae"
    averaging, shared_dims = "mlvae", "adaptive"


class GroupVAE(PairedPosteriors, BetaVAE):
    """GroupVAE told k: arithmetic averages of all but the k dims of largest divergence."""

    name = "gvae"
    averaging, shared_dims = "gvae", "known"


class MLVAE(PairedPosteriors, BetaVAE):
    """ML-VAE told k: precision-weighted averages of all but the k dims of largest divergence."""

    name = "mlvae"
    averaging, shared_dims = "mlvae", "known"


class AdaInfoMax(PairedPosteriors, InfoMax):
    """InfoMax on pairs: Ada-GVAE's averaging, then InfoMax's loss (native estimator by default:
    the marginal KL_hat[q(z)||p(z)] on the 2B averaged codes). With estimator=derived it is
    Ada-GVAE at beta = 1/(1+lambda), scaled by 1+lambda."""

    name = "adainfomax"
    averaging, shared_dims = "gvae", "adaptive"

    @property
    def label(self) -> str:
        return "ada-infomax-native" if self.estimator == "native" else "ada-infomax"
