"""VAEModule: the LightningModule that trains one VAE with one objective."""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import numpy as np
import pytorch_lightning as pl
import torch

from vaelab.models.vae import VAE
from vaelab.objectives import Objective

VAL_NOISE_SEED = 777  # validation uses the same noise in every run and at every evaluation


def step_noise(seed: int, step: int, like: torch.Tensor) -> torch.Tensor:
    """Standard-normal reparameterisation noise determined by (seed, step) alone.

    Like the data stream, the noise is indexed by the global step so that a resumed
    run continues exactly where the uninterrupted run would have been.
    """
    generator = torch.Generator(device=like.device)
    generator.manual_seed(int(np.random.SeedSequence([seed, step]).generate_state(1, np.uint64)[0] >> 1))
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)


class VAEModule(pl.LightningModule):
    """Logs every objective term under ``train/…`` and ``val/…``, plus ``beta_effective``."""

    def __init__(
        self,
        model: VAE,
        objective: Objective,
        optimizer: Callable[..., torch.optim.Optimizer] = partial(torch.optim.Adam, lr=5e-4),
        seed: int = 0,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.objective = objective
        self.optimizer_factory = optimizer
        self.seed = seed
        # The resolved run config travels inside every checkpoint, so `vaelab eval ckpt=…`
        # can rebuild the model and dataset without the run directory.
        self.config = config or {}

    def forward(self, images: torch.Tensor):
        return self.model(images)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images = batch["images"]
        mu_shape = images.new_empty(images.shape[0], self.model.latent_dim)
        out = self.model(images, step_noise(self.seed, self.global_step, mu_shape))
        terms = self.objective(out)
        for name, value in terms.items():
            self.log(f"train/{name}", value, prog_bar=name == "loss")
        self.log("train/beta_effective", self.objective.beta_effective)
        return terms["loss"]

    def validation_step(self, batch: tuple[torch.Tensor], batch_idx: int) -> None:
        (images,) = batch
        mu_shape = images.new_empty(images.shape[0], self.model.latent_dim)
        out = self.model(images, step_noise(VAL_NOISE_SEED, batch_idx, mu_shape))
        for name, value in self.objective(out).items():
            self.log(f"val/{name}", value, batch_size=images.shape[0], prog_bar=name == "loss")
        self.log("val/beta_effective", self.objective.beta_effective, batch_size=images.shape[0])

    @torch.no_grad()
    def encode_posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of q(z|x) in eval mode, without gradients, on the module's device and dtype."""
        was_training = self.model.training
        self.model.eval()
        try:
            return self.model.encode(images.to(device=self.device, dtype=self.dtype))
        finally:
            self.model.train(was_training)

    def encode_means(self, images: torch.Tensor) -> torch.Tensor:
        """Posterior means: the representation that the metrics score."""
        return self.encode_posterior(images)[0]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.model.parameters())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["vaelab_config"] = self.config
