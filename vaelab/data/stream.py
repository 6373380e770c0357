"""The training stream and the validation set, both functions of seeds only.

Batch t of the training stream is rendered from factor vectors drawn with
``np.random.default_rng([seed, t])``: the stream is indexed by the global step,
so a resumed run sees exactly the batches the uninterrupted run would have seen,
whatever happened before. The validation set is one fixed draw (its own seed),
shared by every run so their ``val/…`` figures are comparable.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from vaelab.data.grid import GroundTruthDataset
from vaelab.errors import check_int


def batch_factors(dataset: GroundTruthDataset, batch_size: int, seed: int, step: int) -> np.ndarray:
    """The factor vectors of training batch ``step``, seeded by (seed, step).

    Uniform on the grid unless ``dataset.correlation`` pairs factors (training only;
    validation and metrics keep the uniform grid).
    """
    return dataset.sample_training_factors(batch_size, np.random.default_rng([seed, step]))


class TrainingStream(IterableDataset):
    """Endless batches ``{"images", "factors", "step"}`` starting at ``start_step``.

    Under DDP, step t has one global batch of ``batch_size * world_size`` factor vectors,
    drawn as above, and rank r trains on slice r of it: n ranks see exactly the
    batches of one process with an n times larger batch.
    """

    def __init__(
        self,
        dataset: GroundTruthDataset,
        batch_size: int,
        seed: int,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.start_step = start_step
        self.rank = rank
        self.world_size = world_size

    def __iter__(self):
        shard = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        for step in itertools.count(self.start_step):
            factors = batch_factors(self.dataset, self.batch_size * self.world_size, self.seed, step)[shard]
            yield {"images": self.dataset.images(factors), "factors": torch.from_numpy(factors), "step": step}


class GroundTruthDataModule(pl.LightningDataModule):
    """Training stream + fixed validation set over one ground-truth dataset."""

    def __init__(
        self,
        dataset: GroundTruthDataset,
        batch_size: int = 64,
        seed: int = 0,
        val_size: int = 1024,
        val_seed: int = 12345,
    ) -> None:
        super().__init__()
        check_int("data.batch_size", batch_size, minimum=1)
        check_int("data.val_size", val_size, minimum=1)
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.val_size = val_size
        self.val_seed = val_seed
        self._val_images: torch.Tensor | None = None

    def train_dataloader(self) -> DataLoader:
        # Start where the trainer is (non-zero after a checkpoint restore).
        trainer = self.trainer
        start = trainer.global_step if trainer is not None else 0
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        stream = TrainingStream(self.dataset, self.batch_size, self.seed, start_step=start, rank=rank, world_size=world)
        return DataLoader(stream, batch_size=None)

    @property
    def val_images(self) -> torch.Tensor:
        """The fixed validation images, rendered on first use."""
        if self._val_images is None:
            factors = self.dataset.sample_factors(self.val_size, np.random.default_rng(self.val_seed))
            self._val_images = self.dataset.images(factors)
        return self._val_images

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.val_images), batch_size=max(self.batch_size, 256))
