"""Information quantities of a Gaussian encoder q(z|x) = N(mu(x), diag exp(logvar(x))).

Notation follows ../docs/objectives.md: p(z) = N(0, I) is the prior and
q(z) = E_{p_D(x)} q(z|x) the aggregate posterior.
"""

from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(z; mu, exp(logvar)); broadcasts, no reduction."""
    return -0.5 * (LOG_2PI + logvar + (z - mu) ** 2 * torch.exp(-logvar))


def kl_conditional_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL[q(z|x) || N(0, I)] per example and latent dim, in closed form: (N, D).

    KL[N(mu, s^2) || N(0, 1)] = 0.5 (mu^2 + s^2 - log s^2 - 1).
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0)
