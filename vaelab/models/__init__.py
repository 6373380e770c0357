"""Encoder/decoder architectures; every one is a :class:`VAE`."""

from vaelab.models.conv import ConvVAE
from vaelab.models.mlp import MLPVAE
from vaelab.models.vae import VAE, VAEOutput

__all__ = ["VAE", "VAEOutput", "ConvVAE", "MLPVAE"]
