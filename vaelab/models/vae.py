"""The VAE shell shared by every architecture: a Gaussian encoder q(z|x), a decoder p(x|z).

Reconstruction and KL are summed over pixels and latent dims per example;
objectives average them over the batch, so β means what it means in the papers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from vaelab.errors import UserError, check_int
from vaelab.information import kl_conditional_per_dim

LIKELIHOODS = ("auto", "bernoulli", "gaussian")


@dataclass
class VAEOutput:
    """One forward pass: the posterior parameters, the sample, and per-example terms."""

    mu: torch.Tensor  # (B, D) posterior means: the representation the metrics score
    logvar: torch.Tensor  # (B, D) posterior log-variances
    z: torch.Tensor  # (B, D) reparameterised sample z = mu + sigma * noise
    decoded: torch.Tensor  # (B, C, H, W) decoder output: logits (bernoulli) or means (gaussian)
    reconstruction: torch.Tensor  # (B,) -log p(x|z), summed over pixels
    kl_conditional: torch.Tensor  # (B, D) KL[q(z|x) || p(z)] per latent dim, closed form


class VAE(nn.Module):
    """Encoder network -> (mu, logvar); decoder network -> pixel distribution parameters."""

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        latent_dim: int,
        likelihood: str,
        binary_data: bool,
        gaussian_std: float,
    ) -> None:
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise UserError(f"model.likelihood={likelihood!r}: expected one of {', '.join(LIKELIHOODS)}")
        if likelihood == "auto":
            likelihood = "bernoulli" if binary_data else "gaussian"
        if gaussian_std <= 0:
            raise UserError(f"model.gaussian_std={gaussian_std}: expected a value > 0")
        self.encoder = encoder
        self.decoder = decoder
        self.latent_dim = latent_dim
        self.likelihood = likelihood
        self.gaussian_std = gaussian_std

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # At least float32 whatever the autocast precision: the objectives' densities and KLs
        # of the posterior need it (a no-op in float32 and float64 runs).
        params = self.encoder(x)
        mu, logvar = params.to(torch.promote_types(params.dtype, torch.float32)).chunk(2, dim=1)
        return mu, logvar

    @torch.no_grad()
    def posterior(self, images: torch.Tensor, batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of q(z|x) for ``images`` (N, C, H, W) in [0, 1]: in eval mode (the model's
        own mode is put back after), without gradients, on the model's device and dtype,
        ``batch_size`` images at a time (None: all at once). The one way vaelab encodes outside
        training: the metrics (vaelab/metrics/representation.py), the pictures, UDR, the
        information estimates and notebooks."""
        first = next(self.parameters())
        chunks = images.split(batch_size) if batch_size else (images,)
        was_training = self.training
        self.eval()
        try:
            parts = [self.encode(chunk.to(device=first.device, dtype=first.dtype)) for chunk in chunks]
        finally:
            self.train(was_training)
        if len(parts) == 1:
            return parts[0]
        return torch.cat([mu for mu, _ in parts]), torch.cat([logvar for _, logvar in parts])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def mean_image(self, decoded: torch.Tensor) -> torch.Tensor:
        """Expected pixel values under p(x|z) (sigmoid of the logits / the clamped means)."""
        return torch.sigmoid(decoded)

    def reconstruction_nll(self, x: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) per example, summed over pixels: (B,)."""
        if self.likelihood == "bernoulli":
            nll = F.binary_cross_entropy_with_logits(decoded, x, reduction="none")
        else:
            # Fixed-variance Gaussian on sigmoid means; with the default std 1/sqrt(2) this is
            # the summed squared error plus a constant (disentanglement_lib's "l2" loss).
            var = self.gaussian_std**2
            nll = 0.5 * ((x - torch.sigmoid(decoded)) ** 2 / var + math.log(2 * math.pi * var))
        return nll.flatten(1).sum(1)

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> VAEOutput:
        """Encode, sample with the given standard-normal ``noise`` (drawn here if None), decode."""
        return self.from_posterior(x, *self.encode(x), noise)

    def from_posterior(self, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor | None = None) -> VAEOutput:
        """Sample from q(z|x) = N(mu, exp(logvar)) and decode: the forward pass after the encoder
        (weakly-supervised objectives change the posteriors of a pair in between)."""
        if noise is None:
            noise = torch.randn_like(mu)
        z = mu + torch.exp(0.5 * logvar) * noise
        decoded = self.decode(z)
        return VAEOutput(
            mu=mu,
            logvar=logvar,
            z=z,
            decoded=decoded,
            reconstruction=self.reconstruction_nll(x, decoded),
            kl_conditional=kl_conditional_per_dim(mu, logvar),
        )


def _check_latent_dim(latent_dim: int) -> None:
    check_int("model.latent_dim", latent_dim, minimum=1)
