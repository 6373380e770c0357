"""The standard convolutional architecture of the β-VAE literature for 64x64 images.

Higgins et al. (2017), Locatello et al. (2019, Table 1):
encoder conv 4x4/2 with 32, 32, 64, 64 channels (ReLU), fc 256, fc 2*latent_dim;
decoder fc 256, fc 64*4*4, transposed conv 4x4/2 with 64, 32, 32, C channels.
"""

from __future__ import annotations

import torch
from torch import nn

from vaelab.errors import UserError
from vaelab.models.vae import VAE, _check_latent_dim


def conv_encoder(channels: int, latent_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, 32, 4, stride=2, padding=1), nn.ReLU(),  # 32x32
        nn.Conv2d(32, 32, 4, stride=2, padding=1), nn.ReLU(),  # 16x16
        nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.ReLU(),  # 8x8
        nn.Conv2d(64, 64, 4, stride=2, padding=1), nn.ReLU(),  # 4x4
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 256), nn.ReLU(),
        nn.Linear(256, 2 * latent_dim),  # mean and log-variance
    )  # fmt: skip


def conv_decoder(channels: int, latent_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(latent_dim, 256), nn.ReLU(),
        nn.Linear(256, 64 * 4 * 4), nn.ReLU(),
        nn.Unflatten(1, (64, 4, 4)),
        nn.ConvTranspose2d(64, 64, 4, stride=2, padding=1), nn.ReLU(),  # 8x8
        nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.ReLU(),  # 16x16
        nn.ConvTranspose2d(32, 32, 4, stride=2, padding=1), nn.ReLU(),  # 32x32
        nn.ConvTranspose2d(32, channels, 4, stride=2, padding=1),  # 64x64 logits
    )  # fmt: skip


class ConvVAE(VAE):
    """`model=conv`: the standard 64x64 architecture (the default)."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        binary_data: bool,
        latent_dim: int = 10,
        likelihood: str = "auto",
        gaussian_std: float = 0.7071067811865476,
        channels_last: bool = True,
    ) -> None:
        _check_latent_dim(latent_dim)
        if not isinstance(channels_last, bool):
            raise UserError(f"model.channels_last={channels_last!r}: expected true or false")
        channels, height, width = image_shape
        if (height, width) != (64, 64):
            raise UserError(f"model=conv expects 64x64 images, the dataset has {height}x{width}; use model=mlp")
        super().__init__(
            conv_encoder(channels, latent_dim),
            conv_decoder(channels, latent_dim),
            latent_dim,
            likelihood,
            binary_data,
            gaussian_std,
        )
        # The channels-last (NHWC) layout is the one oneDNN's CPU kernels and cuDNN's tensor-core
        # kernels compute in; in NCHW every conv converts to it and back. The results differ
        # from NCHW's by float round-off only.
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return super().encode(x)
