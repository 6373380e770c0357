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
from vaelab.data.pairs import PairSampling
from vaelab.errors import check_int


def batch_factors(dataset: GroundTruthDataset, batch_size: int, seed: int, step: int) -> np.ndarray:
    """The factor vectors of training batch ``step``, seeded by (seed, step).

    Uniform on the grid unless ``dataset.correlation`` pairs factors (training only;
    validation and metrics keep the uniform grid).
    """
    return dataset.sample_training_factors(batch_size, np.random.default_rng([seed, step]))


def batch_pair_factors(dataset: GroundTruthDataset, pairs: PairSampling, batch_size: int, seed: int, step: int) -> np.ndarray:
    """(batch_size, 2, K): the factor vectors of the pairs of training batch ``step``, seeded by
    (seed, step). The first observations are drawn as :func:`batch_factors` draws a batch."""
    rng = np.random.default_rng([seed, step])
    first = dataset.sample_training_factors(batch_size, rng)
    return np.stack([first, pairs.sample(first, dataset.factor_sizes, rng)], axis=1)


def pair_images(dataset: GroundTruthDataset, pair_factors: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(2B, C, H, W) images and (2B, K) factors of B pairs (B, 2, K): first observations, then second."""
    factors = np.concatenate([pair_factors[:, 0], pair_factors[:, 1]])
    return dataset.images(factors), torch.from_numpy(factors)


class TrainingStream(IterableDataset):
    """Endless batches ``{"images", "factors", "step"}`` starting at ``start_step``.

    Under DDP, step t has one global batch of ``batch_size * world_size`` factor vectors
    (or pairs), drawn as above, and rank r trains on slice r of it: n ranks see exactly
    the batches of one process with an n times larger batch, and a pair is never split.
    """

    def __init__(
        self,
        dataset: GroundTruthDataset,
        batch_size: int,
        seed: int,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
        pairs: PairSampling | None = None,
    ) -> None:
        self.dataset = dataset
        self.pairs = pairs
        self.batch_size = batch_size
        self.seed = seed
        self.start_step = start_step
        self.rank = rank
        self.world_size = world_size

    def __iter__(self):
        shard = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        global_size = self.batch_size * self.world_size
        for step in itertools.count(self.start_step):
            if self.pairs is not None:
                images, factors = pair_images(self.dataset, batch_pair_factors(self.dataset, self.pairs, global_size, self.seed, step)[shard])
                yield {"images": images, "factors": factors, "step": step}
                continue
            factors = batch_factors(self.dataset, global_size, self.seed, step)[shard]
            yield {"images": self.dataset.images(factors), "factors": torch.from_numpy(factors), "step": step}


class GroundTruthDataModule(pl.LightningDataModule):
    """Training stream + fixed validation set over one ground-truth dataset.

    With ``pairs`` (a weakly-supervised objective) ``batch_size`` counts pairs, and the
    validation batches are pairs too: ``val_size // 2`` of them, a fixed draw from ``val_seed``,
    so a validation pass sees as many images as without pairs. ``val_images`` (pictures) stays
    single images."""

    def __init__(
        self,
        dataset: GroundTruthDataset,
        batch_size: int = 64,
        seed: int = 0,
        val_size: int = 1024,
        val_seed: int = 12345,
        pairs: PairSampling | None = None,
    ) -> None:
        super().__init__()
        check_int("data.batch_size", batch_size, minimum=1)
        check_int("data.val_size", val_size, minimum=1)
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.val_size = val_size
        self.val_seed = val_seed
        self.pairs = pairs
        self._val_images: torch.Tensor | None = None

    def train_dataloader(self) -> DataLoader:
        # Start where the trainer is (non-zero after a checkpoint restore).
        trainer = self.trainer
        start = trainer.global_step if trainer is not None else 0
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        stream = TrainingStream(self.dataset, self.batch_size, self.seed, start_step=start, rank=rank, world_size=world, pairs=self.pairs)
        return DataLoader(stream, batch_size=None)

    @property
    def val_images(self) -> torch.Tensor:
        """The fixed validation images, rendered on first use."""
        if self._val_images is None:
            factors = self.dataset.sample_factors(self.val_size, np.random.default_rng(self.val_seed))
            self._val_images = self.dataset.images(factors)
        return self._val_images

    def val_dataloader(self) -> DataLoader:
        if self.pairs is None:
            return DataLoader(TensorDataset(self.val_images), batch_size=max(self.batch_size, 256))
        # Pairs travel as (P, 2, C, H, W) so that a batch of the loader never splits one.
        rng = np.random.default_rng(self.val_seed)
        first = self.dataset.sample_factors(max(1, self.val_size // 2), rng)
        pair_factors = np.stack([first, self.pairs.sample(first, self.dataset.factor_sizes, rng)], axis=1)  # (P, 2, K)
        images = self.dataset.images(pair_factors.reshape(-1, pair_factors.shape[-1])).unflatten(0, pair_factors.shape[:2])
        return DataLoader(TensorDataset(images, torch.from_numpy(pair_factors)), batch_size=max(self.batch_size, 128))
