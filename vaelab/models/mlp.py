"""A fully connected encoder/decoder (Locatello et al. 2019 also report one): any image size."""

from __future__ import annotations

import math

from torch import nn

from vaelab.errors import UserError
from vaelab.models.vae import VAE, _check_latent_dim


def _mlp(sizes: list[int]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return layers[:-1]  # no activation after the last layer


class MLPVAE(VAE):
    """`model=mlp`: encoder pixels -> hidden... -> 2*latent_dim; decoder the mirror."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        binary_data: bool,
        latent_dim: int = 10,
        hidden: tuple[int, ...] = (1200, 1200),
        likelihood: str = "auto",
        gaussian_std: float = 0.7071067811865476,
    ) -> None:
        _check_latent_dim(latent_dim)
        hidden = list(hidden)
        if not hidden or any(not isinstance(h, int) or h < 1 for h in hidden):
            raise UserError(f"model.hidden={hidden}: expected a non-empty list of positive integers")
        pixels = math.prod(image_shape)
        encoder = nn.Sequential(nn.Flatten(), *_mlp([pixels, *hidden, 2 * latent_dim]))
        decoder = nn.Sequential(*_mlp([latent_dim, *reversed(hidden), pixels]), nn.Unflatten(1, tuple(image_shape)))
        super().__init__(encoder, decoder, latent_dim, likelihood, binary_data, gaussian_std)
